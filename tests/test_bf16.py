"""bfloat16 synthesis (``jaxvoc.load(..., dtype="bfloat16")``, ``jaxvoc synth --dtype bfloat16``) against the
official float32 output, on real speech mels.

bfloat16 keeps 8 significant bits (a rounding error of ~2^-9, ~50 dB per operation), so no equivalence bar
applies; the floors below are regression floors: the SNRs measured on these models (2026-11-29, jax 0.10.2
CPU) minus a 5 dB margin. The published sizes measure in ``python -m experiments.equivalence.bf16``."""

from __future__ import annotations

import numpy as np
import pytest
import soundfile as sf
import torch

import jaxvoc
from conftest import run_cli, speech
from conversion import bigvgan as cb
from conversion import waveglow as cw
from conversion.report import snr_db
from jaxvoc.errors import UserError
from jaxvoc.io import checkpoint
from jaxvoc.models import waveglow as wg
from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained

# bigvgan_base_24khz_100band (up-sampling 8, 8, 2, 2; resblock kernels 3, 7, 11) with v2's AMPBlock1 and
# log-scale SnakeBeta, at 32 channels (CI time; v2 24 kHz at 64 channels measured 36.3 dB)
BIGVGAN = dict(BigVGANConfig.official("bigvgan_base_24khz_100band").to_dict(), upsample_initial_channel=32,
               resblock="1", activation="snakebeta", snake_logscale=True)
BIGVGAN_FLOOR_DB = 34.0  # measured 38.9 dB
WG = wg.WaveGlowConfig(n_flows=4, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(8, 16, 3))
WAVEGLOW_FLOOR_DB = 39.0  # measured 44.5 and 44.7 dB (sigma 0)


def test_bigvgan_bfloat16_load(tmp_path):
    folder = cb.write_official_folder(str(tmp_path / "official"), BIGVGAN, seed=3)
    cfg, params, _ = cb.convert(folder)
    checkpoint.save(str(tmp_path / "ckpt"), "bigvgan", cfg, params)
    model = jaxvoc.load(str(tmp_path / "ckpt"), dtype="bfloat16")
    assert {str(x.dtype) for x in jaxvoc_leaves(model.params)} == {"bfloat16"}
    mel = cb.official_mel(speech(24000), BIGVGAN)[:, :, 40:72]
    official = cb.official_model(BIGVGAN, torch.load(f"{folder}/{cb.GENERATOR_FILE}", weights_only=True)["generator"])
    with torch.inference_mode():
        ref = official(mel)[0, 0].numpy()
    out = np.asarray(model(mel[0].numpy().T))
    assert out.dtype == np.float32 and out.shape == ref.shape
    print("bigvgan bfloat16 SNR dB:", round(snr_db(out, ref), 1))
    assert snr_db(out, ref) >= BIGVGAN_FLOOR_DB, snr_db(out, ref)
    with pytest.raises(UserError, match="float16"):
        Pretrained(BigVGANConfig.from_dict(cfg), params, dtype="float16")


def jaxvoc_leaves(tree):
    import jax

    return jax.tree_util.tree_leaves(tree)


def test_synth_waveglow_bfloat16(tmp_path):
    """Through the CLI: `jaxvoc synth --dtype bfloat16` (length buckets, padded batch) on two speech mels."""
    model = cw.official_model(WG, seed=2)
    cw.randomize_(model, 2)
    cw.detach_weight_norm_(model)
    src = cw.save_full_object(str(tmp_path / "waveglow.pt"), model)
    assert run_cli("convert", "waveglow", src, tmp_path / "ck").returncode == 0
    full = cw.official_mel(speech(22050), WG)[0].numpy()
    mels = [np.ascontiguousarray(full[:, 20:43]), np.ascontiguousarray(full[:, 50:90])]
    for i, m in enumerate(mels):
        np.save(tmp_path / f"m{i}.npy", m)
    proc = run_cli("synth", tmp_path / "ck", *[tmp_path / f"m{i}.npy" for i in range(2)], "-o", tmp_path / "out",
                   "--subtype", "FLOAT", "--sigma", "0", "--dtype", "bfloat16")
    assert proc.returncode == 0, proc.stderr
    for i, m in enumerate(mels):
        out, _ = sf.read(tmp_path / "out" / f"m{i}.wav", dtype="float32")
        with torch.inference_mode(), cw.official_noise(seed=0):
            ref = model.infer(torch.from_numpy(m[None]), sigma=0.0)[0].numpy()
        print(f"waveglow bfloat16 item {i} SNR dB:", round(snr_db(out, ref), 1))
        assert snr_db(out, ref) >= WAVEGLOW_FLOOR_DB, (i, snr_db(out, ref))
