"""Every benchmark line of README's speed table in one go, each in its own process, one after the other, with
the load average before each (the project only keeps ratios taken at load < 0.5), written to
docs/results/bench_cpu.md and .json (command, machine, date, versions, the final line of each run).

    python -m experiments.bench suite [--only NAME ...] [--out docs/results/bench_cpu] [--wait-quiet 0.5]

--wait-quiet L: before each run, wait (up to 10 minutes) until the 1-minute load average is below L.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import subprocess
import sys
import time

# (name, arguments of `python -m experiments.bench`): README's speed table, in its order
RUNS = [
    ("ceiling", ["ceiling"]),
    ("bigvgan-v2-24k", ["bigvgan", "--config", "bigvgan_v2_24khz_100band_256x", "--frames", "128"]),
    ("bigvgan-base-22k", ["bigvgan", "--config", "bigvgan_base_22khz_80band", "--frames", "128"]),
    ("bigvgan-lengths", ["bigvgan", "--config", "bigvgan_v2_24khz_100band_256x", "--lengths", "--frames", "64",
                         "--repeats", "5"]),
    ("waveglow", ["waveglow", "--frames", "32"]),
    ("codec", ["codec"]),
    ("train-bigvgan", ["train-bigvgan"]),
    ("train-waveglow", ["train-waveglow"]),
    ("train-codec", ["train-codec"]),
    ("stream-bigvgan", ["stream-bigvgan", "--seconds", "5"]),
]


def cpu_name() -> str:
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def wait_quiet(limit: float, max_s: float = 600.0) -> float:
    t0 = time.monotonic()
    while os.getloadavg()[0] >= limit and time.monotonic() - t0 < max_s:
        time.sleep(10)
    return os.getloadavg()[0]


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py suite", description=__doc__.split("\n")[0])
    p.add_argument("--only", nargs="+", help="run names to run (default: all): " + ", ".join(n for n, _ in RUNS))
    p.add_argument("--out", default=os.path.join("docs", "results", "bench_cpu"), help="path without extension")
    p.add_argument("--wait-quiet", type=float, default=0.0, help="wait for a load average below this (0: no)")
    args = p.parse_args(argv)
    known = [n for n, _ in RUNS]
    for n in args.only or []:
        if n not in known:
            print(f"bench suite: error: unknown run {n!r}; choose from: {', '.join(known)}", file=sys.stderr)
            return 2

    from conversion.report import versions

    results = []
    for name, cmd in RUNS:
        if args.only and name not in args.only:
            continue
        load = wait_quiet(args.wait_quiet) if args.wait_quiet else os.getloadavg()[0]
        full = [sys.executable, "-m", "experiments.bench", *cmd]
        t0 = time.monotonic()
        proc = subprocess.run(full, capture_output=True, text=True)
        lines = [ln for ln in proc.stdout.splitlines() if ln.strip()]
        last = lines[-1] if lines else ""
        row = {"name": name, "command": "python -m experiments.bench " + " ".join(cmd), "load_before": round(load, 2),
               "load_after": round(os.getloadavg()[0], 2), "wall_s": round(time.monotonic() - t0, 1),
               "exit": proc.returncode, "line": last, "stdout": lines,
               "stderr_tail": proc.stderr.strip().splitlines()[-1] if proc.returncode and proc.stderr.strip() else ""}
        results.append(row)
        print(f"[load {row['load_before']:.2f}] {name}: {last or row['stderr_tail']}", flush=True)

    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "machine": f"{cpu_name()}, {os.cpu_count()} cores", "versions": versions(), "runs": results}
    os.makedirs(os.path.dirname(args.out) or ".", exist_ok=True)
    with open(args.out + ".json", "w") as f:
        json.dump(report, f, indent=1)
    with open(args.out + ".md", "w") as f:
        f.write(f"# CPU benchmarks ({report['date']})\n\n{report['machine']}; {report['versions']}\n\n"
                "Written by `python -m experiments.bench suite`; each run its own process, one after the other; "
                "load = 1-minute load average before / after the run.\n\n"
                "| run | command | load before / after | result line |\n|---|---|---|---|\n")
        for r in results:
            f.write(f"| {r['name']} | `{r['command']}` | {r['load_before']} / {r['load_after']} | "
                    f"{r['line'] or 'exit ' + str(r['exit']) + ': ' + r['stderr_tail']} |\n")
    print(f"written: {args.out}.md, {args.out}.json")
    return 0
