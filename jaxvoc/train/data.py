"""Training data with grain: audio files -> random fixed-length segments -> batches ``[B, segment_size]``.

Sources: a directory tree (every wav/flac/ogg below it), BigVGAN's LibriTTS filelists (``path|text`` lines,
``input_wavs_dir/path.wav``), or WaveGlow's plain lists of paths. The segment logic follows the official
loaders:

* ``style="bigvgan"`` (``bigvgan.meldataset.MelDataset``, training split): mono mix; a file at another rate is
  cropped to ``ceil(segment_size * sr_file / sr)`` samples at its own rate, then resampled (librosa) and cut
  to ``segment_size``; a file shorter than the segment is zero-padded at the end; the segment is then
  peak-normalised to 0.95 (``librosa.util.normalize(audio) * 0.95``).
* ``style="waveglow"`` (``waveglow.mel2samp.Mel2Samp``): files must be at the model's rate; crop at a random
  start or zero-pad at the end; no normalisation (int16 / 32768, as scipy + MAX_WAV_VALUE gives).

The crop start is drawn uniformly from ``[0, len - segment]`` (both ends included, as ``random.randint``),
from a per-example random generator that grain derives from the seed and the example's position in the
(shuffled, repeated) stream, so the data order and the segments are a pure function of the seed, and the
iterator state (a position) is all a checkpoint needs. Several processes (multi-host): the stream is the
GLOBAL one (one dataset over all files, one seed, the global batch size), and each process reads its own
rows of every global batch (process ``p`` of ``n`` reads rows ``[p * B / n, (p + 1) * B / n)``, the rows its
devices hold in the batch sharding), so the data, and hence the run, is a function of the seed and the
global step alone, not of how many processes share the work. Only the segment is read from disk (soundfile
seek).

The mel spectrograms are computed on the accelerator inside the train step with the jaxvoc front-end
(``jaxvoc.dsp.stft.mel_spectrogram``), from exactly these segments, as the official loaders compute them per
segment.
"""

from __future__ import annotations

import dataclasses
import math
import os
import warnings
from typing import Iterable, Literal, Sequence

import numpy as np

from jaxvoc.errors import UserError

AUDIO_EXTENSIONS = (".wav", ".flac", ".ogg")
Style = Literal["bigvgan", "waveglow"]


@dataclasses.dataclass(frozen=True)
class AudioFile:
    path: str
    frames: int  # samples per channel at the file's own rate
    samplerate: int


# ------------------------------------------------------------------------------------------------------------
# File lists


def read_bigvgan_filelist(filelist: str, wavs_dir: str) -> list[str]:
    """BigVGAN's ``get_dataset_filelist``: ``wavs_dir/<first |-field>.wav`` for every non-empty line."""
    lines = _read_lines(filelist)
    return [os.path.join(wavs_dir, line.split("|")[0] + ".wav") for line in lines if len(line) > 0]


def read_plain_filelist(filelist: str) -> list[str]:
    """WaveGlow's ``files_to_list``: one path per line (blank lines skipped). Relative paths are taken from
    the working directory as the official code does, or else from the list's own folder."""
    base = os.path.dirname(os.path.abspath(filelist))
    out = []
    for line in _read_lines(filelist):
        p = line.rstrip()
        if not p:
            continue
        if not os.path.isabs(p) and not os.path.exists(p) and os.path.exists(os.path.join(base, p)):
            p = os.path.join(base, p)
        out.append(p)
    return out


def scan_directory(root: str) -> list[str]:
    """Every audio file (wav/flac/ogg) below ``root``, sorted."""
    if not os.path.isdir(root):
        raise UserError(f"audio folder not found: {root}; set input_wavs_dir to a folder of audio files")
    found = []
    for dirpath, dirnames, filenames in os.walk(root, followlinks=True):
        dirnames.sort()
        found += [os.path.join(dirpath, f) for f in sorted(filenames) if f.lower().endswith(AUDIO_EXTENSIONS)]
    if not found:
        raise UserError(f"no audio files (wav/flac/ogg) below {root}; point input_wavs_dir at your data")
    return found


def _read_lines(path: str) -> list[str]:
    if not os.path.exists(path):
        raise UserError(f"file list not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            return f.read().split("\n")
    except UnicodeDecodeError as e:
        raise UserError(f"{path} is not a UTF-8 text file list ({e})") from None


def probe(paths: Sequence[str], sampling_rate: int, style: Style, allow_empty: bool = False) -> list[AudioFile]:
    """Reads every file's header; one clear error for a missing or unreadable file, or (waveglow style) a
    file at another rate."""
    import soundfile as sf

    if not paths and not allow_empty:
        raise UserError("the file list is empty; give at least one audio file")
    out = []
    for p in paths:
        if not os.path.exists(p):
            raise UserError(f"audio file not found: {p}; fix the file list or input_wavs_dir")
        try:
            info = sf.info(p)
        except Exception as e:
            raise UserError(f"cannot read {p} as audio ({str(e).splitlines()[0][:120]}); remove it from the list") from None
        if info.frames < 1:
            raise UserError(f"{p} holds no samples; remove it from the list")
        if style == "waveglow" and info.samplerate != sampling_rate:
            raise UserError(f"{p} is at {info.samplerate} Hz but the config's sampling_rate is {sampling_rate}; "
                            "resample the data (WaveGlow's loader does not)")
        out.append(AudioFile(p, int(info.frames), int(info.samplerate)))
    return out


# ------------------------------------------------------------------------------------------------------------
# Segments (pure functions; tested against the official loaders)


def read_audio(f: AudioFile, start: int = 0, frames: int = -1) -> np.ndarray:
    """float32 mono (channel mean) samples ``[start, start + frames)`` at the file's own rate."""
    import soundfile as sf

    y, _ = sf.read(f.path, start=start, frames=frames, dtype="float32", always_2d=True)
    return y.mean(axis=1, dtype=np.float32) if y.shape[1] > 1 else y[:, 0]


def crop_or_pad(audio: np.ndarray, size: int, start: int) -> np.ndarray:
    """``audio[start:start+size]`` when long enough, else zero-padded at the end to ``size``."""
    if audio.shape[0] >= size:
        return audio[start:start + size]
    return np.pad(audio, (0, size - audio.shape[0]), mode="constant")


def peak_normalize(audio: np.ndarray) -> np.ndarray:
    """``librosa.util.normalize(audio) * 0.95`` (max-abs normalisation; silent input left unscaled)."""
    audio = np.asarray(audio, np.float32)
    peak = np.max(np.abs(audio)) if audio.size else np.float32(0)
    if peak < np.finfo(np.float32).tiny:
        peak = np.float32(1.0)
    return (audio / peak) * np.float32(0.95)


def source_segment_size(segment_size: int, file_rate: int, sampling_rate: int) -> int:
    return segment_size if file_rate == sampling_rate else math.ceil(segment_size * (file_rate / sampling_rate))


def segment_start(rng: np.random.Generator, num_frames: int, size: int) -> int:
    """Uniform in ``[0, num_frames - size]``, both ends included (0 when the file is shorter)."""
    return int(rng.integers(0, max(0, num_frames - size) + 1))


def load_segment(f: AudioFile, segment_size: int, sampling_rate: int, style: Style, start: int) -> np.ndarray:
    """One training segment of ``segment_size`` samples starting at ``start`` (at the file's rate)."""
    size = source_segment_size(segment_size, f.samplerate, sampling_rate)
    if f.frames >= size:
        audio = read_audio(f, start, size)
    else:
        audio = crop_or_pad(read_audio(f), size, 0)
    if f.samplerate != sampling_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=f.samplerate, target_sr=sampling_rate)
        audio = audio[:segment_size]
    if style == "bigvgan":
        audio = peak_normalize(audio)
    return np.ascontiguousarray(audio, np.float32)


def load_validation_clip(f: AudioFile, sampling_rate: int, hop_size: int, style: Style,
                         max_samples: int | None = None) -> np.ndarray:
    """A whole held-out clip, as the official BigVGAN validation split: resampled, cut to a multiple of
    ``hop_size`` (and to ``max_samples`` if given), peak-normalised for style bigvgan."""
    audio = read_audio(f)
    if f.samplerate != sampling_rate:
        import librosa

        audio = librosa.resample(audio, orig_sr=f.samplerate, target_sr=sampling_rate)
    if max_samples:
        audio = audio[:max_samples]
    audio = audio[: audio.shape[0] - audio.shape[0] % hop_size]
    if style == "bigvgan":
        audio = peak_normalize(audio)
    return np.ascontiguousarray(audio, np.float32)


# ------------------------------------------------------------------------------------------------------------
# grain pipeline


def _segment_transform(segment_size: int, sampling_rate: int, style: Style):
    import grain

    class LoadSegment(grain.transforms.RandomMap):
        def random_map(self, f: AudioFile, rng: np.random.Generator) -> np.ndarray:
            size = source_segment_size(segment_size, f.samplerate, sampling_rate)
            return load_segment(f, segment_size, sampling_rate, style, segment_start(rng, f.frames, size))

    return LoadSegment()


def global_examples(files: Sequence[AudioFile], *, segment_size: int, sampling_rate: int, seed: int,
                    style: Style):
    """The endless global stream of training segments as a grain ``MapDataset``: all files, one seed,
    reshuffled every epoch (element ``k`` of epoch ``e`` is ``files[perm_e[k]]``), a random segment drawn
    from a generator keyed by the seed and the element's global position."""
    import grain

    if any(f.samplerate != sampling_rate for f in files):
        if style == "bigvgan":
            warnings.warn("some training files are not at the model's sampling_rate; segments are resampled "
                          "on the fly (slower); resample the data beforehand to avoid this")
    ds = grain.MapDataset.source(list(files)).seed(seed)
    return ds.shuffle().repeat(None).random_map(_segment_transform(segment_size, sampling_rate, style))


def train_dataset(files: Sequence[AudioFile], *, segment_size: int, sampling_rate: int, batch_size: int,
                  seed: int, style: Style, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, prefetch: int = 8):
    """An endless grain ``IterDataset`` of float32 batches ``[batch_size // process_count, segment_size]``:
    this process's rows of the global batches of :func:`global_examples` (``batch_size`` is the GLOBAL batch
    size). Global batch ``b`` holds elements ``[b * batch_size, (b + 1) * batch_size)`` of the stream;
    process ``p`` reads its contiguous block of rows of each (grain: rows batched in blocks of the
    per-process size, then every ``process_count``-th block from block ``p``); only those rows are read
    from disk. The concatenation over processes is the single-process batch, bitwise."""
    import grain

    if process_count < 1 or not 0 <= process_index < process_count:
        raise UserError(f"process index {process_index} is not in [0, {process_count})")
    if batch_size % process_count:
        raise UserError(f"batch_size {batch_size} does not split over {process_count} processes; "
                        f"make it a multiple of {process_count}")
    local = batch_size // process_count
    ds = global_examples(files, segment_size=segment_size, sampling_rate=sampling_rate, seed=seed, style=style)
    ds = ds.batch(local, drop_remainder=True)[process_index::process_count]
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def split_validation(paths: list[str], n: int, seed: int) -> tuple[list[str], list[str]]:
    """Directory-tree mode: hold out ``n`` files (chosen by the seed) for validation."""
    if n <= 0:
        return paths, []
    if n >= len(paths):
        raise UserError(f"cannot hold out {n} validation file(s) from {len(paths)}; lower num_validation_files")
    order = np.random.default_rng(seed).permutation(len(paths))
    held = set(order[:n].tolist())
    return [p for i, p in enumerate(paths) if i not in held], [p for i, p in enumerate(paths) if i in held]


def batches(iterator: Iterable) -> Iterable[np.ndarray]:
    for b in iterator:
        yield np.asarray(b, np.float32)
