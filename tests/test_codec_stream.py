"""The codec in windows (jaxvoc.models.codec_stream) against NeMo 3.0.0: streaming decode and long files
encoded window by window.

* Receptive fields computed from the config cover every position a NaN in one input frame reaches through
  NeMo's own encoder / decoder (float64; NaN * 0 is NaN, so this is the structural field, which a finite
  perturbation would understate), with at most a frame or two to spare.
* Tokens from windows are IDENTICAL to NeMo's encode of the whole file (test_codec.py explains why tokens
  can be compared exactly on this speech and these seeds).
* A stream of token pushes (random splits, 1-token pushes included) concatenates to NeMo's decode of the
  whole sequence to >= 110 dB (test_codec.MIN_SNR_DB and its justification), with no compilation after the
  first push.

The narrow LFR config of test_codec.py: the published rates, kernels and dilations, narrow channels.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from conftest import speech
from conversion import codec as cc
from conversion.report import snr_db
from jaxvoc.models import codec_stream as cs
from jaxvoc.models.codec import CodecConfig, Pretrained

MIN_SNR_DB = 110.0  # as test_codec.py: NeMo's float32 rounding is ~115-125 dB from its float64 run


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = str(tmp_path_factory.mktemp("codec") / "small.nemo")
    cfg = cc.variant_config(encoder={"base_channels": 8}, decoder={"base_channels": 64}, discriminator=False)
    model = cc.write_nemo(path, cfg, seed=1)
    config, params, _ = cc.convert(path)
    return model, Pretrained(CodecConfig.from_dict(config), params), path


def nan_span(out, j):
    """(left, right) extent around j of the NaN positions of out [T] (later positions see j on their left)."""
    idx = np.nonzero(np.isnan(out))[0]
    assert len(idx)
    return idx.max() - j, j - idx.min()


def test_receptive_fields_cover_nemo(small):
    model, jm, _ = small
    cfg = jm.config
    m64 = model.double()
    try:
        rf = cs.decoder_receptive_field(cfg)
        T, j = 40, 20
        x = torch.randn(1, cfg.decoder.input_dim, T, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        x[:, :, j] = float("nan")
        with torch.inference_mode():
            y, _ = m64.audio_decoder(inputs=x, input_len=torch.tensor([T]))
        left, right = nan_span(y[0].numpy().reshape(-1), j * cfg.samples_per_token)
        left, right = left // cfg.samples_per_token, -(-right // cfg.samples_per_token)
        assert left <= rf.left and right <= rf.right and rf.left - left <= 2 and rf.right - right <= 2, (left, right, rf)

        rf = cs.encoder_receptive_field(cfg)
        spf = cfg.samples_per_frame
        F, j = 40, 20  # well inside: reflect padding at the ends must not copy the NaN back
        a = torch.randn(1, F * spf, dtype=torch.float64, generator=torch.Generator().manual_seed(1)) * 0.1
        a[0, j * spf] = float("nan")  # the first sample of frame j: its right field is the longer one
        with torch.inference_mode():
            enc, _ = m64.audio_encoder(audio=a, audio_len=torch.tensor([F * spf]))
        left, right = nan_span(np.where(np.isnan(enc[0].numpy()).any(0), np.nan, 0.0), j)
        assert left <= rf.left and right <= rf.right and rf.left - left <= 2 and rf.right - right <= 2, (left, right, rf)
    finally:
        model.float()


def test_long_encode_and_stream_decode_match_nemo(small):
    model, jm, _ = small
    y = speech(22050)
    y = np.concatenate([y, y[::-1]])[:150_000]  # 147 frames, not a whole number of them
    ref_tok, _ = cc.nemo_encode(model, y)
    rf = cs.encoder_receptive_field(jm.config)
    before = jm.compilations["encode"]
    tokens = jm.encode_long(y, window=rf.total + 20)
    assert jm.compilations["encode"] - before == 1
    np.testing.assert_array_equal(tokens, ref_tok[0])

    ref_audio, _ = cc.nemo_decode(model, ref_tok)
    W = cs.decoder_receptive_field(jm.config).total + 12
    rng = np.random.default_rng(0)
    T = tokens.shape[1]
    cuts = np.sort(rng.choice(np.arange(1, T), 25, replace=False))
    parts = np.split(np.arange(T), cuts)
    parts = [p for q in parts[:3] for p in np.array_split(q, len(q))] + parts[3:]  # 1-token pushes first
    s = jm.stream_decode(window=W)
    got = [s.push(tokens[:, parts[0]])]
    compiled = jm.compilations["decode"]
    got += [s.push(tokens[:, p]) for p in parts[1:]] + [s.flush()]
    assert jm.compilations["decode"] == compiled
    audio = np.concatenate(got)
    assert audio.shape == ref_audio[0].shape
    assert snr_db(audio, ref_audio[0]) >= MIN_SNR_DB
    assert s.latency_frames == cs.decoder_receptive_field(jm.config).right


def test_encode_command_window(small, tmp_path):
    """`jaxvoc encode --window` on a long file: NeMo's tokens of the whole file."""
    import soundfile as sf

    import jaxvoc.cli

    model, jm, path = small
    ck = str(tmp_path / "ck")
    assert jaxvoc.cli.main(["convert", "codec", path, ck]) == 0
    y = speech(22050)
    y = np.concatenate([y, y[::-1]])[:120_000]
    sf.write(str(tmp_path / "long.wav"), y, 22050, subtype="FLOAT")
    W = cs.encoder_receptive_field(jm.config).total + 20
    assert jaxvoc.cli.main(["encode", ck, str(tmp_path / "long.wav"), "-o", str(tmp_path / "tok"),
                            "--window", str(W)]) == 0
    ref_tok, _ = cc.nemo_encode(model, y)
    np.testing.assert_array_equal(np.load(tmp_path / "tok" / "long.npz")["tokens"], ref_tok[0])
