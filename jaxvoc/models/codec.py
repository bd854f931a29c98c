"""NVIDIA NeMo's audio codec (the Low Frame-rate Speech Codec and any other ``AudioCodecModel`` built from the
same modules): HiFiGANEncoder -> GroupFiniteScalarQuantizer -> HiFiGANDecoder.

``encode(audio [B, N], lengths) -> (tokens [B, num_codebooks, frames], token_lengths)`` and
``decode(tokens, token_lengths) -> (audio [B, frames * prod(up_sample_rates)], lengths)``, as NeMo 3.0.0's
``AudioCodecModel.encode`` / ``decode``: audio is zero-padded to whole frames, every convolution pads its
input (reflect by default) and every layer's output is zeroed past each item's length.

Batches. NeMo pads every convolution at the end of the batch tensor, so a short item in a batch sees the
zeros after it where it would see a reflection of itself alone: its last frames depend on the batch. With
``isolate=True`` every convolution pads at each item's own end instead, and each item gets exactly what
NeMo gives it alone — whatever the padding around it (``jaxvoc encode/decode`` use this, so length buckets
never change a token). With ``isolate=False`` (default) the result is NeMo's on the same batch tensor,
provided that tensor is no longer than its longest item rounded up to whole frames (NeMo crops it to that;
a static-shape program cannot).

Module and parameter names mirror NeMo's state-dict names (``res_layers_0`` is ``res_layers.0``), channels
last. The config is NeMo's ``model_config.yaml`` (see :class:`CodecConfig`).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import typing
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass
from jaxvoc.models.base import counting_jit, folded, from_checkpoint
from jaxvoc.nn.conv import Conv1d, ConvTranspose1d, get_padding, pad_to_ends
from jaxvoc.nn.activations import snake
from jaxvoc.models.fsq import GroupFSQ

Array = jax.Array

Activation = Literal["elu", "lrelu", "snake", "half_snake"]
PadMode = Literal["reflect", "zeros", "replicate"]
ACTIVATIONS = typing.get_args(Activation)
PAD_MODES = typing.get_args(PadMode)
FINGERPRINT_KEY = "jaxvoc_fingerprint"  # added to the NeMo config in a jaxvoc checkpoint


# ----------------------------------------------------------------------------------------------------------
# Config


_POS = {"min": 1}
_ACT = {"lower": True}  # NeMo lower-cases the activation (only)


@dataclasses.dataclass(frozen=True)
class EncoderConfig:
    """NeMo HiFiGANEncoder arguments (NeMo's defaults)."""

    encoded_dim: int = dataclasses.field(metadata=_POS)
    down_sample_rates: tuple[int, ...] = dataclasses.field(default=(2, 2, 8, 8), metadata=_POS)
    base_channels: int = dataclasses.field(default=32, metadata=_POS)
    in_kernel_size: int = dataclasses.field(default=7, metadata=_POS)
    out_kernel_size: int = dataclasses.field(default=7, metadata=_POS)
    resblock_kernel_sizes: tuple[int, ...] = dataclasses.field(default=(3, 7, 11), metadata=_POS)
    resblock_dilation_sizes: tuple[int, ...] = dataclasses.field(default=(1, 3, 5), metadata=_POS)
    activation: Activation = dataclasses.field(default="lrelu", metadata=_ACT)
    pad_mode: PadMode = "reflect"


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """NeMo HiFiGANDecoder arguments (NeMo's defaults)."""

    input_dim: int = dataclasses.field(metadata=_POS)
    up_sample_rates: tuple[int, ...] = dataclasses.field(default=(8, 8, 2, 2), metadata=_POS)
    base_channels: int = dataclasses.field(default=512, metadata=_POS)
    in_kernel_size: int = dataclasses.field(default=7, metadata=_POS)
    out_kernel_size: int = dataclasses.field(default=3, metadata=_POS)
    resblock_kernel_sizes: tuple[int, ...] = dataclasses.field(default=(3, 7, 11), metadata=_POS)
    resblock_dilation_sizes: tuple[int, ...] = dataclasses.field(default=(1, 3, 5), metadata=_POS)
    activation: Activation = dataclasses.field(default="lrelu", metadata=_ACT)
    output_activation: Literal["tanh", "clamp"] = "tanh"
    pad_mode: PadMode = "reflect"
    n_groups_equal_to_out_channels: bool = False


@dataclasses.dataclass(frozen=True)
class _GroupFSQArgs:
    """NeMo GroupFiniteScalarQuantizer arguments."""

    num_groups: int = dataclasses.field(metadata=_POS)
    num_levels_per_group: tuple[int, ...] = dataclasses.field(metadata={"min": 2})
    eps: float = 1e-3


@dataclasses.dataclass(frozen=True)
class _FSQArgs:
    """NeMo FiniteScalarQuantizer arguments (one group)."""

    num_levels: tuple[int, ...] = dataclasses.field(metadata={"min": 2})
    eps: float = 1e-3


@dataclasses.dataclass(frozen=True)
class _NeMoTop:
    """The top-level keys of an AudioCodecModel config that jaxvoc reads (the others are kept as they are)."""

    sample_rate: int = dataclasses.field(metadata=_POS)
    samples_per_frame: int = dataclasses.field(metadata=_POS)
    audio_encoder: dict
    audio_decoder: dict
    output_sample_rate: int | None = None


# NeMo class names (the last part of a config's _target_) that jaxvoc implements, per model slot
ENCODERS = {"HiFiGANEncoder": EncoderConfig}
DECODERS = {"HiFiGANDecoder": DecoderConfig}
QUANTIZERS = {"GroupFiniteScalarQuantizer": _GroupFSQArgs, "FiniteScalarQuantizer": _FSQArgs}


def _section(d: dict, slot: str, classes: dict, source: str):
    """(NeMo class name, its arguments) of the ``_target_`` section ``slot``, NeMo's defaults filled in; an
    argument jaxvoc does not know is an error (it could change what the module computes)."""
    section = d[slot]
    if not isinstance(section, dict) or "_target_" not in section:
        raise UserError(f"{source}: '{slot}' has no _target_; give the model_config.yaml of a NeMo AudioCodecModel")
    target = str(section["_target_"])
    module, _, name = target.rpartition(".")
    # NeMo's own classes only: a class of the same name elsewhere may compute something else
    name = name if module.startswith("nemo.collections.tts.modules") else target
    if name not in classes:
        raise UserError(f"{source}: {slot} {target} is not supported by jaxvoc (supported: {', '.join(classes)})")
    args = {k: v for k, v in section.items() if k != "_target_"}
    return name, load_dataclass(classes[name], args, source, prefix=f"{slot}.", what=f"{name} argument")


@dataclasses.dataclass(frozen=True)
class CodecConfig:
    """A NeMo AudioCodecModel config (``model_config.yaml`` of a ``.nemo``), the parts that define encode and
    decode. ``nemo`` keeps the whole config (training, losses, discriminator) for a lossless round trip."""

    sample_rate: int
    samples_per_frame: int
    encoder: EncoderConfig
    decoder: DecoderConfig
    num_groups: int
    num_levels_per_group: tuple[int, ...]
    fsq_eps: float = 1e-3
    output_sample_rate: int | None = None
    quantizer_target: str = "GroupFiniteScalarQuantizer"
    fingerprint: str = ""
    nemo: Any = None  # the whole NeMo config as JSON text (hashable)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model_config.yaml") -> "CodecConfig":
        if not isinstance(d, dict):
            raise UserError(f"{source} is not a mapping; give a NeMo AudioCodecModel's model_config.yaml")
        d = dict(d)
        fingerprint = str(d.pop(FINGERPRINT_KEY, "") or "")
        top = load_dataclass(_NeMoTop, d, source, keep_unknown=True,
                             hint="give the model_config.yaml of a NeMo AudioCodecModel")
        for key in ("semantic_codec", "semantic_codec_path"):
            if d.get(key):
                raise UserError(f"{source}: '{key}' (a semantic codec inside the codec) is not supported by jaxvoc")
        _, encoder = _section(d, "audio_encoder", ENCODERS, source)
        _, decoder = _section(d, "audio_decoder", DECODERS, source)
        if not d.get("vector_quantizer"):
            raise UserError(f"{source} has no vector_quantizer, so the model makes no tokens; jaxvoc supports "
                            f"codecs with one of: {', '.join(QUANTIZERS)}")
        vq_name, vq = _section(d, "vector_quantizer", QUANTIZERS, source)
        groups, levels = (vq.num_groups, vq.num_levels_per_group) if isinstance(vq, _GroupFSQArgs) else \
            (1, vq.num_levels)
        cfg = cls(sample_rate=top.sample_rate, samples_per_frame=top.samples_per_frame, encoder=encoder,
                  decoder=decoder, num_groups=groups, num_levels_per_group=levels, fsq_eps=float(vq.eps),
                  output_sample_rate=top.output_sample_rate or None, quantizer_target=vq_name,
                  fingerprint=fingerprint, nemo=json.dumps(d, sort_keys=True))
        cfg.validate(source)
        return cfg

    def to_dict(self) -> dict:
        d = json.loads(self.nemo) if self.nemo else {}
        if self.fingerprint:
            d[FINGERPRINT_KEY] = self.fingerprint
        return d

    def validate(self, source: str = "config") -> None:
        """Rules across fields and sections (each argument's type and range: :func:`load_dataclass`)."""
        e, dc = self.encoder, self.decoder
        for name, m in (("audio_encoder", e), ("audio_decoder", dc)):
            if not m.resblock_kernel_sizes or not m.resblock_dilation_sizes:
                raise UserError(f"{source}: {name} needs at least one resblock kernel size and dilation")
        if e.encoded_dim != self.num_groups * len(self.num_levels_per_group):
            raise UserError(f"{source}: audio_encoder.encoded_dim ({e.encoded_dim}) differs from the quantizer's "
                            f"num_groups x len(num_levels_per_group) ({self.codebook_dim})")
        if dc.input_dim != e.encoded_dim:
            raise UserError(f"{source}: audio_decoder.input_dim ({dc.input_dim}) differs from "
                            f"audio_encoder.encoded_dim ({e.encoded_dim})")
        ch = dc.base_channels
        for _ in dc.up_sample_rates:
            if dc.n_groups_equal_to_out_channels and ch % (ch // 2 or 1):
                raise UserError(f"{source}: audio_decoder channels {ch} do not split into groups")
            ch //= 2
            if ch < 1:
                raise UserError(f"{source}: audio_decoder.base_channels ({dc.base_channels}) is too small for "
                                f"{len(dc.up_sample_rates)} up-sampling layers")

    # --- derived ---------------------------------------------------------------------------------------------
    @property
    def quantizer(self) -> GroupFSQ:
        return GroupFSQ(self.num_groups, self.num_levels_per_group, self.fsq_eps)

    @property
    def num_codebooks(self) -> int:
        return self.num_groups

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.num_levels_per_group))

    @property
    def codebook_dim(self) -> int:
        return self.num_groups * len(self.num_levels_per_group)

    @property
    def out_sample_rate(self) -> int:
        return self.output_sample_rate or self.sample_rate

    @property
    def samples_per_token(self) -> int:
        """Output samples per token (the decoder's up-sampling product)."""
        return int(np.prod(self.decoder.up_sample_rates))

    @property
    def frame_rate(self) -> float:
        return self.sample_rate / self.samples_per_frame

    def frames(self, num_samples: int) -> int:
        """Tokens per codebook for ``num_samples`` of input audio (padded to whole frames, then down-sampled)."""
        n = -(-num_samples // self.samples_per_frame) * self.samples_per_frame
        for r in self.encoder.down_sample_rates:
            n //= r
        return n

    def output_samples(self, num_samples: int) -> int:
        """Samples of decoded audio that correspond to ``num_samples`` of input audio."""
        return int(num_samples * self.out_sample_rate // self.sample_rate)

    def min_samples(self) -> int:
        """Shortest input NeMo can encode: it is padded to whole frames, and every reflect-padded convolution
        needs more samples than it pads."""
        for frames in range(1, 1 << 16):
            if self._encoder_fits(frames):
                return self.samples_per_frame * (frames - 1) + 1
        raise UserError("this codec config cannot encode any length")

    def min_tokens(self) -> int:
        """Fewest tokens per codebook NeMo's decoder accepts (reflect padding must be shorter than its input)."""
        for tokens in range(1, 1 << 16):
            if self._decoder_fits(tokens):
                return tokens
        raise UserError("this codec config cannot decode any length")

    def _encoder_fits(self, frames: int) -> bool:
        e = self.encoder
        ok = lambda n, pad: e.pad_mode != "reflect" or n > pad  # noqa: E731
        res_pad = max(get_padding(k, d) for k in e.resblock_kernel_sizes for d in e.resblock_dilation_sizes)
        n = frames * self.samples_per_frame
        fits = ok(n, get_padding(e.in_kernel_size))
        for r in e.down_sample_rates:
            fits &= ok(n, res_pad) and ok(n, down_sample_padding(r))
            n = (n + 2 * down_sample_padding(r) - 2 * r) // r + 1
        return bool(fits and n >= 1 and ok(n, get_padding(e.out_kernel_size)))

    def _decoder_fits(self, tokens: int) -> bool:
        dc = self.decoder
        ok = lambda n, pad: dc.pad_mode != "reflect" or n > pad  # noqa: E731
        res_pad = max(get_padding(k, d) for k in dc.resblock_kernel_sizes for d in dc.resblock_dilation_sizes)
        t = tokens
        fits = ok(t, get_padding(dc.in_kernel_size))
        for r in dc.up_sample_rates:
            t *= r
            fits &= ok(t, res_pad)
        return bool(fits and ok(t, get_padding(dc.out_kernel_size)))


def down_sample_padding(rate: int) -> int:
    """NeMo's get_down_sample_padding(kernel_size=2 * rate, stride=rate)."""
    return (rate + 1) // 2


def up_sample_padding(kernel_size: int, stride: int) -> tuple[int, int]:
    """NeMo's get_up_sample_padding: (padding, output_padding)."""
    return (kernel_size - stride + 1) // 2, (kernel_size - stride) % 2


# ----------------------------------------------------------------------------------------------------------
# Length-aware helpers


def length_mask(x: Array, lengths: Array) -> Array:
    """NeMo's mask_sequence_tensor for [B, T, C]: zero at and past each item's length."""
    valid = jnp.arange(x.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
    return x * valid[..., None].astype(x.dtype)


# ----------------------------------------------------------------------------------------------------------
# Modules


class NeMoSnake(nn.Module):
    """NeMo's Snake (``x + sin(alpha x)^2 / (alpha + 1e-9)``, alpha per channel, initialised to 1)."""

    @nn.compact
    def __call__(self, x: Array) -> Array:
        alpha = self.param("alpha", nn.initializers.ones, (x.shape[-1],))
        return snake(x, alpha, alpha)


class CodecActivation(nn.Module):
    """NeMo's CodecActivation: 'elu', 'lrelu' (slope 0.01), 'snake', or 'half_snake' (snake on the first half
    of the channels, leaky ReLU on the rest). Parameters live in the child ``activation`` as in NeMo."""

    activation: str

    @nn.compact
    def __call__(self, x: Array) -> Array:
        a = self.activation
        if a == "elu":
            return jax.nn.elu(x)
        if a == "lrelu":
            return jax.nn.leaky_relu(x, 0.01)
        if a == "snake":
            return NeMoSnake(name="activation")(x)
        if a == "half_snake":
            return _HalfSnake(name="activation")(x)
        raise ValueError(f"unknown activation {a!r}")


class _HalfSnake(nn.Module):
    @nn.compact
    def __call__(self, x: Array) -> Array:
        n = x.shape[-1] // 2
        return jnp.concatenate([NeMoSnake(name="snake_act")(x[..., :n]), jax.nn.leaky_relu(x[..., n:], 0.01)], -1)


class Conv1dNorm(nn.Module):
    """NeMo's Conv1dNorm: padded (``pad_mode``), weight-normed conv, output masked to ``lengths``.
    ``padding`` 0/None means NeMo's default ``(kernel_size - 1) * dilation // 2``."""

    features: int
    kernel_size: int
    stride: int = 1
    dilation: int = 1
    padding: int | None = None
    pad_mode: str = "reflect"

    @nn.compact
    def __call__(self, x: Array, lengths: Array, ends: Array | None = None) -> Array:
        """``lengths``: the output's valid lengths (masked after); ``ends``: the input's per-item ends."""
        p = self.padding or get_padding(self.kernel_size, self.dilation)
        x = pad_to_ends(x, p, p, self.pad_mode, ends)
        y = Conv1d(self.features, self.kernel_size, stride=self.stride, dilation=self.dilation, padding=0,
                   weight_norm=True, name="conv")(x)
        return length_mask(y, lengths)


class ConvTranspose1dNorm(nn.Module):
    """NeMo's ConvTranspose1dNorm: weight-normed transposed conv (kernel ``2 * stride`` in the codec), output
    masked to ``lengths``."""

    features: int
    kernel_size: int
    stride: int
    groups: int = 1

    @nn.compact
    def __call__(self, x: Array, lengths: Array) -> Array:
        padding, output_padding = up_sample_padding(self.kernel_size, self.stride)
        y = ConvTranspose1d(self.features, self.kernel_size, stride=self.stride, padding=padding,
                            output_padding=output_padding, groups=self.groups, weight_norm=True, name="conv")(x)
        return length_mask(y, lengths)


class ResidualBlock(nn.Module):
    """act -> dilated conv -> act -> conv, added to the input (NeMo's HiFi-GAN residual block)."""

    channels: int
    kernel_size: int
    dilation: int
    activation: str
    pad_mode: str

    @nn.compact
    def __call__(self, x: Array, lengths: Array, ends: Array | None) -> Array:
        h = CodecActivation(self.activation, name="input_activation")(x)
        h = Conv1dNorm(self.channels, self.kernel_size, dilation=self.dilation, pad_mode=self.pad_mode,
                       name="input_conv")(h, lengths, ends)
        h = CodecActivation(self.activation, name="skip_activation")(h)
        h = Conv1dNorm(self.channels, self.kernel_size, pad_mode=self.pad_mode, name="skip_conv")(h, lengths, ends)
        return x + h


class HiFiGANResBlock(nn.Module):
    """A chain of residual blocks, one per dilation."""

    channels: int
    kernel_size: int
    dilations: Sequence[int]
    activation: str
    pad_mode: str

    @nn.compact
    def __call__(self, x: Array, lengths: Array, ends: Array | None) -> Array:
        for j, d in enumerate(self.dilations):
            x = ResidualBlock(self.channels, self.kernel_size, d, self.activation, self.pad_mode,
                              name=f"res_blocks_{j}")(x, lengths, ends)
        return x


class HiFiGANResLayer(nn.Module):
    """Mean over kernel sizes of a chain of residual blocks over the dilations."""

    channels: int
    kernel_sizes: Sequence[int]
    dilations: Sequence[int]
    activation: str
    pad_mode: str

    @nn.compact
    def __call__(self, x: Array, lengths: Array, ends: Array | None) -> Array:
        total = None
        for i, k in enumerate(self.kernel_sizes):
            h = HiFiGANResBlock(self.channels, k, tuple(self.dilations), self.activation, self.pad_mode,
                                name=f"res_blocks_{i}")(x, lengths, ends)
            total = h if total is None else total + h
        return total / len(self.kernel_sizes)


class HiFiGANEncoder(nn.Module):
    """audio [B, N] (N a whole number of frames) -> encoded [B, frames, encoded_dim], frame lengths."""

    config: EncoderConfig

    @nn.compact
    def __call__(self, audio: Array, lengths: Array, ends: Array | None = None) -> tuple[Array, Array]:
        c = self.config
        x = Conv1dNorm(c.base_channels, c.in_kernel_size, pad_mode=c.pad_mode, name="pre_conv")(
            audio[..., None], lengths, ends)
        ch = c.base_channels
        for i, r in enumerate(c.down_sample_rates):
            x = HiFiGANResLayer(ch, c.resblock_kernel_sizes, c.resblock_dilation_sizes, c.activation, c.pad_mode,
                                name=f"res_layers_{i}")(x, lengths, ends)
            x = CodecActivation(c.activation, name=f"activations_{i}")(x)
            lengths = lengths // r
            k, p = 2 * r, down_sample_padding(r)
            ch *= 2
            x = Conv1dNorm(ch, k, stride=r, padding=p, pad_mode=c.pad_mode, name=f"down_sample_conv_layers_{i}")(
                x, lengths, ends)
            if ends is not None:  # the length of this layer's output for the item alone
                ends = (ends + 2 * p - k) // r + 1
        x = CodecActivation(c.activation, name="post_activation")(x)
        x = Conv1dNorm(c.encoded_dim, c.out_kernel_size, pad_mode=c.pad_mode, name="post_conv")(x, lengths, ends)
        return x, lengths


class HiFiGANDecoder(nn.Module):
    """inputs [B, frames, input_dim] -> audio [B, frames * prod(up_sample_rates)], sample lengths."""

    config: DecoderConfig

    @nn.compact
    def __call__(self, x: Array, lengths: Array, ends: Array | None = None) -> tuple[Array, Array]:
        c = self.config
        x = Conv1dNorm(c.base_channels, c.in_kernel_size, pad_mode=c.pad_mode, name="pre_conv")(x, lengths, ends)
        ch = c.base_channels
        for i, r in enumerate(c.up_sample_rates):
            lengths = lengths * r
            if ends is not None:
                ends = ends * r
            x = CodecActivation(c.activation, name=f"activations_{i}")(x)
            out = ch // 2
            x = ConvTranspose1dNorm(out, 2 * r, r, groups=out if c.n_groups_equal_to_out_channels else 1,
                                    name=f"up_sample_conv_layers_{i}")(x, lengths)
            ch = out
            x = HiFiGANResLayer(ch, c.resblock_kernel_sizes, c.resblock_dilation_sizes, c.activation, c.pad_mode,
                                name=f"res_layers_{i}")(x, lengths, ends)
        x = CodecActivation(c.activation, name="post_activation")(x)
        x = Conv1dNorm(1, c.out_kernel_size, pad_mode=c.pad_mode, name="post_conv")(x, lengths, ends)
        x = jnp.tanh(x) if c.output_activation == "tanh" else jnp.clip(x, -1.0, 1.0)
        return x[..., 0], lengths


class AudioCodec(nn.Module):
    """The generator half of NeMo's AudioCodecModel. Parameter tree ``{audio_encoder, audio_decoder}``."""

    config: CodecConfig

    def setup(self):
        self.audio_encoder = HiFiGANEncoder(self.config.encoder)
        self.audio_decoder = HiFiGANDecoder(self.config.decoder)

    def pad_audio(self, audio: Array, lengths: Array) -> tuple[Array, Array]:
        """Zero-pads the tensor to whole frames; per-item lengths rounded up to whole frames (NeMo's
        pad_audio, in exact integer arithmetic)."""
        spf = self.config.samples_per_frame
        n = audio.shape[1]
        audio = jnp.pad(audio, ((0, 0), (0, -(-n // spf) * spf - n)))
        lengths = jnp.asarray(lengths, jnp.int32)
        return audio, (lengths + spf - 1) // spf * spf

    def encode_audio(self, audio: Array, lengths: Array, isolate: bool = False) -> tuple[Array, Array]:
        """audio [B, N] -> (encoded [B, frames, D] before quantization, frame lengths)."""
        audio = jnp.asarray(audio)
        lengths = jnp.asarray(lengths, jnp.int32)
        if isolate:  # an item alone is zero-padded to whole frames and padded again at that end
            audio = length_mask(audio[..., None], lengths)[..., 0]
        audio, padded = self.pad_audio(audio, lengths)
        return self.audio_encoder(audio, padded, padded if isolate else None)

    def quantize(self, encoded: Array, lengths: Array) -> tuple[Array, Array]:
        """-> (dequantized [B, frames, D] with the straight-through gradient, tokens [B, C, frames])."""
        return self.config.quantizer.quantize(encoded, lengths)

    def encode(self, audio: Array, lengths: Array, isolate: bool = False) -> tuple[Array, Array]:
        encoded, enc_len = self.encode_audio(audio, lengths, isolate)
        return self.quantize(encoded, enc_len)[1], enc_len

    def decode(self, tokens: Array, lengths: Array, isolate: bool = False) -> tuple[Array, Array]:
        lengths = jnp.asarray(lengths, jnp.int32)
        x = self.config.quantizer.decode(tokens, lengths)
        return self.audio_decoder(x, lengths, lengths if isolate else None)

    def __call__(self, audio: Array, lengths: Array) -> tuple[Array, Array]:
        """Training forward: encode, quantize (straight-through), decode. -> (audio, lengths)."""
        encoded, enc_len = self.encode_audio(audio, lengths)
        dequantized, _ = self.quantize(encoded, enc_len)
        return self.audio_decoder(dequantized, enc_len)


def init_params(config: CodecConfig, seed: int = 0) -> dict:
    """Fresh weight-normed parameters (torch's default init for the convs, snake alpha 1)."""
    audio = jnp.zeros((1, max(config.min_samples(), 4 * config.samples_per_frame)), jnp.float32)
    return AudioCodec(config).init(jax.random.PRNGKey(seed), audio, jnp.array([audio.shape[1]]))["params"]


def fingerprint(config: CodecConfig, params: Any) -> str:
    """A short hash of what makes the tokens: the model's encode/decode config and its weights."""
    h = hashlib.sha256()
    arch = {"sample_rate": config.sample_rate, "samples_per_frame": config.samples_per_frame,
            "output_sample_rate": config.output_sample_rate, "encoder": dataclasses.asdict(config.encoder),
            "decoder": dataclasses.asdict(config.decoder), "num_groups": config.num_groups,
            "num_levels_per_group": config.num_levels_per_group, "fsq_eps": config.fsq_eps}
    h.update(json.dumps(arch, sort_keys=True).encode())

    def walk(tree, prefix=""):
        for k in sorted(tree):
            v = tree[k]
            if isinstance(v, dict):
                walk(v, f"{prefix}/{k}")
            else:
                a = np.ascontiguousarray(np.asarray(v, np.float32))
                h.update(f"{prefix}/{k}:{a.shape}".encode())
                h.update(a.tobytes())

    walk(params)
    return h.hexdigest()[:16]


# ----------------------------------------------------------------------------------------------------------
# Ready-to-call model


class Pretrained:
    """A converted codec: ``encode(audio, lengths)`` and ``decode(tokens, token_lengths)``, jitted (one
    program per input shape and ``isolate`` setting; ``compilations`` counts them). Weight norm folded unless
    ``fold=False``."""

    kind = "codec"

    def __init__(self, config: CodecConfig, params: Any, fold: bool = True):
        self.config = config
        self.params = folded(params) if fold else params
        self.module = AudioCodec(config)
        self.compilations = {"encode": 0, "decode": 0}

        def count(key):
            return lambda: self.compilations.__setitem__(key, self.compilations[key] + 1)

        self._encode = counting_jit(lambda p, audio, lengths, isolate: self.module.apply(
            {"params": p}, audio, lengths, isolate, method=AudioCodec.encode), count("encode"), static_argnums=3)
        self._decode = counting_jit(lambda p, tokens, lengths, isolate: self.module.apply(
            {"params": p}, tokens, lengths, isolate, method=AudioCodec.decode), count("decode"), static_argnums=3)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, meta: dict, fold: bool = True) -> "Pretrained":
        return from_checkpoint(cls, CodecConfig, ckpt_dir, meta, fold)

    # --- properties --------------------------------------------------------------------------------------
    @property
    def sample_rate(self) -> int:
        return self.config.sample_rate

    sampling_rate = sample_rate

    @property
    def output_sample_rate(self) -> int:
        return self.config.out_sample_rate

    @property
    def num_codebooks(self) -> int:
        return self.config.num_codebooks

    @property
    def codebook_size(self) -> int:
        return self.config.codebook_size

    @property
    def samples_per_frame(self) -> int:
        return self.config.samples_per_frame

    @property
    def fingerprint(self) -> str:
        return self.config.fingerprint

    # --- API -----------------------------------------------------------------------------------------------
    def encode(self, audio, lengths=None, isolate: bool = False) -> tuple[Array, Array]:
        """audio [B, N] (or [N]) at ``sample_rate``, lengths [B] (default: N) -> (tokens int32 [B,
        num_codebooks, frames], token lengths [B]); frames past an item's length hold 0."""
        audio = jnp.asarray(audio, jnp.float32)
        squeeze = audio.ndim == 1
        if squeeze:
            audio = audio[None]
        if audio.ndim != 2:
            raise UserError(f"audio must be [batch, samples] or [samples], got shape {tuple(audio.shape)}")
        if lengths is None:
            lengths = np.full((audio.shape[0],), audio.shape[1], np.int32)
        self._check_lengths(lengths, audio.shape, self.config.min_samples(), "samples")
        tokens, tlen = self._encode(self.params, audio, jnp.asarray(lengths, jnp.int32), isolate)
        return (tokens[0], tlen[0]) if squeeze else (tokens, tlen)

    def decode(self, tokens, lengths=None, isolate: bool = False) -> tuple[Array, Array]:
        """tokens [B, num_codebooks, frames] (or [num_codebooks, frames]), lengths [B] (default: frames) ->
        (audio [B, frames * samples_per_token] at ``output_sample_rate``, sample lengths [B])."""
        tokens = np.asarray(tokens) if not isinstance(tokens, jax.Array) else tokens
        squeeze = tokens.ndim == 2
        if squeeze:
            tokens = tokens[None]
        if tokens.ndim != 3:
            raise UserError(f"tokens must be [batch, codebooks, frames] or [codebooks, frames], got shape "
                            f"{tuple(tokens.shape)}")
        if tokens.shape[1] != self.num_codebooks:
            raise UserError(f"tokens have {tokens.shape[1]} codebooks, this model has {self.num_codebooks}")
        if not jnp.issubdtype(tokens.dtype, jnp.integer):
            raise UserError(f"tokens must be integers, got {tokens.dtype}")
        if not isinstance(tokens, jax.Array):
            check_tokens(tokens, self.codebook_size)
        if lengths is None:
            lengths = np.full((tokens.shape[0],), tokens.shape[2], np.int32)
        self._check_lengths(lengths, (tokens.shape[0], tokens.shape[2]), self.config.min_tokens(), "frames")
        audio, alen = self._decode(self.params, jnp.asarray(tokens, jnp.int32), jnp.asarray(lengths, jnp.int32),
                                   isolate)
        return (audio[0], alen[0]) if squeeze else (audio, alen)

    def stream_decode(self, window: int | None = None):
        """Exact streaming decode: ``s.push(tokens [num_codebooks, n])`` -> the audio that is final so far,
        ``s.flush()`` -> the rest; concatenated, ``decode(tokens, isolate=True)`` of the whole sequence
        (``jaxvoc.models.codec_stream``). Latency ``s.latency_ms``."""
        from jaxvoc.models import codec_stream

        return codec_stream.stream_decode(self, window or codec_stream.DEFAULT_DECODE_WINDOW)

    def encode_long(self, audio, window: int | None = None) -> np.ndarray:
        """audio [N] -> tokens [num_codebooks, frames] identical to encoding it whole, through windows of
        ``window`` frames (one program, the memory of one window); ``jaxvoc encode --window``."""
        from jaxvoc.models import codec_stream

        return codec_stream.encode_long(self, audio, window or codec_stream.DEFAULT_ENCODE_WINDOW)

    def _check_lengths(self, lengths, shape, minimum: int, unit: str) -> None:
        if isinstance(lengths, jax.core.Tracer):
            return
        lengths = np.asarray(lengths)
        if lengths.shape != (shape[0],):
            raise UserError(f"lengths must have shape ({shape[0]},), got {lengths.shape}")
        if np.any(lengths > shape[-1]) or np.any(lengths < minimum):
            raise UserError(f"lengths must lie in [{minimum}, {shape[-1]}] {unit} (the model needs at least "
                            f"{minimum} {unit}), got {lengths.tolist()}")


def check_tokens(tokens: np.ndarray, codebook_size: int, source: str = "tokens") -> None:
    """Out-of-range tokens are an error (NeMo would silently wrap them)."""
    if tokens.size and (tokens.min() < 0 or tokens.max() >= codebook_size):
        bad = tokens[(tokens < 0) | (tokens >= codebook_size)]
        raise UserError(f"{source} holds {bad.size} token(s) outside [0, {codebook_size - 1}] (e.g. {int(bad[0])}); "
                        "they were not made by this model")
