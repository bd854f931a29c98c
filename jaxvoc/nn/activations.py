"""Activations shared by the models: Snake / SnakeBeta (with a vectorisable float32 sine and hand-written
gradients) and BigVGAN's anti-aliased activation (kaiser-sinc 2x up-sampling, Snake, 2x down-sampling, in
polyphase form). Layout: channels-last ``[batch, time, channels]``."""

from __future__ import annotations

import functools
import math
from typing import Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.nn.conv import hold_past, last_sample, pad_time

Array = jax.Array


class Snake(nn.Module):
    """Snake ``x + 1/a sin^2(a x)`` and SnakeBeta ``x + 1/b sin^2(a x)`` (``beta=True``), per channel; with
    ``logscale`` the parameters are stored as logarithms (initialised to 0), else linearly (initialised to 1)."""

    beta: bool = False
    logscale: bool = False

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        init = nn.initializers.zeros if self.logscale else nn.initializers.ones
        alpha = self.param("alpha", init, (c,))
        scale = self.param("beta", init, (c,)) if self.beta else alpha
        if self.logscale:
            alpha, scale = jnp.exp(alpha), jnp.exp(scale)
        return snake(x, alpha, scale)


@jax.custom_vjp
def snake(x: Array, alpha: Array, magnitude: Array) -> Array:
    """``x + 1/(magnitude + 1e-9) * sin(alpha x)^2``, alpha and magnitude per channel (last axis).

    The gradient is written out: autodiff's per-channel sums over batch and time become reductions that XLA
    fuses with the whole elementwise chain before them, recomputed once per sum and not vectorised on CPU
    (measured: the parameter gradients of an anti-aliased activation 4x the input gradient). Here the
    elementwise terms are computed once and summed as a matrix-vector product."""
    inv = 1.0 / (magnitude + 1e-9)  # the official no_div_by_zero
    return x + inv.astype(x.dtype) * sin_squared(x * alpha.astype(x.dtype))


def _channel_sum(v: Array) -> Array:
    flat = v.reshape(-1, v.shape[-1])
    return jnp.ones((flat.shape[0],), v.dtype) @ flat


def _snake_fwd(x, alpha, magnitude):
    return snake(x, alpha, magnitude), (x, alpha, magnitude)


def _snake_bwd(res, g):
    x, alpha, magnitude = res
    inv = 1.0 / (magnitude + 1e-9)
    a, i = alpha.astype(x.dtype), inv.astype(x.dtype)
    s, c = _sin_cos_f32(x * a) if x.dtype == jnp.float32 else (jnp.sin(x * a), jnp.cos(x * a))
    gsc = g * (2 * s * c) * i  # g * d(inv * s^2) / d(alpha x)
    g_alpha = _channel_sum(gsc * x).astype(alpha.dtype)
    g_mag = (-_channel_sum(g * jnp.square(s)) * jnp.square(i)).astype(magnitude.dtype)
    return g + gsc * a, g_alpha.reshape(alpha.shape), g_mag.reshape(magnitude.shape)


snake.defvjp(_snake_fwd, _snake_bwd)


# float32 sine as elementwise arithmetic. XLA's CPU backend lowers jnp.sin to a scalar libm call per element,
# ~10x slower than the vectorised sine PyTorch uses, and Snake is a sine per sample and channel of every
# activation of BigVGAN (measured by experiments/bigvgan_profile.py). Reduction by multiples of pi/2 in
# three parts (pi/2 = P1 + P2 + P3; P1 and P2 have few enough bits that j * P is exact while |j| < 2^16),
# then the minimax polynomials of Cephes' sinf/cosf (S. L. Moshier) on [-pi/4, pi/4]. Measured against
# float64 (tests/test_layers.py): absolute error <= 1.2e-7 for |x| <= 1e6, against 3.3e-8 for XLA's sin.
_P1, _P2, _P3 = 1.5703125, 4.837512969970703125e-4, 7.54978995489188216e-8
_SIN = (-1.9515295891e-4, 8.3321608736e-3, -1.6666654611e-1)
_COS = (2.443315711809948e-5, -1.388731625493765e-3, 4.166664568298827e-2)


def _sin_cos_f32(x: Array) -> tuple[Array, Array]:
    f = lambda v: np.float32(v)  # noqa: E731 -- keep every constant float32
    j = jnp.round(x * f(2 / np.pi))
    r = ((x - j * f(_P1)) - j * f(_P2)) - j * f(_P3)
    z = r * r
    s = ((f(_SIN[0]) * z + f(_SIN[1])) * z + f(_SIN[2])) * z * r + r
    c = ((f(_COS[0]) * z + f(_COS[1])) * z + f(_COS[2])) * z * z - f(0.5) * z + f(1.0)
    q = j.astype(jnp.int32)

    def quadrant(q):  # sin(r + q pi/2) from sin(r), cos(r)
        y = jnp.where((q & 1) == 0, s, c)
        return jnp.where((q & 2) == 0, y, -y)

    return quadrant(q), quadrant(q + 1)


@jax.custom_jvp
def _sin_f32(x: Array) -> Array:
    return _sin_cos_f32(x)[0]


@_sin_f32.defjvp
def _sin_f32_jvp(primals, tangents):
    s, c = _sin_cos_f32(primals[0])
    return s, c * tangents[0]


def sin(x: Array) -> Array:
    """Elementwise sine: the arithmetic float32 sine above for float32 input, jnp.sin for other dtypes."""
    return _sin_f32(x) if x.dtype == jnp.float32 else jnp.sin(x)


# sin(x)^2 (Snake's forward pass) in about half the arithmetic of squaring the sine above: sin^2 has period pi,
# so x is reduced by multiples of pi (the same three-part constants doubled: exact in float32, so the
# reduction is as accurate as the sine's) to r in [-pi/2, pi/2], where sin(r)^2 = z Q(z), z = r^2, Q a degree-5
# polynomial fitted to (sin(r) / r)^2 (least squares at 4000 Chebyshev nodes in float64, Q(0) = 1, then
# rounded to float32): no quadrant, no cosine, no select. Evaluated in float32 over [-pi/2, pi/2] its relative
# error is 5.0e-8 rms and 2.5e-7 at most, against 5.2e-8 and 1.8e-7 for the correctly rounded float32 sine
# squared (tests/test_layers.py measures it against float64 and torch).
_SIN2 = (-0.3333331346511841, 0.04444335028529167, -0.0031725589651614428, 0.00013941482757218182,
         -3.640777777036419e-06)


def _sin_squared_f32(x: Array) -> Array:
    f = np.float32
    j = jnp.round(x * f(1 / np.pi))
    r = ((x - j * f(2 * _P1)) - j * f(2 * _P2)) - j * f(2 * _P3)
    z = r * r
    q = f(_SIN2[-1])
    for c in _SIN2[-2::-1]:
        q = q * z + f(c)
    return z * (q * z + f(1.0))


def sin_squared(x: Array) -> Array:
    """Elementwise sin(x)^2: the arithmetic form above for float32 input, jnp.sin squared for other dtypes.
    Forward only (Snake's gradient is written out with :func:`_sin_cos_f32`)."""
    return _sin_squared_f32(x) if x.dtype == jnp.float32 else jnp.square(jnp.sin(x))


# ----------------------------------------------------------------------------------------------------------
# Anti-aliased resampling (kaiser-windowed sinc, as StyleGAN3 / BigVGAN's alias_free_activation)


def kaiser_sinc_filter(cutoff: float, half_width: float, kernel_size: int) -> np.ndarray:
    """The low-pass filter taps of BigVGAN's ``kaiser_sinc_filter1d`` (float64 here, float32 by the caller)."""
    even = kernel_size % 2 == 0
    half = kernel_size // 2
    delta_f = 4 * half_width
    a = 2.285 * (half - 1) * math.pi * delta_f + 7.95
    if a > 50.0:
        beta = 0.1102 * (a - 8.7)
    elif a >= 21.0:
        beta = 0.5842 * (a - 21) ** 0.4 + 0.07886 * (a - 21.0)
    else:
        beta = 0.0
    window = np.kaiser(kernel_size, beta)  # symmetric window, as torch.kaiser_window(periodic=False)
    t = (np.arange(-half, half) + 0.5) if even else (np.arange(kernel_size) - half)
    if cutoff == 0:
        return np.zeros(kernel_size)
    taps = 2 * cutoff * window * np.sinc(2 * cutoff * t)
    return taps / taps.sum()


def _shift(x: Array, start: int, length: int) -> Array:
    return jax.lax.slice_in_dim(x, start, start + length, axis=1)


@functools.partial(jax.custom_vjp, nondiff_argnums=(1, 2))
def _fir(xs: tuple[Array, ...], terms: tuple[tuple[int, int, float], ...], length: int) -> Array:
    """``sum(w * xs[i][:, s:s + length] for i, s, w in terms)``, summed in the order given: a short FIR over
    shifted slices along axis 1, which XLA fuses into one elementwise loop. Its gradient is written out as the
    same kind of sum over slices of the once-padded output gradient; left to autodiff, every slice would
    transpose into a padded full-size array of its own (measured: the anti-aliased activation's backward
    pass 10x its forward, 2x PyTorch's). Being a custom VJP, it supports reverse-mode differentiation only
    (as does :func:`snake`): jax.jvp / jacfwd through BigVGAN's activations raise."""
    acc = None
    for i, start, w in terms:
        term = _shift(xs[i], start, length) * w
        acc = term if acc is None else acc + term
    return acc


def _fir_fwd(xs, terms, length):
    # empty arrays carry each input's length and dtype (static) to the backward pass
    return _fir(xs, terms, length), tuple(jnp.zeros((x.shape[1], 0), x.dtype) for x in xs)


def _fir_bwd(terms, length, res, g):
    grads = []
    for i in range(len(res)):
        mine = [(s, w) for j, s, w in terms if j == i]
        n_in = res[i].shape[0]
        if not mine:
            grads.append(jnp.zeros(g.shape[:1] + (n_in,) + g.shape[2:], res[i].dtype))
            continue
        lo, hi = max(s for s, _ in mine), min(s for s, _ in mine)
        gp = jnp.pad(g, ((0, 0), (lo, n_in - length - hi)) + ((0, 0),) * (g.ndim - 2))
        acc = None
        for s, w in mine:  # d x[t] = sum w * g[t - s]
            term = _shift(gp, lo - s, n_in) * w
            acc = term if acc is None else acc + term
        grads.append(acc.astype(res[i].dtype))
    return (tuple(grads),)


_fir.defvjp(_fir_fwd, _fir_bwd)


def _taps(ratio: int, kernel_size: int, taps: Sequence[float] | None) -> np.ndarray:
    """The low-pass taps: given ones (e.g. the exact float32 buffer of an official checkpoint), else computed."""
    if taps is not None:
        if len(taps) != kernel_size:
            raise ValueError(f"{len(taps)} filter taps for kernel_size {kernel_size}")
        return np.asarray(taps, np.float32)
    return kaiser_sinc_filter(0.5 / ratio, 0.6 / ratio, kernel_size).astype(np.float32)


def upsample_phases(x: Array, ratio: int = 2, kernel_size: int = 12,
                    taps: Sequence[float] | None = None, ends: Array | None = None) -> list[Array]:
    """BigVGAN's UpSample1d (replicate pad, depthwise transposed conv with the kaiser-sinc filter, times
    ``ratio``, crop) as ``ratio`` polyphase outputs: ``phases[j][:, s] == upsampled[:, s*ratio + j]``.
    ``ends`` ([B] int, traced): each item's valid length; the replicate padding then happens at each item's
    own end (positions past it read the item's last sample), so that ``phases[j][b, :ends[b]]`` is what the
    item alone at its own length gives, whatever the input holds past its end.

    Each phase is a short FIR over shifted slices of the input: elementwise work that XLA fuses, instead of
    a depthwise transposed convolution (pathologically slow on XLA's CPU backend)."""
    r, k = ratio, kernel_size
    taps = (np.float32(r) * _taps(r, k, taps)).astype(np.float32)
    m_taps = -(-k // r)
    taps = np.pad(taps, (0, m_taps * r - k))
    pad = k // r - 1
    pad_left = pad * r + (k - r) // 2
    L = x.shape[1]
    xp = pad_time(hold_past(x, ends, k), pad, pad, "replicate")  # plain jnp ops: autodiff handles the fill
    xp = jax.lax.optimization_barrier(xp)  # materialised once: see downsample_phases
    phases = []
    for j in range(r):
        a = j + pad_left
        q, base = a % r, a // r
        terms = tuple((0, base - m, float(taps[m * r + q])) for m in range(m_taps) if taps[m * r + q] != 0.0)
        phases.append(_fir((xp,), terms, L))
    return phases


def downsample_phases(phases: Sequence[Array], ratio: int = 2, kernel_size: int = 12,
                      taps: Sequence[float] | None = None, ends: Array | None = None) -> Array:
    """BigVGAN's DownSample1d (replicate pad, kaiser-sinc low-pass, stride ``ratio``) applied to a signal given
    as its ``ratio`` polyphase components (as :func:`upsample_phases` returns), without interleaving them.
    ``ends`` ([B] int, traced, in phase samples): each item's valid length; the replicate padding then uses
    each item's own last sample ``phases[-1][b, ends[b] - 1]`` past its end."""
    r, k = ratio, kernel_size
    taps = _taps(r, k, taps)
    even = k % 2 == 0
    pad_left, pad_right = k // 2 - int(even), k // 2
    L = phases[0].shape[1]
    if ends is not None:  # item b's interleaved signal ends at r * ends[b]; its last sample ends the last phase
        last = last_sample(phases[-1], ends)  # phases[-1][b, ends[b] - 1] = y[r * ends[b] - 1]
        phases = [hold_past(p, ends, k, last) for p in phases]
    # Replicate padding of the interleaved signal: every phase extends left with its first sample y[0]
    # (phase 0) and right with its last sample y[rL-1] (phase r-1).
    ext_l = -(-pad_left // r)
    ext_r = -(-pad_right // r) + 1
    first = phases[0][:, :1]
    last = phases[-1][:, -1:]
    ext = [jnp.concatenate([jnp.repeat(first, ext_l, axis=1), p, jnp.repeat(last, ext_r, axis=1)], axis=1)
           for p in phases]
    # Materialised once each (and the padded input of upsample_phases): left to itself, XLA's CPU backend
    # fuses the padding's concatenations into their readers, so the up-sampling FIR and Snake's sine are
    # computed in several fusions, one per phase and side of the padding. With the barriers an anti-aliased
    # activation ran 1.8-2.3x faster alone at every AMP stage's shape, the full-size generators 1.11x (v2)
    # and 1.24x (base), the same output to float32 rounding (experiments/profile/activation_barrier.py;
    # docs/bigvgan.md, "Anti-aliased activations: what XLA recomputed").
    ext = list(jax.lax.optimization_barrier(tuple(ext)))
    # z[s] += taps[i] * y[s*r + b], b = i - pad_left
    terms = tuple(((i - pad_left) % r, ext_l + (i - pad_left) // r, float(taps[i])) for i in range(k))
    return _fir(tuple(ext), terms, L)


class Activation1d(nn.Module):
    """BigVGAN's anti-aliased activation: 2x up-sample, Snake/SnakeBeta, 2x down-sample. The activation is
    applied to each polyphase component of the up-sampled signal; nothing of length 2T is interleaved.
    ``filter``: the low-pass taps shared by both resamplers (an official checkpoint's float32 buffer, which a
    float64 computation of the same formula misses by an ulp here and there); computed when None."""

    beta: bool = True
    logscale: bool = True
    up_ratio: int = 2
    down_ratio: int = 2
    up_kernel_size: int = 12
    down_kernel_size: int = 12
    filter: tuple[float, ...] | None = None

    @nn.compact
    def __call__(self, x: Array, ends: Array | None = None) -> Array:
        """``ends``: each item's valid length ([B] int, traced; None: the whole tensor), see
        :func:`upsample_phases`. Positions past an item's end hold unspecified values."""
        if self.up_ratio != self.down_ratio:
            raise NotImplementedError("Activation1d with different up and down ratios")
        dtype = x.dtype  # narrower inputs (bfloat16) are filtered and activated in float32
        x = x.astype(jnp.promote_types(dtype, jnp.float32))
        act = Snake(beta=self.beta, logscale=self.logscale, name="act")
        phases = upsample_phases(x, self.up_ratio, self.up_kernel_size, self.filter, ends)
        phases = [act(p) for p in phases]
        return downsample_phases(phases, self.down_ratio, self.down_kernel_size, self.filter, ends).astype(dtype)
