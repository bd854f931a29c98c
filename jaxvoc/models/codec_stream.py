"""The NeMo codec in windows: streaming decode (tokens in, audio out) and long files encoded window by window,
both exact (``jaxvoc.models.windowed`` explains the windows).

A window of the codec is the ordinary ``decode`` / ``encode`` with ``isolate=True`` on a fixed-size piece, which
is exactly what NeMo computes on that piece alone: at a piece's edge that is also the item's edge the reflect /
replicate padding is the item's own; elsewhere only samples whose receptive field lies inside the piece are
kept. Receptive fields come from the config by the same interval arithmetic as the vocoders'.

Duck-typed on the codec ``Pretrained`` (``config``, ``encode``, ``decode``): no import of the codec module.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from jaxvoc.models import windowed
from jaxvoc.models.windowed import ReceptiveField, _chain, _conv, _conv_transpose, _residual

DEFAULT_DECODE_WINDOW = 64  # tokens (the LFR codec's decoder field is 6 + 6 tokens)
DEFAULT_ENCODE_WINDOW = 256  # frames


def _res_layer(kernels, dilations) -> Any:
    """HiFiGANResLayer: the mean over kernels of chains of residual blocks (act, conv(k, d), act, conv(k))."""
    return _residual(*[_chain(*[_residual(_chain(_conv(k, d), _conv(k))) for d in dilations]) for k in kernels])


def decoder_receptive_field(cfg: Any) -> ReceptiveField:
    """HiFiGANDecoder: pre_conv, per rate r a transposed conv (kernel 2r, stride r, NeMo's padding) and a
    residual layer, post_conv; in tokens."""
    d = cfg.decoder
    layers = [_conv(d.in_kernel_size)]
    for r in d.up_sample_rates:
        layers += [_conv_transpose(2 * r, r, (r + 1) // 2), _res_layer(d.resblock_kernel_sizes,
                                                                       d.resblock_dilation_sizes)]
    layers.append(_conv(d.out_kernel_size))
    return windowed._frames_of(_chain(*layers), int(np.prod(d.up_sample_rates)))


def encoder_receptive_field(cfg: Any) -> ReceptiveField:
    """HiFiGANEncoder: pre_conv, per rate r a residual layer and a strided conv (kernel 2r, stride r, padding
    (r + 1) // 2), post_conv; in frames of ``samples_per_frame`` samples (rounded up)."""
    e = cfg.encoder
    layers = [_conv(e.in_kernel_size)]
    for r in e.down_sample_rates:
        p = (r + 1) // 2
        layers += [_res_layer(e.resblock_kernel_sizes, e.resblock_dilation_sizes),
                   (lambda r, p: lambda a, b: (a * r - p, b * r - p + 2 * r - 1))(r, p)]
    layers.append(_conv(e.out_kernel_size))
    net = _chain(*layers)
    spf, f = cfg.samples_per_frame, 10_000
    lo, hi = net(f, f)
    return ReceptiveField(-(-(f * spf - lo) // spf), -(-(hi - (f * spf + spf - 1)) // spf))


class DecoderWindows:
    """The codec's decoder seen as a vocoder by :mod:`jaxvoc.models.windowed`: "mel frames" are token frames
    [n, num_codebooks] (as float32: token values are exact), the hop is samples per token."""

    kind = "codec-decoder"

    def __init__(self, codec: Any):
        self.codec = codec
        self.config = codec.config
        self.num_mels = codec.num_codebooks
        self.hop_size = codec.config.samples_per_token
        self.sampling_rate = codec.output_sample_rate
        self.silence_level = 0.0  # token 0 fills the unreceived part of a stream's first window (never read)
        self.rf = decoder_receptive_field(codec.config)

    @property
    def compilations(self) -> int:
        return self.codec.compilations["decode"]

    def receptive_field(self, **_) -> ReceptiveField:
        return self.rf

    def window_options(self, starts) -> dict:
        return {}

    def vocode(self, frames, **_) -> np.ndarray:
        x = np.asarray(frames)
        tokens = np.rint(x).astype(np.int32).transpose(0, 2, 1)  # [B, C, T]
        n = np.full((x.shape[0],), x.shape[1], np.int32)
        return self.codec.decode(tokens, n, isolate=True)[0]


def stream_decode(codec: Any, window: int = DEFAULT_DECODE_WINDOW) -> windowed.Stream:
    """``s.push(tokens [num_codebooks, n])`` -> final audio so far; ``s.flush()`` -> the rest; concatenated,
    what NeMo's decode gives the whole token sequence."""
    return _TokenStream(DecoderWindows(codec), window)


class _TokenStream(windowed.Stream):
    def push(self, tokens) -> np.ndarray:
        t = np.asarray(tokens)
        if t.ndim != 2 or t.shape[0] != self.model.num_mels:
            from jaxvoc.errors import UserError

            raise UserError(f"push takes tokens [{self.model.num_mels}, n], got shape {t.shape}")
        return super().push(t.T.astype(np.float32))


def decode_long(codec: Any, tokens, window: int = DEFAULT_DECODE_WINDOW) -> np.ndarray:
    """tokens [num_codebooks, T] -> audio [T * samples_per_token], window by window (one program)."""
    t = np.asarray(tokens)
    return windowed.synthesize_long(DecoderWindows(codec), [t.T.astype(np.float32)], window)[0]


def encode_long(codec: Any, audio, window: int = DEFAULT_ENCODE_WINDOW, on_window=None) -> np.ndarray:
    """audio [N] at the codec's rate -> tokens int32 [num_codebooks, frames], identical to encoding it whole
    (``encode(audio, isolate=True)``, i.e. NeMo on the file alone), through windows of ``window`` frames (one
    compiled program; the memory of one window). Files no longer than a window are encoded whole."""
    cfg = codec.config
    spf = cfg.samples_per_frame
    audio = np.asarray(audio, np.float32)
    N = len(audio)
    F = cfg.frames(N)
    if F <= window:
        return np.asarray(codec.encode(audio[None], np.array([N], np.int32), isolate=True)[0])[0, :, :F]
    rf = encoder_receptive_field(cfg)
    windowed.check_window(window, rf, "window")
    out = np.zeros((cfg.num_codebooks, F), np.int32)
    for w in windowed.plan_windows(F, window, rf):
        piece = np.zeros((1, window * spf), np.float32)
        seg = audio[w.start * spf:(w.start + window) * spf]
        piece[0, :len(seg)] = seg
        tokens, _ = codec.encode(piece, np.array([len(seg)], np.int32), isolate=True)
        a, b = w.keep
        out[:, a:b] = np.asarray(tokens)[0, :, a - w.start:b - w.start]
        if on_window is not None:
            on_window()
    return out
