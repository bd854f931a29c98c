"""Benchmarks: `python -m experiments.bench NAME [options]`; each NAME lives in experiments/bench/<NAME>.py
(with '-' read as '_') and ends with the line `NAME: jax ..., pytorch ..., ratio Z`."""

from __future__ import annotations

import importlib
import os
import sys



def main() -> int:
    here = os.path.dirname(os.path.abspath(__file__))
    names = sorted(f[:-3].replace("_", "-") for f in os.listdir(here)
                   if f.endswith(".py") and not f.startswith("_") and f != "train_common.py")
    if len(sys.argv) < 2 or sys.argv[1] in ("-h", "--help"):
        print(__doc__ + "\nbenchmarks: " + ", ".join(names))
        return 0 if len(sys.argv) >= 2 else 2
    name = sys.argv[1]
    if name not in names:
        print(f"bench: error: unknown benchmark {name!r}; choose one of: {', '.join(names)}", file=sys.stderr)
        return 2
    return importlib.import_module("experiments.bench." + name.replace("-", "_")).main(sys.argv[2:]) or 0


if __name__ == "__main__":
    sys.exit(main())
