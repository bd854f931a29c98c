"""Shared test helpers. Tests compare against the official PyTorch code (installed by `make venv`)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

FIXTURES = os.path.join(os.path.dirname(__file__), "fixtures")
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# One persistent XLA compilation cache for the test run and the CLI subprocesses it starts: the same small
# models are compiled by several tests (gitignored; delete it freely).
XLA_CACHE = os.path.join(REPO, ".jax_cache")
os.environ.setdefault("JAX_COMPILATION_CACHE_DIR", XLA_CACHE)
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0.5")


def quick_compile_xla_flags(*flags: str) -> str:
    """XLA_FLAGS for a subprocess whose check does not depend on how well XLA's CPU backend optimises the
    machine code (a dry run of a script's code path, two topologies of one program compared with each other):
    LLVM's optimisation off (``--xla_backend_optimization_level=0``), which takes a third to a half off the
    compile time of these compile-bound runs; ``flags`` come first. The numbers can move at float32 rounding
    level (the dry run's BigVGAN: 126.5 dB against the official output instead of 125.2), which every bound of
    those checks allows. The persistent cache keys on the flags: these programs never mix with the others."""
    return " ".join([*(f for f in flags if f), "--xla_backend_optimization_level=0"])


def fixture_path(name: str) -> str:
    return os.path.join(FIXTURES, name)


def speech(sr: int) -> np.ndarray:
    """The committed espeak-ng sentence at 22050, 24000 or 44100 Hz, float32 mono."""
    import soundfile as sf

    y, file_sr = sf.read(fixture_path(f"speech_{sr}.wav"), dtype="float32")
    assert file_sr == sr
    return y


def run_cli(*args: str, cwd: str | None = None) -> subprocess.CompletedProcess:
    """Runs `python -m jaxvoc.cli ARGS` in a subprocess (the tree under test first on the path)."""
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""),
               PYTHONWARNINGS="ignore")
    return subprocess.run([sys.executable, "-m", "jaxvoc.cli", *map(str, args)], capture_output=True, text=True,
                          cwd=cwd or REPO, env=env, timeout=900)


def assert_user_error(proc: subprocess.CompletedProcess, *needles: str) -> str:
    """Exit code 2, exactly one line on stderr starting 'jaxvoc: error:', no traceback; returns the line."""
    err_lines = [l for l in proc.stderr.splitlines() if l.strip() and not l.startswith("jaxvoc: warning:")]
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    assert len(err_lines) == 1, proc.stderr
    line = err_lines[0]
    assert line.startswith("jaxvoc: error:"), line
    for n in needles:
        assert n.lower() in line.lower(), (n, line)
    return line


# `make test` runs two workers with --dist loadfile --no-loadscope-reorder: each takes the next file in this
# order. The files that take longest (the slowest tests of the last full run, 2026-11-29) go first, the rest
# after them in xdist's default order (most tests first), so that the run ends on short files on both workers
# rather than on one long file that started late (xdist's own order puts few-test files, some of them the
# longest, last). test_codec_reference.py follows test_codec_train_step.py, so that the worker running the
# latter takes it next and NeMo's reference run (codec_reference_run, per worker) is made once.
SLOW_FILES_FIRST = ("test_codec_train_run.py", "test_codec_train_step.py", "test_codec_reference.py",
                    "test_train_multiprocess.py", "test_windowed.py", "test_gpu_check.py", "test_synth_exact.py",
                    "test_wavlm.py", "test_bigvgan.py", "test_bigvgan_gan.py", "test_codec_gan.py",
                    "test_train_init.py", "test_train_sharding.py")


def pytest_collection_modifyitems(items):
    n_tests: dict = {}
    for item in items:
        n_tests[item.path.name] = n_tests.get(item.path.name, 0) + 1
    rank = {name: i for i, name in enumerate(SLOW_FILES_FIRST)}
    # stable: each file's tests stay together and in their order
    items.sort(key=lambda item: (rank.get(item.path.name, len(rank)), -n_tests[item.path.name]))


@pytest.fixture(scope="session")
def codec_reference_run():
    """NeMo's own codec ``training_step`` (experiments/reference/codec_train.py) for three steps, epoch 0
    batch_idx 0 (discriminator update) and 1 (none), epoch 1 batch_idx 0, in float32 and float64: one run shared
    by the tests that read NeMo's behaviour from it or compare jaxvoc's step with it."""
    import torch

    from experiments.reference import codec_train as ct

    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # on the shared 2-core machine two torch threads run this ~3x slower
    try:
        return ct.reference_run(epochs=(2, 1))
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(autouse=True)
def _quiet_torch_threads():
    """Both frameworks share the 2 cores of CI; torch keeps its default thread count."""
    yield


_BLOCKER = '''"""Written by tests/conftest.py: the packages named in JAXVOC_TEST_ABSENT cannot be imported, exactly as
if they were not installed (ModuleNotFoundError with .name set)."""
import os
import sys

_ABSENT = set(filter(None, os.environ.get("JAXVOC_TEST_ABSENT", "").split(",")))


class _Absent:
    @staticmethod
    def find_spec(name, path=None, target=None):
        if name.split(".")[0] in _ABSENT:
            raise ModuleNotFoundError(f"No module named {name!r}", name=name)
        return None


sys.meta_path.insert(0, _Absent)
'''


def absent_packages_env(folder, *names: str, base: dict | None = None) -> dict:
    """An environment for a CLI subprocess in which the packages ``names`` are missing: a sitecustomize.py in
    ``folder`` (first on PYTHONPATH, before this tree) refuses their import as an uninstalled package would."""
    os.makedirs(folder, exist_ok=True)
    with open(os.path.join(folder, "sitecustomize.py"), "w") as f:
        f.write(_BLOCKER)
    env = dict(base or os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(folder), REPO] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    env["JAXVOC_TEST_ABSENT"] = ",".join(names)
    return env
