"""The codec generator's training forward, as NeMo 3.0.0's ``AudioCodecModel._process_batch`` computes it:
pure functions of the weight-normed parameter tree ``{audio_encoder, audio_decoder}`` (``weight_g`` /
``weight_v`` kept, so gradients reach both, as NeMo's parametrized convs).

NeMo's order (``audio_codec.py``): the batch is zero-padded to whole frames (``pad_audio``: each length rounded
up to whole frames, and the *tensor* cut or padded to the longest rounded length), the encoder runs on it
with those lengths, the FSQ quantizes with its straight-through rounding (the value ``round(c) / (L // 2)``,
the gradient that of ``c / (L // 2)``; no commit loss: FSQ has none), masked to the frame lengths, and the
decoder gives ``audio_gen``. The losses then compare ``audio`` (padded) with ``audio_gen`` under the padded
lengths. Encoder noise (``encoder_noise_stdev``) and resampling to ``output_sample_rate`` are not supported.

The batch tensor. A compiled step has one static length ``N``; NeMo's tensor ends at the longest item's
padded length ``L <= N``, and every reflect-padded convolution pads at that end. With ``crop_to_longest``
(default) every convolution here pads each item at ``L`` (``jaxvoc.nn.conv.pad_to_ends``), so ``audio_gen``
is NeMo's on its own (shorter) tensor, zero from ``L`` on; without it the convolutions pad at ``N``, which is
NeMo's result only when ``L`` equals ``N`` rounded to whole frames (every item a full crop).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from jaxvoc.models.codec import AudioCodec, CodecConfig, HiFiGANDecoder, HiFiGANEncoder

Array = jax.Array


class GeneratorOutput(NamedTuple):
    """What ``_process_batch`` returns to ``training_step`` (plus the tokens, for codebook statistics)."""

    audio: Array  # [B, N'] the input zero-padded to whole frames (N' = N rounded up)
    audio_len: Array  # [B] int32, each length rounded up to whole frames (the losses' lengths)
    audio_gen: Array  # [B, N' * output rate / input rate], zero past each item's length
    encoded_len: Array  # [B] frames
    tokens: Array  # [B, num_codebooks, frames] int32, zero past encoded_len (no gradient)


def check_trainable(config: CodecConfig) -> None:
    """The generator configs this training forward computes as NeMo does."""
    if config.out_sample_rate != config.sample_rate:
        raise ValueError("codec training with output_sample_rate != sample_rate (NeMo resamples the input batch) "
                         "is not supported")


def pad_batch(config: CodecConfig, audio: Array, audio_len: Array) -> tuple[Array, Array]:
    """NeMo's ``pad_audio``: (audio zero-padded to whole frames, lengths rounded up to whole frames)."""
    return AudioCodec(config).pad_audio(jnp.asarray(audio), audio_len)


def generator_forward(config: CodecConfig, params: dict, audio: Array, audio_len: Array, *,
                      crop_to_longest: bool = True) -> GeneratorOutput:
    """audio [B, N] float, audio_len [B] -> :class:`GeneratorOutput` (differentiable in ``params`` and
    ``audio``; the straight-through FSQ of :mod:`jaxvoc.models.fsq`)."""
    check_trainable(config)
    audio, audio_len = pad_batch(config, audio, audio_len)
    ends = jnp.broadcast_to(jnp.max(audio_len), audio_len.shape) if crop_to_longest else None
    encoded, enc_len = HiFiGANEncoder(config.encoder).apply({"params": params["audio_encoder"]}, audio, audio_len,
                                                            ends)
    dequantized, tokens = config.quantizer.quantize(encoded, enc_len)
    dec_ends = None if ends is None else ends // config.samples_per_frame
    audio_gen, _ = HiFiGANDecoder(config.decoder).apply({"params": params["audio_decoder"]}, dequantized, enc_len,
                                                        dec_ends)
    return GeneratorOutput(audio, audio_len, audio_gen, enc_len, jax.lax.stop_gradient(tokens))
