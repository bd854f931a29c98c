"""`jaxvoc train`: a NaN loss stops the run keeping the last good checkpoint; bad input gives one line and
exit code 2 before any compilation."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from conftest import REPO, assert_user_error
from train_standin import cli_env, write_config, write_wavs


def train_cli(*args, env=None, timeout=600):
    return subprocess.run([sys.executable, "-m", "jaxvoc.cli", "train", *map(str, args)], capture_output=True,
                          text=True, cwd=REPO, env=env or cli_env(), timeout=timeout)


def test_nan_stops_and_keeps_last_good_checkpoint(tmp_path):
    wavs = write_wavs(tmp_path / "wavs")
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.json", wavs, str(run), training_steps=10)
    # the stand-in objective's generator loss is NaN from the 6th step (state step 5) on
    proc = train_cli(cfg, env=cli_env(JAXVOC_STANDIN_NAN_AT="5"))
    line = assert_user_error(proc, "NaN", "step 6", "last good checkpoint is step 4", "--resume")
    steps = sorted(int(d) for d in os.listdir(run / "checkpoints") if d.isdigit())
    assert steps == [2, 4], (steps, line)
    # the kept checkpoint is finite
    import orbax.checkpoint as ocp

    state = ocp.StandardCheckpointer().restore(str(run / "checkpoints" / "4" / "state"))
    leaves = [np.asarray(x) for x in __import__("jax").tree_util.tree_leaves(state)]
    assert all(np.all(np.isfinite(x)) for x in leaves if x.dtype.kind == "f")
    metrics = [json.loads(l) for l in open(run / "metrics.jsonl")]
    assert [m["step"] for m in metrics] == [1, 2, 3, 4, 5]

    # the same run folder again without --resume: refused, nothing touched
    proc = train_cli(cfg)
    assert_user_error(proc, "already holds checkpoints", "step 4", "--resume")


def test_bad_input(tmp_path):
    wavs = write_wavs(tmp_path / "wavs", n=2)
    good = write_config(tmp_path / "c.json", wavs, str(tmp_path / "run"))
    assert_user_error(train_cli(tmp_path / "nope.json"), "config not found")
    (tmp_path / "bad.json").write_text("{not json")
    assert_user_error(train_cli(tmp_path / "bad.json"), "not valid JSON")
    assert_user_error(train_cli(tmp_path / "wavs"), "is a folder")  # a folder given as the config
    cfg = json.load(open(good))
    cfg["train"]["learning_rat"] = 1
    json.dump(cfg, open(tmp_path / "typo.json", "w"))
    assert_user_error(train_cli(tmp_path / "typo.json"), "unknown train setting", "learning_rat")
    cfg = json.load(open(good))
    del cfg["train"]["input_wavs_dir"]
    json.dump(cfg, open(tmp_path / "nodata.json", "w"))
    assert_user_error(train_cli(tmp_path / "nodata.json"), "no training data", "input_wavs_dir")
    cfg = json.load(open(good))
    cfg["train"]["input_wavs_dir"] = str(tmp_path / "missing")
    json.dump(cfg, open(tmp_path / "missing.json", "w"))
    assert_user_error(train_cli(tmp_path / "missing.json"), "audio folder not found")
    cfg = json.load(open(good))
    del cfg["segment_size"]
    json.dump(cfg, open(tmp_path / "noseg.json", "w"))
    assert_user_error(train_cli(tmp_path / "noseg.json"), "segment_size")
    assert_user_error(train_cli(good, "--resume"), "nothing to resume", "without --resume")
    assert_user_error(train_cli(good, "--init", tmp_path / "nockpt"), "--init checkpoint not found")
    fake = tmp_path / "wg_ckpt"
    fake.mkdir()
    (fake / "jaxvoc.json").write_text(json.dumps({"format": 1, "kind": "waveglow", "config": {}}))
    assert_user_error(train_cli(good, "--init", fake), "waveglow checkpoint", "bigvgan")
    assert_user_error(train_cli(good, "--init", fake, "--resume"), "exclude each other")
    assert_user_error(train_cli(good, "--steps", "0"), "--steps")
    (tmp_path / "empty.txt").write_text("")
    cfg = json.load(open(good))
    cfg["train"]["input_training_file"] = str(tmp_path / "empty.txt")
    json.dump(cfg, open(tmp_path / "empty.json", "w"))
    assert_user_error(train_cli(tmp_path / "empty.json"), "file list is empty")
    assert not (tmp_path / "run").exists()  # nothing written by any of these
