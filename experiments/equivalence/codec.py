"""Acceptance figures of the codec port: the JAX codec against NeMo 3.0.0's AudioCodecModel on real speech,
float32 on the CPU, for full-size configs.

    python -m experiments.equivalence.codec [--configs lfr,codec44k] [--json FILE]

Per config, a real ``.nemo`` is written by NeMo (``AudioCodecModel.save_to``, stand-in weights from a fixed
seed, see conversion.codec.randomize_) and converted by ``conversion.codec.convert``. Per speech clip (the
fixture, and a cut of it whose length is not a whole number of frames):

- token identity: JAX ``encode`` vs NeMo ``AudioCodecModel.encode`` (also both against NeMo in float64, to show
  how many tokens float32 rounding alone decides);
- decode SNR: JAX ``decode`` vs NeMo ``decode`` given the same (NeMo's) tokens;
- distance to float64: NeMo float32 and JAX float32 decoder output each against NeMo's decoder run in float64
  (``.double()``) on the same tokens: JAX must be no further than NeMo's own float32 (within 3 dB).

Configs: ``lfr`` is the Low Frame-rate Speech Codec (22.05 kHz, 1024 samples/frame, 8 x FSQ[8,7,6,6]);
``codec44k`` is NeMo's 44.1 kHz audio codec recipe (audio_codec_44100.yaml: 512 samples/frame, encoder
dilations 1/3/5, half-snake decoder, clamp output, 8 x FSQ[8,5,5,5]).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time

import numpy as np
from experiments import FIXTURES



def configs() -> dict:
    from conversion import codec as cc

    m = cc.MODULES
    return {
        "lfr": cc.lfr_config(discriminator=False),
        "codec44k": cc.variant_config(
            sample_rate=44100, samples_per_frame=512,
            encoder={"_target_": f"{m}.HiFiGANEncoder", "down_sample_rates": [2, 4, 8, 8], "encoded_dim": 32,
                     "base_channels": 48, "activation": "lrelu"},
            decoder={"_target_": f"{m}.HiFiGANDecoder", "up_sample_rates": [8, 8, 4, 2], "input_dim": 32,
                     "base_channels": 768, "activation": "half_snake", "output_activation": "clamp"},
            quantizer={"num_groups": 8, "num_levels_per_group": [8, 5, 5, 5]}),
    }


def clips(sample_rate: int) -> dict[str, np.ndarray]:
    from jaxvoc.io.audio import load_audio

    fx = FIXTURES
    name = f"speech_{sample_rate}.wav"
    path = os.path.join(fx, name) if os.path.exists(os.path.join(fx, name)) else os.path.join(fx, "speech_22050.wav")
    y = load_audio(path, sample_rate)
    cut = int(1.7 * sample_rate) + 101
    return {os.path.basename(path): y, f"{os.path.basename(path)}[:{cut}]": y[:cut]}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", default="lfr,codec44k")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="write the figures here")
    args = p.parse_args(argv)

    import jax
    import torch

    from conversion import codec as cc
    from conversion.report import snr_db
    from jaxvoc.models.codec import CodecConfig, Pretrained

    results = []
    all_cfgs = configs()
    for name in args.configs.split(","):
        t0 = time.time()
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, f"{name}.nemo")
            model = cc.write_nemo(path, all_cfgs[name], seed=args.seed)
            config, params, _ = cc.convert(path)
        cfg = CodecConfig.from_dict(config)
        jm = Pretrained(cfg, params)
        model64 = cc.build_nemo_model(all_cfgs[name], randomize=False)
        model64.load_state_dict(model.state_dict())
        model64 = model64.double().eval()
        for clip, y in clips(cfg.sample_rate).items():
            tok32, _ = cc.nemo_encode(model, y)
            tok64, _ = cc.nemo_encode(model64, y.astype(np.float64))
            tokj = np.asarray(jm.encode(y)[0])[None]
            a32, _ = cc.nemo_decode(model, tok32)
            a64, _ = cc.nemo_decode(model64, tok32)
            aj = np.asarray(jm.decode(tok32[0])[0])[None]
            r = {"config": name, "clip": clip, "samples": len(y), "frames": int(tok32.shape[2]),
                 "tokens": int(tok32.size), "distinct_tokens": int(len(np.unique(tok32))),
                 "token_identity_pct": float(np.mean(tokj == tok32) * 100),
                 "nemo32_vs_nemo64_token_identity_pct": float(np.mean(tok32 == tok64) * 100),
                 "jax_vs_nemo64_token_identity_pct": float(np.mean(tokj == tok64) * 100),
                 "decode_snr_db": snr_db(aj, a32),
                 "nemo32_vs_nemo64_snr_db": snr_db(a32, a64), "jax32_vs_nemo64_snr_db": snr_db(aj, a64)}
            r["float64_margin_db"] = r["jax32_vs_nemo64_snr_db"] - r["nemo32_vs_nemo64_snr_db"]
            r["pass"] = bool(r["token_identity_pct"] == 100.0 and r["decode_snr_db"] >= 110.0
                             and r["float64_margin_db"] >= -3.0)
            results.append(r)
            print(json.dumps(r), flush=True)
        print(f"# {name}: {time.time() - t0:.0f} s", flush=True)

    print("\n| config | clip | samples | frames | token identity | decode SNR | NeMo f32 vs f64 | JAX f32 vs NeMo f64 "
          "| tokens: NeMo f32 / JAX vs NeMo f64 | pass |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for r in results:
        print(f"| {r['config']} | {r['clip']} | {r['samples']} | {r['frames']} | {r['token_identity_pct']:.2f} % "
              f"({r['tokens']} tokens, {r['distinct_tokens']} distinct) | {r['decode_snr_db']:.1f} dB | "
              f"{r['nemo32_vs_nemo64_snr_db']:.1f} dB | {r['jax32_vs_nemo64_snr_db']:.1f} dB | "
              f"{r['nemo32_vs_nemo64_token_identity_pct']:.2f} % / {r['jax_vs_nemo64_token_identity_pct']:.2f} % | "
              f"{'yes' if r['pass'] else 'NO'} |")
    machine = (f"{platform.machine()}, {os.cpu_count()} cores, {platform.system()} {platform.release()}; "
               f"jax {jax.__version__}, torch {torch.__version__}")
    print(f"\nmachine: {machine}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"machine": machine, "results": results}, f, indent=2)
    return 0 if all(r["pass"] for r in results) else 1


if __name__ == "__main__":
    sys.exit(main())
