"""Tacotron2's STFT (``tacotron2.stft.STFT``): ``transform`` = magnitude and phase of a centred, Hann-windowed
STFT; ``inverse`` = windowed overlap-add divided by the window's sum-square envelope. WaveGlow's Denoiser
uses both."""

from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.dsp.stft import MelConfig, frame, hann_window, reflect_pad

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


def stft_transform(audio: Array, cfg: STFTConfig = STFTConfig()) -> tuple[Array, Array]:
    """Tacotron2 ``STFT.transform``: [B, N] -> (magnitude, phase), each [B, frames, filter_length//2+1]."""
    y = reflect_pad(audio, cfg.mel_like)
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


def stft_inverse(magnitude: Array, phase: Array, cfg: STFTConfig = STFTConfig()) -> Array:
    """Tacotron2 ``STFT.inverse``: (magnitude, phase) [B, frames, bins] -> audio [B, (frames - 1) * hop]."""
    B, F, nb = magnitude.shape
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
    wss = window_sumsquare(F, cfg)
    tiny = np.finfo(np.float32).tiny
    nonzero = wss > tiny
    out = out / jnp.asarray(np.where(nonzero, wss, 1.0).astype(np.float32))
    half = n_fft // 2
    return out[:, half:out.shape[1] - half]
