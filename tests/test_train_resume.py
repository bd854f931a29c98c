"""Exact resume (issue 5, item 6): a `jaxvoc train` process killed with SIGKILL after step 5 (its step-4
checkpoint written asynchronously, possibly still in flight), then resumed with --resume, ends at step 8
with parameters, optimizer states, step and RNG bitwise identical to an uninterrupted run (CPU).

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


def _cmd(cfg, *extra):
    return [sys.executable, "-m", "jaxvoc.cli", "train", str(cfg), *extra]


def _state(run):
    import orbax.checkpoint as ocp

    return ocp.StandardCheckpointer().restore(os.path.join(run, "checkpoints", "8", "state"))


def test_sigkill_and_resume_is_bitwise_identical(tmp_path):
    wavs = write_wavs(tmp_path / "wavs")
    env = cli_env()  # the test run's persistent compilation cache (conftest)
    cfg_a = write_config(tmp_path / "a.json", wavs, str(tmp_path / "run_a"), training_steps=8)
    cfg_b = write_config(tmp_path / "b.json", wavs, str(tmp_path / "run_b"), training_steps=8)

    a = subprocess.run(_cmd(cfg_a), capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert a.returncode == 0, a.stderr[-2000:]

    proc = subprocess.Popen(_cmd(cfg_b), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            env=env)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("step 5:"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, ("".join(seen), proc.stderr.read()[-2000:])
    assert not os.path.exists(tmp_path / "run_b" / "checkpoints" / "8")

    b = subprocess.run(_cmd(cfg_b, "--resume"), capture_output=True, text=True, cwd=REPO, env=env, timeout=600)
    assert b.returncode == 0, b.stderr[-2000:]
    resumed_from = int(b.stdout.split("resumed from step ")[1].split(";")[0])
    assert resumed_from in (2, 4), b.stdout
    assert f"step {resumed_from + 1}:" in b.stdout and "step 8:" in b.stdout

    sa, sb = _state(tmp_path / "run_a"), _state(tmp_path / "run_b")
    fa, ta = jax.tree_util.tree_flatten_with_path(sa)
    fb, tb = jax.tree_util.tree_flatten_with_path(sb)
    assert ta == tb
    assert int(sa["step"]) == int(sb["step"]) == 8
    assert {"params_g", "params_d", "opt_g", "opt_d", "rng"} <= set(sa)
    differ = [jax.tree_util.keystr(k) for (k, x), (_, y) in zip(fa, fb) if not np.array_equal(np.asarray(x), np.asarray(y))]
    assert not differ, differ[:5]
    # and the exported models (params + discriminators) agree too
    from jaxvoc.io.checkpoint import load_tree

    from jaxvoc.train.tasks import DISCRIMINATOR_TREE

    for tree in ("params", DISCRIMINATOR_TREE):
        xa, xb = load_tree(str(tmp_path / "run_a" / "export"), tree), load_tree(str(tmp_path / "run_b" / "export"), tree)
        assert all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(xa), jax.tree_util.tree_leaves(xb)))
    # the run was not trivially static: the generator moved between steps 4 and 8
    import orbax.checkpoint as ocp

    s4 = ocp.StandardCheckpointer().restore(str(tmp_path / "run_a" / "checkpoints" / "4" / "state"))
    assert not all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(s4["params_g"]),
                                                        jax.tree_util.tree_leaves(sa["params_g"])))
