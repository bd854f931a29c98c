"""Convolutions shared by every model (1D, transposed 1D in sub-pixel form, 2D), with optional weight norm, and
the padding helpers (activations: :mod:`jaxvoc.nn.activations`).

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
from functools import partial
from typing import Any, Callable

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.nn.blocked import pairwise_sum

Array = jax.Array
Padding = int | tuple[int, int]


def _pair(padding: Padding) -> tuple[int, int]:
    return (padding, padding) if isinstance(padding, int) else tuple(padding)


def get_padding(kernel_size: int, dilation: int = 1) -> int:
    """The "same" padding of an odd kernel (the official get_padding of BigVGAN, HiFi-GAN and NeMo)."""
    return (kernel_size * dilation - dilation) // 2


def pad_time(x: Array, left: int, right: int, mode: str = "zeros") -> Array:
    """Pads axis 1 of ``[B, T, C]``; modes as torch's F.pad: zeros, reflect, replicate."""
    if left == 0 and right == 0:
        return x
    jmode = {"zeros": "constant", "constant": "constant", "reflect": "reflect", "replicate": "edge"}[mode]
    return jnp.pad(x, ((0, 0), (left, right), (0, 0)), mode=jmode)


def pad_to_ends(x: Array, left: int, right: int, mode: str, ends: Array | None) -> Array:
    """Pads the time axis of [B, T, C] as torch's F.pad (zeros / reflect / replicate). ``ends=None``: at the
    tensor's end (NeMo on a batch); else at each item's own end ``ends[b]`` (as that item alone would be),
    so the ``right`` samples after ``ends[b]`` become its reflection / its last sample / zeros.

    Only those ``B * right`` rows are gathered and written (a scatter): a gather of the whole tensor, and its
    transpose in the backward pass, made a codec training step ~40% slower on CPU."""
    xp = pad_time(x, left, right, mode)
    if ends is None or right == 0:
        return xp
    if mode == "zeros":  # the samples after an item's end are zero already (every layer masks its output)
        return xp
    e = jnp.asarray(ends)[:, None]
    t = e + jnp.arange(right)[None, :]  # [B, right] positions after each end, unpadded coordinates
    src = 2 * (e - 1) - t if mode == "reflect" else jnp.broadcast_to(e - 1, t.shape)
    vals = jnp.take_along_axis(xp, jnp.clip(src + left, 0, xp.shape[1] - 1)[..., None], axis=1)
    rows = jnp.broadcast_to(jnp.arange(xp.shape[0])[:, None], t.shape)
    return xp.at[rows, t + left].set(vals, mode="drop")


def valid_mask(x: Array, ends: Array) -> Array:
    """[B, T, 1] booleans: position t of item b is before ``ends[b]``."""
    return (jnp.arange(x.shape[1])[None, :] < jnp.asarray(ends)[:, None])[..., None]


def zero_past(x: Array, ends: Array | None) -> Array:
    """x [B, T, C] with every position at or past item b's ``ends[b]`` set to zero (identity for ``ends=None``).
    Before a zero-padded convolution this makes each item's valid outputs what the item alone, at its own
    length, would give: the convolution then reads zeros past the item's end, as its own zero padding. A
    ``where`` rather than a product, so that Inf or NaN past the end cannot leak in."""
    if ends is None:
        return x
    return jnp.where(valid_mask(x, ends), x, jnp.zeros((), x.dtype))


def last_sample(x: Array, ends: Array) -> Array:
    """[B, 1, C]: item b's last valid sample ``x[b, ends[b] - 1]``."""
    return jnp.take_along_axis(x, jnp.clip(jnp.asarray(ends) - 1, 0, x.shape[1] - 1)[:, None, None], axis=1)


def hold_past(x: Array, ends: Array | None, reach: int, value: Array | None = None) -> Array:
    """x [B, T, C] with the ``reach`` positions from ``ends[b]`` on set to ``value`` [B, 1, C] (default: item b's
    last valid sample ``x[b, ends[b] - 1]``); identity for ``ends=None``. Replicate padding at each item's own
    end, for a filter that reads at most ``reach`` samples past an output's position: the positions further on
    keep what they hold, and feed only outputs past the end (which the next convolution masks).

    A scatter of ``B * reach`` rows, not a ``where`` over the whole tensor: measured, the ``where`` made
    XLA's CPU fusions of the anti-aliased activation 5x slower; the scatter costs nothing visible."""
    if ends is None:
        return x
    ends = jnp.asarray(ends)
    B, _, C = x.shape
    value = last_sample(x, ends) if value is None else value
    idx = ends[:, None] + jnp.arange(reach)[None]  # [B, reach]; past the tensor: dropped
    rows = jnp.broadcast_to(jnp.arange(B)[:, None], idx.shape)
    return x.at[rows, idx].set(jnp.broadcast_to(value, (B, reach, C)).astype(x.dtype), mode="drop")


def conv1d(x: Array, kernel: Array, *, stride: int = 1, dilation: int = 1, padding: Padding = 0,
           groups: int = 1, padding_mode: str = "zeros", precision=None) -> Array:
    """torch.nn.functional.conv1d in channels-last layout. x [B, T, Cin], kernel [K, Cin/groups, Cout].
    Strided convolutions differentiate through :func:`conv_nd`'s sub-pixel input gradient.

    Kernel-size-1 convolutions stay convolutions: written as a matrix product (einsum) their backward pass
    was not faster (WaveGlow's cond, res_skip and start layers at T = 2000: 1.03x, 1.13x and 4.9x slower,
    experiments/profile/step_convs.py's notes in docs/training.md); XLA already runs their forward pass and
    input gradient as dots.
    With ``CONV1D_AS_2D`` set (off by default) it is traced as a 2-D convolution over ``[B, 1, T, Cin]``,
    which XLA's CPU backend hands to YNNPACK (2-D float32, more than 16 channels; 1-D ones never), with the
    1-D form's gradients (custom VJP, reverse mode only). Faster on wide layers but less accurate: it broke the
    float64 rule of tests/test_bigvgan.py (docs/bigvgan.md#xla-cpu-options)."""
    left, right = _pair(padding)
    if padding_mode != "zeros":
        x, left, right = pad_time(x, left, right, padding_mode), 0, 0
    if CONV1D_AS_2D:
        return _conv1d_as_2d(x, kernel.astype(x.dtype), stride, dilation, left, right, groups, precision)
    return conv_nd(x, kernel.astype(x.dtype), (stride,), ((left, right),), (dilation,), groups, precision)


CONV1D_AS_2D = False  # read when a program is traced (experiments.profile.xla_options compares both forms)


_DIMENSIONS = {1: ("NWC", "WIO", "NWC"), 2: ("NHWC", "HWIO", "NHWC")}


def _conv(x, kernel, stride, padding, dilation, groups, precision):
    return jax.lax.conv_general_dilated(
        x, kernel, window_strides=stride, padding=padding, rhs_dilation=dilation,
        dimension_numbers=_DIMENSIONS[x.ndim - 2], feature_group_count=groups, precision=precision)


def conv_nd(x: Array, kernel: Array, stride: tuple[int, ...], padding: tuple[tuple[int, int], ...],
            dilation: tuple[int, ...], groups: int = 1, precision=None) -> Array:
    """A channels-last 1D or 2D convolution (x [B, *spatial, Cin], kernel [*taps, Cin/groups, Cout]).

    When it is strided (one group, no dilation along the strided axes) and has an unstrided axis with several
    taps (the CQTD's and MRD's (3, 9) stride (1, 2) layers), its input gradient is written out in sub-pixel
    form (:func:`strided_input_grad`): autodiff would emit a convolution over the output gradient dilated by
    the stride (``lhs_dilation``), which XLA's CPU backend runs 2-3x slower than the forward pass and its
    fast convolution paths (oneDNN, YNNPACK) refuse. The forward pass is the same XLA convolution either way.
    Other strided convolutions (MPD's (5, 1) stride (3, 1), 1D) keep autodiff's gradient: for the MPD the
    sub-pixel form was not faster (docs/training.md, "Gradients without slow convolutions")."""
    stride, dilation = tuple(stride), tuple(dilation)
    padding = tuple(tuple(p) for p in padding)
    if (groups == 1 and any(s > 1 for s in stride) and all(d == 1 for s, d in zip(stride, dilation) if s > 1)
            and any(s == 1 and k > 1 for s, k in zip(stride, kernel.shape))):
        return _strided_conv(x, kernel, stride, padding, dilation, precision)
    return _conv(x, kernel, stride, padding, dilation, groups, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5))
def _strided_conv(x, kernel, stride, padding, dilation, precision):
    return _conv(x, kernel, stride, padding, dilation, 1, precision)


def _strided_conv_fwd(x, kernel, stride, padding, dilation, precision):
    return _conv(x, kernel, stride, padding, dilation, 1, precision), (x, kernel)


def _strided_conv_bwd(stride, padding, dilation, precision, res, g):
    x, kernel = res
    dx = strided_input_grad(g, kernel, x.shape[1:-1], stride, padding, dilation, precision)
    dw = jax.vjp(lambda k: _conv(x, k, stride, padding, dilation, 1, precision), kernel)[1](g)[0]
    return dx, dw


_strided_conv.defvjp(_strided_conv_fwd, _strided_conv_bwd)


def strided_input_grad(g: Array, kernel: Array, in_size: tuple[int, ...], stride, padding, dilation,
                       precision=None) -> Array:
    """:func:`conv_input_grad`, with one partial gradient per kernel tap along the first unstrided axis with
    several (there must be one), added pairwise: each sums a third (for 3 taps) of the products in its own accumulator. One
    convolution summing them all lands up to 6 dB further from float64 than torch's gradient with 8 to 32
    channels (tests/test_layers.py); by taps it is within torch's, ~1.2x the time of the single convolution
    and still ~2x faster than autodiff's (experiments/profile/strided_grads.py --ops)."""
    a = next(a for a, s in enumerate(stride) if s == 1 and kernel.shape[a] > 1)
    d, (pl, pr) = dilation[a], padding[a]
    K = kernel.shape[a]
    parts = [conv_input_grad(g, jax.lax.slice_in_dim(kernel, i, i + 1, axis=a), in_size, stride,
                             padding[:a] + ((pl - d * i, pr - d * (K - 1 - i)),) + padding[a + 1:], dilation,
                             precision) for i in range(K)]
    return pairwise_sum(jnp.stack(parts), 0)


def conv_input_grad(g: Array, kernel: Array, in_size: tuple[int, ...], stride, padding, dilation,
                    precision=None) -> Array:
    """The gradient of a one-group convolution (:func:`conv_nd`'s arguments) with respect to its input, for
    the output gradient ``g``, as one convolution without base dilation ("sub-pixel" form).

    Along an axis of stride s (dilation 1), input position ``s*q + r`` of the padded input receives
    ``sum_m kernel[s*m + r] g[q - m]``: each phase r is a stride-1 convolution of ``g`` with the sub-kernel
    ``kernel[r::s]``. The phases become s times more output channels (ordered phase-major) of one
    convolution, then interleaved. Along a stride-1 axis it is the usual convolution with the flipped
    kernel (dilation kept). Only the output positions that land inside the unpadded input are computed."""
    nd = len(in_size)
    taps, (cin, cout) = kernel.shape[:nd], kernel.shape[nd:]
    M = [-(-k // s) for k, s in zip(taps, stride)]  # taps per phase
    k = jnp.pad(kernel, [(0, m * s - t) for m, s, t in zip(M, stride, taps)] + [(0, 0), (0, 0)])
    k = k.reshape([v for m, s in zip(M, stride) for v in (m, s)] + [cin, cout])
    k = jnp.flip(k, tuple(2 * i for i in range(nd)))  # [M0, s0, M1, s1, cin, cout], taps reversed
    k = k.transpose([2 * i for i in range(nd)] + [2 * nd + 1] + [2 * i + 1 for i in range(nd)] + [2 * nd])
    k = k.reshape(*M, cout, math.prod(stride) * cin)
    pads, crops = [(0, 0, 0)], []
    for i in range(nd):
        (pl, _), s, d, L, T = padding[i], stride[i], dilation[i], in_size[i], g.shape[1 + i]
        q_lo, q_hi = pl // s, (pl + L - 1) // s  # phase positions that reach the unpadded input
        pads.append((d * (M[i] - 1) - q_lo, q_hi + 1 - T, 0))
        crops.append(pl - s * q_lo)
    pads.append((0, 0, 0))
    y = _conv(jax.lax.pad(g, jnp.zeros((), g.dtype), pads), k, (1,) * nd, ((0, 0),) * nd, dilation, 1, precision)
    Q = y.shape[1:-1]
    y = y.reshape(y.shape[0], *Q, *stride, cin)  # [B, Q0, Q1, s0, s1, cin]
    y = y.transpose([0] + [v for i in range(nd) for v in (1 + i, 1 + nd + i)] + [1 + 2 * nd])
    y = y.reshape(y.shape[0], *(q * s for q, s in zip(Q, stride)), cin)
    return y[(slice(None),) + tuple(slice(c, c + L) for c, L in zip(crops, in_size))]


@partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6, 7))
def _conv1d_as_2d(x, kernel, stride, dilation, left, right, groups, precision):
    y = jax.lax.conv_general_dilated(
        x[:, None], kernel[None], window_strides=(1, stride), padding=[(0, 0), (left, right)],
        rhs_dilation=(1, dilation), dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=groups,
        precision=precision)
    return y[:, 0]


def _conv1d_as_2d_fwd(x, kernel, *static):
    return _conv1d_as_2d(x, kernel, *static), (x, kernel)


def _conv1d_as_2d_bwd(*args):
    *static, (x, kernel), g = args
    stride, dilation, left, right, groups, precision = static
    return jax.vjp(lambda a, b: _conv(a, b, (stride,), ((left, right),), (dilation,), groups, precision),
                   x, kernel)[1](g)


_conv1d_as_2d.defvjp(_conv1d_as_2d_fwd, _conv1d_as_2d_bwd)


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
    if G == 1:  # [B, L+M-1, u*cout]
        y = _subpixel_conv(x, w.astype(x.dtype), M - 1, precision)
    else:
        y = conv1d(x, w, padding=(M - 1, M - 1), groups=G, precision=precision)  # [B, L+M-1, G*u*cout_g]
    if G > 1:
        y = y.reshape(B, L + M - 1, G, u, cout_g).transpose(0, 1, 3, 2, 4)
    y = y.reshape(B, (L + M - 1) * u, G * cout_g)
    out_len = (L - 1) * u - 2 * padding + K + output_padding
    if padding + out_len > y.shape[1]:
        y = pad_time(y, 0, padding + out_len - y.shape[1])
    return y[:, padding:padding + out_len]


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3))
def _subpixel_conv(x, w, pad, precision):
    """:func:`conv_transpose1d`'s dense convolution (stride 1, ``pad`` zeros on both sides). Its kernel
    gradient is :func:`kernel_grad_by_taps`'s (``M`` products of the input with the output gradient over
    time): autodiff's, a convolution whose window spans the whole sequence, ran on XLA's CPU generic path at
    ~0.6 s each for NeMo's LFR decoder up-sampling layers (docs/results/codec_train_profile.txt)."""
    return conv_nd(x, w, (1,), ((pad, pad),), (1,), 1, precision)


def _subpixel_conv_fwd(x, w, pad, precision):
    return _subpixel_conv(x, w, pad, precision), (x, w)


def _subpixel_conv_bwd(pad, precision, res, g):
    return _plain_conv_grads(*res, g, (1,), ((pad, pad),), (1,), precision)


_subpixel_conv.defvjp(_subpixel_conv_fwd, _subpixel_conv_bwd)


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
           padding: tuple[int, int] = (0, 0), padding_mode: str = "zeros", cin_block: int | None = None,
           precision=None) -> Array:
    """torch.nn.functional.conv2d (groups=1) in channels-last layout: x [B, H, W, Cin], kernel [kh, kw, Cin,
    Cout] (HWIO). The spatial axes keep torch's order (H, W). ``padding_mode`` as torch.nn.Conv2d's: zeros,
    reflect, replicate (the latter two pad both spatial axes before a convolution without padding).

    ``cin_block``: the input channels cut into blocks of that many (one grouped convolution: group g makes
    every output from input block g), the partial outputs added pairwise (:func:`jaxvoc.nn.blocked.pairwise_sum`). XLA's CPU convolution sums the whole
    kh * kw * Cin contraction in one running accumulator, oneDNN (torch) blocks it: for NeMo's 1024-channel
    period-discriminator layers XLA alone lands up to ~5 dB further from float64 than torch does, with blocks of 16
    channels within 0.7 dB of torch (measured: experiments/equivalence/codec_conv_blocks.py, docs/codec.md). Same FLOPs; the partial outputs (Cin / cin_block of
    them) are materialised. Used when cin_block divides Cin."""
    if padding_mode != "zeros":
        jmode = {"reflect": "reflect", "replicate": "edge"}[padding_mode]
        x = jnp.pad(x, ((0, 0), (padding[0], padding[0]), (padding[1], padding[1]), (0, 0)), mode=jmode)
        padding = (0, 0)
    cin = x.shape[-1]
    pads = tuple((p, p) for p in padding)
    if cin_block and cin > cin_block and cin % cin_block == 0:
        return _blocked_conv(x, kernel.astype(x.dtype), tuple(stride), pads, tuple(dilation), cin_block, precision)
    return conv_nd(x, kernel.astype(x.dtype), stride, pads, dilation, 1, precision)


@functools.partial(jax.custom_vjp, nondiff_argnums=(2, 3, 4, 5, 6))
def _blocked_conv(x, kernel, stride, padding, dilation, cin_block, precision):
    """:func:`conv2d`'s ``cin_block`` form: block g of the input channels makes all Cout outputs from its own
    channels (for kernels of at most ``IM2COL_MAX_TAPS`` taps one batched matrix product over the blocks of the
    im2col input, otherwise one grouped convolution; the same sums, bitwise), the partial outputs added pairwise.

    Its gradients are the plain convolution's: the blocks change only the order of the forward sums, and
    neither gradient contracts over the input channels. The input gradient is :func:`conv_nd`'s (a strided
    one keeps its sub-pixel form), the kernel gradient :func:`kernel_grad_by_taps`'s. Autodiff of the grouped
    form instead gives a kernel gradient that XLA's CPU backend rewrites into a convolution over the groups
    dilated by their count: 64x the work on NeMo's 1024-channel period-discriminator layers, about 1.2 TMAC
    per LFR training step (experiments/profile/codec_train.py)."""
    kh, kw, cin, cout = kernel.shape
    g = cin // cin_block
    if kh * kw <= IM2COL_MAX_TAPS:
        # the same per-block sums as one batched matrix product over the blocks, of the input positions each
        # tap reads (im2col): YNNPACK's grouped convolution ran NeMo's 1024-channel period-discriminator
        # layers (64 blocks) 3-4x slower than this (docs/codec.md, "Training throughput")
        slices, out = _tap_slices(x, (kh, kw), stride, padding, dilation)
        cols = jnp.stack(slices, 1)  # [B*H'*W', taps, Cin]
        cols = cols.reshape(cols.shape[0], kh * kw, g, cin_block).transpose(2, 0, 1, 3)
        cols = cols.reshape(g, -1, kh * kw * cin_block)
        k = kernel.reshape(kh * kw, g, cin_block, cout).transpose(1, 0, 2, 3).reshape(g, kh * kw * cin_block, cout)
        y = jax.lax.dot_general(cols, k, (((2,), (1,)), ((0,), (0,))), precision=precision)  # [g, M, Cout]
        return pairwise_sum(y, 0).reshape(x.shape[0], *out, cout)
    k = kernel.reshape(kh, kw, g, cin_block, cout).transpose(0, 1, 3, 2, 4).reshape(kh, kw, cin_block, g * cout)
    y = jax.lax.conv_general_dilated(
        x, k, window_strides=stride, padding=padding, rhs_dilation=dilation,
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=g, precision=precision)
    return pairwise_sum(y.reshape(*y.shape[:-1], g, cout), -2)


IM2COL_MAX_TAPS = 8  # im2col holds taps x the input: kept for small kernels (the MPD's (5, 1))


def _tap_slices(x: Array, taps: tuple[int, ...], stride, padding, dilation) -> tuple[list[Array], tuple[int, ...]]:
    """The input positions each kernel tap of a channels-last convolution reads: (one ``[B * prod(out), Cin]``
    array per tap, taps in row-major order; ``out``, the output's spatial shape)."""
    xp = jnp.pad(x, [(0, 0)] + [tuple(p) for p in padding] + [(0, 0)])
    out = tuple((n - d * (t - 1) - 1) // s + 1 for n, t, s, d in zip(xp.shape[1:-1], taps, stride, dilation))
    parts = []
    for t in np.ndindex(*taps):
        start = [0] + [ti * d for ti, d in zip(t, dilation)] + [0]
        limit = [x.shape[0]] + [st + s * (o - 1) + 1 for st, s, o in zip(start[1:], stride, out)] + [x.shape[-1]]
        parts.append(jax.lax.slice(xp, start, limit, [1, *stride, 1]).reshape(-1, x.shape[-1]))
    return parts, out


def _blocked_conv_fwd(x, kernel, stride, padding, dilation, cin_block, precision):
    return _blocked_conv(x, kernel, stride, padding, dilation, cin_block, precision), (x, kernel)


def _blocked_conv_bwd(stride, padding, dilation, cin_block, precision, res, g):
    return _plain_conv_grads(*res, g, stride, padding, dilation, precision)


def _plain_conv_grads(x, kernel, g, stride, padding, dilation, precision):
    """(input gradient, kernel gradient) of the one-group convolution ``conv_nd(x, kernel, ...)`` for the output
    gradient ``g``: :func:`conv_nd`'s input gradient (sub-pixel where it is strided), the kernel gradient by
    :func:`kernel_grad_by_taps`. The backward pass of :func:`_blocked_conv` and :func:`_subpixel_conv`."""
    dx = jax.vjp(lambda a: conv_nd(a, kernel, stride, padding, dilation, 1, precision), x)[1](g)[0]
    return dx, kernel_grad_by_taps(x, g, kernel.shape[:-2], stride, padding, dilation, precision)


def kernel_grad_by_taps(x: Array, g: Array, taps: tuple[int, ...], stride, padding, dilation,
                        precision=None) -> Array:
    """The gradient of a one-group channels-last convolution (:func:`conv_nd`'s arguments) with respect to its
    kernel ``[*taps, Cin, Cout]``, for the output gradient ``g``: one matrix product per kernel tap, of the
    input positions that tap reads (a strided slice of the padded input) with ``g``, contracted over batch and
    positions. Autodiff's form is a convolution whose window spans the whole output. Inside a ``lax.cond``
    branch (the codec's periodic discriminator update) XLA's CPU backend runs that convolution on a generic
    path, ~85x slower than outside; the products run at the same speed in both places and are ~2x faster than
    autodiff's form outside (NeMo's 1024-channel period-discriminator layers:
    experiments/profile/cond_kernel_grad.py)."""
    slices, _ = _tap_slices(x, taps, stride, padding, dilation)
    gm = g.reshape(-1, g.shape[-1])
    parts = [jax.lax.dot_general(xs, gm, (((0,), (0,)), ((), ())), precision=precision) for xs in slices]
    return jnp.stack(parts).reshape(*taps, x.shape[-1], g.shape[-1])


_blocked_conv.defvjp(_blocked_conv_fwd, _blocked_conv_bwd)


class Conv2d(_WeightNormed):
    """torch.nn.Conv2d (groups=1; optionally weight-normed over the output channel, as
    ``torch.nn.utils.weight_norm``'s dim=0), channels-last ``[B, H, W, C]``; kernel ``[kh, kw, Cin, Cout]``.
    ``padding_mode``: zeros (BigVGAN's discriminators), reflect (NeMo's Conv2dNorm), replicate."""

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)
    padding: tuple[int, int] = (0, 0)
    padding_mode: str = "zeros"
    cin_block: int | None = None
    use_bias: bool = True
    weight_norm: bool = False
    kernel_init: Callable = torch_default_kernel_init
    precision: Any = None

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (*self.kernel_size, x.shape[-1], self.features)
        kernel = self._kernel(shape, -1, self.weight_norm, self.kernel_init)
        y = conv2d(x, kernel, stride=self.stride, dilation=self.dilation, padding=self.padding,
                   padding_mode=self.padding_mode, cin_block=self.cin_block, precision=self.precision)
        if self.use_bias:
            fan_in = shape[0] * shape[1] * shape[2]
            b = self.param("bias", _uniform(1.0 / math.sqrt(fan_in)), (self.features,))
            y = y + b.astype(y.dtype)
        return y


def _uniform(bound: float) -> Callable:
    return lambda key, shape, dtype=jnp.float32: jax.random.uniform(key, shape, dtype, -bound, bound)
