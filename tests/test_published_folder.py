"""A BigVGAN folder laid out exactly as NVIDIA publishes it (config.json + bigvgan_generator.pt +
bigvgan_discriminator_optimizer.pt), built with the official code at small width and random weights, through
every entry point that takes one: convert, synth, compare and the demo script (issue #11, item 1: compare
ended in a traceback on such a folder)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, run_cli

NAME = "bigvgan_v2_24khz_100band_256x"  # the v2 layout NVIDIA publishes (CQTD in the discriminator file)


@pytest.fixture(scope="module")
def published(tmp_path_factory):
    import torch

    from conversion import bigvgan as cb
    from test_bigvgan_gan import _train_folder

    config, folder, *_, state = _train_folder(tmp_path_factory.mktemp("published"), NAME)
    torch.save(state, os.path.join(folder, cb.DISCRIMINATOR_FILE))
    assert sorted(os.listdir(folder)) == ["bigvgan_discriminator_optimizer.pt", "bigvgan_generator.pt",
                                          "config.json"]
    return config, folder


def test_published_folder_convert_synth_compare(published, tmp_path):
    from jaxvoc.io import checkpoint

    config, folder = published
    ckpt = tmp_path / "ckpt"
    proc = run_cli("convert", "bigvgan", folder, ckpt)
    assert proc.returncode == 0, proc.stderr
    assert "discriminator" in proc.stdout and "opt_state_g" in proc.stdout
    assert set(checkpoint.read_meta(str(ckpt))["trees"]) >= {"params", "discriminator", "opt_state_g"}

    mel = np.random.default_rng(0).normal(-6, 2, (config["num_mels"], 30)).astype(np.float32)
    np.save(tmp_path / "m.npy", mel)
    proc = run_cli("synth", ckpt, tmp_path / "m.npy", "-o", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    y, sr = sf.read(tmp_path / "out" / "m.wav")
    assert sr == config["sampling_rate"] and len(y) == 30 * config["hop_size"]

    report = tmp_path / "cmp.json"
    proc = run_cli("compare", "bigvgan", folder, "--report", report, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    run = json.loads(report.read_text())["runs"][0]
    # float32 on both sides through the same weights: agreement to rounding (measured SNR > 100 dB at this
    # width); a wrong tree, a lost filter or a layout slip gives an SNR near 0 dB
    assert run["snr_db"] > 60, run
    assert os.path.exists(tmp_path / "cmp.png")


def test_published_folder_demo_script(published, tmp_path):
    _, folder = published
    out = tmp_path / "demo"
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.run([sys.executable, "-m", "experiments.demo", "--ckpt", folder, "--out", str(out)],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "Traceback" not in proc.stderr
    for name in ("pytorch.wav", "jax.wav", "comparison.png", "report.json", "synth/speech_24000.wav"):
        assert os.path.exists(out / name), name
    report = json.loads((out / "report.json").read_text())
    assert report["snr_db"] > 60, report
    a, _ = sf.read(out / "pytorch.wav")
    b, _ = sf.read(out / "jax.wav")
    assert a.shape == b.shape
