"""BigVGAN exact streaming speed: jaxvoc's ``model.stream()`` fed pushes of a fixed number of mel frames, after
one warm-up stream (which compiles the one window program).

    python -m experiments.bench stream-bigvgan [--config NAME] [--width C] [--seconds S] [--push N] [--window W]

Ends with `stream-bigvgan: real-time factor X at latency Y ms` (X = processing time / audio time, below 1 is
faster than real time; Y = the model's right receptive field, the audio a stream must wait for, to which a
caller adds its push size). Weights are random (the official init, converted), which does not change the speed.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py stream-bigvgan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config name")
    p.add_argument("--width", type=int, default=0, help="upsample_initial_channel (0: the published width)")
    p.add_argument("--seconds", type=float, default=10.0, help="audio streamed (after the warm-up)")
    p.add_argument("--push", type=int, default=32, help="mel frames per push")
    p.add_argument("--window", type=int, default=0, help="stream window in frames (0: the default)")
    args = p.parse_args(argv)

    from conversion import bigvgan as cb
    from jaxvoc.models.bigvgan import BigVGANConfig, Pretrained
    from jaxvoc.models import windowed

    config = BigVGANConfig.official(args.config).to_dict()
    if args.width:
        config["upsample_initial_channel"] = args.width
    _, cfg, params = cb.random_official(config)
    jmodel = Pretrained(cfg, params)
    frames = int(args.seconds * cfg.sampling_rate / cfg.hop_size)
    mel = np.random.default_rng(0).normal(-5.0, 2.0, (frames, cfg.num_mels)).astype(np.float32)
    window = args.window or windowed.default_stream_window(jmodel.receptive_field())

    def stream():
        s = jmodel.stream(window=window)
        n = sum(len(s.push(mel[i:i + args.push])) for i in range(0, frames, args.push))
        return s, n + len(s.flush())

    stream()  # compiles
    compiled = jmodel.compilations
    t0 = time.perf_counter()
    s, n = stream()
    t = time.perf_counter() - t0
    assert jmodel.compilations == compiled and n == frames * cfg.hop_size
    audio_s = n / cfg.sampling_rate
    print(f"config {args.config}, width {cfg.upsample_initial_channel}, {audio_s:.1f} s of audio in pushes of "
          f"{args.push} frames, window {window} frames, receptive field {s.rf.left} + {s.rf.right} frames; "
          f"{t:.2f} s")
    print(f"stream-bigvgan: real-time factor {t / audio_s:.3f} at latency {s.latency_ms:.0f} ms")
    return 0
