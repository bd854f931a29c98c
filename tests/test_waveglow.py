"""WaveGlow against the official ``waveglow.glow`` (and ``tacotron2.layers.TacotronSTFT`` for the mel).

Weights are the official init from a fixed seed with non-trivial values where it is trivial (WN ``end``
layers are zero and the 1x1 convs orthonormal there; see conversion.waveglow.randomize_), converted from a
published-style full-object pickle. The official infer draws its noise with ``torch.cuda.FloatTensor``: it
is patched to hand out the same draws the JAX side gets.

Tolerances: float32 on both sides, different kernels and summation orders. Measured margins (see
experiments/equivalence/waveglow.py and docs/waveglow.md): infer ~130 dB, z ~130 dB, NLL relative error
< 1e-6; the bounds below (110 dB and the float64 rule for infer, 110 dB forward, 1e-5 NLL) are the issue's
acceptance figures and leave room for other CPUs, while a wrong layer, order or trim costs tens of dB.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conversion import waveglow as cw
from conversion.report import snr_db
from jaxvoc.models import waveglow as wg
from conftest import speech

SMALL = wg.WaveGlowConfig(n_flows=4, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(3, 32, 3))
# another corner of the schema: wider groups, early exits of 4 every 3 flows, kernel 5
ODD = wg.WaveGlowConfig(n_flows=5, n_group=16, n_early_every=3, n_early_size=4, WN_config=wg.WNConfig(2, 16, 5))


def build(cfg: wg.WaveGlowConfig, tmp_path, seed: int = 0):
    """(official model with non-trivial weights, converted params) through a full-object pickle on disk."""
    model = cw.official_model(cfg, seed=seed)
    cw.randomize_(model, seed)
    config, params, _ = cw.convert(cw.save_full_object(str(tmp_path / f"wg{seed}.pt"), model))
    assert wg.WaveGlowConfig.from_dict(config) == cfg
    return model, params


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    return build(SMALL, tmp_path_factory.mktemp("small"))


def speech_mel(cfg, frames: int, offset: float = 0.6):
    """(official log-mel [1, M, frames] of real speech, the audio under its first frames - 1 hops)."""
    y = speech(22050)
    start = int(offset * 22050)
    y = y[start:start + frames * cfg.hop_length]
    mel = cw.official_mel(y, cfg)[..., :frames]
    return mel, np.ascontiguousarray(y[:(frames - 1) * cfg.hop_length])[None]


def to_jax(mel):
    return jnp.asarray(mel.numpy().transpose(0, 2, 1))


def official_forward(model, mel, audio, sigma):
    from waveglow.glow import WaveGlowLoss

    with torch.no_grad():
        z, log_s, log_det = model((mel, torch.from_numpy(audio)))
        log_det = [t.clone() for t in log_det]  # WaveGlowLoss adds into the first term in place
        loss = float(WaveGlowLoss(sigma)((z, log_s, [t.clone() for t in log_det])))
    return z, log_s, log_det, loss


@pytest.mark.parametrize("which", ["small", "odd"])
def test_forward_and_nll(which, small, tmp_path):
    model, params = small if which == "small" else build(ODD, tmp_path, seed=3)
    cfg = SMALL if which == "small" else ODD
    mel, audio = speech_mel(cfg, 12)
    z, log_s, log_det, loss = official_forward(model, mel, audio, 1.0)
    zj, log_sj, log_detj = jax.jit(lambda p, m, a: wg.WaveGlow(cfg).apply({"params": p}, m, a))(
        params, to_jax(mel), jnp.asarray(audio))
    assert snr_db(np.asarray(zj), z.numpy().transpose(0, 2, 1)) >= 110
    assert len(log_sj) == len(log_s) == cfg.n_flows
    for a, b in zip(log_sj, log_s):
        assert np.std(b.numpy()) > 0.01  # the couplings really transform
        assert snr_db(np.asarray(a), b.numpy().transpose(0, 2, 1)) >= 110
    positions = zj.shape[0] * zj.shape[1]  # log_det_W = positions * logdet(W)
    for a, b in zip(log_detj, log_det):
        # logdet(W) of a float32 matrix near orthonormal (value ~0.01): both sides are ~1e-7 off float64
        assert abs(float(a) - float(b)) <= 1e-6 * positions
    assert any(abs(float(b)) > 1.0 for b in log_det)  # the 1x1 convs are not orthonormal
    n = z.numel()
    for sigma in (1.0, 0.1):
        loss_t = loss if sigma == 1.0 else official_forward(model, mel, audio, sigma)[3]
        loss_j = float(wg.nll(zj, log_sj, log_detj, sigma))
        # relative to the loss, or to its largest term where the terms nearly cancel (random weights)
        terms = (float((z * z).sum()) / (2 * sigma ** 2), float(sum(t.sum() for t in log_s)), float(sum(log_det)))
        scale = max(abs(loss_t), max(abs(t) for t in terms) / n)
        assert abs(loss_j - loss_t) <= 1e-5 * scale, (loss_j, loss_t, scale)


def assert_infer_equivalent(out: np.ndarray, ref: np.ndarray, ref64: np.ndarray) -> None:
    """The issue's acceptance (as tests/test_bigvgan.py): >= 110 dB from the official float32 infer (float32
    rounding alone: measured ~130 dB), and no further from the official float64 run than the official float32
    output is (3 dB margin), or >= 130 dB from it."""
    assert out.shape == ref.shape
    assert snr_db(out, ref) >= 110, snr_db(out, ref)
    s64, r64 = snr_db(out, ref64), snr_db(ref, ref64)
    assert s64 >= r64 - 3.0 or s64 >= 130, (s64, r64)


def official_infer_f64(model, mel, noise, sigma: float) -> np.ndarray:
    """The official infer in float64 (cw.double_model) on the same mel and draws."""
    m64 = cw.double_model(model)
    with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise), dtype=torch.float64):
        return m64.infer(mel.double(), sigma=sigma)[0].numpy()


@pytest.mark.parametrize("sigma", [0.0, 0.6])
def test_infer_same_noise(sigma, small):
    model, params = small
    mel, _ = speech_mel(SMALL, 10)
    noise = cw.make_noise(SMALL, 1, 10, seed=1)
    with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise)) as handed:
        ref = model.infer(mel, sigma=sigma)[0].numpy()
    assert len(handed) == len(noise)  # the official code drew exactly these
    ref64 = official_infer_f64(model, mel, noise, sigma)
    infer = jax.jit(lambda p, m, n: wg.WaveGlow(SMALL).apply({"params": p}, m, sigma, n, method=wg.WaveGlow.infer))
    out = np.asarray(infer(wg.prepare_for_inference(params), to_jax(mel), [jnp.asarray(n) for n in noise]))[0]
    assert out.shape == ref.shape == (10 * 256,)
    assert_infer_equivalent(out, ref, ref64)
    # without W_inverse precomputed, the in-graph float32 inverse must do as well
    out2 = infer(jax.tree_util.tree_map(jnp.asarray, params), to_jax(mel), [jnp.asarray(n) for n in noise])
    assert_infer_equivalent(np.asarray(out2)[0], ref, ref64)


def test_infer_batch_and_pretrained_api(small):
    """Batched infer equals per-item infer; Pretrained.vocode draws noise from the seed reproducibly."""
    _, params = small
    m = wg.Pretrained(SMALL, params)
    mel = jnp.asarray(np.random.default_rng(0).standard_normal((2, 6, 80)) - 5.0, jnp.float32)
    a = np.asarray(m.vocode(mel, sigma=0.6, seed=3))
    b = np.asarray(m.vocode(mel, sigma=0.6, seed=3))
    c = np.asarray(m.vocode(mel, sigma=0.6, seed=4))
    assert a.shape == (2, 6 * 256) and np.array_equal(a, b) and not np.array_equal(a, c)
    assert m.compilations == 1  # seed and sigma are traced, not static
    noise = cw.make_noise(SMALL, 2, 6, seed=0)
    infer = jax.jit(lambda p, x, n: m.module.apply({"params": p}, x, 0.6, n, method=wg.WaveGlow.infer))
    full = infer(m.params, mel, [jnp.asarray(n) for n in noise])
    one = infer(m.params, mel[1:], [jnp.asarray(n[1:]) for n in noise])
    assert snr_db(np.asarray(full)[1], np.asarray(one)[0]) >= 120
    assert np.asarray(m.vocode(mel[0], sigma=0.0)).shape == (6 * 256,)


def test_denoiser(small):
    """The official Denoiser (float32, and float64 as the reference) against jaxvoc's: the bias spectrum, the
    denoiser on real speech at two strengths, and the whole path model(mel, sigma=0, denoise=s)."""
    from waveglow.denoiser import Denoiser

    model, params = small
    m64 = cw.double_model(model)
    audio = speech(22050)[13000:13000 + 30 * 256][None].copy()
    mel, _ = speech_mel(SMALL, 12)
    refs = {}
    for net, dtype in ((model, torch.float32), (m64, torch.float64)):
        with torch.inference_mode(), cw.official_noise(seed=0, dtype=dtype), \
                cw.official_denoiser_on_cpu(float64=dtype == torch.float64):
            den = Denoiser(net)  # bias audio from a zero mel at sigma 0: the noise values do not matter
            x = torch.from_numpy(audio).to(dtype)
            refs[dtype] = {"bias": den.bias_spec[0, :, 0].numpy(),
                           **{s: den(x, s)[0, 0].numpy() for s in (0.1, 2.0)},
                           "model": den(net.infer(mel.to(dtype), sigma=0.0), 0.3)[0, 0].numpy()}
    r32, r64 = refs[torch.float32], refs[torch.float64]
    m = wg.Pretrained(SMALL, params)  # its bias spectrum comes from wg.Denoiser
    assert_infer_equivalent(np.asarray(m.bias_spec)[0, 0], r32["bias"], r64["bias"])
    den_fn = jax.jit(wg.denoise_audio)
    for s in (0.1, 2.0):
        out = np.asarray(den_fn(jnp.asarray(audio), m.bias_spec, s))[0]
        assert snr_db(r32[s], audio[0]) < 40  # it did change the audio
        # the clamp at 0 flips a few near-zero bins either way, in the official float32 run as in ours: the
        # float64 rule (no further from the float64 run than the official float32 output) is the measure
        assert_infer_equivalent(out, r32[s], r64[s])
    # through the model: denoise=0 is off (as the official script), denoise>0 applies the denoiser
    out = np.asarray(m.vocode(to_jax(mel), sigma=0.0, denoise=0.3))[0]
    assert_infer_equivalent(out, r32["model"], r64["model"])
    plain = np.asarray(m.vocode(to_jax(mel), sigma=0.5, seed=1))
    assert np.array_equal(plain, np.asarray(m.vocode(to_jax(mel), sigma=0.5, seed=1, denoise=0.0)))


def _mel64(y: np.ndarray, cfg: wg.WaveGlowConfig) -> np.ndarray:
    """The Tacotron2 log-mel in float64 (numpy FFT, float64 window and filters): the reference both float32
    implementations are measured against."""
    import librosa

    yp = np.pad(y.astype(np.float64), cfg.filter_length // 2, mode="reflect")
    n = 1 + (len(yp) - cfg.filter_length) // cfg.hop_length
    idx = cfg.hop_length * np.arange(n)[:, None] + np.arange(cfg.filter_length)[None]
    w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.win_length) / cfg.win_length)
    mag = np.abs(np.fft.rfft(yp[idx] * w, axis=-1))
    fb = librosa.filters.mel(sr=cfg.sampling_rate, n_fft=cfg.filter_length, n_mels=cfg.n_mel_channels,
                             fmin=cfg.mel_fmin, fmax=cfg.mel_fmax, dtype=np.float64)
    return np.log(np.maximum(mag @ fb.T, 1e-5))


@pytest.mark.parametrize("signal", ["speech", "noise"])
def test_mel_matches_tacotron_stft(signal):
    from jaxvoc.dsp.stft import mel_spectrogram

    cfg = wg.WaveGlowConfig()
    y = speech(22050) if signal == "speech" else np.random.default_rng(0).uniform(-1, 1, 30000).astype(np.float32)
    ref = cw.official_mel(y, cfg)[0].numpy().T
    ours = np.asarray(jax.jit(lambda a: mel_spectrogram(a, cfg.mel))(jnp.asarray(y)[None]))[0]
    assert ours.shape == ref.shape
    d = np.abs(ours - ref)
    assert d.max() <= 3e-4 and d.mean() <= 1e-5, (d.max(), d.mean())
    # no further from float64 than the official float32 code, within 10% (max and mean)
    r64 = _mel64(y, cfg)
    off, our = np.abs(ref - r64), np.abs(ours - r64)
    assert our.max() <= 1.1 * off.max() and our.mean() <= 1.1 * off.mean(), (our.max(), off.max(), our.mean(),
                                                                              off.mean())


def test_published_config_full_size():
    """The published 12-flow, 256-channel model at full size, on a short piece of speech: forward, NLL and
    infer with the same noise (converted in memory: the file paths are covered with small configs)."""
    from conversion import common

    cfg = wg.published_config()
    model = cw.official_model(cfg, seed=5)
    cw.randomize_(model, 5)
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params = common.state_dict_to_params(sd, cw.expected_tree(cfg), "test", transposed=lambda p: p[0] == "upsample")
    mel, audio = speech_mel(cfg, 4, offset=1.0)
    z, log_s, log_det, loss = official_forward(model, mel, audio, 1.0)
    zj, log_sj, log_detj = jax.jit(lambda p, m, a: wg.WaveGlow(cfg).apply({"params": p}, m, a))(
        params, to_jax(mel), jnp.asarray(audio))
    assert snr_db(np.asarray(zj), z.numpy().transpose(0, 2, 1)) >= 110
    loss_j = float(wg.nll(zj, log_sj, log_detj, 1.0))
    assert abs(loss_j - loss) <= 1e-5 * abs(loss), (loss_j, loss)
    noise = cw.make_noise(cfg, 1, 4, seed=2)
    with cw._quiet():
        model = model.remove_weightnorm(model)
    with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise)):
        ref = model.infer(mel, sigma=0.6)[0].numpy()
    out = jax.jit(lambda p, m, n: wg.WaveGlow(cfg).apply({"params": p}, m, 0.6, n, method=wg.WaveGlow.infer))(
        wg.prepare_for_inference(params), to_jax(mel), [jnp.asarray(n) for n in noise])
    assert snr_db(np.asarray(out)[0], ref) >= 100


def test_init_params_match_official_structure():
    """init_params builds the tree conversion fills (same names and shapes as the official state dict)."""
    from conversion import common

    model = cw.official_model(SMALL, seed=0)
    sd = {k: v.numpy() for k, v in model.state_dict().items()}
    params = common.state_dict_to_params(sd, cw.expected_tree(SMALL), "test", transposed=lambda p: p[0] == "upsample")
    fresh = wg.init_params(SMALL)
    shapes = lambda t: {k: np.shape(v) for k, v in common.flatten(t).items()}  # noqa: E731
    assert shapes(fresh) == shapes(params)
    assert not np.any(np.asarray(fresh["WN_0"]["end"]["kernel"]))  # zero end layer, as the official init
    w = np.asarray(fresh["convinv_1"]["conv"]["kernel"][0], np.float64)
    assert np.allclose(w @ w.T, np.eye(w.shape[0]), atol=1e-5) and np.linalg.det(w) > 0


def test_config_validation():
    from jaxvoc.errors import UserError

    with pytest.raises(UserError, match="even"):
        wg.WaveGlowConfig(n_group=7).validate()
    with pytest.raises(UserError, match="early"):
        wg.WaveGlowConfig(n_flows=12, n_group=4, n_early_every=2, n_early_size=2).validate()
    with pytest.raises(UserError, match="no WaveGlow keys"):
        wg.WaveGlowConfig.from_dict({"train_config": {}})
    official = {"train_config": {"sigma": 1.0}, "data_config": {"sampling_rate": 16000, "mel_fmax": None},
                "waveglow_config": {"n_mel_channels": 80, "n_flows": 8, "n_group": 8, "n_early_every": 4,
                                    "n_early_size": 2, "WN_config": {"n_layers": 4, "n_channels": 64,
                                                                     "kernel_size": 3}}}
    cfg = wg.WaveGlowConfig.from_dict(official)
    assert cfg.n_flows == 8 and cfg.sampling_rate == 16000 and cfg.mel_fmax is None
    assert wg.WaveGlowConfig.from_dict(cfg.to_dict()) == cfg
    assert [cfg.remaining_channels(k) for k in range(8)] == [8, 8, 8, 8, 6, 6, 6, 6]

