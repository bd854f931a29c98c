"""Any length in windows, and exact streaming (jaxvoc.models.windowed), against the official PyTorch models.

* The receptive field computed from the config must cover every output sample that moves when one input frame
  of the OFFICIAL model (float64) is perturbed, and exceed the moved span by at most a frame or two.
* Windowed synthesis of a mel several windows long must equal the official unwindowed output to float32
  rounding: the issue's acceptance (>= 110 dB against the official float32 output, and no further from the
  official float64 run than the official float32 output is, 3 dB margin: test_bigvgan.assert_equivalent).
  Seams are checked on their own (SNR of the samples around every window boundary), since a whole-file SNR
  could hide one bad hop.
* A stream pushed in random pieces (1-frame pushes included) concatenates to ``model(mel)``, with no
  compilation after the first push.

BigVGAN runs at reduced width (64 channels) with the PUBLISHED kernels, dilations and up-sampling rates of
bigvgan_v2_24khz_100band_256x, which is what sets the receptive field.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import speech
from conversion import bigvgan as cb
from conversion import waveglow as cw
from conversion.report import snr_db
from jaxvoc.models import waveglow as wg
from jaxvoc.models import windowed
from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained
from test_bigvgan import assert_equivalent, reduced

V2 = "bigvgan_v2_24khz_100band_256x"


def moved_frames(out, frame, hop):
    """(left, right) extent in frames, around ``frame``, of the output samples that a NaN in that input frame
    reached. A NaN marks every sample that reads the frame through any path (NaN * 0 is NaN), so this is the
    structural receptive field; a finite perturbation would understate it, since the far edges of the field
    contribute below float64 rounding (products of ~40 small weights) and vanish from the difference."""
    idx = np.nonzero(np.isnan(np.asarray(out)))[0]
    assert len(idx), "the perturbation moved nothing"
    return idx.max() // hop - frame, frame - idx.min() // hop  # later samples see it as their left field


def seam_snrs(out, ref, windows, hop, span=4):
    """SNR of the samples within ``span`` frames of each boundary between kept parts of windows."""
    return [snr_db(out[(w.keep[0] - span) * hop:(w.keep[0] + span) * hop],
                   ref[(w.keep[0] - span) * hop:(w.keep[0] + span) * hop]) for w in windows[1:]]


# ----------------------------------------------------------------------------------------------------------
# BigVGAN


@pytest.fixture(scope="module")
def bigvgan(tmp_path_factory):
    """(official float32 model, float64 copy, converted jaxvoc model, speech mel [1, M, 320] torch)."""
    config = reduced(BigVGANConfig.official(V2).to_dict(), 64)
    folder = cb.write_official_folder(str(tmp_path_factory.mktemp("v2") / "official"), config, seed=0)
    cfg_dict, params, _ = cb.convert(folder)
    sd = torch.load(f"{folder}/{cb.GENERATOR_FILE}", weights_only=True)["generator"]
    model = cb.official_model(config, sd)
    model64 = cb.official_model(config, sd).double()
    mel = cb.official_mel(speech(24000), config)[:, :, :320]
    return model, model64, Pretrained(BigVGANConfig.from_dict(cfg_dict), params), mel


@pytest.mark.parametrize("name", [V2, "bigvgan_v2_44khz_128band_512x", "bigvgan_base_22khz_80band"])
def test_bigvgan_receptive_field_covers_the_official_model(name):
    cfg = BigVGANConfig.official(name)
    config = reduced(cfg.to_dict(), 64)
    rf = windowed.bigvgan_receptive_field(cfg)
    model = cb.official_model(config, seed=1).double()
    cb.randomize_(model, 1)
    T, j = rf.total + 6, rf.right + 3  # the whole field inside the input
    mel = torch.randn(1, cfg.num_mels, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 5
    bumped = mel.clone()
    bumped[:, :, j] = float("nan")
    with torch.inference_mode():
        b = model(bumped)[0, 0].numpy()
    left, right = moved_frames(b, j, cfg.hop_size)
    assert left <= rf.left and right <= rf.right, (left, right, rf)
    assert rf.left - left <= 2 and rf.right - right <= 2, (left, right, rf)  # conservative, not wasteful


def test_bigvgan_windows_match_the_official_unwindowed_output(bigvgan):
    model, model64, jmodel, mel = bigvgan
    with torch.inference_mode():
        ref = model(mel)[0, 0].numpy()
        ref64 = model64(mel.double())[0, 0].numpy()
    x = mel[0].numpy().T
    rf = jmodel.receptive_field()
    W = rf.total + 40  # 7 windows over 320 frames, so interior windows and both ends are exercised
    before = jmodel.compilations
    out = jmodel.synthesize_long([x, x[:250]], window=W, batch=2)
    assert jmodel.compilations - before == 1  # one program for both lengths and every window
    assert_equivalent(out[0], ref, ref64)
    plan = windowed.plan_windows(len(x), W, rf)
    assert len(plan) >= 6
    assert min(seam_snrs(out[0], ref, plan, jmodel.hop_size)) >= 110
    with torch.inference_mode():  # the other length ends at a different place (its own right edge)
        ref_b = model(mel[:, :, :250])[0, 0].numpy()
        ref64_b = model64(mel[:, :, :250].double())[0, 0].numpy()
    assert_equivalent(out[1], ref_b, ref64_b)


def random_splits(rng, total, n):
    cuts = np.sort(rng.choice(np.arange(1, total), n, replace=False))
    return np.split(np.arange(total), cuts)


def test_bigvgan_stream_equals_the_whole_call(bigvgan):
    _, _, jmodel, mel = bigvgan
    x = mel[0].numpy().T
    whole = np.asarray(jmodel(x))
    rng = np.random.default_rng(0)
    W = jmodel.receptive_field().total + 24
    for trial in range(2):
        s = jmodel.stream(window=W)
        parts = random_splits(rng, len(x), 30)
        parts = [p for q in parts[:5] for p in np.array_split(q, len(q))] + parts[5:]  # 1-frame pushes first
        got = []
        for k, p in enumerate(parts):
            got.append(s.push(x[p]))
            if k == 0:
                compiled = jmodel.compilations
        got.append(s.flush())
        assert jmodel.compilations == compiled  # no compilation after the first push
        audio = np.concatenate(got)
        assert audio.shape == whole.shape
        # jaxvoc against itself: both are float32 runs of the same program on the same numbers in different
        # window layouts, so they agree far beyond the 110 dB of the official acceptance
        assert snr_db(audio, whole) >= 110
    assert s.latency_frames == jmodel.receptive_field().right
    # shorter than one window: the plain call at the stream's length
    s = jmodel.stream(window=W)
    short = np.concatenate([s.push(x[:10]), s.push(x[10:30]), s.flush()])
    assert snr_db(short, np.asarray(jmodel(x[:30]))) >= 110


# ----------------------------------------------------------------------------------------------------------
# WaveGlow: published WN depth (8 layers, kernel 3), fewer flows and channels


DEEP = wg.WaveGlowConfig(n_flows=4, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(8, 16, 3))


@pytest.fixture(scope="module")
def waveglow(tmp_path_factory):
    model = cw.official_model(DEEP, seed=2)
    cw.randomize_(model, 2)
    _, params, _ = cw.convert(cw.save_full_object(str(tmp_path_factory.mktemp("wg") / "wg.pt"), model))
    return model, cw.double_model(model), wg.Pretrained(DEEP, params)


def official_infer(model, mel, noise, sigma, dtype=torch.float32):
    with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise), dtype=dtype):
        return model.infer(mel.to(dtype), sigma=sigma)[0].numpy()


def test_waveglow_receptive_field_covers_the_official_model(waveglow):
    _, model64, _ = waveglow
    rf = windowed.waveglow_receptive_field(DEEP)
    T, j = rf.total + 20, rf.left + 10
    mel = torch.randn(1, 80, T, generator=torch.Generator().manual_seed(0), dtype=torch.float64) - 5
    bumped = mel.clone()
    bumped[:, :, j] = float("nan")
    b = official_infer(model64, bumped, cw.make_noise(DEEP, 1, T, seed=0), 0.6, torch.float64)
    left, right = moved_frames(b, j, 256)
    assert left <= rf.left and right <= rf.right, (left, right, rf)
    assert rf.left - left <= 2 and rf.right - right <= 2, (left, right, rf)


def positional(cfg, seed, frames):
    groups = frames * 256 // cfg.n_group
    return [np.asarray(n) for n in wg.positional_noise(cfg, jax.random.PRNGKey(seed), jnp.zeros(1, jnp.int32),
                                                         groups)]


def test_waveglow_windows_and_stream_match_the_official_output(waveglow):
    """The official infer handed the noise jaxvoc draws per absolute position for the whole mel, against
    jaxvoc's windows and streams, which draw it window by window."""
    model, model64, jmodel = waveglow
    y = speech(22050)
    mel = cw.official_mel(y, DEEP)[..., :300]
    noise = positional(DEEP, 7, 300)
    ref = official_infer(model, mel, noise, 0.6)
    ref64 = official_infer(model64, mel, noise, 0.6, torch.float64)
    x = mel[0].numpy().T
    rf = jmodel.receptive_field()
    W = rf.total + 40
    before = jmodel.compilations
    out = jmodel.synthesize_long(x, window=W, sigma=0.6, seed=7)[0]
    assert jmodel.compilations - before == 1
    assert_equivalent(out, ref, ref64)
    assert min(seam_snrs(out, ref, windowed.plan_windows(len(x), W, rf), 256)) >= 110
    # the seed reproduces the audio in any batch row and batch shape
    two = np.asarray(jmodel(np.stack([x[::-1], x]), sigma=0.6, seed=7))[1]
    assert snr_db(two, np.asarray(jmodel(x, sigma=0.6, seed=7))) >= 120
    s = jmodel.stream(window=W, sigma=0.6, seed=7)
    parts = random_splits(np.random.default_rng(1), len(x), 25)
    got = [s.push(x[parts[0]])]
    compiled = jmodel.compilations
    got += [s.push(x[p]) for p in parts[1:]] + [s.flush()]
    assert jmodel.compilations == compiled
    assert_equivalent(np.concatenate(got), ref, ref64)
    # with the denoiser (its STFT widens the field by 5 frames a side): windows equal the whole call, whose
    # denoiser test_waveglow.test_denoiser checks against the official one
    whole = np.asarray(jmodel(x, sigma=0.6, seed=7, denoise=0.1))
    dn = jmodel.synthesize_long(x, window=W + 10, sigma=0.6, seed=7, denoise=0.1)[0]
    assert dn.shape == whole.shape and snr_db(dn, whole) >= 110


# ----------------------------------------------------------------------------------------------------------
# jaxvoc synth --window


def test_synth_window_matches_the_official_output_and_reports_oom(tmp_path, monkeypatch, capsys):
    """Long .npy mels (both layouts) through `jaxvoc synth --window` equal the official unwindowed output, with
    one compilation for two lengths; out of memory and a too-small window are one-line errors, exit 2."""
    import soundfile as sf

    import jaxvoc.cli
    from conftest import assert_user_error, run_cli
    from test_cli import SMALL

    folder = cb.write_official_folder(str(tmp_path / "official"), SMALL, seed=5)
    ckpt = str(tmp_path / "ckpt")
    assert run_cli("convert", "bigvgan", folder, ckpt).returncode == 0
    sd = torch.load(f"{folder}/{cb.GENERATOR_FILE}", weights_only=True)["generator"]
    official = cb.official_model(SMALL, sd)
    rf = windowed.bigvgan_receptive_field(BigVGANConfig.from_dict(SMALL))
    W = rf.total + 16
    rng = np.random.default_rng(0)
    mels = [rng.normal(-6, 2, (SMALL["num_mels"], n)).astype(np.float32) for n in (5 * W, 3 * W + 7)]
    paths = [str(tmp_path / "a.npy"), str(tmp_path / "b.npy")]
    np.save(paths[0], mels[0])
    np.save(paths[1], np.asfortranarray(mels[1])[None])  # [1, M, T], frames contiguous
    proc = run_cli("synth", ckpt, *paths, "-o", str(tmp_path / "out"), "--window", str(W), "--subtype", "FLOAT")
    assert proc.returncode == 0, proc.stderr
    assert "1 compilation(s)" in proc.stdout and "2 windowed file(s)" in proc.stdout, proc.stdout
    for m, stem in zip(mels, "ab"):
        got, _ = sf.read(str(tmp_path / "out" / f"{stem}.wav"), dtype="float32")
        with torch.inference_mode():
            ref = official(torch.from_numpy(m)[None])[0, 0].numpy()
            ref64 = official.double()(torch.from_numpy(m)[None].double())[0, 0].numpy()
            official.float()
        assert_equivalent(got, ref, ref64)

    assert_user_error(run_cli("synth", ckpt, paths[0], "-o", str(tmp_path / "o2"), "--window", str(rf.total)),
                      "--window", "receptive field")

    def exhausted(self, *a, **k):
        raise RuntimeError("RESOURCE_EXHAUSTED: Out of memory while trying to allocate 8589934592 bytes.\nmore")

    monkeypatch.setattr(Pretrained, "vocode", exhausted)
    capsys.readouterr()
    rc = jaxvoc.cli.main(["synth", ckpt, paths[0], "-o", str(tmp_path / "o3")])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and err[0].startswith("jaxvoc: error: out of memory"), err
    assert "--window" in err[0]
