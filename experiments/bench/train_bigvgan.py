"""BigVGAN training speed: one jaxvoc train step (the jitted step of `jaxvoc train`: generator, discriminator
update, generator update, AdamW) against one iteration of the official bigvgan/train.py loop body
(experiments.reference.bigvgan_train.official_train_step: the same statements, official modules and optimizers), same
config, batch and segment, in one process.

    python -m experiments.bench train-bigvgan [--config NAME] [--small] [--batch B] [--segment T] [--repeats R]
                                             [--device cpu|gpu]

--config: an official config (default bigvgan_v2_24khz_100band_256x: the full generator, MPD, CQTD,
multi-scale mel loss); --small shrinks it as the tests do (experiments.reference.bigvgan_train.small_config). Timings
alternate between the two sides (after warm-up, JAX compilation excluded) and report medians. Ends with
`train-bigvgan: jax X steps/s, pytorch Y steps/s, ratio Z` (ratio = jax / pytorch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import itertools

from experiments.bench.train_common import (print_result, runtime_line, speech_segments, time_train_steps,
                                            torch_device)


def official_config(name: str, small: bool) -> dict:
    from experiments.reference.bigvgan_train import small_config
    from jaxvoc.models.bigvgan import BigVGANConfig

    return small_config(name) if small else BigVGANConfig.official(name).to_dict()


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py train-bigvgan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config name")
    p.add_argument("--small", action="store_true", help="shrink the config (CPU test size)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--segment", type=int, default=8192, help="samples per example (official: segment_size)")
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = p.parse_args(argv)

    import torch

    from conversion import bigvgan as cb
    from experiments.reference.bigvgan_train import official_batch, official_discriminators, official_train_step
    from jaxvoc.train.bigvgan import BigVGANTask

    h = official_config(args.config, args.small)
    h.update(segment_size=args.segment, batch_size=args.batch)
    segments = speech_segments(h["sampling_rate"], args.batch, args.segment)

    # official side (random official init; speed does not depend on the values)
    tdev, sync = torch_device(args.device)
    gen = cb.official_model(h, seed=0).to(tdev)
    mpd, mrd = (m.to(tdev) for m in official_discriminators(h, seed=1))
    x, y, y_mel = (t.to(tdev) for t in official_batch(h, segments))
    optim_g = torch.optim.AdamW(gen.parameters(), h["learning_rate"], betas=[h["adam_b1"], h["adam_b2"]])
    optim_d = torch.optim.AdamW(itertools.chain(mrd.parameters(), mpd.parameters()), h["learning_rate"],
                                betas=[h["adam_b1"], h["adam_b2"]])

    def torch_step():
        with contextlib.redirect_stdout(io.StringIO()):
            sync(official_train_step(h, gen, mpd, mrd, x, y, y_mel, optim_g=optim_g, optim_d=optim_d))

    # jaxvoc side
    tj, tt, t_compile = time_train_steps(BigVGANTask, h, y.cpu().numpy(), torch_step, args.repeats, args.device)
    n_g = sum(p.numel() for p in gen.parameters())
    n_d = sum(p.numel() for p in mpd.parameters()) + sum(p.numel() for p in mrd.parameters())
    print(f"config {args.config}{' (small)' if args.small else ''}: generator {n_g / 1e6:.2f} M, discriminators "
          f"{n_d / 1e6:.2f} M parameters; batch {args.batch} x segment {args.segment}; {runtime_line(t_compile)}")
    print_result("train-bigvgan", tj, tt, args.repeats)
    return 0
