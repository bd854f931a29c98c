"""The discriminators NeMo trains its audio codecs with (nemo_toolkit 3.0.0, Apache-2.0): NeMo's ``Discriminator``
wrapper over the members its config lists, of which jaxvoc has

* ``audio_codec_modules.MultiPeriodDiscriminator``: BigVGAN's period discriminator with NeMo's reflect-padded
  ``Conv2dNorm`` (:class:`jaxvoc.models.discriminators.DiscriminatorP` with ``nemo=True``);
* ``encodec_modules.MultiResolutionDiscriminatorSTFT``: one :class:`DiscriminatorSTFT` per resolution, on the
  complex STFT (``torch.stft(normalized=True, center=True)``, symmetric Hann window; real and imaginary parts
  as two channels), a stack of reflect-padded weight-normed 2D convs dilated along time (1, 2, 4);
* ``audio_codec_modules.SLMDiscriminator``: audio resampled to the SLM's rate (torchaudio's ``Resample``
  defaults, :func:`jaxvoc.dsp.resample.resample`), a frozen WavLM (:mod:`jaxvoc.models.wavlm`, eval mode) whose
  hidden states (all of them) are stacked as channels, and a weight-normed Conv1d head.

Every discriminator maps audio ``[B, T]`` to ``(scores, fmaps)``: a list of score tensors and, per score, the
list of its feature maps, in NeMo's order (the wrapper concatenates its members' lists). NeMo's ``forward(real,
gen)`` is two such calls. Layouts are channels-last: a 2D feature map NeMo holds ``[B, C, H, W]`` is ``[B, H,
W, C]`` here, an SLM feature map NeMo's ``[B, C, T, 1]`` is ``[B, T, C]``; scores are NeMo's with the channel
axis last (MPD ``[B, T', period]``, STFT ``[B, T_spec, F']``, SLM ``[B, T, 1]``). Every loss NeMo applies to
them is a mean, so the layout does not change a loss.

The frozen WavLM is not a parameter of the discriminator: its weights come from their own converted checkpoint
(``jaxvoc convert wavlm``) and are passed to the call (``wavlm_params``), under ``stop_gradient``; gradients
still flow through it to the audio (the generator's).

Parameter names mirror NeMo's state dict under ``discriminator.`` (``discriminators.1.discriminators.0.
conv_layers.2.conv.parametrizations.weight.original1`` is ``discriminators_1/discriminators_0/conv_layers_2/
conv/weight_v``); see :mod:`conversion.codec`.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvoc.dsp.resample import resample
from jaxvoc.dsp.stft import center_pad, stft
from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass
from jaxvoc.models.discriminators import LRELU_SLOPE, Conv2dNorm, DiscriminatorP, leaky_relu
from jaxvoc.models.wavlm import WavLM, WavLMConfig
from jaxvoc.nn.conv import Conv1d

Array = jax.Array
Output = tuple[list[Array], list[list[Array]]]

_MODULES = "nemo.collections.tts.modules."


# ----------------------------------------------------------------------------------------------------------
# Configs: the members of NeMo's ``discriminator`` section (argument names and defaults as NeMo's)


@dataclasses.dataclass(frozen=True)
class MPDConfig:
    periods: tuple[int, ...] = dataclasses.field(default=(2, 3, 5, 7, 11), metadata={"min": 1})
    lrelu_slope: float = LRELU_SLOPE


@dataclasses.dataclass(frozen=True)
class STFTDiscConfig:
    resolutions: tuple[tuple[int, int, int], ...] = dataclasses.field(metadata={"min": 1})

    def validate(self, source: str) -> None:
        for n_fft, _, win in self.resolutions:
            if win > n_fft:
                raise UserError(f"{source}: an STFT resolution has window {win} > n_fft {n_fft}")


@dataclasses.dataclass(frozen=True)
class SLMConfig:
    slm_model_name: str = "microsoft/wavlm-base-plus"
    slm_sr: int = dataclasses.field(default=16000, metadata={"min": 1})
    input_sr: int = dataclasses.field(default=22050, metadata={"min": 1})
    slm_hidden: int = dataclasses.field(default=768, metadata={"min": 1})
    slm_layers: int = dataclasses.field(default=13, metadata={"min": 1})
    initial_channel: int = dataclasses.field(default=64, metadata={"min": 1})
    use_spectral_norm: bool = False

    def validate(self, source: str) -> None:
        if self.use_spectral_norm:
            raise UserError(f"{source}: SLMDiscriminator with use_spectral_norm is not supported; set it to false")

    def check_wavlm(self, wavlm: WavLMConfig, source: str = "WavLM") -> None:
        """The head's input width is slm_layers x slm_hidden: the WavLM given must make exactly that."""
        if (wavlm.num_hidden_layers + 1, wavlm.hidden_size) != (self.slm_layers, self.slm_hidden):
            raise UserError(f"{source}: this WavLM has {wavlm.num_hidden_layers + 1} hidden states of "
                            f"{wavlm.hidden_size}, the SLM discriminator expects {self.slm_layers} of "
                            f"{self.slm_hidden}; give the WavLM the codec was trained with ({self.slm_model_name})")


# NeMo's classes by their module's last part and name (audio_codec_modules also has a
# MultiResolutionDiscriminatorSTFT, the multi-band kind, which computes something else)
MEMBERS = {"audio_codec_modules.MultiPeriodDiscriminator": MPDConfig,
           "encodec_modules.MultiResolutionDiscriminatorSTFT": STFTDiscConfig,
           "audio_codec_modules.SLMDiscriminator": SLMConfig}
WRAPPER = "audio_codec_modules.Discriminator"


def _short_target(target: str) -> str:
    if not target.startswith(_MODULES):
        return target
    return target[len(_MODULES):]


@dataclasses.dataclass(frozen=True)
class CodecDiscriminatorConfig:
    """NeMo's ``discriminator`` config section: ``Discriminator(discriminators=[...])`` (or one member alone),
    as a tuple of member configs in NeMo's order."""

    members: tuple[Any, ...]

    @classmethod
    def from_dict(cls, section: Any, source: str = "model_config.yaml") -> "CodecDiscriminatorConfig":
        if not isinstance(section, dict) or "_target_" not in section:
            raise UserError(f"{source}: 'discriminator' has no _target_; give a NeMo AudioCodecModel config")
        target = _short_target(str(section["_target_"]))
        items = section.get("discriminators") if target == WRAPPER else [section]
        if target == WRAPPER and (set(section) - {"_target_", "discriminators"} or not isinstance(items, list)
                                  or not items):
            raise UserError(f"{source}: discriminator ({WRAPPER}) takes one argument, a non-empty list "
                            "'discriminators'")
        members = []
        for i, item in enumerate(items):
            where = f"discriminator.discriminators.{i}" if target == WRAPPER else "discriminator"
            if not isinstance(item, dict) or "_target_" not in item:
                raise UserError(f"{source}: {where} has no _target_")
            name = _short_target(str(item["_target_"]))
            if name not in MEMBERS:
                raise UserError(f"{source}: {where} {item['_target_']} is not supported by jaxvoc (supported: "
                                f"{', '.join(_MODULES + m for m in MEMBERS)})")
            args = {k: v for k, v in item.items() if k != "_target_"}
            members.append(load_dataclass(MEMBERS[name], args, source, prefix=f"{where}.",
                                          what=f"{name.rpartition('.')[2]} argument"))
        return cls(tuple(members))

    @property
    def slm(self) -> SLMConfig | None:
        """The SLM discriminator's config (None without one); jaxvoc supports at most one."""
        found = [m for m in self.members if isinstance(m, SLMConfig)]
        return found[0] if found else None


# ----------------------------------------------------------------------------------------------------------
# Modules


class MultiPeriodDiscriminator(nn.Module):
    config: MPDConfig

    @nn.compact
    def __call__(self, x: Array, wavlm_params: Any = None) -> Output:
        outs = [DiscriminatorP(p, lrelu_slope=self.config.lrelu_slope, nemo=True, name=f"discriminators_{i}")(x)
                for i, p in enumerate(self.config.periods)]
        return [o for o, _ in outs], [f for _, f in outs]


def complex_stft_channels(x: Array, n_fft: int, hop: int, win: int) -> Array:
    """encodec DiscriminatorSTFT.stft: torch.stft(center=True, reflect, symmetric Hann, normalized=True) as
    [B, frames, n_fft//2+1, 2] (real, imaginary)."""
    spec = stft(center_pad(x, n_fft), n_fft, hop, win, window="hann_symmetric")
    spec = spec * jnp.asarray(n_fft ** -0.5, x.dtype)
    return jnp.stack([jnp.real(spec), jnp.imag(spec)], axis=-1)


class DiscriminatorSTFT(nn.Module):
    """encodec_modules.DiscriminatorSTFT: complex STFT -> 5 reflect-padded weight-normed convs (the middle three
    stride 2 along frequency, dilated 1, 2, 4 along time) with leaky ReLU, then a 3x3 conv to one channel."""

    resolution: tuple[int, int, int]
    lrelu_slope: float = LRELU_SLOPE
    filters: int = 32

    @nn.compact
    def __call__(self, x: Array) -> tuple[Array, list[Array]]:
        out = complex_stft_channels(x, *self.resolution)
        f = self.filters
        layers = [((3, 9), (1, 1), (1, 1)), ((3, 9), (1, 2), (1, 1)), ((3, 9), (1, 2), (2, 1)),
                  ((3, 9), (1, 2), (4, 1)), ((3, 3), (1, 1), (1, 1))]
        fmap = []
        for i, (k, s, d) in enumerate(layers):
            out = leaky_relu(Conv2dNorm(f, k, s, d, name=f"conv_layers_{i}")(out), self.lrelu_slope)
            fmap.append(out)
        scores = Conv2dNorm(1, (3, 3), name="conv_post")(out)
        fmap.append(scores)
        return scores[..., 0], fmap


class MultiResolutionDiscriminatorSTFT(nn.Module):
    config: STFTDiscConfig

    @nn.compact
    def __call__(self, x: Array, wavlm_params: Any = None) -> Output:
        outs = [DiscriminatorSTFT(tuple(r), name=f"discriminators_{i}")(x)
                for i, r in enumerate(self.config.resolutions)]
        return [o for o, _ in outs], [f for _, f in outs]


class SLMDiscriminator(nn.Module):
    """audio -> resample(input_sr -> slm_sr) -> frozen WavLM's hidden states, stacked as channels (state l,
    channel h at l * slm_hidden + h, NeMo's order) -> ``pre`` (1x1) -> three k=5 convs with leaky ReLU 0.1 (the
    feature maps) -> ``conv_post`` (k=3); all weight-normed. One score tensor, one list of feature maps."""

    config: SLMConfig
    wavlm: WavLMConfig | None = None

    @nn.compact
    def __call__(self, x: Array, wavlm_params: Any = None) -> Output:
        c = self.config
        if self.wavlm is None or wavlm_params is None:
            if not self.is_initializing():
                raise ValueError("the SLM discriminator needs WavLM: give its config (wavlm=) and wavlm_params")
            h = jnp.zeros((x.shape[0], 4, c.slm_layers * c.slm_hidden), x.dtype)  # the head's shapes only
        else:
            c.check_wavlm(self.wavlm)
            y = resample(x, c.input_sr, c.slm_sr)
            states = WavLM(self.wavlm).apply({"params": jax.lax.stop_gradient(wavlm_params)}, y)
            h = jnp.stack(states, axis=2)  # [B, T, L, H]
            h = h.reshape(*h.shape[:2], -1)
        h = Conv1d(c.initial_channel, 1, weight_norm=True, name="pre")(h)
        fmap = []
        for i, ch in enumerate((2 * c.initial_channel, 4 * c.initial_channel, 4 * c.initial_channel)):
            h = leaky_relu(Conv1d(ch, 5, padding=2, weight_norm=True, name=f"convs_{i}")(h))
            fmap.append(h)
        h = Conv1d(1, 3, padding=1, weight_norm=True, name="conv_post")(h)
        return [h], [fmap]


class CodecDiscriminator(nn.Module):
    """NeMo's ``Discriminator``: every member on the same audio, their score and feature-map lists concatenated
    in the config's order. ``wavlm`` is the SLM's WavLM config (needed when the config has an SLM member)."""

    config: CodecDiscriminatorConfig
    wavlm: WavLMConfig | None = None

    @nn.compact
    def __call__(self, x: Array, wavlm_params: Any = None) -> Output:
        scores, fmaps = [], []
        for i, m in enumerate(self.config.members):
            name = f"discriminators_{i}"
            if isinstance(m, MPDConfig):
                d = MultiPeriodDiscriminator(m, name=name)
            elif isinstance(m, STFTDiscConfig):
                d = MultiResolutionDiscriminatorSTFT(m, name=name)
            else:
                d = SLMDiscriminator(m, self.wavlm, name=name)
            s, f = d(x, wavlm_params)
            scores += s
            fmaps += f
        return scores, fmaps


def init_params(config: CodecDiscriminatorConfig, seed: int = 0, num_samples: int = 8192) -> Any:
    """Fresh parameters (torch's default init of the convolutions; weight norm's gain = ||v||). WavLM is no
    parameter of the discriminator, so none is needed here."""
    x = jnp.zeros((1, num_samples), jnp.float32)
    return CodecDiscriminator(config).init(jax.random.PRNGKey(seed), x)["params"]
