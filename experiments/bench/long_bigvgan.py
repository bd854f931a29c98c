"""Peak memory of `jaxvoc synth` on long mels: each length in its own process (`jaxvoc.cli synth`, windows of
--window frames), its peak resident set size the kernel's high-water mark of that process (VmHWM of
/proc/self/status, written by the child as it exits).

Not os.wait4's ru_maxrss: Python starts a child with vfork/fork, and Linux carries the parent's high-water RSS
into the child's ru_maxrss at exec, so a parent that holds a loaded model (as this one does) would be measured
instead of the child (a 2.3 GB parent gave "2.63 GB" for a child whose own peak was 2.01 GB).

    python -m experiments.bench long-bigvgan [--ckpt DIR] [--minutes 60 5] [--window W] [--config NAME] [--width C]

Without --ckpt, a checkpoint of the official model at the config's full size (random weights, the official
init) is written to a temporary folder. Mels are random log-mels of the given durations, saved as .npy.
Ends with `long-bigvgan: peak RSS A GB (60 min), B GB (5 min)` (one figure per --minutes, in that order).
A 60-minute run takes hours on a small CPU at full size: the durations are arguments, and --width C builds the
same architecture with C channels after the input conv (upsample_initial_channel; the published kernel,
dilation and up-sampling sizes stay, so the window plan and the receptive field are those of the full model).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np


# Runs `jaxvoc.cli` with the given arguments and, as it exits, writes its own VmHWM (kB) to argv[1].
_CHILD = """
import atexit, runpy, sys
out = sys.argv.pop(1)
def _hwm():
    with open("/proc/self/status") as f:
        kb = next(line.split()[1] for line in f if line.startswith("VmHWM:"))
    with open(out, "w") as f:
        f.write(kb)
atexit.register(_hwm)
sys.argv[0] = "jaxvoc"
runpy.run_module("jaxvoc.cli", run_name="__main__", alter_sys=True)
"""


def peak_rss_gb(args: list[str], env: dict, hwm_file: str) -> tuple[float, float, int]:
    """(peak RSS in GB, wall seconds, exit code) of `jaxvoc.cli ARGS` in its own process."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-c", _CHILD, hwm_file, *args], env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    err = proc.stderr.decode(errors="replace").strip()
    if proc.returncode:
        print(err.splitlines()[-1] if err else "", file=sys.stderr)
    with open(hwm_file) as f:
        gb = int(f.read()) * 1024 / 1e9
    return gb, time.perf_counter() - t0, proc.returncode


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py long-bigvgan", description=__doc__.split("\n")[0])
    p.add_argument("--ckpt", default=None, help="a jaxvoc BigVGAN checkpoint (default: full size, random)")
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config, without --ckpt")
    p.add_argument("--minutes", type=float, nargs="+", default=[60.0, 5.0])
    p.add_argument("--window", type=int, default=0, help="synth --window (0: its default)")
    p.add_argument("--width", type=int, default=0, help="upsample_initial_channel, without --ckpt (0: published)")
    args = p.parse_args(argv)

    repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    env = dict(os.environ, PYTHONPATH=repo + os.pathsep + os.environ.get("PYTHONPATH", ""))
    with tempfile.TemporaryDirectory() as tmp:
        ckpt = args.ckpt
        if ckpt is None:
            from conversion import bigvgan as cb
            from jaxvoc.models.bigvgan import BigVGANConfig

            config = BigVGANConfig.official(args.config).to_dict()
            if args.width:
                config["upsample_initial_channel"] = args.width
            src = cb.write_official_folder(os.path.join(tmp, "official"), config, seed=0)
            ckpt = os.path.join(tmp, "ckpt")
            subprocess.run([sys.executable, "-m", "jaxvoc.cli", "convert", "bigvgan", src, ckpt], env=env,
                           check=True, stdout=subprocess.DEVNULL)
        import jaxvoc

        model = jaxvoc.load(ckpt)
        figures = []
        for minutes in args.minutes:
            frames = int(minutes * 60 * model.sampling_rate / model.hop_size)
            path = os.path.join(tmp, f"mel_{minutes:g}min.npy")
            np.save(path, np.random.default_rng(0).normal(-6, 2, (model.num_mels, frames)).astype(np.float32))
            cmd = ["synth", ckpt, path, "-o", os.path.join(tmp, "out")]
            if args.window:
                cmd += ["--window", str(args.window)]
            gb, wall, rc = peak_rss_gb(cmd, env, os.path.join(tmp, "vmhwm"))
            os.remove(path)
            print(f"{minutes:g} min ({frames} frames): peak RSS {gb:.2f} GB, {wall:.0f} s, exit {rc}", flush=True)
            figures.append(f"{gb:.2f} GB ({minutes:g} min)")
    print("long-bigvgan: peak RSS " + ", ".join(figures))
    return 0
