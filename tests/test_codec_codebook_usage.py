"""The codebook usage of the codec's validation (``jaxvoc.train.codec.CodecValidator``: per codebook the
fraction of its codes used and the perplexity, exp of the entropy of the code histogram over all frames of all
held-out clips) against the codes of NeMo 3.0.0's own ``AudioCodecModel.encode`` on the same weights (a random
NeMo model of the LFR architecture at narrow widths, LSUV-scaled so that its codes vary, converted by
conversion/codec.py), the histogram statistics computed here from NeMo's codes with numpy."""

from __future__ import annotations

import numpy as np
import soundfile as sf

from conversion import codec as cc
from conversion import common
from experiments.reference.codec_train import SPEECH
from jaxvoc.train.codec import CodecObjective, CodecValidator

# a discriminator section without the SLM member: the validation does not use the discriminators, and this
# needs no WavLM
STFT_ONLY = {"_target_": f"{cc.MODULES}.Discriminator", "discriminators": [
    {"_target_": "nemo.collections.tts.modules.encodec_modules.MultiResolutionDiscriminatorSTFT",
     "resolutions": [[128, 32, 128]]}]}
# Both sides reduce integer histograms in float64; only the order of the entropy's sum can differ
PERPLEXITY_REL = 1e-9


def nemo_usage(model, clips: list[np.ndarray]) -> tuple[dict, int]:
    """(usage by the validator's names, frames) from NeMo's codes of each clip encoded alone."""
    hist = None
    frames = 0
    for clip in clips:
        tokens, lengths = cc.nemo_encode(model, clip)
        codes = tokens[0, :, : lengths[0]]  # [codebooks, frames]
        frames += codes.shape[1]
        size = model.vector_quantizer.codebook_size
        h = np.stack([np.bincount(row, minlength=size) for row in codes])
        hist = h if hist is None else hist + h
    out = {}
    for c, row in enumerate(hist):
        p = row[row > 0] / row.sum()
        out[f"codebook{c}_used"] = np.count_nonzero(row) / row.size
        out[f"codebook{c}_perplexity"] = float(np.exp(-(p * np.log(p)).sum()))
    return out, frames


def test_codebook_usage_matches_nemo_codes():
    cfg = cc.variant_config(encoder={"base_channels": 8}, decoder={"base_channels": 64}, discriminator=STFT_ONLY)
    model = cc.build_nemo_model(cc.variant_config(cfg, discriminator=False), seed=1)
    obj = CodecObjective(cfg, source="narrow_lfr")
    sd = {k: v.detach().numpy() for k, v in model.state_dict().items()}
    params_g, _ = cc.convert_state_dict(common.normalize_keys(sd), obj.codec, "NeMo's weights")

    y, _ = sf.read(SPEECH, dtype="float32")
    n = 30000  # not whole frames (1024 samples each); two clips of one length: one compiled program
    clips = [np.ascontiguousarray(y[:n]), np.ascontiguousarray(y[n:2 * n])]
    got, _ = CodecValidator(obj, clips)({"params_g": params_g})
    ref, frames = nemo_usage(model, clips)

    print({k: (got[k], ref[k]) for k in ref}, frames)
    assert set(ref) == {k for k in got if k.startswith("codebook")}
    assert len(ref) == 2 * obj.codec.num_codebooks and frames == 2 * 30
    for k, v in ref.items():
        if k.endswith("_used"):  # counts of distinct codes: equal when the codes are
            assert got[k] == v, (k, got[k], v)
        else:
            assert abs(got[k] - v) <= PERPLEXITY_REL * v, (k, got[k], v)
    # not a trivial histogram: several codes per codebook, some of them repeated (perplexity below the count of
    # distinct codes), so a wrong code, count or mask changes the figures
    size = obj.codec.codebook_size
    for c in range(obj.codec.num_codebooks):
        used, ppl = ref[f"codebook{c}_used"] * size, ref[f"codebook{c}_perplexity"]
        assert used >= 3 and ppl < used - 1e-6, (c, used, ppl)
