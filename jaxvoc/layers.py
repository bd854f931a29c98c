"""Building blocks shared by every model: convolutions with optional weight norm, Snake activations and the
anti-aliased (kaiser-sinc) resampling of BigVGAN.

Layout: every tensor is channels-last, ``[batch, time, channels]`` (XLA's fast layout on CPU and GPU).
Kernels are ``[kernel_size, in_channels / groups, out_channels]`` (``WIO``), also for transposed convolutions;
2D convolutions (the discriminators) take ``[B, H, W, C]`` with ``[kh, kw, Cin, Cout]`` (``HWIO``) kernels.

Weight norm (Salimans & Kingma, as ``torch.nn.utils.weight_norm``): a layer created with ``weight_norm=True``
owns ``weight_v`` (the direction, kernel-shaped) and ``weight_g`` (the gain, shaped like the kernel with size 1
on every axis the norm runs over), and computes ``kernel = v * (g / ||v||)``. The same layer also accepts a
parameter tree in which :func:`fold_weight_norm` replaced the pair with the folded ``kernel``: training keeps
the parametrisation, inference runs on folded weights.
"""

from __future__ import annotations

import functools
import math
from typing import Any, Callable, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array
Padding = int | tuple[int, int]


def _pair(padding: Padding) -> tuple[int, int]:
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def pad_time(x: Array, left: int, right: int, mode: str = "zeros") -> Array:
    """Pads axis 1 of ``[B, T, C]``; modes as torch's F.pad: zeros, reflect, replicate."""
    if left == 0 and right == 0:
        return x
    jmode = {"zeros": "constant", "constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    return jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=jmode)


def conv1d(x: Array, kernel: Array, *, stride: int = 1, dilation: int = 1, padding: Padding = 0,
           groups: int = 1, padding_mode: str = "zeros", precision=None) -> Array:
    """torch.nn.functional.conv1d in channels-last layout. x [B, T, Cin], kernel [K, Cin/groups, Cout]."""
    left, right = _pair(padding)
    if padding_mode != "zeros":
        x, left, right = pad_time(x, left, right, padding_mode), 0, 0
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=(stride,), padding=[(left, right)], rhs_dilation=(dilation,),
        dimension_numbers=("NWC", "WIO", "NWC"), feature_group_count=groups, precision=precision)


def conv_transpose1d(x: Array, kernel: Array, *, stride: int, padding: int = 0, output_padding: int = 0,
                     groups: int = 1, precision=None) -> Array:
    """torch.nn.functional.conv_transpose1d in channels-last layout; kernel [K, Cin, Cout/groups] (torch's
    [Cin, Cout/groups, K] permuted).

    Computed as one dense convolution with ``stride * Cout`` output channels (one group per output phase,
    "sub-pixel" form) and an interleave, instead of a convolution over a zero-stuffed input: ``stride`` times
    fewer multiply-adds, and no ``lhs_dilation``, which is slow on XLA's CPU backend.
    """
    K, cin, cout_g = kernel.shape
    B, L, _ = x.shape
    u, G = stride, groups
    M = -(-K // u)  # taps per phase
    kernel = jnp.pad(kernel, ((0, M * u - K), (0, 0), (0, 0)))
    # phase r, tap m holds kernel[m*u + r]; the convolution below is a cross-correlation, so taps are flipped.
    # Output channels are ordered (group, phase, channel) so that each group's are contiguous.
    w = kernel.reshape(M, u, G, cin // G, cout_g)[::-1].transpose(0, 3, 2, 1, 4).reshape(M, cin // G, G * u * cout_g)
    y = conv1d(x, w, padding=(M - 1, M - 1), groups=G, precision=precision)  # [B, L+M-1, G*u*cout_g]
    if G > 1:
        y = y.reshape(B, L + M - 1, G, u, cout_g).transpose(0, 1, 3, 2, 4)
    y = y.reshape(B, (L + M - 1) * u, G * cout_g)
    out_len = (L - 1) * u - 2 * padding + K + output_padding
    if padding + out_len > y.shape[1]:
        y = pad_time(y, 0, padding + out_len - y.shape[1])
    return y[:, padding:padding + out_len]


def torch_default_kernel_init(key, shape, dtype=jnp.float32):
    """torch's default conv/linear init (kaiming_uniform, a=sqrt(5)): U(-1/sqrt(fan_in), 1/sqrt(fan_in))."""
    fan_in = int(np.prod(shape[:-1]))
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, dtype, -bound, bound)


def _norm_except(v: Array, keep_axis: int) -> Array:
    axes = tuple(a for a in range(v.ndim) if a != keep_axis % v.ndim)
    return jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))


def weight_norm_kernel(g: Array, v: Array) -> Array:
    """kernel = v * (g / ||v||), the norm over every axis on which g has size 1 (torch's order of operations)."""
    axes = tuple(a for a in range(v.ndim) if g.shape[a] == 1)
    norm = jnp.sqrt(jnp.sum(jnp.square(v), axis=axes, keepdims=True))
    return v * (g / norm)


def fold_weight_norm(params: Any) -> Any:
    """Replaces every ``{weight_g, weight_v}`` pair of a parameter tree with the folded ``kernel``."""
    if not isinstance(params, dict):
        return params
    out = {}
    for k, v in params.items():
        if k in ("weight_g", "weight_v"):
            continue
        out[k] = fold_weight_norm(v)
    if "weight_g" in params and "weight_v" in params:
        out["kernel"] = weight_norm_kernel(jnp.asarray(params["weight_g"]), jnp.asarray(params["weight_v"]))
    return out


class _WeightNormed(nn.Module):
    """Common parameter handling of the weight-normed layers: returns the effective kernel."""

    def _kernel(self, shape: tuple[int, ...], gain_axis: int, weight_norm: bool, init: Callable) -> Array:
        if self.has_variable("params", "kernel") or not weight_norm:
            return self.param("kernel", init, shape)
        v = self.param("weight_v", init, shape)
        g_shape = tuple(s if a == gain_axis % len(shape) else 1 for a, s in enumerate(shape))
        g = self.param("weight_g", lambda _, vv: _norm_except(vv, gain_axis), v)
        assert g.shape == g_shape, (g.shape, g_shape)
        return weight_norm_kernel(g, v)


class Conv1d(_WeightNormed):
    """torch.nn.Conv1d (optionally weight-normed over the output channel), channels-last."""

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    padding: Padding = 0
    groups: int = 1
    use_bias: bool = True
    weight_norm: bool = False
    padding_mode: str = "zeros"
    kernel_init: Callable = torch_default_kernel_init
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        shape = (self.kernel_size, cin // self.groups, self.features)
        kernel = self._kernel(shape, -1, self.weight_norm, self.kernel_init)
        y = conv1d(x, kernel, stride=self.stride, dilation=self.dilation, padding=self.padding,
                   groups=self.groups, padding_mode=self.padding_mode, precision=self.precision)
        if self.use_bias:
            fan_in = shape[0] * shape[1]
            b = self.param("bias", _uniform(1.0 / math.sqrt(fan_in)), (self.features,))
            y = y + b.astype(y.dtype)
        return y


class ConvTranspose1d(_WeightNormed):
    """torch.nn.ConvTranspose1d; weight norm over the input channel, as torch's dim=0 on its
    [Cin, Cout/groups, K] weight. Kernel stored [K, Cin, Cout/groups]."""

    features: int
    kernel_size: int
    stride: int = 1
    padding: int = 0
    output_padding: int = 0
    use_bias: bool = True
    groups: int = 1
    weight_norm: bool = False
    kernel_init: Callable = torch_default_kernel_init
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        cin = x.shape[-1]
        shape = (self.kernel_size, cin, self.features // self.groups)
        kernel = self._kernel(shape, 1, self.weight_norm, self.kernel_init)
        y = conv_transpose1d(x, kernel, stride=self.stride, padding=self.padding,
                             output_padding=self.output_padding, groups=self.groups, precision=self.precision)
        if self.use_bias:
            # torch's fan_in for a transposed conv weight [Cin, Cout/groups, K] is Cout/groups*K
            fan_in = self.features // self.groups * self.kernel_size
            b = self.param("bias", _uniform(1.0 / math.sqrt(fan_in)), (self.features,))
            y = y + b.astype(y.dtype)
        return y


def conv2d(x: Array, kernel: Array, *, stride: tuple[int, int] = (1, 1), dilation: tuple[int, int] = (1, 1),
           padding: tuple[int, int] = (0, 0), precision=None) -> Array:
    """torch.nn.functional.conv2d (groups=1, zero padding) in channels-last layout: x [B, H, W, Cin], kernel
    [kh, kw, Cin, Cout] (HWIO). The spatial axes keep torch's order (H, W)."""
    return jax.lax.conv_general_dilated(
        x, kernel.astype(x.dtype), window_strides=tuple(stride), padding=[(p, p) for p in padding],
        rhs_dilation=tuple(dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"), precision=precision)


class Conv2d(_WeightNormed):
    """torch.nn.Conv2d (groups=1, zero padding; optionally weight-normed over the output channel, as
    ``torch.nn.utils.weight_norm``'s dim=0), channels-last ``[B, H, W, C]``; kernel ``[kh, kw, Cin, Cout]``."""

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Callable = torch_default_kernel_init
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self._kernel(shape, -1, self.weight_norm, self.kernel_init)
        y = conv2d(x, kernel, stride=self.stride, dilation=self.dilation, padding=self.padding,
                   precision=self.precision)
        if self.use_bias:
            fan_in = shape[0] * shape[1] * shape[2]
            b = self.param("bias", _uniform(1.0 / math.sqrt(fan_in)), (self.features,))
            y = y + b.astype(y.dtype)
        return y


def _uniform(bound: float) -> Callable:
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)


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
    return x + inv.astype(x.dtype) * jnp.square(sin(x * alpha.astype(x.dtype)))


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
                    taps: Sequence[float] | None = None) -> list[Array]:
    """BigVGAN's UpSample1d (replicate pad, depthwise transposed conv with the kaiser-sinc filter, times
    ``ratio``, crop) as ``ratio`` polyphase outputs: ``phases[j][:, s] == upsampled[:, s*ratio + j]``.

    Each phase is a short FIR over shifted slices of the input: elementwise work that XLA fuses, instead of
    a depthwise transposed convolution (pathologically slow on XLA's CPU backend)."""
    r, k = ratio, kernel_size
    taps = (np.float32(r) * _taps(r, k, taps)).astype(np.float32)
    m_taps = -(-k // r)
    taps = np.pad(taps, (0, m_taps * r - k))
    pad = k // r - 1
    pad_left = pad * r + (k - r) // 2
    L = x.shape[1]
    xp = pad_time(x, pad, pad, "replicate")
    phases = []
    for j in range(r):
        a = j + pad_left
        q, base = a % r, a // r
        terms = tuple((0, base - m, float(taps[m * r + q])) for m in range(m_taps) if taps[m * r + q] != 0.0)
        phases.append(_fir((xp,), terms, L))
    return phases


def downsample_phases(phases: Sequence[Array], ratio: int = 2, kernel_size: int = 12,
                      taps: Sequence[float] | None = None) -> Array:
    """BigVGAN's DownSample1d (replicate pad, kaiser-sinc low-pass, stride ``ratio``) applied to a signal given
    as its ``ratio`` polyphase components (as :func:`upsample_phases` returns), without interleaving them."""
    r, k = ratio, kernel_size
    taps = _taps(r, k, taps)
    even = k % 2 == 0
    pad_left, pad_right = k // 2 - int(even), k // 2
    L = phases[0].shape[1]
    # Replicate padding of the interleaved signal: every phase extends left with its first sample y[0]
    # (phase 0) and right with its last sample y[rL-1] (phase r-1).
    ext_l = -(-pad_left // r)
    ext_r = -(-pad_right // r) + 1
    first = phases[0][:, :1]
    last = phases[-1][:, -1:]
    ext = [jnp.concatenate([jnp.repeat(first, ext_l, axis=1), p, jnp.repeat(last, ext_r, axis=1)], axis=1)
           for p in phases]
    # z[s] += taps[i] * y[s*r + b], b = i - pad_left
    terms = tuple(((i - pad_left) % r, ext_l + (i - pad_left) // r, float(taps[i])) for i in range(k))
    return _fir(tuple(ext), terms, L)


def upsample(x: Array, ratio: int = 2, kernel_size: int = 12) -> Array:
    """UpSample1d: [B, T, C] -> [B, ratio*T, C]."""
    ph = upsample_phases(x, ratio, kernel_size)
    B, L, C = x.shape
    return jnp.stack(ph, axis=2).reshape(B, L * ratio, C)


def downsample(x: Array, ratio: int = 2, kernel_size: int = 12) -> Array:
    """DownSample1d: [B, ratio*T, C] -> [B, T, C] (T*ratio input length)."""
    B, N, C = x.shape
    if N % ratio:
        raise ValueError(f"downsample needs a length divisible by {ratio}, got {N}")
    ph = x.reshape(B, N // ratio, ratio, C)
    return downsample_phases([ph[:, :, j] for j in range(ratio)], ratio, kernel_size)


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
    def __call__(self, x: Array) -> Array:
        if self.up_ratio != self.down_ratio:
            raise NotImplementedError("Activation1d with different up and down ratios")
        act = Snake(beta=self.beta, logscale=self.logscale, name="act")
        phases = upsample_phases(x, self.up_ratio, self.up_kernel_size, self.filter)
        phases = [act(p) for p in phases]
        return downsample_phases(phases, self.down_ratio, self.down_kernel_size, self.filter)
