"""Exact resume (issue 5, item 6): a `jaxvoc train` process killed with SIGKILL after step 5 (its step-4
checkpoint written asynchronously, possibly still in flight), then resumed with --resume, ends at step 8
with parameters, optimizer states, step and RNG bitwise identical to an uninterrupted run (CPU). The codec's
(issue 12): tests/test_codec_train_run.py, with the helpers here.

The three processes share a persistent compilation cache (they compile the same programs); the data
iterator, the RNG and every state leaf come from the checkpoint."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import jax
import numpy as np

from conftest import REPO
from train_standin import cli_env, write_config, write_wavs


def _cmd(*args):
    return [sys.executable, "-m", "jaxvoc.cli", "train", *map(str, args)]


def checkpoint_state(run, step: int):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(os.path.join(run, "checkpoints", str(step), "state"))


def kill_and_resume(args_a, args_b, run_b, kill_after: int, env, start=()) -> tuple[str, str, int]:
    """`jaxvoc train ARGS_A START` to its end; `jaxvoc train ARGS_B START` killed with SIGKILL once it has
    reported step ``kill_after``, then `jaxvoc train ARGS_B --resume` to its end (``start``: arguments of a
    fresh start only, e.g. --init). Returns (stdout of A, stdout of the resumed run, the step it resumed
    from)."""
    a = subprocess.run(_cmd(*args_a, *start), capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert a.returncode == 0, a.stderr[-2000:]

    proc = subprocess.Popen(_cmd(*args_b, *start), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith(f"step {kill_after}:"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, ("".join(seen), proc.stderr.read()[-2000:])
    assert sorted(int(d) for d in os.listdir(os.path.join(run_b, "checkpoints")) if d.isdigit())[-1] < kill_after

    b = subprocess.run(_cmd(*args_b, "--resume"), capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert b.returncode == 0, b.stderr[-2000:]
    resumed_from = int(b.stdout.split("resumed from step ")[1].split(";")[0])
    assert f"step {resumed_from + 1}:" in b.stdout, b.stdout
    return a.stdout, b.stdout, resumed_from


def assert_same_final_state(run_a, run_b, step: int) -> dict:
    """The checkpoints at ``step`` of both runs: the same tree, every leaf bitwise equal; and their exports
    (params + discriminators). Returns run A's state."""
    from jaxvoc.io.checkpoint import load_tree
    from jaxvoc.train.tasks import DISCRIMINATOR_TREE

    sa, sb = checkpoint_state(run_a, step), checkpoint_state(run_b, step)
    fa, ta = jax.tree_util.tree_flatten_with_path(sa)
    fb, tb = jax.tree_util.tree_flatten_with_path(sb)
    assert ta == tb
    assert int(sa["step"]) == int(sb["step"]) == step
    assert {"params_g", "params_d", "opt_g", "opt_d", "rng"} <= set(sa)
    differ = [jax.tree_util.keystr(k) for (k, x), (_, y) in zip(fa, fb)
              if not np.array_equal(np.asarray(x), np.asarray(y))]
    assert not differ, differ[:5]
    for tree in ("params", DISCRIMINATOR_TREE):
        xa, xb = load_tree(os.path.join(run_a, "export"), tree), load_tree(os.path.join(run_b, "export"), tree)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(xa), jax.tree_util.tree_leaves(xb)))
    return sa


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    wavs = write_wavs(tmp_path / "wavs")
    env = cli_env()  # the test run's persistent compilation cache (conftest)
    cfg_a = write_config(tmp_path / "a.json", wavs, str(tmp_path / "run_a"), training_steps=8)
    cfg_b = write_config(tmp_path / "b.json", wavs, str(tmp_path / "run_b"), training_steps=8)
    _, out_b, resumed_from = kill_and_resume([cfg_a], [cfg_b], str(tmp_path / "run_b"), 5, env)
    assert resumed_from in (2, 4), out_b
    assert "step 8:" in out_b
    sa = assert_same_final_state(str(tmp_path / "run_a"), str(tmp_path / "run_b"), 8)
    # the run was not trivially static: the generator moved between steps 4 and 8
    s4 = checkpoint_state(str(tmp_path / "run_a"), 4)
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(s4["params_g"]),
                                                        jax.tree_util.tree_leaves(sa["params_g"])))
