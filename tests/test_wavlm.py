"""WavLM against the official code: transformers' ``WavLMModel`` (eval mode) with every parameter randomised.

Acceptance, for every hidden state and for the input gradient (what a generator receives through the SLM
discriminator): SNR >= 110 dB against transformers in float32, and the float64 rule — no further from
transformers' float64 run than transformers' own float32 output is (3 dB margin, the float32 rounding noise
of two different but equally valid operation orders), or >= 130 dB from it (where both float32 runs are so
close to float64 that a 3 dB difference between them is noise in the noise).
"""

from __future__ import annotations

import copy
import json
import math
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conversion import wavlm as cw
from conversion.report import snr_db
from jaxvoc.errors import UserError
from jaxvoc.models.wavlm import Pretrained, WavLMConfig, relative_position_buckets
from tests.conftest import assert_user_error, run_cli

transformers = pytest.importorskip("transformers")  # the official code: installed by `make venv`
from transformers import WavLMConfig as HFConfig, WavLMModel  # noqa: E402

MIN_SNR = 110.0
F64_MARGIN = 3.0
F64_ENOUGH = 130.0

# a small WavLM with the published feature-encoder kernels/strides (320 samples per frame), positional
# convolution (kernel 128, 16 groups) and bucket layout (320 buckets, max distance 800)
SMALL = dict(hidden_size=64, num_hidden_layers=3, num_attention_heads=4, intermediate_size=128, conv_dim=[32] * 7)
BASE_PLUS = cw.BASE_PLUS  # microsoft/wavlm-base-plus's architecture

# Lengths: frames = (N - 400) // 320 + 1. Relative positions below num_buckets / 4 = 80 use one bucket each;
# SHORT (60 frames, offsets up to 59) uses those only. LONG (900 frames) reaches the log-spaced buckets and
# the clamp past max_bucket_distance = 800.
SHORT = 400 + 59 * 320
LONG = 400 + 899 * 320


def randomise(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter drawn at a scale that keeps activations O(1): matrices ~ N(0, 1/fan_in), biases
    ~ N(0, 0.2), norm gains ~ 1 + N(0, 0.2), gate constants ~ 1 + N(0, 0.3), bucket table ~ N(0, 1) and the
    positional convolution's weight-norm gains ~ U(0.5, 1.5) (transformers' defaults leave biases 0 and gains 1,
    which would hide a mapping error)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("original0") or name.endswith("weight_g"):
                p.copy_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif "rel_attn_embed" in name:
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif name.endswith("gru_rel_pos_const"):
                p.copy_(1.0 + 0.3 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            elif p.ndim >= 2:
                fan_in = p[0].numel()
                p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) / math.sqrt(fan_in))
            elif "norm" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
            else:
                p.copy_(0.2 * torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


def official(arch: dict, seed: int = 0) -> WavLMModel:
    torch.manual_seed(seed)
    return randomise(WavLMModel(HFConfig(**arch)).eval(), seed)


def weight_g_style(sd: dict) -> dict:
    """torch.nn.utils.weight_norm's key names (older transformers) instead of parametrizations'."""
    out = {}
    for k, v in sd.items():
        k = k.replace(".parametrizations.weight.original0", ".weight_g")
        k = k.replace(".parametrizations.weight.original1", ".weight_v")
        out[k] = v
    return out


def save_folder(model: WavLMModel, path, *, style: str = "parametrizations", fmt: str = "safetensors",
                prefix: str = "") -> str:
    """A Hugging Face folder: transformers' own config.json, the weights in the key style and format asked
    for (``prefix="wavlm."`` plus a head entry mimics a WavLMForX checkpoint)."""
    os.makedirs(path, exist_ok=True)
    model.save_pretrained(path)
    for name in cw.WEIGHTS:
        if os.path.exists(os.path.join(path, name)):
            os.remove(os.path.join(path, name))
    sd = {k: v.detach().clone().contiguous() for k, v in model.state_dict().items()}
    assert any(".parametrizations.weight.original0" in k for k in sd), "transformers changed its key style"
    if style == "weight_g":
        sd = weight_g_style(sd)
    if prefix:
        sd = {prefix + k: v for k, v in sd.items()}
        sd["lm_head.weight"] = torch.zeros(3, model.config.hidden_size)
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(sd, os.path.join(path, "model.safetensors"))
    else:
        torch.save(sd, os.path.join(path, "pytorch_model.bin"))
    return str(path)


def official_states(model: WavLMModel, audio: np.ndarray, proj=None):
    """(hidden states, d(sum_i <proj_i, h_i>)/d audio) of transformers in the model's dtype."""
    dtype = next(model.parameters()).dtype
    x = torch.from_numpy(audio).to(dtype).requires_grad_(proj is not None)
    with torch.set_grad_enabled(proj is not None):
        states = model(x, output_hidden_states=True).hidden_states
        grad = None
        if proj is not None:
            loss = sum((h * torch.from_numpy(p).to(dtype)).sum() for h, p in zip(states, proj))
            (grad,) = torch.autograd.grad(loss, x)
            grad = grad.numpy()
    return [h.detach().numpy() for h in states], grad


def jax_states(jm: Pretrained, audio: np.ndarray, proj=None):
    """(hidden states, input gradient) of the JAX model; with ``proj``, both from one compiled program."""
    if proj is None:
        return [np.asarray(h) for h in jm(audio)], None
    ps = [jnp.asarray(p) for p in proj]

    def loss(a):
        states = jm.hidden_states(jm.params, a)
        return sum(jnp.sum(h * p) for h, p in zip(states, ps)), states

    grad, states = jax.jit(jax.grad(loss, has_aux=True))(jnp.asarray(audio))
    return [np.asarray(h) for h in states], np.asarray(grad)


def assert_equivalent(out, ref, ref64, what: str) -> tuple[float, float, float]:
    assert out.shape == ref.shape, (what, out.shape, ref.shape)
    s, s64, r64 = snr_db(out, ref), snr_db(out, ref64), snr_db(ref, ref64)
    assert s >= MIN_SNR, (what, s)
    assert s64 >= min(r64 - F64_MARGIN, F64_ENOUGH), (what, s64, r64)
    return s, s64, r64


def check_model(model: WavLMModel, folder: str, audio: np.ndarray, gradient: bool = True, seed: int = 1):
    """Converts ``folder``, runs both sides in float32 and transformers in float64; returns the SNRs."""
    config, params, _ = cw.convert(folder)
    jm = Pretrained(WavLMConfig.from_dict(config), params)
    ref, gref = None, None
    rng = np.random.RandomState(seed)
    frames = jm.config.frames(audio.shape[1])
    proj = ([rng.randn(audio.shape[0], frames, jm.config.hidden_size).astype(np.float32)
             for _ in range(jm.config.num_hidden_layers + 1)] if gradient else None)
    ref, gref = official_states(model, audio, proj)
    ref64, gref64 = official_states(copy.deepcopy(model).double(), audio.astype(np.float64),
                                    None if proj is None else [p.astype(np.float64) for p in proj])
    out, gout = jax_states(jm, audio, proj)
    assert len(out) == len(ref) == jm.config.num_hidden_layers + 1
    snrs = [assert_equivalent(o, r, r64, f"hidden state {i}")
            for i, (o, r, r64) in enumerate(zip(out, ref, ref64))]
    gsnr = assert_equivalent(gout, gref, gref64, "input gradient") if gradient else None
    print("hidden states (SNR vs f32, vs f64, official f32 vs f64):",
          " | ".join(f"{a:.1f} {b:.1f} {c:.1f}" for a, b, c in snrs))
    if gsnr:
        print("input gradient: %.1f %.1f %.1f" % gsnr)
    return snrs, gsnr


def audio_of(n: int, batch: int = 2, seed: int = 0) -> np.ndarray:
    """Noise with a speech-like 1/f tilt, about -20 dBFS."""
    rng = np.random.RandomState(seed)
    x = np.cumsum(rng.randn(batch, n), axis=1) * 0.02 + rng.randn(batch, n) * 0.05
    x -= x.mean(axis=1, keepdims=True)
    return (0.1 * x / x.std(axis=1, keepdims=True)).astype(np.float32)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    model = official(SMALL)
    folder = save_folder(model, tmp_path_factory.mktemp("wavlm_small"))
    return model, folder


# ----------------------------------------------------------------------------------------------------------


def test_relative_position_buckets_match_transformers():
    """Every (query, key) bucket up to 2000 frames (offsets far past max_bucket_distance), against
    transformers' own bucket function — a bucket is the truncation of a float32 log, so this checks the
    boundaries exactly."""
    model = official(dict(SMALL, num_hidden_layers=1))
    attn = model.encoder.layers[0].attention
    T = 2000
    pos = torch.arange(T)
    ref = attn._relative_positions_bucket(pos[None, :] - pos[:, None]).numpy()
    np.testing.assert_array_equal(relative_position_buckets(T, 320, 800), ref)
    # every bucket but 160 ("positive offset 0", which cannot occur): both signs, the log range, the clamp
    assert ref.max() == 319 and len(np.unique(ref)) == 319 and 160 not in ref


@pytest.mark.parametrize("n", [SHORT, LONG], ids=["exact_buckets", "log_buckets"])
def test_hidden_states_and_gradient_match_transformers(small, n):
    model, folder = small
    check_model(model, folder, audio_of(n))


def test_key_styles_and_formats_convert_alike(small, tmp_path):
    """weight_g/weight_v and parametrizations keys, .safetensors (package and jaxvoc's own reader) and .bin,
    with and without a task model's ``wavlm.`` prefix: the same parameters."""
    model, folder = small
    _, ref, _ = cw.convert(folder)
    flat_ref = jax.tree_util.tree_leaves_with_path(ref)
    variants = [dict(style="weight_g", fmt="safetensors"), dict(style="parametrizations", fmt="bin"),
                dict(style="weight_g", fmt="bin"), dict(style="weight_g", fmt="safetensors", prefix="wavlm.")]
    sources = [(save_folder(model, tmp_path / f"v{i}", **v), None, v) for i, v in enumerate(variants)]
    # a weights file with --config instead of a folder
    sources.append((os.path.join(folder, "model.safetensors"), os.path.join(folder, "config.json"), "--config"))
    for src, config, v in sources:
        _, params, _ = cw.convert(src, config)
        flat = jax.tree_util.tree_leaves_with_path(params)
        assert [p for p, _ in flat] == [p for p, _ in flat_ref], v
        for (p, a), (_, b) in zip(flat, flat_ref):
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b), err_msg=f"{v} {p}")
    # jaxvoc's own safetensors reader (used when the package is absent) reads what the package reads
    from safetensors.numpy import load_file

    mine, theirs = cw.read_safetensors(os.path.join(folder, "model.safetensors")), load_file(
        os.path.join(folder, "model.safetensors"))
    assert sorted(mine) == sorted(theirs)
    for k in theirs:
        np.testing.assert_array_equal(mine[k], theirs[k], err_msg=k)


def test_safetensors_reader_dtypes(tmp_path):
    from safetensors.torch import save_file

    t = {"a": torch.randn(3, 4).to(torch.bfloat16), "b": torch.randn(5).half(), "c": torch.randn(2, 2).double()}
    save_file(t, str(tmp_path / "x.safetensors"))
    got = cw.read_safetensors(str(tmp_path / "x.safetensors"))
    for k, v in t.items():
        np.testing.assert_array_equal(got[k], v.float().numpy())


def test_layer_norm_feature_encoder_with_conv_bias(tmp_path):
    """feat_extract_norm "layer" (a LayerNorm after every feature-encoder conv) and conv_bias."""
    model = official(dict(SMALL, num_hidden_layers=2, feat_extract_norm="layer", conv_bias=True), seed=3)
    check_model(model, save_folder(model, tmp_path / "m", style="weight_g"), audio_of(SHORT, 1), gradient=True)


def test_base_plus_published_shape(tmp_path):
    """wavlm-base-plus at its published size (94.4 M parameters), 1 s of audio, forward and input gradient."""
    model = official(BASE_PLUS, seed=5)
    check_model(model, save_folder(model, tmp_path / "bp"), audio_of(16000, 1, seed=5))


def test_convert_cli_and_load(small, tmp_path):
    """`jaxvoc convert wavlm FOLDER OUT`, then jaxvoc.load(OUT): the tuple of hidden states."""
    import jaxvoc

    model, folder = small
    out = tmp_path / "ckpt"
    proc = run_cli("convert", "wavlm", folder, out)
    assert proc.returncode == 0, proc.stderr
    jm = jaxvoc.load(str(out))
    assert isinstance(jm, Pretrained)
    audio = audio_of(SHORT, 1)
    states = jm(audio)
    ref, _ = official_states(model, audio)
    assert isinstance(states, tuple) and len(states) == 4
    for s, r in zip(states, ref):
        assert s.shape == r.shape
        assert snr_db(np.asarray(s), r) >= MIN_SNR
    # a 1-D input gives unbatched states
    assert jm(audio[0])[0].shape == ref[0].shape[1:]
    # `jaxvoc compare wavlm`: every hidden state on the bundled speech (resampled to 16 kHz)
    report = tmp_path / "r.json"
    proc = run_cli("compare", "wavlm", folder, "--report", report, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    run = json.loads(report.read_text())["runs"][0]
    assert len(run["snr_db_per_state"]) == 4 and run["snr_db"] >= MIN_SNR, run


def _expect_user_error(fn, *needles):
    with pytest.raises(UserError) as e:
        fn()
    msg = str(e.value)
    assert "\n" not in msg, msg
    for n in needles:
        assert n.lower() in msg.lower(), (n, msg)


def test_conversion_bad_inputs(small, tmp_path):
    model, folder = small
    _expect_user_error(lambda: cw.convert(str(tmp_path / "nowhere")), "not found")
    empty = tmp_path / "empty"
    empty.mkdir()
    _expect_user_error(lambda: cw.convert(str(empty)), "config.json")
    (empty / "config.json").write_text(open(os.path.join(folder, "config.json")).read())
    _expect_user_error(lambda: cw.convert(str(empty)), "model.safetensors", "pytorch_model.bin")
    # weights of another shape: the config says 96 wide, the weights are 64
    wrong = tmp_path / "wrong"
    save_folder(model, wrong)
    cfg = json.loads((wrong / "config.json").read_text())
    cfg["hidden_size"] = 96
    (wrong / "config.json").write_text(json.dumps(cfg))
    _expect_user_error(lambda: cw.convert(str(wrong)), "wrong shape", "q_proj.bias (64,) (expected (96,))")
    # a truncated weights file
    trunc = tmp_path / "trunc"
    save_folder(model, trunc)
    data = (trunc / "model.safetensors").read_bytes()
    (trunc / "model.safetensors").write_bytes(data[: len(data) // 2])
    _expect_user_error(lambda: cw.convert(str(trunc)), "safetensors")
    _expect_user_error(lambda: cw.read_safetensors(str(trunc / "model.safetensors")), "past the end")
    # a missing tensor
    miss = tmp_path / "miss"
    save_folder(model, miss, fmt="bin")
    sd = torch.load(miss / "pytorch_model.bin", weights_only=True)
    del sd["encoder.layers.1.attention.gru_rel_pos_const"]
    torch.save(sd, miss / "pytorch_model.bin")
    _expect_user_error(lambda: cw.convert(str(miss)), "missing 1", "encoder.layers.1.attention.gru_rel_pos_const")
    # the pre-LN WavLM Large is refused by name
    cfg = json.loads(open(os.path.join(folder, "config.json")).read())
    cfg["do_stable_layer_norm"] = True
    large = tmp_path / "large"
    save_folder(model, large)
    (large / "config.json").write_text(json.dumps(cfg))
    _expect_user_error(lambda: cw.convert(str(large)), "do_stable_layer_norm")
    # through the CLI: one line, exit code 2
    assert_user_error(run_cli("convert", "wavlm", str(wrong), str(tmp_path / "o")), "wrong shape")
    # a too-short input to the model
    config, params, _ = cw.convert(folder)
    jm = Pretrained(WavLMConfig.from_dict(config), params)
    _expect_user_error(lambda: jm(np.zeros((1, 100), np.float32)), "at least 400 samples")
