"""jaxvoc encode CKPT AUDIO... -o DIR: audio files -> DIR/<stem>.npz token files with a converted codec.

Each ``.npz`` holds ``tokens`` (int32 [num_codebooks, frames]), ``num_samples`` (the input's length at the
codec's rate), ``sample_rate``, and what identifies the model (``model``: its fingerprint, ``codebook_size``,
``samples_per_frame``), so that ``jaxvoc decode`` refuses tokens made by another model.

Files of different lengths are padded into a few length buckets and batched; every item is encoded as NeMo
encodes it alone (the padding never changes a token). Files longer than ``--window`` frames are encoded in
overlapping windows (jaxvoc.models.codec_stream.encode_long): the same tokens, one program, the memory of one
window. Every input is read and checked before anything is written.

All or nothing: every output is written to a temporary file beside its target and all are renamed at the end;
on any failure (a bad input, a write or rename error) no output of the run remains (jaxvoc.io.atomic.AllOrNothing).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from jaxvoc.io.atomic import AllOrNothing, naming
from jaxvoc.commands.common import CODEC_BUCKET_FRAMES, open_codec
from jaxvoc.errors import UserError
from jaxvoc.io.batching import fill_batch, plan_batches

def add_arguments(p):
    p.add_argument("ckpt", help="a jaxvoc codec checkpoint folder (from jaxvoc convert codec)")
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files (any rate / channel count)")
    p.add_argument("-o", "--out-dir", required=True, help="folder for <input stem>.npz")
    p.add_argument("--batch-size", type=int, default=4, help="files encoded together (default 4)")
    p.add_argument("--no-bucket", action="store_true",
                   help="no length buckets: every distinct length compiles once (same tokens)")
    p.add_argument("--window", type=int, default=None, metavar="FRAMES",
                   help="files longer than FRAMES codec frames are encoded in overlapping windows of FRAMES frames "
                        "(one compiled program, the memory of one window, identical tokens); default "
                        "256, 0 = off")


def write_npz(path: str, **arrays) -> None:
    """np.savez to exactly ``path`` (np.savez given a name would append .npz to a temporary name)."""
    with naming(path), open(path, "wb") as f:
        np.savez(f, **arrays)


def run(args) -> int:
    from tqdm import tqdm

    from jaxvoc.io.audio import load_audio

    stems, model = open_codec(args)
    cfg = model.config
    spf, minimum = cfg.samples_per_frame, cfg.min_samples()
    audios = []
    for path in args.inputs:
        y = load_audio(path, cfg.sample_rate)
        if len(y) < minimum:
            raise UserError(f"{path} is too short ({len(y)} samples at {cfg.sample_rate} Hz); the codec needs at "
                            f"least {minimum} samples ({minimum / cfg.sample_rate:.3f} s)")
        audios.append(y)
    from jaxvoc.models.codec_stream import DEFAULT_ENCODE_WINDOW, encoder_receptive_field
    from jaxvoc.models.windowed import resolve_window

    window = resolve_window(args.window, DEFAULT_ENCODE_WINDOW, encoder_receptive_field(cfg))
    outputs = AllOrNothing(args.out_dir)  # checks the output folder now, writes nothing until the end
    frames = [-(-len(y) // spf) for y in audios]
    long_items = [i for i, f in enumerate(frames) if window and f > window]
    short_items = [i for i in range(len(frames)) if i not in set(long_items)]
    bucket = not args.no_bucket
    plan, n_buckets = plan_batches([frames[i] for i in short_items], args.batch_size, bucket, CODEC_BUCKET_FRAMES)
    plan = [(L, [short_items[j] for j in idx]) for L, idx in plan]
    before = model.compilations["encode"]
    results: dict[int, np.ndarray] = {}
    for i in long_items:
        results[i] = model.encode_long(audios[i], window)
    for L, idx in tqdm(plan, desc="encode", unit="batch", file=sys.stderr, disable=None):
        B = args.batch_size if bucket else len(idx)
        batch, lengths = fill_batch([audios[i] for i in idx], B, L * spf, 0, dtype=np.float32)  # filler: silence
        tokens, tlen = model.encode(batch, lengths, isolate=True)
        tokens, tlen = np.asarray(tokens), np.asarray(tlen)
        for r, i in enumerate(idx):
            results[i] = tokens[r, :, :tlen[r]]
    with outputs:
        for i, stem in enumerate(stems):
            write_npz(outputs.stage(os.path.join(args.out_dir, stem + ".npz"), ".npz"),
                      tokens=results[i].astype(np.int32), num_samples=np.int64(len(audios[i])),
                      sample_rate=np.int64(cfg.sample_rate), model=np.str_(model.fingerprint),
                      codebook_size=np.int64(cfg.codebook_size), samples_per_frame=np.int64(spf))
    print(f"wrote {len(stems)} token file(s) to {args.out_dir} ({cfg.num_codebooks} codebooks x "
          f"{cfg.frame_rate:.2f} frames/s); {model.compilations['encode'] - before} compilation(s) of the encoder "
          f"for {n_buckets} length bucket(s)")
    return 0
