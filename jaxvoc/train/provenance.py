"""What a training run was made with, recorded in the run folder (``provenance.json``) and in TensorBoard (text
``provenance``): the versions of jaxvoc and of the JAX stack, the git commit of the jaxvoc source when it is a
git checkout, the command-line overrides (``--set``) and the resolved config."""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import subprocess
import sys

PACKAGES = ("jaxvoc", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint")


def versions() -> dict[str, str | None]:
    """Installed version of each of PACKAGES (None when not installed as a distribution)."""
    from importlib import metadata

    import jaxvoc

    out = {"jaxvoc": jaxvoc.__version__}  # the source that runs (an installed distribution may be another tree)
    for name in PACKAGES[1:]:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def git_commit(folder: str | None = None) -> dict | None:
    """{'commit', 'dirty'} of the git checkout holding the jaxvoc package, or None (not a checkout, no git)."""
    folder = folder or os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

    def git(*args):
        return subprocess.run(["git", "-C", folder, *args], capture_output=True, text=True, timeout=10)

    try:
        head = git("rev-parse", "HEAD")
        if head.returncode != 0:
            return None
        status = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):
        return None
    return {"commit": head.stdout.strip(),
            "dirty": bool(status.stdout.strip()) if status.returncode == 0 else None}


def collect(cfg) -> dict:
    """The provenance record of a run of TrainConfig ``cfg``."""
    import jax

    return {
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "git": git_commit(),
        "python": sys.version.split()[0],
        "backend": jax.default_backend(),
        "devices": jax.device_count(),
        "command": sys.argv,
        "config_path": cfg.path,
        "overrides": list(cfg.overrides),
        "run_dir": cfg.run_dir,
        "config": cfg.raw,
        "train_settings": dataclasses.asdict(cfg.train),
    }


def write(run_dir: str, record: dict) -> str:
    """Writes ``run_dir/provenance.json`` atomically; a resumed run keeps the records of the earlier starts
    under ``"previous"``."""
    from jaxvoc.io.atomic import atomic_file

    path = os.path.join(run_dir, "provenance.json")
    previous = []
    if os.path.exists(path):
        try:
            with open(path) as f:
                old = json.load(f)
            previous = old.pop("previous", []) + [old]
        except (OSError, ValueError):
            previous = []
    with atomic_file(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump({**record, "previous": previous}, f, indent=2, default=str)
    return path


def markdown(record: dict) -> str:
    """The record as TensorBoard text (markdown: a JSON code block, indented four spaces)."""
    body = json.dumps({k: v for k, v in record.items() if k != "previous"}, indent=2, default=str)
    return "\n".join("    " + line for line in body.splitlines())
