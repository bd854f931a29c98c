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
* ``style="codec"`` (NeMo 3.0.0 ``VocoderDataset`` with ``n_samples``, i.e. ``sample_audio`` +
  ``AudioSegment.segment_from_file``): samples read as int32 and scaled by 2^-31 (NeMo's ``int_values``);
  a file with more than ``ceil(n_samples * sr_file / sr)`` samples is cropped to that many at a random start
  ``randint(0, len - size)``, resampled (librosa, as NeMo) and cut to ``n_samples``; a shorter file comes
  whole (resampled), and its true length goes with it: elements are ``{"audio": [n_samples],
  "audio_len": int32}``, zero-padded after ``audio_len`` (NeMo pads to the longest item of the batch, jaxvoc
  to ``n_samples`` for one static shape: the losses are masked by ``audio_len`` either way). Files come from
  NeMo JSON-lines manifests (``audio_filepath`` relative to the dataset's ``audio_dir``, ``duration``
  filtered by ``min_duration`` / ``max_duration`` as NeMo's ``filter_dataset_by_duration``; an ``offset``
  entry is a segment of its file, cropped as NeMo does: :func:`codec_offset_range`) or folders (durations
  from the headers). Epochs as NeMo's DataLoader with ``drop_last``: each epoch is a new
  permutation of the files cut into ``len(files) // batch_size`` whole batches, the remainder dropped, so
  global step ``s`` is batch ``s % steps_per_epoch`` of epoch ``s // steps_per_epoch`` (the discriminator
  schedule and the per-epoch learning-rate decay read these).

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
Style = Literal["bigvgan", "waveglow", "codec"]


@dataclasses.dataclass(frozen=True)
class AudioFile:
    path: str
    frames: int  # samples per channel at the file's own rate
    samplerate: int
    duration: float | None = None  # a NeMo manifest's "duration" (seconds), when the file came from one
    offset: float | None = None  # a NeMo manifest's "offset" (seconds): the entry is a segment of the file


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


# ------------------------------------------------------------------------------------------------------------
# NeMo manifests (codec)


@dataclasses.dataclass(frozen=True)
class ManifestEntry:
    audio_filepath: str  # resolved: absolute, or audio_dir / relative path
    duration: float
    offset: float | None = None  # seconds into the file (an entry that is a segment of a longer file)


def read_manifest(path: str) -> list[dict]:
    """NeMo's ``read_manifest``: one JSON object per line, blank lines skipped; a line that is not JSON is
    one error naming it."""
    import json

    out = []
    for i, line in enumerate(_read_lines(path), 1):
        line = line.strip()
        if not line:
            continue
        try:
            item = json.loads(line)
        except ValueError:
            raise UserError(f"{path}: line {i} is not JSON ({line[:60]!r}); a NeMo manifest holds one JSON object "
                            "per line") from None
        if not isinstance(item, dict):
            raise UserError(f"{path}: line {i} is not a JSON object; a NeMo manifest holds one object per line")
        out.append(item)
    return out


def manifest_entries(manifest: str, audio_dir: str | None, min_duration: float | None = None,
                     max_duration: float | None = None) -> list[ManifestEntry]:
    """The entries of a NeMo manifest that NeMo's VocoderDataset keeps: ``filter_dataset_by_duration`` on the
    manifest's ``duration`` (dropped when shorter than ``min_duration`` or longer than ``max_duration``; 0 or
    None disables either), ``audio_filepath`` relative to ``audio_dir`` (NeMo's ``get_audio_filepaths``;
    jaxvoc: the manifest's folder when no ``audio_dir`` is given). An absolute path is kept as it is (NeMo
    also requires it to lie below ``audio_dir``)."""
    import pathlib

    base = pathlib.Path(audio_dir if audio_dir else os.path.dirname(os.path.abspath(manifest)))
    out = []
    for i, item in enumerate(read_manifest(manifest), 1):
        if "audio_filepath" not in item or "duration" not in item:
            missing = [k for k in ("audio_filepath", "duration") if k not in item]
            raise UserError(f"{manifest}: entry {i} lacks {' and '.join(missing)}; NeMo manifests give both")
        d, offset = item["duration"], item.get("offset")
        for key, v in (("duration", d), ("offset", offset if offset is not None else 0.0)):
            if not isinstance(v, (int, float)) or isinstance(v, bool) or v < 0:
                raise UserError(f"{manifest}: entry {i}'s {key} must be a number of seconds >= 0, got {v!r}")
        if (min_duration and d < min_duration) or (max_duration and d > max_duration):
            continue
        p = pathlib.Path(item["audio_filepath"])
        out.append(ManifestEntry(str(p if p.is_absolute() else base / p), float(d),
                                 None if offset is None else float(offset)))
    return out


def filter_duration(files: Sequence[AudioFile], min_duration: float | None,
                    max_duration: float | None) -> list[AudioFile]:
    """NeMo's duration filter on files without a manifest (their header's duration)."""
    dur = lambda f: f.duration if f.duration is not None else f.frames / f.samplerate
    return [f for f in files if not ((min_duration and dur(f) < min_duration)
                                     or (max_duration and dur(f) > max_duration))]


def probe_manifest(entries: Sequence[ManifestEntry], sampling_rate: int, allow_empty: bool = False) -> list[AudioFile]:
    files = probe([e.audio_filepath for e in entries], sampling_rate, "codec", allow_empty=allow_empty)
    return [dataclasses.replace(f, duration=e.duration, offset=e.offset) for f, e in zip(files, entries)]


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


def read_audio(f: AudioFile, start: int = 0, frames: int = -1, int32: bool = False) -> np.ndarray:
    """float32 mono (channel mean) samples ``[start, start + frames)`` at the file's own rate. ``int32``:
    read as NeMo's ``AudioSegment`` with int values, int32 samples scaled by 2^-31 (equal to the float read
    for 16- and 24-bit files, not quite for float files)."""
    import soundfile as sf

    if int32:
        y, _ = sf.read(f.path, start=start, frames=frames, dtype="int32", always_2d=True)
        y = y.astype(np.float32) * np.float32(2.0 ** -31)
    else:
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


def _resample(audio: np.ndarray, file_rate: int, sampling_rate: int) -> np.ndarray:
    """librosa's resampling (its default, soxr_hq), as the official loaders; nothing at the same rate."""
    if file_rate == sampling_rate:
        return audio
    import librosa

    return librosa.resample(audio, orig_sr=file_rate, target_sr=sampling_rate)


def load_segment(f: AudioFile, segment_size: int, sampling_rate: int, style: Style, start: int) -> np.ndarray:
    """One training segment of ``segment_size`` samples starting at ``start`` (at the file's rate)."""
    size = source_segment_size(segment_size, f.samplerate, sampling_rate)
    if f.frames >= size:
        audio = read_audio(f, start, size)
    else:
        audio = crop_or_pad(read_audio(f), size, 0)
    audio = _resample(audio, f.samplerate, sampling_rate)[:segment_size]
    if style == "bigvgan":
        audio = peak_normalize(audio)
    return np.ascontiguousarray(audio, np.float32)


def codec_source_size(n_samples: int, file_rate: int, sampling_rate: int) -> int:
    """Samples read at the file's rate for a crop of ``n_samples`` at ``sampling_rate`` (NeMo:
    ``ceil(n_segments * sample_rate / target_sr)``)."""
    return math.ceil(n_samples * file_rate / sampling_rate)


def codec_offset_range(f: AudioFile, n_samples: int, sampling_rate: int) -> tuple[float, float]:
    """A manifest entry with an ``offset`` (NeMo's ``sample_audio``): the crop starts at a time drawn
    uniformly from ``[offset, max(offset, min(offset + duration, file duration - 0.1) - n_samples / sr)]``
    seconds."""
    max_end = min(f.offset + f.duration, f.frames / f.samplerate - 0.1)
    return f.offset, max(f.offset, max_end - n_samples / sampling_rate)


def offset_crop_start(f: AudioFile, seconds: float, n_samples: int, sampling_rate: int) -> int:
    """The crop start (in samples at the file's rate) of a crop drawn at ``seconds``: ``floor(seconds * sr_file)``
    (NeMo's ``segment_from_file``). NeMo gives up on an entry whose start is past ``len - size`` (a short
    segment at the very end of its file); jaxvoc takes the last crop that fits."""
    size = codec_source_size(n_samples, f.samplerate, sampling_rate)
    return min(math.floor(seconds * f.samplerate), f.frames - size)


def codec_crop_start(rng: np.random.Generator, f: AudioFile, n_samples: int, sampling_rate: int) -> int:
    """``randint(0, len - size)`` (both ends included) when the file is longer than the crop, else 0 (the
    whole file is used, whatever its offset, as NeMo). An entry with an offset: :func:`codec_offset_range`
    (the crop may run past the entry's own end into the rest of the file, as in NeMo)."""
    size = codec_source_size(n_samples, f.samplerate, sampling_rate)
    if not 0 < size < f.frames:
        return 0
    if f.offset is None:
        return int(rng.integers(0, f.frames - size + 1))
    lo, hi = codec_offset_range(f, n_samples, sampling_rate)
    return offset_crop_start(f, float(rng.uniform(lo, hi)) if hi else lo, n_samples, sampling_rate)


def load_codec_segment(f: AudioFile, n_samples: int, sampling_rate: int, start: int,
                       volume_norm: bool = False) -> tuple[np.ndarray, int]:
    """(audio ``[n_samples]`` float32, its length): NeMo's ``sample_audio`` for crop ``start`` (at the file's
    rate), zero-padded after the length. A file no longer than the crop comes whole (resampled); jaxvoc cuts
    it to ``n_samples`` in the one case where resampling makes it longer (a file of exactly the crop's
    source size at another rate, which NeMo would return one sample longer)."""
    size = codec_source_size(n_samples, f.samplerate, sampling_rate)
    audio = read_audio(f, start, size, int32=True) if 0 < size < f.frames else read_audio(f, int32=True)
    audio = _resample(audio, f.samplerate, sampling_rate)[:n_samples]
    if volume_norm:
        audio = peak_normalize(audio)
    n = int(audio.shape[0])
    return np.ascontiguousarray(crop_or_pad(audio, n_samples, 0), np.float32), n


def load_codec_clip(f: AudioFile, sampling_rate: int, trunc_duration: float | None = None,
                    volume_norm: bool = False) -> np.ndarray:
    """A whole clip as NeMo's ``load_audio`` (the validation set: ``n_samples`` null): the first
    ``min(duration, trunc_duration)`` seconds (``int(seconds * sr_file)`` samples; a manifest's ``duration``,
    else the file's) from the entry's ``offset`` (``int(offset * sr_file)``), resampled."""
    if f.duration is not None:  # NeMo: duration 0 reads the whole file
        seconds = min(f.duration, trunc_duration) if trunc_duration is not None else f.duration
        frames = int(seconds * f.samplerate) if seconds > 0 else -1
    else:
        frames = -1 if trunc_duration is None or f.frames <= trunc_duration * f.samplerate else \
            int(trunc_duration * f.samplerate)
    start = int(f.offset * f.samplerate) if f.offset else 0
    audio = _resample(read_audio(f, start, frames, int32=True), f.samplerate, sampling_rate)
    return np.ascontiguousarray(peak_normalize(audio) if volume_norm else audio, np.float32)


def load_validation_clip(f: AudioFile, sampling_rate: int, hop_size: int, style: Style,
                         max_samples: int | None = None) -> np.ndarray:
    """A whole held-out clip, as the official BigVGAN validation split: resampled, cut to a multiple of
    ``hop_size`` (and to ``max_samples`` if given), peak-normalised for style bigvgan."""
    audio = _resample(read_audio(f), f.samplerate, sampling_rate)
    if max_samples:
        audio = audio[:max_samples]
    audio = audio[: audio.shape[0] - audio.shape[0] % hop_size]
    if style == "bigvgan":
        audio = peak_normalize(audio)
    return np.ascontiguousarray(audio, np.float32)


# ------------------------------------------------------------------------------------------------------------
# grain pipeline


def _segment_transform(segment_size: int, sampling_rate: int, style: Style, volume_norm: bool = False):
    import grain

    class LoadSegment(grain.transforms.RandomMap):
        def random_map(self, f: AudioFile, rng: np.random.Generator):
            if style == "codec":
                audio, n = load_codec_segment(f, segment_size, sampling_rate,
                                              codec_crop_start(rng, f, segment_size, sampling_rate), volume_norm)
                return {"audio": audio, "audio_len": np.int32(n)}
            size = source_segment_size(segment_size, f.samplerate, sampling_rate)
            return load_segment(f, segment_size, sampling_rate, style, segment_start(rng, f.frames, size))

    return LoadSegment()


def steps_per_epoch(num_files: int, batch_size: int) -> int:
    """Whole global batches per epoch (NeMo's DataLoader with ``drop_last``); at least one."""
    if num_files < batch_size:
        raise UserError(f"{num_files} training file(s) do not fill one batch of {batch_size} (each epoch drops its "
                        "last partial batch, as NeMo's DataLoader with drop_last); add files or lower batch_size")
    return num_files // batch_size


def epoch_and_batch(step: int, steps_in_epoch: int) -> tuple[int, int]:
    """(epoch, batch index within it) of global step ``step`` (0-based) of a codec run."""
    return divmod(int(step), int(steps_in_epoch))


def global_examples(files: Sequence[AudioFile], *, segment_size: int, sampling_rate: int, seed: int,
                    style: Style, batch_size: int | None = None, volume_norm: bool = False):
    """The endless global stream of training segments as a grain ``MapDataset``: all files, one seed,
    reshuffled every epoch (element ``k`` of epoch ``e`` is ``files[perm_e[k]]``), a random segment drawn
    from a generator keyed by the seed and the element's global position. Style codec: each epoch keeps its
    first ``steps_per_epoch(len(files), batch_size) * batch_size`` elements (the rest would be NeMo's dropped
    last batch), so that no batch spans two epochs."""
    import grain

    if any(f.samplerate != sampling_rate for f in files):
        if style == "bigvgan":
            warnings.warn("some training files are not at the model's sampling_rate; segments are resampled "
                          "on the fly (slower); resample the data beforehand to avoid this")
    ds = grain.MapDataset.source(list(files)).seed(seed).shuffle().repeat(None)
    if style == "codec":
        if batch_size is None:
            raise ValueError("style codec needs the global batch_size (whole batches per epoch)")
        ds = _epoch_batches(ds, len(files), steps_per_epoch(len(files), batch_size) * batch_size, seed)
    return ds.random_map(_segment_transform(segment_size, sampling_rate, style, volume_norm))


class _EpochElement:
    """Element ``m`` of the trimmed stream: element ``(m // keep) * n + m % keep`` of the epoch stream."""

    def __init__(self, stream, n: int, keep: int):
        self.stream, self.n, self.keep = stream, n, keep

    def __call__(self, m: int):
        e, k = divmod(int(m), self.keep)
        return self.stream[e * self.n + k]


def _epoch_batches(stream, n: int, keep: int, seed: int):
    import sys

    import grain

    return grain.MapDataset.range(0, sys.maxsize).seed(seed).map(_EpochElement(stream, n, keep))


def train_dataset(files: Sequence[AudioFile], *, segment_size: int, sampling_rate: int, batch_size: int,
                  seed: int, style: Style, process_index: int = 0, process_count: int = 1,
                  num_threads: int = 2, prefetch: int = 8, volume_norm: bool = False):
    """An endless grain ``IterDataset`` of float32 batches ``[batch_size // process_count, segment_size]``
    (style codec: dicts ``{"audio": [b, segment_size] float32, "audio_len": [b] int32}``):
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
    ds = global_examples(files, segment_size=segment_size, sampling_rate=sampling_rate, seed=seed, style=style,
                         batch_size=batch_size, volume_norm=volume_norm)
    ds = ds.batch(local, drop_remainder=True)[process_index::process_count]
    return ds.to_iter_dataset(grain.ReadOptions(num_threads=num_threads, prefetch_buffer_size=prefetch))


def split_validation(paths: list, n: int, seed: int) -> tuple[list, list]:
    """Directory-tree mode: hold out ``n`` files (paths or AudioFiles, chosen by the seed) for validation."""
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


# ------------------------------------------------------------------------------------------------------------
# The codec's data sources


def _dataset_meta_files(meta: dict, ds, sampling_rate: int, what: str, allow_empty: bool) -> list[AudioFile]:
    """NeMo's ``dataset_meta`` ({name: {manifest_path, audio_dir, sample_weight}}): every manifest's kept
    entries, in the order of the mapping."""
    entries = []
    for name, m in meta.items():
        if not isinstance(m, dict) or "manifest_path" not in m:
            raise UserError(f"{what}.{name} must give manifest_path (and audio_dir), as NeMo's DatasetMeta")
        unknown = set(m) - {"manifest_path", "audio_dir", "sample_weight", "audio_tar_filepaths"}
        if unknown or m.get("audio_tar_filepaths"):
            raise UserError(f"{what}.{name}: {sorted(unknown) or 'audio_tar_filepaths'} not supported by jaxvoc; "
                            "give manifest_path and audio_dir")
        entries += manifest_entries(str(m["manifest_path"]), m.get("audio_dir"), ds.min_duration, ds.max_duration)
    return probe_manifest(entries, sampling_rate, allow_empty=allow_empty)


def codec_files(codec, train, seed: int) -> tuple[list[AudioFile], list[AudioFile]]:
    """(training files, validation files) of a codec run: ``codec`` is the CodecTrainingConfig, ``train`` the
    TrainSettings. Training data, first found: NeMo's ``train_ds_meta`` (``model.train_ds.dataset.
    dataset_meta``); ``train.input_training_file``, a NeMo manifest (relative paths from
    ``train.input_wavs_dir``, else from the manifest's folder); ``train.input_wavs_dir``, a folder. Validation:
    ``val_ds_meta``, else ``train.input_validation_file`` (a manifest), else ``train.num_validation_files``
    files held out of the training files. Each set filtered by its section's min/max_duration."""
    sr = codec.sample_rate
    tds = codec.train_ds.dataset
    vds = codec.validation_ds.dataset if codec.validation_ds is not None else None
    if tds.dataset_meta:
        files = _dataset_meta_files(tds.dataset_meta, tds, sr, "train_ds_meta", allow_empty=True)
    elif train.input_training_file:
        files = probe_manifest(manifest_entries(train.input_training_file, train.input_wavs_dir, tds.min_duration,
                                                tds.max_duration), sr, allow_empty=True)
    elif train.input_wavs_dir:
        files = filter_duration(probe(scan_directory(train.input_wavs_dir), sr, "codec"), tds.min_duration,
                                tds.max_duration)
    else:
        raise UserError("no training data; set train.input_wavs_dir (a folder of audio), train.input_training_file "
                        "(a NeMo manifest) or train_ds_meta")
    vmin, vmax = (vds.min_duration, vds.max_duration) if vds is not None else (None, None)
    if vds is not None and vds.dataset_meta:
        val = _dataset_meta_files(vds.dataset_meta, vds, sr, "val_ds_meta", allow_empty=True)
    elif train.input_validation_file:
        val = probe_manifest(manifest_entries(train.input_validation_file, train.input_wavs_dir, vmin, vmax), sr,
                             allow_empty=True)
    else:
        files, val = split_validation(files, train.num_validation_files, seed)
        val = filter_duration(val, vmin, vmax)
    if not files:
        raise UserError(f"no training file is left after the duration filter (min_duration {tds.min_duration}, "
                        f"max_duration {tds.max_duration}); check the manifest's durations")
    return files, val



def codec_run_data(codec, train, seed: int) -> tuple[list[AudioFile], list[np.ndarray]]:
    """(training files, validation clips) of a codec run: :func:`codec_files`, then at most
    ``train.validation_max_files`` whole validation clips as NeMo's validation set reads them
    (``validation_ds.dataset.trunc_duration``, ``volume_norm``; ``train.validation_max_seconds``, when set,
    shortens them further)."""
    files, val = codec_files(codec, train, seed)
    vds = codec.validation_ds.dataset if codec.validation_ds is not None else None
    trunc = vds.trunc_duration if vds is not None else None
    if train.validation_max_seconds:
        trunc = min(trunc, train.validation_max_seconds) if trunc is not None else train.validation_max_seconds
    clips = [load_codec_clip(f, codec.sample_rate, trunc, bool(vds and vds.volume_norm))
             for f in val[: train.validation_max_files]]
    return files, clips