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
import contextlib
import io
import re
import statistics
import sys
import time

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


def _alternate(fns: dict, rounds: int) -> dict:
    """Each ``fns[k]()`` (blocking) once per round, the order alternated; median time per form and the
    without/with ratio per round."""
    for f in fns.values():
        f()
    times = {k: [] for k in fns}
    for r in range(rounds):
        for k in (list(fns) if r % 2 == 0 else list(fns)[::-1]):
            t = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t)
    ratios = [a / b for a, b in zip(times["without"], times["with"])]
    return {"without_ms": 1e3 * statistics.median(times["without"]), "with_ms": 1e3 * statistics.median(times["with"]),
            "ratio": statistics.median(ratios), "range": (min(ratios), max(ratios))}


def stage_shapes(name: str, frames: int) -> list[tuple[int, int]]:
    """(channels, length) of each AMP stage of the official config ``name`` for ``frames`` mel frames."""
    from jaxvoc.models.bigvgan import BigVGANConfig

    h = BigVGANConfig.official(name)
    out, length = [], frames
    for i, u in enumerate(h.upsample_rates):
        length *= u
        out.append((h.upsample_initial_channel // 2 ** (i + 1), length))
    return out


def layers(frames: int, rounds: int) -> None:
    import jax
    import jax.numpy as jnp
    import torch
    from bigvgan.activations import SnakeBeta as TSnakeBeta
    from bigvgan.alias_free_activation.torch.act import Activation1d as TActivation1d

    from conversion.report import snr_db
    from jaxvoc.nn.activations import Activation1d

    print(f"Activation1d (SnakeBeta, log-scale) alone, [1, T, C], {rounds} rounds; ratio = without / with")
    seen = set()
    for name in CONFIGS:
        for C, T in stage_shapes(name, frames):
            if (C, T) in seen:
                continue
            seen.add((C, T))
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
            t = _alternate({k: (lambda c: lambda: jax.block_until_ready(c(params, xj)))(c) for k, c in comp.items()},
                           rounds)
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
                  f"without {t['without_ms']:7.2f} ms, with {t['with_ms']:6.2f} ms, ratio {t['ratio']:.2f} "
                  f"({t['range'][0]:.2f}-{t['range'][1]:.2f}) | SNR to official f32 / f64: without {snr['without']}, "
                  f"with {snr['with']}; official f32 to f64 {snr_db(ref, ref64):.1f} dB", flush=True)


def models(frames: int, rounds: int) -> None:
    import jax
    import jax.numpy as jnp
    import torch

    from conversion import bigvgan as cb
    from conversion.report import snr_db
    from experiments.bench.train_bigvgan import official_config
    from jaxvoc.models.base import folded
    from jaxvoc.models.bigvgan import BigVGAN, BigVGANConfig

    print(f"full-size generators, {frames} frames, batch 1, {rounds} rounds; ratio = without / with")
    for name in CONFIGS:
        config = official_config(name, False)
        model = cb.official_model(config, seed=0)
        cb.randomize_(model, 0)
        sd = model.state_dict()
        cfg = BigVGANConfig.from_dict(config)
        params = {"params": folded(cb.convert_state_dict(sd, cfg, "official model"))}
        cfg = cb.with_checkpoint_taps(cfg, sd, "official model")
        with contextlib.redirect_stdout(io.StringIO()):
            model.remove_weight_norm()
        mel = np.random.default_rng(0).normal(-5.0, 2.0, (1, cfg.num_mels, frames)).astype(np.float32)
        with torch.inference_mode():
            ref = model(torch.from_numpy(mel))[:, 0].numpy()
            ref64 = model.double()(torch.from_numpy(mel).double())[:, 0].numpy()
        module = BigVGAN(cfg)
        mj = jnp.asarray(mel.transpose(0, 2, 1))
        fn = lambda p, m: module.apply(p, m)  # noqa: E731
        comp = {k: _compile(fn, params, mj, barrier=k == "with") for k in ("without", "with")}
        outs = {k: np.asarray(c(params, mj)) for k, c in comp.items()}
        t = _alternate({k: (lambda c: lambda: jax.block_until_ready(c(params, mj)))(c) for k, c in comp.items()},
                       rounds)
        snr = {k: f"{snr_db(o, ref):.1f} / {snr_db(o, ref64):.1f}" for k, o in outs.items()}
        print(f"  {name}: without {t['without_ms']:.1f} ms, with {t['with_ms']:.1f} ms, ratio {t['ratio']:.2f} "
              f"({t['range'][0]:.2f}-{t['range'][1]:.2f}) | SNR to official f32 / f64: without {snr['without']}, "
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
