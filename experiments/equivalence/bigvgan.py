"""Acceptance figures of BigVGAN: every official config at its published size, float32 on CPU, on the mel of
real speech.

    python -m experiments.equivalence.bigvgan [--configs NAME ...] [--input AUDIO] [--frames N] [--out FILE.json]

For each config: a stand-in model with the official package (random weights, seed 0, Snake parameters
spread), converted through the files on disk as `jaxvoc convert` does; the official float32 output, the
official float64 output (`.double()`), and the jaxvoc output on the same mel (the official front-end's).
Prints SNR(jax, official fp32), SNR(jax, official fp64), SNR(official fp32, official fp64), and whether
the issue's bounds hold (>= 110 dB; jax no further from fp64 than official fp32, within 3 dB). Also the mel
front-end bounds (max / mean abs vs the official log-mel, and both against the official code run in float64).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from experiments import fixture



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--configs", nargs="*", help="official config names (default: all 9)")
    p.add_argument("--input", help="speech file (default: the bundled espeak-ng fixture at the model's rate)")
    p.add_argument("--frames", type=int, default=128, help="mel frames (from frame 40 on)")
    p.add_argument("--out", help="write the table as JSON here")
    p.add_argument("--mel-only", action="store_true", help="only the front-end columns (seconds, not an hour); "
                   "with --out, updates those columns of an existing JSON")
    args = p.parse_args(argv)

    import warnings

    warnings.filterwarnings("ignore")
    import jax.numpy as jnp
    import numpy as np
    import torch

    from conversion import bigvgan as cb
    from conversion import report as rp
    from jaxvoc.io.audio import load_audio
    from jaxvoc.dsp.stft import mel_spectrogram
    from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained, official_configs
    from conversion.bigvgan import official_mel_f64

    rows = []
    for name in args.configs or official_configs():
        t0 = time.time()
        config = BigVGANConfig.official(name).to_dict()
        cfg0 = BigVGANConfig.from_dict(config)
        if args.input:
            audio = load_audio(args.input, cfg0.sampling_rate)
        else:
            sr = min((22050, 24000, 44100), key=lambda r: abs(r - cfg0.sampling_rate))
            audio = load_audio(fixture(f"speech_{sr}.wav"), sr)
        # front-end
        ref_mel = cb.official_mel(audio, config)
        m_ref = ref_mel[0].numpy().T
        m_jax = np.asarray(mel_spectrogram(audio[None], cfg0.synthesis_mel))[0]
        m_64 = official_mel_f64(audio, cfg0)
        mel_cols = {"mel_max_abs": float(np.max(np.abs(m_jax - m_ref))), "mel_mean_abs": float(np.mean(np.abs(m_jax - m_ref))),
                    "mel_jax_vs_fp64_max": float(np.max(np.abs(m_jax - m_64))),
                    "mel_official_vs_fp64_max": float(np.max(np.abs(m_ref - m_64))),
                    "mel_jax_vs_fp64_mean": float(np.mean(np.abs(m_jax - m_64))),
                    "mel_official_vs_fp64_mean": float(np.mean(np.abs(m_ref - m_64)))}
        if args.mel_only:
            old = {r["config"]: r for r in (json.load(open(args.out))["rows"] if args.out and os.path.exists(args.out)
                                             else [])}
            r = {**old.get(name, {"config": name}), **mel_cols}
            rows.append(r)
            print(f"{name:38s} mel max {r['mel_max_abs']:.1e} mean {r['mel_mean_abs']:.1e} | vs fp64 max jax "
                  f"{r['mel_jax_vs_fp64_max']:.1e} official {r['mel_official_vs_fp64_max']:.1e} | mean jax "
                  f"{r['mel_jax_vs_fp64_mean']:.1e} official {r['mel_official_vs_fp64_mean']:.1e}", flush=True)
            continue
        mel = ref_mel[:, :, 40:40 + args.frames]
        with tempfile.TemporaryDirectory() as d:
            folder = cb.write_official_folder(os.path.join(d, "m"), config, seed=0)
            cfg_dict, params, _ = cb.convert(folder)
            model = cb.official_model(config, torch.load(os.path.join(folder, cb.GENERATOR_FILE),
                                                         weights_only=True)["generator"])
        with torch.inference_mode():
            ref = model(mel)[0, 0].numpy()
            ref64 = model.double()(mel.double())[0, 0].numpy()
        out = np.asarray(Pretrained(BigVGANConfig.from_dict(cfg_dict), params)(
            jnp.asarray(mel.numpy().transpose(0, 2, 1))))[0]
        r = {"config": name, "snr_jax_vs_fp32": rp.snr_db(out, ref), "snr_jax_vs_fp64": rp.snr_db(out, ref64),
             "snr_fp32_vs_fp64": rp.snr_db(ref, ref64), "max_abs": rp.max_abs(out, ref), **mel_cols,
             "seconds": time.time() - t0}
        r["pass"] = bool(r["snr_jax_vs_fp32"] >= 110 and r["snr_jax_vs_fp64"] >= r["snr_fp32_vs_fp64"] - 3
                         and r["mel_max_abs"] <= 3e-4 and r["mel_mean_abs"] <= 1e-5
                         and r["mel_jax_vs_fp64_max"] <= 1.1 * r["mel_official_vs_fp64_max"]
                         and r["mel_jax_vs_fp64_mean"] <= 1.1 * r["mel_official_vs_fp64_mean"])
        rows.append(r)
        print(f"{name:38s} SNR jax/fp32 {r['snr_jax_vs_fp32']:6.1f} dB | jax/fp64 {r['snr_jax_vs_fp64']:6.1f} | "
              f"fp32/fp64 {r['snr_fp32_vs_fp64']:6.1f} | mel max {r['mel_max_abs']:.1e} mean {r['mel_mean_abs']:.1e} "
              f"| mel vs fp64 max jax {r['mel_jax_vs_fp64_max']:.1e} official {r['mel_official_vs_fp64_max']:.1e} "
              f"| {'PASS' if r['pass'] else 'FAIL'} ({r['seconds']:.0f} s)", flush=True)
    if args.mel_only:
        for r in rows:
            r["pass"] = bool(r.get("snr_jax_vs_fp32", 0) >= 110
                             and r.get("snr_jax_vs_fp64", 0) >= r.get("snr_fp32_vs_fp64", 1e9) - 3
                             and r["mel_max_abs"] <= 3e-4 and r["mel_mean_abs"] <= 1e-5
                             and r["mel_jax_vs_fp64_max"] <= 1.1 * r["mel_official_vs_fp64_max"]
                             and r["mel_jax_vs_fp64_mean"] <= 1.1 * r["mel_official_vs_fp64_mean"])
    if args.out:
        rp.write_json(args.out, {"frames": args.frames, "input": args.input or "tests/fixtures/speech_*.wav",
                                 "rows": rows})
    print(f"{sum(r['pass'] for r in rows)}/{len(rows)} configs within the bounds")
    return 0 if all(r["pass"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
