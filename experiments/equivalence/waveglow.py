"""Acceptance measurement for WaveGlow (issue 3): jaxvoc vs the official ``waveglow.glow`` on real speech,
float32, CPU, for the published config (12 flows, 8-layer 256-channel WNs) and a smaller one.

    python -m experiments.equivalence.waveglow [--seconds 1.5] [--offset 0.5] [--configs published,small]
                                               [--no-mel]

For each config: stand-in weights from the official package (fixed seed, non-trivial ``end`` layers and 1x1
convs, see conversion.waveglow.randomize_), saved as a published-style full-object pickle and converted by
``jaxvoc convert``'s code path. The official log-mel (TacotronSTFT) of the speech fixture feeds both sides.
Measured:

* infer, sigma 0 and sigma 0.6 with the same fixed noise on both sides: SNR of jaxvoc vs official float32,
  and of each vs a float64 run of the official model (``.double()``, inverse 1x1 weights recomputed in
  float64);
* forward (training direction): SNR of z, the same three ways;
* NLL (official WaveGlowLoss, sigma 1.0 as in the training config): relative error of jaxvoc vs official
  float32, and of each vs float64.

Also the Tacotron2 mel front-end vs TacotronSTFT and a float64 computation, on the whole speech fixture
and on noise (bounds: 3e-4 max, 1e-5 mean abs; no further from float64 than the official, within 10%).

Criteria (issue 3): infer >= 100 dB, z >= 110 dB, NLL <= 1e-5 relative; jaxvoc no further from float64 than
the official float32 (within 3 dB; 2x for the NLL). Prints a table per config and PASS/FAIL per criterion.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import os
import platform
import sys
import tempfile
import time

import numpy as np


CONFIGS = {
    "published": dict(),
    "small": dict(n_flows=6, n_early_every=2, n_early_size=2, WN_config=dict(n_layers=4, n_channels=64, kernel_size=3)),
}


def measure(name: str, overrides: dict, audio: np.ndarray, seed: int = 0) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    from waveglow.glow import WaveGlowLoss

    from conversion import waveglow as cw
    from conversion.report import snr_db
    from jaxvoc.models import waveglow as wg

    ov = dict(overrides)
    if "WN_config" in ov:
        ov["WN_config"] = wg.WNConfig(**ov["WN_config"])
    cfg = dataclasses.replace(wg.WaveGlowConfig(), **ov)
    model = cw.official_model(cfg, seed=seed)
    cw.randomize_(model, seed)
    with tempfile.TemporaryDirectory() as tmp:
        config_dict, params, _ = cw.convert(cw.save_full_object(os.path.join(tmp, "waveglow.pt"), model))
    assert wg.WaveGlowConfig.from_dict(config_dict) == cfg
    jmodel = wg.Pretrained(cfg, params)

    mel = cw.official_mel(audio, cfg)  # [1, M, F]
    frames = mel.shape[-1]
    mel_j = jnp.asarray(mel.numpy().transpose(0, 2, 1))
    res: dict = {"config": name, "frames": int(frames), "seconds": len(audio) / cfg.sampling_rate}

    # --- forward and NLL (weight norm kept, as in training) --------------------------------------------
    n_audio = (frames - 1) * cfg.hop_length
    a = np.ascontiguousarray(audio[:n_audio])[None]
    m64 = cw.double_model(model)
    loss = WaveGlowLoss(sigma=1.0)
    with torch.no_grad():
        z32, ls32, ld32 = model((mel, torch.from_numpy(a)))
        nll32 = float(loss((z32, ls32, ld32)))
        z64, ls64, ld64 = m64((mel.double(), torch.from_numpy(a).double()))
        nll64 = float(loss((z64, ls64, ld64)))
    fwd = jax.jit(lambda p, m, x: jmodel.module.apply({"params": p}, m, x))
    zj, lsj, ldj = fwd(params, mel_j, jnp.asarray(a))
    nllj = float(wg.nll(zj, lsj, ldj, 1.0))
    zt32, zt64 = z32.numpy().transpose(0, 2, 1), z64.numpy().transpose(0, 2, 1)
    res["z"] = (snr_db(np.asarray(zj), zt32), snr_db(np.asarray(zj), zt64), snr_db(zt32, zt64))
    res["nll"] = (abs(nllj - nll32) / abs(nll32), abs(nllj - nll64) / abs(nll64), abs(nll32 - nll64) / abs(nll64))
    res["nll_values"] = (nllj, nll32, nll64)

    # --- infer (weight norm removed, as the official inference script) ----------------------------------
    with cw._quiet():
        m32 = model.remove_weightnorm(model)
        m64 = m64.remove_weightnorm(m64)
    noise = cw.make_noise(cfg, 1, frames, seed)
    noise_t = cw.to_torch_noise(noise)
    infer = jax.jit(lambda p, m, s, n: jmodel.module.apply({"params": p}, m, s, n, method=wg.WaveGlow.infer))
    for sigma in (0.0, 0.6):
        with torch.inference_mode():
            with cw.official_noise(noise_t):
                o32 = m32.infer(mel, sigma=sigma)[0].numpy()
            with cw.official_noise(noise_t, dtype=torch.float64):
                o64 = m64.infer(mel.double(), sigma=sigma)[0].numpy()
        oj = np.asarray(infer(jmodel.params, mel_j, sigma, [jnp.asarray(n) for n in noise]))[0]
        res[f"infer sigma={sigma}"] = (snr_db(oj, o32), snr_db(oj, o64), snr_db(o32, o64))
    return res


def mel_report(audio_full: np.ndarray) -> list[bool]:
    """Tacotron2 log-mel: jaxvoc (direct DFT, the default for WaveGlow; and the FFT variant for reference) vs
    TacotronSTFT.mel_spectrogram, and each vs a float64 computation (numpy FFT, float64 window/filters)."""
    import dataclasses as dc

    import jax
    import jax.numpy as jnp
    import librosa

    from conversion import waveglow as cw
    from jaxvoc.dsp.stft import mel_spectrogram
    from jaxvoc.models.waveglow import WaveGlowConfig

    cfg = WaveGlowConfig()

    def mel64(y):
        yp = np.pad(y.astype(np.float64), cfg.filter_length // 2, mode="reflect")
        n = 1 + (len(yp) - cfg.filter_length) // cfg.hop_length
        idx = cfg.hop_length * np.arange(n)[:, None] + np.arange(cfg.filter_length)[None]
        w = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(cfg.win_length) / cfg.win_length)
        fb = librosa.filters.mel(sr=cfg.sampling_rate, n_fft=cfg.filter_length, n_mels=cfg.n_mel_channels,
                                 fmin=cfg.mel_fmin, fmax=cfg.mel_fmax, dtype=np.float64)
        return np.log(np.maximum(np.abs(np.fft.rfft(yp[idx] * w, axis=-1)) @ fb.T, 1e-5))

    print(f"\n(time: jitted mel of the whole signal, after compilation; {len(audio_full) / 22050:.2f} s of speech)")
    signals = {"speech (whole fixture)": audio_full,
               "uniform noise": np.random.default_rng(0).uniform(-1, 1, 30000).astype(np.float32)}
    print("\nmel front-end (log-mel, max / mean abs difference)")
    print(f"  {'signal':24s} {'transform':9s} {'jax vs official':>22s} {'jax vs f64':>22s} {'official vs f64':>22s} {'time':>10s}")
    ok = []
    for name, y in signals.items():
        off = cw.official_mel(y, cfg)[0].numpy().T
        r64 = mel64(y)
        o = np.abs(off - r64)
        for transform in ("dft", "fft"):
            mc = dc.replace(cfg.mel, transform=transform)
            fn = jax.jit(lambda a: mel_spectrogram(a, mc))
            x = jnp.asarray(y)[None]
            ours = np.asarray(fn(x))[0]
            t0 = time.perf_counter()
            for _ in range(3):
                jax.block_until_ready(fn(x))
            ms = (time.perf_counter() - t0) / 3 * 1e3
            d, e = np.abs(ours - off), np.abs(ours - r64)
            line = (f"  {name:24s} {transform:9s} {d.max():10.2e} / {d.mean():8.2e} {e.max():10.2e} / {e.mean():8.2e} "
                    f"{o.max():10.2e} / {o.mean():8.2e} {ms:7.1f} ms")
            if transform == cfg.mel.transform:
                p1 = d.max() <= 3e-4 and d.mean() <= 1e-5
                p2 = e.max() <= 1.1 * o.max() and e.mean() <= 1.1 * o.mean()
                ok += [p1, p2]
                line += (f"  bounds {'PASS' if p1 else 'FAIL'}; vs f64 within 10% of official "
                         f"{'PASS' if p2 else 'FAIL'} ({e.max() / o.max():.2f}x max, {e.mean() / o.mean():.2f}x mean)")
            else:
                line += f"  (not used: {e.max() / o.max():.2f}x max, {e.mean() / o.mean():.2f}x mean of official's)"
            print(line)
    return ok


def report(res: dict) -> list[bool]:
    print(f"\n{res['config']}: {res['frames']} frames ({res['seconds']:.2f} s of speech)")
    print(f"  {'quantity':18s} {'jax vs official':>16s} {'jax vs f64':>12s} {'official vs f64':>16s}  criteria")
    ok = []
    for key, floor in (("infer sigma=0.0", 100.0), ("infer sigma=0.6", 100.0), ("z", 110.0)):
        a, b, c = res[key]
        p1, p2 = a >= floor, b >= c - 3.0
        ok += [p1, p2]
        print(f"  {key:18s} {a:13.1f} dB {b:9.1f} dB {c:13.1f} dB  "
              f">= {floor:.0f} dB {'PASS' if p1 else 'FAIL'}; jax-f64 >= official-f64 - 3 dB {'PASS' if p2 else 'FAIL'}")
    a, b, c = res["nll"]
    p1, p2 = a <= 1e-5, b <= 2 * c or b <= 1e-7
    ok += [p1, p2]
    vj, v32, v64 = res["nll_values"]
    print(f"  {'NLL (sigma 1)':18s} {a:16.2e} {b:12.2e} {c:16.2e}  <= 1e-5 {'PASS' if p1 else 'FAIL'}; "
          f"jax-f64 <= 2x official-f64 {'PASS' if p2 else 'FAIL'}")
    print(f"  NLL values: jax {vj:.9g}, official float32 {v32:.9g}, official float64 {v64:.12g}")
    return ok


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=1.5, help="length of the speech excerpt")
    p.add_argument("--offset", type=float, default=0.5, help="start of the excerpt in the fixture (s)")
    p.add_argument("--configs", default="published,small")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-mel", action="store_true", help="skip the mel front-end comparison")
    args = p.parse_args(argv)

    from jaxvoc.io.audio import load_audio

    from experiments import fixture

    path = fixture("speech_22050.wav")
    audio = load_audio(path, 22050)
    audio_full = audio
    start = int(args.offset * 22050)
    audio = audio[start:start + int(args.seconds * 22050)]
    audio = audio[:len(audio) // 256 * 256]
    import jax
    import torch

    print(f"date {time.strftime('%Y-%m-%d')}; {platform.processor() or platform.machine()}, {os.cpu_count()} cores; "
          f"jax {jax.__version__} ({jax.devices()[0].platform}), torch {torch.__version__} "
          f"({torch.get_num_threads()} threads); float32 on the CPU")
    print(f"input: tests/fixtures/speech_22050.wav, {args.offset:.2f} s + {len(audio) / 22050:.2f} s")
    ok = [] if args.no_mel else mel_report(audio_full)
    for name in filter(None, args.configs.split(",")):
        t = time.time()
        ok += report(measure(name, CONFIGS[name], audio, args.seed))
        print(f"  ({time.time() - t:.0f} s)")
    print("\nALL PASS" if all(ok) else "\nSOME FAIL")
    return 0 if all(ok) else 1


if __name__ == "__main__":
    sys.exit(main())
