"""Audio files: reading (any rate / channel count, resampled and down-mixed with a warning) and atomic
writing."""

from __future__ import annotations

import os

import numpy as np

from jaxvoc.errors import UserError, warn
from jaxvoc.io.atomic import atomic_file, naming

# A short English sentence at 24 kHz shipped with the package: the default input of `jaxvoc compare`.
BUNDLED_SPEECH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "assets", "speech_24000.wav")

def load_audio(path: str, sampling_rate: int) -> np.ndarray:
    """Reads an audio file as float32 mono at ``sampling_rate`` (down-mixing and resampling with a warning).
    Raises UserError for a missing, unreadable or empty file."""
    import soundfile as sf

    if not os.path.exists(path):
        raise UserError(f"input not found: {path}")
    try:
        data, sr = sf.read(path, dtype="float32", always_2d=True)
    except Exception as e:  # soundfile raises its own LibsndfileError / RuntimeError
        raise UserError(f"cannot read {path} as audio ({str(e).splitlines()[0]}); give a wav/flac/ogg file") from None
    if data.shape[0] == 0:
        raise UserError(f"{path} holds no samples; give a non-empty audio file")
    if data.shape[1] > 1:
        warn(f"{path}: {data.shape[1]} channels, down-mixed to mono")
    y = data.mean(axis=1)
    if sr != sampling_rate:
        import librosa

        warn(f"{path}: resampled from {sr} Hz to {sampling_rate} Hz")
        y = librosa.resample(y, orig_sr=sr, target_sr=sampling_rate).astype(np.float32)
    if not np.all(np.isfinite(y)):
        raise UserError(f"{path} contains NaN or Inf samples")
    return y


def write_audio(path: str, audio: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> None:
    """Writes mono audio atomically (temporary file in the same folder, then rename)."""
    with atomic_file(path, ".wav") as tmp:
        write_wav(tmp, audio, sampling_rate, subtype)


def write_wav(path: str, audio: np.ndarray, sampling_rate: int, subtype: str = "PCM_16") -> None:
    """Writes mono audio to ``path`` as it is (callers give a temporary path: see write_audio, AllOrNothing).

    The wav is encoded in memory and written by Python: libsndfile writing to the file itself reports a full
    disk as "System error." (LibsndfileError), Python raises OSError(ENOSPC), which the CLI turns into one
    line."""
    import io

    import soundfile as sf

    audio = np.asarray(audio, dtype=np.float32).reshape(-1)
    buf = io.BytesIO()
    sf.write(buf, np.clip(audio, -1.0, 1.0) if subtype.startswith("PCM") else audio, sampling_rate,
             subtype=subtype, format="WAV")
    with naming(path), open(path, "wb") as f:
        f.write(buf.getbuffer())
