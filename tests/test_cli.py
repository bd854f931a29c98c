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


# ----------------------------------------------------------------------------------------------------------
# issue #11: --version, plain --help, warnings, OS errors, all-or-nothing outputs, missing packages


def test_version_and_help_without_markup():
    import jaxvoc

    proc = run_cli("--version")
    assert proc.returncode == 0 and proc.stdout.strip() == f"jaxvoc {jaxvoc.__version__}" == "jaxvoc 0.1.0"
    for cmd in ([], ["convert"], ["synth"], ["compare"], ["train"], ["encode"], ["decode"]):
        proc = run_cli(*cmd, "--help")
        assert proc.returncode == 0, proc.stderr
        assert "``" not in proc.stdout and ":func:" not in proc.stdout and "`" not in proc.stdout.replace(
            "`pip", "").replace("`make", ""), proc.stdout
    enc = run_cli("encode", "--help").stdout
    assert "Each .npz holds tokens (int32" in enc  # the module docstring, plain


def test_warnings_reach_stderr_once_as_one_line():
    """Even under PYTHONWARNINGS=ignore (as the tests run the CLI), a warning reaches stderr once, one line;
    the filtered third-party chatter does not."""
    code = ("from jaxvoc import cli; cli.setup_warnings(); import warnings\n"
            "for _ in range(3): warnings.warn('first line\\n  second line', UserWarning)\n"
            "warnings.warn('old API', DeprecationWarning)\n"
            "import torch; torch.nn.utils.weight_norm(torch.nn.Conv1d(1, 1, 3))\n")
    env = dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=REPO)
    assert proc.returncode == 0, proc.stderr
    assert proc.stderr.splitlines() == ["jaxvoc: warning: first line second line", "jaxvoc: warning: old API"]


def test_bad_mel_layout_is_a_named_value_error(ckpt):
    import jaxvoc
    from jaxvoc.errors import UserError

    model = jaxvoc.load(ckpt)
    with pytest.raises(ValueError, match=r"expected \[B, frames, n_mels\].*official PyTorch layout") as e:
        model(np.zeros((1, SMALL["num_mels"], 20), np.float32))
    assert isinstance(e.value, UserError) and "\n" not in str(e.value)


def test_bad_output_path_below_a_file(ckpt, tmp_path):
    np.save(tmp_path / "m.npy", np.zeros((100, 20), np.float32))
    (tmp_path / "afile").write_text("x")
    proc = run_cli("synth", ckpt, tmp_path / "m.npy", "-o", tmp_path / "afile" / "sub")
    assert_user_error(proc, "not a folder", "afile", "choose another output path")
    proc = run_cli("synth", ckpt, tmp_path / "m.npy", "-o", tmp_path / "afile")
    assert_user_error(proc, "a file is in the way", "afile")


def _three_mels(tmp_path):
    for name in ("a", "b", "c"):
        np.save(tmp_path / f"{name}.npy", np.random.default_rng(0).normal(-6, 2, (100, 20)).astype(np.float32))
    return [tmp_path / f"{n}.npy" for n in ("a", "b", "c")]


def test_synth_all_or_nothing_when_the_last_rename_fails(ckpt, tmp_path):
    """The last output's target is a folder, so its rename fails after the others succeeded: they are rolled
    back (a new file removed, an earlier file restored), no temporary remains, one line names the target."""
    out = tmp_path / "out"
    (out / "c.wav").mkdir(parents=True)
    (out / "b.wav").write_bytes(b"earlier")
    proc = run_cli("synth", ckpt, *_three_mels(tmp_path), "-o", out)
    assert_user_error(proc, "is a directory", "c.wav", "a folder is in the way")
    assert sorted(os.listdir(out)) == ["b.wav", "c.wav"]
    assert (out / "b.wav").read_bytes() == b"earlier"


def test_synth_full_disk_and_out_of_memory_are_one_line(ckpt, tmp_path, monkeypatch, capsys):
    """ENOSPC while writing the second output (simulated in process, so that it runs without mount rights;
    test_synth_real_full_disk uses a real one),
    MemoryError and XLA's RESOURCE_EXHAUSTED: one line, exit 2, no output."""
    import errno

    import jax

    from jaxvoc import cli
    from jaxvoc.io import audio
    from jaxvoc.models import vocoder

    real, calls = audio.write_wav, []

    def full_disk(path, *a, **k):
        calls.append(path)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, "No space left on device", path)
        return real(path, *a, **k)

    mels = _three_mels(tmp_path)
    monkeypatch.setattr(audio, "write_wav", full_disk)
    assert cli.main(["synth", str(ckpt), *map(str, mels), "-o", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("jaxvoc: error: No space left on device") and "free some space" in err[0]
    assert not os.path.exists(tmp_path / "out")  # created for the run, removed with its temporaries
    monkeypatch.setattr(audio, "write_wav", real)

    for exc, needle in ((MemoryError(), "out of memory"),
                        (jax.errors.JaxRuntimeError("RESOURCE_EXHAUSTED: Out of memory allocating 9.0GiB"),
                         "accelerator ran out of memory")):
        def boom(self, *a, **k):
            raise exc

        monkeypatch.setattr(vocoder.Vocoder, "vocode", boom)
        assert cli.main(["synth", str(ckpt), str(mels[0]), "-o", str(tmp_path / "out2")]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and needle in err[0] and "--batch-size" in err[0], err
        assert not os.path.exists(tmp_path / "out2")


def test_compare_without_the_official_package_is_one_line(official_dir, tmp_path):
    from conftest import absent_packages_env

    env = absent_packages_env(tmp_path / "site", "bigvgan")
    env["PYTHONWARNINGS"] = "ignore"
    proc = subprocess.run([sys.executable, "-m", "jaxvoc.cli", "compare", "bigvgan", official_dir, "--report",
                           str(tmp_path / "r.json")], capture_output=True, text=True, cwd=REPO, env=env)
    assert_user_error(proc, "bigvgan is missing", "pip install jaxvoc[conversion]")
    assert not os.path.exists(tmp_path / "r.json") and not os.path.exists(tmp_path / "r.png")


def test_all_or_nothing_unit(tmp_path):
    """AllOrNothing (synth, encode, decode): an exception inside the block leaves nothing; success renames all."""
    from jaxvoc.io.atomic import AllOrNothing

    out = tmp_path / "new" / "deeper"
    with pytest.raises(RuntimeError):
        with AllOrNothing(str(out)) as w:
            open(w.stage(str(out / "x.txt")), "w").write("x")
            raise RuntimeError("failed half-way")
    assert not (tmp_path / "new").exists()
    with AllOrNothing(str(out)) as w:
        for n in ("x", "y"):
            open(w.stage(str(out / f"{n}.txt")), "w").write(n)
    assert sorted(os.listdir(out)) == ["x.txt", "y.txt"]


def test_atomic_dir_outlasts_writers_still_in_flight(tmp_path):
    """atomic_dir after a failure while another thread still writes into its temporary folder (as Orbax's
    tensorstore writes do after the error they raised; they recreated the folder after a single removal): the
    folder is gone when the block is left, and stays gone."""
    import threading
    import time

    from jaxvoc.io.atomic import atomic_dir

    stop = threading.Event()

    def late_writer(folder: str) -> None:  # what a write still in flight does: makes its path and writes
        end = time.monotonic() + 0.3
        i = 0
        while time.monotonic() < end and not stop.is_set():
            sub = os.path.join(folder, "ocdbt.process_0", "d")
            try:
                os.makedirs(sub, exist_ok=True)
                open(os.path.join(sub, f"chunk{i}"), "w").write("x" * 100)
            except OSError:
                pass
            i += 1

    threads = []
    with pytest.raises(RuntimeError):
        with atomic_dir(str(tmp_path / "ckpt")) as tmp:
            threads.append(threading.Thread(target=late_writer, args=(tmp,)))
            threads[0].start()
            raise RuntimeError("write failed half-way")
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
    stop.set()
    threads[0].join()
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)


def test_compare_report_below_a_file_fails_before_running(official_dir, tmp_path):
    (tmp_path / "afile").write_text("x")
    proc = run_cli("compare", "bigvgan", official_dir, "--report", tmp_path / "afile" / "r.json")
    assert_user_error(proc, "a file is in the way", "afile")
    assert "max abs error" not in proc.stdout  # refused before either model ran


def test_synth_real_full_disk(ckpt, tmp_path):
    """A real full disk: a 16 KiB tmpfs (needs root and mount rights; skipped otherwise). Found that libsndfile
    reported ENOSPC as "System error." (a traceback) until write_wav wrote through Python."""
    import shutil

    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a tmpfs needs root")
    mnt = tmp_path / "small"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=16k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mount not permitted here")
    try:
        proc = run_cli("synth", ckpt, *_three_mels(tmp_path), "-o", mnt / "out")
        assert_user_error(proc, "No space left on device", str(mnt / "out"), "free some space")
        assert os.listdir(mnt) == []  # no output, no temporary, not even the folder
    finally:
        subprocess.run(["umount", str(mnt)], check=True)
