"""Sweep of XLA CPU compiler options over jaxvoc's programs: each program compiled once per option set
(per-compilation options, `Lowered.compile(compiler_options=...)`: no XLA_FLAGS), what the optimized HLO holds
(YNNPACK fusions, oneDNN custom calls, convolutions left to XLA, ...), the output against the default
program's, and the run time, option sets alternated in rounds in one process.

    python -m experiments.profile.xla_options [--programs NAME ...] [--sets NAME ...] [--rounds R] [--small]
                                               [--dump DIR] [--out docs/results/xla_options]

Programs: bigvgan (v2 24 kHz inference, full size, --frames mel frames), waveglow (published config
inference, sigma 0.6), codec-encode / codec-decode (the LFR codec, --seconds of speech), train-bigvgan and
train-waveglow (the jitted step of `jaxvoc train`, as `python -m experiments.bench train-...` builds it).
Option sets: SETS below; ``conv1d-1d`` / ``conv1d-2d`` are not XLA options but the form jaxvoc's 1-D
convolutions are traced in (jaxvoc.nn.conv.CONV1D_AS_2D: XLA CPU hands 2-D convolutions, not 1-D ones, to
YNNPACK). An option
set whose optimized HLO equals the default's (names and metadata aside) and that does not act on code
generation is reported as "HLO identical" and not timed. Per round, every timed option set runs once (order
rotated each round); the ratio is default time / option time within the round (> 1: the option is faster),
and its median over rounds and its range are printed, with the 1-minute load average before and after.
--dump DIR writes each optimized HLO module as text (what --xla_dump_to writes after optimizations).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import json
import os
import re
import statistics
import sys
import time
from collections import Counter

import numpy as np

YNN = "xla_cpu_experimental_ynn_fusion_type"
L = "LIBRARY_FUSION_TYPE_"

# name -> (compiler options, acts on code generation only (HLO unchanged), description)
SETS = {
    "default": ({}, False, "jaxlib's defaults"),
    "ynn-idot": ({YNN: L + "INDIVIDUAL_DOT"}, False, "YNNPACK for single dots only"),
    "ynn-idot-iconv": ({YNN: f"{L}INDIVIDUAL_DOT,{L}INDIVIDUAL_CONVOLUTION"}, False,
                       "YNNPACK for single dots and single 2-D convolutions"),
    "ynn-off": ({YNN: ""}, False, "no YNNPACK fusion"),
    "conv1d-1d": ({}, False, "jaxvoc's 1-D convolutions traced as 1-D ones (jaxvoc's default), default options"),
    "conv1d-2d": ({}, False, "jaxvoc's 1-D convolutions traced as 2-D (H = 1), default options"),
    "onednn": ({"xla_cpu_experimental_onednn_custom_call": True}, False, "oneDNN custom calls"),
    "xnn-greedy": ({"xla_cpu_experimental_xnn_graph_fusion_mode": "XNN_GRAPH_FUSION_MODE_GREEDY"}, False,
                   "XNNPACK graph fusion (greedy)"),
    "vw512": ({"xla_cpu_prefer_vector_width": 512}, True, "512-bit vectors in XLA's own loops"),
}
PROGRAMS = ["bigvgan", "waveglow", "codec-encode", "codec-decode", "train-bigvgan", "train-waveglow",
            "ampblock-768", "ampblock-48"]
# one AMPBlock1 of the full BigVGAN v2 24 kHz (kernel 7, dilations 1, 3, 5, SnakeBeta): at the first stage's
# width (768 channels, 256 steps: 64 mel frames) and at the fifth's (48 channels, 32768 steps: 256 frames);
# quick to compile, for the option sets' effect on the convolutions and on XLA's own elementwise loops apart
AMPBLOCKS = {"ampblock-768": (768, 256), "ampblock-48": (48, 32768)}


# --- the form of jaxvoc's 1-D convolutions ------------------------------------------------------------------------
@contextlib.contextmanager
def conv1d_form(as_2d: bool | None):
    """While active, jaxvoc.nn.conv.conv1d traces its convolutions as 2-D ones over [B, 1, T, C] (as_2d True:
    XLA CPU may hand them to YNNPACK) or as 1-D ones (False); None: as jaxvoc does by default."""
    import jax

    from jaxvoc.nn import conv

    before = conv.CONV1D_AS_2D
    if as_2d is not None:
        conv.CONV1D_AS_2D = as_2d
        jax.clear_caches()  # else jit reuses a trace made in the other form
    try:
        yield
    finally:
        if as_2d is not None:
            conv.CONV1D_AS_2D = before
            jax.clear_caches()


# --- programs: name -> (jitted function, its traced arguments, label); the static one (last) is added on lowering ---
def build(name: str, args):
    import jax
    import jax.numpy as jnp

    rng = np.random.default_rng(0)
    if name == "bigvgan":
        from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained, init_params

        from experiments.bench.train_bigvgan import official_config

        cfg = BigVGANConfig.from_dict(official_config("bigvgan_v2_24khz_100band_256x", args.small))
        m = Pretrained(cfg, init_params(cfg, 0))
        mel = jnp.asarray(rng.normal(-5.0, 2.0, (1, args.frames, cfg.num_mels)).astype(np.float32))
        return m._synth, (m.params, mel, {}), f"BigVGAN v2 24 kHz inference, {args.frames} frames"
    if name == "waveglow":
        import dataclasses

        from jaxvoc.models.waveglow import Pretrained, WaveGlowConfig, WNConfig, init_params

        cfg = WaveGlowConfig()
        if args.small:
            cfg = dataclasses.replace(cfg, n_flows=4, n_early_every=2, WN_config=WNConfig(3, 32, 3))
        m = Pretrained(cfg, init_params(cfg, 0))
        mel = jnp.asarray((rng.standard_normal((1, 32, cfg.n_mel_channels)) - 5.0).astype(np.float32))
        opts = {"sigma": jnp.float32(0.6), "seed": jnp.uint32(0), "offset": jnp.zeros((1,), jnp.int32)}
        return m._synth, (m.params, mel, opts), "WaveGlow inference, 32 frames, sigma 0.6"
    if name.startswith("codec"):
        from experiments.bench.codec import _speech, codec_config
        from jaxvoc.models.codec import CodecConfig, Pretrained, init_params

        cfg = CodecConfig.from_dict(codec_config("tiny" if args.small else "lfr"))
        m = Pretrained(cfg, init_params(cfg, 0))
        audio = jnp.asarray(_speech(args.seconds, cfg.sample_rate)[None])
        n = jnp.asarray([audio.shape[1]], jnp.int32)
        if name == "codec-encode":
            return m._encode, (m.params, audio, n), f"codec encode, {args.seconds:g} s"
        tokens, tlen = m.encode(audio)
        return m._decode, (m.params, jnp.asarray(tokens, jnp.int32), jnp.asarray(tlen, jnp.int32)), \
            f"codec decode, {args.seconds:g} s"
    if name.startswith("train-"):
        return build_train(name, args)
    if name in AMPBLOCKS:
        from jaxvoc.models.bigvgan import AMPBlock1

        channels, steps = AMPBLOCKS[name]
        block = AMPBlock1(channels, 7, (1, 3, 5), "snakebeta", True)
        x = jnp.asarray(rng.standard_normal((1, steps, channels)).astype(np.float32))
        params = block.init(jax.random.PRNGKey(0), x)
        return jax.jit(block.apply), (params, x), f"AMPBlock1 {channels} channels x {steps} steps, kernel 7"
    raise ValueError(name)


def build_train(name: str, args):
    from experiments.bench.train_common import one_device_setup, speech_segments

    if name == "train-bigvgan":
        from experiments.bench.train_bigvgan import official_config
        from jaxvoc.train.bigvgan import BigVGANTask as task_cls

        raw = official_config("bigvgan_v2_24khz_100band_256x", args.small)
        raw.update(segment_size=8192, batch_size=1)
        audio = speech_segments(raw["sampling_rate"], 1, 8192)
        label = "BigVGAN v2 24 kHz train step, batch 1 x 8192"
    else:
        from experiments import REPO
        from jaxvoc.train.waveglow import WaveGlowTask as task_cls

        with open(os.path.join(REPO, "experiments", "training", "configs", "waveglow.json")) as f:
            raw = json.load(f)
        if args.small:
            raw["waveglow_config"].update(n_flows=4, n_early_every=2,
                                          WN_config={"n_layers": 3, "n_channels": 32, "kernel_size": 3})
        raw["train_config"].update(batch_size=1, fp16_run=False)
        raw["data_config"]["segment_length"] = 16000
        raw["train"] = {"compute_dtype": "float32"}
        audio = speech_segments(22050, 1, 16000)
        label = "WaveGlow train step, batch 1 x 16000"
    setup, batch = one_device_setup(task_cls, raw, audio)
    return setup.step, (setup.init(), batch), label


# --- HLO summary ---------------------------------------------------------------------------------------------------
def hlo_summary(text: str) -> dict:
    """What the optimized module holds: fusion kinds (YNNPACK's __ynn_fusion among them), custom-call targets,
    and the convolutions / dots left to XLA itself (base-dilated and window-reversed ones counted apart)."""
    c: Counter = Counter()
    for line in text.splitlines():
        m = re.search(r"= \S+ ([a-z][\w-]*)\(", line)
        if not m:
            continue
        op = m.group(1)
        if op == "fusion":
            kind = re.search(r'"kind":"(\w+)"', line) or re.search(r"kind=(k\w+)", line)
            c["fusion " + (kind.group(1) if kind else "?")] += 1
        elif op == "custom-call":
            c["custom-call " + re.search(r'custom_call_target="([^"]+)"', line).group(1)] += 1
        elif op == "convolution":
            tags = [t for t in ("lhs_dilate", "rhs_reversal") if t in line]
            c["convolution" + (" (" + ", ".join(tags) + ")" if tags else "")] += 1
        elif op == "dot":
            c["dot"] += 1
    # fusions nest (a YNNPACK fusion's body holds its convolution): count top-level ynn fusions' bodies apart
    return dict(sorted(c.items()))


def normalized(text: str) -> str:
    """The module text without names, metadata and ids, to tell whether two option sets compiled the same."""
    text = re.sub(r", metadata=\{[^}]*\}", "", text)
    text = re.sub(r"%[\w.-]+", "%_", text)
    return "\n".join(ln for ln in text.splitlines() if "=" in ln and not ln.startswith(("FileNames", "StackFrames")))


def compile_set(fn, fargs, static: tuple, set_name: str):
    opts = SETS[set_name][0]
    ctx = conv1d_form({"conv1d-1d": False, "conv1d-2d": True}.get(set_name))
    t0 = time.perf_counter()
    with ctx:
        lowered = fn.lower(*fargs, *static)
    compiled = lowered.compile(compiler_options=opts)
    return compiled, time.perf_counter() - t0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="xla_options", description=__doc__.split("\n")[0])
    p.add_argument("--programs", nargs="+", default=PROGRAMS, choices=PROGRAMS)
    p.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    p.add_argument("--rounds", type=int, default=5, help="timed rounds (0: compile and check only)")
    p.add_argument("--frames", type=int, default=256, help="BigVGAN mel frames (256: 2.7 s of 24 kHz audio)")
    p.add_argument("--seconds", type=float, default=4.0, help="codec audio seconds")
    p.add_argument("--small", action="store_true", help="the tests' small configs (smoke run)")
    p.add_argument("--dump", help="write every optimized HLO module here as text")
    p.add_argument("--out", help="write the results as OUT.json")
    args = p.parse_args(argv)
    sets = ["default"] + [s for s in args.sets if s != "default"]

    import jax

    from conversion.report import snr_db, versions

    results = []
    for prog in args.programs:
        fn, fargs, label = build(prog, args)
        train = prog.startswith("train-")
        static = ((),) if prog in ("bigvgan", "waveglow") else (False,) if prog.startswith("codec") else ()
        state = {"s": fargs[0]} if train else None
        compiled, info, texts = {}, {}, {}
        for s in sets:
            c, t_compile = compile_set(fn, fargs, static, s)
            text = c.as_text()
            if args.dump:
                os.makedirs(args.dump, exist_ok=True)
                with open(os.path.join(args.dump, f"{prog}.{s}.txt"), "w") as f:
                    f.write(text)
            texts[s] = normalized(text)
            same = s != "default" and texts[s] == texts["default"] and not SETS[s][1]
            info[s] = {"compile_s": round(t_compile, 1), "hlo": hlo_summary(text), "hlo_identical": same}
            if not same:
                compiled[s] = c
            print(f"[{prog}] {s}: compiled in {t_compile:.1f} s; {'HLO identical to default' if same else ''}"
                  f" {info[s]['hlo']}", flush=True)
        del texts

        def run(s):
            if train:  # one state threaded through every option set's step (they donate it)
                state["s"], m = compiled[s](state["s"], fargs[1])
                return jax.block_until_ready(m)
            return jax.block_until_ready(compiled[s](*fargs))

        # outputs against the default program's (inference: the audio / tokens; training: the step's metrics)
        if not train:
            ref = [np.asarray(x) for x in jax.tree_util.tree_leaves(run("default"))]
            for s in compiled:
                out = [np.asarray(x) for x in jax.tree_util.tree_leaves(run(s))]
                if out[0].dtype.kind == "f":
                    info[s]["snr_vs_default_db"] = round(min(snr_db(o, r) for o, r in zip(out, ref)), 1)
                else:
                    info[s]["equal_to_default"] = all(np.array_equal(o, r) for o, r in zip(out, ref))
        else:
            for s in compiled:
                run(s)  # warm-up
        timed = list(compiled) if args.rounds else []
        times = {s: [] for s in timed}
        load_before = os.getloadavg()[0]
        for r in range(args.rounds):
            order = timed[r % len(timed):] + timed[:r % len(timed)]
            for s in order:
                t0 = time.perf_counter()
                run(s)
                times[s].append(time.perf_counter() - t0)
        load_after = os.getloadavg()[0]
        for s in timed:
            ratios = [d / t for d, t in zip(times["default"], times[s])]
            info[s].update(median_s=round(statistics.median(times[s]), 3), times_s=[round(t, 3) for t in times[s]],
                           ratio_median=round(statistics.median(ratios), 3),
                           ratio_range=[round(min(ratios), 3), round(max(ratios), 3)])
        print(f"\n{label}: {args.rounds} rounds, load {load_before:.2f} -> {load_after:.2f}")
        for s in sets:
            i = info[s]
            if "ratio_median" in i:
                check = (f", SNR vs default {i['snr_vs_default_db']} dB" if "snr_vs_default_db" in i else
                         f", equal to default: {i['equal_to_default']}" if "equal_to_default" in i else "")
                print(f"  {s:15s} median {i['median_s']:.3f} s, default/this {i['ratio_median']:.3f} "
                      f"(rounds {i['ratio_range'][0]:.3f}-{i['ratio_range'][1]:.3f}){check}")
            elif i["hlo_identical"]:
                print(f"  {s:15s} HLO identical to default: not timed")
        print(flush=True)
        results.append({"program": prog, "label": label, "rounds": args.rounds, "load_before": round(load_before, 2),
                        "load_after": round(load_after, 2), "sets": info})
        del compiled, fn, fargs, state

    if args.out:
        report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                  "command": "python -m experiments.profile.xla_options " + " ".join(argv or sys.argv[1:]),
                  "machine": f"{os.cpu_count()} cores", "versions": versions(),
                  "sets": {k: {"options": v[0], "description": v[2]} for k, v in SETS.items()}, "results": results}
        os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
        with open(args.out + ".json", "w") as f:
            json.dump(report, f, indent=1)
        print(f"written: {args.out}.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
