"""Damaged or contested run folders (issue 14, item 3), one `jaxvoc train` process (1 CPU device):

* a second `jaxvoc train` on a run folder in use is refused with one line naming the holder (pid, host);
* a stale lock (its pid not running on this host) is taken over with one warning line;
* the newest checkpoint damaged (its array files truncated): --resume falls back to the previous step with one
  warning line naming the skipped step, moves it to damaged_checkpoints/, and ends bitwise where the
  undamaged run ended;
* a checkpoint whose stored (resolved) config differs from the training config is refused, naming the keys;
* every checkpoint damaged: one line, never a silent start from scratch;
* a checkpoint write that fails (a file size limit, as a full disk): one line naming the checkpoints folder,
  no unfinished checkpoint folder left."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time

import jax
import numpy as np

from conftest import REPO, assert_user_error
from train_standin import cli_env, write_config, write_wavs


def _cmd(cfg, *extra):
    return [sys.executable, "-m", "jaxvoc.cli", "train", str(cfg), *extra]


def train_cli(cfg, *extra):
    return subprocess.run(_cmd(cfg, *extra), capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=600)


def _damage(step_dir) -> int:
    """Truncates every array data file of the step's state to half its size."""
    n = 0
    for dirpath, _, files in os.walk(os.path.join(step_dir, "state")):
        for f in files:
            p = os.path.join(dirpath, f)
            if os.path.basename(dirpath) == "d":
                os.truncate(p, os.path.getsize(p) // 2)
                n += 1
    assert n > 0
    return n


def _export(run):
    from jaxvoc.io.checkpoint import load_tree

    return jax.tree_util.tree_leaves(load_tree(os.path.join(run, "export"), "params"))


def test_lock_damaged_checkpoint_and_config_mismatch(tmp_path):
    wavs = write_wavs(tmp_path / "wavs")
    run = str(tmp_path / "run")
    cfg = write_config(tmp_path / "c.json", wavs, run, training_steps=4)
    lock = os.path.join(run, ".jaxvoc.lock")

    # a run (A) and, while it runs, a second process on the same folder (B): refused
    a = subprocess.Popen(_cmd(cfg), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                         env=cli_env())
    first = a.stdout.readline()
    assert first.startswith("jaxvoc train: started"), (first, a.stderr.read() if a.poll() is not None else "")
    b = train_cli(cfg, "--resume")  # (not "already holds checkpoints": the lock is checked first when resuming)
    assert a.poll() is None, "run A ended before B was checked"  # B met a live lock
    assert_user_error(b, "is in use by another jaxvoc train", f"pid {a.pid} on {socket.gethostname()}",
                      ".jaxvoc.lock")
    out, err = a.communicate(timeout=600)
    assert a.returncode == 0, err[-2000:]
    assert not os.path.exists(lock)  # released at the end
    ref = [np.asarray(x).copy() for x in _export(run)]
    steps = sorted(int(d) for d in os.listdir(os.path.join(run, "checkpoints")) if d.isdigit())
    assert steps == [2, 4]

    # the newest checkpoint damaged, and a stale lock left by a dead process
    _damage(os.path.join(run, "checkpoints", "4"))
    dead = subprocess.Popen(["true"])
    dead.wait()
    with open(lock, "w") as f:
        json.dump({"pid": dead.pid, "host": socket.gethostname(), "started": "then"}, f)
    r = train_cli(cfg, "--resume")
    assert r.returncode == 0, r.stderr[-3000:]
    assert "Traceback" not in r.stderr
    warnings = [line for line in r.stderr.splitlines() if line.strip()]
    print("\n".join(warnings))
    assert len(warnings) == 2, r.stderr
    assert warnings[0].startswith("jaxvoc: warning: took over the stale lock") and f"pid {dead.pid}" in warnings[0]
    assert warnings[1].startswith("jaxvoc: warning: skipped damaged checkpoint(s) step 4 (")
    assert "resuming from step 2" in warnings[1] and "damaged_checkpoints" in warnings[1]
    assert "resumed from step 2" in r.stdout and "step 3:" in r.stdout and "4 steps done" in r.stdout
    assert [d.split("-")[0] for d in os.listdir(os.path.join(run, "damaged_checkpoints"))] == ["4"]
    assert all(np.array_equal(x, y) for x, y in zip(ref, _export(run)))  # step 4 recomputed bitwise

    # the config changed since the checkpoints were written: refused, naming the keys
    h = json.load(open(cfg))
    h["learning_rate"], h["adam_b1"] = 2e-3, 0.5
    h["train"]["training_steps"] = 6  # allowed to change
    json.dump(h, open(tmp_path / "changed.json", "w"))
    line = assert_user_error(train_cli(tmp_path / "changed.json", "--resume"), "another config",
                             "learning_rate 0.001 -> 0.002", "adam_b1 0.8 -> 0.5", "checkpoint step 4")
    assert "training_steps" not in line
    print(line)

    # every checkpoint damaged: refused with one line (not a silent fresh start)
    for s in (2, 4):
        _damage(os.path.join(run, "checkpoints", str(s)))
    line = assert_user_error(train_cli(cfg, "--resume"), "no usable checkpoint", "step 4 (", "step 2 (")
    print(line)
    assert not os.path.exists(lock)


def test_checkpoint_write_failure_is_one_line(tmp_path):
    """`jaxvoc train` whose first checkpoint write fails half-way (ulimit -f 59: EFBIG after some arrays are
    written, as a full disk would): exit 2 with one line naming the checkpoints folder, nothing else on stderr
    (Orbax's background threads logged the failure with tracebacks, 4 of them), and no unfinished
    `<step>.orbax-checkpoint-tmp` folder left behind."""
    wavs = write_wavs(tmp_path / "wavs")
    run = str(tmp_path / "run")
    cfg = write_config(tmp_path / "c.json", wavs, run, training_steps=4)
    limit = 'trap "" XFSZ; ulimit -f 59; exec "$@"'  # SIGXFSZ ignored: a write past the limit fails with EFBIG
    proc = subprocess.run(["bash", "-c", limit, "bash", *_cmd(cfg)], capture_output=True, text=True, cwd=REPO,
                          env=cli_env(), timeout=600)
    line = assert_user_error(proc, "file too large", "ulimit", os.path.join(run, "checkpoints") + ";")
    assert proc.stderr.count("\n") == 1, proc.stderr
    left = [os.path.join(d, n) for d, dirs, _ in os.walk(run) for n in dirs if "tmp" in n]
    assert left == [], left
    print(line)


def test_failed_io_report_filter():
    """What jaxvoc drops after a failed Orbax read or write: the unraisable 'Event loop is closed' of a
    tensorstore thread completing a future of Orbax's closed loop, and asyncio's log record of an orphaned
    Orbax task. Anything else still reaches stderr. (In a fresh interpreter: pytest wraps the hooks itself.)"""
    import subprocess
    import sys

    from conftest import REPO

    code = """
import asyncio, logging, sys
from jaxvoc.io.checkpoint import quiet_failed_io_reports
quiet_failed_io_reports()
quiet_failed_io_reports()  # installed once

class ClosedLoop:  # reports from a destructor, as asyncio does from a foreign thread: unraisable
    def __del__(self):
        loop = asyncio.new_event_loop()
        loop.close()
        loop.call_soon_threadsafe(print)

class OtherError:
    def __del__(self):
        raise RuntimeError("Event loop is closed")  # the same words, not from _check_closed: shown

ClosedLoop(); OtherError()
log = logging.getLogger("asyncio")
log.error("Task exception was never retrieved\\nfuture: <Task coro=<NumpyHandler._open_and_write() at orbax/x.py>>")
log.error("Task exception was never retrieved\\nfuture: <Task coro=<mine()>>")
log.error("Task was destroyed but it is pending!\\ntask: <Task pending coro=<async_save() at orbax/y.py>>")

async def fails(words):
    raise ValueError(words)

async def orphan_gathers():  # asyncio itself reports each at collection: '_GatheringFuture exception ...'
    a = asyncio.gather(fails('Error writing "w/0" in OCDBT database: File too large'))
    b = asyncio.gather(fails("my own failure"))
    await asyncio.sleep(0.01)

loop = asyncio.new_event_loop()
loop.run_until_complete(orphan_gathers())
loop.close()
import gc; gc.collect()
print("end", file=sys.stderr)
"""
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert proc.returncode == 0, proc.stderr
    err = proc.stderr
    assert "_check_closed" not in err and "orbax" not in err, err
    assert err.count("Event loop is closed") == 1 and "OtherError.__del__" in err, err
    assert "coro=<mine()>" in err and err.rstrip().endswith("end"), err
    assert "OCDBT" not in err and err.count("_GatheringFuture exception was never retrieved") == 1, err
    assert "my own failure" in err, err
