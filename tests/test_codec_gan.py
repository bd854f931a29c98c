"""The codec's discriminators and losses (jaxvoc.models.codec_discriminators, jaxvoc.train.codec_losses) against
NeMo's own modules (nemo_toolkit 3.0.0): ``Discriminator`` over encodec's MultiResolutionDiscriminatorSTFT,
MultiPeriodDiscriminator and SLMDiscriminator (a small randomised transformers WavLM inside), built by hydra
from a config section as NeMo builds it, every parameter randomised (weight-norm gains, directions, biases;
WavLM's norms and biases too); MultiResolutionMelLoss, MultiResolutionSTFTLoss, GeneratorSquaredLoss,
DiscriminatorSquaredLoss, FeatureMatchingLoss. A batch of 2 whose second item is shorter (zero-padded real
audio, generated audio not zero past the length, as a decoder's): the losses' length masks are exercised.

Bounds (issue 12): every score and feature map >= 110 dB SNR against NeMo float32, and the float64 rule (no
further from NeMo's float64 run than NeMo float32 is, 3 dB margin for two different but equally valid
operation orders, or >= 130 dB from it); every loss <= 1e-5 relative; gradients (w.r.t. the generated audio,
per generator term, and w.r.t. every discriminator parameter) 1 - cos <= 1e-5 and relative norm difference
<= 1e-4, or within 2x NeMo's own float32-vs-float64 difference where that is larger (measured beside).
"""

from __future__ import annotations

import copy

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conftest import speech
from conversion import codec as cc
from conversion import wavlm as cw
from conversion.common import flatten
from jaxvoc.models import codec_discriminators as cd
from jaxvoc.models.wavlm import WavLMConfig
from jaxvoc.train import codec_losses as cl
from tests.test_wavlm import assert_equivalent
from tests.test_wavlm import randomise as randomise_wavlm

LOSS_REL = 1e-5
GRAD_COS = 1e-5
GRAD_NORM = 1e-4

SR = 22050
T = 3001  # 0.14 s; prime to 2 and 3, so the period discriminators reflect-pad their input
LENGTHS = np.array([T, 2200])
STFT = "nemo.collections.tts.modules.encodec_modules.MultiResolutionDiscriminatorSTFT"
SECTION = {"_target_": f"{cc.MODULES}.Discriminator", "discriminators": [
    # the LFR config's two finest resolutions, and one with a window shorter than n_fft
    {"_target_": STFT, "resolutions": [[128, 32, 128], [256, 64, 256], [512, 128, 400]]},
    {"_target_": f"{cc.MODULES}.MultiPeriodDiscriminator", "periods": [2, 3]},
    {"_target_": f"{cc.MODULES}.SLMDiscriminator", "slm_model_name": "microsoft/wavlm-base-plus", "slm_sr": 16000,
     "input_sr": SR, "slm_hidden": 32, "slm_layers": 2, "initial_channel": 8}]}
# the LFR config's loss resolutions and mel dims, less its two widest (the clip is 0.14 s)
LOSS_RES = [[32, 8, 32], [64, 16, 64], [128, 32, 128], [256, 64, 256], [512, 128, 512]]
MEL_DIMS = [5, 10, 20, 40, 80]


def _bound(issue: float, official_rounding: float) -> float:
    return max(issue, 2.0 * official_rounding)


def randomise_(disc: torch.nn.Module, seed: int = 0) -> None:
    """Every parameter: the discriminators' as conversion.codec.randomize_discriminator_ draws them (biases
    N(0, 0.01), see there why not larger), the SLM's WavLM as tests/test_wavlm.py does (norm gains and biases
    included)."""
    cc.randomize_discriminator_(disc, seed)
    randomise_wavlm(disc.discriminators[2].slm_model.ssl_model, seed + 1)


@pytest.fixture(scope="module")
def setup():
    import hydra
    from omegaconf import OmegaConf

    cc.use_offline_wavlm()
    cc._quiet_nemo()
    torch.manual_seed(0)
    nemo = hydra.utils.instantiate(OmegaConf.create(copy.deepcopy(SECTION)))
    randomise_(nemo)
    nemo.eval()
    config = cd.CodecDiscriminatorConfig.from_dict(SECTION, "test")
    sd = {k: v.detach().numpy() for k, v in nemo.state_dict().items()}
    params = cc.convert_discriminator(sd, config, "test")
    hf = nemo.discriminators[2].slm_model.ssl_model
    wcfg = WavLMConfig.from_dict(hf.config.to_dict(), "test")
    wsd = {k[len("discriminators.2.slm_model.ssl_model."):]: v for k, v in sd.items() if ".ssl_model." in k}
    wparams = cw.convert_state_dict(wsd, wcfg, "test")
    module = cd.CodecDiscriminator(config, wcfg)
    a = speech(SR)
    real = np.stack([a[3000:3000 + T], a[9000:9000 + T]]).astype(np.float32)
    real[1, LENGTHS[1]:] = 0.0  # a short clip, zero-padded as NeMo's data loader pads it
    rng = np.random.RandomState(0)
    gen = (0.8 * np.stack([a[3040:3040 + T], a[9030:9030 + T]]) + 0.01 * rng.randn(2, T)).astype(np.float32)
    return nemo, module, params, wparams, real, gen


def _nemo_layout(out: np.ndarray, ref_shape: tuple) -> np.ndarray:
    """A jaxvoc score / feature map in NeMo's layout: channels-last [B, H, W, C] -> [B, C, H, W]; an SLM map
    [B, T, C] -> [B, C, T, 1]; a score [B, T, C] -> [B, C, T]."""
    if out.ndim == 4:
        return out.transpose(0, 3, 1, 2)
    if len(ref_shape) == 4:
        return out.transpose(0, 2, 1)[..., None]
    return out.transpose(0, 2, 1)


def _grad_metrics(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    """(1 - cos, |‖a‖ - ‖b‖| / ‖b‖) in float64."""
    a, b = np.asarray(a, np.float64).ravel(), np.asarray(b, np.float64).ravel()
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return float(1 - a @ b / (na * nb)), float(abs(na - nb) / nb)


def _flat(tree) -> np.ndarray:
    return np.concatenate([np.ravel(v) for _, v in sorted(flatten(jax.device_get(tree)).items())])


def nemo_step(nemo, real, gen, lengths, dtype) -> dict:
    """NeMo's modules in ``dtype``: the discriminator's outputs on (real, gen), every loss term, the gradient of
    DiscriminatorSquaredLoss w.r.t. the discriminator's parameters (mapped onto the jaxvoc tree by the
    converter and flattened), and w.r.t. the generated audio: of the adversarial terms (GeneratorSquaredLoss +
    FeatureMatchingLoss, as the generator receives them at the LFR config's scales 1 and 1) and of each
    spectral loss. One forward: the parameter gradient of the discriminator loss does not depend on whether
    the generated audio is detached, as NeMo's discriminator update detaches it."""
    from nemo.collections.tts.losses import audio_codec_loss as L

    nemo = nemo if dtype == torch.float32 else copy.deepcopy(nemo).to(dtype)
    mel = L.MultiResolutionMelLoss(sample_rate=SR, resolutions=LOSS_RES, mel_dims=MEL_DIMS, log_guard=1.0)
    stft = L.MultiResolutionSTFTLoss(resolutions=LOSS_RES, log_guard=1.0)
    real_t = torch.from_numpy(real).to(dtype)
    gen_t = torch.from_numpy(gen).to(dtype).requires_grad_(True)
    len_t = torch.from_numpy(lengths)
    sr, sg, fr, fg = nemo(audio_real=real_t, audio_gen=gen_t)
    l1, l2 = mel(audio_real=real_t, audio_gen=gen_t, audio_len=len_t)
    terms = {"d_loss": L.DiscriminatorSquaredLoss()(disc_scores_real=sr, disc_scores_gen=sg),
             "g_loss_gen": L.GeneratorSquaredLoss()(disc_scores_gen=sg),
             "g_loss_feature": L.FeatureMatchingLoss()(fmaps_real=fr, fmaps_gen=fg),
             "g_loss_mel_l1": l1, "g_loss_mel_l2": l2,
             # NeMo's model casts to float (audio_codec.py): its float64 run is float32 here too
             "g_loss_stft": stft(audio_real=real_t.float(), audio_gen=gen_t.float(), audio_len=len_t)}
    params = [(n, p) for n, p in nemo.named_parameters() if ".slm_model." not in n]
    d_grads = torch.autograd.grad(terms["d_loss"], [p for _, p in params], retain_graph=True)
    d_grads = _flat(cc.convert_discriminator({n: g.numpy() for (n, _), g in zip(params, d_grads)},
                                             cd.CodecDiscriminatorConfig.from_dict(SECTION), "grads"))
    g_grads = {"adversarial": terms["g_loss_gen"] + terms["g_loss_feature"]}
    g_grads.update({k: terms[k] for k in ("g_loss_mel_l1", "g_loss_mel_l2", "g_loss_stft")})
    g_grads = {k: torch.autograd.grad(v, gen_t, retain_graph=True)[0].numpy() for k, v in g_grads.items()}
    detach = lambda xs: [x.detach().numpy() for x in xs]  # noqa: E731
    return {"outputs": (detach(sr), detach(sg), [detach(f) for f in fr], [detach(f) for f in fg]),
            "terms": {k: float(v.detach()) for k, v in terms.items()}, "g_grads": g_grads, "d_grads": d_grads}


def jax_step(module, params, wparams, real, gen, lengths) -> dict:
    """The same from jaxvoc, in one compiled program."""
    def adversarial(p, x, y):
        sr, fr = module.apply({"params": p}, x, wparams)
        sg, fg = module.apply({"params": p}, y, wparams)
        d_loss = cl.discriminator_squared_loss(sr, sg)
        g_gen, g_feat = cl.generator_squared_loss(sg), cl.feature_matching_loss(fr, fg)
        return (d_loss, g_gen + g_feat), (sr, sg, fr, fg, d_loss, g_gen, g_feat)

    def spectral(y, x):
        l1, l2 = cl.mel_loss(x, y, lengths, SR, LOSS_RES, MEL_DIMS)
        return jnp.stack([l1, l2, cl.stft_loss(x, y, lengths, LOSS_RES)])

    @jax.jit
    def step(p, x, y):
        _, vjp, (sr, sg, fr, fg, d_loss, g_gen, g_feat) = jax.vjp(lambda p, y: adversarial(p, x, y), p, y,
                                                                   has_aux=True)
        one, zero = jnp.ones(()), jnp.zeros(())
        d_grads, _ = vjp((one, zero))
        _, adv_grad = vjp((zero, one))
        spec, spec_grads = spectral(y, x), jax.jacrev(spectral)(y, x)
        return (sr, sg, fr, fg), jnp.stack([d_loss, g_gen, g_feat, *spec]), d_grads, adv_grad, spec_grads

    outputs, values, d_grads, adv_grad, spec_grads = step(params, jnp.asarray(real), jnp.asarray(gen))
    names = ["d_loss", "g_loss_gen", "g_loss_feature", "g_loss_mel_l1", "g_loss_mel_l2", "g_loss_stft"]
    g_grads = {"adversarial": np.asarray(adv_grad)}
    g_grads.update({k: np.asarray(spec_grads[i]) for i, k in enumerate(names[3:])})
    return {"outputs": jax.device_get(outputs), "terms": dict(zip(names, np.asarray(values).tolist())),
            "g_grads": g_grads, "d_grads": _flat(d_grads)}


@pytest.fixture(scope="module")
def runs(setup):
    nemo, module, params, wparams, real, gen = setup
    return (jax_step(module, params, wparams, real, gen, LENGTHS),
            nemo_step(nemo, real, gen, LENGTHS, torch.float32), nemo_step(nemo, real, gen, LENGTHS, torch.float64))


def _assert_close(out, ref, ref64, what) -> tuple[float, float, float]:
    """>= 110 dB from NeMo float32 and the float64 rule (tests/test_wavlm.py's), in NeMo's layout."""
    return assert_equivalent(_nemo_layout(np.asarray(out), tuple(ref.shape)), ref, ref64, what)


NAMES = ["STFT 128", "STFT 256", "STFT 512/400", "period 2", "period 3", "SLM"]


def test_discriminator_outputs_match_nemo(runs):
    out, ref, ref64 = (r["outputs"] for r in runs)
    worst = {}  # per sub-discriminator: the lowest SNR vs f32, and the smallest (JAX vs f64) - (NeMo vs f64)
    for part in (0, 1, 2, 3):  # scores of real, of generated audio, then their feature maps
        assert len(out[part]) == len(ref[part]) == len(NAMES)  # NeMo's order: 3 STFT, 2 periods, SLM
        for d, (o, r, r64) in enumerate(zip(out[part], ref[part], ref64[part])):
            maps = [(o, r, r64)] if part < 2 else list(zip(o, r, r64))
            assert part < 2 or len(o) == len(r), d
            for k, (a, b, b64) in enumerate(maps):
                s, s64, r64_ = _assert_close(a, b, b64, f"{part}.{d}.{k}")
                w = worst.get(d, (np.inf, np.inf))
                worst[d] = (min(w[0], s), min(w[1], s64 - r64_))
    for d, (s, m) in worst.items():
        print(f"{NAMES[d]}: worst SNR vs NeMo f32 {s:.1f} dB; (JAX vs f64) - (NeMo f32 vs f64) >= {m:+.1f} dB")


def test_losses_and_gradients_match_nemo(runs):
    out, ref, ref64 = runs
    for k, v in ref["terms"].items():
        v64 = ref64["terms"][k]
        rel, off = abs(out["terms"][k] - v) / abs(v), abs(v64 - v) / abs(v64)
        print(f"{k}: rel {rel:.2e} (NeMo f32 vs f64 {off:.2e})")
        assert rel <= _bound(LOSS_REL, off), (k, rel, off)
    pairs = [(f"d {k} / d gen", out["g_grads"][k], ref["g_grads"][k], ref64["g_grads"][k]) for k in ref["g_grads"]]
    pairs.append(("d d_loss / d params", out["d_grads"], ref["d_grads"], ref64["d_grads"]))
    for what, g, r, r64 in pairs:
        (c, n), (c64, n64) = _grad_metrics(g, r), _grad_metrics(r, r64)
        print(f"{what}: 1-cos {c:.2e} norm {n:.2e} (NeMo f32 vs f64 {c64:.2e} {n64:.2e})")
        assert c <= _bound(GRAD_COS, c64) and n <= _bound(GRAD_NORM, n64), (what, c, n, c64, n64)
    # the length masks: the short item's generated audio is not zero past its length, yet no sample further
    # than the last valid frame of the widest resolution reads (n_fft / 2 = 256) gets a spectral gradient
    for k in ("g_loss_mel_l1", "g_loss_mel_l2", "g_loss_stft"):
        for g in (out["g_grads"][k], ref["g_grads"][k]):
            assert np.all(g[1, LENGTHS[1] + 256:] == 0) and np.all(g[1, LENGTHS[1] - 256:LENGTHS[1]] != 0), k


def test_resample_22050_to_16000_matches_torchaudio():
    """The SLM's resampler: torchaudio.transforms.Resample(22050, 16000) (and NeMo's copy of it), whose phase
    offsets are computed in float32 (exact only for ratios like 1 -> 2, which BigVGAN's CQTD uses)."""
    from nemo.collections.audio.parts.utils.transforms import Resample as NemoResample

    torchaudio = pytest.importorskip("torchaudio")
    from jaxvoc.dsp.resample import resample

    x = np.random.RandomState(0).randn(2, 3001).astype(np.float32) * 0.1
    out = np.asarray(resample(jnp.asarray(x), SR, 16000))
    for R in (torchaudio.transforms.Resample(SR, 16000), NemoResample(SR, 16000)):
        with torch.no_grad():
            ref = R(torch.from_numpy(x)).numpy()
            ref64 = R.double()(torch.from_numpy(x).double()).numpy()  # the float32 kernel, widened
        assert_equivalent(out, ref, ref64, type(R).__module__)


def test_discriminator_config_errors():
    """NeMo's discriminator section: what jaxvoc lacks is refused by name (one line), NeMo's defaults filled."""
    from jaxvoc.errors import UserError

    cfg = cd.CodecDiscriminatorConfig.from_dict(SECTION)
    assert [type(m).__name__ for m in cfg.members] == ["STFTDiscConfig", "MPDConfig", "SLMConfig"]
    assert cd.CodecDiscriminatorConfig.from_dict({"_target_": SECTION["discriminators"][1]["_target_"]}) \
        .members[0].periods == (2, 3, 5, 7, 11)
    bad = [  # the multi-band MRD of audio_codec_modules (same class name as encodec's), an unknown argument,
        # a spectral-normed SLM head, an empty wrapper
        ({"_target_": f"{cc.MODULES}.MultiResolutionDiscriminatorSTFT", "resolutions": [[128, 32, 128]],
          "stft_bands": [[0.0, 1.0]]}, "is not supported"),
        ({"_target_": STFT, "resolutions": [[128, 32, 128]], "lrelu_slope": 0.2}, "lrelu_slope"),
        (dict(SECTION["discriminators"][2], use_spectral_norm=True), "use_spectral_norm"),
        ({"_target_": f"{cc.MODULES}.Discriminator", "discriminators": []}, "non-empty list"),
    ]
    for section, needle in bad:
        with pytest.raises(UserError, match=needle):
            cd.CodecDiscriminatorConfig.from_dict(section, "cfg")
    slm = cfg.slm
    with pytest.raises(UserError, match="expects 2 of 32"):
        slm.check_wavlm(WavLMConfig(hidden_size=64, num_hidden_layers=1, num_attention_heads=2))


def test_time_domain_loss_matches_nemo():
    """TimeDomainLoss (the codec's validation loss): L1 of the waveforms over the lengths, a batch of two lengths
    with generated audio not zero past them (NeMo's MaskedLoss does not mask: those samples count). Bound 1e-6
    relative: float32 sums of |a - b| in two orders."""
    from nemo.collections.tts.losses import audio_codec_loss as L

    rng = np.random.RandomState(1)
    real = rng.randn(2, T).astype(np.float32)
    real[1, LENGTHS[1]:] = 0.0
    gen = (real + 0.1 * rng.randn(2, T)).astype(np.float32)
    ref = float(L.TimeDomainLoss()(audio_real=torch.from_numpy(real), audio_gen=torch.from_numpy(gen),
                                   audio_len=torch.from_numpy(LENGTHS)))
    got = float(cl.time_domain_loss(jnp.asarray(real), jnp.asarray(gen), jnp.asarray(LENGTHS)))
    assert abs(got - ref) <= 1e-6 * abs(ref), (got, ref)
