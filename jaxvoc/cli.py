"""The ``jaxvoc`` command line. Every subcommand has ``--help``. Bad input ends with one line on stderr,
``jaxvoc: error: ...``, exit code 2, no traceback and no partial output.

Subcommands are registered in ``COMMANDS``; each module adds its arguments (``add_arguments(parser)``) and
runs (``run(args)``), so a new model plugs in without touching the others.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
import re
import sys
import warnings

from jaxvoc.errors import UserError

# subcommand -> (module, one-line help)
COMMANDS = {
    "convert": ("jaxvoc.commands.convert", "convert an official PyTorch checkpoint to a jaxvoc (Orbax) checkpoint"),
    "synth": ("jaxvoc.commands.synth", "synthesize waveforms from audio files or .npy mels with a vocoder"),
    "export": ("jaxvoc.commands.export", "write a jaxvoc checkpoint or training run in the official PyTorch format"),
    "compare": ("jaxvoc.commands.compare", "run the official PyTorch model and the JAX port side by side"),
    "train": ("jaxvoc.commands.train", "train or fine-tune a vocoder from a config (GAN or flow objective)"),
    "encode": ("jaxvoc.commands.encode", "audio files -> token files (.npz) with a codec"),
    "decode": ("jaxvoc.commands.decode", "token files (.npz) -> audio files with a codec"),
}


class _Parser(argparse.ArgumentParser):
    def error(self, message):  # one line, exit 2 (argparse prints the usage block otherwise)
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def plain(text: str) -> str:
    """A docstring as --help text: reStructuredText roles (:func:`x`) and literals (``x``, `x`) as plain x."""
    text = re.sub(r":[a-z]+:`~?([^`]+)`", r"\1", text)
    return re.sub(r"``?([^`]+)``?", r"\1", text).strip()


def build_parser() -> argparse.ArgumentParser:
    from jaxvoc import __version__

    p = _Parser(prog="jaxvoc", description=plain(__doc__.split("\n\n")[0]),
                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--version", action="version", version=f"jaxvoc {__version__}")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    sub.required = True
    for name, (mod, help_) in COMMANDS.items():
        module = importlib.import_module(mod)
        sp = sub.add_parser(name, help=help_, description=plain(module.__doc__ or help_),
                            formatter_class=argparse.RawDescriptionHelpFormatter)
        sp.set_defaults(_module=mod)
        module.add_arguments(sp)
    return p


def _show_warning(message, category, filename, lineno, file=None, line=None) -> None:
    """Every warning as one line on stderr: ``jaxvoc: warning: <message, line breaks folded>``."""
    text = " ".join(str(message).split())
    print(f"jaxvoc: warning: {text}", file=file or sys.stderr)


def setup_warnings() -> None:
    """Warnings reach stderr, once each (the "once" action: the first time a message is seen), one line each.

    Filtered, by the module that raises them, only third-party chatter the user cannot act on:
    * torch.nn.utils.weight_norm: FutureWarning "weight_norm is deprecated" raised when the official BigVGAN
      and WaveGlow code (compare, the demo) builds its models; it concerns the official packages' source.
    * torch.jit._script: DeprecationWarning "torch.jit.script is deprecated", raised while NeMo (convert /
      compare codec) imports its modules, which script functions at import time; it concerns NeMo's source.
    """
    warnings.resetwarnings()  # PYTHONWARNINGS=ignore or a library's blanket filter would silence jaxvoc's own
    warnings.simplefilter("once")
    warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.nn\.utils\.weight_norm")
    warnings.filterwarnings("ignore", category=DeprecationWarning, module=r"torch\.jit\._script")
    warnings.showwarning = _show_warning


def _os_error_line(e: OSError) -> str:
    """An OSError (permission, full disk, a file where a folder should be) as one actionable line."""
    where = e.filename if e.filename is not None else ""
    what = e.strerror or str(e)
    fix = {errno.ENOSPC: "free some space or write to another disk",
           errno.EDQUOT: "free some space or write to another disk",
           errno.EACCES: "choose a writable output path", errno.EPERM: "choose a writable output path",
           errno.EROFS: "choose a writable output path",
           errno.ENOTDIR: "choose another output path", errno.EEXIST: "remove it or choose another output path",
           errno.EISDIR: "a folder is in the way of an output file; remove it or choose another output path",
           errno.ENOENT: "check the path",
           errno.EFBIG: "the file size limit (ulimit -f) was reached; raise it or write to another disk"}.get(e.errno, "check the path and the disk")
    return f"{what}: {where}; {fix}" if where else f"{what}; {fix}"


def _resource_exhausted(e: BaseException) -> bool:
    """XLA's out-of-memory (an XlaRuntimeError / JaxRuntimeError, or a RuntimeError wrapping it)."""
    return isinstance(e, RuntimeError) and "RESOURCE_EXHAUSTED" in str(e)


OUT_OF_MEMORY_FIX = "lower --batch-size, give shorter inputs, or a smaller --window (synth, encode)"


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    setup_warnings()
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return importlib.import_module(args._module).run(args) or 0
    except UserError as e:
        print(f"jaxvoc: error: {e}", file=sys.stderr)
    except OSError as e:
        print(f"jaxvoc: error: {_os_error_line(e)}", file=sys.stderr)
    except MemoryError:
        print(f"jaxvoc: error: out of memory; {OUT_OF_MEMORY_FIX}", file=sys.stderr)
    except KeyboardInterrupt:
        print("jaxvoc: interrupted", file=sys.stderr)
        return 130
    except Exception as e:
        from jaxvoc.io.checkpoint import storage_error  # (jax: imported only when an error needs it)

        storage = storage_error(e)
        if storage is not None:
            print(f"jaxvoc: error: {_os_error_line(storage)}", file=sys.stderr)
            return 2
        if not _resource_exhausted(e):
            raise
        first = " ".join(str(e).split())[:200]
        print(f"jaxvoc: error: out of memory: the accelerator ran out of memory ({first}); {OUT_OF_MEMORY_FIX}",
              file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main())
