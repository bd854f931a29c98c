"""BigVGAN training speed: one jaxvoc train step (the jitted step of `jaxvoc train`: generator, discriminator
update, generator update, AdamW) against one iteration of the official bigvgan/train.py loop body
(conversion.bigvgan_train.official_train_step: the same statements, official modules and optimizers), same
config, batch and segment, in one process.

    python experiments/bench.py train-bigvgan [--config NAME] [--small] [--batch B] [--segment T] [--repeats R]

--config: an official config (default bigvgan_v2_24khz_100band_256x: the full generator, MPD, CQTD,
multi-scale mel loss); --small shrinks it as the tests do (conversion.bigvgan_train.small_config). Timings
alternate between the two sides (after warm-up, JAX compilation excluded) and report medians. Ends with
`train-bigvgan: jax X steps/s, pytorch Y steps/s, ratio Z` (ratio = jax / pytorch).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import tempfile
import time

import numpy as np


def official_config(name: str, small: bool) -> dict:
    from conversion.bigvgan_train import small_config
    from jaxvoc.bigvgan import BigVGANConfig

    return small_config(name) if small else BigVGANConfig.official(name).to_dict()


def speech_segments(sr: int, batch: int, segment: int) -> np.ndarray:
    import jaxvoc
    from jaxvoc.audio import load_audio

    y = load_audio(os.path.join(os.path.dirname(jaxvoc.__file__), "assets", "speech_24000.wav"), sr)
    y = np.tile(y, 1 + batch * segment // len(y))
    starts = np.linspace(0, len(y) - segment, batch).astype(int)
    return np.stack([y[s:s + segment] for s in starts])


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py train-bigvgan", description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official config name")
    p.add_argument("--small", action="store_true", help="shrink the config (CPU test size)")
    p.add_argument("--batch", type=int, default=1)
    p.add_argument("--segment", type=int, default=8192, help="samples per example (official: segment_size)")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import report as rp
    from conversion import bigvgan as cb
    from conversion.bigvgan_train import official_batch, official_discriminators, official_train_step
    from jaxvoc.train import config as config_lib
    from jaxvoc.train import loop, sharding
    from jaxvoc.train.tasks import BigVGANTask

    h = official_config(args.config, args.small)
    h.update(segment_size=args.segment, batch_size=args.batch)
    segments = speech_segments(h["sampling_rate"], args.batch, args.segment)

    # official side (random official init; speed does not depend on the values)
    gen = cb.official_model(h, seed=0)
    mpd, mrd = official_discriminators(h, seed=1)
    x, y, y_mel = official_batch(h, segments)
    import itertools

    optim_g = torch.optim.AdamW(gen.parameters(), h["learning_rate"], betas=[h["adam_b1"], h["adam_b2"]])
    optim_d = torch.optim.AdamW(itertools.chain(mrd.parameters(), mpd.parameters()), h["learning_rate"],
                                betas=[h["adam_b1"], h["adam_b2"]])

    def torch_step():
        with contextlib.redirect_stdout(io.StringIO()):
            official_train_step(h, gen, mpd, mrd, x, y, y_mel, optim_g=optim_g, optim_d=optim_d)

    # jaxvoc side
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump(h, f)
        task = BigVGANTask(config_lib.load(path))
    setup = loop.build(task, sharding.make_mesh(1, jax.devices()[:1]), args.segment, 0)
    state = {"s": setup.init()}
    audio = jax.device_put(jnp.asarray(y.numpy()), setup.batch_sharding)
    t0 = time.perf_counter()
    compiled = setup.step.lower(state["s"], audio).compile()
    t_compile = time.perf_counter() - t0

    def jax_step():
        state["s"], m = compiled(state["s"], audio)
        jax.block_until_ready((state["s"], m))

    tj, tt = rp.time_alternating([jax_step, torch_step], args.repeats)
    sj, st = 1 / tj, 1 / tt
    n_g = sum(p.numel() for p in gen.parameters())
    n_d = sum(p.numel() for p in mpd.parameters()) + sum(p.numel() for p in mrd.parameters())
    print(f"config {args.config}{' (small)' if args.small else ''}: generator {n_g / 1e6:.2f} M, discriminators "
          f"{n_d / 1e6:.2f} M parameters; batch {args.batch} x segment {args.segment}; device "
          f"{jax.devices()[0].platform}, torch threads {torch.get_num_threads()}, jax {jax.__version__}, "
          f"torch {torch.__version__}; jax compile {t_compile:.1f} s")
    print(f"median of {args.repeats}: jax {tj * 1e3:.0f} ms, pytorch "
          f"{tt * 1e3:.0f} ms per step")
    print(f"train-bigvgan: jax {sj:.3f} steps/s, pytorch {st:.3f} steps/s, ratio {sj / st:.2f}")
    return 0
