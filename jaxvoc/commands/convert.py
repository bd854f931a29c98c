"""jaxvoc convert KIND SRC OUT_DIR: official PyTorch checkpoint -> jaxvoc checkpoint folder (Orbax)."""

from __future__ import annotations

import time

from jaxvoc.registry import FAMILIES, converter_module, is_missing_official, missing_package


def add_arguments(p):
    p.add_argument("kind", help=f"model kind: {', '.join(FAMILIES)}")
    p.add_argument("src", help="the official checkpoint: BigVGAN model folder (config.json + "
                               "bigvgan_generator.pt), WaveGlow .pt, codec .nemo, "
                               "WavLM Hugging Face folder (config.json + model.safetensors or pytorch_model.bin)")
    p.add_argument("out_dir", help="folder to write (must not exist unless --overwrite)")
    p.add_argument("--config", help="config file, for formats that do not carry one (WaveGlow state dicts)")
    p.add_argument("--overwrite", action="store_true", help="replace OUT_DIR if it exists")


def run(args) -> int:
    from jaxvoc.io import checkpoint
    from conversion.common import count_params

    t0 = time.time()
    mod = converter_module(args.kind)
    try:
        config, params, extra = mod.convert(args.src, **({"config": args.config} if args.config else {}))
    except ImportError as e:  # torch, imported lazily
        if is_missing_official(e):
            raise missing_package(e) from None
        raise
    import logging

    # Orbax logs a failed write (e.g. a full disk) with its traceback at ERROR level on its own thread and then
    # raises it here; the CLI prints that error as one line, so its log is left out
    logging.getLogger("absl").setLevel(logging.CRITICAL)
    checkpoint.save(args.out_dir, args.kind, config, params, extra=extra, overwrite=args.overwrite)
    n = count_params(params)
    print(f"converted {args.kind} {args.src} -> {args.out_dir}: {n / 1e6:.2f} M parameters"
          + (f", plus {', '.join(extra)}" if extra else "") + f" in {time.time() - t0:.1f} s")
    return 0
