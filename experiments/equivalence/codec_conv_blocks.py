"""NeMo's period discriminator (nemo_toolkit 3.0.0 PeriodDiscriminator): how far each feature map lands from
NeMo's float64 run, JAX (for several ``cin_block`` input-channel block sizes of NeMo's Conv2dNorm) against
NeMo's own float32 — the measurement behind ``jaxvoc.models.discriminators.CIN_BLOCK`` (docs/codec.md).

    python -m experiments.equivalence.codec_conv_blocks [--period 3] [--samples 3001]

Weights: conversion.codec.randomize_discriminator_ (as tests/test_codec_gan.py);
audio: two segments of the bundled speech at 22050 Hz. Each cell: JAX vs NeMo f64 / NeMo f32 vs NeMo f64 (dB).
"""

from __future__ import annotations

import argparse
import copy

import jax.numpy as jnp
import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--period", type=int, default=3)
    ap.add_argument("--samples", type=int, default=3001)
    ap.add_argument("--blocks", default="0,32,16,8", help="cin_block sizes to measure (0: XLA's plain conv)")
    args = ap.parse_args()

    import soundfile as sf
    import torch
    from nemo.collections.tts.modules.audio_codec_modules import PeriodDiscriminator

    import jaxvoc.models.discriminators as D
    from conversion import codec as cc
    from conversion import common
    from conversion.report import snr_db

    torch.manual_seed(0)
    m = PeriodDiscriminator(args.period).eval()
    cc.randomize_discriminator_(m, 0)
    a, sr = sf.read("tests/fixtures/speech_22050.wav", dtype="float32")
    n = args.samples
    x = np.stack([a[3000:3000 + n], a[9000:9000 + n]]).astype(np.float32)
    with torch.no_grad():
        _, f32 = m(audio=torch.from_numpy(x))
        _, f64 = copy.deepcopy(m).double()(audio=torch.from_numpy(x).double())
    sd = common.normalize_keys({k: v.numpy() for k, v in m.state_dict().items()})
    params = common.unflatten({common.torch_key_to_path(k): common.to_jax_layout(v) for k, v in sd.items()})
    print(f"period {args.period}, {n} samples; each cell: JAX vs NeMo f64 / NeMo f32 vs NeMo f64 (dB), layers 0-5")
    saved = D.CIN_BLOCK
    try:
        for blk in (int(b) for b in args.blocks.split(",")):
            D.CIN_BLOCK = blk or None
            _, jf = D.DiscriminatorP(args.period, nemo=True).apply({"params": params}, jnp.asarray(x))
            cells = [f"{snr_db(np.asarray(j).transpose(0, 3, 1, 2), r64.numpy()):.1f}/"
                     f"{snr_db(r.numpy(), r64.numpy()):.1f}" for j, r, r64 in zip(jf, f32, f64)]
            print(f"cin_block {blk or 'none'}: " + "  ".join(cells))
    finally:
        D.CIN_BLOCK = saved


if __name__ == "__main__":
    main()
