"""Any length in bounded memory, and exact streaming, for the vocoders (BigVGAN, WaveGlow).

A vocoder's output sample depends on a finite span of mel frames around it: ``left`` frames before its own frame
and ``right`` frames after (its receptive field, :func:`receptive_field`, computed from the config by interval
arithmetic through every layer, each layer's padding included). A window of ``W`` frames run through the
ordinary (unchanged) network therefore gives the exact unwindowed output wherever that span lies inside the
window, or reaches past the window only where the window's edge IS the item's edge (then the network's own zero
/ replicate padding there is the official one). So:

* :func:`synthesize_long` (``model.synthesize_long(mel, window=W)``): the first window starts at frame 0, the
  last one ends exactly at the item's last frame, interior ones are shifted by ``W - left - right`` and keep
  their middle. Every window has the same shape, so one compiled program serves every length; memory is that of
  one window (times the batch), whatever the length.
* :class:`Stream` (``model.stream(window=W)``): ``push(frames)`` runs one window ending at the frames received
  so far and returns the audio that no later frame can change (everything up to ``right`` frames before the
  end); ``flush()`` runs the last window aligned to the true end. Concatenated: the unwindowed output.

WaveGlow's noise is drawn per absolute output position from the seed (``jaxvoc.models.waveglow``), so windows,
streams, batches and buckets all see the same noise at the same place.

This module only uses the model's duck-typed interface (``kind``, ``config``, ``hop_size``, ``num_mels``,
``vocode``, ``window_options``) and imports no model module.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Callable, Iterator

import numpy as np

from jaxvoc.errors import UserError

DEFAULT_WINDOW = 1024  # frames; the least `jaxvoc synth --window` default, measured (docs/bigvgan.md)
STREAM_WINDOW_EXTRA = 64  # frames a default stream window has beyond the receptive field


def _ceil32(n: int) -> int:
    return -(-n // 32) * 32


def default_window(rf: "ReceptiveField") -> int:
    """Windows of whole items: DEFAULT_WINDOW, or 4x the receptive field when that is more (no published model:
    WaveGlow's is 780), so that at most a quarter of the computation is overlap."""
    return max(DEFAULT_WINDOW, _ceil32(4 * rf.total))


def default_stream_window(rf: "ReceptiveField") -> int:
    """Stream windows: the receptive field plus STREAM_WINDOW_EXTRA frames, rounded up to 32 (BigVGAN v2:
    160, WaveGlow: 288); a push of up to the extra frames runs one window."""
    return _ceil32(rf.total + STREAM_WINDOW_EXTRA)


# ----------------------------------------------------------------------------------------------------------
# Receptive fields by interval arithmetic. Each layer maps the index interval [a, b] of its outputs to the
# interval of its inputs those outputs read (padding positions included, as negative or past-the-end indices).


@dataclasses.dataclass(frozen=True)
class ReceptiveField:
    """Output samples of mel frame f depend on frames [f - left, f + right] (and on nothing else)."""

    left: int
    right: int

    @property
    def total(self) -> int:
        return self.left + self.right


def _conv(k: int, d: int = 1, p: int | None = None) -> Callable:
    """Conv1d, stride 1: out[t] reads in[t - p + j d], j < k."""
    p = (k * d - d) // 2 if p is None else p
    return lambda a, b: (a - p, b - p + (k - 1) * d)


def _conv_transpose(k: int, u: int, p: int) -> Callable:
    """ConvTranspose1d(k, stride u, padding p): out[t] reads in[i] for 0 <= t + p - i u < k."""
    return lambda a, b: (-((-(a + p - k + 1)) // u), (b + p) // u)


def _antialias(ratio: int = 2, up_k: int = 12, down_k: int = 12) -> Callable:
    """BigVGAN's Activation1d: UpSample1d (replicate pad k/r - 1, transposed conv, crop) then DownSample1d
    (replicate pad k/2 - 1 | k/2, strided conv), Snake pointwise in between."""
    up_pad = up_k // ratio - 1
    up_crop = up_pad * ratio + (up_k - ratio) // 2
    down_left = down_k // 2 - int(down_k % 2 == 0)

    def f(a, b):
        a, b = ratio * a - down_left, ratio * b - down_left + down_k - 1  # the low-pass, stride ratio
        a, b = a + up_crop, b + up_crop  # back to the transposed conv's uncropped output
        a, b = -((-(a - up_k + 1)) // ratio), b // ratio  # the transposed conv (stride ratio) on padded input
        return a - up_pad, b - up_pad

    return f


def _chain(*layers: Callable) -> Callable:
    """Layers in forward order -> the interval map of their composition."""

    def f(a, b):
        for layer in reversed(layers):
            a, b = layer(a, b)
        return a, b

    return f


def _residual(*branches: Callable) -> Callable:
    """x + branch(x) (or the sum / mean of several branches): the hull of every path."""

    def f(a, b):
        spans = [(a, b)] + [br(a, b) for br in branches]
        return min(s[0] for s in spans), max(s[1] for s in spans)

    return f


def _frames_of(net: Callable, hop: int, frame: int = 10_000) -> ReceptiveField:
    """Receptive field of the samples of one frame (the hull over its hop samples, every phase)."""
    lo, hi = net(frame * hop, frame * hop + hop - 1)
    return ReceptiveField(frame - lo, hi - frame)


def bigvgan_receptive_field(cfg: Any) -> ReceptiveField:
    """conv_pre (k 7), per stage the transposed conv and the AMP blocks (each dilated conv between anti-aliased
    activations; the blocks' mean is the hull of their spans), the last activation, conv_post (k 7)."""
    layers = [_conv(7)]
    for u, k in zip(cfg.upsample_rates, cfg.upsample_kernel_sizes):
        blocks = []
        for rk, rd in zip(cfg.resblock_kernel_sizes, cfg.resblock_dilation_sizes):
            parts = []
            for d in rd:
                if cfg.resblock == "1":
                    parts.append(_residual(_chain(_antialias(), _conv(rk, d), _antialias(), _conv(rk, 1))))
                else:
                    parts.append(_residual(_chain(_antialias(), _conv(rk, d))))
            blocks.append(_chain(*parts))
        layers += [_conv_transpose(k, u, (k - u) // 2), _residual(*blocks)]
    layers += [_antialias(), _conv(7)]
    return _frames_of(_chain(*layers), cfg.hop_size)


def waveglow_receptive_field(cfg: Any, denoise: bool = False) -> ReceptiveField:
    """The mel up-sampler (ConvTranspose1d k 1024, stride 256, the official hard-coded one; no padding), then
    in groups of n_group samples n_flows couplings, each a WN of n_layers convs of kernel_size with dilation
    2**i (the 1x1 convs, the conditioning and the invertible convs are pointwise). With the denoiser: its STFT
    and inverse STFT (filter_length 1024, hop 256: 4 frames either side, plus the frame of the sample)."""
    g = cfg.n_group
    wn = cfg.WN_config
    reach = (wn.kernel_size - 1) // 2 * (2 ** wn.n_layers - 1) * cfg.n_flows  # groups, either side
    up = _conv_transpose(1024, 256, 0)

    def net(a, b):
        a, b = (a // g - reach) * g, (b // g + reach) * g + g - 1
        return up(a, b)

    rf = _frames_of(net, cfg.hop_length)
    if denoise:
        rf = ReceptiveField(rf.left + 5, rf.right + 5)
    return rf


def receptive_field(model: Any, **opts) -> ReceptiveField:
    """The receptive field of a vocoder (``model.kind`` 'bigvgan' or 'waveglow') in mel frames."""
    if model.kind == "bigvgan":
        return bigvgan_receptive_field(model.config)
    if model.kind == "waveglow":
        return waveglow_receptive_field(model.config, denoise=bool(opts.get("denoise")))
    if model.kind == "codec-decoder":  # jaxvoc.models.codec_stream.DecoderWindows
        return model.rf
    raise UserError(f"no receptive field for a {model.kind} model")


def latency_ms(model: Any, rf: ReceptiveField | None = None) -> float:
    """A stream's latency: the right receptive field as time."""
    rf = rf or receptive_field(model)
    return 1000.0 * rf.right * model.hop_size / model.sampling_rate


def resolve_window(window: int | None, default: int, rf: ReceptiveField) -> int:
    """A command's ``--window``: ``default`` when not given, 0 for no windows, else checked against the
    receptive field."""
    if window is not None and window < 0:
        raise UserError("--window must be 0 (off) or a number of frames")
    window = default if window is None else window
    if window:
        check_window(window, rf)
    return window


def check_window(window: int, rf: ReceptiveField, what: str = "--window") -> None:
    if window <= rf.total:
        raise UserError(f"{what} {window} is too small: the model's receptive field spans {rf.left} + {rf.right} "
                        f"frames; give more than {rf.total} frames (or 0 for no windows)")


# ----------------------------------------------------------------------------------------------------------
# Windows of whole items


@dataclasses.dataclass(frozen=True)
class Window:
    item: int  # index of the item
    start: int  # first frame of the window in the item
    keep: tuple[int, int]  # frames [a, b) of the item whose audio this window gives


def plan_windows(frames: int, window: int, rf: ReceptiveField, item: int = 0) -> list[Window]:
    """Windows of ``window`` frames covering an item of ``frames`` frames (> window): the first at 0, interior
    ones every ``window - rf.total`` frames, the last ending at the item's end; each keeps frames whose receptive
    field lies inside it (or reaches past it only at the item's own edges), and consecutive keeps abut."""
    if frames <= window:
        return [Window(item, 0, (0, frames))]
    step = window - rf.total
    starts = list(range(0, frames - window, step)) + [frames - window]
    out, done = [], 0
    for i, s in enumerate(starts):
        end = frames if i == len(starts) - 1 else s + window - rf.right
        assert s == 0 or s + rf.left <= done, (s, done)
        out.append(Window(item, s, (done, end)))
        done = end
    return out


def synthesize_long(model: Any, mels, window: int | None = None, batch: int = 1, **opts) -> list[np.ndarray]:
    """Audio of mels of any length (a list of [frames, num_mels] arrays, or one [frames, num_mels] / [B, frames,
    num_mels] array), through windows of ``window`` frames, ``batch`` windows per call: one compiled program for
    every item longer than a window. Items no longer than a window are synthesized whole at their own length.
    Returns a list of float32 arrays [frames * hop_size] (one per item) equal to the unwindowed output."""
    window = window or default_window(receptive_field(model, **opts))
    if isinstance(mels, np.ndarray) or hasattr(mels, "shape"):
        arr = np.asarray(mels, np.float32)
        mels = [arr] if arr.ndim == 2 else list(arr)
    out: list[np.ndarray | None] = [None] * len(mels)
    long_items = []
    for i, m in enumerate(mels):
        if len(m) <= window:
            out[i] = np.asarray(model.vocode(np.asarray(m, np.float32)[None], **opts))[0]
        else:
            long_items.append(i)
            out[i] = np.empty(len(m) * model.hop_size, np.float32)
    for i, w, audio in run_windows(model, [(i, mels[i]) for i in long_items], window, batch, **opts):
        a, b = w.keep
        out[i][a * model.hop_size:b * model.hop_size] = audio
    return out  # type: ignore[return-value]


def run_windows(model: Any, items: list[tuple[int, Any]], window: int, batch: int = 1,
                **opts) -> Iterator[tuple[int, Window, np.ndarray]]:
    """Yields (item id, window, audio of its kept frames) in order, item by item, window by window. ``items``:
    (id, mel) pairs, each mel [frames, num_mels] any array-like that can be sliced by frames (a memory map
    too: only one window of frames per call is read). Calls are [batch, window, num_mels]; a short last call
    is filled with copies of its first window."""
    rf = receptive_field(model, **opts)
    check_window(window, rf)
    hop = model.hop_size
    plan = [(iid, mel, w) for iid, mel in items for w in plan_windows(len(mel), window, rf)]
    for j in range(0, len(plan), batch):
        chunk = plan[j:j + batch]
        x = np.stack([np.asarray(mel[w.start:w.start + window], np.float32) for _, mel, w in chunk])
        starts = np.array([w.start for _, _, w in chunk], np.int64)
        if len(chunk) < batch:
            x = np.concatenate([x, np.repeat(x[:1], batch - len(chunk), 0)])
            starts = np.concatenate([starts, np.repeat(starts[:1], batch - len(chunk))])
        audio = np.asarray(model.vocode(x, **opts, **model.window_options(starts)))
        for r, (iid, _, w) in enumerate(chunk):
            a, b = w.keep
            yield iid, w, audio[r, (a - w.start) * hop:(b - w.start) * hop]


# ----------------------------------------------------------------------------------------------------------
# Streaming


class Stream:
    """Exact streaming synthesis: ``push(frames [n, num_mels])`` -> the audio that is final so far; ``flush()``
    -> the rest. The concatenation equals ``model(mel)`` on the whole input for any split into pushes.

    Each push runs windows of ``window`` frames (one compiled program, whatever the push sizes): the window ends
    at the last frame received (or starts at frame 0 while fewer than ``window`` frames came, the unreceived
    rest filled with silence, which the emitted samples do not read), and the audio up to ``right`` frames
    before the end is final. A push of more than ``window - left - right`` frames runs several windows.
    ``flush`` runs one window aligned to the true end; a stream shorter than a window is synthesized whole at
    its own length then (one more program). Latency: ``rf.right`` frames (``latency_ms``)."""

    def __init__(self, model: Any, window: int | None = None, **opts):
        self.model = model
        self.opts = opts
        self.rf = receptive_field(model, **opts)
        window = window or default_stream_window(self.rf)
        check_window(window, self.rf, "window")
        self.window = window
        self.hop = model.hop_size
        self._frames = np.empty((0, model.num_mels), np.float32)  # received, from frame self._base on
        self._base = 0  # absolute index of self._frames[0]
        self._received = 0
        self._done = 0  # frames whose audio was returned
        self._flushed = False
        self._compiled = False

    @property
    def latency_frames(self) -> int:
        return self.rf.right

    @property
    def latency_ms(self) -> float:
        return latency_ms(self.model, self.rf)

    def _run(self, start: int, end: int, emit_to: int) -> np.ndarray:
        """One window [start, start + window) of which frames < end are received; audio of [done, emit_to)."""
        W = self.window
        x = np.full((1, W, self.model.num_mels), self.model.silence_level, np.float32)
        have = self._frames[start - self._base:end - self._base]
        x[0, :len(have)] = have
        audio = np.asarray(self.model.vocode(x, **self.opts, **self.model.window_options(np.array([start]))))[0]
        self._compiled = True
        out = audio[(self._done - start) * self.hop:(emit_to - start) * self.hop]
        self._done = emit_to
        return out

    def push(self, frames) -> np.ndarray:
        if self._flushed:
            raise UserError("push after flush; start a new stream")
        frames = np.asarray(frames, np.float32)
        if frames.ndim != 2 or frames.shape[1] != self.model.num_mels:
            raise UserError(f"push takes mel frames [n, {self.model.num_mels}], got shape {frames.shape}")
        self._frames = np.concatenate([self._frames, frames])
        total = self._received + len(frames)
        W, L, R = self.window, self.rf.left, self.rf.right
        pieces = []
        while True:
            # the furthest end a window can have while still reading the left field of the first unsent sample
            end = min(total, W + max(0, self._done - L))
            if end - R > self._done:
                pieces.append(self._run(max(0, end - W), end, end - R))
            if end >= total:
                break
        if not self._compiled:  # compile (and run once) the window program now, so no later push compiles
            self._run(0, total, self._done)
        self._received = total
        keep_from = max(0, min(self._done - L, total - W))
        self._frames = self._frames[keep_from - self._base:]
        self._base = keep_from
        return np.concatenate(pieces) if pieces else np.zeros(0, np.float32)

    def flush(self) -> np.ndarray:
        if self._flushed:
            return np.zeros(0, np.float32)
        self._flushed = True
        T = self._received
        if T == 0 or self._done >= T:
            return np.zeros(0, np.float32)
        if T <= self.window:  # shorter than a window: the plain call at the stream's length
            audio = np.asarray(self.model.vocode(self._frames[None, :T - self._base], **self.opts))[0]
            return audio[self._done * self.hop:]
        return self._run(T - self.window, T, T)
