"""WaveGlow (Prenger, Valle & Catanzaro 2018): a normalising flow from audio to Gaussian noise, conditioned on
a Tacotron2 log-mel. Follows NVIDIA's ``waveglow`` package (``glow.py``, BSD-3-Clause).

Audio is squeezed into groups of ``n_group`` samples (channels); each of ``n_flows`` flows is an invertible
1x1 convolution followed by an affine coupling whose scale and shift come from a WaveNet-like network (WN)
conditioned on the up-sampled mel. Every ``n_early_every`` flows, ``n_early_size`` channels leave the flow
early. Both directions are here:

* ``WaveGlow.__call__(mel, audio) -> (z, log_s terms, log_det_W terms)`` (training direction) and
  :func:`nll`, the official ``WaveGlowLoss(sigma)``;
* ``WaveGlow.infer(mel, sigma, noise=... | rng=...)`` (synthesis), and the :class:`Denoiser`.

Sub-module names mirror the official state-dict names (``WN_3`` / ``in_layers_2`` are ``WN.3`` /
``in_layers.2``). Layout is channels-last: mels ``[B, frames, n_mel_channels]``, squeezed audio and ``z``
``[B, audio_len / n_group, channels]``; the official code is channels-first.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.dsp.stft import MelConfig
from jaxvoc.dsp.tacotron import STFTConfig, stft_inverse, stft_transform
from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass, read_json, refuse_unknown
from jaxvoc.nn.conv import Conv1d, ConvTranspose1d, fold_weight_norm, zero_past
from jaxvoc.models.base import from_checkpoint
from jaxvoc.models.vocoder import Vocoder

Array = jax.Array

# The official model hard-codes the mel up-sampling: ConvTranspose1d(kernel 1024, stride 256).
UPSAMPLE_KERNEL = 1024
UPSAMPLE_STRIDE = 256


# ----------------------------------------------------------------------------------------------------------
# Config


_POS = {"min": 1}


@dataclasses.dataclass(frozen=True)
class WNConfig:
    n_layers: int = dataclasses.field(default=8, metadata=_POS)
    n_channels: int = dataclasses.field(default=256, metadata=_POS)
    kernel_size: int = dataclasses.field(default=3, metadata=_POS)


@dataclasses.dataclass(frozen=True)
class WaveGlowConfig:
    """The official ``waveglow_config`` (names unchanged; defaults are the published 256-channel model) plus
    the mel settings of ``data_config``. ``glow_old``: the model comes from ``glow_old.py`` (the first
    published checkpoints), whose odd flows condition on the second half of the channels and transform the
    first half (the current ``glow.py`` always conditions on the first half)."""

    n_mel_channels: int = dataclasses.field(default=80, metadata=_POS)
    n_flows: int = dataclasses.field(default=12, metadata=_POS)
    n_group: int = dataclasses.field(default=8, metadata=_POS)
    n_early_every: int = dataclasses.field(default=4, metadata=_POS)
    n_early_size: int = dataclasses.field(default=2, metadata={"min": 0})
    WN_config: WNConfig = WNConfig()
    glow_old: bool = False
    # data_config (Tacotron2's STFT settings)
    sampling_rate: int = dataclasses.field(default=22050, metadata=_POS)
    filter_length: int = dataclasses.field(default=1024, metadata=_POS)
    hop_length: int = 256
    win_length: int = dataclasses.field(default=1024, metadata=_POS)
    mel_fmin: float = 0.0
    mel_fmax: float | None = 8000.0

    MODEL_KEYS = ("n_mel_channels", "n_flows", "n_group", "n_early_every", "n_early_size", "WN_config")
    DATA_KEYS = ("sampling_rate", "filter_length", "hop_length", "win_length", "mel_fmin", "mel_fmax")

    @classmethod
    def from_dict(cls, d: dict, source: str = "config") -> "WaveGlowConfig":
        """Reads the official config.json (``{"waveglow_config": ..., "data_config": ...}``), either section
        alone, or the flat form :meth:`to_dict` writes."""
        if not isinstance(d, dict):
            raise UserError(f"{source} is not a JSON object; give the WaveGlow config.json")
        model = d.get("waveglow_config", d)
        data = d.get("data_config", d)
        if not isinstance(model, dict) or not isinstance(data, dict):
            raise UserError(f"{source}: waveglow_config / data_config must be objects")
        if not any(k in model for k in cls.MODEL_KEYS):
            raise UserError(f"{source} has no WaveGlow keys (waveglow_config with n_flows, n_group, ...); "
                            "give the config.json the model was trained with")
        if model is not d:  # a section of its own: every key is the model's
            refuse_unknown(model, cls.MODEL_KEYS, source, prefix="waveglow_config.")
        flat = {k: model[k] for k in cls.MODEL_KEYS if k in model}
        flat.update({k: data[k] for k in cls.DATA_KEYS if k in data})
        if "glow_old" in d:
            flat["glow_old"] = d["glow_old"]
        return load_dataclass(cls, flat, source)

    @classmethod
    def from_json(cls, path: str) -> "WaveGlowConfig":
        return cls.from_dict(read_json(path, "config", "give the WaveGlow config.json"), path)

    def to_dict(self) -> dict:
        """The official layout (``waveglow_config`` + ``data_config``), plus ``glow_old``."""
        model = {k: getattr(self, k) for k in self.MODEL_KEYS}
        model["WN_config"] = dataclasses.asdict(self.WN_config)
        return {"waveglow_config": model, "data_config": {k: getattr(self, k) for k in self.DATA_KEYS},
                "glow_old": self.glow_old}

    def validate(self, source: str = "config") -> None:
        def bad(msg):
            raise UserError(f"{source}: {msg}")

        wn = self.WN_config
        if min(self.n_mel_channels, self.n_flows, self.n_group, self.n_early_every, wn.n_layers,
               wn.n_channels, wn.kernel_size) < 1 or self.n_early_size < 0:
            bad("every WaveGlow size must be positive")
        if self.n_group % 2 or self.n_early_size % 2:
            bad(f"n_group ({self.n_group}) and n_early_size ({self.n_early_size}) must be even")
        if wn.kernel_size % 2 == 0 or wn.n_channels % 2:
            bad("WN_config kernel_size must be odd and n_channels even")
        if self.remaining_channels(self.n_flows - 1) < 2:
            bad(f"n_flows {self.n_flows} with n_early_every {self.n_early_every} and n_early_size "
                f"{self.n_early_size} output every channel of n_group {self.n_group} early")
        if self.glow_old and self.n_flows > 4 and self.n_early_every != 4:
            bad("glow_old models put out early channels every 4 flows; n_early_every must be 4")
        if self.hop_length != UPSAMPLE_STRIDE:
            bad(f"hop_length must be {UPSAMPLE_STRIDE} (the model up-samples mels by a fixed stride of 256)")

    # --- derived sizes ----------------------------------------------------------------------------------
    def early_flows(self) -> list[int]:
        """Flows before which ``n_early_size`` channels leave (forward direction), in increasing order."""
        return [k for k in range(1, self.n_flows) if k % self.n_early_every == 0]

    def remaining_channels(self, k: int) -> int:
        """Channels entering flow ``k``'s 1x1 convolution."""
        return self.n_group - self.n_early_size * sum(1 for e in self.early_flows() if e <= k)

    @property
    def n_remaining_channels(self) -> int:
        return self.remaining_channels(self.n_flows - 1)

    @property
    def mel(self) -> MelConfig:
        """Tacotron2's TacotronSTFT front-end: reflect padding of filter_length/2 (centred frames), periodic
        Hann window, magnitude sqrt(re^2 + im^2) without epsilon, Slaney mel filters, log(clamp(x, 1e-5)).
        The transform is a direct DFT summed in order, like the official conv with a Fourier basis (an FFT
        in float32 is ~1.5x further from float64 in the quiet bins of speech; see jaxvoc.dsp.stft.dft)."""
        return MelConfig(sampling_rate=self.sampling_rate, n_fft=self.filter_length, num_mels=self.n_mel_channels,
                         hop_size=self.hop_length, win_size=self.win_length, fmin=self.mel_fmin, fmax=self.mel_fmax,
                         padding="center", magnitude_eps=0.0, clip_val=1e-5, transform="dft")


def published_config() -> WaveGlowConfig:
    """The published universal model: 12 flows of 8-layer, 256-channel WNs, n_group 8, 2 early channels every
    4 flows (the repository's config.json)."""
    return WaveGlowConfig()


# ----------------------------------------------------------------------------------------------------------
# Modules


class WN(nn.Module):
    """The coupling network: a 1x1 ``start`` conv, ``n_layers`` dilated convs (dilation 2**i) with gated
    tanh * sigmoid activations conditioned through one 1x1 ``cond_layer`` for all layers, fused residual +
    skip 1x1 convs (the last layer has skip channels only), and a 1x1 ``end`` conv to 2 * n_in channels
    (shift, then log-scale)."""

    n_in_channels: int
    n_layers: int
    n_channels: int
    kernel_size: int

    @nn.compact
    def __call__(self, audio: Array, spect: Array, ends: Array | None = None) -> Array:
        """``ends``: each item's valid length in groups ([B] int; None: the whole tensor); the dilated convs
        then zero-pad at each item's own end (every other layer is 1x1)."""
        nc = self.n_channels
        h = Conv1d(nc, 1, weight_norm=True, name="start")(audio)
        cond = Conv1d(2 * nc * self.n_layers, 1, weight_norm=True, name="cond_layer")(spect)
        output = None
        for i in range(self.n_layers):
            d = 2 ** i
            x = Conv1d(2 * nc, self.kernel_size, dilation=d, padding=(self.kernel_size * d - d) // 2,
                       weight_norm=True, name=f"in_layers_{i}")(zero_past(h, ends) if self.kernel_size > 1 else h)
            acts = gated(x, cond[..., i * 2 * nc:(i + 1) * 2 * nc], nc)
            last = i == self.n_layers - 1
            rs = Conv1d(nc if last else 2 * nc, 1, weight_norm=True, name=f"res_skip_layers_{i}")(acts)
            if last:
                skip = rs
            else:
                h = h + rs[..., :nc]
                skip = rs[..., nc:]
            output = skip if output is None else output + skip
        return Conv1d(2 * self.n_in_channels, 1, kernel_init=nn.initializers.zeros, name="end")(output)


def gated(x: Array, cond: Array, n_channels: int) -> Array:
    """tanh(a[:n]) * sigmoid(a[n:]) of a = x + cond (the official fused_add_tanh_sigmoid_multiply)."""
    a = x + cond
    return jnp.tanh(a[..., :n_channels]) * jax.nn.sigmoid(a[..., n_channels:])


def _orthonormal_init(key, shape, dtype=jnp.float32):
    """As the official init: a random orthonormal matrix with determinant +1 (kernel [1, c, c])."""
    c = shape[-1]
    q, _ = jnp.linalg.qr(jax.random.normal(key, (c, c), dtype))
    q = q.at[:, 0].multiply(jnp.sign(jnp.linalg.det(q)))
    return q.T[None]


class Invertible1x1Conv(nn.Module):
    """z -> W z over channels (kernel stored [1, c_in, c_out] = W^T), with log|det W| per position; the
    inverse uses ``W_inverse`` when the parameter tree carries it (see :func:`prepare_for_inference`)."""

    channels: int

    def setup(self):
        self.conv = _Kernel1x1(self.channels)

    def __call__(self, z: Array) -> tuple[Array, Array]:
        w = self.conv.kernel()[0]  # [c_in, c_out] = W^T
        batch, groups = z.shape[0], z.shape[1]
        sign, logabs = jnp.linalg.slogdet(w)
        logdet = jnp.where(sign > 0, logabs, jnp.nan)  # torch.logdet: nan for a negative determinant
        return _matmul(z, w), batch * groups * logdet

    def inverse(self, z: Array) -> Array:
        w_inv_t = self.conv.inverse_kernel()
        return _matmul(z, w_inv_t)


class _Kernel1x1(nn.Module):
    """Holds the 1x1 kernel of the invertible conv (param ``kernel``, as Conv1d's) and, for inference, an
    optional precomputed ``W_inverse`` ([c_in, c_out] layout of W^-1, i.e. (W^-1)^T)."""

    channels: int

    def setup(self):
        self.weight = self.param("kernel", _orthonormal_init, (1, self.channels, self.channels))

    def kernel(self) -> Array:
        return self.weight

    def inverse_kernel(self) -> Array:
        if self.has_variable("params", "W_inverse"):
            return self.get_variable("params", "W_inverse")
        return jnp.linalg.inv(self.weight[0].T).T


def _matmul(x: Array, w: Array) -> Array:
    return jnp.einsum("btc,cd->btd", x, w.astype(x.dtype), precision=jax.lax.Precision.HIGHEST)


def squeeze_mel(spect: Array, n_group: int) -> Array:
    """Up-sampled mel [B, L, M] -> [B, L // n_group, M * n_group], channel m * n_group + j holding sample j of
    the group (the official unfold / permute / view)."""
    B, L, M = spect.shape
    G = L // n_group
    s = spect[:, :G * n_group].reshape(B, G, n_group, M)
    return s.transpose(0, 1, 3, 2).reshape(B, G, M * n_group)


class WaveGlow(nn.Module):
    """``__call__(mel, audio)``: mel [B, frames, M], audio [B, N] -> (z [B, N // n_group, n_group], log_s
    list, log_det_W list). ``infer(mel, sigma, noise=None, rng=None)`` -> audio [B, frames * 256]."""

    config: WaveGlowConfig

    def setup(self):
        c = self.config
        wn = c.WN_config
        self.upsample = ConvTranspose1d(c.n_mel_channels, UPSAMPLE_KERNEL, stride=UPSAMPLE_STRIDE)
        self.WN = [WN(c.remaining_channels(k) // 2, wn.n_layers, wn.n_channels, wn.kernel_size)
                   for k in range(c.n_flows)]  # named WN_0, WN_1, ... by Flax
        self.convinv = [Invertible1x1Conv(c.remaining_channels(k)) for k in range(c.n_flows)]

    def _halves(self, k: int, audio: Array) -> tuple[Array, Array]:
        """(conditioning half, transformed half) of flow k."""
        n_half = audio.shape[-1] // 2
        if self.config.glow_old and k % 2 == 1:
            return audio[..., n_half:], audio[..., :n_half]
        return audio[..., :n_half], audio[..., n_half:]

    def _join(self, k: int, audio_0: Array, audio_1: Array) -> Array:
        if self.config.glow_old and k % 2 == 1:
            return jnp.concatenate([audio_1, audio_0], axis=-1)
        return jnp.concatenate([audio_0, audio_1], axis=-1)

    def _coupling(self, k: int, audio_0: Array, spect: Array, ends: Array | None = None) -> tuple[Array, Array]:
        n_half = audio_0.shape[-1]
        out = self.WN[k](audio_0, spect, ends)
        return out[..., n_half:], out[..., :n_half]  # log_s, b

    def __call__(self, mel: Array, audio: Array) -> tuple[Array, list[Array], list[Array]]:
        c = self.config
        spect = self.upsample(mel)
        if spect.shape[1] < audio.shape[1]:
            raise ValueError(f"audio of {audio.shape[1]} samples is longer than the up-sampled mel "
                             f"({spect.shape[1]} samples)")
        spect = squeeze_mel(spect[:, :audio.shape[1]], c.n_group)
        G = audio.shape[1] // c.n_group
        audio = audio[:, :G * c.n_group].reshape(audio.shape[0], G, c.n_group)
        early_out, log_s_list, log_det_list = [], [], []
        for k in range(c.n_flows):
            if k % c.n_early_every == 0 and k > 0:
                early_out.append(audio[..., :c.n_early_size])
                audio = audio[..., c.n_early_size:]
            audio, log_det = self.convinv[k](audio)
            log_det_list.append(log_det)
            audio_0, audio_1 = self._halves(k, audio)
            log_s, b = self._coupling(k, audio_0, spect)
            audio_1 = jnp.exp(log_s) * audio_1 + b
            log_s_list.append(log_s)
            audio = self._join(k, audio_0, audio_1)
        return jnp.concatenate(early_out + [audio], axis=-1), log_s_list, log_det_list

    def infer(self, mel: Array, sigma: float | Array = 1.0, noise: Sequence[Array] | None = None,
              rng: Array | None = None, lengths: Array | None = None, offsets: Array | None = None) -> Array:
        """Synthesis. ``noise``: the standard-normal draws in the official order (first [B, G,
        n_remaining_channels], then [B, G, n_early_size] for each early exit from the last flow backwards;
        see :func:`noise_shapes`); else drawn from ``rng`` per absolute group (:func:`positional_noise`; row b
        starts at group ``offsets[b]``, default 0), so a sample's noise depends on the seed and its place in
        its item only (not on the padded length, the batch row, a window or a stream push).

        ``lengths`` ([B] int, traced): each item's own frame count in a padded batch. Item b's first
        ``lengths[b] * 256`` samples are then what the official infer gives that item alone at its own length
        with the same noise, whatever the mel holds past it (the up-sampler's crop and the WN convs' zero
        padding happen at each item's end); the samples past it are zero."""
        c = self.config
        ends = None
        if lengths is not None:
            lengths = jnp.asarray(lengths, jnp.int32)
            mel = zero_past(mel, lengths)
            ends = lengths * UPSAMPLE_STRIDE // c.n_group  # in groups, as the official unfold
        # The transposed conv (no padding) is causal: its output before sample 256 * lengths[b] reads frames
        # before lengths[b] only, so the official crop of the last 768 samples of each item's own output is
        # the crop of the padded output at 256 * lengths[b] (the samples past it are don't-cares).
        spect = self.upsample(mel)
        spect = spect[:, :spect.shape[1] - (UPSAMPLE_KERNEL - UPSAMPLE_STRIDE)]
        spect = squeeze_mel(spect, c.n_group)
        B, G = spect.shape[0], spect.shape[1]
        shapes = noise_shapes(c, B, G)
        if noise is None:
            if rng is None:
                raise ValueError("infer needs noise or rng")
            noise = positional_noise(c, rng, jnp.zeros((B,), jnp.int32) if offsets is None else offsets, G)
            noise = [n.astype(spect.dtype) for n in noise]
        if len(noise) != len(shapes) or any(tuple(n.shape) != s for n, s in zip(noise, shapes)):
            raise ValueError(f"noise shapes {[tuple(n.shape) for n in noise]} differ from {shapes}")
        draws = iter(noise)
        audio = sigma * next(draws)
        for k in reversed(range(c.n_flows)):
            audio_0, audio_1 = self._halves(k, audio)
            s, b = self._coupling(k, audio_0, spect, ends)
            audio_1 = (audio_1 - b) / jnp.exp(s)
            audio = self.convinv[k].inverse(self._join(k, audio_0, audio_1))
            if k % c.n_early_every == 0 and k > 0:
                audio = jnp.concatenate([sigma * next(draws), audio], axis=-1)
        audio = zero_past(audio, ends)
        return audio.reshape(B, G * c.n_group)


def noise_shapes(config: WaveGlowConfig, batch: int, groups: int) -> list[tuple[int, int, int]]:
    """Shapes (channels-last) of the normal draws of ``infer``, in the official order."""
    shapes = [(batch, groups, config.n_remaining_channels)]
    shapes += [(batch, groups, config.n_early_size)] * len(config.early_flows())
    return shapes


def positional_noise(config: WaveGlowConfig, rng: Array, offsets: Array, groups: int) -> list[Array]:
    """The draws of ``infer`` (shapes of :func:`noise_shapes`) with group g of row b a function of ``rng`` and
    its absolute index ``offsets[b] + g`` alone: n_group normals from ``fold_in(rng, index)``, split over the
    draws in order. So a seed gives the same noise at the same place of an item whatever the window, stream
    push, batch row or padded length it is computed in."""
    idx = (offsets.astype(jnp.uint32)[:, None] + jnp.arange(groups, dtype=jnp.uint32)[None, :])
    draw = lambda i: jax.random.normal(jax.random.fold_in(rng, i), (config.n_group,), jnp.float32)
    z = jax.vmap(jax.vmap(draw))(idx)  # [B, G, n_group]
    sizes = [s[-1] for s in noise_shapes(config, 1, 1)]
    cuts = np.cumsum(sizes)[:-1].tolist()
    return jnp.split(z, cuts, axis=-1)


def nll(z: Array, log_s_list: Sequence[Array], log_det_W_list: Sequence[Array], sigma: float = 1.0) -> Array:
    """The official ``WaveGlowLoss(sigma)``: (sum z^2 / (2 sigma^2) - sum log_s - sum log_det_W) / z.size, summed
    in float32 whatever the compute dtype (bfloat16 training)."""
    log_s_total = sum(jnp.sum(s.astype(jnp.float32)) for s in log_s_list)
    log_det_total = sum(jnp.asarray(ld, jnp.float32) for ld in log_det_W_list)
    z = z.astype(jnp.float32)
    loss = jnp.sum(z * z) / (2 * sigma * sigma) - log_s_total - log_det_total
    return loss / z.size


def init_params(config: WaveGlowConfig, seed: int = 0, frames: int = 4) -> dict:
    """Fresh parameters (weight norm unfolded), initialised like the official code (``end`` zeroed)."""
    mel = jnp.zeros((1, frames, config.n_mel_channels), jnp.float32)
    audio = jnp.zeros((1, frames * UPSAMPLE_STRIDE), jnp.float32)
    return jax.jit(WaveGlow(config).init)(jax.random.PRNGKey(seed), mel, audio)["params"]


def prepare_for_inference(params: dict) -> dict:
    """Weight norm folded, and every invertible conv given ``W_inverse`` computed on the host in float64
    (rounded once to float32; the official code inverts in float32)."""
    params = fold_weight_norm(params)
    out = dict(params)
    for name, sub in params.items():
        if name.startswith("convinv_"):
            w_t = np.asarray(sub["conv"]["kernel"], np.float64)[0]  # W^T
            inv_t = np.linalg.inv(w_t.T).T
            out[name] = {"conv": {**sub["conv"], "W_inverse": jnp.asarray(inv_t.astype(np.float32))}}
    return out


# ----------------------------------------------------------------------------------------------------------
# Denoiser (the official denoiser.py, on Tacotron2's STFT in jaxvoc.dsp.tacotron)


class Denoiser:
    """The official Denoiser: the model's output for a zero mel (88 frames, sigma 0) gives a bias magnitude
    spectrum (its first frame), subtracted with ``strength`` from the magnitudes of the audio to clean;
    negatives clamp to 0; the result is resynthesised with the original phases."""

    def __init__(self, model: WaveGlow, params: dict, stft: STFTConfig = STFTConfig(), frames: int = 88):
        self.stft = stft
        mel = jnp.zeros((1, frames, model.config.n_mel_channels), jnp.float32)
        shapes = noise_shapes(model.config, 1, frames * UPSAMPLE_STRIDE // model.config.n_group)
        bias_audio = jax.jit(lambda p: model.apply({"params": p}, mel, 0.0, [jnp.zeros(s) for s in shapes],
                                                   method=WaveGlow.infer))(params)
        self.bias_spec = bias_spectrum(bias_audio, stft)

    def __call__(self, audio: Array, strength: float = 0.1) -> Array:
        return denoise_audio(audio, self.bias_spec, strength, self.stft)


def bias_spectrum(bias_audio: Array, stft: STFTConfig = STFTConfig()) -> Array:
    """The first-frame magnitude [1, 1, bins] of the model's zero-mel output."""
    mag, _ = stft_transform(bias_audio, stft)
    return mag[:, :1, :]


def denoise_audio(audio: Array, bias_spec: Array, strength: float | Array, stft: STFTConfig = STFTConfig(),
                  lengths: Array | None = None) -> Array:
    """[B, N] -> [B, N']: magnitude minus strength * bias (clamped at 0), resynthesised (official length).
    ``lengths`` [B] (samples, multiples of the hop): each item's own length in a padded batch; its first
    ``lengths[b]`` samples are then what the official Denoiser gives that item alone."""
    mag, phase = stft_transform(audio, stft, ends=lengths)
    mag = jnp.maximum(mag - bias_spec * strength, 0.0)
    n_frames = None if lengths is None else jnp.asarray(lengths) // stft.hop_length + 1
    return stft_inverse(mag, phase, stft, n_frames=n_frames)


# ----------------------------------------------------------------------------------------------------------
# Converted model


class Pretrained(Vocoder):
    """A converted WaveGlow ready to call: ``model(mel, sigma=0.6, seed=0, denoise=0.0, lengths=None)`` with mel
    [B, frames, n_mel_channels] (or [frames, n_mel_channels]) -> audio [B, frames * 256]; ``lengths`` [B]: each
    item's own frame count in a padded batch (see :meth:`WaveGlow.infer`). ``model.mel(audio)`` gives the
    Tacotron2 log-mel. ``denoise`` > 0 applies the official Denoiser with that strength."""

    kind = "waveglow"
    synth_options = ("sigma", "seed", "denoise")

    def __init__(self, config: WaveGlowConfig, params: Any, fold: bool = True, dtype: str = "float32"):
        super().__init__(config, prepare_for_inference(params) if fold else params, dtype)
        self.module = WaveGlow(config)
        self.raw_params = params
        self._bias_spec = None

    @classmethod
    def from_checkpoint(cls, ckpt_dir: str, meta: dict, fold: bool = True, dtype: str = "float32") -> "Pretrained":
        return from_checkpoint(cls, WaveGlowConfig, ckpt_dir, meta, fold, dtype=dtype)

    @property
    def mel_config(self) -> MelConfig:
        return self.config.mel

    @property
    def bias_spec(self) -> Array:
        if self._bias_spec is None:
            self._bias_spec = Denoiser(self.module, self.params).bias_spec
        return self._bias_spec

    def vocode(self, mels, sigma: float = 0.6, seed: int = 0, denoise: float = 0.0, lengths=None,
               offset=None) -> Array:
        """See :meth:`Vocoder.vocode` for ``lengths`` and :meth:`WaveGlow.infer` for the noise. ``offset``: per
        row, the group index (sample / n_group) of the row's first sample in its item (windows and streams pass
        it). The denoiser (``denoise`` > 0) runs at each item's own length too."""
        rows = 1 if jnp.ndim(mels) == 2 else jnp.shape(mels)[0]
        opts = {"sigma": jnp.float32(sigma), "seed": jnp.uint32(seed),
                "offset": jnp.zeros((rows,), jnp.int32) if offset is None else jnp.asarray(offset, jnp.int32)}
        if denoise and denoise > 0:
            opts["denoise"] = jnp.float32(denoise)
            opts["bias_spec"] = self.bias_spec
        return super().vocode(mels, lengths=lengths, **opts)

    __call__ = vocode

    def window_options(self, starts) -> dict:
        return {"offset": np.asarray(starts, np.int64) * UPSAMPLE_STRIDE // self.config.n_group}

    def _synthesize(self, params, mels: Array, sigma, seed, offset, denoise=None, bias_spec=None,
                    lengths=None) -> Array:
        rng = jax.random.PRNGKey(seed)
        audio = self.module.apply({"params": params}, mels, sigma.astype(mels.dtype), rng=rng, lengths=lengths,
                                  offsets=offset, method=WaveGlow.infer)
        if denoise is not None:  # the STFT denoiser in float32 whatever the model's dtype
            samples = None if lengths is None else jnp.asarray(lengths) * UPSAMPLE_STRIDE
            audio = denoise_audio(audio.astype(jnp.float32), bias_spec, denoise, lengths=samples)
            if lengths is not None:  # zero past each item's end, as without the denoiser
                audio = jnp.where(jnp.arange(audio.shape[1])[None, :] < samples[:, None], audio, 0.0)
        return audio

    def forward(self, mels: Array, audio: Array):
        """The training direction: (z, log_s list, log_det_W list) of audio [B, N] given mels."""
        return self.module.apply({"params": self.params}, mels, audio)
