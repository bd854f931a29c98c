"""One-call GPU check (issue 13): on a machine with an NVIDIA GPU, in at most ~8 minutes, everything that says
whether jaxvoc computes what the official code computes there, and how fast.

    python -m experiments.gpu_check [--out docs/results] [--budget 450] [--dry-run]

Stages, in this order (each one timed and recorded; one that fails is recorded with its error and the next
one runs; a stage that would start past ``--budget`` seconds is recorded as skipped):

1. platform: ``jax.devices()``, ``torch.cuda`` (device name, CUDA version), ``nvidia-smi``, versions;
2. ceiling: ``python -m experiments.bench ceiling`` (GEMM and BigVGAN's largest conv, JAX and PyTorch);
3. equivalence of the three models, built with the official code from random weights as the tests do
   (BigVGAN v2 24 kHz through its published folder layout and ``jaxvoc convert``'s code; WaveGlow as a
   published full-object pickle; the LFR codec as a real ``.nemo``), on the bundled speech: at the highest
   matmul/conv precision (no TF32) against the bars (>= 110 dB against the official float32 output, and no
   further from the official float64 run than the official float32 is: within 3 dB, or >= 130 dB), and at each
   framework's default precision (TF32 / bf16 paths) with their SNR, reported without a bar;
4. inference benchmarks against PyTorch (``experiments.bench`` bigvgan, waveglow, codec; default precision),
   and BigVGAN against the official model with its fused CUDA kernel (``use_cuda_kernel=True``) where it builds;
5. the two training-step benchmarks (``train-bigvgan``, ``train-waveglow``).

Writes ``gpu_check.json`` (every figure, the benchmarks' full output, the platform) and ``gpu_check.md`` (the
tables) into ``--out``, after every stage (so a run cut short keeps what it measured). Exit code 0 when every
stage ran and every highest-precision equivalence row passed.

Needs, on the GPU machine, an environment like ``make venv``'s with CUDA builds of jax (``jax[cuda12]``) and
torch (``make venv`` installs CPU builds); the official fused kernel also needs ``nvcc`` and ``ninja``.

``--dry-run``: the same code path on whatever platform is there (the CPU here) at toy sizes (every stage; the
two training steps' compilations dominate its few minutes), writing into a temporary folder unless ``--out`` is given (tests/test_gpu_check.py runs it, so the
script cannot rot). Without a GPU and without ``--dry-run`` it stops with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import os
import re
import subprocess
import sys
import tempfile
import time
import traceback
from typing import Any, Callable

import numpy as np

from experiments import REPO, fixture

PRECISIONS = ("highest", "default")
SNR_BAR_DB = 110.0  # the project's equivalence bar against the official float32 output
F64_MARGIN_DB, F64_ENOUGH_DB = 3.0, 130.0  # the float64 rule


class Sizes:
    """What each stage runs: the published models (GPU) or toy ones (``--dry-run``)."""

    def __init__(self, dry: bool, device: str = "gpu"):
        self.dry, self.device = dry, device
        # on the CPU both precisions run the same float32 program: the loop is walked once
        self.precisions = ("highest",) if device == "cpu" else PRECISIONS
        self.bigvgan = "bigvgan_v2_24khz_100band_256x"
        self.bigvgan_frames = 8 if dry else 128
        self.waveglow_seconds = 0.1 if dry else 1.5
        self.codec_seconds = 0.25 if dry else 2.0
        self.ceiling = ["--size", "256", "--repeats", "1", "--frames", "4"] if dry else []
        self.bench = {  # name -> argv of experiments.bench NAME (the device is added)
            "bigvgan": (["--small", "--frames", "4", "--repeats", "1"] if dry else ["--frames", "256", "--batch", "4", "--repeats", "10"]),
            "waveglow": (["--frames", "4", "--channels", "16", "--flows", "2", "--repeats", "1"] if dry
                         else ["--frames", "128", "--repeats", "5"]),
            "codec": (["--config", "tiny", "--seconds", "0.25", "--repeats", "1"] if dry
                      else ["--seconds", "4", "--repeats", "5"]),
            "train-bigvgan": (["--small", "--segment", "2048", "--repeats", "1"] if dry
                              else ["--batch", "4", "--segment", "8192", "--repeats", "5"]),
            "train-waveglow": (["--small", "--segment", "2048", "--repeats", "1"] if dry
                               else ["--batch", "4", "--segment", "16000", "--repeats", "5"]),
        }


# ----------------------------------------------------------------------------------------------------------
# platform


def platform_info() -> dict:
    import platform

    import jax
    import torch

    info: dict[str, Any] = {
        "jax_backend": jax.default_backend(), "jax_devices": [str(d) for d in jax.devices()],
        "jax_device_kind": jax.devices()[0].device_kind, "jax": jax.__version__, "torch": torch.__version__,
        "torch_cuda_available": torch.cuda.is_available(), "torch_cuda_version": torch.version.cuda,
        "torch_threads": torch.get_num_threads(), "cpu_count": os.cpu_count(), "machine": platform.machine(),
        "python": platform.python_version()}
    if torch.cuda.is_available():
        info["torch_cuda_device"] = torch.cuda.get_device_name(0)
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["nvidia_smi"] = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,driver_version,memory.total,clocks.max.sm", "--format=csv,noheader"],
            capture_output=True, text=True, timeout=20).stdout.strip()
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        info["git_commit"] = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True,
                                            text=True, timeout=20).stdout.strip()
    return info


# ----------------------------------------------------------------------------------------------------------
# equivalence: the official model at float32 (per precision) and float64, and jaxvoc, on the same input


def equivalence_row(model: str, precision: str, out, ref, ref64, **extra) -> dict:
    """SNRs of jaxvoc's output ``out`` against the official float32 ``ref`` and float64 ``ref64`` outputs; at the
    highest precision, whether the bars hold (at the default precision: reported, no bar)."""
    from conversion.report import snr_db

    r = {"model": model, "precision": precision, "snr_jax_vs_official": snr_db(out, ref),
         "snr_jax_vs_fp64": snr_db(out, ref64), "snr_official_vs_fp64": snr_db(ref, ref64), **extra}
    r["pass"] = (bool(r["snr_jax_vs_official"] >= SNR_BAR_DB and (
        r["snr_jax_vs_fp64"] >= r["snr_official_vs_fp64"] - F64_MARGIN_DB or r["snr_jax_vs_fp64"] >= F64_ENOUGH_DB))
        if precision == "highest" else None)
    return r


def _devices(sizes: Sizes):
    from conversion import report as rp

    return rp.setup_device(sizes.device)


def _bf16_row(model: str, out, ref, ref64, **extra) -> dict:
    """jaxvoc's bfloat16 synthesis (``dtype="bfloat16"``) against the official float32 output (no bar)."""
    r = equivalence_row(model, "jaxvoc bfloat16", out, ref, ref64, **extra)
    r["pass"] = None
    return r


def equivalence_bigvgan(sizes: Sizes) -> list[dict]:
    import jax
    import jax.numpy as jnp
    import torch

    from conversion import bigvgan as cb
    from conversion import report as rp
    from experiments.reference.bigvgan_train import small_config
    from jaxvoc.io.audio import load_audio
    from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained

    tdev, jdev = _devices(sizes)
    config = small_config(sizes.bigvgan) if sizes.dry else BigVGANConfig.official(sizes.bigvgan).to_dict()
    with tempfile.TemporaryDirectory() as d:  # the published folder layout, converted as `jaxvoc convert` does
        folder = cb.write_official_folder(os.path.join(d, "model"), config, seed=0)
        cfg_dict, params, _ = cb.convert(folder)
        sd = torch.load(os.path.join(folder, cb.GENERATOR_FILE), weights_only=True)["generator"]
    model = cb.official_model(config, sd)  # weight norm kept: float64 then folds it in float64
    audio = load_audio(fixture("speech_24000.wav"), config["sampling_rate"])
    mel = cb.official_mel(audio, config)[:, :, 40:40 + sizes.bigvgan_frames]
    model = model.to(tdev)
    with jax.default_device(jdev):
        jm = Pretrained(BigVGANConfig.from_dict(cfg_dict), jax.device_put(params, jdev))
        mel_j = jax.device_put(jnp.asarray(mel.numpy().transpose(0, 2, 1)), jdev)
        jm16 = Pretrained(BigVGANConfig.from_dict(cfg_dict), jax.device_put(params, jdev), dtype="bfloat16")
    outs = {}
    for precision in sizes.precisions:
        rp.set_precision(precision)
        with torch.inference_mode():
            ref = model(mel.to(tdev))[0, 0].float().cpu().numpy()
        with jax.default_device(jdev):
            outs[precision] = (np.asarray(jm(mel_j))[0], ref)
    with jax.default_device(jdev):  # at the last precision: each framework's default on a GPU
        out16 = np.asarray(jm16(mel_j))[0]
    with torch.inference_mode():  # in place, last (a weight-normed official model cannot be deep-copied)
        ref64 = model.double()(mel.double().to(tdev))[0, 0].cpu().numpy()
    extra = {"frames": int(mel.shape[-1]), "config": sizes.bigvgan + (" (small)" if sizes.dry else "")}
    return ([equivalence_row("bigvgan", precision, out, ref, ref64, **extra) for precision, (out, ref) in outs.items()]
            + [_bf16_row("bigvgan", out16, ref, ref64, **extra)])


def equivalence_waveglow(sizes: Sizes) -> list[dict]:
    import dataclasses

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import report as rp
    from conversion import waveglow as cw
    from jaxvoc.io.audio import load_audio
    from jaxvoc.models import waveglow as wg

    tdev, jdev = _devices(sizes)
    cfg = wg.WaveGlowConfig()
    if sizes.dry:
        cfg = dataclasses.replace(cfg, n_flows=4, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(2, 16, 3))
    model = cw.official_model(cfg, seed=0)
    cw.randomize_(model, 0)
    with tempfile.TemporaryDirectory() as tmp:  # a published-style full-object pickle, converted safely
        _, params, _ = cw.convert(cw.save_full_object(os.path.join(tmp, "waveglow.pt"), model))
    audio = load_audio(fixture("speech_22050.wav"), cfg.sampling_rate)
    audio = audio[int(0.5 * cfg.sampling_rate):][:int(sizes.waveglow_seconds * cfg.sampling_rate)]
    mel = cw.official_mel(audio, cfg)
    frames = mel.shape[-1]
    model64 = cw.double_model(model)
    with cw._quiet():
        model = model.remove_weightnorm(model).to(tdev)
        model64 = model64.remove_weightnorm(model64).to(tdev)
    sigma = 0.6
    noise = cw.make_noise(cfg, 1, frames, 0)
    noise_t = cw.to_torch_noise(noise)
    with torch.inference_mode(), cw.official_noise(noise_t, dtype=torch.float64, device=tdev):
        ref64 = model64.infer(mel.double().to(tdev), sigma=sigma)[0].cpu().numpy()
    with jax.default_device(jdev):
        jm = wg.Pretrained(cfg, jax.device_put(params, jdev))
        mel_j = jax.device_put(jnp.asarray(mel.numpy().transpose(0, 2, 1)), jdev)
        noise_j = [jax.device_put(jnp.asarray(n), jdev) for n in noise]
        jm16 = wg.Pretrained(cfg, jax.device_put(params, jdev), dtype="bfloat16")

    def infer(model, dtype):  # the official noise, as float32 draws rounded to the model's dtype
        f = jax.jit(lambda p, m, n: model.module.apply({"params": p}, m.astype(dtype), jnp.asarray(sigma, dtype),
                                                       [x.astype(dtype) for x in n], method=wg.WaveGlow.infer))
        with jax.default_device(jdev):
            return np.asarray(f(model.params, mel_j, noise_j).astype(jnp.float32))[0]

    rows = []
    extra = {"sigma": sigma, "frames": int(frames), "config": "published" if not sizes.dry else "4 flows, WN 2 x 16"}
    for precision in sizes.precisions:
        rp.set_precision(precision)
        with torch.inference_mode(), cw.official_noise(noise_t, device=tdev):
            ref = model.infer(mel.to(tdev), sigma=sigma)[0].float().cpu().numpy()
        rows.append(equivalence_row("waveglow", precision, infer(jm, jnp.float32), ref, ref64, **extra))
    return rows + [_bf16_row("waveglow", infer(jm16, jnp.bfloat16), ref, ref64, **extra)]


def equivalence_codec(sizes: Sizes) -> list[dict]:
    import jax

    from conversion import codec as cc
    from conversion import report as rp
    from experiments.bench.codec import codec_config
    from jaxvoc.io.audio import load_audio
    from jaxvoc.models.codec import CodecConfig, Pretrained

    tdev, jdev = _devices(sizes)
    cfg_dict = codec_config("tiny" if sizes.dry else "lfr")
    with tempfile.TemporaryDirectory() as tmp:  # a real .nemo, written by NeMo
        path = os.path.join(tmp, "codec.nemo")
        model = cc.write_nemo(path, cfg_dict, seed=0)
        config, params, _ = cc.convert(path)
    model64 = cc.build_nemo_model(cfg_dict, randomize=False)
    model64.load_state_dict(model.state_dict())
    model, model64 = model.eval().to(tdev), model64.double().eval().to(tdev)
    cfg = CodecConfig.from_dict(config)
    y = load_audio(fixture("speech_22050.wav"), cfg.sample_rate)[:int(sizes.codec_seconds * cfg.sample_rate)]
    with jax.default_device(jdev):
        jm = Pretrained(cfg, jax.device_put(params, jdev))
    rows = []
    for precision in sizes.precisions:
        rp.set_precision(precision)
        tok32, _ = cc.nemo_encode(model, y)
        ref64, _ = cc.nemo_decode(model64, tok32)
        ref, _ = cc.nemo_decode(model, tok32)
        with jax.default_device(jdev):
            tokj = np.asarray(jm.encode(y)[0])[None]
            out = np.asarray(jm.decode(tok32[0])[0])[None]
        rows.append(equivalence_row("codec", precision, out, ref, ref64,
                                    token_identity_pct=float(np.mean(tokj == tok32) * 100),
                                    config="lfr" if not sizes.dry else "lfr (tiny widths)", samples=len(y)))
        if precision == "highest":  # the codec's first bar: the same tokens as NeMo
            rows[-1]["pass"] = bool(rows[-1]["pass"] and rows[-1]["token_identity_pct"] == 100.0)
    return rows


# ----------------------------------------------------------------------------------------------------------
# benchmarks: experiments.bench NAME run in this process, its output kept and its last line parsed

LAST_LINE = re.compile(r"^(?P<name>[\w-]+): jax (?P<jax>.+), pytorch (?P<pytorch>.+), ratio (?P<ratio>[\d.]+)\s*$")
CEILING_LINE = re.compile(r"jax (?P<jax>[\d.]+) GFLOP/s = (?P<jax_pct>\d+)%, pytorch (?P<pt>[\d.]+) GFLOP/s = "
                          r"(?P<pt_pct>\d+)%")


def run_bench(name: str, argv: list[str]) -> dict:
    """``python -m experiments.bench NAME ARGV`` in this process: its output, and its result line parsed."""
    import importlib

    mod = importlib.import_module("experiments.bench." + name.replace("-", "_"))
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = mod.main(list(argv))
    text = buf.getvalue()
    lines = [ln for ln in text.splitlines() if ln.strip()]
    m = LAST_LINE.match(lines[-1]) if lines else None
    if rc or m is None:
        raise RuntimeError(f"bench {name} ended with exit code {rc} and last line {lines[-1:]!r}")
    r: dict[str, Any] = {"command": f"python -m experiments.bench {name} {' '.join(argv)}", "jax": m["jax"],
                         "pytorch": m["pytorch"], "ratio": float(m["ratio"]), "last_line": lines[-1], "output": text}
    ceil = [ln for ln in lines if ln.startswith("% of ceiling")]
    if ceil:
        r["percent_of_ceiling"] = [ln.split(":", 1)[1].strip() for ln in ceil]
    return r


# ----------------------------------------------------------------------------------------------------------
# the report


def markdown(report: dict) -> str:
    p = report["platform"]
    lines = [f"# GPU check ({'dry run, ' if report['dry_run'] else ''}{p.get('jax_device_kind', '?')})", "",
             f"`python -m experiments.gpu_check{' --dry-run' if report['dry_run'] else ''}`, {report['date']}; "
             f"jax {p.get('jax')} ({p.get('jax_backend')}), torch {p.get('torch')} (CUDA {p.get('torch_cuda_version')}"
             f", {p.get('torch_cuda_device', 'no CUDA device')}); {report['seconds']:.0f} s in all.", ""]
    eq = [r for s in report["stages"] if s["name"].startswith("equivalence") for r in s.get("rows", [])]
    if eq:
        lines += ["| model | precision | SNR jax vs official fp32 | jax vs official fp64 | official fp32 vs fp64 | "
                  "bars |", "|---|---|---|---|---|---|"]
        for r in eq:
            bars = {True: "pass", False: "**FAIL**", None: "(reported)"}[r["pass"]]
            tok = f"; tokens {r['token_identity_pct']:.2f} % equal" if "token_identity_pct" in r else ""
            lines.append(f"| {r['model']} ({r['config']}) | {r['precision']} | {r['snr_jax_vs_official']:.1f} dB | "
                         f"{r['snr_jax_vs_fp64']:.1f} dB | {r['snr_official_vs_fp64']:.1f} dB | {bars}{tok} |")
        lines.append("")
    benches = [s for s in report["stages"] if "bench" in s]
    if benches:
        lines += ["| command | jax | pytorch | ratio | % of ceiling |", "|---|---|---|---|---|"]
        for s in benches:
            b = s["bench"]
            lines.append(f"| `{b['command']}` | {b['jax']} | {b['pytorch']} | **{b['ratio']:.2f}** | "
                         f"{'; '.join(b.get('percent_of_ceiling', [])) or '-'} |")
        lines.append("")
    lines += ["| stage | status | seconds | CPU seconds |", "|---|---|---|---|"]
    for s in report["stages"]:
        status = s["status"] + (f": {s['error'].splitlines()[-1][:160]}" if s.get("error") else "")
        lines.append(f"| {s['name']} | {status} | {s['seconds']:.1f} | {s['cpu_seconds']:.1f} |")
    return "\n".join(lines) + "\n"


def write_report(out_dir: str, report: dict) -> None:
    from conversion import report as rp
    from jaxvoc.io.atomic import atomic_file

    os.makedirs(out_dir, exist_ok=True)
    rp.write_json(os.path.join(out_dir, "gpu_check.json"), report)
    with atomic_file(os.path.join(out_dir, "gpu_check.md"), ".md") as tmp, open(tmp, "w") as f:
        f.write(markdown(report))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m experiments.gpu_check", description=__doc__.split("\n")[0])
    p.add_argument("--out", help="folder for gpu_check.json / .md (default docs/results; --dry-run: a temp folder)")
    p.add_argument("--budget", type=float, help="seconds; later stages are skipped past it (default 450; "
                   "--dry-run 900: it is there to run every stage)")
    p.add_argument("--dry-run", action="store_true", help="toy sizes on whatever platform is there (tests)")
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import jax
    import torch

    from conversion import report as rp

    t_start = time.perf_counter()
    dry = args.dry_run
    if not dry and not (torch.cuda.is_available() and jax.default_backend() == "gpu"):
        print("gpu_check: error: no GPU visible to both torch and jax (torch.cuda.is_available() "
              f"{torch.cuda.is_available()}, jax backend {jax.default_backend()}); run it on a GPU machine with "
              "jax[cuda], or use --dry-run", file=sys.stderr)
        return 2
    out_dir = args.out or (tempfile.mkdtemp(prefix="gpu_check_") if dry else os.path.join(REPO, "docs", "results"))
    budget = args.budget or (900.0 if dry else 450.0)
    sizes = Sizes(dry, "cpu" if dry else "gpu")
    device = "cpu" if dry else "gpu"
    report: dict[str, Any] = {"dry_run": dry, "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
                              "budget_s": budget, "platform": {}, "stages": [], "seconds": 0.0}
    ceiling: list[float] = []

    def bench(name: str, extra: tuple[str, ...] = ()) -> Callable[[], dict]:
        def go():
            rp.set_precision("default")
            argv = sizes.bench[name.split(" ")[0]] + ["--device", device] + list(extra)
            if ceiling and not name.startswith("train"):
                argv += ["--ceiling", f"{ceiling[0]:.1f}"]
            return {"bench": run_bench(name.split(" ")[0], argv)}
        return go

    def ceiling_stage() -> dict:
        rp.set_precision("default")
        r = run_bench("ceiling", sizes.ceiling + ["--device", device])
        ceiling.append(float(re.search(r"jax ([\d.]+) GFLOP/s", r["last_line"])[1]))
        return {"bench": r}

    stages: list[tuple[str, Callable[[], dict]]] = [
        ("platform", lambda: {"platform": platform_info()}),
        ("ceiling", ceiling_stage),
        ("equivalence bigvgan", lambda: {"rows": equivalence_bigvgan(sizes)}),
        ("equivalence waveglow", lambda: {"rows": equivalence_waveglow(sizes)}),
        ("equivalence codec", lambda: {"rows": equivalence_codec(sizes)}),
        ("bench bigvgan", bench("bigvgan")),
        ("bench waveglow", bench("waveglow")),
        ("bench codec", bench("codec")),
        ("bench train-bigvgan", bench("train-bigvgan")),
        ("bench train-waveglow", bench("train-waveglow")),
        ("bench bigvgan (official CUDA kernel)", bench("bigvgan", ("--cuda-kernel",))),
    ]
    for name, fn in stages:
        t0, c0 = time.perf_counter(), time.process_time()
        entry: dict[str, Any] = {"name": name}
        if "CUDA kernel" in name and device != "gpu":
            entry["status"] = "skipped: the official CUDA kernel needs a GPU"
        elif t0 - t_start > budget:
            entry["status"] = f"skipped: past the time budget of {budget:.0f} s"
        else:
            try:
                entry.update(fn())
                entry["status"] = "ok"
            except Exception as e:  # recorded; the next stage runs
                entry["status"], entry["error"] = "error", "".join(traceback.format_exception(e))[-4000:]
        entry["seconds"], entry["cpu_seconds"] = time.perf_counter() - t0, time.process_time() - c0
        if "platform" in entry:
            report["platform"] = entry.pop("platform")
        report["stages"].append(entry)
        report["seconds"] = time.perf_counter() - t_start
        write_report(out_dir, report)
        summary = entry["status"] if "rows" not in entry else ", ".join(
            f"{r['precision']} {r['snr_jax_vs_official']:.1f} dB" for r in entry["rows"])
        print(f"gpu_check: {name}: {summary} ({entry['seconds']:.1f} s)", flush=True)
        if entry.get("error"):
            print(entry["error"], file=sys.stderr, flush=True)
    rp.set_precision("default")
    failed = [s["name"] for s in report["stages"] if s["status"] == "error"]
    bars = [r for s in report["stages"] for r in s.get("rows", []) if r["pass"] is not None]
    print(f"gpu_check: {len(report['stages']) - len(failed)}/{len(report['stages'])} stages without error; "
          f"{sum(r['pass'] for r in bars)}/{len(bars)} highest-precision equivalence rows within the bars; "
          f"{report['seconds']:.0f} s; report: {os.path.join(out_dir, 'gpu_check.md')}")
    return 0 if not failed and all(r["pass"] for r in bars) else 1


if __name__ == "__main__":
    sys.exit(main())
