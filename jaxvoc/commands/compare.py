"""jaxvoc compare KIND SRC: the official PyTorch model and the converted JAX model on the same input.

Prints max abs error, SNR (dB), log-mel L1 between the two outputs and both timings; writes a JSON report and
a PNG (both spectrograms and their difference), both or neither. Needs the conversion extra (torch + the
official package); without it, one line names the missing package."""

from __future__ import annotations

import os

from jaxvoc.errors import UserError
from jaxvoc.registry import FAMILIES, converter_module, is_missing_official, missing_package, model_module


def add_arguments(p):
    p.add_argument("kind", help=f"model kind: {', '.join(FAMILIES)}")
    p.add_argument("src", help="the official checkpoint (as for jaxvoc convert, a Hugging Face repo id too)")
    p.add_argument("--revision", help="Hub repo: branch, tag or commit (default main; or write SRC@REVISION)")
    p.add_argument("--input", help="audio file to take the mel from (default: the bundled speech sample)")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"], help="run both sides here")
    p.add_argument("--precision", default="both", choices=["highest", "default", "both"],
                   help="GPU matmul/conv precision: full float32, each framework's default (TF32), or both")
    p.add_argument("--config", help="config file, for formats that do not carry one")
    p.add_argument("--report", help="JSON report path (default: compare_<kind>.json)")
    p.add_argument("--png", help="spectrogram PNG path (default: the report path with .png)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per side (median reported)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="jaxvoc's synthesis dtype (bigvgan, waveglow); the official side stays float32")
    p.add_argument("--sigma", type=float, default=0.6, help="WaveGlow: noise scale")
    p.add_argument("--seed", type=int, default=0, help="noise seed")


def run(args) -> int:
    from jaxvoc.errors import UserError
    from jaxvoc.io import hub
    from jaxvoc.io.atomic import check_writable_dir

    args.report = args.report or f"compare_{args.kind}.json"
    args.png = args.png or os.path.splitext(args.report)[0] + ".png"
    for path in (args.report, args.png):  # an unwritable destination fails before anything is fetched or run
        check_writable_dir(os.path.dirname(os.path.abspath(path)))
    if not hub.is_repo_id(args.src):
        if args.revision:
            raise UserError(f"--revision is for Hugging Face repo ids; {args.src} is a local path")
        return _compare(args, args.src)
    with hub.official_source(args.src, args.kind, args.revision) as src:  # the official files, fetched
        return _compare(args, src)


def _compare(args, src: str) -> int:
    from conversion import report as rp

    shown, args.src = args.src, src
    mod = converter_module(args.kind)
    if args.dtype not in getattr(model_module(args.kind).Pretrained, "dtypes", ("float32",)):
        raise UserError(f"--dtype {args.dtype} is not available for a {args.kind} model; compare it in float32")
    from jaxvoc.io.atomic import AllOrNothing, naming

    report_path, png_path = args.report, args.png
    precisions = ["highest", "default"] if (args.device == "gpu" and args.precision == "both") else (
        [args.precision if args.device == "gpu" else "highest"])
    results = []
    for prec in precisions:
        if args.device == "gpu":
            rp.set_precision(prec)
        try:
            res = mod.compare(args)
        except ImportError as e:  # torch or the official package, imported lazily
            if is_missing_official(e):
                raise missing_package(e) from None
            raise
        res["precision"] = prec if args.device == "gpu" else "float32 (CPU)"
        rows = [("precision", res["precision"])] + res["rows"]
        rp.print_table(rows, f"{args.kind}: official PyTorch vs jaxvoc ({args.device})")
        results.append(res)
    last = results[-1]
    with naming(report_path), AllOrNothing() as outputs:  # the report and the plot together, or neither
        rp.spectrogram_png(outputs.stage(png_path, ".png"), last["reference"], last["jax"], last["mel_config"],
                           last["title"])
        rp.write_json(outputs.stage(report_path, ".json"),
                      {"kind": args.kind, "src": shown if shown != src else os.path.abspath(src),
                       "device": args.device,
                       "runs": [{k: v for k, v in r.items() if k not in ("reference", "jax", "mel_config", "rows")}
                                for r in results]})
    print(f"report: {report_path}\nplot:   {png_path}")
    return 0
