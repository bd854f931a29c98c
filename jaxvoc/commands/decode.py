"""jaxvoc decode CKPT NPZ... -o DIR: token files (from jaxvoc encode) -> DIR/<stem>.wav with a converted codec,
each cut back to the length of the audio it was encoded from.

A token file made by another model (its fingerprint or sample rate differs), with the wrong number of
codebooks, or with tokens outside the codebook is refused before anything is written. Token files without
``model`` / ``num_samples`` (e.g. saved from NeMo) are accepted: they decode to every frame.

All or nothing: every output is written to a temporary file beside its target and all are renamed at the end;
on any failure (a bad input, a write or rename error) no output of the run remains (jaxvoc.io.atomic.AllOrNothing).
"""

from __future__ import annotations

import os
import sys
import zipfile

import numpy as np

from jaxvoc.errors import UserError


def add_arguments(p):
    p.add_argument("ckpt", help="a jaxvoc codec checkpoint folder (from jaxvoc convert codec)")
    p.add_argument("inputs", nargs="+", metavar="NPZ", help="token files from jaxvoc encode")
    p.add_argument("-o", "--out-dir", required=True, help="folder for <input stem>.wav")
    p.add_argument("--subtype", default="PCM_16", choices=["PCM_16", "FLOAT"], help="wav sample format")
    p.add_argument("--batch-size", type=int, default=4, help="files decoded together (default 4)")
    p.add_argument("--no-bucket", action="store_true",
                   help="no length buckets: every distinct length compiles once (same audio)")


def _scalar(z, key: str, path: str):
    a = z[key]
    if a.shape != () or not (np.issubdtype(a.dtype, np.integer) or np.issubdtype(a.dtype, np.str_)):
        raise UserError(f"{path}: '{key}' must be a single {'string' if key == 'model' else 'integer'}")
    return a.item()


def read_tokens(path: str, model) -> tuple[np.ndarray, int]:
    """A token file -> (tokens int32 [num_codebooks, frames], number of output samples), checked against the
    model."""
    from jaxvoc.models.codec import check_tokens

    cfg = model.config
    if not os.path.exists(path):
        raise UserError(f"input not found: {path}")
    try:
        z = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise UserError(f"cannot read {path} as a token file (.npz from jaxvoc encode): "
                        f"{str(e).splitlines()[0][:120]}") from None
    if not isinstance(z, np.lib.npyio.NpzFile):
        raise UserError(f"{path} is a single array, not a token file; give the .npz from jaxvoc encode")
    with z:
        try:
            if "tokens" not in z.files:
                raise UserError(f"{path} has no 'tokens' array; give a token file from jaxvoc encode")
            tokens = z["tokens"]
            fp = _scalar(z, "model", path) if "model" in z.files else None
            sr = _scalar(z, "sample_rate", path) if "sample_rate" in z.files else None
            num_samples = _scalar(z, "num_samples", path) if "num_samples" in z.files else None
        except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
            raise UserError(f"{path} is damaged ({str(e).splitlines()[0][:120]})") from None
    if fp is not None and model.fingerprint and fp != model.fingerprint:
        raise UserError(f"{path} was made by a different model (fingerprint {fp}, this checkpoint is "
                        f"{model.fingerprint}); decode it with the codec that encoded it")
    if sr is not None and sr != cfg.sample_rate:
        raise UserError(f"{path} holds tokens of {sr} Hz audio, this codec works at {cfg.sample_rate} Hz; decode it "
                        "with the codec that encoded it")
    if not np.issubdtype(tokens.dtype, np.integer):
        raise UserError(f"{path}: tokens must be integers, got {tokens.dtype}")
    if tokens.ndim != 2:
        raise UserError(f"{path}: tokens have shape {tokens.shape}; expected [num_codebooks, frames] = "
                        f"[{cfg.num_codebooks}, T]")
    if tokens.shape[0] != cfg.num_codebooks:
        raise UserError(f"{path}: tokens have {tokens.shape[0]} codebooks, this codec has {cfg.num_codebooks}; "
                        "decode it with the codec that encoded it")
    if tokens.shape[1] < cfg.min_tokens():
        raise UserError(f"{path}: {tokens.shape[1]} frames are too few; the codec needs at least {cfg.min_tokens()}")
    check_tokens(tokens, cfg.codebook_size, path)
    full = tokens.shape[1] * cfg.samples_per_token
    if num_samples is None:
        return tokens.astype(np.int32), full
    if not 0 < num_samples <= tokens.shape[1] * cfg.samples_per_frame:
        raise UserError(f"{path}: num_samples {num_samples} does not fit {tokens.shape[1]} frames of "
                        f"{cfg.samples_per_frame} samples")
    return tokens.astype(np.int32), min(cfg.output_samples(num_samples), full)


def run(args) -> int:
    from tqdm import tqdm

    from jaxvoc.commands.common import CODEC_BUCKET_FRAMES, open_codec, write_wavs
    from jaxvoc.io.atomic import AllOrNothing
    from jaxvoc.io.batching import fill_batch, plan_batches

    stems, model = open_codec(args)
    cfg = model.config
    items = [read_tokens(p, model) for p in args.inputs]
    outputs = AllOrNothing(args.out_dir)  # checks the output folder now, writes nothing until the end
    bucket = not args.no_bucket
    plan, n_buckets = plan_batches([t.shape[1] for t, _ in items], args.batch_size, bucket, CODEC_BUCKET_FRAMES)
    before = model.compilations["decode"]
    results: dict[int, np.ndarray] = {}
    for L, idx in tqdm(plan, desc="decode", unit="batch", file=sys.stderr, disable=None):
        B = args.batch_size if bucket else len(idx)
        batch, lengths = fill_batch([items[i][0] for i in idx], B, L, 0, axis=1, dtype=np.int32)
        audio, _ = model.decode(batch, lengths, isolate=True)
        audio = np.asarray(audio)
        for r, i in enumerate(idx):
            results[i] = audio[r, :items[i][1]]
    with outputs:
        write_wavs(outputs, args.out_dir, stems, [results[i] for i in range(len(stems))], cfg.out_sample_rate,
                   args.subtype)
    print(f"wrote {len(stems)} file(s) to {args.out_dir}; {model.compilations['decode'] - before} compilation(s) "
          f"of the decoder for {n_buckets} length bucket(s)")
    return 0
