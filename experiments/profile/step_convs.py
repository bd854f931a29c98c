"""Every convolution of a compiled training step, from XLA's optimised HLO: its window (stride, padding, base
dilation = ``lhs_dilate``, window dilation = ``rhs_dilate``, window reversal = ``rhs_reversal``), its operand
shapes and how often it occurs; optionally each distinct one timed alone (jitted, alternating).

    python -m experiments.profile.step_convs bigvgan|waveglow [--small] [--segment T] [--time] [--repeats R]
                                            [--hlo FILE]

bigvgan: the step of `jaxvoc train` on bigvgan_v2_24khz_100band_256x (generator, MPD, CQTD); waveglow: the
published WaveGlow; --small: the test-size configs. ``--hlo FILE`` also writes the compiled HLO text. A row
is marked ``BASE-DILATED`` or ``REVERSED`` where XLA's CPU backend cannot hand the convolution to its fast
kernels (oneDNN / YNNPACK refuse both; see issue 13).
"""

from __future__ import annotations

import argparse
import collections
import re
import sys

_DEF = re.compile(r"%?([\w.\-]+) = (\w+\[[\d,]*\])(?:\{[^}]*\})? (\w[\w\-]*)\(([^)]*)\)(.*)$")


def _shape(s: str) -> tuple[str, tuple[int, ...]]:
    m = re.match(r"(\w+)\[([\d,]*)\]", s)
    return m.group(1), tuple(int(d) for d in m.group(2).split(",") if d)


def _attr(rest: str, key: str) -> str | None:
    m = re.search(key + r"=([^ ,}]+)", rest)
    return m.group(1) if m else None


def parse_convs(hlo: str) -> list[dict]:
    """The convolutions of an HLO module's text, one dict each (shapes, window, dim_labels, groups)."""
    shapes, convs = {}, []
    for line in hlo.splitlines():
        m = _DEF.search(line)
        if m:
            shapes[m.group(1)] = m.group(2)
            if m.group(3) == "convolution":
                convs.append(m)
    out = []
    for m in convs:
        a, b = (o.strip().lstrip("%") for o in m.group(4).split(","))
        rest = m.group(5)
        win = re.search(r"window=\{([^}]*)\}", rest)
        win = win.group(1) if win else ""
        out.append({
            "out": _shape(m.group(2)), "lhs": _shape(shapes[a]), "rhs": _shape(shapes[b]),
            "size": _attr(win, "size"), "stride": _attr(win, "stride"), "pad": _attr(win, "pad"),
            "lhs_dilate": _attr(win, "lhs_dilate"), "rhs_dilate": _attr(win, "rhs_dilate"),
            "rhs_reversal": _attr(win, "rhs_reversal"), "dim_labels": _attr(rest, "dim_labels"),
            "groups": int(_attr(rest, "feature_group_count") or 1),
            "batch_groups": int(_attr(rest, "batch_group_count") or 1),
        })
    return out


def _ints(s: str | None, n: int, default: int) -> tuple[int, ...]:
    return tuple(int(v) for v in s.split("x")) if s else (default,) * n


def conv_fn(c: dict):
    """A jitted function and its operands that run the convolution ``c`` alone (reversal as a flipped
    kernel, which XLA folds back into the window)."""
    import jax
    import jax.numpy as jnp
    import numpy as np

    lhs_l, rhs_l, out_l = re.match(r"(\w+)_(\w+)->(\w+)", c["dim_labels"]).groups()
    nsp = len(lhs_l) - 2
    spatial = [str(i) for i in range(nsp)]
    pads = [tuple(int(v) for v in p.split("_")) for p in c["pad"].split("x")] if c["pad"] else [(0, 0)] * nsp
    rev = _ints(c["rhs_reversal"], nsp, 0)
    # map HLO labels to lax dimension_numbers strings: b/f/0/1 -> N/C/spatial; i/o/0/1 -> I/O/spatial
    sp_names = "HWD"[:nsp]
    lhs_spec = "".join({"b": "N", "f": "C"}.get(ch, sp_names[int(ch)] if ch.isdigit() else ch) for ch in lhs_l)
    rhs_spec = "".join({"i": "I", "o": "O"}.get(ch, sp_names[int(ch)] if ch.isdigit() else ch) for ch in rhs_l)
    out_spec = "".join({"b": "N", "f": "C"}.get(ch, sp_names[int(ch)] if ch.isdigit() else ch) for ch in out_l)
    flip_axes = tuple(rhs_l.index(spatial[i]) for i in range(nsp) if rev[i])

    def f(x, w):
        if flip_axes:
            w = jnp.flip(w, flip_axes)
        return jax.lax.conv_general_dilated(
            x, w, _ints(c["stride"], nsp, 1), pads, lhs_dilation=_ints(c["lhs_dilate"], nsp, 1),
            rhs_dilation=_ints(c["rhs_dilate"], nsp, 1), dimension_numbers=(lhs_spec, rhs_spec, out_spec),
            feature_group_count=c["groups"], batch_group_count=c["batch_groups"])

    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.standard_normal(c["lhs"][1]).astype(np.float32))
    w = jnp.asarray(rng.standard_normal(c["rhs"][1]).astype(np.float32))
    return jax.jit(f), x, w


def describe(c: dict) -> str:
    flags = []
    if c["lhs_dilate"] and set(c["lhs_dilate"].split("x")) != {"1"}:
        flags.append("BASE-DILATED")
    if c["rhs_reversal"] and "1" in c["rhs_reversal"].split("x"):
        flags.append("REVERSED")
    w = " ".join(f"{k}={c[k]}" for k in ("size", "stride", "pad", "lhs_dilate", "rhs_dilate", "rhs_reversal")
                 if c[k])
    g = f" groups={c['groups']}" if c["groups"] > 1 else ""
    g += f" batch_groups={c['batch_groups']}" if c["batch_groups"] > 1 else ""
    return (f"{c['lhs'][1]} * {c['rhs'][1]} -> {c['out'][1]} {c['dim_labels']} {w}{g}"
            f"{'  ' + ' '.join(flags) if flags else ''}")


def compiled_step_hlo(model: str, small: bool, segment: int | None) -> str:
    """The optimised HLO text of the jitted train step of ``model`` (batch 1)."""
    import json
    import os

    from experiments import REPO
    from experiments.bench.train_common import one_device_setup, speech_segments

    if model == "bigvgan":
        from experiments.bench.train_bigvgan import official_config
        from jaxvoc.train.bigvgan import BigVGANTask as task_cls

        raw = official_config("bigvgan_v2_24khz_100band_256x", small)
        segment = segment or (4096 if small else 8192)
        raw.update(segment_size=segment, batch_size=1)
        sr = raw["sampling_rate"]
    else:
        from jaxvoc.train.waveglow import WaveGlowTask as task_cls

        with open(os.path.join(REPO, "experiments", "training", "configs", "waveglow.json")) as f:
            raw = json.load(f)
        if small:
            raw["waveglow_config"].update(n_flows=4, n_early_every=2,
                                          WN_config={"n_layers": 3, "n_channels": 32, "kernel_size": 3})
        segment = segment or (4096 if small else 16000)
        raw["train_config"].update(batch_size=1, fp16_run=False)
        raw["data_config"]["segment_length"] = segment
        raw["train"] = {"compute_dtype": "float32"}
        sr = raw["data_config"]["sampling_rate"]
    audio = speech_segments(sr, 1, segment)
    setup, batch = one_device_setup(task_cls, raw, audio)
    return setup.step.lower(setup.init(), batch).compile().as_text()


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("model", choices=["bigvgan", "waveglow"])
    p.add_argument("--small", action="store_true")
    p.add_argument("--segment", type=int)
    p.add_argument("--time", action="store_true", help="time each distinct convolution alone")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--hlo", help="also write the compiled HLO text here")
    args = p.parse_args(argv)

    hlo = compiled_step_hlo(args.model, args.small, args.segment)
    if args.hlo:
        with open(args.hlo, "w") as f:
            f.write(hlo)
    counts = collections.Counter(describe(c) for c in parse_convs(hlo))
    first = {describe(c): c for c in parse_convs(hlo)}
    times = {}
    if args.time:
        import contextlib
        import io

        from conversion import report as rp

        fns = []
        for d in counts:
            f, x, w = conv_fn(first[d])
            fns.append(lambda f=f, x=x, w=w: f(x, w))
        with contextlib.redirect_stdout(io.StringIO()):
            t = rp.time_alternating(fns, args.repeats, 1, [rp.jax_sync] * len(fns))
        times = dict(zip(counts, t))
    total = 0.0
    print(f"{args.model}{' (small)' if args.small else ''}: {sum(counts.values())} convolutions, {len(counts)} "
          "distinct (count x, ms each alone)")
    for d, n in sorted(counts.items(), key=lambda kv: -times.get(kv[0], 0) * kv[1]):
        ms = f"{times[d] * 1e3:8.2f} ms" if d in times else ""
        total += times.get(d, 0) * n
        print(f"  {n:3d} x {ms} {d}")
    if times:
        print(f"sum of count x time: {total * 1e3:.0f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
