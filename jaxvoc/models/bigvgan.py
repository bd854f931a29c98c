"""BigVGAN (v1 and v2) generator: mel [B, frames, num_mels] -> waveform [B, frames * hop_size].

Follows NVIDIA's ``bigvgan`` package (MIT): a weight-normed conv, then per up-sampling stage a transposed
conv followed by the mean of several AMP residual blocks (anti-aliased Snake/SnakeBeta activations and dilated
convs), then an anti-aliased activation, a conv to one channel, and tanh (or a clamp to [-1, 1]).

Sub-module names mirror the official state-dict names (``ups_0_0`` is ``ups.0.0``), so conversion is a
mechanical rename. Layout is channels-last throughout.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvoc.dsp.stft import MelConfig
from jaxvoc.models.base import folded, from_checkpoint
from jaxvoc.models.vocoder import Vocoder
from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass, read_json
from jaxvoc.nn.activations import Activation1d
from jaxvoc.nn.conv import Conv1d, ConvTranspose1d, get_padding, zero_past

Array = jax.Array


_POS = {"min": 1}
# the official config.json's other keys (training and discriminator settings): kept in ``extra`` as they are
OFFICIAL_OTHER_KEYS = frozenset((
    "num_gpus", "batch_size", "learning_rate", "adam_b1", "adam_b2", "lr_decay", "seed", "training_epochs",
    "segment_size", "num_freq", "fmax_for_loss", "num_workers", "dist_config", "clip_grad_norm",
    "use_multiscale_melloss", "lambda_melloss", "mpd_reshapes", "use_spectral_norm", "discriminator_channel_mult",
    "resolutions", "mrd_use_spectral_norm", "mrd_channel_mult", "use_cqtd_instead_of_mrd", "use_mbd_instead_of_mrd",
    "cqtd_filters", "cqtd_max_filters", "cqtd_filters_scale", "cqtd_dilations", "cqtd_in_channels",
    "cqtd_out_channels", "cqtd_hop_lengths", "cqtd_n_octaves", "cqtd_bins_per_octaves", "cqtd_normalize_volume"))


def _normal(std: float):
    return nn.initializers.normal(stddev=std)


@dataclasses.dataclass(frozen=True)
class BigVGANConfig:
    """The official config.json, generator and mel fields (names unchanged). The other keys are kept in
    ``extra`` (training settings, discriminator settings) so a round trip writes the file back whole."""

    num_mels: int = dataclasses.field(metadata=_POS)
    upsample_rates: tuple[int, ...] = dataclasses.field(metadata=_POS)
    upsample_kernel_sizes: tuple[int, ...] = dataclasses.field(metadata=_POS)
    upsample_initial_channel: int = dataclasses.field(metadata=_POS)
    resblock: Literal["1", "2"]
    resblock_kernel_sizes: tuple[int, ...] = dataclasses.field(metadata=_POS)
    resblock_dilation_sizes: tuple[tuple[int, ...], ...] = dataclasses.field(metadata=_POS)
    activation: Literal["snake", "snakebeta"] = "snakebeta"
    snake_logscale: bool = True
    use_tanh_at_final: bool = True  # official default when the key is absent (v1 configs)
    use_bias_at_final: bool = True  # likewise
    sampling_rate: int = dataclasses.field(default=24000, metadata=_POS)
    n_fft: int = dataclasses.field(default=1024, metadata=_POS)
    hop_size: int = dataclasses.field(default=256, metadata=_POS)
    win_size: int = dataclasses.field(default=1024, metadata=_POS)
    fmin: float = 0
    fmax: float | None = None
    # jaxvoc's own key: the anti-aliasing low-pass taps as stored (float32) in the converted checkpoint
    jaxvoc_antialias_filter: tuple[float, ...] | None = None
    extra: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), metadata={"extra": True})

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "BigVGANConfig":
        return load_dataclass(cls, d, source, keep_unknown=True, ignore=OFFICIAL_OTHER_KEYS, what="BigVGAN key",
                              hint="give the config.json that came with the model")

    @classmethod
    def from_json(cls, path: str) -> "BigVGANConfig":
        return cls.from_dict(read_json(path, "config", "give the model's config.json"), path)

    @classmethod
    def official(cls, name: str) -> "BigVGANConfig":
        """One of the configs published with the official models, e.g. 'bigvgan_v2_24khz_100band_256x'."""
        path = official_config_path(name)
        if not os.path.exists(path):
            raise UserError(f"unknown official BigVGAN config {name!r}; known: {', '.join(official_configs())}")
        return cls.from_json(path)

    def to_dict(self) -> dict:
        d = dict(self.extra)
        for f in dataclasses.fields(self):
            v = getattr(self, f.name)
            if f.name != "extra" and not (f.name == "jaxvoc_antialias_filter" and v is None):
                d[f.name] = [list(x) for x in v] if f.name == "resblock_dilation_sizes" else (
                    list(v) if isinstance(v, tuple) else v)
        return d

    def validate(self, source: str = "config") -> None:
        """Rules across fields (the types and ranges are checked by :func:`load_dataclass`)."""
        if len(self.upsample_rates) != len(self.upsample_kernel_sizes):
            raise UserError(f"{source}: upsample_rates and upsample_kernel_sizes differ in length")
        if len(self.resblock_kernel_sizes) != len(self.resblock_dilation_sizes):
            raise UserError(f"{source}: resblock_kernel_sizes and resblock_dilation_sizes differ in length")
        hop = 1
        for r in self.upsample_rates:
            hop *= r
        if hop != self.hop_size:
            raise UserError(f"{source}: the product of upsample_rates ({hop}) differs from hop_size ({self.hop_size})")

    @property
    def mel(self) -> MelConfig:
        """The official log-mel front-end computed with an FFT: fast, for training batches and losses."""
        return MelConfig(sampling_rate=self.sampling_rate, n_fft=self.n_fft, num_mels=self.num_mels,
                         hop_size=self.hop_size, win_size=self.win_size, fmin=self.fmin, fmax=self.fmax,
                         padding="bigvgan")

    @property
    def synthesis_mel(self) -> MelConfig:
        """The same front-end with a direct DFT (jaxvoc.dsp.stft.dft), for the mels of synthesis inputs
        (``model.mel``, ``jaxvoc synth``): in the quiet bins of speech it is closer to a float64 computation
        than any float32 FFT, the official one included (docs/bigvgan.md); it costs ~n_fft multiply-adds per
        sample, nothing next to the generator."""
        return dataclasses.replace(self.mel, transform="dft")


CONFIG_FOLDER = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "bigvgan")


def official_config_path(name: str) -> str:
    """The path of a bundled official config.json, e.g. 'bigvgan_v2_24khz_100band_256x'."""
    return os.path.join(CONFIG_FOLDER, f"{name}.json")


def official_configs() -> list[str]:
    folder = CONFIG_FOLDER
    return sorted(f[:-5] for f in os.listdir(folder) if f.endswith(".json"))


def _act_conv(block, x: Array, ends: Array | None, act: str, conv: str, dilation: int) -> Array:
    """The unit of both AMP blocks: anti-aliased activation ``act``, then the weight-normed conv ``conv``
    ("same" zero padding at each item's end). Called inside a block's compact ``__call__``: the two
    sub-modules become that block's children under the official names."""
    k = block.kernel_size
    xt = Activation1d(beta=block.activation == "snakebeta", logscale=block.logscale, filter=block.filter,
                      name=act)(x, ends)
    return Conv1d(block.channels, k, dilation=dilation, padding=get_padding(k, dilation), weight_norm=True,
                  kernel_init=_normal(0.01), name=conv)(zero_past(xt, ends))


class _AMPBlock(nn.Module):
    """The settings both AMP blocks share (those of the official AMPBlock1/AMPBlock2 constructors)."""

    channels: int
    kernel_size: int
    dilation: Sequence[int]
    activation: str
    logscale: bool
    filter: tuple[float, ...] | None = None



class AMPBlock1(_AMPBlock):
    """Per dilation: act -> dilated conv -> act -> conv (dilation 1), added to the input."""

    @nn.compact
    def __call__(self, x: Array, ends: Array | None = None) -> Array:
        """``ends``: each item's valid length ([B] int; None: the whole tensor). The edge handling (zero
        padding of each conv, replicate padding of the resamplers) then happens at each item's own end."""
        for i, d in enumerate(self.dilation):
            xt = _act_conv(self, x, ends, f"activations_{2 * i}", f"convs1_{i}", d)
            x = _act_conv(self, xt, ends, f"activations_{2 * i + 1}", f"convs2_{i}", 1) + x
        return x


class AMPBlock2(_AMPBlock):
    """Per dilation: act -> dilated conv, added to the input."""

    @nn.compact
    def __call__(self, x: Array, ends: Array | None = None) -> Array:
        """``ends``: as :class:`AMPBlock1`'s."""
        for i, d in enumerate(self.dilation):
            x = _act_conv(self, x, ends, f"activations_{i}", f"convs_{i}", d) + x
        return x


class BigVGAN(nn.Module):
    """The generator. ``__call__(mel, lengths=None)``: mel [B, frames, num_mels] -> audio [B, frames *
    hop_size].

    ``lengths`` ([B] int, traced: one program per padded shape): each item's own number of frames. Item b's
    first ``lengths[b] * hop_size`` samples are then what the official model gives that item alone at its
    own length, whatever the mel holds past it (zero padding of every convolution and the resamplers'
    replicate padding happen at each item's end, at every stage's resolution); the samples past it are
    zero. ``None``: every item is the whole tensor (no masking at all)."""

    config: BigVGANConfig

    @nn.compact
    def __call__(self, mel: Array, lengths: Array | None = None) -> Array:
        h = self.config
        ends = None if lengths is None else jnp.asarray(lengths, jnp.int32)
        x = Conv1d(h.upsample_initial_channel, 7, padding=3, weight_norm=True, name="conv_pre")(zero_past(mel, ends))
        block = AMPBlock1 if h.resblock == "1" else AMPBlock2
        n_k = len(h.resblock_kernel_sizes)
        ch = h.upsample_initial_channel
        for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
            ch = h.upsample_initial_channel // (2 ** (i + 1))
            # a transposed conv's output before the item's end u * ends reads only inputs before ends once
            # those past it are zero (whatever the padding and output_padding crop off the front)
            x = ConvTranspose1d(ch, k, stride=u, padding=(k - u) // 2, weight_norm=True,
                                kernel_init=_normal(0.01), name=f"ups_{i}_0")(zero_past(x, ends))
            ends = None if ends is None else ends * u
            xs = None
            for j, (rk, rd) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes)):
                y = block(ch, rk, tuple(rd), h.activation, h.snake_logscale, h.jaxvoc_antialias_filter,
                          name=f"resblocks_{i * n_k + j}")(x, ends)
                xs = y if xs is None else xs + y
            x = xs / n_k
        x = Activation1d(beta=h.activation == "snakebeta", logscale=h.snake_logscale,
                         filter=h.jaxvoc_antialias_filter, name="activation_post")(x, ends)
        x = Conv1d(1, 7, padding=3, use_bias=h.use_bias_at_final, weight_norm=True,
                   kernel_init=_normal(0.01), name="conv_post")(zero_past(x, ends))
        x = jnp.tanh(x) if h.use_tanh_at_final else jnp.clip(x, -1.0, 1.0)
        return zero_past(x, ends)[..., 0]


def init_params(config: BigVGANConfig, seed: int = 0, frames: int = 8) -> dict:
    """Fresh (weight-normed) parameters, initialised as the official code does."""
    mel = jnp.zeros((1, frames, config.num_mels), jnp.float32)
    return BigVGAN(config).init(jax.random.PRNGKey(seed), mel)["params"]


class Pretrained(Vocoder):
    """A converted BigVGAN ready to call: ``model(mel, lengths=None)`` with mel [B, frames, num_mels] (or
    [frames, num_mels]) -> audio [B, frames * hop_size]; ``lengths`` [B]: each item's own frame count in a
    padded batch (see :class:`BigVGAN`). ``model.mel(audio)`` gives the matching log-mel. Weight norm is
    folded unless ``fold=False``."""

    kind = "bigvgan"

    def __init__(self, config: BigVGANConfig, params: Any, fold: bool = True, dtype: str = "float32"):
        super().__init__(config, folded(params) if fold else params, dtype)
        self.module = BigVGAN(config)

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, meta: dict, fold: bool = True, dtype: str = "float32") -> "Pretrained":
        return from_checkpoint(cls, BigVGANConfig, ckpt_dir, meta, fold, dtype=dtype)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.synthesis_mel

    def _synthesize(self, params, mels: Array, lengths: Array | None = None) -> Array:
        return self.module.apply({"params": params}, mels, lengths)
