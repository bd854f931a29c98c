"""jaxvoc synth CKPT INPUT... -o OUT_DIR: waveforms from audio files or .npy mels with a converted vocoder.

Inputs of different lengths are padded into a few length buckets (and batches to a fixed size), so that many
files compile only a few programs. The model is given each item's true length (``vocode(..., lengths=)``,
traced data: no extra compilation), so every output is what the model gives that input alone, whatever the
padding: buckets change the speed, never the result. Every input is read and checked before anything is
written.

Inputs longer than ``--window`` frames go through overlapping windows of that many frames, one window at a time
(jaxvoc.models.windowed): one compiled program and the memory of one window whatever the length; the output
equals a whole run. Their .npy mels are read window by window and their audio is written window by window.
Running out of memory is a one-line error (exit 2, jaxvoc.cli) naming --window.

All or nothing: every output is written to a temporary file beside its target and all are renamed at the end;
on any failure (a bad input, a write or rename error) no output of the run remains (jaxvoc.io.atomic.AllOrNothing).
"""

from __future__ import annotations

import os
import sys

import numpy as np

from jaxvoc.commands.common import open_model, write_wavs
from jaxvoc.errors import UserError
from jaxvoc.io.batching import bucket_length, fill_batch, plan_batches
from jaxvoc.models.windowed import DEFAULT_WINDOW, default_window, resolve_window

def add_arguments(p):
    p.add_argument("ckpt", help="a jaxvoc checkpoint folder (from jaxvoc convert)")
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="audio files (any rate / channel count) or .npy mels [n_mels, T] or [1, n_mels, T]")
    p.add_argument("-o", "--out-dir", required=True, help="folder for <input stem>.wav")
    p.add_argument("--subtype", default="PCM_16", choices=["PCM_16", "FLOAT"], help="wav sample format")
    p.add_argument("--batch-size", type=int, default=4, help="files synthesized together (default 4)")
    p.add_argument("--no-bucket", action="store_true",
                   help="no length buckets: every distinct length compiles once (the output is the same either way)")
    p.add_argument("--sigma", type=float, default=0.6, help="WaveGlow: noise scale (default 0.6)")
    p.add_argument("--denoise", type=float, default=0.0, help="WaveGlow: denoiser strength (default 0, off)")
    p.add_argument("--seed", type=int, default=0, help="WaveGlow: noise seed (default 0)")
    p.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"],
                   help="weights and activations of the synthesis (default float32; bfloat16: faster where the "
                        "hardware has it, ~40 dB from the float32 output, see docs/bigvgan.md)")
    p.add_argument("--window", type=int, default=None, metavar="FRAMES",
                   help="inputs longer than FRAMES mel frames are synthesized in overlapping windows of FRAMES "
                        "frames (one compiled program, the memory of one window whatever the length, output "
                        f"equal to a whole run); default {DEFAULT_WINDOW} (at least 4x the receptive field), 0 = off")


def read_mel(path: str, num_mels: int) -> np.ndarray:
    """A .npy mel [n_mels, T] or [1, n_mels, T] -> float32 [T, n_mels], checked."""
    if not os.path.exists(path):
        raise UserError(f"input not found: {path}")
    try:
        m = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as e:
        raise UserError(f"cannot read {path} as a .npy array ({str(e).splitlines()[0][:120]})") from None
    if not isinstance(m, np.ndarray) or not np.issubdtype(m.dtype, np.number):
        raise UserError(f"{path} is not a numeric array; give a mel [n_mels, T]")
    if m.ndim == 3 and m.shape[0] == 1:
        m = m[0]
    if m.ndim != 2:
        raise UserError(f"{path} has shape {m.shape}; a mel must be [n_mels, T] or [1, n_mels, T]")
    if m.shape[0] != num_mels:
        raise UserError(f"{path} has {m.shape[0]} mel bands, the model takes {num_mels}; "
                        f"give a mel of shape [{num_mels}, T]")
    if m.shape[1] < 1:
        raise UserError(f"{path} has no frames")
    if not np.all(np.isfinite(m)):
        raise UserError(f"{path} contains NaN or Inf; give a finite log-mel")
    return np.ascontiguousarray(m.T.astype(np.float32))


def mels_from_inputs(model, paths: list[str], bucket: bool, window: int = 0) -> list:
    """Every input as a mel [T, n_mels]; audio goes through the model's own front-end, bucketed by length.
    A .npy mel longer than ``window`` frames (> 0) stays on disk (``NpyFrames``, read window by window)."""
    from jaxvoc.io.audio import load_audio
    from jaxvoc.io.npy_frames import NpyFrames, npy_frames
    from jaxvoc.dsp.stft import reflect_pad

    cfg = model.mel_config
    mels = []
    for path in paths:
        if path.lower().endswith(".npy"):
            n = npy_frames(path) if window and os.path.exists(path) else None
            if n is not None and n > window:
                m = NpyFrames(path, model.num_mels)
                m.check_finite()
                mels.append(m)
            else:
                mels.append(read_mel(path, model.num_mels))
            continue
        y = load_audio(path, model.sampling_rate)
        frames = cfg.frames(len(y))
        if frames < 1:
            raise UserError(f"{path} is too short ({len(y)} samples) for one mel frame")
        yp = reflect_pad(y.astype(np.float32), cfg, xp=np)
        if bucket:  # extra frames past the padded signal are computed and dropped; the others do not change
            target = (bucket_length(frames) - 1) * cfg.hop_size + cfg.n_fft
            yp = np.pad(yp, ((0, 0), (0, max(0, target - yp.shape[1]))))
        mels.append(np.asarray(model.mel(yp, padded=True))[0, :frames])
    return mels


def run(args) -> int:
    from tqdm import tqdm

    from jaxvoc.io.atomic import AllOrNothing
    from jaxvoc.models.base import map_large_blocks

    map_large_blocks()  # before the weights are read: freed large blocks go back to the system at once
    stems, model = open_model(args, ("bigvgan", "waveglow"), "use jaxvoc encode/decode for a codec")
    opts = {k: getattr(args, k) for k in model.synth_options}
    rf = model.receptive_field(**opts)
    window = resolve_window(args.window, default_window(rf), rf)
    bucket = not args.no_bucket
    mels = mels_from_inputs(model, args.inputs, bucket, window)
    long_items = [i for i, m in enumerate(mels) if window and len(m) > window]
    short_items = [i for i in range(len(mels)) if i not in set(long_items)]

    plan, n_buckets = plan_batches([len(mels[i]) for i in short_items], args.batch_size, bucket)
    batches = [(L, [short_items[j] for j in idx]) for L, idx in plan]
    outputs = AllOrNothing(args.out_dir)  # checks the output folder now, writes nothing until the end
    before = model.compilations
    results: dict[int, np.ndarray] = {}
    for L, idx in tqdm(batches, desc="synth", unit="batch", file=sys.stderr, disable=None):
        B = args.batch_size if bucket else len(idx)
        # rows filling up a batch: whole-length silence
        batch, lengths = fill_batch([mels[i] for i in idx], B, L, model.silence_level, dtype=np.float32)
        # without buckets every item of a batch is L frames long: the unmasked program, as model(mel) alone
        audio = np.asarray(model.vocode(batch, lengths=lengths if bucket else None, **opts))
        for r, i in enumerate(idx):
            results[i] = audio[r, :len(mels[i]) * model.hop_size]
    with outputs:
        for i in tqdm(long_items, desc="synth (windows)", unit="file", file=sys.stderr, disable=None):
            write_windowed(model, mels[i], window, 1, opts,
                           outputs.stage(os.path.join(args.out_dir, stems[i] + ".wav"), ".wav"), args.subtype)
        write_wavs(outputs, args.out_dir, [stems[i] for i in short_items], [results[i] for i in short_items],
                   model.sampling_rate, args.subtype)
    windows = f" and {len(long_items)} windowed file(s)" if long_items else ""
    print(f"wrote {len(stems)} file(s) to {args.out_dir}; {model.compilations - before} compilation(s) of the "
          f"{model.kind} generator for {n_buckets} length bucket(s){windows}")
    return 0


def write_windowed(model, mel, window: int, batch: int, opts: dict, tmp: str, subtype: str) -> None:
    """One long input through windows, its audio written window by window to ``tmp`` (a staged temporary
    path of the command's AllOrNothing)."""
    import soundfile as sf

    from jaxvoc.models.windowed import run_windows

    with sf.SoundFile(tmp, "w", samplerate=model.sampling_rate, channels=1, subtype=subtype, format="WAV") as f:
        for _, _, audio in run_windows(model, [(0, mel)], window, batch, **opts):
            f.write(np.clip(audio, -1.0, 1.0) if subtype.startswith("PCM") else audio)
