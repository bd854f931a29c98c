"""WaveGlow checkpoints -> jaxvoc checkpoint, and the official PyTorch model for comparisons.

Accepted sources (``convert(src, config=None)``):

* the published full-object pickles ``{"model": <WaveGlow object>, ...}`` whose classes come from a module
  named ``glow`` (or ``glow_old`` for the first release), read with :mod:`conversion.safe_pickle`: the
  pickled classes are never imported and nothing in the file runs;
* state dicts, ``{"state_dict": ...}`` (NGC / DeepLearningExamples) or bare, with or without ``module.``.

Every WN layout is accepted and converted to the current fused one: per-layer ``cond_layers.i`` (glow_old.py,
glow.py before August 2019, DeepLearningExamples) are concatenated into ``cond_layer``, separate
``res_layers.i`` / ``skip_layers.i`` (the first release) into ``res_skip_layers.i`` — the same
concatenation as the official ``convert_model.py``. The config comes from ``--config``, else from the pickled
object's attributes, else from the tensor shapes.
"""

from __future__ import annotations

import contextlib
import functools
import os
import re
import sys
from typing import Any, Iterator, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from conversion import common, safe_pickle
from jaxvoc.errors import UserError
from jaxvoc.models.waveglow import UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, WaveGlow, WaveGlowConfig, WNConfig, noise_shapes

RECORD_MODULES = ("glow", "glow_old", "waveglow", "waveglow.*")


# ----------------------------------------------------------------------------------------------------------
# Reading


def read_checkpoint(path: str) -> tuple[dict[str, np.ndarray], dict]:
    """(numpy state dict in the file's own layout, info) of any accepted source. ``info``: 'format'
    ('object' or 'state_dict'), 'class' (the pickled model class, for objects) and 'attrs' (its
    config attributes)."""
    obj = safe_pickle.load(path, RECORD_MODULES)
    info: dict[str, Any] = {"format": "state_dict", "class": None, "attrs": {}}
    model = None
    if isinstance(obj, safe_pickle.Record):
        model = obj
    elif isinstance(obj, dict) and isinstance(obj.get("model"), safe_pickle.Record):
        model = obj["model"]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if model is not None:
        if model.name != "WaveGlow":
            raise UserError(f"{path}: the pickled model is a {model.qualified_name}, not a WaveGlow")
        info.update(format="object", **{"class": model.qualified_name})
        info["attrs"] = _model_attrs(model)
        sd = safe_pickle.module_state_dict(model)
    else:
        if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
            sd = obj["state_dict"]
        elif isinstance(obj, dict):
            sd = obj
        else:
            raise UserError(f"{path} holds a {type(obj).__name__}; expected a WaveGlow checkpoint "
                            "({'model': WaveGlow} or a state dict)")
    if not sd:
        raise UserError(f"{path}: the checkpoint holds no tensors")
    info["weight_norm"] = common.weight_norm_style(sd)
    return common.to_numpy_state_dict(sd, path), info


def _model_attrs(model: safe_pickle.Record) -> dict:
    """Config attributes of a pickled WaveGlow (ints only; absent ones left out)."""
    out = {}
    for k in ("n_flows", "n_group", "n_early_every", "n_early_size", "n_remaining_channels"):
        v = model.attrs.get(k)
        if isinstance(v, int):
            out[k] = v
    wns = model.children().get("WN")
    first = wns.children().get("0") if wns is not None else None
    if first is not None:
        for k in ("n_layers", "n_channels"):
            v = first.attrs.get(k)
            if isinstance(v, int):
                out[k] = v
        in_layers = first.children().get("in_layers")
        conv = in_layers.children().get("0") if in_layers is not None else None
        ks = conv.attrs.get("kernel_size") if conv is not None else None
        if isinstance(ks, tuple) and ks and isinstance(ks[0], int):
            out["kernel_size"] = ks[0]
    up = model.children().get("upsample")
    if up is not None:
        for k in ("kernel_size", "stride"):
            v = up.attrs.get(k)
            if isinstance(v, tuple) and v and isinstance(v[0], int):
                out["upsample_" + k] = v[0]
    return out


_LAYER = re.compile(r"^WN\.(\d+)\.(cond_layers|res_layers|skip_layers)\.(\d+)\.(weight|weight_g|weight_v|bias)$")


def _fold(g: np.ndarray, v: np.ndarray) -> np.ndarray:
    norm = np.sqrt(np.sum(v.astype(np.float64) ** 2, axis=tuple(range(1, v.ndim)), keepdims=True))
    return (v * (g / norm)).astype(np.float32)


def _concat_layers(parts: list[dict[str, np.ndarray]], name: str) -> dict[str, np.ndarray]:
    """Concatenates 1x1 conv layers along output channels (weight-normed pairs stay pairs: the norm is per
    output channel, so the concatenation keeps every effective weight)."""
    if all("weight_g" in p and "weight_v" in p for p in parts):
        out = {"weight_g": np.concatenate([p["weight_g"] for p in parts]),
               "weight_v": np.concatenate([p["weight_v"] for p in parts])}
    else:
        ws = []
        for p in parts:
            if "weight" in p:
                ws.append(p["weight"])
            elif "weight_g" in p and "weight_v" in p:
                ws.append(_fold(p["weight_g"], p["weight_v"]))
            else:
                raise UserError(f"{name}: a layer lacks its weight")
        out = {"weight": np.concatenate(ws)}
    if any("bias" in p for p in parts):
        if not all("bias" in p for p in parts):
            raise UserError(f"{name}: some layers lack their bias")
        out["bias"] = np.concatenate([p["bias"] for p in parts])
    return out


def fuse_layouts(sd: dict[str, np.ndarray], source: str) -> dict[str, np.ndarray]:
    """Old WN layouts -> the fused one (cond_layers.i -> cond_layer; res_layers.i + skip_layers.i ->
    res_skip_layers.i), as the official convert_model.py does."""
    groups: dict[tuple[int, str], dict[int, dict[str, np.ndarray]]] = {}
    out = {}
    for k, v in sd.items():
        m = _LAYER.match(k)
        if m is None:
            out[k] = v
            continue
        flow, kind, i, leaf = int(m.group(1)), m.group(2), int(m.group(3)), m.group(4)
        groups.setdefault((flow, kind), {}).setdefault(i, {})[leaf] = v
    flows = sorted({f for f, _ in groups})
    for f in flows:
        cond = groups.get((f, "cond_layers"))
        if cond:
            idx = sorted(cond)
            if idx != list(range(len(idx))):
                raise UserError(f"{source}: WN.{f}.cond_layers has gaps ({idx})")
            for leaf, val in _concat_layers([cond[i] for i in idx], f"{source}: WN.{f}.cond_layers").items():
                out[f"WN.{f}.cond_layer.{leaf}"] = val
        res, skip = groups.get((f, "res_layers"), {}), groups.get((f, "skip_layers"), {})
        if res or skip:
            n = len(skip)
            if sorted(skip) != list(range(n)) or sorted(res) != list(range(n - 1)):
                raise UserError(f"{source}: WN.{f} has {len(res)} res_layers and {n} skip_layers; expected "
                                "one res layer fewer than skip layers")
            for i in range(n):
                parts = [res[i], skip[i]] if i < n - 1 else [skip[i]]
                for leaf, val in _concat_layers(parts, f"{source}: WN.{f}.res/skip_layers.{i}").items():
                    out[f"WN.{f}.res_skip_layers.{i}.{leaf}"] = val
    return out


def _count(sd: dict, pattern: str) -> int:
    rx = re.compile(pattern)
    return len({m.group(1) for k in sd for m in [rx.match(k)] if m})


def _shape(sd: dict, *keys: str) -> tuple[int, ...] | None:
    for k in keys:
        if k in sd:
            return tuple(sd[k].shape)
    return None


def infer_config(sd: dict[str, np.ndarray], attrs: dict, source: str, glow_old: bool = False) -> WaveGlowConfig:
    """The WaveGlow config of a fused state dict: the pickled attributes where present, else the shapes."""
    def need(shape, what):
        if shape is None:
            raise UserError(f"{source}: cannot infer the WaveGlow config (no {what}); pass --config FILE")
        return shape

    up = need(_shape(sd, "upsample.weight"), "upsample.weight")
    if len(up) != 3 or up[0] != up[1] or up[2] != UPSAMPLE_KERNEL:
        raise UserError(f"{source}: upsample.weight is {up}; WaveGlow's is [n_mel, n_mel, {UPSAMPLE_KERNEL}]")
    for k, want in (("upsample_kernel_size", UPSAMPLE_KERNEL), ("upsample_stride", UPSAMPLE_STRIDE)):
        if k in attrs and attrs[k] != want:
            raise UserError(f"{source}: the model's {k.replace('_', ' ')} is {attrs[k]}, not {want}: unsupported")
    n_flows = attrs.get("n_flows") or _count(sd, r"^WN\.(\d+)\.")
    if n_flows < 1:
        raise UserError(f"{source}: no WN.* tensors; is this a WaveGlow checkpoint?")
    sizes = []
    for k in range(n_flows):
        s = need(_shape(sd, f"convinv.{k}.conv.weight"), f"convinv.{k}.conv.weight")
        sizes.append(s[0])
    n_group = attrs.get("n_group", sizes[0])
    drops = [k for k in range(1, n_flows) if sizes[k] != sizes[k - 1]]
    if "n_early_every" in attrs and "n_early_size" in attrs:
        every, size = attrs["n_early_every"], attrs["n_early_size"]
    elif drops:
        every, size = drops[0], sizes[0] - sizes[drops[0]]
    else:
        every, size = max(n_flows, 1), 2  # nothing leaves early: any n_early_every >= n_flows is the same model
    start = need(_shape(sd, "WN.0.start.weight_v", "WN.0.start.weight"), "WN.0.start weight")
    in0 = need(_shape(sd, "WN.0.in_layers.0.weight_v", "WN.0.in_layers.0.weight"), "WN.0.in_layers.0 weight")
    wn = WNConfig(n_layers=attrs.get("n_layers") or _count(sd, r"^WN\.0\.in_layers\.(\d+)\."),
                  n_channels=attrs.get("n_channels", start[0]), kernel_size=attrs.get("kernel_size", in0[2]))
    cfg = WaveGlowConfig(n_mel_channels=up[0], n_flows=n_flows, n_group=n_group, n_early_every=every,
                         n_early_size=size, WN_config=wn, glow_old=glow_old)
    cfg.validate(source)
    return cfg


def expected_tree(config: WaveGlowConfig) -> dict:
    mel = jnp.zeros((1, 4, config.n_mel_channels), jnp.float32)
    audio = jnp.zeros((1, 4 * UPSAMPLE_STRIDE), jnp.float32)
    return common.expected_shapes(lambda: WaveGlow(config).init(jax.random.PRNGKey(0), mel, audio)["params"])


def load_state_dict(src: str, config: str | WaveGlowConfig | None = None, info_out: dict | None = None
                    ) -> tuple[dict[str, np.ndarray], WaveGlowConfig]:
    """(fused numpy state dict with official key names, config) of any accepted source; ``info_out`` (a dict)
    receives :func:`read_checkpoint`'s info."""
    if not os.path.exists(src):
        raise UserError(f"checkpoint not found: {src}")
    sd, info = read_checkpoint(src)
    if info_out is not None:
        info_out.update(info)
    sd = fuse_layouts(common.normalize_keys(sd), src)
    glow_old = bool(info["class"]) and info["class"].split(".")[-2] == "glow_old"
    if isinstance(config, WaveGlowConfig):
        cfg = config
    elif config is not None:
        cfg = WaveGlowConfig.from_json(config)
    else:
        cfg = infer_config(sd, info["attrs"], src, glow_old)
    if glow_old and not cfg.glow_old:
        import dataclasses

        cfg = dataclasses.replace(cfg, glow_old=True)
        cfg.validate(src)
    return sd, cfg


def convert(src: str, config: str | None = None) -> common.Converted:
    """(config dict, weight-normed params, no extra trees) of a WaveGlow checkpoint (``config``: a config.json to
    use instead of the one inferred)."""
    info: dict = {}
    sd, cfg = load_state_dict(src, config, info)
    params = common.state_dict_to_params(sd, expected_tree(cfg), src, transposed=_transposed)
    out = cfg.to_dict()
    if info["weight_norm"] == "parametrizations":  # not the official glow.py's style: recorded for export
        out[common.WEIGHT_NORM_KEY] = "parametrizations"
    return common.Converted(out, params, {})


def _transposed(path: tuple[str, ...]) -> bool:
    return path[0] == "upsample"  # the one ConvTranspose1d


STATE_DICT_FILE = "waveglow.pt"


def export(config: dict, trees: dict, out_dir: str, source: str) -> list[str]:
    """Writes ``waveglow.pt`` = ``{'state_dict': state_dict}`` (what ``waveglow.glow.WaveGlow(**
    waveglow_config).load_state_dict(torch.load(f)['state_dict'])`` takes: the fused WN layout of the current
    glow.py; for a glow_old model the per-layer ``cond_layers`` of glow_old.py) and ``config.json`` in the
    official layout (``waveglow_config`` with the constructor's arguments, ``data_config`` with the mel
    settings; ``glow_old: true`` added for such models). The official model built from the config gives the
    key order and loads the state dict strictly (a check of names and shapes). Returns the files written."""
    import json

    import torch

    cfg = WaveGlowConfig.from_dict(config, source)
    sd = common.to_torch(common.params_to_state_dict(trees["params"], transposed=_transposed))
    if cfg.glow_old:
        sd = split_cond_state(sd, cfg)
    model = official_model(cfg)
    official = model.state_dict()
    common.load_strict(model, sd, "WaveGlow", source)
    sd = {k: sd[k] for k in official}
    torch.save({"state_dict": common.with_weight_norm_style(sd, config.get(common.WEIGHT_NORM_KEY))},
               os.path.join(out_dir, STATE_DICT_FILE))
    d = cfg.to_dict()
    if not cfg.glow_old:
        del d["glow_old"]
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(d, f, indent=2)
    return [STATE_DICT_FILE, "config.json"]


# ----------------------------------------------------------------------------------------------------------
# The official PyTorch side (tests, compare, bench)


def official_config_kwargs(cfg: WaveGlowConfig) -> dict:
    return dict(n_mel_channels=cfg.n_mel_channels, n_flows=cfg.n_flows, n_group=cfg.n_group,
                n_early_every=cfg.n_early_every, n_early_size=cfg.n_early_size,
                WN_config=dict(n_layers=cfg.WN_config.n_layers, n_channels=cfg.WN_config.n_channels,
                               kernel_size=cfg.WN_config.kernel_size))


def official_model(cfg: WaveGlowConfig, state_dict: dict | None = None, seed: int | None = None):
    """The official ``waveglow.glow.WaveGlow`` (``glow_old.WaveGlow`` for glow_old configs, with its
    per-layer cond convs); random weights from ``seed`` when no state dict (fused layout, numpy or torch)."""
    import torch

    if seed is not None:
        torch.manual_seed(seed)
    with _quiet():
        if cfg.glow_old:
            from waveglow import glow_old as mod
        else:
            from waveglow import glow as mod
        model = mod.WaveGlow(**official_config_kwargs(cfg))
    if state_dict is not None:
        sd = {k: torch.as_tensor(np.asarray(v)) for k, v in state_dict.items()}
        if cfg.glow_old:
            sd = split_cond_state(sd, cfg)
        model.load_state_dict(sd)
    return model.eval()


def split_cond_state(sd: dict, cfg: WaveGlowConfig) -> dict:
    """Fused cond_layer tensors -> per-layer cond_layers.i (the inverse of the fusion)."""
    out = {}
    step = 2 * cfg.WN_config.n_channels
    for k, v in sd.items():
        m = re.match(r"^(WN\.\d+)\.cond_layer\.(\w+)$", k)
        if not m:
            out[k] = v
            continue
        for i in range(cfg.WN_config.n_layers):
            out[f"{m.group(1)}.cond_layers.{i}.{m.group(2)}"] = v[i * step:(i + 1) * step].clone()
    return out


@contextlib.contextmanager
def _quiet():
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        yield


def randomize_(model, seed: int, end_scale: float = 0.1, w_scale: float = 0.1) -> None:
    """Non-trivial weights in place: the official init zeroes every WN ``end`` layer (the couplings then do
    nothing) and makes the 1x1 convs orthonormal (log-determinant 0). ``end`` gets weights giving log-scales
    and shifts of roughly ``end_scale``; biases get small values; every W = Q + noise (det kept > 0)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for wn in model.WN:
            end = wn.end
            fan_in = end.weight.shape[1]
            end.weight.copy_(torch.randn(end.weight.shape, generator=g) * end_scale / (3 * fan_in ** 0.5))
            end.bias.copy_(torch.randn(end.bias.shape, generator=g) * end_scale)
        for name, p in model.named_parameters():
            if name.endswith("bias") and ".end." not in name:
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)
        for inv in model.convinv:
            w = inv.conv.weight
            c = w.shape[0]
            while True:
                new = w[..., 0] + torch.randn((c, c), generator=g) * w_scale / c ** 0.5
                if torch.det(new.double()) > 0:
                    break
            w.copy_(new[..., None])


@contextlib.contextmanager
def official_denoiser_on_cpu(float64: bool = False) -> Iterator[None]:
    """The official ``waveglow.denoiser.Denoiser`` on the CPU: its ``.cuda()`` calls become no-ops; with
    ``float64`` its STFT module's ``.cuda()`` becomes ``.double()`` and tensors' ``.float()`` a no-op, so with a
    ``.double()`` model and float64 audio everything stays float64 (the float64 reference run). Use together
    with :func:`official_noise` (its bias audio calls infer)."""
    import torch

    saved = torch.nn.Module.cuda, torch.Tensor.cuda, torch.Tensor.float
    torch.nn.Module.cuda = (lambda self, *a, **k: self.double()) if float64 else (lambda self, *a, **k: self)
    torch.Tensor.cuda = lambda self, *a, **k: self
    if float64:
        torch.Tensor.float = lambda self, *a, **k: self
    try:
        yield
    finally:
        torch.nn.Module.cuda, torch.Tensor.cuda, torch.Tensor.float = saved


@contextlib.contextmanager
def official_noise(draws: Sequence[Any] | None = None, seed: int = 0, dtype=None, device=None) -> Iterator[list]:
    """Replaces the official infer's ``torch.cuda.FloatTensor(...).normal_()`` (CUDA only) by tensors on
    ``device`` (default the CPU): the given ``draws`` in order (channels-first torch tensors or numpy arrays), or
    seeded normal noise, as ``dtype`` (float32; float64 for a ``.double()`` model). Yields the list of tensors
    handed out."""
    import torch

    given = list(draws) if draws is not None else None
    handed: list = []
    gen = torch.Generator().manual_seed(seed)

    class _Pending:
        def __init__(self, *size):
            self.size = tuple(int(s) for s in size)

        def normal_(self):
            if given is not None:
                if not given:
                    raise AssertionError("the official infer drew more noise than given")
                t = torch.as_tensor(np.asarray(given.pop(0))).to(device or "cpu", dtype or torch.float32)
                if tuple(t.shape) != self.size:
                    raise AssertionError(f"noise of shape {tuple(t.shape)} given, {self.size} drawn")
            else:
                t = torch.randn(self.size, generator=gen).to(device or "cpu", dtype or torch.float32)
            handed.append(t)
            return t

    had = {n: getattr(torch.cuda, n, None) for n in ("FloatTensor", "HalfTensor")}
    torch.cuda.FloatTensor = _Pending
    torch.cuda.HalfTensor = _Pending
    try:
        yield handed
    finally:
        for n, v in had.items():
            if v is None:
                delattr(torch.cuda, n)
            else:
                setattr(torch.cuda, n, v)


def double_model(model):
    """A float64 copy of an official model for reference runs: ``.double()``, with every invertible conv's
    cached inverse computed in float64 (the official infer would invert in float32 and cast)."""
    import torch

    detach_weight_norm_(model)
    import copy

    m64 = copy.deepcopy(model).double()
    with torch.no_grad():
        for inv in m64.convinv:
            inv.W_inverse = inv.conv.weight.squeeze().double().inverse()[..., None]
    return m64


def make_noise(cfg: WaveGlowConfig, batch: int, frames: int, seed: int) -> list[np.ndarray]:
    """Standard-normal draws for ``infer`` (channels-last, official order), from numpy's seeded generator."""
    rng = np.random.default_rng(seed)
    groups = frames * UPSAMPLE_STRIDE // cfg.n_group
    return [rng.standard_normal(s).astype(np.float32) for s in noise_shapes(cfg, batch, groups)]


def to_torch_noise(noise: Sequence[np.ndarray]) -> list[np.ndarray]:
    """Channels-last draws -> the official channels-first layout."""
    return [np.ascontiguousarray(np.asarray(n).transpose(0, 2, 1)) for n in noise]


@contextlib.contextmanager
def tacotron_librosa() -> Iterator[None]:
    """The packaged tacotron2 calls librosa.filters.mel positionally (librosa < 0.10); give it keywords."""
    import librosa
    from tacotron2 import layers

    orig = layers.librosa_mel_fn
    layers.librosa_mel_fn = lambda sr, n_fft, n_mels, fmin, fmax: librosa.filters.mel(
        sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)
    try:
        yield
    finally:
        layers.librosa_mel_fn = orig


def official_stft(cfg: WaveGlowConfig):
    """tacotron2.layers.TacotronSTFT with the config's data settings (cached: its constructor takes a pinv of
    the Fourier basis, seconds)."""
    return _official_stft(cfg.filter_length, cfg.hop_length, cfg.win_length, cfg.n_mel_channels, cfg.sampling_rate,
                          cfg.mel_fmin, cfg.mel_fmax)


@functools.lru_cache(maxsize=4)
def _official_stft(filter_length, hop_length, win_length, n_mel_channels, sampling_rate, mel_fmin, mel_fmax):
    from tacotron2.layers import TacotronSTFT

    cfg = WaveGlowConfig(filter_length=filter_length, hop_length=hop_length, win_length=win_length,
                         n_mel_channels=n_mel_channels, sampling_rate=sampling_rate, mel_fmin=mel_fmin,
                         mel_fmax=mel_fmax)
    with tacotron_librosa():
        return TacotronSTFT(filter_length=cfg.filter_length, hop_length=cfg.hop_length, win_length=cfg.win_length,
                            n_mel_channels=cfg.n_mel_channels, sampling_rate=cfg.sampling_rate,
                            mel_fmin=cfg.mel_fmin, mel_fmax=cfg.mel_fmax)


def official_mel(audio: np.ndarray, cfg: WaveGlowConfig):
    """The official log-mel of float32 audio in [-1, 1]: torch [1, n_mel, frames]."""
    import torch

    stft = official_stft(cfg)
    with torch.no_grad():
        return stft.mel_spectrogram(torch.from_numpy(np.asarray(audio, np.float32)).reshape(1, -1))


@contextlib.contextmanager
def module_alias(model_module: str, name: str) -> Iterator[None]:
    """Makes pickle name the classes of ``waveglow.<model_module>`` as module ``name`` (e.g. 'glow'), as in
    the published checkpoints, which were saved from a top-level glow.py / glow_old.py."""
    import importlib

    mods = {m: importlib.import_module(f"waveglow.{m}") for m in ("glow", "glow_old")}
    mod = mods[model_module]
    patched = []
    for m in mods.values():
        for obj in vars(m).values():
            if isinstance(obj, type) and obj.__module__ == m.__name__:
                patched.append((obj, obj.__module__))
                obj.__module__ = m.__name__.split(".")[-1]
    saved = {k: sys.modules.get(k) for k in mods}
    for k, m in mods.items():
        sys.modules[k] = m
    try:
        yield
    finally:
        for obj, old in patched:
            obj.__module__ = old
        for k, m in saved.items():
            if m is None:
                sys.modules.pop(k, None)
            else:
                sys.modules[k] = m
    del mod, name


def save_full_object(path: str, model, legacy: bool = False, extra: dict | None = None) -> str:
    """A checkpoint as published: ``torch.save({"model": <object>, "iteration": ..., ...})`` with the classes
    named from module ``glow`` (``glow_old`` for glow_old models). ``legacy``: torch's pre-1.6 format."""
    import torch

    which = "glow_old" if type(model).__module__.endswith("glow_old") else "glow"
    obj = {"model": model, "iteration": 580000, "optimizer": None, "learning_rate": 1e-4, **(extra or {})}
    with module_alias(which, which):
        torch.save(obj, path, _use_new_zipfile_serialization=not legacy)
    return path


def save_state_dict(path: str, model, wrap: bool = True, prefix: str = "") -> str:
    """A state-dict checkpoint: ``{"state_dict": sd}`` (``wrap``) or bare, keys prefixed (e.g. 'module.')."""
    import torch

    sd = {prefix + k: v for k, v in model.state_dict().items()}
    torch.save({"state_dict": sd, "epoch": 1} if wrap else sd, path)
    return path


def detach_weight_norm_(model):
    """Makes a weight-normed torch model deep-copyable (torch refuses to copy the cached non-leaf ``weight``
    that weight_norm keeps; it is recomputed by the hook on every forward anyway). Returns the model."""
    for mod in model.modules():
        if "weight_g" in mod._parameters and isinstance(getattr(mod, "weight", None), __import__("torch").Tensor):
            mod.weight = mod.weight.detach()
    return model


def unfuse_cond_(model) -> None:
    """In place: every WN's fused cond_layer -> per-layer weight-normed ``cond_layers`` (the layout of
    glow.py before August 2019 and of DeepLearningExamples)."""
    import torch

    for wn in model.WN:
        fused = wn.cond_layer
        step = 2 * wn.n_channels
        layers = torch.nn.ModuleList()
        for i in range(wn.n_layers):
            conv = torch.nn.Conv1d(fused.in_channels, step, 1)
            with _quiet():
                conv = torch.nn.utils.weight_norm(conv, name="weight")
            with torch.no_grad():
                conv.weight_g.copy_(fused.weight_g[i * step:(i + 1) * step])
                conv.weight_v.copy_(fused.weight_v[i * step:(i + 1) * step])
                conv.bias.copy_(fused.bias[i * step:(i + 1) * step])
            layers.append(conv)
        del wn.cond_layer
        wn.cond_layers = layers


def unfuse_res_skip_(model) -> None:
    """In place: every WN's res_skip_layers -> separate weight-normed ``res_layers`` / ``skip_layers`` (the
    first release's layout, which the official convert_model.py fuses)."""
    import torch

    for wn in model.WN:
        nc = wn.n_channels
        res, skip = torch.nn.ModuleList(), torch.nn.ModuleList()
        for i, fused in enumerate(wn.res_skip_layers):
            last = i == wn.n_layers - 1
            pieces = [(skip, slice(0, nc))] if last else [(res, slice(0, nc)), (skip, slice(nc, 2 * nc))]
            for target, sl in pieces:
                conv = torch.nn.Conv1d(nc, nc, 1)
                with _quiet():
                    conv = torch.nn.utils.weight_norm(conv, name="weight")
                with torch.no_grad():
                    conv.weight_g.copy_(fused.weight_g[sl])
                    conv.weight_v.copy_(fused.weight_v[sl])
                    conv.bias.copy_(fused.bias[sl])
                target.append(conv)
        del wn.res_skip_layers
        wn.res_layers, wn.skip_layers = res, skip


def compare(args) -> dict:
    """The official model (rebuilt from the converted tensors with the installed ``waveglow`` package, weight
    norm removed, inference mode) and the converted JAX model on one mel, with the same noise."""
    import torch

    from conversion import report as rp
    from jaxvoc.io.audio import BUNDLED_SPEECH, load_audio
    from jaxvoc.models.waveglow import Pretrained, nll

    if args.device != "cpu":
        raise UserError("compare waveglow runs on the CPU only (the official infer needs a CUDA noise patch)")
    sd, cfg = load_state_dict(args.src, getattr(args, "config", None))
    params = common.state_dict_to_params(sd, expected_tree(cfg), args.src, transposed=_transposed)
    path = args.input or BUNDLED_SPEECH
    audio = load_audio(path, cfg.sampling_rate)
    audio = audio[:len(audio) // cfg.hop_length * cfg.hop_length]
    mel = official_mel(audio, cfg)  # the official front-end feeds both models
    frames = mel.shape[-1]
    noise = make_noise(cfg, 1, frames, args.seed)
    sigma = float(args.sigma)
    model = official_model(cfg, sd)
    jmodel = Pretrained(cfg, params, dtype=getattr(args, "dtype", "float32"))
    mel_j = jnp.asarray(mel.numpy().transpose(0, 2, 1))
    audio_t = torch.from_numpy(np.ascontiguousarray(audio[: (frames - 1) * cfg.hop_length]))[None]
    # training direction and likelihood (weight norm kept, as in training); glow_old.py has no forward
    fwd = None
    if not cfg.glow_old:
        with torch.no_grad():
            z_t, log_s_t, log_det_t = model((mel, audio_t))
            loss_t = float(_official_loss(sigma)((z_t, log_s_t, log_det_t)))
        z_j, log_s_j, log_det_j = jmodel.forward(mel_j, jnp.asarray(audio_t.numpy()))
        loss_j = float(nll(z_j, log_s_j, log_det_j, sigma))
        z_snr = rp.snr_db(np.asarray(z_j), z_t.numpy().transpose(0, 2, 1))
        fwd = {"z_snr_db": z_snr, "nll_official": loss_t, "nll_jax": loss_j,
               "nll_relative_error": abs(loss_j - loss_t) / abs(loss_t)}
    with _quiet():
        model = model.remove_weightnorm(model)
    run_t = lambda: model.infer(mel, sigma=sigma)  # noqa: E731
    with torch.inference_mode(), official_noise(to_torch_noise(noise)):
        ref = run_t()[0].numpy()
    with torch.inference_mode(), official_noise(seed=args.seed):
        t_torch = rp.time_call(run_t, args.repeats, 1)
    dt = jmodel.dtype  # the noise drawn in float32 and rounded to it, as jmodel.vocode does
    infer_j = jax.jit(lambda p, m, s, n: jmodel.module.apply({"params": p}, m.astype(dt), jnp.asarray(s, dt),
                                                             [x.astype(dt) for x in n], method=WaveGlow.infer
                                                             ).astype(jnp.float32))
    noise_j = [jnp.asarray(n) for n in noise]
    out = np.asarray(infer_j(jmodel.params, mel_j, sigma, noise_j))[0]
    t_jax = rp.time_call(lambda: jmodel.vocode(mel_j, sigma=sigma, seed=args.seed), args.repeats, 1, rp.jax_sync)
    seconds = len(ref) / cfg.sampling_rate
    rows = [("frames", f"{frames} ({seconds:.2f} s of audio), sigma {sigma}, noise seed {args.seed}"),
            ("jaxvoc dtype", f"{jmodel.dtype} (official: float32)"),
            ("infer max abs error", f"{rp.max_abs(out, ref):.3e}"),
            ("infer SNR", f"{rp.snr_db(out, ref):.1f} dB"),
            ("infer log-mel L1", f"{rp.logmel_l1(out, ref, cfg.mel):.3e}")]
    if fwd is not None:
        rows += [("forward z SNR", f"{fwd['z_snr_db']:.1f} dB"),
                 ("NLL", f"official {fwd['nll_official']:.7g}, jax {fwd['nll_jax']:.7g} "
                         f"(relative error {fwd['nll_relative_error']:.2e})")]
    else:
        rows += [("forward / NLL", "n/a (glow_old.py has no training direction)")]
    rows += [("pytorch time", f"{t_torch * 1e3:.1f} ms ({seconds / t_torch:.2f}x real time)"),
            ("jax time", f"{t_jax * 1e3:.1f} ms ({seconds / t_jax:.2f}x real time)"),
            ("speed ratio", f"{t_torch / t_jax:.2f} (jax over pytorch)")]
    return {"rows": rows, "reference": ref, "jax": out, "mel_config": cfg.mel,
            "title": f"WaveGlow {os.path.basename(os.path.abspath(args.src))}",
            "max_abs": rp.max_abs(out, ref), "snr_db": rp.snr_db(out, ref),
            "logmel_l1": rp.logmel_l1(out, ref, cfg.mel), **(fwd or {}),
            "time_pytorch_s": t_torch, "time_jax_s": t_jax, "frames": int(frames), "sigma": sigma,
            "seed": int(args.seed)}


def _official_loss(sigma: float):
    from waveglow.glow import WaveGlowLoss

    return WaveGlowLoss(sigma)
