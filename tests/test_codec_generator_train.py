"""The codec generator's training forward (jaxvoc.models.codec_train) against NeMo 3.0.0's own
``AudioCodecModel._process_batch`` in training mode: the tiny smoke config's sizes (256 samples per frame, 2 x
FSQ[8,5,5,5], encoder width 8, decoder width 32), random stand-in weights (conversion.codec.randomize_, plus
weight-norm gains away from ||v||), converted with conversion.codec's generator mapping (weight norm kept).

A batch of 2 of different lengths in a tensor longer than the longest item rounded up to whole frames
(NeMo cuts the tensor to that length; jaxvoc keeps its static length and pads each convolution there), with
non-zero samples past each length (NeMo reads them inside the last frame; past the cut they must get no
gradient).

Tolerances. audio_gen: >= 110 dB SNR against NeMo in float32 and the float64 rule (no further from NeMo's
float64 run than NeMo's float32 run is, 3 dB margin, or >= 130 dB from it): float32 rounding of two valid
operation orders. Tokens identical (FSQ rounds; a token could only differ within float32 noise of a level
boundary, which this fixed input does not hit). Gradients of ``sum(audio_gen^2)`` over the valid samples
with respect to the input audio and to every generator parameter: 1 - cos <= 1e-5 and relative norm
difference <= 1e-4 (the issue's bounds), against torch autograd in float32; NeMo's own float32-vs-float64
figures are printed beside (the floor) and jaxvoc must meet the same bounds against float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import jax
import jax.numpy as jnp

from conftest import speech
from conversion import codec as cc
from conversion import common
from conversion.report import snr_db
from jaxvoc.models.codec import CodecConfig
from jaxvoc.models.codec_train import generator_forward

MIN_SNR = 110.0
F64_MARGIN = 3.0
F64_ENOUGH = 130.0
MAX_ONE_MINUS_COS = 1e-5
MAX_NORM_DIFF = 1e-4

TINY = cc.variant_config(
    samples_per_frame=256,
    encoder={"down_sample_rates": [2, 2, 8, 8], "encoded_dim": 8, "base_channels": 8},
    decoder={"up_sample_rates": [8, 8, 2, 2], "input_dim": 8, "base_channels": 32},
    quantizer={"num_groups": 2, "num_levels_per_group": [8, 5, 5, 5]})
N = 2100  # tensor length; items rounded up to whole frames: 2048 and 1536 (NeMo cuts the tensor to 2048)
LENGTHS = (1900, 1400)


def _nemo_side(model, audio: np.ndarray, lengths, dtype):
    model.zero_grad(set_to_none=True)
    m = model.to(dtype).train()  # float32 first, then float64 (the module is converted in place)
    x = torch.tensor(audio, dtype=dtype, requires_grad=True)
    a, alen, gen, *_ = m._process_batch({"audio": x, "audio_lens": torch.tensor(lengths)})
    valid = (torch.arange(gen.shape[1])[None, :] < alen[:, None]).to(dtype)
    torch.sum(gen ** 2 * valid).backward()
    grads = {k: p.grad.detach().numpy().astype(np.float64) for k, p in m.named_parameters()
             if k.startswith(("audio_encoder.", "audio_decoder."))}
    tokens = m.quantize(encoded=m.audio_encoder(audio=a, audio_len=alen)[0].float(),
                        encoded_len=alen // m.samples_per_frame) if dtype == torch.float32 else None
    return (a.detach().numpy(), alen.numpy(), gen.detach().numpy().astype(np.float64),
            x.grad.numpy().astype(np.float64), grads, tokens)


def _grad_tree(grads: dict, cfg: CodecConfig) -> dict:
    """torch gradients (named as the parameters) -> jaxvoc's tree, by the converter's own mapping."""
    params, _ = cc.convert_state_dict(common.normalize_keys(grads), cfg, "gradients")
    return params


def _flat(tree) -> dict:
    return {"/".join(str(getattr(k, "key", k)) for k in path): np.asarray(v, np.float64)
            for path, v in jax.tree_util.tree_flatten_with_path(tree)[0]}


def _cos_norm(a: np.ndarray, b: np.ndarray) -> tuple[float, float]:
    a, b = a.reshape(-1), b.reshape(-1)
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return 1.0 - float(a @ b / (na * nb)), abs(na - nb) / nb


@pytest.fixture(scope="module")
def case():
    model = cc.build_nemo_model(TINY, seed=3)
    g = torch.Generator().manual_seed(4)
    with torch.no_grad():  # gains away from ||v|| (randomize_ leaves the LSUV scales), so g/v mix-ups show
        for name, p in model.named_parameters():
            if name.endswith("original0"):
                p.mul_(0.7 + 0.6 * torch.rand(p.shape, generator=g))
    y = speech(22050)
    audio = np.stack([y[3000:3000 + N], y[20000:20000 + N]]).astype(np.float32)
    for b, n in enumerate(LENGTHS):  # past each length: what a batch tensor may hold there
        audio[b, n:] = 0.05 * np.sin(np.arange(N - n))
    sd = common.normalize_keys({k: v.detach().numpy() for k, v in model.state_dict().items()})
    cfg = CodecConfig.from_dict(TINY)
    params, _ = cc.convert_state_dict(sd, cfg, "tiny")
    return model, cfg, params, audio


def test_training_forward_and_gradients_match_nemo(case):
    model, cfg, params, audio = case
    lengths = jnp.asarray(LENGTHS, jnp.int32)

    def scalar(p, x):
        out = generator_forward(cfg, p, x, lengths)
        valid = jnp.arange(out.audio_gen.shape[1])[None, :] < out.audio_len[:, None]
        return jnp.sum(jnp.where(valid, out.audio_gen ** 2, 0.0)), out

    (_, out), (gp, gx) = jax.jit(jax.value_and_grad(scalar, argnums=(0, 1), has_aux=True))(params, jnp.asarray(audio))
    a32, alen, gen32, gx32, gp32, tok32 = _nemo_side(model, audio, LENGTHS, torch.float32)
    _, _, gen64, gx64, gp64, _ = _nemo_side(model, audio, LENGTHS, torch.float64)

    L = int(alen.max())
    assert alen.tolist() == [2048, 1536] and a32.shape == (2, L)
    np.testing.assert_array_equal(np.asarray(out.audio_len), alen)
    np.testing.assert_array_equal(np.asarray(out.audio)[:, :L], a32)
    frames = L // cfg.samples_per_frame
    np.testing.assert_array_equal(np.asarray(out.tokens)[..., :frames], tok32.numpy())
    assert not np.any(np.asarray(out.tokens)[..., frames:])
    gen = np.asarray(out.audio_gen, np.float64)
    assert not np.any(gen[:, L:]) and not np.any(gen[1, alen[1]:])  # zero past the lengths, as NeMo's masks
    s, s64, r64 = snr_db(gen[:, :L], gen32), snr_db(gen[:, :L], gen64), snr_db(gen32, gen64)
    print(f"audio_gen SNR: vs NeMo f32 {s:.1f} dB, vs f64 {s64:.1f} dB (NeMo f32 vs f64 {r64:.1f} dB)")
    assert s >= MIN_SNR and s64 >= min(r64 - F64_MARGIN, F64_ENOUGH), (s, s64, r64)

    rows = {"input audio": (np.asarray(gx, np.float64), gx32, gx64)}
    ref32, ref64 = _flat(_grad_tree(gp32, cfg)), _flat(_grad_tree(gp64, cfg))
    mine = _flat(gp)
    assert set(mine) == set(ref32)
    rows.update({k: (mine[k], ref32[k], ref64[k]) for k in mine})
    assert not np.any(rows["input audio"][0][:, L:])  # past NeMo's cut: no gradient
    worst = {}
    for name, (j, t32, t64) in rows.items():
        c, n = _cos_norm(j, t32)
        c64, n64 = _cos_norm(j, t64)
        f = _cos_norm(t32, t64)
        worst[name] = (c, n, c64, n64, *f)
        assert c <= MAX_ONE_MINUS_COS and n <= MAX_NORM_DIFF, (name, c, n)
        assert c64 <= MAX_ONE_MINUS_COS and n64 <= MAX_NORM_DIFF, (name, c64, n64)
    for label, i in (("1-cos vs f32", 0), ("norm vs f32", 1), ("1-cos vs f64", 2), ("norm vs f64", 3),
                     ("NeMo f32-vs-f64 1-cos", 4), ("NeMo f32-vs-f64 norm", 5)):
        k = max(worst, key=lambda k: worst[k][i])
        print(f"worst {label}: {worst[k][i]:.2e} ({k})")
