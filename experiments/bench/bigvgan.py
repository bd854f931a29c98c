"""BigVGAN inference speed: jaxvoc (jit, after warm-up) against the official PyTorch generator (inference mode,
weight norm removed, all CPU threads), in one process, on the same mels.

    python -m experiments.bench bigvgan [--config NAME] [--frames N] [--repeats R] [--device cpu|gpu] [--lengths]
                                        [--cuda-kernel] [--small] [--dtype float32|bfloat16]

Ends with a `% of ceiling` line (experiments/bench/ceiling.py) and
`bigvgan: jax X kHz, pytorch Y kHz, ratio Z` (kHz = output samples per second / 1000; ratio =
jax speed over pytorch speed). ``--lengths`` also times jaxvoc with per-item lengths (``model(mel,
lengths=...)``, the program `jaxvoc synth` runs) and prints its cost over the plain call. ``--cuda-kernel``:
the official model with its fused CUDA activation (``use_cuda_kernel=True``, GPU only); ``--small``: the
config shrunk as the tests shrink it (experiments.reference.bigvgan_train.small_config; smoke tests).
``--dtype bfloat16``: jaxvoc synthesizes in bfloat16 (the official side stays float32); the SNR of jaxvoc's
output against the official one is printed either way. Weights are random (the official init), which does not change the speed.
"""

from __future__ import annotations

import argparse

import numpy as np

from experiments.bench.ceiling import add_ceiling_argument, ceiling_line, official_flops, resolve_ceiling


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py bigvgan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config name")
    p.add_argument("--frames", type=int, default=128, help="mel frames per call")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--lengths", action="store_true", help="also time model(mel, lengths=...)")
    p.add_argument("--cuda-kernel", action="store_true", help="official side with its fused CUDA activation")
    p.add_argument("--small", action="store_true", help="shrink the config as the tests do (smoke tests)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"], help="jaxvoc's synthesis dtype")
    add_ceiling_argument(p)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import bigvgan as cb
    from conversion import report as rp
    from experiments.bench.train_bigvgan import official_config
    from jaxvoc.models.bigvgan import Pretrained

    tdev, jdev = rp.setup_device(args.device)
    config = official_config(args.config, args.small)
    model, cfg, params = cb.random_official(config, use_cuda_kernel=args.cuda_kernel)
    cb.remove_weight_norm_(model)
    model = model.to(tdev)
    rng = np.random.default_rng(0)
    mel = rng.normal(-5.0, 2.0, (args.batch, cfg.num_mels, args.frames)).astype(np.float32)
    mel_t = torch.from_numpy(mel).to(tdev)
    with jax.default_device(jdev):
        jmodel = Pretrained(cfg, params, dtype=args.dtype)
        mel_j = jax.device_put(jnp.asarray(mel.transpose(0, 2, 1)), jdev)

    def run_jax():
        with jax.default_device(jdev):
            return jmodel(mel_j)

    def run_torch():
        with torch.inference_mode():
            return model(mel_t)

    lengths = np.arange(args.batch) % max(1, args.frames // 2) + args.frames - args.batch + 1  # <= frames

    def run_jax_lengths():
        with jax.default_device(jdev):
            return jmodel(mel_j, lengths=lengths)

    fns, syncs = [run_jax, run_torch], [rp.jax_sync, rp.torch_sync(args.device)]
    if args.lengths:
        fns, syncs = fns + [run_jax_lengths], syncs + [rp.jax_sync]
    times = rp.time_alternating(fns, args.repeats, 2, syncs)
    t_jax, t_torch = times[0], times[1]
    samples = args.batch * args.frames * cfg.hop_size
    k_jax, k_torch = samples / t_jax / 1e3, samples / t_torch / 1e3
    kernel = " (official CUDA kernel)" if args.cuda_kernel else ""
    print(f"config {args.config}{' (small)' if args.small else ''}{kernel}, {args.frames} frames x batch {args.batch} = {samples} samples, device "
          f"{args.device}, torch threads {torch.get_num_threads()}, jax {jax.__version__} ({jdev.platform}), "
          f"torch {torch.__version__}")
    print(f"median of {args.repeats}: jax {t_jax * 1e3:.1f} ms, pytorch {t_torch * 1e3:.1f} ms")
    snr = rp.snr_db(np.asarray(run_jax()), run_torch()[:, 0].float().cpu().numpy())
    print(f"SNR jax ({args.dtype}) vs official float32: {snr:.1f} dB")
    if args.lengths:
        print(f"jax with lengths: {times[2] * 1e3:.1f} ms, {100 * (times[2] / t_jax - 1):+.1f}% over the plain call")
    on_meta = cb.official_model(config).to("meta")  # the official model's FLOPs, from shapes alone
    flops = official_flops(lambda: on_meta(torch.empty(mel_t.shape, device="meta")))
    print(f"{flops / samples / 1e6:.2f} MFLOP per output sample (official model, torch.utils.flop_counter)")
    print(ceiling_line(flops, t_jax, t_torch, resolve_ceiling(args, jdev)))
    print(f"bigvgan: jax {k_jax:.1f} kHz, pytorch {k_torch:.1f} kHz, ratio {k_jax / k_torch:.2f}")
    return 0
