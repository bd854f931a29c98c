"""WaveGlow training speed: one jaxvoc flow train step (the jitted step of `jaxvoc train`: mel of the batch,
forward, NLL, backward, Adam) against one iteration of the official waveglow/train.py loop body
(model.zero_grad(), model((mel, audio)), WaveGlowLoss(sigma), backward, Adam step; its mel comes from the
data loader, outside the timed step), same config, batch and segment, in one process.

    python -m experiments.bench train-waveglow [--small] [--batch B] [--segment T] [--repeats R] [--bf16]
                                              [--device cpu|gpu]

Default: the published configuration (12 flows, 8-layer 256-channel WNs, sigma 1.0, Adam lr 1e-4),
float32 on both sides (--bf16: jaxvoc computes in bfloat16 with float32 master weights; the official
fp16_run needs apex and CUDA). Timings alternate between the two sides after warm-up (JAX compilation
excluded) and report medians. Ends with `train-waveglow: jax X steps/s, pytorch Y steps/s, ratio Z`.
"""

from __future__ import annotations

import argparse
import json
import os

from experiments.bench.train_common import (print_result, runtime_line, speech_segments, time_train_steps,
                                            torch_device)


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py train-waveglow", description=__doc__.split("\n")[0])
    p.add_argument("--small", action="store_true", help="4 flows of 3-layer 32-channel WNs (CPU test size)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--segment", type=int, default=16000, help="samples per example (official segment_length)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--bf16", action="store_true", help="jaxvoc side in bfloat16 compute")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = p.parse_args(argv)

    import torch

    from waveglow.glow import WaveGlowLoss

    from conversion import waveglow as cw
    from jaxvoc.models import waveglow as wg
    from jaxvoc.train.waveglow import WaveGlowTask

    from experiments import REPO

    with open(os.path.join(REPO, "experiments", "training", "configs", "waveglow.json")) as f:
        raw = json.load(f)
    if args.small:
        raw["waveglow_config"].update(n_flows=4, n_early_every=2,
                                      WN_config={"n_layers": 3, "n_channels": 32, "kernel_size": 3})
    raw["train_config"].update(batch_size=args.batch, fp16_run=False)
    raw["data_config"]["segment_length"] = args.segment
    raw["train"] = {"compute_dtype": "bfloat16" if args.bf16 else "float32"}
    cfg = wg.WaveGlowConfig.from_dict(raw)
    sigma, lr = float(raw["train_config"]["sigma"]), float(raw["train_config"]["learning_rate"])

    audio = speech_segments(cfg.sampling_rate, args.batch, args.segment)

    # official side: the train.py loop body (mel from the loader, as Mel2Samp computes it)
    tdev, sync = torch_device(args.device)
    model = cw.official_model(cfg, seed=0).to(tdev)
    model.train()
    mel = torch.cat([cw.official_mel(a, cfg) for a in audio]).to(tdev)
    audio_t = torch.from_numpy(audio).to(tdev)
    criterion = WaveGlowLoss(sigma)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)

    def torch_step():
        model.zero_grad()
        loss = criterion(model((mel, audio_t)))
        loss.backward()
        optimizer.step()
        return float(sync(loss))

    # jaxvoc side
    tj, tt, t_compile = time_train_steps(WaveGlowTask, raw, audio, torch_step, args.repeats, args.device)
    n = sum(p.numel() for p in model.parameters())
    print(f"waveglow{' (small)' if args.small else ' (published config)'}: {n / 1e6:.2f} M parameters; batch "
          f"{args.batch} x segment {args.segment}; jax {'bfloat16' if args.bf16 else 'float32'} compute; "
          f"{runtime_line(t_compile)}")
    print_result("train-waveglow", tj, tt, args.repeats)
    return 0
