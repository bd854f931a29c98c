"""jaxvoc convert KIND SRC OUT_DIR: official PyTorch checkpoint -> jaxvoc checkpoint folder (Orbax).

SRC is a local file or folder, or an official Hugging Face Hub repo id (owner/name, owner/name@revision):
only the files the model needs are fetched (--with-discriminator adds BigVGAN's discriminator/optimizer file),
converted once into jaxvoc's cache ($JAXVOC_CACHE, default ~/.cache/jaxvoc) by repo and commit, with the
repo, revision, commit and every source file's sha256 in the checkpoint's metadata, and copied to OUT_DIR.
HF_HUB_OFFLINE=1 uses only the local caches."""

from __future__ import annotations

import os
import time

from jaxvoc.errors import UserError
from jaxvoc.registry import FAMILIES, convert_with


def add_arguments(p):
    p.add_argument("kind", help=f"model kind: {', '.join(FAMILIES)}")
    p.add_argument("src", help="the official checkpoint: BigVGAN model folder (config.json + "
                               "bigvgan_generator.pt), WaveGlow .pt, codec .nemo, "
                               "WavLM Hugging Face folder (config.json + model.safetensors or pytorch_model.bin); "
                               "or a Hugging Face Hub repo id such as nvidia/bigvgan_v2_24khz_100band_256x")
    p.add_argument("out_dir", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--config", help="config file, for formats that do not carry one (WaveGlow state dicts)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")
    p.add_argument("--revision", help="Hub repo: branch, tag or commit (default main; or write SRC@REVISION)")
    p.add_argument("--with-discriminator", action="store_true",
                   help="Hub repo: also fetch and convert BigVGAN's bigvgan_discriminator_optimizer.pt (for "
                        "fine-tuning; a local folder's is converted whenever it is there)")


def run(args) -> int:
    from jaxvoc.io import hub

    if hub.is_repo_id(args.src):
        return _from_hub(args, hub)
    for flag, given in (("--revision", args.revision), ("--with-discriminator", args.with_discriminator)):
        if given:
            raise UserError(f"{flag} is for Hugging Face repo ids; {args.src} is a local path")
    from jaxvoc.io import checkpoint
    from conversion.common import count_params

    t0 = time.time()
    config, params, extra = convert_with(args.kind, args.src, **({"config": args.config} if args.config else {}))
    checkpoint.save(args.out_dir, args.kind, config, params, extra=extra, overwrite=args.overwrite)
    n = count_params(params)
    print(f"converted {args.kind} {args.src} -> {args.out_dir}: {n / 1e6:.2f} M parameters"
          + (f", plus {', '.join(extra)}" if extra else "") + f" in {time.time() - t0:.1f} s")
    return 0


def _from_hub(args, hub) -> int:
    """Hub repo -> jaxvoc's cache (converted there once per commit) -> a copy at OUT_DIR."""
    import shutil

    from jaxvoc.io.atomic import atomic_dir, check_writable_dir
    from jaxvoc.io.checkpoint import read_meta

    if args.config:
        raise UserError("--config is for local files; a Hub repo carries its own config")
    out = os.path.abspath(args.out_dir)
    if os.path.exists(out) and not args.overwrite:  # before anything is downloaded
        raise UserError(f"{out} exists; remove it or pass --overwrite")
    check_writable_dir(os.path.dirname(out))
    t0 = time.time()
    got = hub.converted(args.src, args.revision, args.kind, training=args.with_discriminator)
    with atomic_dir(out, args.overwrite) as tmp:
        shutil.copytree(got.path, tmp, dirs_exist_ok=True)
    trees = [t for t in read_meta(out)["trees"] if t != "params"]
    snap = got.snapshot
    print(f"converted {got.kind} {snap.repo}@{snap.revision} (commit {snap.commit[:12]}) -> {args.out_dir}"
          + (f", plus {', '.join(trees)}" if trees else "")
          + f" in {time.time() - t0:.1f} s ({'converted into' if got.converted else 'read from'} jaxvoc's cache "
          f"{got.path})")
    return 0
