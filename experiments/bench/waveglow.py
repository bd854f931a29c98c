"""WaveGlow synthesis speed, JAX vs the official PyTorch, on the CPU, in one process on the same mels.

    python -m experiments.bench waveglow [--frames 32] [--repeats 3] [--sigma 0.6] [--channels 256] [--device cpu|gpu]
                                         [--dtype float32|bfloat16]

Both sides synthesise from the same random log-mel with stand-in weights of the published config (12 flows,
8-layer 256-channel WNs): JAX through ``jaxvoc.models.waveglow.Pretrained.vocode`` (jit, compiled in a warm-up call,
noise drawn in the program), PyTorch through the official ``WaveGlow.infer`` (weight norm removed, eval,
``torch.inference_mode``, all CPU threads; on the CPU its CUDA noise allocation is replaced by seeded CPU
``normal_``).
The runs alternate (torch, jax, torch, jax, ...) so that load from other processes hits both alike; the
median of each side is reported. Ends with a ``% of ceiling`` line (experiments/bench/ceiling.py) and
``waveglow: jax X kHz, pytorch Y kHz, ratio Z`` (output samples
per second; ratio = jax speed / pytorch speed).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import sys
import time

import numpy as np

from experiments.bench.ceiling import add_ceiling_argument, ceiling_line, official_flops, resolve_ceiling


def flops(cfg, n_samples: int) -> dict[str, float]:
    """Floating-point operations (2 per multiply-add) of one synthesis, by layer kind."""
    g = n_samples // cfg.n_group
    wn = cfg.WN_config
    c = wn.n_channels
    out = {"in_layers": 0.0, "cond_layer": 0.0, "res_skip": 0.0, "other": 0.0}
    for k in range(cfg.n_flows):
        n_half = cfg.remaining_channels(k) // 2
        out["in_layers"] += 2 * g * wn.n_layers * wn.kernel_size * c * 2 * c
        out["cond_layer"] += 2 * g * cfg.n_mel_channels * cfg.n_group * 2 * c * wn.n_layers
        out["res_skip"] += 2 * g * c * (2 * c * (wn.n_layers - 1) + c)
        out["other"] += 2 * g * (n_half * c + c * 2 * n_half + cfg.remaining_channels(k) ** 2)
    frames = n_samples // 256
    out["other"] += 2 * frames * 4 * cfg.n_mel_channels * cfg.n_mel_channels * 256  # the up-sampling
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="bench.py waveglow", description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=32, help="mel frames (256 samples each)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side")
    p.add_argument("--sigma", type=float, default=0.6)
    p.add_argument("--channels", type=int, default=256, help="WN n_channels (the published model: 256)")
    p.add_argument("--flows", type=int, default=12, help="n_flows (published: 12)")
    p.add_argument("--profile-torch", action="store_true", help="also print the official run's top operators")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="jaxvoc's synthesis dtype (its SNR: jaxvoc compare waveglow --dtype)")
    add_ceiling_argument(p)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import common
    from conversion import report as rp
    from conversion import waveglow as cw
    from jaxvoc.models.waveglow import Pretrained, WaveGlowConfig, WNConfig

    cfg = dataclasses.replace(WaveGlowConfig(), n_flows=args.flows, WN_config=WNConfig(8, args.channels, 3))
    model = cw.official_model(cfg, seed=0)
    cw.randomize_(model, 0)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = common.state_dict_to_params(sd, cw.expected_tree(cfg), "bench", transposed=lambda q: q[0] == "upsample")
    with cw._quiet():
        model = model.remove_weightnorm(model)
    tdev, jdev = rp.setup_device(args.device)
    model = model.to(tdev)
    with jax.default_device(jdev):
        jmodel = Pretrained(cfg, jax.device_put(params, jdev), dtype=args.dtype)

    rng = np.random.default_rng(0)
    mel = (rng.standard_normal((1, cfg.n_mel_channels, args.frames)) - 5.0).astype(np.float32)
    mel_t = torch.from_numpy(mel).to(tdev)
    mel_j = jax.device_put(jnp.asarray(mel.transpose(0, 2, 1)), jdev)
    n_samples = args.frames * 256
    torch_sync = rp.torch_sync(args.device)

    def run_torch():  # on a GPU the official infer draws its own CUDA noise
        noise = cw.official_noise(seed=0) if args.device == "cpu" else contextlib.nullcontext()
        with torch.inference_mode(), noise:
            return torch_sync(model.infer(mel_t, sigma=args.sigma))

    def run_jax():
        with jax.default_device(jdev):
            return jax.block_until_ready(jmodel.vocode(mel_j, sigma=args.sigma, seed=0))

    t0 = time.perf_counter()
    run_jax()
    compile_s = time.perf_counter() - t0
    runs: list = []
    t_torch, t_jax = rp.time_alternating([run_torch, run_jax], args.repeats, runs=runs)
    tt, tj = runs
    print(f"config: {cfg.n_flows} flows, WN {cfg.WN_config.n_layers} layers x {cfg.WN_config.n_channels} channels, "
          f"n_group {cfg.n_group}; jax {args.dtype}; {args.frames} frames = {n_samples} samples; sigma {args.sigma}")
    print(f"threads: torch {torch.get_num_threads()}, cpu count {os.cpu_count()}; jax first call (compile + run) "
          f"{compile_s:.1f} s")
    print(f"pytorch runs (s): {', '.join(f'{t:.2f}' for t in tt)}")
    print(f"jax runs (s):     {', '.join(f'{t:.2f}' for t in tj)}")
    fl = flops(cfg, n_samples)
    total = sum(fl.values())
    print("multiply-adds x2: " + ", ".join(f"{k} {v / 1e9:.1f} GFLOP ({100 * v / total:.0f}%)" for k, v in fl.items())
          + f"; total {total / 1e9:.1f} GFLOP -> jax {total / t_jax / 1e9:.1f} GFLOP/s, "
          f"pytorch {total / t_torch / 1e9:.1f} GFLOP/s")
    if args.profile_torch:
        from torch.profiler import ProfilerActivity, profile

        with profile(activities=[ProfilerActivity.CPU]) as prof:
            run_torch()
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=8))
    counted = official_flops(run_torch)  # the official infer, counted by torch.utils.flop_counter
    print(ceiling_line(counted, t_jax, t_torch, resolve_ceiling(args, jdev)))
    khz_j, khz_t = n_samples / t_jax / 1e3, n_samples / t_torch / 1e3
    print(f"waveglow: jax {khz_j:.2f} kHz, pytorch {khz_t:.2f} kHz, ratio {khz_j / khz_t:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
