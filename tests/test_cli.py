"""The jaxvoc command line with BigVGAN: convert, synth (bucketing, compile count), and bad input — every bad
input gives one line on stderr, exit code 2, no traceback and no output file."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import REPO, assert_user_error, fixture_path, run_cli
from conversion import bigvgan as cb
from jaxvoc.models.bigvgan import BigVGANConfig
from jaxvoc.io.batching import bucket_length

# A narrow, shallow config of the official schema: the CLI's mechanics, not the numerics (test_bigvgan.py),
# are under test here, and it compiles in seconds.
SMALL = dict(BigVGANConfig.official("bigvgan_base_24khz_100band").to_dict(), upsample_initial_channel=32,
             resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]])


@pytest.fixture(scope="module")
def official_dir(tmp_path_factory):
    return cb.write_official_folder(str(tmp_path_factory.mktemp("official") / "model"), SMALL, seed=5)


@pytest.fixture(scope="module")
def ckpt(official_dir, tmp_path_factory):
    out = str(tmp_path_factory.mktemp("ckpt") / "bigvgan")
    proc = run_cli("convert", "bigvgan", official_dir, out)
    assert proc.returncode == 0, proc.stderr
    assert "converted bigvgan" in proc.stdout
    return out


def test_help_of_every_subcommand():
    for cmd in ([], ["convert"], ["synth"], ["compare"]):
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0 and "usage:" in proc.stdout, proc.stderr


def test_synth_audio_and_mels_with_few_compilations(ckpt, tmp_path):
    """20 mels of 20 lengths compile once per length bucket, not 20 times; outputs have the input's length."""
    rng = np.random.default_rng(0)
    lengths = list(range(20, 420, 20))
    inputs = []
    for i, n in enumerate(lengths):
        path = tmp_path / f"mel{i:02d}.npy"
        np.save(path, rng.normal(-6, 2, (SMALL["num_mels"], n)).astype(np.float32) if i % 2 else
                rng.normal(-6, 2, (1, SMALL["num_mels"], n)).astype(np.float32))
        inputs.append(str(path))
    out = tmp_path / "out"
    proc = run_cli("synth", ckpt, *inputs, "-o", out, "--batch-size", "4")
    assert proc.returncode == 0, proc.stderr
    buckets = {bucket_length(n) for n in lengths}
    m = re.search(r"(\d+) compilation\(s\) of the bigvgan generator for (\d+) length bucket", proc.stdout)
    assert m, proc.stdout
    assert int(m.group(1)) == len(buckets) == int(m.group(2))
    assert len(buckets) <= 9  # a sqrt(2) ladder spans a 20x length range in log(20)/log(sqrt(2)) ~ 8.6 steps
    for i, n in enumerate(lengths):
        y, sr = sf.read(out / f"mel{i:02d}.wav")
        assert sr == SMALL["sampling_rate"] and len(y) == n * SMALL["hop_size"]


def test_synth_bucketed_and_unbucketed_equal_the_official_model(official_dir, ckpt, tmp_path):
    """The default (length buckets) and --no-bucket both give the official model's output for the mel alone
    (per-item lengths; tests/test_synth_exact.py does this for every generator variant at published kernel
    sizes); --no-bucket also equals a direct unpadded call of the loaded model."""
    import jaxvoc
    from conversion.report import snr_db

    mel = np.random.default_rng(1).normal(-6, 2, (SMALL["num_mels"], 45)).astype(np.float32)
    np.save(tmp_path / "m.npy", mel)
    for flag, name in (("--no-bucket", "exact"), (None, "bucketed")):
        args = ["synth", ckpt, tmp_path / "m.npy", "-o", tmp_path / name, "--subtype", "FLOAT"]
        proc = run_cli(*(args + ([flag] if flag else [])))
        assert proc.returncode == 0, proc.stderr
    exact, _ = sf.read(tmp_path / "exact" / "m.wav", dtype="float32")
    bucketed, _ = sf.read(tmp_path / "bucketed" / "m.wav", dtype="float32")
    direct = np.asarray(jaxvoc.load(ckpt)(mel.T))
    np.testing.assert_array_equal(exact, direct)
    sd = torch.load(os.path.join(official_dir, cb.GENERATOR_FILE), weights_only=True)["generator"]
    with torch.inference_mode():
        ref = cb.official_model(SMALL, sd)(torch.from_numpy(mel[None]))[0, 0].numpy()
        ref64 = cb.official_model(SMALL, sd).double()(torch.from_numpy(mel[None]).double())[0, 0].numpy()
    for out in (exact, bucketed):
        # the acceptance (tests/test_bigvgan.py): 110 dB from the official float32 output (float32
        # rounding alone), and no further from the official float64 run than it is (3 dB), or >= 130 dB
        assert out.shape == ref.shape
        assert snr_db(out, ref) >= 110, snr_db(out, ref)
        assert snr_db(out, ref64) >= min(snr_db(ref, ref64) - 3.0, 130), (snr_db(out, ref64), snr_db(ref, ref64))


def test_synth_resamples_and_downmixes_audio_with_a_warning(ckpt, tmp_path):
    y, sr = sf.read(fixture_path("speech_44100.wav"), dtype="float32")
    sf.write(tmp_path / "stereo.wav", np.stack([y, 0.5 * y], axis=1), sr)
    proc = run_cli("synth", ckpt, tmp_path / "stereo.wav", fixture_path("speech_24000.wav"), "-o", tmp_path / "o")
    assert proc.returncode == 0, proc.stderr
    assert "down-mixed" in proc.stderr and "resampled from 44100 Hz to 24000 Hz" in proc.stderr
    a, sr_a = sf.read(tmp_path / "o" / "stereo.wav")
    assert sr_a == 24000 and abs(len(a) - len(y) * 24000 / 44100) <= 2 * SMALL["hop_size"]
    assert os.path.exists(tmp_path / "o" / "speech_24000.wav")


# ----------------------------------------------------------------------------------------------------------
# Bad input: one line, exit 2, no traceback, nothing written


def _bad_synth(ckpt, tmp_path, make):
    inp = make(tmp_path)
    out = tmp_path / "out"
    proc = run_cli("synth", ckpt, inp, "-o", out)
    assert not out.exists() or not any(out.iterdir())
    return proc


def test_bad_mel_band_count(ckpt, tmp_path):
    proc = _bad_synth(ckpt, tmp_path, lambda d: _save(d / "m.npy", np.zeros((80, 30), np.float32)))
    assert_user_error(proc, "80 mel bands", "100")


def test_bad_mel_nan_and_inf(ckpt, tmp_path):
    for v in (np.nan, np.inf):
        m = np.zeros((100, 30), np.float32)
        m[3, 4] = v
        proc = _bad_synth(ckpt, tmp_path, lambda d: _save(d / "m.npy", m))
        assert_user_error(proc, "NaN or Inf")


def test_bad_mel_4d(ckpt, tmp_path):
    proc = _bad_synth(ckpt, tmp_path, lambda d: _save(d / "m.npy", np.zeros((1, 1, 100, 30), np.float32)))
    assert_user_error(proc, "shape (1, 1, 100, 30)")


def test_bad_empty_audio(ckpt, tmp_path):
    def make(d):
        sf.write(d / "empty.wav", np.zeros(0, np.float32), 24000)
        return d / "empty.wav"

    assert_user_error(_bad_synth(ckpt, tmp_path, make), "no samples")


def test_bad_text_file_named_wav(ckpt, tmp_path):
    def make(d):
        (d / "notes.wav").write_text("this is not audio\n")
        return d / "notes.wav"

    assert_user_error(_bad_synth(ckpt, tmp_path, make), "cannot read", "notes.wav")


def test_bad_missing_input(ckpt, tmp_path):
    assert_user_error(_bad_synth(ckpt, tmp_path, lambda d: d / "nope.wav"), "input not found")


def test_bad_input_among_good_ones_writes_nothing(ckpt, tmp_path):
    np.save(tmp_path / "good.npy", np.zeros((100, 20), np.float32))
    proc = run_cli("synth", ckpt, tmp_path / "good.npy", tmp_path / "missing.npy", "-o", tmp_path / "out")
    assert_user_error(proc, "input not found")
    assert not (tmp_path / "out" / "good.wav").exists()


def test_bad_missing_checkpoint(tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((100, 20), np.float32))
    proc = run_cli("synth", tmp_path / "no_ckpt", tmp_path / "m.npy", "-o", tmp_path / "out")
    assert_user_error(proc, "checkpoint not found")
    assert not (tmp_path / "out").exists()


def _copy_official(official_dir, tmp_path):
    import shutil

    dst = tmp_path / "src"
    shutil.copytree(official_dir, dst)
    return dst


def _bad_convert(src, tmp_path, kind="bigvgan"):
    out = tmp_path / "converted"
    proc = run_cli("convert", kind, src, out)
    assert not out.exists()
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".tmp-")]
    return proc


def test_bad_truncated_pt(official_dir, tmp_path):
    src = _copy_official(official_dir, tmp_path)
    gen = src / cb.GENERATOR_FILE
    data = gen.read_bytes()
    gen.write_bytes(data[: len(data) // 3])
    assert_user_error(_bad_convert(src, tmp_path), "truncated")


def test_bad_generator_missing_a_tensor(official_dir, tmp_path):
    src = _copy_official(official_dir, tmp_path)
    obj = torch.load(src / cb.GENERATOR_FILE, weights_only=True)
    del obj["generator"]["resblocks.2.convs1.1.weight_v"]
    torch.save(obj, src / cb.GENERATOR_FILE)
    assert_user_error(_bad_convert(src, tmp_path), "missing 1", "resblocks.2.convs1.1.weight_v")


def test_bad_config_that_does_not_fit_the_weights(official_dir, tmp_path):
    import json

    src = _copy_official(official_dir, tmp_path)
    cfg = json.loads((src / "config.json").read_text())
    cfg["upsample_initial_channel"] = 48
    (src / "config.json").write_text(json.dumps(cfg))
    assert_user_error(_bad_convert(src, tmp_path), "wrong shape", "conv_pre.weight_v")


def test_bad_source_without_config(official_dir, tmp_path):
    src = _copy_official(official_dir, tmp_path)
    os.remove(src / "config.json")
    assert_user_error(_bad_convert(src, tmp_path), "no config.json")


def test_bad_unknown_model_kind(official_dir, tmp_path):
    assert_user_error(_bad_convert(official_dir, tmp_path, kind="hifigan"), "unknown model kind 'hifigan'")


def test_bad_pickled_object_refused_by_weights_only_load(official_dir, tmp_path):
    """A generator file that needs the full unpickler is refused, and its payload never runs."""
    src = _copy_official(official_dir, tmp_path)
    marker = tmp_path / "pwned"

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {marker}",))

    torch.save({"generator": Payload()}, src / cb.GENERATOR_FILE)
    assert_user_error(_bad_convert(src, tmp_path), "weights-only")
    assert not marker.exists()


def test_bad_arguments_are_one_line():
    proc = run_cli("synth")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    proc = run_cli("frobnicate")
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


def test_jaxvoc_never_imports_torch():
    """Importing every jaxvoc module (the CLI included) leaves torch unimported."""
    code = ("import importlib, pkgutil, sys, jaxvoc\n"
            "for m in pkgutil.walk_packages(jaxvoc.__path__, 'jaxvoc.'):\n"
            "    importlib.import_module(m.name)\n"
            "import jaxvoc.cli; jaxvoc.cli.build_parser()\n"
            "assert 'torch' not in sys.modules, 'torch was imported'\n"
            "print('modules', sum(1 for n in sys.modules if n.startswith('jaxvoc')))\n")
    env = dict(os.environ, PYTHONPATH=REPO)
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert int(proc.stdout.split()[-1]) >= 8


def _save(path, arr):
    np.save(path, arr)
    return path
