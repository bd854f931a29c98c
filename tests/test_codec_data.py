"""The codec's training data and config against NeMo 3.0.0: manifests and duration filtering as NeMo's
VocoderDataset, crops / whole short clips / lengths / resampling as its ``sample_audio`` and collate, the
validation clips as its ``load_audio``, the epoch structure and the discriminator schedule as
``AudioCodecModel``; the copied LFR YAML read with NeMo's config library (OmegaConf) and the values the
issue names."""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import types

import numpy as np
import pytest
import soundfile as sf

from conftest import REPO, speech
from jaxvoc.errors import UserError
from jaxvoc.train import data

LFR_YAML = os.path.join(REPO, "experiments", "training", "configs", "codec_lfr_22050.yaml")
SMOKE_YAML = os.path.join(REPO, "experiments", "training", "configs", "codec_tiny_smoke.yaml")
SR, N = 22050, 8192  # a small crop keeps NeMo's and our reads short


@pytest.fixture(scope="module")
def audio_dir(tmp_path_factory):
    """Speech files at 22.05 and 44.1 kHz, long (crops) and short (whole), 16-bit, 24-bit and float."""
    d = tmp_path_factory.mktemp("codec_audio")
    (d / "sub").mkdir()
    y22, y44 = speech(22050), speech(44100)
    files = {"long22.wav": (y22, 22050, "PCM_16"), "sub/short22.wav": (y22[3000:7000], 22050, "PCM_16"),
             "long44.wav": (y44, 44100, "PCM_24"), "short44.wav": (y44[9000:14000], 44100, "PCM_16"),
             "float22.wav": (y22[:20000] * 0.5, 22050, "FLOAT"),
             # exactly the crop's source size at 44.1 kHz: NeMo reads it whole
             "exact44.wav": (y44[:data.codec_source_size(N, 44100, SR)], 44100, "PCM_16")}
    for name, (y, sr, sub) in files.items():
        sf.write(str(d / name), y, sr, subtype=sub)
    return d


def _nemo():
    from nemo.collections.tts.data import vocoder_dataset
    from nemo.collections.tts.parts.utils import tts_dataset_utils

    return vocoder_dataset, tts_dataset_utils


def _write_manifest(path, entries):
    lines = [json.dumps(e) for e in entries]
    lines.insert(2, "   ")  # blank lines are skipped, as NeMo's read_manifest does
    path.write_text("\n".join(lines) + "\n\n")
    return str(path)


def test_manifest_and_duration_filter_as_nemo(tmp_path, audio_dir):
    """The kept entries and their resolved paths equal NeMo's VocoderDataset's (read_manifest,
    filter_dataset_by_duration, get_audio_filepaths) for min/max duration set and unset."""
    vocoder_dataset, utils = _nemo()
    entries = [
        {"audio_filepath": "long22.wav", "duration": 2.5, "text": "x"},
        {"audio_filepath": "sub/short22.wav", "duration": 0.18},  # below min_duration 0.4
        {"audio_filepath": "./long44.wav", "duration": 2.5},
        {"audio_filepath": "short44.wav", "duration": 0.4},  # == min_duration: kept (NeMo drops d < min)
        {"audio_filepath": str(audio_dir / "float22.wav"), "duration": 0.9},  # absolute, below audio_dir
        {"audio_filepath": "exact44.wav", "duration": 12.0},  # above max_duration 10
    ]
    manifest = _write_manifest(tmp_path / "train.json", entries)
    for lo, hi in ((0.4, 10.0), (None, None), (0.0, 2.0)):
        ds = vocoder_dataset.VocoderDataset({"ds": {"manifest_path": manifest, "audio_dir": str(audio_dir)}},
                                            sample_rate=SR, n_samples=N, min_duration=lo, max_duration=hi)
        want = [str(utils.get_audio_filepaths(s.manifest_entry, s.audio_dir)[0]) for s in ds.data_samples]
        ours = data.manifest_entries(manifest, str(audio_dir), lo, hi)
        assert [e.audio_filepath for e in ours] == want
        assert [e.duration for e in ours] == [s.manifest_entry["duration"] for s in ds.data_samples]
    assert len(data.manifest_entries(manifest, str(audio_dir), 0.4, 10.0)) == 4  # the test can fail
    # jaxvoc: without audio_dir, relative paths are taken from the manifest's folder
    assert data.manifest_entries(manifest, None)[0].audio_filepath == str(tmp_path / "long22.wav")
    # one-line errors for what NeMo would crash on or jaxvoc does not read
    (tmp_path / "bad.json").write_text('{"audio_filepath": "a.wav", "duration": 1}\nnot json\n')
    with pytest.raises(UserError, match="line 2 is not JSON"):
        data.manifest_entries(str(tmp_path / "bad.json"), None)
    (tmp_path / "nodur.json").write_text('{"audio_filepath": "a.wav"}\n')
    with pytest.raises(UserError, match="lacks duration"):
        data.manifest_entries(str(tmp_path / "nodur.json"), None)
    (tmp_path / "off.json").write_text('{"audio_filepath": "a.wav", "duration": 1, "offset": -0.5}\n')
    with pytest.raises(UserError, match="offset must be a number of seconds >= 0"):
        data.manifest_entries(str(tmp_path / "off.json"), None)


@pytest.mark.parametrize("name,start", [("long22.wav", 12345), ("long22.wav", 0), ("long44.wav", 20001),
                                        ("sub/short22.wav", None), ("short44.wav", None), ("float22.wav", 777),
                                        ("exact44.wav", None)])
def test_segments_equal_nemo(monkeypatch, tmp_path, audio_dir, name, start):
    """One training example equals NeMo's VocoderDataset item for the same crop start, bitwise, and its
    length; collated with a long item, the short one is zero-padded after its length as NeMo's collate pads
    it. The crop start range is NeMo's randint(0, len - ceil(n * sr_file / sr)); a file no longer than that
    comes whole. A same-rate crop is the contiguous slice of the file."""
    vocoder_dataset, _ = _nemo()
    path = str(audio_dir / name)
    manifest = _write_manifest(tmp_path / "m.json", [{"audio_filepath": path, "duration": 1.0}])
    ds = vocoder_dataset.VocoderDataset({"ds": {"manifest_path": manifest, "audio_dir": str(audio_dir)}},
                                        sample_rate=SR, n_samples=N)
    calls = []
    monkeypatch.setattr(random, "randint", lambda a, b: calls.append((a, b)) or start)
    item = ds[0]
    f = data.probe([path], SR, "codec")[0]
    size = data.codec_source_size(N, f.samplerate, SR)
    if start is None:
        assert calls == [] and f.frames <= size
        start = 0
    else:
        assert calls == [(0, f.frames - size)]
        rng = np.random.default_rng(0)  # ours draws from the same range, both ends included
        draws = {data.codec_crop_start(rng, f, N, SR) for _ in range(2000)}
        assert min(draws) >= 0 and max(draws) <= f.frames - size
    audio, n = data.load_codec_segment(f, N, SR, start)
    ref = item["audio"].numpy()
    assert n == min(item["audio_len"], N) and len(ref) == item["audio_len"]
    assert audio.shape == (N,) and audio.dtype == np.float32
    np.testing.assert_array_equal(audio[:n], ref[:n])
    assert not audio[n:].any()
    if f.samplerate == SR and f.frames > N:
        y, _ = sf.read(path, dtype="int32")
        np.testing.assert_array_equal(audio, (y[start:start + N].astype(np.float32) * np.float32(2.0 ** -31)))
    if n < N:  # NeMo's collate next to a full crop: zero padding after the length, the same lengths
        monkeypatch.setattr(random, "randint", lambda a, b: 0)
        long_ds = vocoder_dataset.VocoderDataset(
            {"ds": {"manifest_path": _write_manifest(tmp_path / "l.json", [
                {"audio_filepath": str(audio_dir / "long22.wav"), "duration": 2.0}]), "audio_dir": str(audio_dir)}},
            sample_rate=SR, n_samples=N)
        batch = ds.collate_fn([long_ds[0], item])
        assert batch["audio"].shape == (2, N) and batch["audio_lens"].tolist() == [N, n]
        np.testing.assert_array_equal(audio, batch["audio"][1].numpy())


@pytest.mark.parametrize("name,offset,duration,draw", [("long22.wav", 0.5, 1.5, 1.0), ("long44.wav", 1.0, 0.2, 1.0),
                                                      ("long22.wav", 3.4, 0.1, 3.4), ("short44.wav", 0.02, 0.05, 0.02)])
@pytest.mark.filterwarnings("ignore:get_duration")  # NeMo's call of a renamed librosa argument
def test_offset_entries_equal_nemo(monkeypatch, tmp_path, audio_dir, name, offset, duration, draw):
    """Manifest entries with an offset (segments of a longer file), as NeMo's sample_audio: the crop time is
    drawn from NeMo's range [offset, max(offset, min(offset + duration, file - 0.1 s) - n / sr)], the start
    is floor(time * sr_file), a short segment's crop runs on into the file, a file shorter than the crop
    comes whole. Where NeMo gives up (a start past len - size: the segment at 3.4 s of a 3.55 s file) jaxvoc
    takes the last crop that fits."""
    vocoder_dataset, _ = _nemo()
    manifest = _write_manifest(tmp_path / "o.json", [{"audio_filepath": name, "duration": duration, "offset": offset}])
    ds = vocoder_dataset.VocoderDataset({"ds": {"manifest_path": manifest, "audio_dir": str(audio_dir)}},
                                        sample_rate=SR, n_samples=N)
    calls = []
    monkeypatch.setattr(random, "uniform", lambda a, b: calls.append((a, b)) or draw)
    [f] = data.probe_manifest(data.manifest_entries(manifest, str(audio_dir)), SR)
    assert f.offset == offset and f.duration == duration
    size = data.codec_source_size(N, f.samplerate, SR)
    start = data.offset_crop_start(f, draw, N, SR)
    if size < f.frames and math.floor(draw * f.samplerate) > f.frames - size:
        with pytest.raises(ValueError, match="Failed to segment"):
            ds[0]
        assert start == f.frames - size
        return
    item = ds[0]
    assert calls and calls[0] == data.codec_offset_range(f, N, SR)
    audio, n = data.load_codec_segment(f, N, SR, start if size < f.frames else 0)
    assert n == min(len(item["audio"]), N)
    np.testing.assert_array_equal(audio[:n], item["audio"].numpy()[:n])
    if size < f.frames:  # NeMo draws a time and starts there, also for a segment shorter than the crop
        assert n == N and start == math.floor(draw * f.samplerate)
        lo, hi = data.codec_offset_range(f, N, SR)  # the pipeline's own draws stay in that range
        rng = np.random.default_rng(1)
        starts = [data.codec_crop_start(rng, f, N, SR) for _ in range(200)]
        assert min(starts) >= math.floor(lo * f.samplerate) and max(starts) <= math.floor(hi * f.samplerate)
    vds = vocoder_dataset.VocoderDataset({"ds": {"manifest_path": manifest, "audio_dir": str(audio_dir)}},
                                         sample_rate=SR, n_samples=None, trunc_duration=10.0)
    np.testing.assert_array_equal(data.load_codec_clip(f, SR, 10.0), vds[0]["audio"].numpy())


def test_validation_clips_equal_nemo(tmp_path, audio_dir):
    """Whole clips (n_samples null) as NeMo's validation VocoderDataset with trunc_duration: the first
    min(duration, trunc) seconds, resampled."""
    vocoder_dataset, _ = _nemo()
    entries = [{"audio_filepath": "long22.wav", "duration": 2.4}, {"audio_filepath": "long44.wav", "duration": 2.4},
               {"audio_filepath": "short44.wav", "duration": 0.0}]
    manifest = _write_manifest(tmp_path / "val.json", entries)
    ds = vocoder_dataset.VocoderDataset({"ds": {"manifest_path": manifest, "audio_dir": str(audio_dir)}},
                                        sample_rate=SR, n_samples=None, trunc_duration=0.5)
    files = data.probe_manifest(data.manifest_entries(manifest, str(audio_dir)), SR)
    for i, f in enumerate(files):
        ref = ds[i]["audio"].numpy()
        np.testing.assert_array_equal(data.load_codec_clip(f, SR, 0.5), ref)
    assert len(ds[0]["audio"]) == int(0.5 * SR)  # truncated, so the test can fail
    # a folder file (no manifest duration): its own length, truncated the same way
    g = data.probe([str(audio_dir / "long22.wav")], SR, "codec")[0]
    np.testing.assert_array_equal(data.load_codec_clip(g, SR, 0.5), ds[0]["audio"].numpy())


def test_pipeline_epochs_lengths_processes(tmp_path):
    """The grain stream of codec batches: dicts of audio [B, N] and audio_len [B]; each epoch a new
    permutation cut into len(files) // B whole batches (NeMo's drop_last), so step s is batch s % S of epoch
    s // S; a function of the seed and the global step alone (processes, resume)."""
    n_files, seg, gbs = 7, 256, 2
    paths = []
    for k in range(n_files):  # files told apart by their constant value; two are shorter than the crop
        paths.append(str(tmp_path / f"f{k}.wav"))
        sf.write(paths[-1], np.full(seg * (2 + k) if k > 1 else 100 + 50 * k, (k + 1) / 64, np.float32), SR,
                 subtype="PCM_16")
    files = data.probe(paths, SR, "codec")
    kw = dict(segment_size=seg, sampling_rate=SR, batch_size=gbs, seed=3, style="codec", num_threads=1)
    S = data.steps_per_epoch(n_files, gbs)
    assert S == 3
    n_batches = 4 * S
    it = iter(data.train_dataset(files, **kw))
    single = [next(it) for _ in range(n_batches)]
    for b in single:
        assert set(b) == {"audio", "audio_len"} and b["audio"].shape == (gbs, seg) and b["audio_len"].shape == (gbs,)
        assert b["audio"].dtype == np.float32 and b["audio_len"].dtype == np.int32
    audio = np.concatenate([b["audio"] for b in single])
    lens = np.concatenate([b["audio_len"] for b in single])
    ids = np.rint(audio[:, 0] * 64).astype(int) - 1
    for row, k, n in zip(audio, ids, lens):
        assert n == min(seg, 100 + 50 * k if k <= 1 else seg)  # short files whole, with their length
        assert np.all(row[:n] == row[0]) and not row[n:].any()
    epochs = ids.reshape(-1, S * gbs)  # each epoch: S * B distinct files, one left out, reshuffled
    assert all(len(set(e)) == S * gbs for e in epochs)
    assert len({tuple(e) for e in epochs}) > 1
    assert data.epoch_and_batch(7, S) == (2, 1)
    # several processes: the concatenated rows equal the single-process global batch
    parts = [[next(i) for _ in range(n_batches)] for i in
             (iter(data.train_dataset(files, process_index=p, process_count=2, **kw)) for p in range(2))]
    for b in range(n_batches):
        for key in ("audio", "audio_len"):
            np.testing.assert_array_equal(np.concatenate([parts[0][b][key], parts[1][b][key]]), single[b][key])
    # resume: the iterator state continues exactly
    it = iter(data.train_dataset(files, **kw))
    [next(it) for _ in range(5)]
    state = it.get_state()
    it2 = iter(data.train_dataset(files, **kw))
    it2.set_state(state)
    np.testing.assert_array_equal(next(it2)["audio"], single[5]["audio"])
    with pytest.raises(UserError, match="do not fill one batch"):
        data.steps_per_epoch(3, 4)


def test_discriminator_schedule_as_nemo():
    """should_update_disc equals AudioCodecModel.should_update_disc (batch_idx within the epoch, the
    period, the start epoch) for the LFR config (1 of every 2) and others."""
    from nemo.collections.tts.models.audio_codec import AudioCodecModel

    from jaxvoc.train import config as config_lib

    cfg = config_lib.load(LFR_YAML)
    assert [cfg.codec.should_update_disc(i) for i in range(4)] == [True, False, True, False]
    for per, period, start in ((1, 2, 0), (2, 3, 1), (1, 1, 0), (0, 2, 0)):
        over = [f"model.disc_updates_per_period={per}", f"model.disc_update_period={period}"]
        c = config_lib.load(LFR_YAML, over).codec
        c = dataclasses.replace(c, hyper=dataclasses.replace(c.hyper, disc_start_epoch=start))
        for epoch in range(3):
            for i in range(7):
                fake = types.SimpleNamespace(current_epoch=epoch, disc_start_epoch=start, disc_update_period=period,
                                             disc_updates_per_period=per)
                assert c.should_update_disc(i, epoch) == AudioCodecModel.should_update_disc(fake, i)


def test_lfr_config_values():
    """The copied NeMo YAML read by the config dataclass: every value the issue names, checked against the
    YAML as OmegaConf (NeMo's config library) resolves it, and against the literal values."""
    from omegaconf import OmegaConf

    from jaxvoc.train import config as config_lib
    from nemo.core.optim.lr_scheduler import EPOCH_SCHEDULERS

    cfg = config_lib.load(LFR_YAML)
    y = OmegaConf.load(LFR_YAML)
    m = y.model
    c = cfg.codec
    assert cfg.kind == "codec"
    assert cfg.sampling_rate == c.sample_rate == y.sample_rate == 22050
    assert c.samples_per_frame == y.samples_per_frame == 1024
    assert cfg.segment_size == y.train_n_samples == 24576
    assert cfg.batch_size == y.batch_size == 16
    ds = c.train_ds.dataset
    assert ds.min_duration == m.train_ds.dataset.min_duration == 0.4 and ds.max_duration is None
    assert c.train_ds.drop_last is True and c.validation_ds.dataset.trunc_duration == 10.0
    assert c.codec.encoder.down_sample_rates == tuple(y.down_sample_rates) == (2, 2, 4, 8, 8)
    assert c.codec.decoder.up_sample_rates == tuple(y.up_sample_rates)
    assert (c.codec.num_groups, c.codec.num_levels_per_group) == (y.num_codebooks, tuple(m.vector_quantizer.num_levels_per_group))
    assert c.codec.encoder.base_channels == 48 and c.codec.decoder.base_channels == 1024
    o = c.optim
    assert o.name == "Adam" and m.optim._target_ == "torch.optim.Adam"
    assert o.lr == m.optim.lr == 2e-4 and isinstance(o.lr, float)  # YAML 1.1 would read '2e-4' as a string
    assert o.betas == tuple(m.optim.betas) == (0.8, 0.99) and o.eps == 1e-8 and o.weight_decay == 0.0
    assert o.sched_name == m.optim.sched.name == "ExponentialLR" and o.gamma == m.optim.sched.gamma == 0.998
    assert o.sched_interval == "epoch" and o.sched_name in EPOCH_SCHEDULERS  # NeMo steps it once per epoch
    assert (c.disc_updates_per_period, c.disc_update_period) == (m.disc_updates_per_period, m.disc_update_period) == (1, 2)
    assert c.mel_loss_l1_scale == m.mel_loss_l1_scale == 1.0 and c.mel_loss_l2_scale == 0.0
    assert c.stft_loss_scale == m.stft_loss_scale == 20.0
    assert c.time_domain_loss_scale == m.time_domain_loss_scale == 0.0 and c.commit_loss_scale == 0.0
    assert c.feature_loss_type == m.feature_loss_type == "absolute"
    assert c.gen_loss_scale == c.feature_loss_scale == 1.0  # NeMo's defaults (the YAML leaves them out)
    assert c.clip_grad_norm is None and c.disc_start_epoch == 0
    assert [list(r) for r in c.loss_resolutions] == OmegaConf.to_container(m.loss_resolutions)
    assert list(c.mel_loss_dims) == list(m.mel_loss_dims) == [5, 10, 20, 40, 80, 160, 320]
    assert c.mel_loss_log_guard == c.stft_loss_log_guard == 1.0
    names = [n for n, _ in c.discriminators]
    assert names == ["MultiResolutionDiscriminatorSTFT", "MultiPeriodDiscriminator", "SLMDiscriminator"]
    slm = dict(c.discriminators)["SLMDiscriminator"]
    assert slm["slm_model_name"] == "microsoft/wavlm-base-plus" and slm["slm_sr"] == 16000
    assert slm["input_sr"] == 22050 and slm["slm_layers"] == 13 and slm["slm_hidden"] == 768
    assert dict(c.discriminators)["MultiResolutionDiscriminatorSTFT"]["resolutions"][0] == [128, 32, 128]
    assert (c.generator_loss, c.discriminator_loss) == ("GeneratorSquaredLoss", "DiscriminatorSquaredLoss")
    assert cfg.seed == 1234 and cfg.train.checkpoint_path == "runs/codec_lfr_22050"
    # --set before the interpolations: the rate reaches every ${sample_rate}, as OmegaConf with the same edit
    over = config_lib.load(LFR_YAML, ["sample_rate=24000", "max_epochs=5", "train.training_steps=7"])
    y.sample_rate, y.max_epochs = 24000, 5
    for key in ("train_ds_meta", "val_ds_meta", "log_ds_meta", "log_dir"):  # ??? (not set) reads as null
        y[key] = None
    ref = OmegaConf.to_container(y, resolve=True)["model"]
    assert over.codec.sample_rate == ref["sample_rate"] == 24000
    assert dict(over.codec.discriminators)["SLMDiscriminator"]["input_sr"] == 24000
    assert over.codec.train_ds.dataset.sample_rate == ref["train_ds"]["dataset"]["sample_rate"] == 24000
    assert over.codec.max_epochs == ref["max_epochs"] == 5 and over.train.training_steps == 7
    assert over.model == ref
    # a key that is an interpolation takes a value of its own
    assert config_lib.load(LFR_YAML, ["model.train_ds.dataset.n_samples=4096"]).segment_size == 4096


def test_config_errors_and_smoke(tmp_path):
    from jaxvoc.train import config as config_lib

    text = open(LFR_YAML).read()
    p = tmp_path / "c.yaml"
    for old, new, message in (("lr: 2e-4", "lr: 2e-4\n    amsgrad: true", "amsgrad"),
                              ("name: ExponentialLR", "name: CosineAnnealing", "CosineAnnealing"),
                              ("weighted_sampling_steps_per_epoch: null", "weighted_sampling_steps_per_epoch: 100",
                               "weighted sampling"),
                              ("${train_n_samples}", "${no_such_key}", "interpolation")):
        p.write_text(text.replace(old, new))
        with pytest.raises(UserError, match=message):
            config_lib.load(str(p))
    with pytest.raises(UserError, match="disc_updates_per_period"):
        config_lib.load(LFR_YAML, ["model.disc_updates_per_period=3"])
    smoke = config_lib.load(SMOKE_YAML)  # the tiny config: small widths, the same NeMo keys
    assert smoke.kind == "codec" and smoke.codec.codec.decoder.base_channels <= 64
    assert smoke.codec.optim.lr == 2e-4 and smoke.codec.disc_update_period == 2


def test_codec_files_sources(tmp_path, audio_dir):
    """Training and validation files from a folder (header durations filtered by min_duration), from a
    NeMo manifest (train.input_training_file + input_wavs_dir) and from train_ds_meta."""
    from jaxvoc.train import config as config_lib

    over = [f"train.input_wavs_dir={audio_dir}", "train.num_validation_files=1"]
    cfg = config_lib.load(LFR_YAML, over)
    train, val = data.codec_files(cfg.codec, cfg.train, cfg.seed)
    names = sorted(os.path.relpath(f.path, audio_dir) for f in train + val)
    # short22 (0.18 s), short44 (0.11 s) and exact44 (0.37 s) are below min_duration 0.4
    assert len(val) == 1 and names == ["float22.wav", "long22.wav", "long44.wav"]
    manifest = _write_manifest(tmp_path / "t.json", [{"audio_filepath": "long22.wav", "duration": 2.0},
                                                     {"audio_filepath": "short44.wav", "duration": 0.1}])
    cfg = config_lib.load(LFR_YAML, [f"train.input_training_file={manifest}", f"train.input_wavs_dir={audio_dir}",
                                     "train.num_validation_files=0"])
    train, val = data.codec_files(cfg.codec, cfg.train, cfg.seed)
    assert [f.path for f in train] == [str(audio_dir / "long22.wav")] and val == [] and train[0].duration == 2.0
    meta = json.dumps({"a": {"manifest_path": manifest, "audio_dir": str(audio_dir)}})
    cfg = config_lib.load(LFR_YAML, [f"train_ds_meta={meta}", f"val_ds_meta={meta}"])
    train, val = data.codec_files(cfg.codec, cfg.train, cfg.seed)
    assert [f.path for f in train] == [str(audio_dir / "long22.wav")]
    assert [f.path for f in val] == [str(audio_dir / "long22.wav"), str(audio_dir / "short44.wav")]
