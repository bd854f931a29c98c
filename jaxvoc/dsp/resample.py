"""torchaudio's sinc resampling (``torchaudio.transforms.Resample`` defaults): kernel computed in float64 on
the host, kept as float32, applied as one strided convolution."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.nn.conv import conv1d

Array = jax.Array


@functools.lru_cache(maxsize=16)
def sinc_resample_kernel(orig_freq: int, new_freq: int, lowpass_filter_width: int = 6,
                         rolloff: float = 0.99) -> tuple[np.ndarray, int, int, int]:
    """torchaudio.transforms.Resample's kernel (sinc_interp_hann, computed in float64 but for the phase offsets,
    which torchaudio computes in float32; kept as float32):
    returns (kernel [K, 1, new] in WIO layout, width, orig, new) with the rates reduced by their gcd."""
    g = math.gcd(int(orig_freq), int(new_freq))
    orig, new = int(orig_freq) // g, int(new_freq) // g
    base = min(orig, new) * rolloff
    width = math.ceil(lowpass_filter_width * orig / base)
    idx = np.arange(-width, width + orig, dtype=np.float64)[None] / orig
    # torchaudio makes the phase offsets with torch's default dtype (float32: arange(dtype=None)) before adding
    # the float64 idx; exact for new = 2, not for e.g. 22050 -> 16000 (new = 320)
    t = (np.arange(0, -new, -1, dtype=np.float32)[:, None] / np.float32(new)).astype(np.float64) + idx
    t = np.clip(t * base, -lowpass_filter_width, lowpass_filter_width)
    window = np.cos(t * math.pi / lowpass_filter_width / 2) ** 2
    t = t * math.pi
    with np.errstate(invalid="ignore", divide="ignore"):
        k = np.where(t == 0, 1.0, np.sin(t) / t)
    k = (k * window * (base / orig)).astype(np.float32)  # [new, K]
    return k.T[:, None, :], width, orig, new


def resample(x: Array, orig_freq: int, new_freq: int) -> Array:
    """torchaudio.transforms.Resample(orig_freq, new_freq) of [B, T] audio."""
    if orig_freq == new_freq:
        return x
    kernel, width, orig, new = sinc_resample_kernel(orig_freq, new_freq)
    B, T = x.shape
    xp = jnp.pad(x, ((0, 0), (width, width + orig)))[..., None]
    y = conv1d(xp, jnp.asarray(kernel), stride=orig, precision=jax.lax.Precision.HIGHEST)  # [B, L, new]
    y = y.reshape(B, -1)
    return y[:, :math.ceil(new * T / orig)]
