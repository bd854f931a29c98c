"""Benchmark: the JAX codec (jit, after warm-up) against NeMo's AudioCodecModel (inference mode, weight norm
folded, all CPU threads), in the same process on the same speech, encode and decode timed separately.

    python -m experiments.bench codec [--seconds 4] [--repeats 3] [--batch 1] [--config lfr|small|tiny]
                                      [--device cpu|gpu]

Speed is audio throughput in kHz (input samples encoded, or output samples decoded, per second / 1000). Ends
with ``codec: jax encode X kHz / decode Y kHz, pytorch encode U kHz / decode V kHz, ratio R`` (R: the lower of
the encode and decode speed ratios, JAX over PyTorch), after one ``% of ceiling`` line each for encode and
decode (experiments/bench/ceiling.py). Stand-in weights (random, from NeMo's own init); speed
does not depend on them.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

from experiments import fixture
from experiments.bench.ceiling import add_ceiling_argument, ceiling_line, official_flops, resolve_ceiling



def _speech(seconds: float, sr: int) -> np.ndarray:
    from jaxvoc.io.audio import load_audio

    y = load_audio(fixture("speech_22050.wav"), sr)
    n = int(seconds * sr)
    return np.tile(y, -(-n // len(y)))[:n].astype(np.float32)


WIDTHS = {"lfr": None, "small": (8, 64), "tiny": (2, 32)}  # encoder / decoder base_channels; tiny: smoke tests


def codec_config(name: str) -> dict:
    """The LFR codec's NeMo config, at its published widths ('lfr') or narrower ('small', 'tiny')."""
    from conversion import codec as cc

    cfg = cc.lfr_config(discriminator=False)
    if WIDTHS[name]:
        enc, dec = WIDTHS[name]
        cfg = cc.variant_config(cfg, encoder={"base_channels": enc}, decoder={"base_channels": dec})
    return cfg


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="bench.py codec", description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=4.0, help="audio length (default 4 s)")
    p.add_argument("--batch", type=int, default=1, help="items per call (default 1)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (median)")
    p.add_argument("--config", default="lfr", choices=sorted(WIDTHS), help="codec config (default lfr)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--profile", help="write a jax.profiler trace of one encode+decode to this folder")
    add_ceiling_argument(p)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import codec as cc
    from conversion import report as rp
    from jaxvoc.models.codec import CodecConfig, Pretrained

    cfg_dict = codec_config(args.config)
    model = cc.build_nemo_model(cfg_dict, seed=0)
    sd = {k: v for k, v in model.state_dict().items()}
    from conversion import common

    sd = common.normalize_keys(common.to_numpy_state_dict(sd, "model"))
    cfg = CodecConfig.from_dict(cfg_dict)
    params, _ = cc.convert_state_dict(sd, cfg, "model")
    tdev, jdev = rp.setup_device(args.device)
    with jax.default_device(jdev):
        jm = Pretrained(cfg, jax.device_put(params, jdev))
    cc.remove_weight_norm_(model)
    model = model.to(tdev)

    audio = np.stack([_speech(args.seconds, cfg.sample_rate)] * args.batch)
    n = audio.shape[1]
    a_t = torch.from_numpy(audio).to(tdev)
    n_t = torch.full((args.batch,), n, dtype=torch.long, device=tdev)
    with torch.inference_mode():
        tok_t, tlen_t = model.encode(audio=a_t, audio_len=n_t)
    a_j = jax.device_put(jnp.asarray(audio), jdev)
    tokens = tok_t.cpu().numpy()
    tok_j = jax.device_put(jnp.asarray(tokens), jdev)
    torch_sync = rp.torch_sync(args.device)

    def in_torch(fn):
        def run():
            with torch.inference_mode():
                return torch_sync(fn())
        return run

    t_enc_jax, t_enc_torch, t_dec_jax, t_dec_torch = rp.time_alternating(
        [lambda: jm.encode(a_j), in_torch(lambda: model.encode(audio=a_t, audio_len=n_t)),
         lambda: jm.decode(tok_j), in_torch(lambda: model.decode(tokens=tok_t, tokens_len=tlen_t))],
        args.repeats, 1, [rp.jax_sync, lambda x: x] * 2)
    agree = float(np.mean(np.asarray(jm.encode(a_j)[0]) == tokens)) * 100
    if args.profile:
        with jax.profiler.trace(args.profile):
            jax.block_until_ready(jm.encode(a_j))
            jax.block_until_ready(jm.decode(tok_j))

    samples_out = tokens.shape[2] * cfg.samples_per_token * args.batch
    khz = lambda s, t: s / t / 1e3  # noqa: E731
    je, jd = khz(n * args.batch, t_enc_jax), khz(samples_out, t_dec_jax)
    pe, pd = khz(n * args.batch, t_enc_torch), khz(samples_out, t_dec_torch)
    rp.print_table([
        ("config", f"{args.config} ({cfg.sample_rate} Hz, {cfg.samples_per_frame} samples/frame, "
                   f"{cfg.num_codebooks} x {cfg.codebook_size} codes)"),
        ("input", f"{args.batch} x {n} samples ({args.seconds:.2f} s), {tokens.shape[2]} frames"),
        ("threads", f"torch {torch.get_num_threads()}, jax devices {jax.devices()}"),
        ("encode", f"jax {t_enc_jax * 1e3:.1f} ms, pytorch {t_enc_torch * 1e3:.1f} ms, "
                   f"ratio {t_enc_torch / t_enc_jax:.2f}"),
        ("decode", f"jax {t_dec_jax * 1e3:.1f} ms, pytorch {t_dec_torch * 1e3:.1f} ms, "
                   f"ratio {t_dec_torch / t_dec_jax:.2f}"),
        ("token agreement", f"{agree:.2f} %"),
    ], f"codec benchmark ({args.device}, float32)")
    ceiling = resolve_ceiling(args, jdev)
    print(ceiling_line(official_flops(lambda: model.encode(audio=a_t, audio_len=n_t)), t_enc_jax, t_enc_torch,
                       ceiling, "encode"))
    print(ceiling_line(official_flops(lambda: model.decode(tokens=tok_t, tokens_len=tlen_t)), t_dec_jax, t_dec_torch,
                       ceiling, "decode"))
    ratio = min(t_enc_torch / t_enc_jax, t_dec_torch / t_dec_jax)
    print(f"codec: jax encode {je:.1f} kHz / decode {jd:.1f} kHz, pytorch encode {pe:.1f} kHz / decode {pd:.1f} kHz, "
          f"ratio {ratio:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
