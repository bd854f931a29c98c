"""WavLM from a Hugging Face folder (``config.json`` + ``model.safetensors`` or ``pytorch_model.bin``) to a
jaxvoc parameter tree; the official model (transformers' ``WavLMModel``) for ``compare`` and the tests.

Reading: ``.bin`` with ``torch.load(weights_only=True)`` (never the full unpickler); ``.safetensors`` with the
``safetensors`` package when installed, else :func:`read_safetensors` (the format is a little-endian u64
header length, a JSON header of name -> dtype/shape/offsets, then the raw tensors). Keys may carry the
``wavlm.`` prefix of the task models (``WavLMForCTC`` ...; their heads are dropped) and either weight-norm
style of the positional convolution (``weight_g``/``weight_v`` or ``parametrizations.weight.original0/1``).
"""

from __future__ import annotations

import json
import os
import re
import struct
from typing import Any

import numpy as np

from conversion.common import (Converted, expected_shapes, load_torch_file, normalize_keys, state_dict_to_params,
                               to_numpy_state_dict)
from jaxvoc.errors import UserError
from jaxvoc.models.wavlm import WavLMConfig, init_params

CONFIG = "config.json"
WEIGHTS = ("model.safetensors", "pytorch_model.bin")
PREFIX = "wavlm."
# base-model entries that do not define the hidden states (the time-masking vector of pre-training)
IGNORED = ("masked_spec_embed",)
# microsoft/wavlm-base-plus (its config.json's architecture keys; the rest are transformers' defaults, which
# equal that file's): 94.4 M parameters, 13 hidden states of width 768
BASE_PLUS = dict(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, intermediate_size=3072,
                 conv_dim=[512] * 7, conv_bias=False, feat_extract_norm="group")

_ST_DTYPES = {"F64": np.float64, "F32": np.float32, "F16": np.float16, "I64": np.int64, "I32": np.int32,
              "I16": np.int16, "I8": np.int8, "U8": np.uint8, "BOOL": np.bool_}


def read_safetensors(path: str) -> dict[str, np.ndarray]:
    """A ``.safetensors`` file as numpy arrays (BF16 widened to float32), with one-line errors."""
    try:
        size = os.path.getsize(path)
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError("shorter than its header length")
            n = struct.unpack("<Q", head)[0]
            if n > size - 8:
                raise ValueError("header length past the end of the file")
            header = json.loads(f.read(n).decode("utf-8"))
            data = f.read()
    except (OSError, ValueError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not a readable safetensors file ({e})") from None
    if not isinstance(header, dict):
        raise UserError(f"{path} is not a readable safetensors file (its header is not an object)")
    out = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, shape, (start, end) = info["dtype"], tuple(int(s) for s in info["shape"]), info["data_offsets"]
        except (KeyError, TypeError, ValueError):
            raise UserError(f"{path}: entry {name!r} has a malformed header") from None
        if not 0 <= start <= end <= len(data):
            raise UserError(f"{path}: entry {name!r} lies past the end of the file; download it again")
        raw = data[start:end]
        if dtype == "BF16":
            a = (np.frombuffer(raw, "<u2").astype(np.uint32) << 16).view(np.float32)
        elif dtype in _ST_DTYPES:
            a = np.frombuffer(raw, np.dtype(_ST_DTYPES[dtype]).newbyteorder("<"))
        else:
            raise UserError(f"{path}: entry {name!r} has the unsupported dtype {dtype}")
        if a.size != int(np.prod(shape)):
            raise UserError(f"{path}: entry {name!r} holds {a.size} values for shape {list(shape)}")
        out[name] = a.reshape(shape).astype(np.float32 if a.dtype.kind == "f" else a.dtype.newbyteorder("="))
    return out


def _load_safetensors(path: str) -> dict[str, np.ndarray]:
    try:
        from safetensors.torch import load_file
    except ImportError:
        return read_safetensors(path)
    try:
        sd = load_file(path)
    except Exception as e:  # the package raises its own SafetensorError for damaged files
        raise UserError(f"{path} is not a readable safetensors file ({str(e).splitlines()[0][:160]})") from None
    return to_numpy_state_dict(sd, path)


def find_files(src: str) -> tuple[str, str]:
    """(config.json, weights file) of a Hugging Face folder."""
    if not os.path.exists(src):
        raise UserError(f"model folder not found: {src}")
    if not os.path.isdir(src):
        raise UserError(f"{src} is a file; give the Hugging Face model folder (config.json + model.safetensors "
                        "or pytorch_model.bin)")
    cfg = os.path.join(src, CONFIG)
    if not os.path.exists(cfg):
        raise UserError(f"{src} has no {CONFIG}; give a Hugging Face WavLM model folder")
    for name in WEIGHTS:
        if os.path.exists(os.path.join(src, name)):
            return cfg, os.path.join(src, name)
    if any(f.endswith(".index.json") for f in os.listdir(src)):
        raise UserError(f"{src} holds sharded weights, which jaxvoc does not read; save the model unsharded")
    raise UserError(f"{src} has no {' or '.join(WEIGHTS)}")


def read_config(path: str) -> WavLMConfig:
    try:
        with open(path) as f:
            d = json.load(f)
    except (OSError, ValueError) as e:
        raise UserError(f"{path} is not readable JSON ({str(e).splitlines()[0][:160]})") from None
    return WavLMConfig.from_dict(d, path)


def base_model_keys(sd: dict[str, Any]) -> dict[str, Any]:
    """The ``WavLMModel`` entries: a task model's ``wavlm.`` entries without the prefix (its heads dropped),
    or the whole dict; both weight-norm styles to ``weight_g``/``weight_v``."""
    if any(k.startswith(PREFIX) for k in sd):
        sd = {k[len(PREFIX):]: v for k, v in sd.items() if k.startswith(PREFIX)}
    return {k: v for k, v in normalize_keys(sd).items() if k not in IGNORED}


_NORM_WEIGHT = re.compile(r"(layer_norm|final_layer_norm)\.weight$")


def _rename(key: str) -> str:
    key = _NORM_WEIGHT.sub(r"\1.scale", key)
    return re.sub(r"rel_attn_embed\.weight$", "rel_attn_embed", key)


def convert_state_dict(sd: dict[str, np.ndarray], cfg: WavLMConfig, source: str) -> Any:
    sd = base_model_keys(sd)
    H = cfg.num_attention_heads
    for k, v in list(sd.items()):
        if k.endswith("gru_rel_pos_const") and tuple(np.shape(v)) == (1, H, 1, 1):
            sd[k] = np.reshape(v, (H,))  # stored [heads] in jaxvoc
    expected = expected_shapes(lambda: init_params(cfg))
    return state_dict_to_params(sd, expected, source, rename=_rename)


def load_state_dict(path: str) -> dict[str, np.ndarray]:
    if path.endswith(".safetensors"):
        return _load_safetensors(path)
    sd = load_torch_file(path)
    if not isinstance(sd, dict):
        raise UserError(f"{path} holds a {type(sd).__name__}, not a state dict")
    return to_numpy_state_dict(sd, path)


def convert(src: str, config: str | None = None) -> Converted:
    """A Hugging Face WavLM folder -> (config dict, parameter tree, {}). ``config`` overrides the folder's
    config.json."""
    if config is None:
        cfg_path, weights = find_files(src)
    else:
        cfg_path, weights = config, find_files_weights(src)
        if not os.path.exists(cfg_path):
            raise UserError(f"config not found: {cfg_path}")
    cfg = read_config(cfg_path)
    params = convert_state_dict(load_state_dict(weights), cfg, weights)
    return Converted(cfg.to_dict(), params, {})


def find_files_weights(src: str) -> str:
    """The weights file of ``src``: a Hugging Face folder, or the file itself."""
    if os.path.isdir(src):
        for name in WEIGHTS:
            if os.path.exists(os.path.join(src, name)):
                return os.path.join(src, name)
        raise UserError(f"{src} has no {' or '.join(WEIGHTS)}")
    if not os.path.exists(src):
        raise UserError(f"weights not found: {src}")
    return src


# ----------------------------------------------------------------------------------------------------------
# The official model


def official_model(src: str):
    """transformers' WavLMModel of a Hugging Face folder, eval mode."""
    try:
        from transformers import WavLMModel
    except ImportError:
        raise UserError("compare needs the transformers package (pip install transformers)") from None
    return WavLMModel.from_pretrained(src).eval()


def official_hidden_states(model, audio) -> tuple:
    import torch

    with torch.inference_mode():
        out = model(torch.as_tensor(audio), output_hidden_states=True)
    return tuple(h.numpy() for h in out.hidden_states)


def compare(args) -> dict:
    """transformers' WavLMModel and the converted JAX WavLM on one audio file (16 kHz): the SNR of every
    hidden state, and both timings."""
    import jax
    import jax.numpy as jnp
    import torch

    from conversion import report as rp
    from jaxvoc.dsp.stft import MelConfig
    from jaxvoc.io.audio import BUNDLED_SPEECH, load_audio
    from jaxvoc.models.wavlm import Pretrained

    tdev, jdev = rp.setup_device(args.device)
    config, params, _ = convert(args.src, getattr(args, "config", None))
    cfg = WavLMConfig.from_dict(config)
    audio = load_audio(args.input or BUNDLED_SPEECH, cfg.sample_rate)
    if len(audio) < cfg.min_samples:
        raise UserError(f"the input is too short ({len(audio)} samples); WavLM needs {cfg.min_samples}")
    model = official_model(args.src).to(tdev)
    a_t = torch.from_numpy(np.asarray(audio, np.float32)[None]).to(tdev)
    sync = rp.torch_sync(args.device)
    with torch.inference_mode():
        ref = [h[0].float().cpu().numpy() for h in model(a_t, output_hidden_states=True).hidden_states]
        t_torch = rp.time_call(lambda: model(a_t, output_hidden_states=True), args.repeats, 1, sync)
    with jax.default_device(jdev):
        jm = Pretrained(cfg, jax.device_put(params, jdev))
        a_j = jax.device_put(jnp.asarray(audio[None]), jdev)
        out = [np.asarray(h)[0] for h in jm(a_j)]
        t_jax = rp.time_call(lambda: jm(a_j), args.repeats, 1, rp.jax_sync)
    snrs = [rp.snr_db(o, r) for o, r in zip(out, ref)]
    rows = [("audio", f"{len(audio)} samples ({len(audio) / cfg.sample_rate:.2f} s), {ref[0].shape[0]} frames"),
            ("hidden state SNR (dB)", " ".join(f"{s:.1f}" for s in snrs)),
            ("worst SNR", f"{min(snrs):.1f} dB"),
            ("max abs error", f"{max(rp.max_abs(o, r) for o, r in zip(out, ref)):.3e}"),
            ("pytorch / jax", f"{t_torch * 1e3:.1f} ms / {t_jax * 1e3:.1f} ms"),
            ("speed ratio", f"{t_torch / t_jax:.2f} (jax over pytorch)")]
    mel = MelConfig(sampling_rate=cfg.sample_rate, n_fft=1024, num_mels=80, hop_size=256, win_size=1024)
    # the plot shows the input (a WavLM has no audio output)
    return {"rows": rows, "reference": np.asarray(audio), "jax": np.asarray(audio), "mel_config": mel,
            "title": f"WavLM {os.path.basename(os.path.abspath(args.src))} (input)", "snr_db": min(snrs),
            "snr_db_per_state": snrs, "time_pytorch_s": t_torch, "time_jax_s": t_jax, "frames": int(ref[0].shape[0])}
