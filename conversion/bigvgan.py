"""Official BigVGAN model folder (``config.json`` + ``bigvgan_generator.pt``) -> jaxvoc checkpoint, and the
official PyTorch model for comparisons."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import glob
import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from conversion import common
from jaxvoc.bigvgan import BigVGAN, BigVGANConfig
from jaxvoc.errors import UserError
from jaxvoc.layers import kaiser_sinc_filter

GENERATOR_FILE = "bigvgan_generator.pt"
DISCRIMINATOR_FILE = "bigvgan_discriminator_optimizer.pt"


def locate(src: str) -> tuple[str, str]:
    """(config.json, generator .pt) of a model folder, or of a .pt file with config.json beside it."""
    if not os.path.exists(src):
        raise UserError(f"source not found: {src}")
    folder = src if os.path.isdir(src) else os.path.dirname(os.path.abspath(src))
    config = os.path.join(folder, "config.json")
    if not os.path.exists(config):
        raise UserError(f"{folder} has no config.json; give the model folder as published (config.json + "
                        f"{GENERATOR_FILE})")
    if not os.path.isdir(src):
        return config, src
    gen = os.path.join(folder, GENERATOR_FILE)
    if os.path.exists(gen):
        return config, gen
    trained = sorted(glob.glob(os.path.join(folder, "g_*")))  # train.py's own checkpoints: g_00050000
    if trained:
        return config, trained[-1]
    raise UserError(f"{folder} has no {GENERATOR_FILE} (nor a g_* training checkpoint)")


def _take_filters(sd: dict[str, np.ndarray], source: str) -> tuple[dict[str, np.ndarray], tuple[float, ...] | None]:
    """The anti-aliasing filters are buffers in the state dict, all equal to the kaiser-sinc taps the official
    code computes in float32. Verify them (a model with other filters is refused rather than silently changed)
    and return them, exact, for the JAX model (a float64 computation of the taps misses some by an ulp)."""
    out = {}
    expected = kaiser_sinc_filter(0.25, 0.3, 12).astype(np.float32)
    found = None
    for k, v in sd.items():
        if k.endswith(".filter"):
            taps = np.asarray(v, np.float32).reshape(-1)
            if taps.shape != expected.shape or np.max(np.abs(taps - expected)) > 1e-6 or (
                    found is not None and not np.array_equal(taps, found)):
                raise UserError(f"{source}: {k} is not the standard 12-tap kaiser-sinc filter; this model is not "
                                "supported")
            found = taps
            continue
        out[k] = v
    return out, None if found is None else tuple(float(t) for t in found)


def expected_tree(config: BigVGANConfig) -> dict:
    mel = jnp.zeros((1, 4, config.num_mels), jnp.float32)
    return common.expected_shapes(lambda: BigVGAN(config).init(jax.random.PRNGKey(0), mel)["params"])


def convert_state_dict(sd: dict[str, Any], config: BigVGANConfig, source: str) -> tuple[BigVGANConfig, dict]:
    """(config with the checkpoint's exact anti-aliasing taps, weight-normed params)."""
    sd = common.normalize_keys(common.to_numpy_state_dict(sd, source))
    sd, taps = _take_filters(sd, source)
    params = common.state_dict_to_params(sd, expected_tree(config), source,
                                         transposed=lambda p: p[0].startswith("ups_"))
    return dataclasses.replace(config, jaxvoc_antialias_filter=taps), params


def convert(src: str, config: str | None = None) -> tuple[dict, dict]:
    """Returns (config dict, weight-normed params) of an official BigVGAN folder (``config``: a config.json
    to use instead of the one in the folder)."""
    if config is not None and os.path.isfile(src):
        config_path, gen_path = config, src
    else:
        config_path, gen_path = locate(src)
        config_path = config or config_path
    cfg = BigVGANConfig.from_json(config_path)
    obj = common.load_torch_file(gen_path)
    if isinstance(obj, dict) and "generator" in obj:
        sd = obj["generator"]
    elif isinstance(obj, dict):
        sd = obj
    else:
        raise UserError(f"{gen_path} holds a {type(obj).__name__}; expected {{'generator': state_dict}}")
    if not isinstance(sd, dict) or not sd:
        raise UserError(f"{gen_path}: the generator entry is empty or not a state dict")
    cfg, params = convert_state_dict(sd, cfg, gen_path)
    return cfg.to_dict(), params


# ----------------------------------------------------------------------------------------------------------
# The official PyTorch side (tests, compare, bench, demo)


def official_model(config: dict, state_dict: dict | None = None, seed: int | None = None):
    """The official ``bigvgan.BigVGAN`` from a config dict; random weights from ``seed`` when no state dict.
    Weight norm is kept (remove it with ``.remove_weight_norm()`` for inference timing)."""
    import torch
    from bigvgan import bigvgan as tb
    from bigvgan.env import AttrDict

    if seed is not None:
        torch.manual_seed(seed)
    model = tb.BigVGAN(AttrDict(dict(config)), use_cuda_kernel=False)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def randomize_(model, seed: int, scale: float = 1.0) -> None:
    """Gives every Snake alpha/beta non-trivial values (the official init makes them all equal, a weak test),
    in place and reproducibly."""
    import torch

    g = torch.Generator().manual_seed(seed)
    center = 0.0 if model.h.get("snake_logscale", True) else 1.0  # log-scale params live around 0, linear around 1
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith(".alpha") or name.endswith(".beta"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.3 * scale + center)
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.01)


def write_official_folder(out_dir: str, config: dict, seed: int = 0, parametrizations: bool = False) -> str:
    """Builds a stand-in model folder in the published layout (config.json + bigvgan_generator.pt with
    ``{'generator': state_dict}``) from the official package with random weights. ``parametrizations=True``
    saves the newer torch weight-norm key style (``parametrizations.weight.original0/1``)."""
    import torch

    model = official_model(config, seed=seed)
    randomize_(model, seed)
    sd = model.state_dict()
    if parametrizations:
        sd = {k.replace(".weight_g", ".parametrizations.weight.original0")
              .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in sd.items()}
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(config, f, indent=2)
    torch.save({"generator": sd}, os.path.join(out_dir, GENERATOR_FILE))
    return out_dir


def default_input() -> str:
    import jaxvoc

    return os.path.join(os.path.dirname(jaxvoc.__file__), "assets", "speech_24000.wav")


def official_mel(audio: np.ndarray, config: dict):
    """The official log-mel (``bigvgan.meldataset.get_mel_spectrogram``) of float32 audio: torch [1, M, T]."""
    import torch
    from bigvgan.env import AttrDict
    from bigvgan.meldataset import get_mel_spectrogram

    return get_mel_spectrogram(torch.from_numpy(np.asarray(audio, np.float32)).reshape(1, -1), AttrDict(config))


def compare(args) -> dict:
    """Official model (weight norm removed, inference mode) and the converted JAX model on one mel."""
    import torch

    from conversion import report as rp
    from jaxvoc.audio import load_audio
    from jaxvoc.bigvgan import Pretrained

    tdev, jdev = rp.setup_device(args.device)
    config, params = convert(args.src, getattr(args, "config", None))
    cfg = BigVGANConfig.from_dict(config)
    audio = load_audio(args.input or default_input(), cfg.sampling_rate)
    mel = official_mel(audio, config)  # the official front-end feeds both models
    _, gen_path = locate(args.src) if not getattr(args, "config", None) else (None, args.src)
    model = official_model(config, common.load_torch_file(gen_path).get("generator"))
    with contextlib.redirect_stdout(io.StringIO()):  # it prints "Removing weight norm..."
        model.remove_weight_norm()
    model = model.to(tdev)
    mel_t = mel.to(tdev)
    with jax.default_device(jdev):
        jmodel = Pretrained(cfg, jax.device_put(params, jdev))
        mel_j = jax.device_put(jnp.asarray(mel.numpy().transpose(0, 2, 1)), jdev)
        with torch.inference_mode():
            ref = model(mel_t)[0, 0].float().cpu().numpy()
            t_torch = rp.time_call(lambda: model(mel_t), args.repeats, 1, rp.torch_sync(args.device))
        out = np.asarray(jmodel(mel_j))[0]
        t_jax = rp.time_call(lambda: jmodel(mel_j), args.repeats, 1, rp.jax_sync)
    seconds = len(ref) / cfg.sampling_rate
    rows = [("frames", f"{mel.shape[-1]} ({seconds:.2f} s of audio)"),
            ("max abs error", f"{rp.max_abs(out, ref):.3e}"),
            ("SNR", f"{rp.snr_db(out, ref):.1f} dB"),
            ("log-mel L1", f"{rp.logmel_l1(out, ref, cfg.mel):.3e}"),
            ("pytorch time", f"{t_torch * 1e3:.1f} ms ({seconds / t_torch:.1f}x real time)"),
            ("jax time", f"{t_jax * 1e3:.1f} ms ({seconds / t_jax:.1f}x real time)"),
            ("speed ratio", f"{t_torch / t_jax:.2f} (jax over pytorch)")]
    return {"rows": rows, "reference": ref, "jax": out, "mel_config": cfg.mel,
            "title": f"BigVGAN {os.path.basename(os.path.abspath(args.src))}",
            "max_abs": rp.max_abs(out, ref), "snr_db": rp.snr_db(out, ref),
            "logmel_l1": rp.logmel_l1(out, ref, cfg.mel), "time_pytorch_s": t_torch, "time_jax_s": t_jax,
            "frames": int(mel.shape[-1]), "sampling_rate": cfg.sampling_rate}
