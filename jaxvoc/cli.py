"""The ``jaxvoc`` command line. Every subcommand has ``--help``. Bad input ends with one line on stderr,
``jaxvoc: error: ...``, exit code 2, no traceback and no partial output.

Subcommands are registered in ``COMMANDS``; each module adds its arguments (``add_arguments(parser)``) and
runs (``run(args)``), so a new model plugs in without touching the others.
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
import warnings

from jaxvoc.errors import UserError

# subcommand -> (module, one-line help)
COMMANDS = {
    "convert": ("jaxvoc.commands.convert", "convert an official PyTorch checkpoint to a jaxvoc (Orbax) checkpoint"),
    "synth": ("jaxvoc.commands.synth", "synthesize waveforms from audio files or .npy mels with a vocoder"),
    "compare": ("jaxvoc.commands.compare", "run the official PyTorch model and the JAX port side by side"),
    "train": ("jaxvoc.commands.train", "train or fine-tune a vocoder from a config (GAN or flow objective)"),
    "encode": ("jaxvoc.commands.encode", "audio files -> token files (.npz) with a codec"),
    "decode": ("jaxvoc.commands.decode", "token files (.npz) -> audio files with a codec"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage block otherwise)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def build_parser() -> argparse.ArgumentParser:
    p = _Parser(prog="jaxvoc", description=" ".join(__doc__.split("\n\n")[0].split()))
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (mod, help_) in COMMANDS.items():
        sp = sub.add_parser(name, help=help_, description=help_)
        sp.set_defaults(_module=mod)
        importlib.import_module(mod).add_arguments(sp)
    return p


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    warnings.formatwarning = lambda msg, cat, *a, **k: f"jaxvoc: warning: {msg}\n"
    for category in (FutureWarning, DeprecationWarning, UserWarning):  # library chatter, not user advice
        warnings.filterwarnings("ignore", category=category)
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args) or 0
    except UserError as e:
        print(f"jaxvoc: error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("jaxvoc: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
