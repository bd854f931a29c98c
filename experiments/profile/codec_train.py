"""Where a codec train step's time goes: the jitted step of `jaxvoc train` on NeMo's LFR config (batch 1 of the
24576-sample crop, as `bench train-codec`), one step with the discriminator update and one without, each
traced by JAX's profiler; the slowest operations of each step with the model code they come from, and the
convolutions of the compiled program with the most multiply-adds.

    python -m experiments.profile.codec_train [--small] [--top 25] [--hlo FILE]

--small: the reference harness's CPU-test size (experiments.reference.codec_train.small_config). The times
are of one traced step each (after a warm-up pair), so read them to ~10% on a quiet machine; the
multiply-add counts come from the compiled HLO and do not depend on the machine.
"""

from __future__ import annotations

import argparse
import collections
import glob
import gzip
import json
import math
import os
import re
import sys
import tempfile
import time


def conv_macs(c: dict) -> float:
    """Multiply-adds of one HLO convolution (``step_convs.parse_convs``'s dict): every output element sums
    window x input features of its group (the kernel's input dimension)."""
    rhs_labels = c["dim_labels"].split("_")[1].split("->")[0]
    out_features = c["rhs"][1][rhs_labels.index("o")]
    return math.prod(c["out"][1]) * math.prod(c["rhs"][1]) / out_features


def op_sources(hlo: str) -> dict[str, str]:
    """HLO instruction name -> the jax op_name of its metadata (which module it was traced from)."""
    out = {}
    for m in re.finditer(r"%?([\w.\-]+) = [^\n]*?op_name=\"([^\"]+)\"", hlo):
        out[m.group(1)] = m.group(2)
    return out


def traced_ops(trace_dir: str) -> collections.Counter:
    """Total microseconds per XLA operation name in the perfetto trace JAX's profiler wrote."""
    path = glob.glob(os.path.join(trace_dir, "**", "*.trace.json.gz"), recursive=True)[0]
    with gzip.open(path) as f:
        ev = json.load(f)
    total = collections.Counter()
    for e in ev["traceEvents"] if isinstance(ev, dict) else ev:
        if e.get("ph") == "X" and not e["name"].startswith(("$", "ThunkExecutor")):
            total[e["name"]] += e.get("dur", 0)
    return total


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true")
    p.add_argument("--top", type=int, default=25)
    p.add_argument("--hlo", help="also write the compiled step's HLO text here")
    args = p.parse_args(argv)

    import jax

    from conversion import codec as cc
    from experiments.bench import train_codec as tc
    from experiments.bench.train_common import one_device_setup
    from experiments.profile.step_convs import describe, parse_convs
    from experiments.reference import codec_train as ct

    nemo_cfg, n_samples, arch = tc.sizes(args.small)
    batch = ct.vocoder_batch([-1], n_samples, seed=0)
    with tempfile.TemporaryDirectory() as tmp:
        # WavLM of the config's architecture (random weights: speed does not depend on them), as the bench has it
        model = cc.build_nemo_model(nemo_cfg, seed=0, randomize=False, wavlm=arch)
        cfg = tc.jax_config(model, nemo_cfg, n_samples, args.small, tmp)
        del model
        setup, b = one_device_setup(tc.task, cfg, tc.jax_batch(batch))
        state = setup.init()
        t0 = time.perf_counter()
        compiled = setup.step.lower(state, b).compile()
        print(f"compile {time.perf_counter() - t0:.1f} s")
        hlo = compiled.as_text()
        if args.hlo:
            with open(args.hlo, "w") as f:
                f.write(hlo)
        for _ in range(2):  # warm-up: one step with the discriminator update, one without
            state, m = compiled(state, b)
        jax.block_until_ready(state)
        sources = op_sources(hlo)
        for name, label in (("update", "with the discriminator update"), ("none", "without")):
            trace = os.path.join(tmp, "trace_" + name)  # a folder each: traced_ops reads the one trace in it
            with jax.profiler.trace(trace, create_perfetto_trace=True):
                t0 = time.perf_counter()
                state, m = compiled(state, b)
                jax.block_until_ready(state)
                wall = time.perf_counter() - t0
            ops = traced_ops(trace)
            print(f"\nstep {label}: {wall * 1e3:.0f} ms wall (disc_updated {float(m['disc_updated']):.0f}); "
                  f"operations {sum(ops.values()) / 1e3:.0f} ms; the {args.top} slowest:")
            for name, us in ops.most_common(args.top):
                print(f"{us / 1e3:9.1f} ms  {name:28s} {sources.get(name, '')[:150]}")

    convs = sorted(parse_convs(hlo), key=conv_macs, reverse=True)
    total = sum(map(conv_macs, convs))
    print(f"\n{len(convs)} convolutions in the compiled step, {total / 1e9:.1f} GMAC; the {args.top} largest:")
    for c in convs[:args.top]:
        print(f"{conv_macs(c) / 1e9:8.2f} GMAC  {describe(c)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
