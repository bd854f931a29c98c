"""Multi-process training on one machine (issue 14): `jaxvoc train` processes on a localhost coordinator
(jax.distributed, gloo CPU collectives), 2 CPU devices each, one mesh over all of them.

* The run does not depend on how many processes it used: 2 processes x 2 devices give the losses and
  parameters of 1 process x 4 devices (<= 1e-6 relative, every step), for the GAN step (stand-in objective,
  data parallel over 4) and the WaveGlow flow step (data 2 x fsdp 2); process 0 writes the logs and the
  export (parameters gathered to its host).
* All processes SIGKILLed after a checkpoint, resumed: bitwise equal to the uninterrupted 2-process run.
* One process SIGKILLed: the other ends within the bound (heartbeat timeout 20 s + watchdog poll) with one
  line, exit code 2; a resume of both then ends bitwise equal to the uninterrupted run.
* Process 0 (the coordinator's host) SIGKILLed: the other ends at once with jaxvoc's one line, exit code 2,
  not with the runtime's fatal log.

The command lines are those of docs/training.md ("Several processes"):
``jaxvoc train CONFIG --coordinator localhost:PORT --num-processes 2 --process-id I`` with
``XLA_FLAGS=--xla_force_host_platform_device_count=2`` (plus ``--xla_backend_optimization_level=0``, every run
alike: conftest.quick_compile_xla_flags). All runs share the test session's persistent
compilation cache."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from conftest import REPO, quick_compile_xla_flags
from train_standin import cli_env, write_config, write_wavs

STEPS = 4
TIMEOUT = 400  # per run (seconds), on 2 busy cores
KILL_ONE_BOUND_S = 60  # heartbeat timeout (20 s) + watchdog poll (1 s) + exit, with a wide margin for load


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("localhost", 0))
        return s.getsockname()[1]


def env_for(devices: int) -> dict:
    # XLA without LLVM's optimisation (conftest.quick_compile_xla_flags): every run alike, a fraction of the
    # compile time of these compile-bound runs; what is checked compares runs with each other, not speed
    return cli_env(XLA_FLAGS=quick_compile_xla_flags(f"--xla_force_host_platform_device_count={devices}"))


def launch(cfg, n: int, logdir, *extra, devices: int = 2) -> list[tuple[subprocess.Popen, str]]:
    """n `jaxvoc train` processes (``devices`` each) on a fresh localhost coordinator; output to files."""
    port, out = free_port(), []
    os.makedirs(logdir, exist_ok=True)
    for i in range(n):
        log = os.path.join(str(logdir), f"p{i}.log")
        f = open(log, "w")
        cmd = [sys.executable, "-m", "jaxvoc.cli", "train", str(cfg), "--coordinator", f"localhost:{port}",
               "--num-processes", str(n), "--process-id", str(i), *extra]
        out.append((subprocess.Popen(cmd, stdout=f, stderr=subprocess.STDOUT, cwd=REPO, env=env_for(devices)), log))
        f.close()
    return out


def finish(procs, timeout=TIMEOUT) -> list[str]:
    deadline = time.monotonic() + timeout
    try:
        for p, _ in procs:
            p.wait(timeout=max(1, deadline - time.monotonic()))
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    logs = [open(log).read() for _, log in procs]
    for (p, _), text in zip(procs, logs):
        assert p.returncode == 0, text[-3000:]
        # no Python traceback, no fatal log of the runtime (e.g. at the ordered shutdown)
        assert "Traceback" not in text and "Check failure" not in text, text[-3000:]
    return logs


def single(cfg, devices: int = 4, *extra) -> str:
    proc = subprocess.run([sys.executable, "-m", "jaxvoc.cli", "train", str(cfg), *extra], capture_output=True,
                          text=True, cwd=REPO, env=env_for(devices), timeout=TIMEOUT)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return proc.stdout


def wait_for(log: str, needle: str, procs, timeout=TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if needle in open(log).read():
            return
        if any(p.poll() is not None for p, _ in procs):
            raise AssertionError(f"a process ended before {needle!r}: " + open(log).read()[-2000:])
        time.sleep(0.2)
    raise AssertionError(f"no {needle!r} within {timeout} s")


def metrics(run) -> list[dict]:
    return [json.loads(line) for line in open(os.path.join(run, "metrics.jsonl"))]


def state_at(run, step: int):
    """The saved train state of ``step`` as numpy (any topology)."""
    from jaxvoc.io.checkpoint import restore_params

    return restore_params(os.path.join(run, "checkpoints", str(step), "state"))


def exported(run) -> dict:
    from jaxvoc.io.checkpoint import load_tree, read_meta

    return {t: load_tree(os.path.join(run, "export"), t) for t in read_meta(os.path.join(run, "export"))["trees"]}


def max_rel(a, b) -> float:
    la, lb = jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)
    assert len(la) == len(lb) > 0
    return max(float(np.linalg.norm(np.asarray(x, np.float64) - np.asarray(y, np.float64))
                     / max(np.linalg.norm(np.asarray(y, np.float64)), 1e-30)) for x, y in zip(la, lb))


def global_rel(a, b) -> float:
    """||a - b|| / ||b|| over all leaves concatenated (the measure of tests/test_train_sharding.py)."""
    ca = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(a)])
    cb = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(b)])
    return float(np.linalg.norm(ca - cb) / np.linalg.norm(cb))


def bitwise_equal(a, b) -> list[str]:
    fa, ta = jax.tree_util.tree_flatten_with_path(a)
    fb, tb = jax.tree_util.tree_flatten_with_path(b)
    assert ta == tb
    return [jax.tree_util.keystr(k) for (k, x), (_, y) in zip(fa, fb) if not np.array_equal(np.asarray(x), np.asarray(y))]


def compare_runs(run_multi, run_single) -> dict:
    """Max relative difference of every logged loss per step; relative difference of the exported parameters
    (all leaves together, and the worst leaf: a few-element leaf such as a snake alpha, whose Adam updates
    are nearly sign(g) * lr, shows float32 rounding of the reduction order most)."""
    mm, ms = metrics(run_multi), metrics(run_single)
    assert [m["step"] for m in mm] == [m["step"] for m in ms] == list(range(1, len(ms) + 1))
    skip = {"step", "steps_per_sec", "lr", "finite"}
    per_step = {m["step"]: max(abs(m[k] - s[k]) / max(abs(s[k]), 1e-30) for k in s if k not in skip)
                for m, s in zip(mm, ms)}
    em, es = exported(run_multi), exported(run_single)
    return {"loss_rel_per_step": per_step, "export_rel": global_rel(em, es), "export_worst_leaf_rel": max_rel(em, es)}


@pytest.fixture(scope="module")
def gan(tmp_path_factory):
    """The stand-in GAN (tests/train_standin.py), 4 steps, checkpoints every 2: one process x 4 devices and
    two processes x 2 devices (data parallel over 4)."""
    root = tmp_path_factory.mktemp("mp_gan")
    wavs = write_wavs(root / "wavs")
    runs = {}
    for name in ("single", "multi", "multi4", "killall", "killone", "killzero"):
        runs[name] = str(root / f"run_{name}")
        write_config(root / f"{name}.json", wavs, runs[name], training_steps=STEPS, freeze_step=1)
    out = single(root / "single.json")
    assert "4 device(s) as data 4 x fsdp 1" in out
    logs = finish(launch(root / "multi.json", 2, root / "logs_multi"))
    return root, runs, out, logs


def test_gan_two_processes_match_one_process(gan):
    root, runs, out, logs = gan
    assert "4 device(s) as data 4 x fsdp 1" in logs[0]
    assert f"{STEPS} steps done" in logs[0] and "model exported to" in logs[0]
    assert "steps done" not in logs[1] and "step 1:" not in logs[1]  # process 0 alone reports
    assert not os.path.exists(os.path.join(runs["multi"], ".jaxvoc.lock"))
    res = compare_runs(runs["multi"], runs["single"])
    print("GAN 2x2 vs 1x4:", res)
    assert all(v <= 1e-6 for v in res["loss_rel_per_step"].values()), res
    assert res["export_rel"] <= 1e-6 and res["export_worst_leaf_rel"] <= 1e-5, res
    assert global_rel(state_at(runs["multi"], STEPS), state_at(runs["single"], STEPS)) <= 1e-6
    # the checkpoint holds both processes' data positions and the resolved config
    data_files = sorted(os.listdir(os.path.join(runs["multi"], "checkpoints", str(STEPS), "data")))
    assert [f for f in data_files if f.endswith(".json")] == ["process_0-of-2.json", "process_1-of-2.json"]


def test_gan_four_processes_match_one_process(gan):
    """4 processes x 1 device (each its own host as far as JAX knows) against the 1 x 4 run."""
    root, runs, _, _ = gan
    logs = finish(launch(root / "multi4.json", 4, root / "logs_multi4", devices=1))
    assert "4 device(s) as data 4 x fsdp 1" in logs[0] and "model exported to" in logs[0]
    assert all("step 1:" not in text for text in logs[1:])
    res = compare_runs(runs["multi4"], runs["single"])
    print("GAN 4x1 vs 1x4:", res)
    assert all(v <= 1e-6 for v in res["loss_rel_per_step"].values()), res
    assert res["export_rel"] <= 1e-6 and res["export_worst_leaf_rel"] <= 1e-5, res
    data_files = sorted(os.listdir(os.path.join(runs["multi4"], "checkpoints", str(STEPS), "data")))
    assert [f for f in data_files if f.endswith(".json")] == [f"process_{i}-of-4.json" for i in range(4)]


def _resume_and_compare(root, runs, name, logs_killed):
    logs = finish(launch(root / f"{name}.json", 2, root / f"logs_{name}_resume", "--resume"))
    resumed = int(logs[0].split("resumed from step ")[1].split(";")[0])
    assert resumed == 2, logs[0]  # killed after step 3 was reported: the step-2 checkpoint
    assert f"{STEPS} steps done" in logs[0]
    differ = bitwise_equal(state_at(runs[name], STEPS), state_at(runs["multi"], STEPS))
    assert not differ, differ[:5]
    assert not bitwise_equal(exported(runs[name]), exported(runs["multi"]))
    return resumed


def test_kill_all_processes_and_resume_bitwise(gan):
    root, runs, _, _ = gan
    procs = launch(root / "killall.json", 2, root / "logs_killall")
    try:
        wait_for(procs[0][1], "step 3:", procs)
    finally:
        for p, _ in procs:
            p.send_signal(signal.SIGKILL)
        for p, _ in procs:
            p.wait(timeout=60)
    assert all(p.returncode == -signal.SIGKILL for p, _ in procs)
    assert not os.path.exists(os.path.join(runs["killall"], "checkpoints", str(STEPS)))
    resumed = _resume_and_compare(root, runs, "killall", None)
    print("kill all at step 3: resumed from step", resumed)


KILL_ZERO_BOUND_S = 10  # the runtime sees process 0's socket close at once; a wide margin for a loaded machine


def kill_one_of_two(root, name: str, victim: int, bound_s: float) -> tuple[str, float, int]:
    """Two processes on config ``name``; SIGKILL ``victim`` when process 0 printed step 3; (the survivor's
    output, seconds it took to end, its exit code)."""
    procs = launch(root / f"{name}.json", 2, root / f"logs_{name}")
    survivor = procs[1 - victim]
    try:
        wait_for(procs[0][1], "step 3:", procs)
        procs[victim][0].send_signal(signal.SIGKILL)
        t0 = time.monotonic()
        survivor[0].wait(timeout=bound_s)
        took = time.monotonic() - t0
    finally:
        for p, _ in procs:
            if p.poll() is None:
                p.kill()
                p.wait()
    text = open(survivor[1]).read()
    print(f"kill process {victim}: process {1 - victim} exited after {took:.2f} s")
    # one line from jaxvoc, exit code 2: no traceback, no runtime fatal log (F-lines, check failures)
    assert survivor[0].returncode == 2, text[-3000:]
    for fatal in ("Traceback", "Check failure", "Terminating process", "SIGABRT"):
        assert fatal not in text, text[-3000:]
    errors = [line for line in text.splitlines() if line.startswith("jaxvoc: error:")]
    assert len(errors) == 1 and "--resume" in errors[0], text[-2000:]
    return errors[0], took, survivor[0].returncode


def test_kill_one_process_others_exit_then_resume(gan):
    root, runs, _, _ = gan
    error, _, _ = kill_one_of_two(root, "killone", 1, KILL_ONE_BOUND_S)
    assert "process(es) [1] of 2 stopped responding" in error
    resumed = _resume_and_compare(root, runs, "killone", None)  # the lock was released: no stale-lock warning
    assert "stale lock" not in "".join(open(os.path.join(root, "logs_killone_resume", f"p{i}.log")).read()
                                       for i in range(2))
    print("kill one at step 3: resumed from step", resumed)


def test_kill_process_zero_other_exits_with_one_line(gan):
    error, _, _ = kill_one_of_two(gan[0], "killzero", 0, KILL_ZERO_BOUND_S)
    assert "lost the multi-process coordinator" in error


def test_flow_two_processes_fsdp_match_one_process(tmp_path):
    """WaveGlow (tiny, 22.05 kHz data), data 2 x fsdp 2, 3 steps: 2 processes x 2 devices vs 1 x 4; with
    fsdp_min_size 0 every divisible parameter and Adam moment is split over the fsdp pair of each process.
    One file held out for validation (run by process 0 on the gathered parameters)."""
    import soundfile as sf

    from conftest import speech

    wavs = tmp_path / "wavs22"
    wavs.mkdir()
    y = speech(22050)
    lines = []
    for i in range(5):
        p = wavs / f"c{i}.wav"
        sf.write(str(p), y[i * 5000: i * 5000 + 8000 + 2000 * i], 22050, subtype="PCM_16")
        lines.append(str(p))
    (tmp_path / "files.txt").write_text("\n".join(lines) + "\n")
    raw = json.load(open(os.path.join(REPO, "experiments", "training", "configs", "waveglow_tiny_smoke.json")))
    raw["waveglow_config"].update(n_flows=2, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16,
                                                                        "kernel_size": 3})
    raw["train_config"].update(batch_size=4, learning_rate=1e-4, iters_per_checkpoint=2)
    raw["data_config"].update(segment_length=1024, training_files=str(tmp_path / "files.txt"))
    runs = {}
    for name in ("single", "multi"):
        runs[name] = str(tmp_path / f"run_{name}")
        raw["train_config"]["output_directory"] = runs[name]
        raw["train"] = {"fsdp": 2, "fsdp_min_size": 0, "training_steps": 3, "stdout_interval": 1,
                        "summary_interval": 1, "num_validation_files": 1}
        json.dump(raw, open(tmp_path / f"{name}.json", "w"))
    out = single(tmp_path / "single.json")
    assert "data 2 x fsdp 2" in out
    logs = finish(launch(tmp_path / "multi.json", 2, tmp_path / "logs"))
    assert "data 2 x fsdp 2" in logs[0] and "3 steps done" in logs[0] and "model exported" in logs[0]
    assert "4 training / 1 validation file(s)" in logs[0] and "validation mel L1" in logs[0]
    res = compare_runs(runs["multi"], runs["single"])
    # validation on process 0 (parameters gathered to its host): at the start and at the end, as one process
    vm, vs = ([json.loads(x) for x in open(os.path.join(runs[k], "validation.jsonl"))] for k in ("multi", "single"))
    assert [v["step"] for v in vm] == [v["step"] for v in vs] == [0, 3]
    res["validation_rel"] = max(abs(a["mel_spec_error"] - b["mel_spec_error"]) / b["mel_spec_error"]
                                for a, b in zip(vm, vs))
    assert res["validation_rel"] <= 1e-5, res
    print("flow 2x2 vs 1x4 (dp2 x fsdp2):", res)
    assert all(v <= 1e-6 for v in res["loss_rel_per_step"].values()), res
    assert res["export_rel"] <= 1e-6 and res["export_worst_leaf_rel"] <= 1e-5, res


def test_locked_run_folder_refused_by_every_process(tmp_path):
    """A 2-process job on a run folder held by another live job: every process ends at once with the same
    one line, exit code 2, and an ordered shutdown (no fatal log of the runtime)."""
    wavs = write_wavs(tmp_path / "wavs", n=2)
    run = tmp_path / "run"
    run.mkdir()
    cfg = write_config(tmp_path / "c.json", wavs, str(run))
    holder = subprocess.Popen(["sleep", "300"])
    try:
        (run / ".jaxvoc.lock").write_text(json.dumps({"pid": holder.pid, "host": socket.gethostname(),
                                                      "started": "earlier"}))
        procs = launch(cfg, 2, tmp_path / "logs")
        for p, _ in procs:
            p.wait(timeout=120)
    finally:
        holder.kill()
        holder.wait()
    for p, log in procs:
        text = open(log).read()
        lines = [line for line in text.splitlines() if line.strip() and not line.startswith("[Gloo]")
                 and "recoverable task feature" not in line]
        assert p.returncode == 2, text
        assert len(lines) == 1 and lines[0].startswith("jaxvoc: error: run folder"), text
        assert f"in use by another jaxvoc train (pid {holder.pid}" in lines[0]
    assert not os.path.exists(run / "checkpoints")
