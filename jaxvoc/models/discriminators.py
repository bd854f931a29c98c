"""BigVGAN's discriminators (v1 and v2): MultiPeriodDiscriminator (MPD), MultiResolutionDiscriminator (MRD,
v1) and MultiScaleSubbandCQTDiscriminator (CQTD, v2), following NVIDIA's ``bigvgan/discriminators.py`` (MIT).

Each discriminator module maps audio ``[B, T]`` to ``(outputs, fmaps)``: one score tensor per
sub-discriminator and, per sub-discriminator, the list of its feature maps (what the official ``forward``
returns for one signal; the official ``forward(y, y_hat)`` is two such calls). Layout is channels-last
``[B, H, W, C]`` with torch's spatial order (H, W) kept, so kernels map as [out, in, kh, kw] -> [kh, kw, in,
out]. Sub-module names mirror the official state-dict names (``discriminators_0/convs_1`` is
``discriminators.0.convs.1``).

The CQT of CQTD is nnAudio's ``CQT2010v2`` (time-domain kernels of the top octave, applied to the signal
and to successive 2x low-passed copies of it), preceded by torchaudio's 2x sinc resampling (:mod:`jaxvoc.dsp.cqt`, :mod:`jaxvoc.dsp.resample`).
"""

from __future__ import annotations

import dataclasses

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvoc.dsp.cqt import CQTPlan, cqt, cqt_plan
from jaxvoc.dsp.resample import resample
from jaxvoc.dsp.stft import magnitude, stft
from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass
from jaxvoc.nn.conv import Conv2d, get_padding

Array = jax.Array
LRELU_SLOPE = 0.1
CIN_BLOCK = 16  # NeMo's Conv2dNorm: input channels summed in blocks (see jaxvoc.nn.conv.conv2d)


@dataclasses.dataclass(frozen=True)
class DiscriminatorConfig:
    """The discriminator keys of an official BigVGAN config.json (names and defaults as the official code)."""

    sampling_rate: int = dataclasses.field(metadata={"min": 1})
    mpd_reshapes: tuple[int, ...] = dataclasses.field(metadata={"min": 1})
    use_spectral_norm: bool
    discriminator_channel_mult: float
    resolutions: tuple[tuple[int, int, int], ...] | None = dataclasses.field(default=None,  # MRD (v1)
                                                                            metadata={"min": 1})
    mrd_use_spectral_norm: bool | None = None  # overrides use_spectral_norm for MRD when present
    mrd_channel_mult: float | None = None  # overrides discriminator_channel_mult for MRD when present
    use_cqtd_instead_of_mrd: bool = False
    use_mbd_instead_of_mrd: bool = False
    cqtd_filters: int = 32
    cqtd_max_filters: int = 1024
    cqtd_filters_scale: int = 1
    cqtd_dilations: tuple[int, ...] = (1, 2, 4)
    cqtd_in_channels: int = 1
    cqtd_out_channels: int = 1
    cqtd_hop_lengths: tuple[int, ...] = (512, 256, 256)
    cqtd_n_octaves: tuple[int, ...] = (9, 9, 9)
    cqtd_bins_per_octaves: tuple[int, ...] = (24, 36, 48)
    cqtd_normalize_volume: bool = False

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "DiscriminatorConfig":
        """From the official flat config.json, whose other keys (generator, training) are passed over."""
        return load_dataclass(cls, d, source, keep_unknown=True, what="discriminator key",
                              hint="give the official BigVGAN config.json (with its training section)")

    def validate(self, source: str = "config") -> None:
        if self.use_mbd_instead_of_mrd:
            raise UserError(f"{source}: use_mbd_instead_of_mrd (MultiBandDiscriminator) is not supported; "
                            "use the MRD (v1) or CQTD (v2) configuration")
        if self.use_spectral_norm or (not self.use_cqtd_instead_of_mrd and self.mrd_spectral_norm):
            raise UserError(f"{source}: spectral-normed discriminators (use_spectral_norm / mrd_use_spectral_norm) "
                            "are not supported (no official BigVGAN config uses them); set them to false")
        if self.use_cqtd_instead_of_mrd:
            n = len(self.cqtd_hop_lengths)
            if len(self.cqtd_n_octaves) != n or len(self.cqtd_bins_per_octaves) < n:
                raise UserError(f"{source}: cqtd_hop_lengths, cqtd_n_octaves and cqtd_bins_per_octaves differ "
                                "in length")
            if self.cqtd_in_channels != 1:
                raise UserError(f"{source}: cqtd_in_channels must be 1 (the official CQT takes mono audio)")
            if min(self.cqtd_filters_scale * self.cqtd_filters, self.cqtd_max_filters) != self.cqtd_filters:
                raise UserError(f"{source}: with these cqtd_filters / cqtd_filters_scale / cqtd_max_filters the "
                                "official CQTD's layer widths do not fit together; use cqtd_filters_scale 1")
            for hop, octs in zip(self.cqtd_hop_lengths, self.cqtd_n_octaves):
                if hop % (2 ** (octs - 1)):
                    raise UserError(f"{source}: cqtd hop length {hop} is not divisible by 2^(n_octaves-1) = "
                                    f"{2 ** (octs - 1)}")
        else:
            if not self.resolutions or len(self.resolutions) != 3 or any(len(r) != 3 for r in self.resolutions):
                raise UserError(f"{source}: MRD needs `resolutions`, three [n_fft, hop, win] triples (or set "
                                "use_cqtd_instead_of_mrd)")

    @property
    def mrd_spectral_norm(self) -> bool:
        return self.use_spectral_norm if self.mrd_use_spectral_norm is None else self.mrd_use_spectral_norm

    @property
    def mrd_mult(self) -> float:
        return self.discriminator_channel_mult if self.mrd_channel_mult is None else self.mrd_channel_mult


def leaky_relu(x: Array, slope: float = LRELU_SLOPE) -> Array:
    """F.leaky_relu(x, slope) (0.1 by default), with torch's gradient at 0 (the slope)."""
    return jnp.where(x > 0, x, slope * x)


def _pad_reflect_right(x: Array, n: int) -> Array:
    return jnp.pad(x, ((0, 0), (0, n)), mode="reflect") if n else x


# ----------------------------------------------------------------------------------------------------------
# MPD


class Conv2dNorm(nn.Module):
    """NeMo's Conv2dNorm (``audio_codec_modules``): a weight-normed Conv2d with "same" padding per axis
    (``get_padding(kernel, dilation)``) in **reflect** mode, its conv the sub-module ``conv``."""

    features: int
    kernel_size: tuple[int, int]
    stride: tuple[int, int] = (1, 1)
    dilation: tuple[int, int] = (1, 1)

    @nn.compact
    def __call__(self, x: Array) -> Array:
        pad = tuple(get_padding(k, d) for k, d in zip(self.kernel_size, self.dilation))
        return Conv2d(self.features, self.kernel_size, stride=self.stride, dilation=self.dilation, padding=pad,
                      padding_mode="reflect", cin_block=CIN_BLOCK, weight_norm=True, name="conv")(x)


class DiscriminatorP(nn.Module):
    """Audio folded into [T/period, period]; 2D convs with (k, 1) kernels along time.

    ``nemo=True`` is NeMo's PeriodDiscriminator (the codec's MPD), which differs only in its convolutions: NeMo's
    :class:`Conv2dNorm` (reflect padding instead of zeros; state-dict names ``conv_layers.N.conv.*`` and
    ``conv_post.conv.*``), and its score keeps the period axis: ``[B, T', period]`` (NeMo's ``[B, period, T']``
    transposed) instead of BigVGAN's flattened ``[B, T' * period]``."""

    period: int
    d_mult: float = 1.0
    kernel_size: int = 5
    stride: int = 3
    lrelu_slope: float = LRELU_SLOPE
    nemo: bool = False

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, list[Array]]:
        B, T = x.shape
        p = self.period
        if T % p:
            x = _pad_reflect_right(x, p - T % p)
        x = x.reshape(B, -1, p, 1)
        k, s, m = self.kernel_size, self.stride, self.d_mult

        def conv(features, kernel, stride, name):
            if self.nemo:
                return Conv2dNorm(features, kernel, stride, name=name)
            return Conv2d(features, kernel, stride=stride, padding=(kernel[0] // 2, 0), weight_norm=True, name=name)

        chans = [int(32 * m), int(128 * m), int(512 * m), int(1024 * m), int(1024 * m)]
        fmap = []
        for i, c in enumerate(chans):
            last = i == len(chans) - 1
            x = conv(c, (k, 1), (1, 1) if last else (s, 1), f"conv_layers_{i}" if self.nemo else f"convs_{i}")(x)
            x = leaky_relu(x, self.lrelu_slope)
            fmap.append(x)
        x = conv(1, (3, 1), (1, 1), "conv_post")(x)
        fmap.append(x)
        return (x[..., 0] if self.nemo else x.reshape(B, -1)), fmap


class MultiPeriodDiscriminator(nn.Module):
    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[list[Array], list[list[Array]]]:
        return _run_each([DiscriminatorP(p, self.config.discriminator_channel_mult, name=f"discriminators_{i}")
                          for i, p in enumerate(self.config.mpd_reshapes)], x)


def _run_each(discs: list[nn.Module], x: Array) -> tuple[list[Array], list[list[Array]]]:
    """The sub-discriminators of a group on the same audio: (outputs, feature maps), one entry per member."""
    results = [d(x) for d in discs]
    return [o for o, _ in results], [f for _, f in results]


# ----------------------------------------------------------------------------------------------------------
# MRD (v1)


def resolution_magnitude(x: Array, n_fft: int, hop: int, win: int) -> Array:
    """DiscriminatorR.spectrogram: reflect pad (n_fft-hop)/2, torch.stft(center=False, rectangular window),
    magnitude -> [B, n_fft//2+1, frames] (frequency first, as the official [B, F, TT])."""
    pad = int((n_fft - hop) / 2)
    x = jnp.pad(x, ((0, 0), (pad, pad)), mode="reflect")
    return jnp.swapaxes(magnitude(stft(x, n_fft, hop, win, window="rect")), 1, 2)


class DiscriminatorR(nn.Module):
    resolution: tuple[int, int, int]
    d_mult: float

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, list[Array]]:
        B = x.shape[0]
        x = resolution_magnitude(x, *self.resolution)[..., None]  # [B, F, TT, 1]
        c = int(32 * self.d_mult)
        layers = [((3, 9), (1, 1), (1, 4)), ((3, 9), (1, 2), (1, 4)), ((3, 9), (1, 2), (1, 4)),
                  ((3, 9), (1, 2), (1, 4)), ((3, 3), (1, 1), (1, 1))]
        fmap = []
        for i, (k, s, p) in enumerate(layers):
            x = leaky_relu(Conv2d(c, k, stride=s, padding=p, weight_norm=True, name=f"convs_{i}")(x))
            fmap.append(x)
        x = Conv2d(1, (3, 3), padding=(1, 1), weight_norm=True, name="conv_post")(x)
        fmap.append(x)
        return x.reshape(B, -1), fmap


class MultiResolutionDiscriminator(nn.Module):
    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[list[Array], list[list[Array]]]:
        return _run_each([DiscriminatorR(tuple(r), self.config.mrd_mult, name=f"discriminators_{i}")
                          for i, r in enumerate(self.config.resolutions)], x)


# ----------------------------------------------------------------------------------------------------------
# CQTD (v2)


def _2d_padding(kernel: tuple[int, int], dilation: tuple[int, int] = (1, 1)) -> tuple[int, int]:
    return ((kernel[0] - 1) * dilation[0]) // 2, ((kernel[1] - 1) * dilation[1]) // 2


class DiscriminatorCQT(nn.Module):
    config: DiscriminatorConfig
    hop_length: int
    n_octaves: int
    bins_per_octave: int

    @property
    def plan(self) -> CQTPlan:
        return cqt_plan(float(self.config.sampling_rate * 2), self.hop_length,
                        self.bins_per_octave * self.n_octaves, self.bins_per_octave)

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, list[Array]]:
        c = self.config
        if c.cqtd_normalize_volume:
            x = x - jnp.mean(x, axis=-1, keepdims=True)
            x = 0.8 * x / (jnp.max(jnp.abs(x), axis=-1, keepdims=True) + 1e-9)
        x = resample(x, c.sampling_rate, c.sampling_rate * 2)
        z = cqt(x, self.plan)  # [B, T, W, 2]: (real, imag) as the channels (the official "amplitude", "phase")
        k = (3, 9)
        bpo = self.bins_per_octave
        z = jnp.concatenate([
            Conv2d(c.cqtd_in_channels * 2, k, padding=_2d_padding(k), name=f"conv_pres_{i}")(
                z[:, :, i * bpo:(i + 1) * bpo]) for i in range(self.n_octaves)], axis=2)
        fmap = []
        z = leaky_relu(Conv2d(c.cqtd_filters, k, padding=_2d_padding(k), name="convs_0")(z))
        fmap.append(z)
        for i, d in enumerate(c.cqtd_dilations):
            out = min(c.cqtd_filters_scale ** (i + 1) * c.cqtd_filters, c.cqtd_max_filters)
            z = Conv2d(out, k, stride=(1, 2), dilation=(d, 1), padding=_2d_padding(k, (d, 1)), weight_norm=True,
                       name=f"convs_{i + 1}")(z)
            z = leaky_relu(z)
            fmap.append(z)
        out = min(c.cqtd_filters_scale ** (len(c.cqtd_dilations) + 1) * c.cqtd_filters, c.cqtd_max_filters)
        z = leaky_relu(Conv2d(out, (3, 3), padding=(1, 1), weight_norm=True,
                              name=f"convs_{len(c.cqtd_dilations) + 1}")(z))
        fmap.append(z)
        z = Conv2d(c.cqtd_out_channels, (3, 3), padding=(1, 1), weight_norm=True, name="conv_post")(z)
        return z, fmap


class MultiScaleSubbandCQTDiscriminator(nn.Module):
    config: DiscriminatorConfig

    @nn.compact
    def __call__(self, x: Array) -> tuple[list[Array], list[list[Array]]]:
        c = self.config
        return _run_each([DiscriminatorCQT(c, hop, n_oct, bpo, name=f"discriminators_{i}") for i, (hop, n_oct, bpo)
                          in enumerate(zip(c.cqtd_hop_lengths, c.cqtd_n_octaves, c.cqtd_bins_per_octaves))], x)


def second_discriminator(config: DiscriminatorConfig) -> nn.Module:
    """The discriminator the official train.py pairs with MPD (its variable and checkpoint key `mrd`): CQTD
    when use_cqtd_instead_of_mrd, else MRD."""
    if config.use_cqtd_instead_of_mrd:
        return MultiScaleSubbandCQTDiscriminator(config)
    return MultiResolutionDiscriminator(config)


def discriminators(config: DiscriminatorConfig) -> dict[str, nn.Module]:
    """{'mpd': MPD, 'mrd': MRD or CQTD}: the official train.py's two discriminator groups, by checkpoint key."""
    return {"mpd": MultiPeriodDiscriminator(config), "mrd": second_discriminator(config)}


def init_params(config: DiscriminatorConfig, seed: int = 0, num_samples: int = 8192) -> dict:
    """Fresh parameters {'mpd': ..., 'mrd': ...}, initialised as torch initialises the official modules."""
    x = jnp.zeros((1, num_samples), jnp.float32)
    keys = jax.random.split(jax.random.PRNGKey(seed), 2)
    return {name: m.init(k, x)["params"] for (name, m), k in zip(discriminators(config).items(), keys)}
