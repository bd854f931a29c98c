"""Codec training speed: one jaxvoc train step (the jitted step of `jaxvoc train` with NeMo's LFR config:
generator, discriminator update on every other step, generator update, two Adams) against one NeMo
``AudioCodecModel.training_step`` with its own two Adam optimizers, driven as the reference harness drives it
(experiments.reference.codec_train.official_stepper), same config, weights of WavLM and batch, in one process.

    python -m experiments.bench train-codec [--steps N] [--small] [--device cpu|gpu]

The config: experiments/training/configs/codec_lfr_22050.yaml (NeMo's Low Frame-rate Speech Codec, full size),
batch 1 of NeMo's crop (24576 samples of the bundled speech fixture, through NeMo's VocoderDataset). The SLM
discriminator's WavLM has wavlm-base-plus's architecture with random weights (no hub here), the same weights
on both sides (NeMo's, converted by conversion/wavlm.py). The LFR config trains the discriminator on every
other step, so each timed call runs two steps (one with, one without the discriminator update) on each
side, alternated after a warm-up call (JAX compilation excluded); medians of the calls, per step. Ends with
`train-codec: jax X steps/s, pytorch Y steps/s, ratio Z` (ratio = jax / pytorch).

--small: the reference harness's CPU-test size instead (experiments.reference.codec_train.small_config: the LFR
kind at narrow widths, its small stand-in WavLM, a 6144-sample crop), to check the benchmark quickly.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import math
import os
import resource
import sys
import tempfile

from experiments.bench.train_common import print_result, runtime_line, time_train_steps, torch_device

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CONFIG = os.path.join(REPO, "experiments", "training", "configs", "codec_lfr_22050.yaml")
PERIOD = 2  # the LFR config's disc_update_period: the steps of one timed call


def sizes(small: bool) -> tuple[dict, int, dict]:
    """(NeMo's model config, crop length, WavLM architecture): the LFR config at full size, or with ``small``
    the reference harness's CPU-test size."""
    from conversion import codec as cc
    from experiments.reference import codec_train as ct

    if small:
        return ct.small_config(), 6144, cc.WAVLM_SMALL
    return ct.lfr_config_full(), ct.LFR_N_SAMPLES, cc.WAVLM_BASE_PLUS


def jax_config(model, nemo_cfg: dict, n_samples: int, small: bool, tmp: str):
    """jaxvoc's ``TrainConfig`` of the same run as NeMo's ``model``: CONFIG at batch 1 of ``n_samples``, with
    ``small`` NeMo's model sections of ``nemo_cfg``; the SLM discriminator's WavLM is ``model``'s, saved and
    converted under ``tmp`` as `jaxvoc convert wavlm` reads it."""
    from conversion import wavlm as cw
    from experiments.reference import codec_train as ct
    from jaxvoc.io import checkpoint
    from jaxvoc.train import config as config_lib
    from jaxvoc.train.codec_config import read_yaml

    ct.save_wavlm(model, os.path.join(tmp, "hf"))
    conv = cw.convert(os.path.join(tmp, "hf"))
    checkpoint.save(os.path.join(tmp, "wavlm"), "wavlm", conv.config, conv.params)
    raw = config_lib.apply_overrides(read_yaml(CONFIG, "config", "give NeMo's codec YAML"), [
        "batch_size=1", f"train_n_samples={n_samples}", f"train.wavlm={os.path.join(tmp, 'wavlm')}"], CONFIG)
    if small:  # NeMo's model sections, as built from nemo_cfg
        raw["model"].update({k: nemo_cfg[k] for k in ("audio_encoder", "audio_decoder", "discriminator")})
    return config_lib.from_raw(raw, CONFIG)


def task(config):
    """The codec task in one long epoch: the discriminator updates on steps 0, 2, 4, ... as NeMo's batch_idx
    0, 1, 2, ..."""
    from jaxvoc.train.codec import CodecTask

    return CodecTask(config, steps_per_epoch=1000)


def jax_batch(batch: dict) -> dict:
    """NeMo's VocoderDataset batch as jaxvoc's codec step takes it."""
    return {"audio": batch["audio"], "audio_len": batch["audio_lens"].astype("int32")}


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py train-codec", description=__doc__.split("\n")[0])
    p.add_argument("--steps", type=int, default=6,
                   help=f"timed steps per side, a multiple of {PERIOD} (default 6; a warm-up of {PERIOD} more)")
    p.add_argument("--small", action="store_true", help="the reference harness's CPU-test size (see above)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    args = p.parse_args(argv)
    if args.steps < PERIOD or args.steps % PERIOD:
        print(f"bench train-codec: error: --steps {args.steps} is not a positive multiple of {PERIOD} (the "
              "discriminator update period); give e.g. --steps 6", file=sys.stderr)
        return 2

    from conversion import codec as cc
    from experiments.reference import codec_train as ct

    # NeMo's side: the LFR model, WavLM of base-plus's architecture (random), Lightning's training modes
    tdev, sync = torch_device(args.device)
    nemo_cfg, n_samples, arch = sizes(args.small)
    model = cc.build_nemo_model(nemo_cfg, seed=0, randomize=False, wavlm=arch)
    ct.set_training_modes_(model)
    model = model.to(tdev)
    batch = ct.vocoder_batch([-1], n_samples, seed=0)  # NeMo's random crop of the fixture sentence
    nemo_step = ct.official_stepper(model, batch, tdev)
    nemo_losses: list = []

    def torch_step():
        with contextlib.redirect_stdout(io.StringIO()):
            nemo_losses[:] = [nemo_step() for _ in range(PERIOD)]
        sync(None)

    jax_metrics: list = []
    with tempfile.TemporaryDirectory() as tmp:
        cfg = jax_config(model, nemo_cfg, n_samples, args.small, tmp)
        tj, tt, t_compile = time_train_steps(task, cfg, jax_batch(batch), torch_step, args.steps // PERIOD,
                                             args.device, steps_per_call=PERIOD, metrics=jax_metrics)

    n_g = sum(p.numel() for n, p in model.named_parameters() if n.startswith(("audio_encoder.", "audio_decoder.")))
    n_d = sum(p.numel() for n, p in model.named_parameters() if n.startswith("discriminator.")
              and ct.SLM_PREFIX not in n)
    n_w = sum(p.numel() for p in ct.wavlm(model).parameters())
    print(f"config codec_lfr_22050.yaml{' (small)' if args.small else ''}: generator {n_g / 1e6:.2f} M, discriminators {n_d / 1e6:.2f} M parameters "
          f"(+ WavLM {'stand-in' if args.small else 'base-plus architecture'}, random, {n_w / 1e6:.1f} M, frozen); "
          f"batch 1 x {batch['audio'].shape[1]}; "
          f"{runtime_line(t_compile)}")
    # the last call's two steps: d_loss of the first (discriminator update), loss_gen_all of both
    losses = {"jax": [jax_metrics[0]["d_loss"]] + [m["loss_gen_all"] for m in jax_metrics],
              "pytorch": [nemo_losses[0]["d_loss"]] + [m["loss_gen_all"] for m in nemo_losses]}
    print("last call's losses (d_loss, loss_gen_all of its two steps): "
          + "; ".join(f"{side} " + ", ".join(f"{v:.4g}" for v in vs) for side, vs in losses.items()))
    bad = [side for side, vs in losses.items() if not all(math.isfinite(v) for v in vs)]
    if bad or not jax_metrics[0]["disc_updated"] or jax_metrics[1]["disc_updated"] or "d_loss" in nemo_losses[1]:
        print(f"bench train-codec: error: non-finite loss ({', '.join(bad)}) or the discriminator updated off "
              "the LFR schedule", file=sys.stderr)
        return 1
    print(f"peak memory (this process, both sides): {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20:.1f} GB")
    print_result("train-codec", tj, tt, args.steps // PERIOD)
    return 0
