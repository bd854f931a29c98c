"""STFT and log-mel front-ends in JAX (jit-able, batched, differentiable).

Spectrogram layout is channels-last: ``[batch, frames, bins]``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Literal

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError

Array = jax.Array


@functools.lru_cache(maxsize=64)
def mel_filterbank(sampling_rate: int, n_fft: int, num_mels: int, fmin: float, fmax: float | None,
                   norm: str | None = "slaney") -> np.ndarray:
    """librosa's mel filters [num_mels, n_fft//2+1], float32 (fmax None -> sr/2); ``norm``: librosa's (Slaney
    area normalisation by default, None for NeMo's FilterbankFeatures(mel_norm=None))."""
    import librosa

    return librosa.filters.mel(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax,
                               norm=norm).astype(np.float32)


@functools.lru_cache(maxsize=64)
def hann_window(win_size: int, n_fft: int, periodic: bool = True) -> np.ndarray:
    """Hann window, zero-padded to n_fft centred, as torch.stft does: periodic (torch.hann_window's default) or
    symmetric (``periodic=False``, NeMo's codec losses and STFT discriminators)."""
    n = np.arange(win_size)
    period = win_size if periodic or win_size == 1 else win_size - 1
    w = (0.5 - 0.5 * np.cos(2 * np.pi * n / period)).astype(np.float32)
    left = (n_fft - win_size) // 2
    return np.pad(w, (left, n_fft - win_size - left))


def frame(x: Array, frame_length: int, hop: int) -> Array:
    """[B, N] -> [B, frames, frame_length] (no padding; frames = 1 + (N - frame_length) // hop)."""
    B, N = x.shape
    n_frames = 1 + (N - frame_length) // hop
    if n_frames < 1:
        raise UserError(f"audio of {N} samples is shorter than one analysis frame ({frame_length}); give longer audio")
    if frame_length % hop == 0:
        # frames as overlapping blocks of `hop` samples: cheap slices instead of a gather
        n_blocks = n_frames + frame_length // hop - 1
        blocks = x[:, : n_blocks * hop].reshape(B, n_blocks, hop)
        parts = [blocks[:, j:j + n_frames] for j in range(frame_length // hop)]
        return jnp.stack(parts, axis=2).reshape(B, n_frames, frame_length)
    idx = hop * np.arange(n_frames)[:, None] + np.arange(frame_length)[None]
    return x[:, idx]


@functools.lru_cache(maxsize=64)
def rect_window(win_size: int, n_fft: int) -> np.ndarray:
    """torch.stft's window when none is given: ones over win_size, zero-padded to n_fft centred."""
    left = (n_fft - win_size) // 2
    return np.pad(np.ones(win_size, np.float32), (left, n_fft - win_size - left))


def stft(x: Array, n_fft: int, hop: int, win_size: int,
         window: Literal["hann", "hann_symmetric", "rect"] = "hann", transform: str = "fft") -> Array:
    """torch.stft(center=False, onesided) of already padded audio: complex [B, frames, n_fft//2+1]. ``window``:
    periodic Hann (default), symmetric Hann (torch.hann_window(periodic=False)) or 'rect' (torch.stft with
    window=None). ``transform``: 'fft' (jnp.fft.rfft) or 'dft' (:func:`dft`, periodic Hann only: the summation
    order of a Fourier-basis conv)."""
    if transform == "dft":
        if window != "hann":
            raise ValueError("transform='dft' computes the Hann-windowed DFT only")
        re, im = dft(frame(x, n_fft, hop), n_fft, win_size)
        return jax.lax.complex(re, im)
    w = (rect_window(win_size, n_fft) if window == "rect" else
         hann_window(win_size, n_fft, periodic=window == "hann"))
    frames = frame(x, n_fft, hop) * jnp.asarray(w, x.dtype)
    return jnp.fft.rfft(frames, axis=-1)


def center_pad(x: Array, n_fft: int, mode: Literal["reflect", "constant"] = "reflect") -> Array:
    """torch.stft(center=True)'s padding of [B, N] audio: n_fft // 2 on each side (``pad_mode`` reflect, its
    default, or constant = zeros)."""
    pad = n_fft // 2
    if mode == "reflect" and x.shape[-1] <= pad:
        raise UserError(f"audio of {x.shape[-1]} samples is too short for reflect padding of {pad}; give longer audio")
    return jnp.pad(x, ((0, 0), (pad, pad)), mode=mode)


def magnitude(spec: Array, eps: float = 0.0) -> Array:
    """sqrt(re^2 + im^2 + eps) of a complex spectrum. With eps == 0 it is torch.abs / torch.norm, gradient
    included: 0 (not inf/NaN) where the spectrum is exactly 0 (frames of digital silence)."""
    power = jnp.real(spec) ** 2 + jnp.imag(spec) ** 2
    if eps:
        return jnp.sqrt(power + eps)
    nonzero = power > 0
    return jnp.where(nonzero, jnp.sqrt(jnp.where(nonzero, power, 1.0)), 0.0)


@functools.lru_cache(maxsize=16)
def dft_basis(n_fft: int, win_size: int) -> tuple[np.ndarray, np.ndarray]:
    """The Hann-windowed real Fourier basis [n_fft, 2 * (n_fft//2+1)] (cos, then -sin columns), computed in
    float64 and split into a float32 value and its float32 rounding remainder (hi + lo)."""
    n = np.arange(n_fft)
    w = np.zeros(n_fft)
    left = (n_fft - win_size) // 2
    w[left:left + win_size] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win_size) / win_size)
    ang = 2 * np.pi * np.outer(n, np.arange(n_fft // 2 + 1)) / n_fft
    basis = np.concatenate([np.cos(ang), -np.sin(ang)], axis=1) * w[:, None]
    hi = basis.astype(np.float32)
    return hi, (basis - hi.astype(np.float64)).astype(np.float32)


def dft(frames: Array, n_fft: int, win_size: int, block: int = 8, unroll: int = 4) -> tuple[Array, Array]:
    """Hann-windowed real DFT of frames [..., n_fft] by direct summation: (re, im) [..., n_fft//2+1].

    Each bin is summed over contiguous blocks of ``block`` samples (pairwise inside a block), the blocks
    accumulated in order, as a convolution with a Fourier basis (Tacotron2's STFT) sums. In float32 this is
    more accurate than an FFT in the quiet bins of a spectrum with a large dynamic range: a bin's running
    sum stays of the size of that bin's own leakage, whereas every FFT stage (and a GEMM that interleaves
    its reduction) mixes in the rounding error of the loud bins. The basis is float64-accurate (hi + lo).
    Costs n_fft * (n_fft + 2) multiply-adds per frame, far more than an FFT (timings: docs/waveglow.md)."""
    hi, lo = dft_basis(n_fft, win_size)
    lead = frames.shape[:-1]
    x = frames.reshape(-1, n_fft)
    step = block * unroll
    pad = -n_fft % step
    if pad:
        x = jnp.pad(x, ((0, 0), (0, pad)))
        hi = np.pad(hi, ((0, pad), (0, 0)))
    M, K = x.shape[0], hi.shape[1]
    n_steps = x.shape[1] // step
    xs = x.T.reshape(n_steps, unroll, block, M)[..., None]  # [steps, unroll, block, M, 1]
    bs = jnp.asarray(hi.reshape(n_steps, unroll, block, 1, K))

    def body(acc, xb):
        xc, bc = xb
        for u in range(unroll):
            terms = [xc[u, r] * bc[u, r] for r in range(block)]
            while len(terms) > 1:
                terms = [terms[i] + terms[i + 1] if i + 1 < len(terms) else terms[i]
                         for i in range(0, len(terms), 2)]
            acc = acc + terms[0]
        return acc, None

    acc, _ = jax.lax.scan(body, jnp.zeros((M, K), x.dtype), (xs, bs.astype(x.dtype)))
    acc = acc + jnp.dot(frames.reshape(-1, n_fft), jnp.asarray(lo, x.dtype), precision=jax.lax.Precision.HIGHEST)
    nb = n_fft // 2 + 1
    return acc[:, :nb].reshape(*lead, nb), acc[:, nb:].reshape(*lead, nb)


@dataclasses.dataclass(frozen=True)
class MelConfig:
    """A log-mel front-end. ``padding``: 'bigvgan' reflects (n_fft-hop)/2 samples on each side and frames
    without centring (BigVGAN's meldataset); 'center' reflects n_fft/2 (torch.stft(center=True), Tacotron2)."""

    sampling_rate: int
    n_fft: int
    num_mels: int
    hop_size: int
    win_size: int
    fmin: float = 0.0
    fmax: float | None = None
    padding: Literal["bigvgan", "center"] = "bigvgan"
    magnitude_eps: float = 1e-9  # added to re^2 + im^2 before the square root (0: torch.abs, safe gradient)
    clip_val: float = 1e-5  # log(clamp(mel, clip_val))
    transform: Literal["fft", "dft"] = "fft"  # 'dft': direct summation, as Tacotron2's conv STFT (see dft)

    def frames(self, num_samples: int) -> int:
        pad = self._pad()
        return 1 + (num_samples + 2 * pad - self.n_fft) // self.hop_size

    def _pad(self) -> int:
        return (self.n_fft - self.hop_size) // 2 if self.padding == "bigvgan" else self.n_fft // 2


def reflect_pad(audio, cfg: MelConfig, xp=jnp):
    """The front-end's reflect padding of [B, N] (or [N]) audio; ``xp=np`` does it on the host."""
    audio = xp.asarray(audio)
    if audio.ndim == 1:
        audio = audio[None]
    pad = cfg._pad()
    if audio.shape[-1] <= pad:
        raise UserError(f"audio of {audio.shape[-1]} samples is too short for reflect padding of {pad}; give longer audio")
    return xp.pad(audio, ((0, 0), (pad, pad)), mode="reflect")


def magnitude_spectrogram(audio: Array, cfg: MelConfig, padded: bool = False) -> Array:
    """|STFT| of [B, N] audio -> [B, frames, n_fft//2+1]; ``padded=True`` when reflect_pad was applied."""
    y = jnp.asarray(audio) if padded else reflect_pad(audio, cfg)
    spec = stft(y, cfg.n_fft, cfg.hop_size, cfg.win_size, transform=cfg.transform)
    return magnitude(spec, cfg.magnitude_eps)


def mel_spectrogram(audio: Array, cfg: MelConfig, padded: bool = False) -> Array:
    """log(clamp(mel_filters @ |STFT|, clip_val)) of [B, N] (or [N]) audio -> [B, frames, num_mels].
    ``padded=True``: the audio already went through :func:`reflect_pad` (frames past the end of the padded
    signal that a caller adds for shape bucketing can then be cropped without changing the others)."""
    mag = magnitude_spectrogram(audio, cfg, padded)
    basis = jnp.asarray(mel_filterbank(cfg.sampling_rate, cfg.n_fft, cfg.num_mels, cfg.fmin, cfg.fmax))
    mel = jnp.einsum("btf,mf->btm", mag, basis, precision=jax.lax.Precision.HIGHEST)
    return jnp.log(jnp.maximum(mel, cfg.clip_val))
