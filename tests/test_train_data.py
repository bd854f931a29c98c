"""The training data pipeline against the official loaders (bigvgan.meldataset, waveglow.mel2samp), and its
determinism, resumability and per-process sharding."""

from __future__ import annotations

import argparse
import random

import numpy as np
import pytest
import soundfile as sf

from conftest import speech
from jaxvoc.train import data


@pytest.fixture(scope="module")
def wavs(tmp_path_factory):
    d = tmp_path_factory.mktemp("wavs")
    y24, y44, y22 = speech(24000), speech(44100), speech(22050)
    files = {
        "long24": (y24, 24000), "short24": (y24[5000:7000], 24000), "long44": (y44, 44100),
        "short44": (y44[9000:12000], 44100), "long22": (y22, 22050), "short22": (y22[3000:9000], 22050),
    }
    out = {}
    for name, (y, sr) in files.items():
        p = str(d / f"{name}.wav")
        sf.write(p, y, sr, subtype="PCM_16")
        out[name] = p
    return out


def test_filelists_as_official(tmp_path, wavs):
    from bigvgan.meldataset import get_dataset_filelist
    from waveglow.mel2samp import files_to_list

    wdir = tmp_path / "LibriTTS"
    (wdir / "spk").mkdir(parents=True)
    lines = ["spk/a|Some text.|Some text.", "spk/b|More|More", ""]
    for n in ("a", "b"):
        sf.write(str(wdir / "spk" / f"{n}.wav"), np.zeros(100, np.float32), 24000)
    (tmp_path / "train.txt").write_text("\n".join(lines))
    (tmp_path / "val.txt").write_text("spk/b|x|x\n")
    a = argparse.Namespace(input_training_file=str(tmp_path / "train.txt"), input_validation_file=str(tmp_path / "val.txt"),
                           input_wavs_dir=str(wdir), list_input_unseen_validation_file=[], list_input_unseen_wavs_dir=[])
    tr, va, _ = get_dataset_filelist(a)
    assert data.read_bigvgan_filelist(a.input_training_file, a.input_wavs_dir) == tr
    assert data.read_bigvgan_filelist(a.input_validation_file, a.input_wavs_dir) == va

    (tmp_path / "wg.txt").write_text("\n".join(wavs.values()) + "\n")
    assert data.read_plain_filelist(str(tmp_path / "wg.txt")) == [p for p in files_to_list(str(tmp_path / "wg.txt")) if p]


@pytest.mark.parametrize("name,start", [("long24", 12345), ("long24", 0), ("short24", None), ("long44", 20001),
                                        ("short44", None)])
def test_bigvgan_segments_equal_official(monkeypatch, wavs, name, start):
    """A training segment equals MelDataset's for the same crop start, bitwise: mono read, crop at the file's
    rate (ceil(segment * sr_file / sr) samples), zero padding of short files, librosa resampling, peak
    normalisation to 0.95. The mel of the segment (jaxvoc front-end, as the train step computes it) matches
    the loader's mel and loss mel."""
    import torch
    from bigvgan.env import AttrDict
    from bigvgan.meldataset import MelDataset

    from jaxvoc.dsp.stft import MelConfig, mel_spectrogram

    seg, sr = 8192, 24000
    h = AttrDict(dict(n_fft=1024, num_mels=100, hop_size=256, win_size=1024, sampling_rate=sr, fmin=0, fmax=None))
    ds = MelDataset([wavs[name]], h, seg, 1024, 100, 256, 1024, sr, 0, 8000, split=True, shuffle=False,
                    fmax_loss=None, device="cpu")
    calls = []
    monkeypatch.setattr(random, "randint", lambda a, b: calls.append((a, b)) or start)
    mel, audio, _, mel_loss = ds[0]
    f = data.probe([wavs[name]], sr, "bigvgan")[0]
    size = data.source_segment_size(seg, f.samplerate, sr)
    if start is None:
        assert calls == [] and f.frames < size
        start = 0
    else:  # the official range is [0, frames - size], both ends included; ours the same
        assert calls == [(0, f.frames - size)]
    ours = data.load_segment(f, seg, sr, "bigvgan", start)
    np.testing.assert_array_equal(ours, audio.numpy())
    assert ours.shape == (seg,) and abs(np.abs(ours).max() - 0.95) < 1e-6

    # mel: float32 FFT (pocketfft in both torch and XLA's CPU backend) rounding, on speech with a noise floor
    # (no bins of pure rounding noise): 2e-4 in log-mel (natural log) is ~0.002 dB.
    for cfg, ref in ((MelConfig(sr, 1024, 100, 256, 1024, 0, 8000), mel),
                     (MelConfig(sr, 1024, 100, 256, 1024, 0, None), mel_loss)):
        jm = np.asarray(mel_spectrogram(ours[None], cfg))[0].T
        assert jm.shape == tuple(ref.shape)
        assert np.abs(jm - ref.numpy()).max() < 2e-4


@pytest.mark.parametrize("name,start", [("long22", 4321), ("short22", None)])
def test_waveglow_segments_equal_official(monkeypatch, tmp_path, wavs, name, start):
    """A WaveGlow segment equals Mel2Samp's for the same crop start: int16 / 32768, crop or zero-pad at the
    end, no normalisation."""
    from waveglow.mel2samp import Mel2Samp

    import tacotron2.layers

    orig = tacotron2.layers.librosa_mel_fn
    monkeypatch.setattr(tacotron2.layers, "librosa_mel_fn",  # librosa >= 0.10 takes keywords only
                        lambda sr, n_fft, n_mels, fmin, fmax: orig(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax))
    (tmp_path / "files.txt").write_text(wavs[name] + "\n")
    seg = 16000
    ds = Mel2Samp(str(tmp_path / "files.txt"), seg, 1024, 256, 1024, 22050, 0.0, 8000.0)
    calls = []
    monkeypatch.setattr(random, "randint", lambda a, b: calls.append((a, b)) or start)
    _, audio = ds[0]
    f = data.probe([wavs[name]], 22050, "waveglow")[0]
    if start is None:
        assert calls == [] and f.frames < seg
        start = 0
    else:
        assert calls == [(0, f.frames - seg)]
    np.testing.assert_array_equal(data.load_segment(f, seg, 22050, "waveglow", start), audio.numpy())


def test_waveglow_style_rejects_other_rates(wavs):
    from jaxvoc.errors import UserError

    with pytest.raises(UserError, match="44100 Hz.*22050"):
        data.probe([wavs["long44"]], 22050, "waveglow")


def _take(it, n):
    return [next(it).copy() for _ in range(n)]


def test_pipeline_deterministic_resumable_sharded(wavs):
    files = data.probe([wavs[k] for k in ("long24", "short24", "long44", "short44")], 24000, "bigvgan")
    kw = dict(segment_size=2048, sampling_rate=24000, batch_size=3, style="bigvgan", num_threads=2)
    a = _take(iter(data.train_dataset(files, seed=5, **kw)), 4)
    b = _take(iter(data.train_dataset(files, seed=5, **kw)), 4)
    c = _take(iter(data.train_dataset(files, seed=6, **kw)), 4)
    assert all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c))
    assert all(x.shape == (3, 2048) and x.dtype == np.float32 for x in a)
    # more batches than one epoch (4 files): the epochs are reshuffled, segments redrawn
    # resume: the iterator state after 2 batches continues exactly
    it = iter(data.train_dataset(files, seed=5, **kw))
    _take(it, 2)
    state = it.get_state()
    rest = _take(it, 2)
    it2 = iter(data.train_dataset(files, seed=5, **kw))
    it2.set_state(state)
    assert all(np.array_equal(x, y) for x, y in zip(rest, _take(it2, 2)))
    assert all(np.array_equal(x, y) for x, y in zip(rest, a[2:]))
    # several processes: process p's rows of the global batch (see test_global_batch_split_over_processes)
    for p in range(3):
        it = iter(data.train_dataset(files, seed=5, process_index=p, process_count=3, **kw))
        assert all(np.array_equal(next(it)[0], x[p]) for x in a)


def test_global_batch_split_over_processes(tmp_path):
    """The data stream is a function of the seed and the global step alone (issue 14): with 1, 2 or 4
    processes the concatenated per-process rows equal the single-process global batch, bitwise; each process
    reads its own contiguous block of rows; every epoch visits every file once (files told apart by their
    constant sample value), and the epochs are reshuffled."""
    n_files, seg, gbs = 6, 256, 4
    paths = []
    for k in range(n_files):
        paths.append(str(tmp_path / f"f{k}.wav"))
        sf.write(paths[-1], np.full(seg * (2 + k), (k + 1) / 64, np.float32), 24000, subtype="FLOAT")
    files = data.probe(paths, 24000, "waveglow")
    kw = dict(segment_size=seg, sampling_rate=24000, batch_size=gbs, seed=11, style="waveglow", num_threads=1)
    n_batches = 9  # 36 rows: 6 epochs
    single = _take(iter(data.train_dataset(files, **kw)), n_batches)
    assert all(b.shape == (gbs, seg) for b in single)
    for count in (2, 4):
        parts = [_take(iter(data.train_dataset(files, process_index=p, process_count=count, **kw)), n_batches)
                 for p in range(count)]
        assert all(x.shape == (gbs // count, seg) for pp in parts for x in pp)
        for b in range(n_batches):
            np.testing.assert_array_equal(np.concatenate([pp[b] for pp in parts]), single[b])
    rows = np.concatenate(single)
    ids = np.rint(rows[:, 0] * 64).astype(int) - 1
    assert np.all(rows == rows[:, :1])  # one file per row
    epochs = ids.reshape(-1, n_files)
    assert all(sorted(e) == list(range(n_files)) for e in epochs), epochs  # each epoch covers every file once
    assert len({tuple(e) for e in epochs}) > 1  # reshuffled
    # the per-process blocks of one global batch are disjoint rows of the stream, and the run is the same
    # for another process count only if the global batch size is the same: a bad split is refused
    from jaxvoc.errors import UserError

    with pytest.raises(UserError, match="does not split over 3 processes"):
        data.train_dataset(files, process_index=0, process_count=3, **kw)


def test_validation_split_and_clip(wavs):
    train, val = data.split_validation(sorted(wavs.values()), 2, seed=1)
    assert len(val) == 2 and set(train).isdisjoint(val) and len(train) == len(wavs) - 2
    f = data.probe([wavs["long44"]], 24000, "bigvgan")[0]
    clip = data.load_validation_clip(f, 24000, 256, "bigvgan")
    assert len(clip) % 256 == 0 and abs(np.abs(clip).max() - 0.95) < 1e-6
