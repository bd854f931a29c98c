"""nnAudio's ``CQT2010v2`` (time-domain kernels of the top octave, applied to the signal and to successive 2x
low-passed copies of it), with constants computed on the host from their defining formulas (float64, rounded
to float32 as nnAudio does) and the transform in JAX."""

from __future__ import annotations

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.nn.conv import conv1d

Array = jax.Array


def _firwin2_lowpass(band_center: float, kernel_length: int, transition: float) -> np.ndarray:
    """nnAudio's create_lowpass_filter (scipy.signal.firwin2), float32."""
    from scipy import signal

    freqs = [0.0, band_center / (1 + transition), band_center * (1 + transition), 1.0]
    return signal.firwin2(kernel_length, freqs, [1.0, 1.0, 0.0, 0.0]).astype(np.float32)


@dataclasses.dataclass(frozen=True)
class CQTPlan:
    """The constants of one nnAudio CQT2010v2 (output_format Complex, constant padding, defaults elsewhere)."""

    hop: int  # hop of the top octave, after early downsampling
    n_bins: int
    n_octaves: int
    downsample_factor: int
    kernel_real: np.ndarray  # [K, 1, n_filters] float32, time-domain top-octave kernels (WIO)
    kernel_imag: np.ndarray
    lowpass: np.ndarray  # [256] float32, the 2x low-pass
    early_filter: np.ndarray | None  # [256] float32 or None
    lengths: np.ndarray  # [n_bins] float32, the librosa normalisation lengths

    @property
    def n_fft(self) -> int:
        return self.kernel_real.shape[0]


@functools.lru_cache(maxsize=32)
def cqt_plan(sr: float, hop_length: int, n_bins: int, bins_per_octave: int, fmin: float = 32.70,
             filter_scale: float = 1, basis_norm: int = 1) -> CQTPlan:
    """The constants nnAudio.features.cqt.CQT2010v2(sr, hop_length, fmin, n_bins=..., bins_per_octave=...,
    earlydownsample=True, window='hann') builds, computed the same way."""
    from scipy.signal import get_window

    q = float(filter_scale) / (2 ** (1 / bins_per_octave) - 1)
    lowpass = _firwin2_lowpass(0.50, 256, 0.001)
    n_filters = min(bins_per_octave, n_bins)
    n_octaves = int(np.ceil(float(n_bins) / bins_per_octave))
    fmin_t = fmin * 2 ** (n_octaves - 1)
    remainder = n_bins % bins_per_octave
    if remainder == 0:
        fmax_t = fmin_t * 2 ** ((bins_per_octave - 1) / bins_per_octave)
    else:
        fmax_t = fmin_t * 2 ** ((remainder - 1) / bins_per_octave)
    fmin_t = fmax_t / 2 ** (1 - 1 / bins_per_octave)
    if fmax_t > sr / 2:
        raise UserError(f"CQT: the top bin {fmax_t:.0f} Hz exceeds the Nyquist frequency {sr / 2:.0f} Hz; "
                        "reduce the number of octaves or bins")
    # early downsampling (librosa's rule, as nnAudio's get_early_downsample_params)
    filter_cutoff = fmax_t * (1 + 0.5 * 1.5 / q)
    count1 = max(0, int(np.ceil(np.log2(0.85 * (sr // 2) / filter_cutoff)) - 1) - 1)
    count2 = max(0, int(np.ceil(np.log2(hop_length))) - n_octaves + 1)
    factor = 2 ** min(count1, count2)
    early = None
    if factor != 1:
        hop_length //= factor
        sr = sr / float(factor)
        early = _firwin2_lowpass(1 / factor, 256, 0.03)
    # top-octave kernels (create_cqt_kernels, time domain, L1-normalised, centred in fft_len)
    freqs = fmin_t * 2.0 ** (np.r_[0:n_filters] / np.double(bins_per_octave))
    lengths = np.ceil(q * sr / freqs)
    fft_len = int(2 ** (np.ceil(np.log2(int(max(lengths))))))
    kernels = np.zeros((n_filters, fft_len), dtype=np.complex64)
    for k in range(n_filters):
        n = lengths[k]
        start = int(np.ceil(fft_len / 2.0 - n / 2.0)) - (1 if n % 2 == 1 else 0)
        sig = get_window("hann", int(n), fftbins=True) * np.exp(
            np.r_[-n // 2:n // 2] * 1j * 2 * np.pi * freqs[k] / sr) / n
        kernels[k, start:start + int(n)] = sig / np.linalg.norm(sig, basis_norm) if basis_norm else sig
    all_freqs = fmin * 2.0 ** (np.r_[0:n_bins] / np.double(bins_per_octave))
    all_lengths = np.ceil(q * sr / all_freqs).astype(np.float32)
    return CQTPlan(hop=hop_length, n_bins=n_bins, n_octaves=n_octaves, downsample_factor=factor,
                   kernel_real=np.ascontiguousarray(kernels.real.T[:, None, :]),
                   kernel_imag=np.ascontiguousarray(kernels.imag.T[:, None, :]),
                   lowpass=lowpass, early_filter=early, lengths=all_lengths)


def _lowpass_down(x: Array, taps: np.ndarray, factor: int) -> Array:
    """nnAudio's downsampling_by_n: [B, N, 1] convolved with `taps`, stride `factor`, zero padding (K-1)//2."""
    pad = (len(taps) - 1) // 2
    return conv1d(x, jnp.asarray(taps)[:, None, None], stride=factor, padding=pad,
                  precision=jax.lax.Precision.HIGHEST)


def cqt(x: Array, plan: CQTPlan) -> Array:
    """nnAudio CQT2010v2 (output_format='Complex', pad_mode='constant', normalization 'librosa') of [B, N]
    audio -> [B, frames, n_bins, 2] (real, imaginary last; nnAudio gives [B, n_bins, frames, 2])."""
    hi = jax.lax.Precision.HIGHEST
    x = x[..., None]
    if plan.early_filter is not None:
        x = _lowpass_down(x, plan.early_filter, plan.downsample_factor)
    kernel = jnp.asarray(np.concatenate([plan.kernel_real, plan.kernel_imag], axis=-1))
    nf = plan.kernel_real.shape[-1]
    pad = plan.n_fft // 2

    def octave(xo, hop):
        y = conv1d(xo, kernel, stride=hop, padding=pad, precision=hi)  # [B, frames, 2*nf]
        return jnp.stack([y[..., :nf], -y[..., nf:]], axis=-1)  # [B, frames, nf, 2]

    hop = plan.hop
    octaves = [octave(x, hop)]
    for _ in range(plan.n_octaves - 1):
        hop //= 2
        x = _lowpass_down(x, plan.lowpass, 2)
        octaves.insert(0, octave(x, hop))
    z = jnp.concatenate(octaves, axis=2)[:, :, -plan.n_bins:]
    z = z * float(plan.downsample_factor)
    return z * jnp.sqrt(jnp.asarray(plan.lengths))[None, None, :, None]  # float32 lengths, as nnAudio's buffer
