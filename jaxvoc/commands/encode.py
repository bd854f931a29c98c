"""jaxvoc encode CKPT AUDIO... -o DIR: audio files -> DIR/<stem>.npz token files with a converted codec.

Each ``.npz`` holds ``tokens`` (int32 [num_codebooks, frames]), ``num_samples`` (the input's length at the
codec's rate), ``sample_rate``, and what identifies the model (``model``: its fingerprint, ``codebook_size``,
``samples_per_frame``), so that ``jaxvoc decode`` refuses tokens made by another model.

Files of different lengths are padded into a few length buckets and batched; every item is encoded as NeMo
encodes it alone (the padding never changes a token). Every input is read and checked before anything is
written.
"""

from __future__ import annotations

import io
import os
import sys

import numpy as np

from jaxvoc.audio import chmod_from_umask

from jaxvoc.errors import UserError

BUCKET_FRAMES = 16  # length-bucket quantum, in codec frames


def add_arguments(p):
    p.add_argument("ckpt", help="a jaxvoc codec checkpoint folder (from jaxvoc convert codec)")
    p.add_argument("inputs", nargs="+", metavar="AUDIO", help="audio files (any rate / channel count)")
    p.add_argument("-o", "--out-dir", required=True, help="folder for <input stem>.npz")
    p.add_argument("--batch-size", type=int, default=4, help="files encoded together (default 4)")
    p.add_argument("--no-bucket", action="store_true",
                   help="no length buckets: every distinct length compiles once (same tokens)")


def load_codec(ckpt: str):
    import jaxvoc

    model = jaxvoc.load(ckpt)
    if getattr(model, "kind", None) != "codec":
        raise UserError(f"{ckpt} is a {getattr(model, 'kind', '?')} checkpoint, not a codec; convert a NeMo codec "
                        "with jaxvoc convert codec MODEL.nemo DIR")
    return model


def unique_stems(paths: list[str]) -> list[str]:
    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise UserError(f"several inputs share the stem {sorted(dup)[0]!r}; their outputs would collide")
    return stems


def batches(lengths: list[int], batch_size: int, bucket: bool, quantum: int = BUCKET_FRAMES):
    """[(padded length, [item indices])]: items grouped by length bucket (or exact length), then batched."""
    from jaxvoc.commands.synth import bucket_length

    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(bucket_length(lengths[i], quantum) if bucket else lengths[i], []).append(i)
    plan = [(L, idx[j:j + batch_size]) for L, idx in groups.items() for j in range(0, len(idx), batch_size)]
    return plan, len(groups)


def open_codec(args):
    """The argument checks shared by encode and decode, then the codec: (output stems, codec model)."""
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    return unique_stems(args.inputs), load_codec(args.ckpt)


def save_npz(path: str, **arrays) -> None:
    """np.savez, atomically (temporary file in the same folder, then rename)."""
    import tempfile

    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    fd, tmp = tempfile.mkstemp(suffix=".npz", dir=folder, prefix=".tmp-")
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(buf.getvalue())
        chmod_from_umask(tmp)  # mkstemp makes 0600; a token file is an ordinary output file
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def run(args) -> int:
    from tqdm import tqdm

    from jaxvoc.audio import load_audio

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
    frames = [-(-len(y) // spf) for y in audios]
    bucket = not args.no_bucket
    plan, n_buckets = batches(frames, args.batch_size, bucket)
    before = model.compilations["encode"]
    results: dict[int, np.ndarray] = {}
    for L, idx in tqdm(plan, desc="encode", unit="batch", file=sys.stderr, disable=None):
        B = args.batch_size if bucket else len(idx)
        batch = np.zeros((B, L * spf), np.float32)
        lengths = np.full((B,), L * spf, np.int32)  # filler rows: silence of the full length
        for r, i in enumerate(idx):
            batch[r, :len(audios[i])] = audios[i]
            lengths[r] = len(audios[i])
        tokens, tlen = model.encode(batch, lengths, isolate=True)
        tokens, tlen = np.asarray(tokens), np.asarray(tlen)
        for r, i in enumerate(idx):
            results[i] = tokens[r, :, :tlen[r]]
    os.makedirs(args.out_dir, exist_ok=True)
    for i, stem in enumerate(stems):
        save_npz(os.path.join(args.out_dir, stem + ".npz"), tokens=results[i].astype(np.int32),
                 num_samples=np.int64(len(audios[i])), sample_rate=np.int64(cfg.sample_rate),
                 model=np.str_(model.fingerprint), codebook_size=np.int64(cfg.codebook_size),
                 samples_per_frame=np.int64(spf))
    print(f"wrote {len(stems)} token file(s) to {args.out_dir} ({cfg.num_codebooks} codebooks x "
          f"{cfg.frame_rate:.2f} frames/s); {model.compilations['encode'] - before} compilation(s) of the encoder "
          f"for {n_buckets} length bucket(s)")
    return 0
