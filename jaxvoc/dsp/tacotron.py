"""Tacotron2's STFT (``tacotron2.stft.STFT``): ``transform`` = magnitude and phase of a centred, Hann-windowed
STFT; ``inverse`` = windowed overlap-add divided by the window's sum-square envelope. WaveGlow's Denoiser
uses both."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.dsp.stft import MelConfig, frame, hann_window, reflect_pad
from jaxvoc.nn.conv import pad_to_ends

Array = jax.Array



@dataclasses.dataclass(frozen=True)
class STFTConfig:
    filter_length: int = 1024
    hop_length: int = 256
    win_length: int = 1024

    @property
    def mel_like(self) -> MelConfig:
        return MelConfig(sampling_rate=1, n_fft=self.filter_length, num_mels=1, hop_size=self.hop_length,
                         win_size=self.win_length, padding="center", magnitude_eps=0.0)


def stft_transform(audio: Array, cfg: STFTConfig = STFTConfig(), ends: Array | None = None
                   ) -> tuple[Array, Array]:
    """Tacotron2 ``STFT.transform``: [B, N] -> (magnitude, phase), each [B, frames, filter_length//2+1].
    ``ends`` [B] (samples): each item's own length in a padded batch; its reflect padding is then taken at its
    own end, so its first ``ends[b] // hop + 1`` frames are those of the item alone."""
    if ends is None:
        y = reflect_pad(audio, cfg.mel_like)
    else:
        half = cfg.filter_length // 2
        y = pad_to_ends(jnp.asarray(audio)[..., None], half, half, "reflect", ends)[..., 0]
    frames = frame(y, cfg.filter_length, cfg.hop_length) * jnp.asarray(
        hann_window(cfg.win_length, cfg.filter_length), y.dtype)
    spec = jnp.fft.rfft(frames, axis=-1)
    re, im = jnp.real(spec), jnp.imag(spec)
    return jnp.sqrt(re * re + im * im), jnp.arctan2(im, re)


def window_sumsquare(n_frames: int, cfg: STFTConfig) -> np.ndarray:
    """Sum of the squared (periodic Hann) window over the frames' positions, float32 as the official."""
    n = cfg.filter_length + cfg.hop_length * (n_frames - 1)
    win_sq = hann_window(cfg.win_length, cfg.filter_length).astype(np.float64) ** 2
    x = np.zeros(n, np.float32)
    for i in range(n_frames):
        s = i * cfg.hop_length
        x[s:min(n, s + cfg.filter_length)] += win_sq[:max(0, min(cfg.filter_length, n - s))].astype(np.float32)
    return x


def end_profiles(cfg: STFTConfig) -> np.ndarray:
    """[r - 1, filter_length - hop] (r = filter_length / hop): the official window sum-square just past the
    start of the last frame + 1 of a signal of F frames, for F = 1 … r - 1 (row F - 1); every F >= r - 1 has
    the profile of row r - 2 (the same terms added in the same order)."""
    r, hop = cfg.filter_length // cfg.hop_length, cfg.hop_length
    return np.stack([window_sumsquare(f, cfg)[f * hop:(f - 1) * hop + cfg.filter_length] for f in range(1, r)])


def stft_inverse(magnitude: Array, phase: Array, cfg: STFTConfig = STFTConfig(),
                 n_frames: Array | None = None) -> Array:
    """Tacotron2 ``STFT.inverse``: (magnitude, phase) [B, frames, bins] -> audio [B, (frames - 1) * hop].
    ``n_frames`` [B]: each item's own frame count in a padded batch; its first ``(n_frames[b] - 1) * hop``
    samples are then those of the item alone (its later frames are left out of the overlap-add and of the
    window envelope, whose float32 values are the official ones for that frame count)."""
    B, F, nb = magnitude.shape
    if n_frames is not None:
        keep = jnp.arange(F)[None, :] < jnp.asarray(n_frames)[:, None]
        magnitude = jnp.where(keep[..., None], magnitude, 0.0)
    n_fft, hop = cfg.filter_length, cfg.hop_length
    re = magnitude * jnp.cos(phase)
    im = magnitude * jnp.sin(phase)
    im = im.at[..., 0].set(0.0).at[..., nb - 1].set(0.0)  # the basis has no imaginary DC / Nyquist row
    frames = jnp.fft.irfft(re + 1j * im, n=n_fft, axis=-1) * jnp.asarray(hann_window(cfg.win_length, n_fft),
                                                                          magnitude.dtype)
    # overlap-add: frame f starts at f * hop; n_fft = r * hop
    r = n_fft // hop
    if n_fft % hop:
        raise ValueError("filter_length must be a multiple of hop_length")
    blocks = frames.reshape(B, F, r, hop)
    out = jnp.zeros((B, F + r - 1, hop), frames.dtype)
    for j in range(r):
        out = out.at[:, j:j + F].add(blocks[:, :, j])
    out = out.reshape(B, (F + r - 1) * hop)
    wss = jnp.asarray(window_sumsquare(F, cfg))
    if n_frames is not None:  # past the start of frame n_frames[b]: that item's own end profile
        prof = jnp.asarray(end_profiles(cfg))
        nf = jnp.asarray(n_frames)[:, None]
        k = jnp.arange(wss.shape[0])[None, :] - nf * hop
        row = jnp.clip(nf, 1, r - 1) - 1
        tail = prof[row, jnp.clip(k, 0, prof.shape[1] - 1)]
        wss = jnp.where(k < 0, wss[None, :], jnp.where(k < prof.shape[1], tail, 0.0))
    tiny = np.finfo(np.float32).tiny
    out = out / jnp.where(wss > tiny, wss, 1.0)
    half = n_fft // 2
    return out[:, half:out.shape[1] - half]
