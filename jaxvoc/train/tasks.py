"""What the generic loop needs from a model family: the train state and step, the mel front-ends, validation
synthesis, ``--init`` from a converted checkpoint, and the export of the trained model.

``TASKS`` maps a model kind to its task class; a new family (the codec) adds one line and a class.
"""

from __future__ import annotations

import dataclasses
import importlib
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.audio import MelConfig, mel_spectrogram
from jaxvoc.errors import UserError
from jaxvoc.train import objective as objective_lib
from jaxvoc.train import optim
from jaxvoc.train.config import TrainConfig

TASKS = {
    "bigvgan": "jaxvoc.train.tasks:BigVGANTask",
    "waveglow": "jaxvoc.train.tasks:WaveGlowTask",
}

# name of the discriminator tree in a jaxvoc checkpoint (written by `jaxvoc convert bigvgan` when the model
# folder holds bigvgan_discriminator_optimizer.pt, and by the export at the end of training)
DISCRIMINATOR_TREE = "discriminator"
# converted official AdamW moments (``jaxvoc convert bigvgan`` with the discriminator/optimizer file)
OPT_TREES = {"opt_g": "opt_state_g", "opt_d": "opt_state_d"}


def load_factory(spec: str) -> Callable:
    """``"module:attr"`` -> the object (a user-supplied objective factory)."""
    mod, _, attr = spec.partition(":")
    if not mod or not attr:
        raise UserError(f"objective {spec!r} must read \"module:attr\"")
    try:
        return getattr(importlib.import_module(mod), attr)
    except (ImportError, AttributeError) as e:
        raise UserError(f"cannot load objective {spec!r} ({e}); check train.objective and PYTHONPATH") from None


def build_task(cfg: TrainConfig):
    return load_factory(TASKS[cfg.kind])(cfg)


def _check_same_structure(loaded: Any, expected: Any, what: str, ckpt: str) -> None:
    lf = dict(jax.tree_util.tree_flatten_with_path(loaded)[0])
    ef = dict(jax.tree_util.tree_flatten_with_path(expected)[0])
    name = lambda k: "/".join(str(getattr(p, "key", p)) for p in k)
    missing = [name(k) for k in ef if k not in lf]
    extra = [name(k) for k in lf if k not in ef]
    shapes = [f"{name(k)} {tuple(np.shape(lf[k]))} vs {tuple(ef[k].shape)}" for k in ef
              if k in lf and tuple(np.shape(lf[k])) != tuple(ef[k].shape)]
    if missing or extra or shapes:
        detail = "; ".join(x for x in (
            f"missing {missing[:3]}" if missing else "", f"unexpected {extra[:3]}" if extra else "",
            f"shape {shapes[:2]}" if shapes else "") if x)
        raise UserError(f"{ckpt}: its {what} do not fit the model of the training config ({detail}); "
                        "train with the config the checkpoint was converted from")


def _place(tree: Any, like: Any) -> Any:
    """Puts host arrays on the devices with the shardings (and dtypes) of ``like``."""
    return jax.tree_util.tree_map(
        lambda x, l: jax.device_put(np.asarray(x, dtype=l.dtype), l.sharding), tree, like)


class Task:
    kind: str
    style: str
    metric_keys: tuple[str, ...]  # shown on the progress bar

    def __init__(self, cfg: TrainConfig):
        self.cfg = cfg

    # --- to implement -----------------------------------------------------------------------------------
    mel_config: MelConfig  # generator / flow conditioning
    loss_mel_config: MelConfig  # validation mel distance
    hop_size: int

    def init_state(self, rng, audio) -> dict:
        raise NotImplementedError

    def step_fn(self, gather: Callable = lambda t: t) -> Callable:
        """The pure train step; ``gather`` all-gathers sharded parameters for compute."""
        raise NotImplementedError

    def synthesize(self, state: dict, mel: jax.Array) -> jax.Array:
        """mel [B, frames, n_mels] -> audio [B, samples] (validation; inside jit)."""
        raise NotImplementedError

    def apply_init(self, state: dict, ckpt_dir: str) -> tuple[dict, str]:
        raise NotImplementedError

    def export(self, state: dict, out_dir: str) -> None:
        raise NotImplementedError

    def lr(self, step: int) -> float:
        return float("nan")

    # --- shared -------------------------------------------------------------------------------------------
    def prepare(self, audio: jax.Array) -> dict:
        """The batch dict of the objectives, computed inside the step: audio and its mel(s)."""
        mel = mel_spectrogram(audio, self.mel_config)
        loss_mel = mel if self.loss_mel_config == self.mel_config else mel_spectrogram(audio, self.loss_mel_config)
        return {"audio": audio, "mel": mel, "mel_loss": loss_mel}

    def _read_init(self, ckpt_dir: str):
        from jaxvoc.checkpoint import load_tree, read_meta

        meta = read_meta(ckpt_dir)
        if meta["kind"] != self.kind:
            raise UserError(f"{ckpt_dir} is a {meta['kind']} checkpoint; --init needs a {self.kind} one")
        return meta, load_tree


# ------------------------------------------------------------------------------------------------------------
# BigVGAN


def _default_bigvgan_objective(cfg: TrainConfig):
    try:
        from jaxvoc.bigvgan_gan import BigVGANObjective
    except ImportError:
        raise UserError("the BigVGAN GAN objective (jaxvoc.bigvgan_gan) is not installed in this jaxvoc; "
                        "update jaxvoc or set train.objective") from None
    return BigVGANObjective(cfg.model, freeze_step=cfg.train.freeze_step)


class BigVGANTask(Task):
    kind = "bigvgan"
    style = "bigvgan"
    metric_keys = ("loss_gen_all", "loss_disc_all", "loss_mel")

    def __init__(self, cfg: TrainConfig, obj: objective_lib.GanObjective | None = None):
        super().__init__(cfg)
        from jaxvoc.bigvgan import BigVGANConfig

        h = cfg.model
        self.gen_config = BigVGANConfig.from_dict(h, cfg.path)
        self.mel_config = self.gen_config.mel
        self.loss_mel_config = dataclasses.replace(self.mel_config, fmax=h.get("fmax_for_loss"))
        self.hop_size = self.gen_config.hop_size
        if cfg.segment_size % self.hop_size:
            raise UserError(f"{cfg.path}: segment_size {cfg.segment_size} is not a multiple of hop_size "
                            f"{self.hop_size}")
        if obj is None:
            obj = (load_factory(cfg.train.objective)(cfg) if cfg.train.objective
                   else _default_bigvgan_objective(cfg))
        self.obj = obj
        self.tx_g, self.tx_d = optim.bigvgan_optimizers(h)
        self.schedule = optim.exponential_lr(float(h["learning_rate"]), float(h.get("lr_decay", 1.0)))
        self.clip = float(h.get("clip_grad_norm", optim.DEFAULT_CLIP_GRAD_NORM))

    def init_state(self, rng, audio):
        return objective_lib.init_gan_state(self.obj, self.tx_g, self.tx_d, rng, self.prepare(audio))

    def step_fn(self, gather=lambda t: t):
        return objective_lib.make_gan_step(self.obj, self.tx_g, self.tx_d, self.prepare, clip_grad_norm=self.clip,
                                           freeze_step=self.cfg.train.freeze_step, lr_schedule=self.schedule,
                                           gather=gather)

    def synthesize(self, state, mel):
        return self.obj.generate(state["params_g"], {"mel": mel})

    def lr(self, step: int) -> float:
        return float(self.schedule(step))

    def apply_init(self, state, ckpt_dir):
        """Generator weights, and when the checkpoint has them the discriminators and the official AdamW
        moments (count, mu, nu) of both optimizers. The step (and so the learning rate) starts at 0."""
        meta, load_tree = self._read_init(ckpt_dir)
        trees = meta.get("trees", [])
        params = load_tree(ckpt_dir, "params")
        _check_same_structure(params, state["params_g"], "generator weights", ckpt_dir)
        state = {**state, "params_g": _place(params, state["params_g"])}
        what = ["generator"]
        if DISCRIMINATOR_TREE in trees:
            disc = load_tree(ckpt_dir, DISCRIMINATOR_TREE)
            _check_same_structure(disc, state["params_d"], "discriminator weights", ckpt_dir)
            state = {**state, "params_d": _place(disc, state["params_d"])}
            what.append("discriminators")
        for key, tree in OPT_TREES.items():
            if tree in trees:
                from jaxvoc.bigvgan_gan import load_adam_moments

                moments = load_tree(ckpt_dir, tree)
                params_key = "params_g" if key == "opt_g" else "params_d"
                _check_same_structure(moments["mu"], state[params_key], f"{tree} moments", ckpt_dir)
                new = load_adam_moments(jax.device_get(state[key]), moments)
                state = {**state, key: _place(new, state[key])}
                what.append(f"{key} moments")
        return state, " + ".join(what)

    def export(self, state, out_dir):
        from jaxvoc import checkpoint

        host = jax.device_get({"g": state["params_g"], "d": state["params_d"]})
        checkpoint.save(out_dir, "bigvgan", self.gen_config.to_dict(), host["g"],
                        extra={DISCRIMINATOR_TREE: host["d"]}, overwrite=True)


# ------------------------------------------------------------------------------------------------------------
# WaveGlow


class WaveGlowObjective:
    """WaveGlow's flow objective: the official ``WaveGlowLoss(sigma)`` of the model's forward pass
    (``waveglow.glow.WaveGlow.forward((mel, audio))``), batch = {"audio": [B, N], "mel": [B, frames, M]}.

    Mixed precision (``cast_params``): every weight is cast to the compute dtype except the invertible 1x1
    convolutions, whose log-determinant (slogdet) is taken in float32; the loss is summed in float32."""

    name = "waveglow"

    def __init__(self, config, sigma: float):
        from jaxvoc.waveglow import WaveGlow

        self.config = config
        self.sigma = float(sigma)
        self.model = WaveGlow(config)

    def init(self, rng, batch):
        return self.model.init(rng, batch["mel"][:1], batch["audio"][:1])["params"]

    def loss(self, params, batch):
        z, log_s, log_det = self.model.apply({"params": params}, batch["mel"], batch["audio"])
        return objective_lib.waveglow_nll(z, log_s, log_det, self.sigma), {}

    @staticmethod
    def cast_params(params, dtype):
        return {k: (v if k.startswith("convinv_") else objective_lib.cast_floating(v, dtype)) for k, v in params.items()}


class WaveGlowTask(Task):
    kind = "waveglow"
    style = "waveglow"
    metric_keys = ("loss",)

    def __init__(self, cfg: TrainConfig, obj: objective_lib.FlowObjective | None = None):
        super().__init__(cfg)
        try:
            from jaxvoc.waveglow import WaveGlowConfig
        except ImportError:
            raise UserError("WaveGlow training needs jaxvoc.waveglow, which this jaxvoc does not have") from None
        tc = cfg.model["train_config"]
        self.model_config = WaveGlowConfig.from_dict(cfg.model, cfg.path)
        self.mel_config = self.loss_mel_config = self.model_config.mel
        self.hop_size = self.model_config.hop_length
        self.sigma = float(tc["sigma"])
        if obj is None:
            obj = (load_factory(cfg.train.objective)(cfg) if cfg.train.objective
                   else WaveGlowObjective(self.model_config, self.sigma))
        self.obj = obj
        self.learning_rate = float(tc["learning_rate"])
        self.tx = optim.adam(self.learning_rate)
        self.compute_dtype = jnp.bfloat16 if cfg.train.compute_dtype == "bfloat16" else jnp.float32
        if cfg.segment_size % self.model_config.n_group:
            raise UserError(f"{cfg.path}: segment_length {cfg.segment_size} is not a multiple of n_group "
                            f"{self.model_config.n_group}")

    def prepare(self, audio):
        return {"audio": audio, "mel": mel_spectrogram(audio, self.mel_config)}

    def init_state(self, rng, audio):
        return objective_lib.init_flow_state(self.obj, self.tx, rng, self.prepare(audio))

    def step_fn(self, gather=lambda t: t):
        return objective_lib.make_flow_step(self.obj, self.tx, self.prepare, compute_dtype=self.compute_dtype,
                                            lr_schedule=lambda step: jnp.float32(self.learning_rate), gather=gather,
                                            cast_params=getattr(self.obj, "cast_params", None))

    def synthesize(self, state, mel):
        rng = jax.random.PRNGKey(self.cfg.seed)
        return self.obj.model.apply({"params": state["params"]}, mel, self.cfg.train.validation_sigma, rng=rng,
                                    method="infer")

    def lr(self, step: int) -> float:
        return self.learning_rate

    def apply_init(self, state, ckpt_dir):
        meta, load_tree = self._read_init(ckpt_dir)
        params = load_tree(ckpt_dir, "params")
        _check_same_structure(params, state["params"], "weights", ckpt_dir)
        return {**state, "params": _place(params, state["params"])}, "WaveGlow"

    def export(self, state, out_dir):
        from jaxvoc import checkpoint

        checkpoint.save(out_dir, "waveglow", self.model_config.to_dict(), jax.device_get(state["params"]),
                        overwrite=True)
