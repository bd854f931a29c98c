"""What several subcommands share: opening the model a command needs, checking batch options and output
stems before any work is done."""

from __future__ import annotations

from jaxvoc.errors import UserError
from jaxvoc.io.batching import unique_stems

CODEC_BUCKET_FRAMES = 16  # length-bucket quantum of encode / decode, in codec frames


def open_model(args, kinds: tuple[str, ...], fix: str):
    """The argument checks shared by synth, encode and decode, then the model: (output stems, model). ``kinds``:
    the model kinds the command takes; ``fix``: what to do with another kind."""
    import os

    import jaxvoc

    from jaxvoc.io.checkpoint import read_meta

    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    stems = unique_stems(args.inputs)

    def check(kind: str) -> None:
        if kind not in kinds:
            raise UserError(f"{args.ckpt} is a {kind} checkpoint, not a {' or '.join(kinds)} model; {fix}")

    if os.path.exists(args.ckpt):  # a local folder: its kind first (before a --dtype it may not have)
        check(read_meta(args.ckpt)["kind"])
    model = jaxvoc.load(args.ckpt, dtype=getattr(args, "dtype", "float32"))  # a local folder or a Hub repo id
    check(model.kind)
    return stems, model


def open_codec(args):
    """(output stems, codec model) for encode and decode."""
    return open_model(args, ("codec",), "convert a NeMo codec with jaxvoc convert codec MODEL.nemo DIR")


def write_wavs(outputs, out_dir: str, stems: list[str], audios, sampling_rate: int, subtype: str) -> None:
    """``out_dir/<stem>.wav`` for every stem, staged in ``outputs`` (the command's AllOrNothing, whose block
    the caller is in: all the run's files appear together when it ends, or none)."""
    import os

    from jaxvoc.io.audio import write_wav

    for stem, audio in zip(stems, audios):
        write_wav(outputs.stage(os.path.join(out_dir, stem + ".wav"), ".wav"), audio, sampling_rate, subtype)
