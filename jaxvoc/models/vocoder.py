"""What every converted vocoder (BigVGAN, WaveGlow) shares: the jitted log-mel front-end, the jitted
synthesis function with a compilation counter, and the interface ``jaxvoc synth`` relies on."""

from __future__ import annotations

import math
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.dsp.stft import MelConfig, mel_spectrogram
from jaxvoc.errors import UserError
from jaxvoc.models.base import cast_floating, counting_jit, release_memory

Array = jax.Array


class MelLayoutError(UserError, ValueError):
    """A mel of the wrong shape given to a vocoder: a ValueError for library callers, one line in the CLI."""


def check_mel_layout(shape: tuple[int, ...], num_mels: int) -> None:
    """Refuses a mel that is not [B, frames, num_mels] (or [frames, num_mels]) by name, before Flax sees it:
    in particular the official PyTorch layout [B, n_mels, T]."""
    if len(shape) not in (2, 3) or shape[-1] != num_mels:
        hint = ("; it looks like the official PyTorch layout [B, n_mels, T]: transpose it, "
                "mel.transpose(0, 2, 1)" if len(shape) == 3 and shape[1] == num_mels else
                "; transpose it, mel.T" if len(shape) == 2 and shape[0] == num_mels else "")
        raise MelLayoutError(f"mel of shape {tuple(shape)} does not fit this model: expected [B, frames, n_mels] "
                             f"= [B, T, {num_mels}] (or [T, {num_mels}]){hint}")


class Vocoder:
    """Subclasses set ``kind``, ``config`` and ``params`` and implement ``_synthesize(params, mels, **opts)``
    (mels [B, frames, num_mels] -> audio [B, samples]) and ``mel_config``.

    ``compilations`` counts traces of the synthesis function (one per distinct input shape and static
    option), ``mel_compilations`` those of the front-end.

    ``dtype`` (one of ``dtypes``): the synthesis's weights and activations. ``"bfloat16"``: the parameters are
    rounded to bfloat16 once, the mels enter the model as bfloat16 and the audio leaves it as float32; what a
    model keeps in float32 inside is its own choice (BigVGAN: the anti-aliased activations). The log-mel
    front-end stays float32."""

    kind = "vocoder"
    dtypes: tuple[str, ...] = ("float32", "bfloat16")
    static_options: tuple[str, ...] = ()  # keyword options that change the traced program
    synth_options: tuple[str, ...] = ()  # `jaxvoc synth` options the model takes (e.g. sigma, seed, denoise)

    def __init__(self, config: Any, params: Any, dtype: str = "float32"):
        if dtype not in self.dtypes:
            raise UserError(f"dtype {dtype!r} is not available for a {self.kind} model; use one of "
                            f"{', '.join(self.dtypes)}")
        self.config = config
        self.dtype = jnp.dtype(dtype)
        self.params = params if self.dtype == jnp.float32 else cast_floating(params, self.dtype)
        self.compilations = 0
        self.mel_compilations = 0
        self._compiled: set = set()

        def count(attr):
            return lambda: setattr(self, attr, getattr(self, attr) + 1)

        self._synth = counting_jit(lambda p, mels, opts, static: self._synthesize(
            p, mels.astype(self.dtype), **opts, **dict(static)).astype(jnp.float32), count("compilations"),
            static_argnums=3)
        self._mel = counting_jit(lambda audio, padded: mel_spectrogram(audio, self.mel_config, padded=padded),
                                 count("mel_compilations"), static_argnums=1)

    # --- to implement -------------------------------------------------------------------------------------
    mel_config: MelConfig

    def _synthesize(self, params, mels: Array, **opts) -> Array:
        raise NotImplementedError

    # --- shared ---------------------------------------------------------------------------------------------
    @property
    def sampling_rate(self) -> int:
        return self.mel_config.sampling_rate

    @property
    def hop_size(self) -> int:
        return self.mel_config.hop_size

    @property
    def num_mels(self) -> int:
        return self.mel_config.num_mels

    @property
    def silence_level(self) -> float:
        """The log-mel value of silence (log of the clamp floor), used to pad mels into length buckets."""
        return math.log(self.mel_config.clip_val)

    def mel(self, audio, padded: bool = False) -> Array:
        """Log-mel [B, frames, num_mels] of audio [B, samples] (or [samples]), as the model was trained on."""
        return self._mel(jnp.asarray(audio, jnp.float32), padded)

    def vocode(self, mels, lengths=None, **opts) -> Array:
        """mels [B, frames, num_mels] (or [frames, num_mels]) -> audio [B, frames * hop_size].

        ``lengths`` ([B] ints, or one int for a 2-D mel): each item's own frame count in a padded batch. Item
        b's first ``lengths[b] * hop_size`` samples are then what the model gives that item alone at its own
        length, whatever ``mels`` holds past it, and the samples after them are zero. The lengths are traced
        data: every set of lengths for one padded shape runs the same compiled program. ``None``: every item
        is ``frames`` long (no masking: the fastest program)."""
        check_mel_layout(tuple(jnp.shape(mels)), self.num_mels)
        mels = jnp.asarray(mels, jnp.float32)
        squeeze = mels.ndim == 2
        static = tuple(sorted((k, v) for k, v in opts.items() if k in self.static_options))
        dyn = {k: v for k, v in opts.items() if k not in self.static_options}
        if lengths is not None:
            lengths = np.atleast_1d(np.asarray(lengths))
            n_items, frames = (1, mels.shape[0]) if squeeze else mels.shape[:2]
            if lengths.shape != (n_items,) or not np.issubdtype(lengths.dtype, np.integer):
                raise ValueError(f"lengths must be {n_items} integer(s), got {lengths!r}")
            if lengths.min() < 1 or lengths.max() > frames:
                raise ValueError(f"lengths must lie in [1, {frames}] (the padded frame count), got {lengths}")
            dyn["lengths"] = jnp.asarray(lengths, jnp.int32)
        mels = mels[None] if squeeze else mels
        key = (mels.shape, static, tuple((k, jnp.shape(v), jnp.result_type(v)) for k, v in sorted(dyn.items())))
        if key not in self._compiled:  # compile ahead of the first run, then return the compiler's scratch
            self._synth.lower(self.params, mels, dyn, static).compile()  # (jit reuses this executable)
            release_memory()
            self._compiled.add(key)
        out = self._synth(self.params, mels, dyn, static)
        return out[0] if squeeze else out

    __call__ = vocode

    # --- any length, streaming (jaxvoc.models.windowed) -------------------------------------------------------
    def window_options(self, starts) -> dict:
        """Options that tell ``_synthesize`` where each row of a window batch starts in its item (frames
        ``starts`` [B]); none for a model whose output depends on the mel alone."""
        return {}

    def receptive_field(self, **opts):
        """Mel frames (left, right) one frame's audio depends on: ``jaxvoc.models.windowed.ReceptiveField``."""
        from jaxvoc.models import windowed

        return windowed.receptive_field(self, **opts)

    def synthesize_long(self, mels, window: int | None = None, batch: int = 1, **opts):
        """Audio of mels of any length in the memory of one window: mels [frames, num_mels] (or [B, frames,
        num_mels], or a list of [frames_i, num_mels]) -> list of float32 numpy arrays [frames_i * hop_size],
        equal to ``self(mel)``. Windows of ``window`` frames (default ``windowed.default_window``: 1024 frames, or
        4x the receptive field when more), ``batch`` windows per call; one compiled program for every length."""
        from jaxvoc.models import windowed

        return windowed.synthesize_long(self, mels, window, batch, **opts)

    def stream(self, window: int | None = None, **opts):
        """An exact stream: ``s = model.stream(); s.push(frames) -> final audio so far; s.flush() -> the rest``
        (``jaxvoc.models.windowed.Stream``); latency ``s.latency_ms``."""
        from jaxvoc.models import windowed

        return windowed.Stream(self, window, **opts)
