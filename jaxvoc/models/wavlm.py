"""WavLM (Microsoft; the base and base-plus architectures), as Hugging Face transformers' ``WavLMModel``
computes it in eval mode (no dropout, no layer drop, no time masking): the hidden states that codec training's
SLM discriminator reads.

``WavLM(config)(audio [B, N]) -> tuple of L + 1 arrays [B, frames, hidden_size]``: the encoder input (feature
projection + positional convolution, layer-normed) first, then every transformer layer's output, as
transformers' ``output_hidden_states=True``. Audio is 16 kHz; every item of a batch has the full length (no
attention mask: transformers without ``attention_mask`` computes the same).

The pieces, channels last:

* feature encoder: 7 strided convolutions (``conv_dim``/``conv_kernel``/``conv_stride``), GELU; with
  ``feat_extract_norm="group"`` the first is followed by a per-channel GroupNorm over time, with ``"layer"``
  every one by a LayerNorm over channels;
* feature projection: LayerNorm + Linear to ``hidden_size``;
* positional embedding: a grouped convolution (kernel ``num_conv_pos_embeddings``, weight norm over the kernel
  axis — torch's ``dim=2``), its extra last frame dropped for even kernels, GELU, added to its input;
  LayerNorm;
* post-LN transformer layers whose attention adds a relative position bias: a learned embedding of log-spaced
  buckets of (key - query) position, computed once by layer 0 and handed on unchanged, scaled in every layer by
  a gate of each head's own slice of the layer input (``gru_rel_pos_linear`` + ``gru_rel_pos_const``).

Parameter names mirror transformers' state-dict names (``conv_layers_0`` is ``conv_layers.0``); norms keep
``scale``/``bias``; the bucket embedding ``rel_attn_embed`` is stored [heads, num_buckets] (torch's
embedding table transposed, as every Linear kernel is) and ``gru_rel_pos_const`` as [heads]. The config is transformers' ``config.json`` (key names kept, see :class:`WavLMConfig`).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.models.base import counting_jit, folded, from_checkpoint
from jaxvoc.nn import blocked
from jaxvoc.nn.conv import torch_default_kernel_init, weight_norm_kernel

Array = jax.Array

ACTIVATIONS = {
    "gelu": lambda x: jax.nn.gelu(x, approximate=False),  # transformers' "gelu" is the exact (erf) form
    "gelu_new": lambda x: jax.nn.gelu(x, approximate=True),
    "gelu_pytorch_tanh": lambda x: jax.nn.gelu(x, approximate=True),
    "relu": jax.nn.relu,
    "silu": jax.nn.silu,
    "swish": jax.nn.silu,
}


# ----------------------------------------------------------------------------------------------------------
# Config


@dataclasses.dataclass(frozen=True)
class WavLMConfig:
    """The parts of transformers' ``WavLMConfig`` (``config.json``) that define the hidden states (its
    defaults are the base model's). ``hf`` keeps the whole file for a lossless round trip."""

    hidden_size: int = 768
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    intermediate_size: int = 3072
    hidden_act: str = "gelu"
    layer_norm_eps: float = 1e-5
    feat_extract_norm: str = "group"
    feat_extract_activation: str = "gelu"
    conv_dim: tuple[int, ...] = (512,) * 7
    conv_stride: tuple[int, ...] = (5, 2, 2, 2, 2, 2, 2)
    conv_kernel: tuple[int, ...] = (10, 3, 3, 3, 3, 2, 2)
    conv_bias: bool = False
    num_conv_pos_embeddings: int = 128
    num_conv_pos_embedding_groups: int = 16
    num_buckets: int = 320
    max_bucket_distance: int = 800
    hf: dict = dataclasses.field(default_factory=dict, compare=False, hash=False)

    sample_rate = 16000

    @classmethod
    def from_dict(cls, d: Any, source: str = "config.json") -> "WavLMConfig":
        if not isinstance(d, dict):
            raise UserError(f"{source} is not a JSON object; give the config.json of a WavLM model")
        model_type = d.get("model_type", "wavlm")
        if model_type != "wavlm":
            raise UserError(f"{source} is a {model_type!r} config, not a WavLM one")
        if d.get("do_stable_layer_norm"):
            raise UserError(f"{source}: do_stable_layer_norm (the pre-LN WavLM Large) is not supported by jaxvoc; "
                            "base and base-plus are")
        if d.get("add_adapter"):
            raise UserError(f"{source}: add_adapter is not supported by jaxvoc")
        kw: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            if f.name == "hf" or f.name not in d or d[f.name] is None:
                continue
            v = d[f.name]
            try:
                if isinstance(f.default, tuple):
                    kw[f.name] = tuple(int(x) for x in v)
                elif isinstance(f.default, bool):
                    kw[f.name] = bool(v)
                elif isinstance(f.default, str):
                    kw[f.name] = str(v)
                elif isinstance(f.default, float):
                    kw[f.name] = float(v)
                else:
                    kw[f.name] = int(v)
            except (TypeError, ValueError):
                raise UserError(f"{source}: {f.name} has an unreadable value {v!r}") from None
        c = cls(**kw, hf=dict(d))
        c.validate(source)
        return c

    def to_dict(self) -> dict:
        out = dict(self.hf)
        out.update({f.name: (list(getattr(self, f.name)) if isinstance(getattr(self, f.name), tuple)
                             else getattr(self, f.name)) for f in dataclasses.fields(self) if f.name != "hf"})
        out.setdefault("model_type", "wavlm")
        return out

    def validate(self, source: str = "config.json") -> None:
        n = len(self.conv_dim)
        if not (len(self.conv_kernel) == n == len(self.conv_stride)) or n == 0:
            raise UserError(f"{source}: conv_dim, conv_kernel and conv_stride must have the same non-zero length")
        if self.feat_extract_norm not in ("group", "layer"):
            raise UserError(f"{source}: feat_extract_norm must be 'group' or 'layer', not {self.feat_extract_norm!r}")
        for key in ("hidden_act", "feat_extract_activation"):
            if getattr(self, key) not in ACTIVATIONS:
                raise UserError(f"{source}: {key} {getattr(self, key)!r} is not supported "
                                f"(supported: {', '.join(ACTIVATIONS)})")
        if self.hidden_size % self.num_attention_heads:
            raise UserError(f"{source}: hidden_size {self.hidden_size} is not a multiple of num_attention_heads "
                            f"{self.num_attention_heads}")
        if self.hidden_size % self.num_conv_pos_embedding_groups:
            raise UserError(f"{source}: hidden_size {self.hidden_size} is not a multiple of "
                            f"num_conv_pos_embedding_groups {self.num_conv_pos_embedding_groups}")
        if self.num_buckets < 4 or self.max_bucket_distance <= self.num_buckets // 4:
            raise UserError(f"{source}: num_buckets / max_bucket_distance out of range")

    def frames(self, samples: int) -> int:
        """Frames of the feature encoder for ``samples`` input samples (0 when too short)."""
        n = samples
        for k, s in zip(self.conv_kernel, self.conv_stride):
            n = (n - k) // s + 1
            if n <= 0:
                return 0
        return n

    @property
    def min_samples(self) -> int:
        """The shortest input that gives one frame."""
        n = 1
        for k, s in reversed(list(zip(self.conv_kernel, self.conv_stride))):
            n = (n - 1) * s + k
        return n


# ----------------------------------------------------------------------------------------------------------
# Relative position buckets


def relative_position_buckets(length: int, num_buckets: int = 320, max_distance: int = 800) -> np.ndarray:
    """[length, length] bucket of (key - query) for every query (row) and key (column), as WavLM: half the
    buckets per sign (positive offsets in the upper half); below a quarter of ``num_buckets`` one bucket per
    offset, above it log-spaced up to ``max_distance``, the last bucket taking everything further. Computed in
    float32 with the same sequence of rounded operations as transformers (a bucket is the truncation of a
    float32 value, so the precision of the log decides the boundaries)."""
    half = num_buckets // 2
    exact = half // 2
    pos = np.arange(length, dtype=np.int64)
    rel = pos[None, :] - pos[:, None]
    out = (rel > 0).astype(np.int64) * half
    mag = np.abs(rel)
    with np.errstate(divide="ignore"):
        lg = np.log(mag.astype(np.float32) / np.float32(exact))
    lg = lg / np.float32(math.log(max_distance / exact))
    lg = lg * np.float32(half - exact)
    large = np.minimum(_trunc_int(np.float32(exact) + lg), half - 1)
    return out + np.where(mag < exact, mag, large)


def _trunc_int(x: np.ndarray) -> np.ndarray:
    # torch's .to(long) truncates toward zero; the small offsets (where log is -inf) are discarded by the caller
    x = np.where(np.isfinite(x), x, 0.0)
    return np.trunc(x).astype(np.int64)


def bias_from_table(table: Array, length: int, config: WavLMConfig) -> Array:
    """The ungated relative position bias [heads, length, length] of a bucket table [heads, num_buckets]."""
    buckets = relative_position_buckets(length, config.num_buckets, config.max_bucket_distance)
    return jnp.take(table, jnp.asarray(buckets), axis=1)


# ----------------------------------------------------------------------------------------------------------
# Layers


class Dense(nn.Module):
    """torch.nn.Linear (kernel [in, out]), float32 at full precision."""

    features: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        k = self.param("kernel", torch_default_kernel_init, (x.shape[-1], self.features))
        bound = 1.0 / math.sqrt(x.shape[-1])
        b = self.param("bias", lambda key, s: jax.random.uniform(key, s, jnp.float32, -bound, bound),
                       (self.features,))
        return blocked.dense(x, k.astype(x.dtype)) + b.astype(x.dtype)


class LayerNorm(nn.Module):
    """torch.nn.LayerNorm over the last axis (biased variance, eps inside the square root); with ``axis=1``,
    torch.nn.GroupNorm with one group per channel on [B, T, C] (every channel normalised over time)."""

    eps: float = 1e-5
    axis: int = -1

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = x.shape[-1]
        scale = self.param("scale", nn.initializers.ones, (c,))
        bias = self.param("bias", nn.initializers.zeros, (c,))
        mean = jnp.mean(x, axis=self.axis, keepdims=True)
        var = jnp.mean(jnp.square(x - mean), axis=self.axis, keepdims=True)
        return (x - mean) / jnp.sqrt(var + self.eps) * scale.astype(x.dtype) + bias.astype(x.dtype)


class FeatureConv(nn.Module):
    """torch.nn.Conv1d (no padding, optional bias) of the feature encoder, kernel [K, Cin, Cout]."""

    features: int
    kernel_size: int
    stride: int
    use_bias: bool

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, x.shape[-1], self.features)
        y = blocked.conv1d(x, self.param("kernel", torch_default_kernel_init, shape), stride=self.stride)
        if self.use_bias:
            bound = 1.0 / math.sqrt(shape[0] * shape[1])
            b = self.param("bias", lambda key, s: jax.random.uniform(key, s, jnp.float32, -bound, bound),
                           (self.features,))
            y = y + b.astype(y.dtype)
        return y


class ConvLayer(nn.Module):
    """One feature-encoder layer: conv, optional norm (``"group"``: per-channel over time, ``"layer"``: over
    channels), activation."""

    features: int
    kernel_size: int
    stride: int
    use_bias: bool
    norm: str | None
    activation: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = FeatureConv(self.features, self.kernel_size, self.stride, self.use_bias, name="conv")(x)
        if self.norm == "group":
            x = LayerNorm(axis=1, name="layer_norm")(x)  # GroupNorm, one group per channel
        elif self.norm == "layer":
            x = LayerNorm(name="layer_norm")(x)
        return ACTIVATIONS[self.activation](x)


class FeatureEncoder(nn.Module):
    config: WavLMConfig

    @nn.compact
    def __call__(self, audio: Array) -> Array:
        c = self.config
        x = audio[..., None]
        for i, (dim, k, s) in enumerate(zip(c.conv_dim, c.conv_kernel, c.conv_stride)):
            norm = c.feat_extract_norm if (c.feat_extract_norm == "layer" or i == 0) else None
            x = ConvLayer(dim, k, s, c.conv_bias, norm, c.feat_extract_activation, name=f"conv_layers_{i}")(x)
        return x


class FeatureProjection(nn.Module):
    config: WavLMConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        x = LayerNorm(self.config.layer_norm_eps, name="layer_norm")(x)
        return Dense(self.config.hidden_size, name="projection")(x)


class PositionalConv(nn.Module):
    """The grouped, weight-normed positional convolution (``pos_conv_embed.conv``). Weight norm as torch's
    ``weight_norm(conv, dim=2)``: one gain per kernel tap, the norm over output and input channels — in the
    [K, Cin/groups, Cout] layout the gain is [K, 1, 1]. A folded ``kernel`` is accepted instead."""

    features: int
    kernel_size: int
    groups: int

    @nn.compact
    def __call__(self, x: Array) -> Array:
        shape = (self.kernel_size, x.shape[-1] // self.groups, self.features)
        if self.has_variable("params", "kernel"):
            kernel = self.param("kernel", torch_default_kernel_init, shape)
        else:
            v = self.param("weight_v", torch_default_kernel_init, shape)
            g = self.param("weight_g", lambda _, vv: jnp.sqrt(jnp.sum(jnp.square(vv), axis=(1, 2), keepdims=True)), v)
            kernel = weight_norm_kernel(g, v)
        fan_in = shape[0] * shape[1]
        bound = 1.0 / math.sqrt(fan_in)
        b = self.param("bias", lambda key, s: jax.random.uniform(key, s, jnp.float32, -bound, bound),
                       (self.features,))
        y = blocked.conv1d(x, kernel, padding=self.kernel_size // 2, groups=self.groups)
        return y + b.astype(y.dtype)


class PositionalEmbedding(nn.Module):
    config: WavLMConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        y = PositionalConv(c.hidden_size, c.num_conv_pos_embeddings, c.num_conv_pos_embedding_groups, name="conv")(x)
        if c.num_conv_pos_embeddings % 2 == 0:
            y = y[:, :-1]  # an even kernel with padding K // 2 on both sides makes one frame too many
        return ACTIVATIONS[c.feat_extract_activation](y)


class Attention(nn.Module):
    """Multi-head self-attention with WavLM's gated relative position bias. ``position_bias`` [H, T, T] is
    the ungated bias (built here by the layer that owns ``rel_attn_embed`` when None); returns (output,
    ungated bias)."""

    config: WavLMConfig
    has_relative_position_bias: bool

    @nn.compact
    def __call__(self, x: Array, position_bias: Array | None) -> tuple[Array, Array]:
        c = self.config
        B, T, D = x.shape
        H = c.num_attention_heads
        hd = D // H
        if position_bias is None:
            if not self.has_relative_position_bias:
                raise ValueError("the first attention layer must own the relative position embedding")
            table = self.param("rel_attn_embed", nn.initializers.normal(1.0), (H, c.num_buckets))
            position_bias = bias_from_table(table, T, c).astype(x.dtype)
        elif self.has_relative_position_bias:
            self.param("rel_attn_embed", nn.initializers.normal(1.0), (H, c.num_buckets))  # present, unused

        # the gate: each head's slice of the input -> 8 values -> two sums of 4 -> sigmoid -> a, b
        const = self.param("gru_rel_pos_const", nn.initializers.ones, (H,)).astype(x.dtype)
        proj = Dense(8, name="gru_rel_pos_linear")(x.reshape(B, T, H, hd))  # [B, T, H, 8]
        proj = jnp.sum(proj.reshape(B, T, H, 2, 4), axis=-1)
        gates = jax.nn.sigmoid(proj)
        a, b = gates[..., 0], gates[..., 1]  # [B, T, H]
        gate = a * (b * const - 1.0) + 2.0
        gated_bias = jnp.transpose(gate, (0, 2, 1))[..., None] * position_bias[None]  # [B, H, T, T]

        q = Dense(D, name="q_proj")(x).reshape(B, T, H, hd)
        k = Dense(D, name="k_proj")(x).reshape(B, T, H, hd)
        v = Dense(D, name="v_proj")(x).reshape(B, T, H, hd)
        q = q * math.sqrt(1.0 / hd)  # torch scales q (by this float) before q k^T
        q, k, v = (jnp.transpose(t, (0, 2, 1, 3)) for t in (q, k, v))  # [B, H, T, hd]
        logits = gated_bias + blocked.matmul(q, jnp.swapaxes(k, -1, -2))
        w = jax.nn.softmax(logits, axis=-1)
        out = jnp.transpose(blocked.matmul(w, v), (0, 2, 1, 3)).reshape(B, T, D)
        return Dense(D, name="out_proj")(out), position_bias


class FeedForward(nn.Module):
    config: WavLMConfig

    @nn.compact
    def __call__(self, x: Array) -> Array:
        c = self.config
        h = ACTIVATIONS[c.hidden_act](Dense(c.intermediate_size, name="intermediate_dense")(x))
        return Dense(c.hidden_size, name="output_dense")(h)


class EncoderLayer(nn.Module):
    """Post-LN: x = LN(x + attention(x)); x = LN(x + feed_forward(x))."""

    config: WavLMConfig
    has_relative_position_bias: bool

    @nn.compact
    def __call__(self, x: Array, position_bias: Array | None) -> tuple[Array, Array]:
        eps = self.config.layer_norm_eps
        a, position_bias = Attention(self.config, self.has_relative_position_bias, name="attention")(x, position_bias)
        x = LayerNorm(eps, name="layer_norm")(x + a)
        x = LayerNorm(eps, name="final_layer_norm")(x + FeedForward(self.config, name="feed_forward")(x))
        return x, position_bias


class Encoder(nn.Module):
    config: WavLMConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, ...]:
        c = self.config
        x = x + PositionalEmbedding(c, name="pos_conv_embed")(x)
        x = LayerNorm(c.layer_norm_eps, name="layer_norm")(x)
        states = [x]
        names = [f"layers_{i}" for i in range(c.num_hidden_layers)]
        if self.is_initializing():
            bias = None
            for i, name in enumerate(names):
                x, bias = EncoderLayer(c, i == 0, name=name)(x, bias)
                states.append(x)
            return tuple(states)
        # Every layer runs one program: a scan over the stacked parameters (compiled one by one, 12 layers make
        # the gradient's compilation minutes long on CPU). The parameters keep their per-layer names; the
        # position bias is built once from layer 0's table, as layer 0 builds it, and handed to every layer.
        params = self.variables["params"]
        first = dict(params[names[0]])
        attn = dict(first["attention"])
        bias = bias_from_table(attn.pop("rel_attn_embed"), x.shape[1], c).astype(x.dtype)
        first["attention"] = attn
        stacked = jax.tree_util.tree_map(lambda *a: jnp.stack(a), first, *[params[n] for n in names[1:]])
        layer = EncoderLayer(c, False, parent=None)

        def body(h, p):
            h, _ = layer.apply({"params": p}, h, bias)
            return h, h

        _, ys = jax.lax.scan(body, x, stacked)
        return tuple(states) + tuple(ys[i] for i in range(len(names)))


class WavLM(nn.Module):
    """audio [B, N] (16 kHz) -> the ``num_hidden_layers + 1`` hidden states, each [B, frames, hidden_size]."""

    config: WavLMConfig

    @nn.compact
    def __call__(self, audio: Array) -> tuple[Array, ...]:
        feats = FeatureEncoder(self.config, name="feature_extractor")(audio)
        x = FeatureProjection(self.config, name="feature_projection")(feats)
        return Encoder(self.config, name="encoder")(x)


def init_params(config: WavLMConfig, key: Array | None = None, samples: int | None = None) -> Any:
    """A parameter tree of the model's shapes (weight norm unfolded), randomly initialised."""
    key = jax.random.PRNGKey(0) if key is None else key
    n = samples or config.min_samples
    return WavLM(config).init(key, jnp.zeros((1, n), jnp.float32))["params"]


# ----------------------------------------------------------------------------------------------------------
# Pretrained


class Pretrained:
    """A converted WavLM: ``model(audio [B, N]) -> tuple of hidden states [B, frames, hidden]`` (jitted, one
    program per input shape; ``compilations`` counts them). Weight norm folded unless ``fold=False``.
    ``hidden_states(params, audio)`` is the pure function, for gradients (the SLM discriminator)."""

    kind = "wavlm"

    def __init__(self, config: WavLMConfig, params: Any, fold: bool = True):
        self.config = config
        self.params = folded(params) if fold else params
        self.module = WavLM(config)
        self.compilations = 0

        def count():
            self.compilations += 1

        self._call = counting_jit(self.hidden_states, count)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, meta: dict, fold: bool = True) -> "Pretrained":
        return from_checkpoint(cls, WavLMConfig, ckpt_dir, meta, fold)

    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    def hidden_states(self, params: Any, audio: Array) -> tuple[Array, ...]:
        return self.module.apply({"params": params}, audio)

    def __call__(self, audio) -> tuple[Array, ...]:
        audio = jnp.asarray(audio, jnp.float32)
        squeeze = audio.ndim == 1
        if squeeze:
            audio = audio[None]
        if audio.ndim != 2:
            raise UserError(f"WavLM takes audio [batch, samples] or [samples], got shape {tuple(audio.shape)}")
        if audio.shape[1] < self.config.min_samples:
            raise UserError(f"WavLM needs at least {self.config.min_samples} samples, got {audio.shape[1]}")
        out = self._call(self.params, audio)
        return tuple(h[0] for h in out) if squeeze else out
