"""Where a codec's encoder outputs sit in FSQ's cells as training goes: NeMo's own training steps on the
small LFR config, and a jaxvoc training run's exported weights against a fresh initialisation.

    python -m experiments.training.fsq_saturation nemo [--steps 60] [--every 10] [--batch 2]
    python -m experiments.training.fsq_saturation run RUN_FOLDER [--init-seed 0]

``nemo``: NeMo's AudioCodecModel at the reference harness's small LFR config
(experiments.reference.codec_train.small_config: FSQ 8 groups x levels [8, 7, 6, 6]), freshly initialised (NeMo's
own init, seed 0), stepped with its own ``training_step`` and Adam optimizers on random crops of the project's
speech fixture (``vocoder_batch``, the same batch every step). Every ``--every`` steps, on the whole fixture
sentence: FSQ's compressed encoder outputs (``compress``, before rounding; a level's cells are the integers,
its range +-(levels - 1) / 2) - their largest magnitude, the fraction within 0.05 of the range's ends
(tanh saturated), and the codes used per group.
``run``: the same figures for a jaxvoc run folder's export (``export/``) and for a fresh jaxvoc initialisation of
its config, on the speech files of ``runs/smoke_speech/22050`` (the smoke run's data).
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import io
import sys

import numpy as np


def summary(compressed: np.ndarray, levels: np.ndarray) -> str:
    """compressed [N, G, d] (one row per frame) -> a line: max |value|, share near the ends, codes per group."""
    half = (levels.astype(np.float64) - 1) / 2
    lo, hi = -half - (levels % 2 == 0) * 0.5, half - (levels % 2 == 0) * 0.5  # even levels are offset by 1/2
    near_end = (np.abs(compressed - lo) < 0.05) | (np.abs(compressed - hi) < 0.05)
    digits = np.round(compressed).astype(np.int64)
    codes = [len({tuple(r) for r in digits[:, g]}) for g in range(digits.shape[1])]
    return (f"max |compressed| {np.abs(compressed).max():.3f}, {100 * near_end.mean():.1f}% within 0.05 of a "
            f"range end, codes used per group {codes}")


def nemo(args) -> None:
    import torch

    from conversion import codec as cc
    from experiments.reference import codec_train as ct
    from jaxvoc.io.audio import load_audio

    torch.manual_seed(0)
    model = cc.build_nemo_model(ct.small_config(), seed=0, randomize=False, wavlm=cc.WAVLM_SMALL)
    ct.set_training_modes_(model)
    batch = ct.vocoder_batch([-1] * args.batch, 6144, seed=0)
    step = ct.official_stepper(model, batch)
    audio = torch.from_numpy(load_audio(ct.SPEECH, 22050)[None].astype(np.float32))
    lens = torch.tensor([audio.shape[1]])
    vq = model.vector_quantizer
    levels = vq.fsqs[0].num_levels.cpu().numpy().reshape(-1)

    def measure(n: int) -> None:
        with torch.no_grad():
            enc, enc_len = model.encode_audio(audio=audio, audio_len=lens)
            groups = enc.chunk(vq.num_groups, dim=1)
            comp = np.stack([f.compress(inputs=g, input_len=enc_len)[0].T.numpy() for g, f in zip(groups, vq.fsqs)],
                            axis=1)  # [frames, G, d]
        print(f"NeMo step {n:4d}: {summary(comp, levels)}", flush=True)

    measure(0)
    for n in range(1, args.steps + 1):
        with contextlib.redirect_stdout(io.StringIO()):
            out = step()
        if n % args.every == 0:
            print(f"           loss_gen_all {out['loss_gen_all']:.3f}", flush=True)
            measure(n)


def run(args) -> None:
    import jax.numpy as jnp

    from jaxvoc.io.audio import load_audio
    from jaxvoc.io.checkpoint import load_tree, read_meta
    from jaxvoc.models.codec import AudioCodec, CodecConfig, init_params

    folder = f"{args.folder}/export"
    cfg = CodecConfig.from_dict(read_meta(folder)["config"])
    model, q = AudioCodec(cfg), cfg.quantizer
    files = sorted(glob.glob("runs/smoke_speech/22050/*.wav"))
    if not files:
        raise SystemExit("no speech files in runs/smoke_speech/22050 (python -m experiments.training.smoke_speech)")
    levels = np.asarray(q.fsq.num_levels)
    for name, params in ((f"fresh init (seed {args.init_seed})", init_params(cfg, seed=args.init_seed)),
                         (folder, load_tree(folder))):
        rows = []
        for f in files:
            a = load_audio(f, cfg.sample_rate)[None]
            enc, n = model.apply({"params": params}, jnp.asarray(a), jnp.asarray([a.shape[1]]),
                                 method=AudioCodec.encode_audio)
            rows.append(np.asarray(q.fsq.compress(q._split(enc[:, : int(n[0])])))[0])
        print(f"{name}: {summary(np.concatenate(rows), levels)}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    sub = p.add_subparsers(dest="what", required=True)
    a = sub.add_parser("nemo")
    a.add_argument("--steps", type=int, default=60)
    a.add_argument("--every", type=int, default=10)
    a.add_argument("--batch", type=int, default=2)
    b = sub.add_parser("run")
    b.add_argument("folder")
    b.add_argument("--init-seed", type=int, default=0)
    args = p.parse_args(argv)
    nemo(args) if args.what == "nemo" else run(args)
    return 0


if __name__ == "__main__":
    sys.exit(main())
