"""Snake's sin^2: the squared arithmetic sine (``jnp.square(jaxvoc.nn.activations.sin(x))``, jaxvoc before
2026-11-30) against ``sin_squared`` (one reduction by pi, one polynomial), three ways, in one process:

    python -m experiments.profile.snake_sine [--rounds 9] [--models]

1. accuracy of sin^2 alone against float64 (rms and max absolute error, uniform x in [-s, s]) beside torch's
   float32 ``sin(x) ** 2`` (what the official Snake computes);
2. time of BigVGAN's anti-aliased activation (``Activation1d``, SnakeBeta) at the last stage's shape of
   bigvgan_base_22khz_80band for 128 frames ([1, 32768, 32]), both forms alternated in rounds (median, range);
3. with ``--models``: the BigVGAN generator (every bundled config at 64 channels, as tests/test_bigvgan.py
   builds them, random official weights, 24 frames of the bundled speech) in both forms, against the official
   float32 and float64 outputs: SNR to float32, SNR to float64, and the official float32's SNR to float64 (the
   float64 rule asks SNR(jaxvoc, float64) >= SNR(official float32, float64) - 3 dB).
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np


def _forms():
    import jax.numpy as jnp

    from jaxvoc.nn import activations as A

    return {"squared sine": lambda v: jnp.square(A._sin_f32(v)) if v.dtype == jnp.float32 else jnp.square(jnp.sin(v)),
            "sin_squared": A.sin_squared}


def accuracy() -> None:
    import jax
    import torch

    forms = _forms()
    print("sin^2 against float64: rms / max absolute error")
    for scale in (1.0, 30.0, 1e3, 1e5):
        x = np.random.default_rng(1).uniform(-scale, scale, 1_000_000).astype(np.float32)
        ref = np.sin(x.astype(np.float64)) ** 2
        cols = {k: np.asarray(jax.jit(f)(x)).astype(np.float64) - ref for k, f in forms.items()}
        cols["torch float32"] = (torch.sin(torch.from_numpy(x)) ** 2).double().numpy() - ref
        print(f"  |x| <= {scale:g}: " + ", ".join(f"{k} {np.sqrt(np.mean(e ** 2)):.3g} / {np.abs(e).max():.3g}"
                                                 for k, e in cols.items()))


def activation_time(rounds: int) -> None:
    import jax

    from jaxvoc.nn import activations as A

    x = jax.numpy.asarray(np.random.default_rng(0).standard_normal((1, 32768, 32)).astype(np.float32))
    m = A.Activation1d(beta=True, logscale=True)
    p = m.init(jax.random.PRNGKey(0), x)
    keep, compiled = A.sin_squared, {}
    try:
        for k, f in _forms().items():  # the module reads A.sin_squared when traced
            A.sin_squared = f
            compiled[k] = jax.jit(lambda p, x: m.apply(p, x)).lower(p, x).compile()
    finally:
        A.sin_squared = keep
    times = {k: [] for k in compiled}
    for _ in range(rounds):
        for k, f in compiled.items():
            f(p, x).block_until_ready()
            t = time.perf_counter()
            for _ in range(5):
                f(p, x).block_until_ready()
            times[k].append((time.perf_counter() - t) / 5 * 1e3)
    a, b = (np.array(v) for v in times.values())
    r = a / b
    print(f"Activation1d [1, 32768, 32], medians of {rounds} rounds: squared sine {np.median(a):.2f} ms, "
          f"sin_squared {np.median(b):.2f} ms, speed-up {np.median(r):.2f} (range {r.min():.2f}-{r.max():.2f})")


def models() -> None:
    import jax.numpy as jnp
    import soundfile as sf
    import torch

    from conversion import bigvgan as cb
    from conversion.report import snr_db
    from experiments import FIXTURES
    from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained, official_configs
    from jaxvoc.nn import activations as A

    keep = A.sin_squared
    print("BigVGAN generators (64 channels), SNR dB: to official float32 / to float64, per form; official "
          "float32 to float64")
    for name in official_configs():
        config = dict(BigVGANConfig.official(name).to_dict(), upsample_initial_channel=64)
        with tempfile.TemporaryDirectory() as d:
            folder = cb.write_official_folder(d, config, seed=0)
            cfg_dict, params, _ = cb.convert(folder)
            cfg = BigVGANConfig.from_dict(cfg_dict)
            sr = min((22050, 24000, 44100), key=lambda r: abs(r - cfg.sampling_rate))
            y, _ = sf.read(f"{FIXTURES}/speech_{sr}.wav", dtype="float32")
            mel = cb.official_mel(y, config)[:, :, 40:64]
            sd = torch.load(f"{folder}/{cb.GENERATOR_FILE}", weights_only=True)["generator"]
            model = cb.official_model(config, sd)
            with torch.inference_mode():
                ref = model(mel)[:, 0].numpy()
                ref64 = model.double()(mel.double())[:, 0].numpy()
            row = []
            try:
                for f in _forms().values():
                    A.sin_squared = f
                    out = np.asarray(Pretrained(cfg, params)(jnp.asarray(mel.numpy().transpose(0, 2, 1))))
                    row.append(f"{snr_db(out, ref):.1f} / {snr_db(out, ref64):.1f}")
            finally:
                A.sin_squared = keep
        print(f"  {name:36s} squared sine {row[0]}, sin_squared {row[1]}; official {snr_db(ref, ref64):.1f}",
              flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.profile.snake_sine", description=__doc__.split("\n")[0])
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--models", action="store_true", help="also the generators' equivalence in both forms")
    args = p.parse_args(argv)
    from conversion.report import versions

    print(versions())
    accuracy()
    activation_time(args.rounds)
    if args.models:
        models()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
