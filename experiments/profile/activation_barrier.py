"""BigVGAN's anti-aliased activation with and without the optimisation barriers of ``jaxvoc.nn.activations``
(the replicate-padded input of ``upsample_phases`` and the padded phases of ``downsample_phases`` materialised
once each), in one process, alternated in rounds after jit warm-up:

    python -m experiments.profile.activation_barrier [--frames 128] [--rounds 15] [--no-models]

Without the barriers XLA's CPU backend fuses the padding's concatenations into their readers: the optimised
HLO then computes the up-sampling FIR and Snake's sine in several fusions, one per (phase, side of the
padding), instead of once. The "without" form is traced with ``jax.lax.optimization_barrier`` replaced by the
identity, which is exactly the code before the change.

1. ``Activation1d`` (SnakeBeta, log-scale) at the shape of every AMP stage of bigvgan_v2_24khz_100band_256x and
   bigvgan_base_22khz_80band for a ``--frames`` mel: the fusions in each optimised HLO, the time of each form
   (median over rounds) and the ratio per round (median, range); each form's SNR against the official
   ``Activation1d`` in float32 and in float64 (random alpha/beta near the trained range).
2. The two full-size generators (random weights from the official init, as ``bench bigvgan``), both forms
   alternated: median times, ratio, and each form's SNR to the official float32 and float64 outputs.
"""

from __future__ import annotations

import argparse
import re
import sys

import numpy as np

CONFIGS = ("bigvgan_v2_24khz_100band_256x", "bigvgan_base_22khz_80band")


def _compile(fn, *args, barrier: bool):
    """``jax.jit(fn)`` compiled for ``args``, traced with (barrier) or without the optimisation barriers."""
    import jax

    keep = jax.lax.optimization_barrier
    try:
        if not barrier:
            jax.lax.optimization_barrier = lambda x: x
        return jax.jit(lambda *a: fn(*a)).lower(*args).compile()  # a new function: no trace cached for it
    finally:
        jax.lax.optimization_barrier = keep


def _timing(comp: dict, args: tuple, rounds: int) -> str:
    """Both compiled forms called on ``args``, alternated in ``rounds`` rounds (flop_reductions.alternate): each
    form's median time and the without / with ratio per round (median, range)."""
    import jax

    from experiments.profile.flop_reductions import alternate

    t = alternate({k: (lambda c: lambda: jax.block_until_ready(c(*args)))(c) for k, c in comp.items()}, rounds,
                  "without")
    lo, hi = t["with"]["ratio_range"]
    return (f"without {1e3 * t['without']['median_s']:7.2f} ms, with {1e3 * t['with']['median_s']:7.2f} ms, ratio "
            f"{t['with']['ratio_median']:.2f} ({lo:.2f}-{hi:.2f})")


def layers(frames: int, rounds: int) -> None:
    import jax.numpy as jnp
    import torch
    from bigvgan.activations import SnakeBeta as TSnakeBeta
    from bigvgan.alias_free_activation.torch.act import Activation1d as TActivation1d

    from conversion.report import snr_db
    from experiments.bench.ceiling import generator_convs
    from jaxvoc.nn.activations import Activation1d

    print(f"Activation1d (SnakeBeta, log-scale) alone, [1, T, C], {rounds} rounds; ratio = without / with")
    shapes = dict.fromkeys((name, c["c_in"], c["length"]) for name in CONFIGS
                           for c in generator_convs(name, frames) if c["where"].startswith("resblocks"))
    for name, C, T in shapes:
        rng = np.random.default_rng(0)
        x = rng.standard_normal((1, T, C)).astype(np.float32)
        a, b = (rng.uniform(-1.0, 0.5, C).astype(np.float32) for _ in range(2))
        params = {"params": {"act": {"alpha": jnp.asarray(a), "beta": jnp.asarray(b)}}}
        act = Activation1d(beta=True, logscale=True)
        xj = jnp.asarray(x)
        fn = lambda p, x: act.apply(p, x)  # noqa: E731
        comp = {k: _compile(fn, params, xj, barrier=k == "with") for k in ("without", "with")}
        fusions = {k: len(re.findall(r" fusion\(", c.as_text())) for k, c in comp.items()}
        outs = {k: np.asarray(c(params, xj)) for k, c in comp.items()}
        act_t = TSnakeBeta(C, alpha_logscale=True)
        with torch.no_grad():
            act_t.alpha.copy_(torch.from_numpy(a))
            act_t.beta.copy_(torch.from_numpy(b))
        mod = TActivation1d(act_t)
        xt = torch.from_numpy(x.transpose(0, 2, 1).copy())
        with torch.inference_mode():
            ref = mod(xt).numpy().transpose(0, 2, 1)
            ref64 = mod.double()(xt.double()).numpy().transpose(0, 2, 1)
        snr = {k: f"{snr_db(o, ref):.1f} / {snr_db(o, ref64):.1f}" for k, o in outs.items()}
        print(f"  {name.split('_')[1]:4s} C={C:4d} T={T:6d}: fusions {fusions['without']} -> {fusions['with']}; "
              f"{_timing(comp, (params, xj), rounds)} | SNR to official f32 / f64: without {snr['without']}, "
              f"with {snr['with']}; official f32 to f64 {snr_db(ref, ref64):.1f} dB", flush=True)


def models(frames: int, rounds: int) -> None:
    import jax.numpy as jnp
    import torch

    from conversion import bigvgan as cb
    from conversion.report import snr_db
    from experiments.bench.train_bigvgan import official_config
    from jaxvoc.models.base import folded
    from jaxvoc.models.bigvgan import BigVGAN

    print(f"full-size generators, {frames} frames, batch 1, {rounds} rounds; ratio = without / with")
    for name in CONFIGS:
        config = official_config(name, False)
        model, cfg, params = cb.random_official(config)
        params = {"params": folded(params)}
        cb.remove_weight_norm_(model)
        mel = np.random.default_rng(0).normal(-5.0, 2.0, (1, cfg.num_mels, frames)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(mel))[:, 0].numpy()
            ref64 = model.double()(torch.from_numpy(mel).double())[:, 0].numpy()
        module = BigVGAN(cfg)
        mj = jnp.asarray(mel.transpose(0, 2, 1))
        fn = lambda p, m: module.apply(p, m)  # noqa: E731
        comp = {k: _compile(fn, params, mj, barrier=k == "with") for k in ("without", "with")}
        outs = {k: np.asarray(c(params, mj)) for k, c in comp.items()}
        snr = {k: f"{snr_db(o, ref):.1f} / {snr_db(o, ref64):.1f}" for k, o in outs.items()}
        print(f"  {name}: {_timing(comp, (params, mj), rounds)} | SNR to official f32 / f64: without {snr['without']}, "
              f"with {snr['with']}; official f32 to f64 {snr_db(ref, ref64):.1f} dB", flush=True)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.profile.activation_barrier",
                                description=__doc__.split("\n")[0])
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--rounds", type=int, default=15)
    p.add_argument("--no-models", action="store_true", help="only the activations alone")
    args = p.parse_args(argv)

    import datetime
    import os

    from conversion.report import versions

    print(f"# python -m experiments.profile.activation_barrier {' '.join(sys.argv[1:] if argv is None else argv)}; "
          f"{datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, "
          f"load {os.getloadavg()[0]:.2f}; {versions()}")
    layers(args.frames, args.rounds)
    if not args.no_models:
        models(args.frames, args.rounds)
    print(f"# load at the end {os.getloadavg()[0]:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
