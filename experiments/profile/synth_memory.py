"""Where `jaxvoc synth`'s memory goes, phase by phase: the process's peak (VmHWM) and resident (VmRSS) memory
after the imports, loading the checkpoint, compiling the window program and running it once, then each of the
next windows, the peak counter reset between phases (/proc/self/clear_refs), on a .npy mel through
`jaxvoc.models.windowed.run_windows` as `jaxvoc synth` runs it (Linux only).

    python -m experiments.profile.synth_memory CKPT MEL.npy [--window 1024] [--windows 3] [--glibc-default]

--glibc-default leaves glibc's dynamic mmap threshold as it is (what synth did before
`jaxvoc.models.base.map_large_blocks`); by default it is fixed as `jaxvoc synth` fixes it.
"""

from __future__ import annotations

import argparse
import time


def _status() -> dict:
    out = {}
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(("VmHWM", "VmRSS")):
                key, value = line.split(":")
                out[key] = int(value.split()[0]) * 1024 / 1e9
    return out


def mark(phase: str) -> None:
    s = _status()
    print(f"{time.strftime('%H:%M:%S')}  {phase:<28} peak {s['VmHWM']:.3f} GB   resident {s['VmRSS']:.3f} GB",
          flush=True)
    with open("/proc/self/clear_refs", "w") as f:  # the next phase's peak starts from here
        f.write("5")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("mel", help=".npy log-mel [num_mels, frames], longer than one window")
    p.add_argument("--window", type=int, default=0, help="frames (0: synth's default)")
    p.add_argument("--windows", type=int, default=3, help="windows to run after the first")
    p.add_argument("--glibc-default", action="store_true")
    args = p.parse_args()

    mark("start")
    import numpy as np

    import jaxvoc
    from jaxvoc.io.npy_frames import NpyFrames
    from jaxvoc.models.base import map_large_blocks
    from jaxvoc.models.windowed import default_window, run_windows

    if not args.glibc_default:
        map_large_blocks()
    mark("imports")
    model = jaxvoc.load(args.ckpt)
    mark("load (weights folded)")
    window = args.window or default_window(model.receptive_field())
    mel = NpyFrames(args.mel, model.num_mels)
    print(f"window {window} frames, mel {len(mel)} frames, mmap threshold "
          f"{'glibc default (dynamic)' if args.glibc_default else 'fixed'}")
    model.vocode(np.zeros((1, window, model.num_mels), np.float32)).block_until_ready()
    mark("compile + first window")
    for i, _ in enumerate(run_windows(model, [(0, mel)], window, 1)):
        mark(f"window {i}")
        if i >= args.windows - 1:
            break
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
