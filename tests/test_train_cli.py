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


def test_set_overrides_and_provenance(tmp_path):
    """--set changes the config (dotted keys, JSON values, type checked); the run folder records provenance
    (versions, git commit, resolved config) in provenance.json and as TensorBoard text."""
    import glob

    import jax

    wavs = write_wavs(tmp_path / "wavs", n=2)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.json", wavs, str(run), training_steps=50)
    proc = train_cli(cfg, "--set", "train.training_steps=2", "--set", "learning_rate=2e-4",
                     "--set", "train.checkpoint_interval=100", "--set", "train.export_at_end=false")
    assert proc.returncode == 0, proc.stderr
    assert "2 steps done" in proc.stdout, proc.stdout
    assert [json.loads(l)["step"] for l in open(run / "metrics.jsonl")] == [1, 2]
    assert not (run / "export").exists()
    prov = json.load(open(run / "provenance.json"))
    assert prov["versions"]["jax"] == jax.__version__
    assert set(prov["versions"]) == {"jaxvoc", "jax", "jaxlib", "flax", "optax", "orbax-checkpoint"}
    assert all(prov["versions"].values()), prov["versions"]
    assert prov["config"]["learning_rate"] == 2e-4 and prov["config"]["train"]["training_steps"] == 2
    assert prov["train_settings"]["checkpoint_interval"] == 100
    assert prov["overrides"][0] == "train.training_steps=2"
    head = subprocess.run(["git", "-C", REPO, "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert prov["git"]["commit"] == head.stdout.strip()
    events = glob.glob(str(run / "logs" / "events.out.tfevents.*"))
    assert events
    blob = b"".join(open(e, "rb").read() for e in events)
    assert b"provenance" in blob and jax.__version__.encode() in blob


def test_set_refused_by_name(tmp_path):
    wavs = write_wavs(tmp_path / "wavs", n=2)
    cfg = write_config(tmp_path / "c.json", wavs, str(tmp_path / "run"))
    assert_user_error(train_cli(cfg, "--set", "learning_rat=1e-4"), "unknown key 'learning_rat'", "learning_rate")
    assert_user_error(train_cli(cfg, "--set", "train.validation_intervall=5"), "unknown key", "validation_interval")
    assert_user_error(train_cli(cfg, "--set", "train.validation_interval=often"), "is an integer", "got a string")
    assert_user_error(train_cli(cfg, "--set", "batch_size=2.5"), "batch_size is an integer", "got a number")
    assert_user_error(train_cli(cfg, "--set", "upsample_rates=8"), "is a list")
    assert_user_error(train_cli(cfg, "--set", "learning_rate"), "KEY=VALUE")
    assert_user_error(train_cli(cfg, "--set", "train.compute_dtype=\"bfloat16\""), "compute_dtype", "bigvgan",
                      "float32")
    assert not (tmp_path / "run").exists()
    (tmp_path / "afile").write_text("x")
    assert_user_error(train_cli(cfg, "--run-dir", tmp_path / "afile" / "run"), "not a folder", "afile")


def test_missing_tensorboardx_is_one_warning(tmp_path):
    from conftest import absent_packages_env

    wavs = write_wavs(tmp_path / "wavs", n=2)
    run = tmp_path / "run"
    cfg = write_config(tmp_path / "c.json", wavs, str(run), training_steps=1, export_at_end=False)
    proc = train_cli(cfg, env=absent_packages_env(tmp_path / "site", "tensorboardX", base=cli_env()))
    assert proc.returncode == 0, proc.stderr
    warnings = [l for l in proc.stderr.splitlines() if "tensorboardX" in l]
    assert len(warnings) == 1 and warnings[0].startswith("jaxvoc: warning: tensorboardX is not installed"), \
        proc.stderr
    assert "pip install tensorboardX" in warnings[0]
    assert not (run / "logs").exists() and (run / "metrics.jsonl").exists()


def test_set_values_and_nested_sections():
    """apply_overrides alone (no process): JSON values, an integer for a float, text for a string setting,
    nested WaveGlow sections, a train setting the file leaves at its default; the file's dict is not changed."""
    import pytest

    from jaxvoc.errors import UserError
    from jaxvoc.train.config import apply_overrides

    raw = {"learning_rate": 1e-3, "fmax": None, "upsample_rates": [8, 8],
           "train_config": {"sigma": 1.0, "fp16_run": True, "output_directory": "out"}, "train": {}}
    got = apply_overrides(raw, ["learning_rate=1", "fmax=8000", "upsample_rates=[4, 4, 4]",
                                "train_config.sigma=0.8", "train_config.fp16_run=false",
                                "train_config.output_directory=12", "train.keep_checkpoints=2"], "c.json")
    assert got["learning_rate"] == 1.0 and isinstance(got["learning_rate"], float)
    assert got["fmax"] == 8000 and got["upsample_rates"] == [4, 4, 4]
    assert got["train_config"] == {"sigma": 0.8, "fp16_run": False, "output_directory": "12"}
    assert got["train"] == {"keep_checkpoints": 2} and raw["train"] == {} and raw["learning_rate"] == 1e-3
    for bad, needle in (("train_config.fp16_run=1", "is a boolean"), ("train_config.sigmaa=1", "did you mean sigma"),
                        ("train_config=1", "is a section"), ("nope.x=1", "'nope' is not a section"),
                        ("=1", "KEY=VALUE")):
        with pytest.raises(UserError, match=needle):
            apply_overrides(raw, [bad], "c.json")
