"""The NeMo audio codec port against NeMo 3.0.0 itself: real ``.nemo`` archives written by
``AudioCodecModel.save_to`` (random stand-in weights, see conversion.codec.randomize_), converted by jaxvoc,
and compared on speech whose length is not a whole number of frames.

Tolerances. Tokens must be identical: FSQ rounds each value to a level, and a token can only differ where a
value lies within float32 rounding noise (~1e-6 here, measured against NeMo in float64) of a rounding
boundary, which the fixed speech and seeds below do not hit. Decoded audio from the same tokens must agree to
>= 110 dB SNR: float32 rounding alone puts NeMo ~115-125 dB from its own float64 run on these models
(experiments/equivalence/codec.py), so 110 dB leaves room for a different but correct summation order while
any real error (a wrong padding, mask, or layer) costs far more.
"""

from __future__ import annotations

import contextlib
import io
import os
import re
import subprocess
import tarfile
import warnings

import numpy as np
import pytest

from conftest import assert_user_error, run_cli, speech

import nemo  # noqa: F401 -- installed by `make venv`: a broken NeMo fails every codec test loudly
import torch

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

from conversion import codec as cc  # noqa: E402
from conversion.report import snr_db  # noqa: E402
from jaxvoc.io import checkpoint  # noqa: E402
from jaxvoc.models.codec import CodecConfig, Pretrained  # noqa: E402
from jaxvoc.errors import UserError  # noqa: E402

MIN_SNR_DB = 110.0
MOD = cc.MODULES


def narrow_config(discriminator=False) -> dict:
    """The LFR architecture (rates, kernels, FSQ 8 x [8,7,6,6]) at narrow widths, for speed."""
    return cc.variant_config(encoder={"base_channels": 8}, decoder={"base_channels": 64},
                             discriminator=cc.small_discriminator() if discriminator else False)


VARIANTS = {
    # snake / half_snake, clamp, other kernels and dilations, 16 kHz in / 32 kHz out, level counts where NeMo's
    # float32 token arithmetic is inexact
    "snake_16k": cc.variant_config(
        sample_rate=16000, samples_per_frame=320,
        encoder={"down_sample_rates": [2, 4, 5, 8], "encoded_dim": 4, "base_channels": 8, "activation": "snake",
                 "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [1, 3], "in_kernel_size": 5},
        decoder={"up_sample_rates": [8, 5, 4, 4], "input_dim": 4, "base_channels": 48, "activation": "half_snake",
                 "output_activation": "clamp", "resblock_kernel_sizes": [3, 5], "resblock_dilation_sizes": [1, 3],
                 "out_kernel_size": 7},
        quantizer={"num_groups": 2, "num_levels_per_group": [26, 39], "eps": 2e-3}),
    # elu, zero and replicate padding, grouped transposed convs, a single FSQ, odd rates
    "elu_24k": cc.variant_config(
        sample_rate=24000, samples_per_frame=480,
        encoder={"down_sample_rates": [2, 3, 5, 16], "encoded_dim": 3, "base_channels": 6, "activation": "elu",
                 "pad_mode": "zeros", "resblock_dilation_sizes": [1, 2]},
        decoder={"up_sample_rates": [16, 5, 3, 2], "input_dim": 3, "base_channels": 32, "activation": "elu",
                 "pad_mode": "replicate", "n_groups_equal_to_out_channels": True},
        quantizer={"_target_": f"{MOD}.FiniteScalarQuantizer", "num_levels": [8, 6, 5]}),
}


def crop(y: np.ndarray, n: int) -> np.ndarray:
    return np.ascontiguousarray(y[:n])


@pytest.fixture(scope="module", autouse=True)
def _compilation_cache(tmp_path_factory):
    """Identical programs compile once: every in-process CLI call loads its own model, whose jitted functions
    are new objects; XLA's persistent cache recognises the program."""
    keys = ("jax_compilation_cache_dir", "jax_persistent_cache_min_compile_time_secs",
            "jax_persistent_cache_min_entry_size_bytes")
    old = {k: getattr(jax.config, k) for k in keys}
    jax.config.update("jax_compilation_cache_dir", str(tmp_path_factory.mktemp("xla_cache")))
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    yield
    for k, v in old.items():
        jax.config.update(k, v)


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    """A real .nemo of the narrow LFR config with discriminators, its NeMo model, and the converted codec."""
    path = str(tmp_path_factory.mktemp("codec") / "small.nemo")
    model = cc.write_nemo(path, narrow_config(discriminator=True), seed=1)
    config, params, extra = cc.convert(path)
    return path, model, config, params, extra, Pretrained(CodecConfig.from_dict(config), params)


def cli(*args) -> subprocess.CompletedProcess:
    """jaxvoc's main() in this process (no interpreter start-up), stdout/stderr captured, exit code kept."""
    from jaxvoc.cli import main

    out, err = io.StringIO(), io.StringIO()
    fmt = warnings.formatwarning
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), warnings.catch_warnings():
        warnings.simplefilter("always")
        warnings.showwarning = lambda msg, cat, fname, lineno, file=None, line=None: err.write(
            warnings.formatwarning(msg, cat, fname, lineno, line))
        try:
            rc = main([str(a) for a in args])
        except SystemExit as e:
            rc = e.code
        finally:
            warnings.formatwarning = fmt
    return subprocess.CompletedProcess(args, rc, out.getvalue(), err.getvalue())


# ----------------------------------------------------------------------------------------------------------
# FSQ


@pytest.mark.parametrize("levels,groups", [([8, 7, 6, 6], 8), ([26, 3], 1), ([27, 2, 38, 39], 2)])
def test_fsq_matches_nemo(levels, groups):
    from nemo.collections.tts.modules.audio_codec_modules import FiniteScalarQuantizer, GroupFiniteScalarQuantizer

    from jaxvoc.models.fsq import GroupFSQ

    nemo_q = GroupFiniteScalarQuantizer(num_groups=groups, num_levels_per_group=levels)
    q = GroupFSQ(groups, tuple(levels))
    # the float32 constants, bit for bit
    fsq = nemo_q.fsqs[0]
    scale, offset, shift = q.fsq.compress_constants()
    n_scale = ((fsq.num_levels - 1) / 2 * (1 - fsq.eps)).reshape(-1).numpy()
    n_offset = torch.where(fsq.num_levels % 2 == 0, 0.5, 0).reshape(-1).numpy()
    np.testing.assert_array_equal(scale, n_scale)
    np.testing.assert_array_equal(offset, n_offset)
    np.testing.assert_array_equal(shift, (torch.tensor(n_offset) / torch.tensor(n_scale)).tan().numpy())

    rs = np.random.RandomState(len(levels) * 7 + groups)
    B, T, D = 3, 50, groups * len(levels)
    x = (rs.randn(B, D, T) * 1.5).astype(np.float32)
    lengths = np.array([50, 31, 7])
    xt = torch.tensor(x, requires_grad=True)
    deq_t, idx_t = nemo_q(inputs=xt, input_len=torch.tensor(lengths))
    deq_t.sum().backward()

    xj = jnp.asarray(x.transpose(0, 2, 1))
    deq_j, tok_j = jax.jit(q.quantize)(xj, jnp.asarray(lengths))
    np.testing.assert_array_equal(np.asarray(tok_j), idx_t.detach().numpy().transpose(1, 0, 2))
    np.testing.assert_array_equal(np.asarray(deq_j), deq_t.detach().numpy().transpose(0, 2, 1))
    # the straight-through gradient d(sum codes)/dx = scale (1 - tanh^2) / (L // 2), as torch's autograd gives;
    # a 1-ulp difference between the two tanh implementations moves 1 - tanh^2 by up to ~2.4e-7 absolute
    grad = jax.grad(lambda v: q.quantize(v, jnp.asarray(lengths))[0].sum())(xj)
    np.testing.assert_allclose(np.asarray(grad), xt.grad.numpy().transpose(0, 2, 1), rtol=1e-5, atol=1e-6)

    # decode: every token of the codebook
    size = int(np.prod(levels))
    toks = np.tile(np.arange(size), (groups, 1))[None]  # [1, G, size]
    ref = nemo_q.decode(indices=torch.tensor(toks).permute(1, 0, 2), input_len=torch.tensor([size])).numpy()
    out = np.asarray(jax.jit(q.decode)(jnp.asarray(toks), jnp.asarray([size])))
    np.testing.assert_array_equal(out, ref.transpose(0, 2, 1))
    if groups == 1:  # the single quantizer too
        single = FiniteScalarQuantizer(num_levels=levels)
        _, idx = single(inputs=torch.tensor(x[:, :len(levels)]), input_len=torch.tensor(lengths))
        np.testing.assert_array_equal(np.asarray(tok_j), idx.numpy().transpose(1, 0, 2))


# ----------------------------------------------------------------------------------------------------------
# Conversion of real archives


def test_convert_small_archive(small, tmp_path):
    path, model, config, params, extra, jm = small
    sd = model.state_dict()
    n_gen = sum(1 for k in sd if k.startswith(("audio_encoder.", "audio_decoder.")))
    assert len(jax.tree_util.tree_leaves(params)) == n_gen
    # the discriminators' weights, in jaxvoc layout (a Conv2d weight [out, in, kh, kw] -> [kh, kw, in, out]);
    # not their buffers (STFT windows, the SLM's resampling kernel) nor the SLM's WavLM, which NeMo 3.0.0 saves
    disc = {k: v for k, v in sd.items() if k.startswith("discriminator.")}
    assert any(".slm_model.ssl_model." in k for k in disc)
    weights = [k for k in disc if ".slm_model." not in k and not k.endswith((".window", ".resample.kernel"))]
    assert len(jax.tree_util.tree_leaves(extra["discriminator"])) == len(weights) > 0
    k2d = next(k for k, v in disc.items() if v.ndim == 4 and k.endswith("original1"))
    arr = extra["discriminator"]
    for part in cc.common.torch_key_to_path(k2d[len("discriminator."):].replace(".parametrizations.weight.original1",
                                                                                ".weight_v")):
        arr = arr[part]
    np.testing.assert_array_equal(arr, disc[k2d].numpy().transpose(2, 3, 1, 0))
    assert len(config["jaxvoc_fingerprint"]) == 16
    # through files: jaxvoc.load gives the same model
    out = str(tmp_path / "ck")
    checkpoint.save(out, "codec", config, params, extra=extra)
    import jaxvoc

    loaded = jaxvoc.load(out)
    assert loaded.fingerprint == config["jaxvoc_fingerprint"]
    assert loaded.config.codebook_size == 2016 and loaded.num_codebooks == 8
    assert set(checkpoint.read_meta(out)["trees"]) == {"params", "discriminator"}
    # the shortest input: NeMo's reflect padding needs 4 frames (3073 samples) in and 4 tokens out
    cfg = loaded.config
    assert (cfg.min_samples(), cfg.min_tokens()) == (3073, 4)
    rs = np.random.RandomState(0)
    cc.nemo_encode(model, rs.randn(cfg.min_samples()).astype(np.float32) * 0.1)
    with pytest.raises(RuntimeError, match="[Pp]adding"):
        cc.nemo_encode(model, rs.randn(cfg.min_samples() - 1).astype(np.float32) * 0.1)
    cc.nemo_decode(model, np.zeros((1, 8, cfg.min_tokens()), np.int64))
    with pytest.raises(RuntimeError, match="[Pp]adding"):
        cc.nemo_decode(model, np.zeros((1, 8, cfg.min_tokens() - 1), np.int64))
    # bad calls of the Python API: one clear error each, before anything is computed
    for call, needle in ((lambda: loaded.encode(np.zeros((1, 2, 5000))), "shape"),
                         (lambda: loaded.encode(np.zeros(3000)), "at least 3073"),
                         (lambda: loaded.encode(np.zeros((2, 5000)), [5000]), "lengths must have shape"),
                         (lambda: loaded.decode(np.zeros((7, 10), np.int32)), "7 codebooks"),
                         (lambda: loaded.decode(np.full((8, 10), 2016)), "outside [0, 2015]"),
                         (lambda: loaded.decode(np.zeros((8, 10), np.float32)), "integers")):
        with pytest.raises(UserError, match=re.escape(needle)):
            call()


def test_both_weight_norm_key_styles_and_gzip(small, tmp_path):
    """The archive rewritten with the older weight_g / weight_v keys, as a gzip tar: the same parameters."""
    path, _, config, params, _, _ = small
    folder = tmp_path / "x"
    folder.mkdir()
    with tarfile.open(path) as tf:
        for name in ("model_config.yaml", "model_weights.ckpt"):
            (folder / name).write_bytes(tf.extractfile("./" + name).read())
    sd = torch.load(folder / "model_weights.ckpt", weights_only=True)
    old = {k.replace(".parametrizations.weight.original0", ".weight_g")
           .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in sd.items()}
    assert any(k.endswith(".weight_g") for k in old)
    torch.save(old, folder / "model_weights.ckpt")
    gz = str(tmp_path / "old.nemo")
    with tarfile.open(gz, "w:gz") as tf:
        for name in ("model_config.yaml", "model_weights.ckpt"):
            tf.add(folder / name, arcname="./" + name)
    with open(gz, "rb") as f:
        assert f.read(2) == b"\x1f\x8b"
    config2, params2, _ = cc.convert(gz)
    # the older key style is recorded (so `jaxvoc export` writes it back); the rest of the config is the same
    from conversion.common import WEIGHT_NORM_KEY

    assert config2.pop(WEIGHT_NORM_KEY) == "weight_g" and WEIGHT_NORM_KEY not in config
    assert config2 == config
    jax.tree_util.tree_map(np.testing.assert_array_equal, params2, params)
    # the extracted folder converts too
    config3, _, _ = cc.convert(str(folder))
    config3.pop(WEIGHT_NORM_KEY)
    assert config3 == config


# ----------------------------------------------------------------------------------------------------------
# Equivalence


def test_mixed_length_batch(small):
    """Speech of lengths that are not whole 1024-sample frames, batched: the batch as NeMo computes it
    (isolate=False), and every item as NeMo computes it alone (isolate=True)."""
    _, model, _, _, _, jm = small
    y = speech(22050)
    lengths = np.array([len(y) - 5000, 40000, 9000])
    assert np.all(lengths % 1024)
    batch = np.zeros((3, lengths.max()), np.float32)
    for i, n in enumerate(lengths):
        batch[i, :n] = y[i * 3000:i * 3000 + n]
    ref_tok, ref_len = cc.nemo_encode(model, batch, lengths)
    tok, tlen = jm.encode(batch, lengths)
    np.testing.assert_array_equal(np.asarray(tlen), ref_len)
    np.testing.assert_array_equal(np.asarray(tok), ref_tok)
    assert len(np.unique(ref_tok)) > 100  # the stand-in weights spread the tokens over the codebook
    ref_audio, ref_alen = cc.nemo_decode(model, ref_tok, ref_len)
    audio, alen = jm.decode(ref_tok, ref_len)
    np.testing.assert_array_equal(np.asarray(alen), ref_alen)
    assert snr_db(np.asarray(audio), ref_audio) >= MIN_SNR_DB

    # isolated: each item equals NeMo on that item alone (the shorter ones have padding after them)
    tok_i, tlen_i = jm.encode(batch, lengths, isolate=True)
    audio_i, alen_i = jm.decode(np.asarray(tok_i), np.asarray(tlen_i), isolate=True)
    for i, n in enumerate(lengths):
        alone_tok, alone_len = cc.nemo_encode(model, batch[i, :n])
        T = int(alone_len[0])
        assert int(tlen_i[i]) == T
        np.testing.assert_array_equal(np.asarray(tok_i)[i, :, :T], alone_tok[0])
        assert np.all(np.asarray(tok_i)[i, :, T:] == 0)
        alone_audio, _ = cc.nemo_decode(model, alone_tok)
        assert snr_db(np.asarray(audio_i)[i, :int(alen_i[i])], alone_audio[0]) >= MIN_SNR_DB
    # the two modes differ: NeMo's own batch result for a short item is not its result alone (zeros instead of
    # its reflection after its end), so each comparison above tests something
    n2 = int(ref_alen[2])
    assert snr_db(ref_audio[2, :n2], alone_audio[0, :n2]) < 80


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_other_configs(name, tmp_path):
    cfg = VARIANTS[name]
    path = str(tmp_path / f"{name}.nemo")
    model = cc.write_nemo(path, cfg, seed=3)
    config, params, _ = cc.convert(path)
    jm = Pretrained(CodecConfig.from_dict(config), params)
    sr = cfg["sample_rate"]
    import librosa

    y = librosa.resample(speech(22050), orig_sr=22050, target_sr=sr).astype(np.float32)
    y = crop(y, int(1.3 * sr) + 131)
    ref_tok, ref_len = cc.nemo_encode(model, y)
    tok, tlen = jm.encode(y)
    assert tok.shape == ref_tok.shape[1:] and int(tlen) == int(ref_len[0])
    np.testing.assert_array_equal(np.asarray(tok), ref_tok[0])
    assert len(np.unique(ref_tok)) > 10
    ref_audio, _ = cc.nemo_decode(model, ref_tok)
    audio, _ = jm.decode(ref_tok[0])
    assert audio.shape[0] == ref_tok.shape[2] * jm.config.samples_per_token == ref_audio.shape[1]
    assert snr_db(np.asarray(audio), ref_audio[0]) >= MIN_SNR_DB


def test_full_size_lfr(tmp_path):
    """The published Low Frame-rate Speech Codec architecture at full size (discriminators left out: they do
    not take part in encode/decode and would add 170 MB)."""
    path = str(tmp_path / "lfr.nemo")
    model = cc.write_nemo(path, cc.lfr_config(discriminator=False), seed=0)
    config, params, _ = cc.convert(path)
    os.remove(path)  # 330 MB
    cfg = CodecConfig.from_dict(config)
    assert (cfg.sample_rate, cfg.samples_per_frame, cfg.num_codebooks, cfg.codebook_size) == (22050, 1024, 8, 2016)
    jm = Pretrained(cfg, params)
    y = crop(speech(22050), 33000)
    ref_tok, ref_len = cc.nemo_encode(model, y)
    tok, tlen = jm.encode(y)
    np.testing.assert_array_equal(np.asarray(tok), ref_tok[0])
    # the stand-in codec gives varied codes on this clip (not one constant code), so the equality above is
    # meaningful: 67 distinct codes of 2016 on the noise-floored fixture
    assert len(np.unique(ref_tok)) > 50
    ref_audio, _ = cc.nemo_decode(model, ref_tok)
    audio, _ = jm.decode(ref_tok[0])
    assert snr_db(np.asarray(audio), ref_audio[0]) >= MIN_SNR_DB


# ----------------------------------------------------------------------------------------------------------
# Command line


def test_cli_round_trip(small, tmp_path):
    path, model, config, _, _, _ = small
    ck = tmp_path / "ck"
    proc = run_cli("convert", "codec", path, ck)  # a real process: the installed entry point works
    assert proc.returncode == 0, proc.stderr
    import soundfile as sf

    y = speech(22050)
    files = []
    for i, n in enumerate([len(y) - 333, 66000]):  # with the 24 kHz file: 3 lengths, 1 bucket of 96 frames
        files.append(tmp_path / f"a{i}.wav")
        sf.write(files[-1], y[:n], 22050, subtype="FLOAT")
    files.append(tmp_path / "b24.wav")
    sf.write(files[-1], speech(24000), 24000, subtype="FLOAT")
    out = tmp_path / "tok"
    proc = cli("encode", ck, *files, "-o", out, "--batch-size", "2")
    assert proc.returncode == 0, proc.stderr
    assert "resampled from 24000 Hz to 22050 Hz" in proc.stderr
    assert "1 compilation(s) of the encoder for 1 length bucket(s)" in proc.stdout, proc.stdout
    from jaxvoc.io.audio import load_audio

    wav = tmp_path / "wav"
    proc = cli("decode", ck, *[out / (f.stem + ".npz") for f in files], "-o", wav, "--subtype", "FLOAT")
    assert proc.returncode == 0, proc.stderr
    for f in files:
        z = np.load(out / (f.stem + ".npz"))
        audio = load_audio(str(f), 22050)
        assert z["tokens"].dtype == np.int32 and z["tokens"].shape[0] == 8
        assert int(z["num_samples"]) == len(audio) and int(z["sample_rate"]) == 22050
        assert str(z["model"]) == config["jaxvoc_fingerprint"]
        ref_tok, _ = cc.nemo_encode(model, audio)  # NeMo on this file alone
        np.testing.assert_array_equal(z["tokens"], ref_tok[0])
        ref_audio, _ = cc.nemo_decode(model, ref_tok)
        got, sr = sf.read(wav / (f.stem + ".wav"), dtype="float32")
        assert sr == 22050 and len(got) == len(audio)
        assert snr_db(got, ref_audio[0, :len(audio)]) >= MIN_SNR_DB


def test_compare_command(small, tmp_path):
    import soundfile as sf

    path = small[0]
    clip = tmp_path / "clip.wav"
    sf.write(clip, speech(22050)[:20000], 22050, subtype="FLOAT")
    report = tmp_path / "r.json"
    proc = cli("compare", "codec", path, "--input", clip, "--report", report, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert "token agreement" in proc.stdout and "decode SNR" in proc.stdout
    import json

    run = json.loads(report.read_text())["runs"][0]
    assert run["token_agreement_pct"] == 100.0 and run["snr_db"] >= MIN_SNR_DB
    assert os.path.getsize(tmp_path / "r.png") > 10000


def test_cli_bad_inputs(small, tmp_path):
    path, _, config, params, extra, _ = small
    ck = tmp_path / "ck"
    checkpoint.save(str(ck), "codec", config, params)
    other = tmp_path / "other"
    changed = jax.tree_util.tree_map(lambda a: np.asarray(a) * 1.01, params)
    checkpoint.save(str(other), "codec", {**config, "jaxvoc_fingerprint": "0123456789abcdef"}, changed)
    good_wav = tmp_path / "ok.wav"
    import soundfile as sf

    sf.write(good_wav, speech(22050)[:70000], 22050)  # the bucket and batch of test_cli_round_trip: no compiling
    tok_dir = tmp_path / "tok"
    assert cli("encode", ck, good_wav, "-o", tok_dir, "--batch-size", "2").returncode == 0
    good = tok_dir / "ok.npz"
    z = dict(np.load(good))

    def npz(name, **upd):
        p = tmp_path / f"{name}.npz"
        d = dict(z)
        d.update(upd)
        d = {k: v for k, v in d.items() if v is not None}
        np.savez(p, **d)
        return p

    out = tmp_path / "out"

    def bad(cmd, *args, needles=()):
        proc = cli(cmd, ck if cmd != "decode-other" else other, *args, "-o", out)
        assert_user_error(proc, *needles)
        assert not out.exists() or not os.listdir(out), os.listdir(out)

    text = tmp_path / "text.wav"
    text.write_text("not audio")
    short = tmp_path / "short.wav"
    sf.write(short, speech(22050)[:3000], 22050)
    bad("encode", tmp_path / "missing.wav", needles=("not found",))
    bad("encode", text, needles=("cannot read",))
    bad("encode", short, needles=("too short", "3073"))  # NeMo itself fails below 3073 samples (4 frames)
    bad("decode", tmp_path / "missing.npz", needles=("not found",))
    bad("decode", text, needles=("token file",))
    bad("decode", npz("notok", tokens=None), needles=("no 'tokens'",))
    bad("decode", npz("range", tokens=np.where(z["tokens"] == z["tokens"].max(), 2016, z["tokens"])),
        needles=("outside [0, 2015]",))
    bad("decode", npz("neg", tokens=-z["tokens"] - 1), needles=("outside",))
    bad("decode", npz("books", tokens=z["tokens"][:6]), needles=("6 codebooks", "has 8"))
    bad("decode", npz("shape", tokens=z["tokens"][None]), needles=("shape", "[num_codebooks, frames]"))
    bad("decode", npz("float", tokens=z["tokens"].astype(np.float32)), needles=("integers",))
    bad("decode", npz("rate", sample_rate=np.int64(24000)), needles=("24000 Hz",))
    bad("decode", npz("few", tokens=z["tokens"][:, :2], num_samples=np.int64(2000)), needles=("too few",))
    bad("decode", npz("len", num_samples=np.int64(10 ** 7)), needles=("num_samples",))
    proc = cli("decode", other, good, "-o", out)  # a token file from a different model
    assert_user_error(proc, "different model", "0123456789abcdef")
    assert not out.exists()
    proc = cli("encode", tmp_path / "nock", good_wav, "-o", out)
    assert_user_error(proc, "checkpoint not found")
    # a good file after a bad one: still nothing written
    bad("decode", good, npz("books2", tokens=z["tokens"][:6]), needles=("codebooks",))
    # tokens saved without model fields (e.g. from NeMo) decode to every frame
    plain = npz("plain", model=None, num_samples=None, sample_rate=None, codebook_size=None, samples_per_frame=None)
    assert cli("decode", ck, plain, "-o", out, "--batch-size", "2").returncode == 0
    assert sf.info(str(out / "plain.wav")).frames == z["tokens"].shape[1] * 1024


def _archive_variant(src: str, dst: str, *, config=None, weights=None, extra_members=(), drop=()):
    """Rewrites a .nemo with a changed config text / state dict / extra members."""
    with tarfile.open(src) as tf:
        cfg_text = tf.extractfile("./model_config.yaml").read().decode()
        raw = tf.extractfile("./model_weights.ckpt").read()
    if config is not None:
        cfg_text = config(cfg_text)
    if weights is not None:
        sd = torch.load(io.BytesIO(raw), weights_only=True)
        buf = io.BytesIO()
        torch.save(weights(sd), buf)
        raw = buf.getvalue()
    with tarfile.open(dst, "w") as tf:
        for name, data in (("./model_config.yaml", cfg_text.encode()), ("./model_weights.ckpt", raw), *extra_members):
            if name in drop:
                continue
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return dst


def test_convert_bad_archives(small, tmp_path):
    path = small[0]
    out = tmp_path / "out"

    def bad(src, *needles):
        assert_user_error(cli("convert", "codec", src, out), *needles)
        assert not out.exists()

    bad(tmp_path / "missing.nemo", "not found")
    text = tmp_path / "text.nemo"
    text.write_text("hello")
    bad(text, "not a readable .nemo")
    trunc = tmp_path / "trunc.nemo"
    trunc.write_bytes(open(path, "rb").read()[:200000])
    bad(trunc, "trunc")
    bad(_archive_variant(path, str(tmp_path / "evil.nemo"), extra_members=[("../evil.txt", b"x")]), "unsafe path")
    bad(_archive_variant(path, str(tmp_path / "noweights.nemo"), drop=("./model_weights.ckpt",)),
        "no model_weights.ckpt")
    bad(_archive_variant(path, str(tmp_path / "causal.nemo"),
                         config=lambda t: t.replace("HiFiGANEncoder", "CausalHiFiGANEncoder")),
        "CausalHiFiGANEncoder", "not supported")
    bad(_archive_variant(path, str(tmp_path / "rvq.nemo"),
                         config=lambda t: t.replace("GroupFiniteScalarQuantizer", "ResidualVectorQuantizer")),
        "ResidualVectorQuantizer", "not supported")
    bad(_archive_variant(path, str(tmp_path / "levels.nemo"),
                         config=lambda t: t.replace("- 7\n  - 6\n  - 6", "- 6\n  - 7\n  - 6")),
        "num_levels", "does not belong")
    bad(_archive_variant(path, str(tmp_path / "width.nemo"),
                         config=lambda t: t.replace("base_channels: 64", "base_channels: 32")),
        "does not fit", "wrong shape")
    key = "audio_decoder.post_conv.conv.bias"
    bad(_archive_variant(path, str(tmp_path / "missing_t.nemo"), weights=lambda sd: {k: v for k, v in sd.items()
                                                                                      if k != key}),
        "missing 1", "audio_decoder.post_conv.conv.bias")
    bad(_archive_variant(path, str(tmp_path / "extra_arg.nemo"),
                         config=lambda t: t.replace("activation: lrelu", "activation: lrelu\n  frobnicate: 3", 1)),
        "frobnicate")


def test_cli_encode_decode_all_or_nothing(small, tmp_path):
    """encode and decode write every output or none: the last target is a folder, so its rename fails and the
    outputs renamed before it are removed again; one line names the target."""
    import soundfile as sf

    path, _, config, params, _, _ = small
    ck = tmp_path / "ck"
    checkpoint.save(str(ck), "codec", config, params)
    wavs = []
    for name in ("a", "b"):
        wavs.append(tmp_path / f"{name}.wav")
        sf.write(wavs[-1], speech(22050)[:70000], 22050)
    out = tmp_path / "tok"
    (out / "b.npz").mkdir(parents=True)
    assert_user_error(cli("encode", ck, *wavs, "-o", out), "is a directory", "b.npz")
    assert os.listdir(out) == ["b.npz"]
    (out / "b.npz").rmdir()
    proc = cli("encode", ck, *wavs, "-o", out)
    assert proc.returncode == 0, proc.stderr
    wav = tmp_path / "wav"
    (wav / "b.wav").mkdir(parents=True)
    assert_user_error(cli("decode", ck, out / "a.npz", out / "b.npz", "-o", wav), "is a directory", "b.wav")
    assert os.listdir(wav) == ["b.wav"]
