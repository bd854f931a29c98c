"""Per-item lengths: every item of a padded batch gets what the OFFICIAL model gives that item alone at its own
length, whatever the padding holds, through the library (``model(padded, lengths=...)``) and through
``jaxvoc synth`` with its default length buckets.

Models: BigVGAN at reduced width but with the published kernel, dilation and up-sampling kernel sizes (the
receptive field, which is what padding leaks through, is the published one), every generator variant
(AMPBlock1 / AMPBlock2, Snake / SnakeBeta, tanh on / off); WaveGlow with the published WN depth (8 layers,
kernel 3: dilations up to 128 groups) at sigma 0.

Tolerances: the issue's acceptance, as tests/test_bigvgan.py: >= 110 dB against the official float32 output
(float32 rounding alone measures 116-130 dB on these models; padding that leaks into an item's last receptive
field costs it 20-60 dB), and "the float64 rule": no further from the official float64 run than the official
float32 output is (3 dB margin), or >= 130 dB from it.
"""

from __future__ import annotations

import os

import jax.numpy as jnp
import numpy as np
import pytest
import soundfile as sf
import torch

from conftest import run_cli, speech
from conversion import bigvgan as cb
from conversion import waveglow as cw
from conversion.report import snr_db
from jaxvoc.models import waveglow as wg
from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained

# lengths in frames: two below one bucket quantum (32), one exactly on it, two inside the next bucket (64):
# two compilations per synth run, batches of 3 and 2 items (the default batch size, 4, adds filler rows)
LENGTHS = (7, 23, 32, 45, 61)

# bigvgan_base_24khz_100band: up-sampling rates 8, 8, 2, 2 with kernels 16, 16, 4, 4; resblock kernels 3, 7,
# 11, dilations 1, 3, 5 (as published); 32 channels instead of 512.
BASE = dict(BigVGANConfig.official("bigvgan_base_24khz_100band").to_dict(), upsample_initial_channel=32)
VARIANTS = {
    "amp1-snakebeta-tanh": dict(resblock="1", activation="snakebeta", snake_logscale=True, use_tanh_at_final=True),
    "amp2-snake-clamp": dict(resblock="2", activation="snake", snake_logscale=False, use_tanh_at_final=False,
                             use_bias_at_final=False),
}  # between them: both resblocks, both activations, both parameter scales, tanh on and off (CI time)

WG = wg.WaveGlowConfig(n_flows=4, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(8, 16, 3))


def assert_exact(out: np.ndarray, ref: np.ndarray, ref64: np.ndarray, what: str) -> float:
    """The issue's acceptance (see the module docstring); returns the SNR against float32."""
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    s = snr_db(out, ref)
    assert s >= 110, (what, s)
    s64, r64 = snr_db(out, ref64), snr_db(ref, ref64)
    assert s64 >= r64 - 3.0 or s64 >= 130, (what, s64, r64)
    return s


def speech_mels(mel_fn, sr: int, lengths=LENGTHS) -> list[np.ndarray]:
    """Official log-mels [n_mels, T] of real speech, one per length, from different places in the sentence."""
    full = mel_fn(speech(sr))
    out = []
    for i, n in enumerate(lengths):
        start = (17 * i) % max(1, full.shape[1] - n)
        out.append(np.ascontiguousarray(full[:, start:start + n], np.float32))
    return out


# ----------------------------------------------------------------------------------------------------------
# BigVGAN


def bigvgan_official(config: dict, tmp_path, seed: int):
    """(official folder, official float32 model, its float64 copy)."""
    folder = cb.write_official_folder(str(tmp_path / "official"), config, seed=seed)
    sd = torch.load(os.path.join(folder, cb.GENERATOR_FILE), weights_only=True)["generator"]
    # a second instance made double (deepcopy refuses the weight-normed module), same weights
    return folder, cb.official_model(config, sd), cb.official_model(config, sd).double()


def bigvgan_refs(model, model64, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The official outputs for one item alone, float32 and float64."""
    with torch.inference_mode():
        m = torch.from_numpy(mel[None])
        return model(m)[0, 0].numpy(), model64(m.double())[0, 0].numpy()


def bigvgan_mels(config: dict, lengths=LENGTHS) -> list[np.ndarray]:
    return speech_mels(lambda y: cb.official_mel(y, config)[0].numpy(), 24000, lengths)


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_synth_bigvgan_buckets_equal_the_official_model_per_item(variant, tmp_path):
    """`jaxvoc synth` with default options (length buckets, batches of 4) on mels of 5 lengths: every wav is
    the official model's output for that mel alone."""
    config = dict(BASE, **VARIANTS[variant])
    folder, model, model64 = bigvgan_official(config, tmp_path, seed=11)
    ckpt = tmp_path / "ckpt"
    proc = run_cli("convert", "bigvgan", folder, ckpt)
    assert proc.returncode == 0, proc.stderr
    synth_matches_official(ckpt, bigvgan_mels(config), tmp_path, lambda m: bigvgan_refs(model, model64, m), variant)


def test_bigvgan_lengths_ignore_garbage_padding(tmp_path):
    """Pretrained(padded, lengths=...) per item against the official model per item, with large random
    values in the padding; lengths are traced (one compilation for two sets of lengths)."""
    config = dict(BASE, **VARIANTS["amp1-snakebeta-tanh"])
    folder, model, model64 = bigvgan_official(config, tmp_path, seed=4)
    cfg_dict, params, _ = cb.convert(folder)
    ours = Pretrained(BigVGANConfig.from_dict(cfg_dict), params)
    mels = bigvgan_mels(config)[:4]
    T = 64  # the shape of the synth test's second bucket: one compilation for both (persistent cache)
    rng = np.random.default_rng(0)
    batch = rng.normal(0, 1e4, (len(mels), T, config["num_mels"])).astype(np.float32)  # garbage
    for b, m in enumerate(mels[:3]):
        batch[b, :m.shape[1]] = m.T
    batch[3] = bigvgan_mels(config, (T,))[0].T  # one item fills the padded length
    lengths = np.array([m.shape[1] for m in mels[:3]] + [T])
    out = np.asarray(ours(batch, lengths=lengths))
    hop = config["hop_size"]
    for b, n in enumerate(lengths):
        ref, ref64 = bigvgan_refs(model, model64, np.ascontiguousarray(batch[b, :n].T))
        assert_exact(out[b, :n * hop], ref, ref64, f"item {b} ({n} frames)")
        assert not np.any(out[b, n * hop:])  # the samples past the item's end are zero
    # other lengths, same padded shape: the same program
    out2 = np.asarray(ours(batch, lengths=np.array([T, 1, 30, 45])))
    assert ours.compilations == 1
    ref, ref64 = bigvgan_refs(model, model64, np.ascontiguousarray(batch[2, :30].T))
    assert_exact(out2[2, :30 * hop], ref, ref64, "item 2 at 30 frames")


# ----------------------------------------------------------------------------------------------------------
# WaveGlow (sigma 0: the official noise, drawn with torch.cuda, does not matter)


@pytest.fixture(scope="module")
def waveglow(tmp_path_factory):
    """(official model, its float64 copy, checkpoint folder) of WG with non-trivial weights."""
    d = tmp_path_factory.mktemp("wg")
    model = cw.official_model(WG, seed=2)
    cw.randomize_(model, 2)
    cw.detach_weight_norm_(model)
    src = cw.save_full_object(str(d / "waveglow.pt"), model)
    proc = run_cli("convert", "waveglow", src, d / "ck")
    assert proc.returncode == 0, proc.stderr
    return model, cw.double_model(model), d / "ck"


def save_mels(mels: list[np.ndarray], folder) -> list:
    """m0.npy, m1.npy, ... in ``folder``: the paths."""
    paths = [folder / f"m{i}.npy" for i in range(len(mels))]
    for m, p in zip(mels, paths):
        np.save(p, m)
    return paths


def synth_matches_official(ckpt, mels: list[np.ndarray], folder, refs, label: str, *options: str) -> None:
    """`jaxvoc synth CKPT m0.npy m1.npy ... --subtype FLOAT OPTIONS` with the default buckets; every wav must
    equal ``refs(mel)`` = (official float32, official float64) for that mel alone (assert_exact)."""
    proc = run_cli("synth", ckpt, *save_mels(mels, folder), "-o", folder / "out", "--subtype", "FLOAT", *options)
    assert proc.returncode == 0, proc.stderr
    snrs = []
    for i, m in enumerate(mels):
        out, _ = sf.read(folder / "out" / f"m{i}.wav", dtype="float32")
        snrs.append(assert_exact(out, *refs(m), f"{label} item {i} ({m.shape[1]} frames)"))
    print(label, "SNR dB per item:", [round(x, 1) for x in snrs])


def waveglow_refs(model, model64, mel: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    with torch.inference_mode():
        m = torch.from_numpy(mel[None])
        with cw.official_noise(seed=0):
            ref = model.infer(m, sigma=0.0)[0].numpy()
        with cw.official_noise(seed=0, dtype=torch.float64):
            ref64 = model64.infer(m.double(), sigma=0.0)[0].numpy()
    return ref, ref64


def waveglow_mels() -> list[np.ndarray]:
    return speech_mels(lambda y: cw.official_mel(y, WG)[0].numpy(), 22050)


def test_synth_waveglow_buckets_equal_the_official_model_per_item(waveglow, tmp_path):
    model, model64, ckpt = waveglow
    synth_matches_official(ckpt, waveglow_mels(), tmp_path, lambda m: waveglow_refs(model, model64, m), "waveglow",
                           "--sigma", "0")


def waveglow_denoised_refs(model, model64, mel: np.ndarray, strength: float) -> tuple[np.ndarray, np.ndarray]:
    """The official infer (sigma 0) then the official Denoiser, on one item alone: float32 and float64."""
    from waveglow.denoiser import Denoiser

    out = []
    for m, dtype in ((model, torch.float32), (model64, torch.float64)):
        with torch.inference_mode(), cw.official_noise(seed=0, dtype=dtype), \
                cw.official_denoiser_on_cpu(float64=dtype == torch.float64):
            audio = m.infer(torch.from_numpy(mel[None]).to(dtype), sigma=0.0)
            out.append(Denoiser(m)(audio, strength)[0, 0].numpy())
    return out[0], out[1]


def test_synth_waveglow_denoise_buckets_equal_the_official_per_item(waveglow, tmp_path):
    """--denoise through the default buckets: the denoiser's STFT reflects at each item's own end and its
    inverse envelope is that item's own (the official Denoiser on the item alone)."""
    model, model64, ckpt = waveglow
    synth_matches_official(ckpt, waveglow_mels(), tmp_path, lambda m: waveglow_denoised_refs(model, model64, m, 0.1),
                           "waveglow --denoise 0.1", "--sigma", "0", "--denoise", "0.1")


def test_waveglow_lengths_ignore_garbage_padding(waveglow):
    import jaxvoc

    model, model64, ckpt = waveglow
    ours = jaxvoc.load(str(ckpt))
    mels = waveglow_mels()[:4]
    T = 64  # the synth test's second bucket
    batch = np.random.default_rng(1).normal(0, 1e4, (4, T, WG.n_mel_channels)).astype(np.float32)
    for b, m in enumerate(mels):
        batch[b, :m.shape[1]] = m.T[:T]
    lengths = np.array([min(m.shape[1], T) for m in mels])
    out = np.asarray(ours(batch, sigma=0.0, lengths=lengths))
    for b, n in enumerate(lengths):
        ref, ref64 = waveglow_refs(model, model64, np.ascontiguousarray(batch[b, :n].T))
        assert_exact(out[b, :n * 256], ref, ref64, f"item {b} ({n} frames)")
        assert not np.any(out[b, n * 256:])
    # noise: with lengths, an item's draws do not depend on the padded length
    a = np.asarray(ours(batch, sigma=0.6, seed=3, lengths=lengths))
    b = np.asarray(ours(np.concatenate([batch, batch], 1), sigma=0.6, seed=3, lengths=lengths))
    for i, n in enumerate(lengths):
        assert snr_db(b[i, :n * 256], a[i, :n * 256]) >= 110


# ----------------------------------------------------------------------------------------------------------
# Gradients: the per-item edge fill is plain jnp outside the custom-VJP FIR, so autodiff must give what torch's
# autograd gives through the official activation on each item alone.


def test_activation_gradients_with_lengths_equal_the_official_per_item():
    import jax

    from bigvgan.activations import SnakeBeta
    from bigvgan.alias_free_activation.torch.act import Activation1d as OfficialAct1d
    from jaxvoc.nn.activations import Activation1d

    C, T, ends = 3, 24, np.array([24, 9, 1])
    rng = np.random.default_rng(0)
    x = rng.normal(0, 1, (3, T, C)).astype(np.float32)
    w = rng.normal(0, 1, (3, T, C)).astype(np.float32)
    alpha, beta = rng.normal(0, 0.3, C).astype(np.float32), rng.normal(0, 0.3, C).astype(np.float32)
    official = OfficialAct1d(SnakeBeta(C, alpha_logscale=True))
    with torch.no_grad():
        official.act.alpha.copy_(torch.from_numpy(alpha))
        official.act.beta.copy_(torch.from_numpy(beta))
    taps = tuple(float(v) for v in official.upsample.filter.flatten())
    act = Activation1d(beta=True, logscale=True, filter=taps)
    params = {"act": {"alpha": jnp.asarray(alpha), "beta": jnp.asarray(beta)}}
    valid = (np.arange(T)[None, :] < ends[:, None])[..., None]

    def loss(p, xx):
        return jnp.sum(jnp.where(valid, act.apply({"params": p}, xx, jnp.asarray(ends)) * w, 0.0))

    gp, gx = jax.grad(loss, argnums=(0, 1))(params, jnp.asarray(x))
    ga_ref, gb_ref = np.zeros(C), np.zeros(C)
    for b, n in enumerate(ends):
        official.zero_grad()
        xb = torch.from_numpy(np.ascontiguousarray(x[b, :n].T[None])).requires_grad_(True)
        (official(xb) * torch.from_numpy(np.ascontiguousarray(w[b, :n].T[None]))).sum().backward()
        # float32 gradients through the same arithmetic in another order: the outputs' bound (110 dB)
        assert snr_db(np.asarray(gx)[b, :n], xb.grad[0].numpy().T) >= 110, b
        assert not np.any(np.asarray(gx)[b, n:])  # nothing past the end reaches the loss
        ga_ref += official.act.alpha.grad.numpy()
        gb_ref += official.act.beta.grad.numpy()
    assert snr_db(np.asarray(gp["act"]["alpha"]), ga_ref) >= 110
    assert snr_db(np.asarray(gp["act"]["beta"]), gb_ref) >= 110
