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
from jaxvoc.models.bigvgan import BigVGAN, BigVGANConfig
from jaxvoc.errors import UserError
from jaxvoc.nn.activations import kaiser_sinc_filter

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


def convert_state_dict(sd: dict[str, Any], config: BigVGANConfig, source: str) -> dict:
    """An official generator state dict -> weight-normed params (filters verified and dropped)."""
    sd = common.normalize_keys(common.to_numpy_state_dict(sd, source))
    sd, _ = _take_filters(sd, source)
    return common.state_dict_to_params(sd, expected_tree(config), source,
                                       transposed=lambda p: p[0].startswith("ups_"))


def with_checkpoint_taps(config: BigVGANConfig, sd: dict[str, Any], source: str) -> BigVGANConfig:
    """The config carrying the state dict's exact float32 anti-aliasing taps (see _take_filters)."""
    _, taps = _take_filters(common.to_numpy_state_dict(sd, source), source)
    return dataclasses.replace(config, jaxvoc_antialias_filter=taps)


def convert(src: str, config: str | None = None) -> common.Converted:
    """(config dict, weight-normed params, extra) of an official BigVGAN folder (``config``: a config.json
    to use instead of the one in the folder). When the discriminator/optimizer file train.py writes beside
    the generator is there (``bigvgan_discriminator_optimizer.pt``, or ``do_N`` beside ``g_N``), extra holds
    the trees ``discriminator`` ({'mpd', 'mrd'}), and, when the file holds optimizer moments, ``opt_state_g`` / ``opt_state_d`` and ``train_progress`` (see
    :func:`convert_discriminator_file`)."""
    cfg, params, sd, gen_path = convert_generator(src, config)
    out = cfg.to_dict()
    if common.weight_norm_style(sd) == "parametrizations":  # not the official code's style: recorded for export
        out[common.WEIGHT_NORM_KEY] = "parametrizations"
    d_path = discriminator_path(gen_path)
    if d_path is None:
        return common.Converted(out, params, {})
    extra = convert_discriminator_file(d_path, cfg, generator_state_dict=sd)
    return common.Converted(out, params, extra)


def convert_generator(src: str, config: str | None = None) -> tuple[BigVGANConfig, dict, dict, str]:
    """The generator alone: (config, params, torch state dict, generator file) of an official folder or .pt;
    a discriminator/optimizer file beside it is not read (compare and the demo need only the generator)."""
    if config is not None and os.path.isfile(src):
        config_path, gen_path = config, src
    else:
        config_path, gen_path = locate(src)
        config_path = config or config_path
    cfg = BigVGANConfig.from_json(config_path)
    sd = _generator_state_dict(gen_path)
    params = convert_state_dict(sd, cfg, gen_path)
    return with_checkpoint_taps(cfg, sd, gen_path), params, sd, gen_path


def _generator_state_dict(gen_path: str) -> dict:
    obj = common.load_torch_file(gen_path)
    if isinstance(obj, dict) and "generator" in obj:
        sd = obj["generator"]
    elif isinstance(obj, dict):
        sd = obj
    else:
        raise UserError(f"{gen_path} holds a {type(obj).__name__}; expected {{'generator': state_dict}}")
    if not isinstance(sd, dict) or not sd:
        raise UserError(f"{gen_path}: the generator entry is empty or not a state dict")
    return sd


# ----------------------------------------------------------------------------------------------------------
# Discriminators and optimizer state (bigvgan_discriminator_optimizer.pt / do_N of train.py)


def discriminator_path(gen_path: str) -> str | None:
    """The discriminator/optimizer file belonging to a generator file, if present: ``do_N`` for train.py's
    ``g_N``, else ``bigvgan_discriminator_optimizer.pt`` in the same folder."""
    folder, base = os.path.split(os.path.abspath(gen_path))
    if base.startswith("g_"):
        cand = os.path.join(folder, "do_" + base[2:])
        return cand if os.path.exists(cand) else None
    cand = os.path.join(folder, DISCRIMINATOR_FILE)
    return cand if os.path.exists(cand) else None


def discriminator_config(config: BigVGANConfig | dict, source: str = "config"):
    from jaxvoc.models.discriminators import DiscriminatorConfig

    d = config.to_dict() if isinstance(config, BigVGANConfig) else dict(config)
    return DiscriminatorConfig.from_dict(d, source)


def discriminator_expected_tree(dcfg, name: str) -> dict:
    from jaxvoc.models.discriminators import discriminators

    module = discriminators(dcfg)[name]
    x = jnp.zeros((1, 1 << 15), jnp.float32)
    return common.expected_shapes(lambda: module.init(jax.random.PRNGKey(0), x)["params"])


def _cqtd_buffers(dcfg) -> dict[str, np.ndarray]:
    """The constant buffers of the official CQTD's state dict, as the JAX model computes them."""
    from jaxvoc.dsp.cqt import cqt_plan
    from jaxvoc.dsp.resample import sinc_resample_kernel

    out = {}
    sr = dcfg.sampling_rate
    for i, (hop, octs, bpo) in enumerate(zip(dcfg.cqtd_hop_lengths, dcfg.cqtd_n_octaves, dcfg.cqtd_bins_per_octaves)):
        plan = cqt_plan(float(2 * sr), hop, bpo * octs, bpo)
        p = f"discriminators.{i}."
        out[p + "cqt_transform.lowpass_filter"] = plan.lowpass[None, None]
        out[p + "cqt_transform.lenghts"] = plan.lengths
        out[p + "cqt_transform.cqt_kernels_real"] = plan.kernel_real.transpose(2, 1, 0)
        out[p + "cqt_transform.cqt_kernels_imag"] = plan.kernel_imag.transpose(2, 1, 0)
        if plan.early_filter is not None:
            out[p + "cqt_transform.early_downsample_filter"] = plan.early_filter[None, None]
        out[p + "resample.kernel"] = sinc_resample_kernel(sr, 2 * sr)[0].transpose(2, 1, 0)
    return out


def _split_buffers(sd: dict[str, np.ndarray], dcfg, name: str, source: str) -> dict[str, np.ndarray]:
    """Drops the CQT / resampling buffers after checking them against the JAX constants (a model with other
    constants is refused rather than silently changed)."""
    if name != "mrd" or not dcfg.use_cqtd_instead_of_mrd:
        return sd
    expected = _cqtd_buffers(dcfg)
    out = {}
    for k, v in sd.items():
        if k in expected:
            e = expected[k]
            v = np.asarray(v, np.float64)
            if v.shape != e.shape or np.max(np.abs(v - e)) > 1e-6 * max(1.0, float(np.max(np.abs(e)))):
                raise UserError(f"{source}: {k} differs from the CQT constants of this config (nnAudio CQT2010v2 / "
                                "torchaudio Resample); check that the config belongs to these weights")
            continue
        if ".cqt_transform." in k or k.endswith(".resample.kernel"):
            raise UserError(f"{source}: unexpected CQT buffer {k}; check that the config belongs to these weights")
        out[k] = v
    return out


def _is_buffer(key: str) -> bool:
    return key.endswith(".filter") or ".cqt_transform." in key or key.endswith(".resample.kernel")


def convert_discriminator_state_dict(sd: dict[str, Any], dcfg, name: str, source: str) -> dict:
    """An official MPD (``name`` 'mpd') or MRD/CQTD ('mrd') state dict -> the JAX parameter tree."""
    sd = common.normalize_keys(common.to_numpy_state_dict(sd, source))
    sd = _split_buffers(sd, dcfg, name, source)
    return common.state_dict_to_params(sd, discriminator_expected_tree(dcfg, name), f"{source} [{name}]")


def _adam_moments(opt: Any, names: list[str], to_tree, source: str) -> dict | None:
    """torch.optim.AdamW state dict -> {'count', 'mu', 'nu', hyperparameters} in the parameters' tree layout;
    ``names`` are the parameter names in the optimizer's order; ``to_tree`` maps {name: tensor} to a tree.
    None when the optimizer never stepped."""
    if not isinstance(opt, dict) or "state" not in opt or "param_groups" not in opt:
        raise UserError(f"{source}: the optimizer entry is not a torch optimizer state dict")
    state, groups = opt["state"], opt["param_groups"]
    if not state:
        return None
    if len(groups) != 1:
        raise UserError(f"{source}: an optimizer with {len(groups)} parameter groups; expected the official one")
    g = groups[0]
    ids = list(g["params"])
    if len(ids) != len(names):
        raise UserError(f"{source}: the optimizer holds {len(ids)} parameters, the model {len(names)}; check that "
                        "the config belongs to these weights")
    if g.get("amsgrad", False):
        raise UserError(f"{source}: AdamW with amsgrad is not supported (the official train.py does not use it)")
    mu, nu, steps = {}, {}, set()
    for pid, pname in zip(ids, names):
        st = state.get(pid, state.get(str(pid)))
        if st is None or "exp_avg" not in st or "exp_avg_sq" not in st:
            raise UserError(f"{source}: no Adam moments for parameter {pname}; the optimizer state is incomplete")
        mu[pname], nu[pname] = st["exp_avg"], st["exp_avg_sq"]
        steps.add(int(float(st["step"])))
    if len(steps) != 1:
        raise UserError(f"{source}: parameters were stepped {sorted(steps)} times; expected one common step count")
    b1, b2 = g["betas"]
    scalars = {"lr": g["lr"], "initial_lr": g.get("initial_lr", g["lr"]), "b1": b1, "b2": b2, "eps": g["eps"],
               "weight_decay": g["weight_decay"]}
    return {"count": np.asarray(steps.pop(), np.int32), "mu": to_tree(mu), "nu": to_tree(nu),
            **{k: np.asarray(float(v), np.float32) for k, v in scalars.items()}}


def convert_discriminator_file(path: str, config: BigVGANConfig, generator_state_dict: dict | None = None) -> dict:
    """train.py's {'mpd', 'mrd', 'optim_g', 'optim_d', 'steps', 'epoch'} -> extra trees:
    ``discriminator`` = {'mpd': ..., 'mrd': ...} (MRD or CQTD under the official key 'mrd');
    ``opt_state_g`` / ``opt_state_d`` = {'count', 'mu', 'nu', 'lr', 'initial_lr', 'b1', 'b2', 'eps',
    'weight_decay'} with mu/nu shaped like params / discriminator (AdamW's exp_avg / exp_avg_sq and step;
    load them into an optax state with :func:`jaxvoc.train.bigvgan.load_adam_moments`), present when the file
    holds a stepped optimizer (and, for the generator, when ``generator_state_dict`` gives the parameter
    order); ``train_progress`` = {'steps', 'epoch'} as saved."""
    dcfg = discriminator_config(config, path)
    obj = common.load_torch_file(path)
    if not isinstance(obj, dict) or "mpd" not in obj or "mrd" not in obj:
        keys = sorted(obj) if isinstance(obj, dict) else type(obj).__name__
        raise UserError(f"{path} holds {keys}; expected train.py's discriminator file with 'mpd' and 'mrd'")
    sds = {name: obj[name] for name in ("mpd", "mrd")}
    for name, sd in sds.items():
        if not isinstance(sd, dict) or not sd:
            raise UserError(f"{path}: the {name!r} entry is empty or not a state dict")
    disc = {name: convert_discriminator_state_dict(sd, dcfg, name, path) for name, sd in sds.items()}
    extra = {"discriminator": disc}

    def param_names(sd):
        return [k for k in common.normalize_keys(sd) if not _is_buffer(k)]

    def d_tree(flat):
        # torch's optim_d holds chain(mrd.parameters(), mpd.parameters())
        return {name: convert_discriminator_state_dict({k[len(name) + 1:]: v for k, v in flat.items()
                                                        if k.startswith(name + ".")}, dcfg, name, path)
                for name in ("mpd", "mrd")}

    if "optim_d" in obj:
        names = [f"mrd.{k}" for k in param_names(sds["mrd"])] + [f"mpd.{k}" for k in param_names(sds["mpd"])]
        m = _adam_moments(obj["optim_d"], names, d_tree, f"{path} [optim_d]")
        if m is not None:
            extra["opt_state_d"] = m
    if "optim_g" in obj and generator_state_dict is not None:
        names = param_names(generator_state_dict)
        m = _adam_moments(obj["optim_g"], names, lambda flat: convert_state_dict(flat, config, path),
                          f"{path} [optim_g]")
        if m is not None:
            extra["opt_state_g"] = m
    if "steps" in obj or "epoch" in obj:
        extra["train_progress"] = {k: np.asarray(int(obj.get(k, 0)), np.int64) for k in ("steps", "epoch")}
    return extra


# ----------------------------------------------------------------------------------------------------------
# The official PyTorch side (tests, compare, bench, demo)


def official_model(config: dict, state_dict: dict | None = None, seed: int | None = None,
                   use_cuda_kernel: bool = False):
    """The official ``bigvgan.BigVGAN`` from a config dict; random weights from ``seed`` when no state dict.
    Weight norm is kept (remove it with ``.remove_weight_norm()`` for inference timing). ``use_cuda_kernel``:
    the official fused CUDA anti-aliased activation (built on first use; needs nvcc and a GPU)."""
    import torch
    from bigvgan import bigvgan as tb
    from bigvgan.env import AttrDict

    if seed is not None:
        torch.manual_seed(seed)
    model = tb.BigVGAN(AttrDict(dict(config)), use_cuda_kernel=use_cuda_kernel)
    if state_dict is not None:
        model.load_state_dict(state_dict)
    return model.eval()


def official_discriminators(config: dict, seed: int | None = None):
    """(mpd, mrd) as the official train.py builds them: MPD, and CQTD (use_cqtd_instead_of_mrd) or MRD; random
    weights (from ``seed`` when given)."""
    import torch
    from bigvgan import discriminators as D
    from bigvgan.env import AttrDict

    if seed is not None:
        torch.manual_seed(seed)
    h = AttrDict(dict(config))
    with contextlib.redirect_stdout(io.StringIO()):  # the official constructors print their settings
        mpd = D.MultiPeriodDiscriminator(h)
        if h.get("use_cqtd_instead_of_mrd", False):
            mrd = D.MultiScaleSubbandCQTDiscriminator(h)
        else:
            mrd = D.MultiResolutionDiscriminator(h)
    return mpd, mrd


def official_optimizers(config: dict, generator, mpd, mrd):
    """(optim_g, optim_d) as the official train.py builds them: AdamW over the generator, and over the MRD/CQTD
    then the MPD parameters, learning_rate and betas (adam_b1, adam_b2) from the config."""
    import itertools

    import torch

    betas = [config["adam_b1"], config["adam_b2"]]
    optim_g = torch.optim.AdamW(generator.parameters(), config["learning_rate"], betas=betas)
    optim_d = torch.optim.AdamW(itertools.chain(mrd.parameters(), mpd.parameters()), config["learning_rate"],
                                betas=betas)
    return optim_g, optim_d


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


def random_official(config: dict, seed: int = 0, use_cuda_kernel: bool = False):
    """The official generator of ``config`` with random weights (:func:`official_model` from ``seed``, then
    :func:`randomize_`) and what jaxvoc converts it to, as the benchmarks and profiles pair them: (model,
    BigVGANConfig carrying the model's filter taps, weight-normed params). The model keeps weight norm."""
    model = official_model(config, seed=seed, use_cuda_kernel=use_cuda_kernel)
    randomize_(model, seed)
    sd = model.state_dict()
    cfg = BigVGANConfig.from_dict(config)
    return model, with_checkpoint_taps(cfg, sd, "official model"), convert_state_dict(sd, cfg, "official model")


def remove_weight_norm_(model) -> None:
    """The official model's ``remove_weight_norm()``, without the line it prints."""
    with contextlib.redirect_stdout(io.StringIO()):
        model.remove_weight_norm()


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


# ----------------------------------------------------------------------------------------------------------
# jaxvoc checkpoint -> official folder (jaxvoc export)


def export(config: dict, trees: dict, out_dir: str, source: str) -> list[str]:
    """Writes the official model folder into ``out_dir`` (an empty folder): ``config.json`` (the official
    config, jaxvoc's own keys left out) and ``bigvgan_generator.pt`` (``{'generator': state_dict}``), and when
    ``trees`` holds the discriminators, ``bigvgan_discriminator_optimizer.pt`` as train.py writes it
    ({'mpd', 'mrd', 'optim_g', 'optim_d', 'steps', 'epoch'}). ``trees``: 'params' (the generator, weight
    norm unfolded) and optionally 'discriminator', 'opt_state_g', 'opt_state_d', 'train_progress' (as
    :func:`convert` makes them). The official modules built from the config give the key order and the
    constant buffers, and load every exported state dict strictly (a check of names and shapes); the
    anti-aliasing taps are the checkpoint's own. Returns the files written."""
    import torch

    h = common.official_config(config)
    cfg = BigVGANConfig.from_dict(config, source)
    style = config.get(common.WEIGHT_NORM_KEY)
    generator = official_model(h)
    sd = common.params_to_state_dict(trees["params"], transposed=lambda p: p[0].startswith("ups_"))
    official = generator.state_dict()
    # the anti-aliasing taps: the checkpoint's own (converted from an official file), else those the official
    # code computes for this config (as in NVIDIA's files; jaxvoc's own float32 taps differ by an ulp in a few)
    taps = cfg.jaxvoc_antialias_filter
    for k, v in official.items():
        if k.endswith(".filter"):
            sd[k] = v.numpy() if taps is None else np.asarray(taps, np.float32).reshape(v.shape)
    common.load_strict(generator, sd, "generator", source)
    sd = {k: sd[k] for k in official}  # the official order
    with open(os.path.join(out_dir, "config.json"), "w") as f:
        json.dump(h, f, indent=2)
    torch.save({"generator": common.to_torch(common.with_weight_norm_style(sd, style))},
               os.path.join(out_dir, GENERATOR_FILE))
    written = ["config.json", GENERATOR_FILE]
    if "discriminator" not in trees:
        return written
    mpd, mrd = official_discriminators(h)
    d_sds = {}
    for name, module in (("mpd", mpd), ("mrd", mrd)):
        dsd = common.params_to_state_dict(trees["discriminator"][name])
        official_d = module.state_dict()
        params = dict(module.named_parameters())
        for k, v in official_d.items():  # constant buffers (CQT kernels, resampling) as the official code makes them
            if k not in params and k not in dsd:
                dsd[k] = v.numpy()
        common.load_strict(module, dsd, f"discriminator {name!r}", source)
        d_sds[name] = {k: dsd[k] for k in official_d}
    optim_g, optim_d = official_optimizers(h, generator, mpd, mrd)
    g_names = [k for k, _ in generator.named_parameters()]
    d_names = [f"mrd.{k}" for k, _ in mrd.named_parameters()] + [f"mpd.{k}" for k, _ in mpd.named_parameters()]
    moments_d = trees.get("opt_state_d")
    d_flat = None
    if moments_d is not None:
        d_flat = {key: {f"{name}.{k}": v for name in ("mpd", "mrd")
                        for k, v in common.params_to_state_dict(moments_d[key][name]).items()}
                  for key in ("mu", "nu")}
    g_flat = None
    if trees.get("opt_state_g") is not None:
        g_flat = {key: common.params_to_state_dict(trees["opt_state_g"][key],
                                                   transposed=lambda p: p[0].startswith("ups_"))
                  for key in ("mu", "nu")}
    progress = trees.get("train_progress", {})
    state = {"mpd": common.with_weight_norm_style(d_sds["mpd"], style),
             "mrd": common.with_weight_norm_style(d_sds["mrd"], style),
             "optim_g": _adam_state_dict(optim_g, g_names, trees.get("opt_state_g"), g_flat, source),
             "optim_d": _adam_state_dict(optim_d, d_names, moments_d, d_flat, source),
             "steps": int(np.asarray(progress.get("steps", 0))), "epoch": int(np.asarray(progress.get("epoch", 0)))}
    torch.save(common.to_torch(state), os.path.join(out_dir, DISCRIMINATOR_FILE))
    return written + [DISCRIMINATOR_FILE]


def _adam_state_dict(optim, names: list[str], moments: dict | None, flat: dict | None, source: str) -> dict:
    """The official AdamW's state dict (never stepped when ``moments`` is None), else with the converted
    moments ({'count', 'mu', 'nu', 'lr', 'initial_lr', 'b1', 'b2', 'eps', 'weight_decay'}; ``flat``: mu/nu
    by torch name) and hyperparameters put back: the inverse of :func:`_adam_moments`."""
    import torch

    sd = optim.state_dict()
    # train.py resumes its ExponentialLR at the saved epoch, which needs initial_lr in the group (the
    # scheduler it builds adds it)
    sd["param_groups"][0].setdefault("initial_lr", sd["param_groups"][0]["lr"])
    if moments is None:
        return sd
    group = sd["param_groups"][0]
    missing = [n for n in names if n not in flat["mu"] or n not in flat["nu"]]
    if missing or len(flat["mu"]) != len(names):
        raise UserError(f"{source}: the optimizer moments do not match the model's parameters "
                        f"({len(flat['mu'])} against {len(names)}); export without them is not possible")
    step = float(np.asarray(moments["count"]))
    state = {}
    for pid, name in zip(group["params"], names):
        state[pid] = {"step": torch.tensor(step, dtype=torch.float32),
                      "exp_avg": torch.from_numpy(flat["mu"][name]),
                      "exp_avg_sq": torch.from_numpy(flat["nu"][name])}
    def scalar(stored, official):  # stored as float32: the config's exact value when it rounds to it
        stored = np.float32(np.asarray(stored))
        return official if np.float32(official) == stored else float(stored)

    group = dict(group, lr=scalar(moments["lr"], group["lr"]),
                 initial_lr=scalar(moments["initial_lr"], group["initial_lr"]),
                 betas=tuple(scalar(moments[k], b) for k, b in zip(("b1", "b2"), group["betas"])),
                 eps=scalar(moments["eps"], group["eps"]),
                 weight_decay=scalar(moments["weight_decay"], group["weight_decay"]))
    return {"state": state, "param_groups": [group]}


def official_mel_f64(audio: np.ndarray, cfg: BigVGANConfig) -> np.ndarray:
    """The official mel_spectrogram run in float64: its caches pre-filled with float64 basis and window."""
    import librosa
    import torch
    from bigvgan import meldataset as md

    key = f"{cfg.n_fft}_{cfg.num_mels}_{cfg.sampling_rate}_{cfg.hop_size}_{cfg.win_size}_{cfg.fmin}_{cfg.fmax}_cpu"
    saved = md.mel_basis_cache.get(key), md.hann_window_cache.get(key)
    md.mel_basis_cache[key] = torch.from_numpy(librosa.filters.mel(
        sr=cfg.sampling_rate, n_fft=cfg.n_fft, n_mels=cfg.num_mels, fmin=cfg.fmin, fmax=cfg.fmax)).double()
    md.hann_window_cache[key] = torch.hann_window(cfg.win_size, dtype=torch.float64)
    try:
        return md.mel_spectrogram(torch.from_numpy(audio).double()[None], cfg.n_fft, cfg.num_mels,
                                  cfg.sampling_rate, cfg.hop_size, cfg.win_size, cfg.fmin, cfg.fmax)[0].numpy().T
    finally:
        for cache, v in zip((md.mel_basis_cache, md.hann_window_cache), saved):
            cache.pop(key) if v is None else cache.__setitem__(key, v)


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
    from jaxvoc.io.audio import BUNDLED_SPEECH, load_audio
    from jaxvoc.models.bigvgan import Pretrained

    tdev, jdev = rp.setup_device(args.device)
    # the generator only: a bigvgan_discriminator_optimizer.pt beside it (as NVIDIA publishes) is not needed
    cfg, params, sd, _ = convert_generator(args.src, getattr(args, "config", None))
    config = cfg.to_dict()
    audio = load_audio(args.input or BUNDLED_SPEECH, cfg.sampling_rate)
    mel = official_mel(audio, config)  # the official front-end feeds both models
    model = official_model(config, sd)
    remove_weight_norm_(model)
    model = model.to(tdev)
    mel_t = mel.to(tdev)
    with jax.default_device(jdev):
        jmodel = Pretrained(cfg, jax.device_put(params, jdev), dtype=getattr(args, "dtype", "float32"))
        mel_j = jax.device_put(jnp.asarray(mel.numpy().transpose(0, 2, 1)), jdev)
        with torch.inference_mode():
            ref = model(mel_t)[0, 0].float().cpu().numpy()
            t_torch = rp.time_call(lambda: model(mel_t), args.repeats, 1, rp.torch_sync(args.device))
        out = np.asarray(jmodel(mel_j))[0]
        t_jax = rp.time_call(lambda: jmodel(mel_j), args.repeats, 1, rp.jax_sync)
    seconds = len(ref) / cfg.sampling_rate
    rows = [("frames", f"{mel.shape[-1]} ({seconds:.2f} s of audio)"),
            ("jaxvoc dtype", f"{jmodel.dtype} (official: float32)"),
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
