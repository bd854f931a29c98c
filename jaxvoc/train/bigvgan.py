"""BigVGAN's GAN objective (the loss side of NVIDIA's ``bigvgan/train.py``, MIT), as a ``GanObjective`` for
the generic GAN step of ``jaxvoc.train`` (see GAN_PROTOCOL in docs/training.md):

- discriminators: MPD (``mpd_reshapes``) plus, under the official checkpoint key ``mrd``, the v1
  MultiResolutionDiscriminator (``resolutions``) or the v2 MultiScaleSubbandCQTDiscriminator
  (``use_cqtd_instead_of_mrd``); ``params_d = {"mpd": ..., "mrd": ...}``;
- discriminator loss: least-squares, ``loss_disc_f`` (MPD) + ``loss_disc_s`` (MRD/CQTD);
- generator loss: ``loss_gen_f + loss_gen_s + loss_fm_f + loss_fm_s + loss_mel``, or ``loss_mel`` alone
  while ``step < freeze_step``; ``loss_mel`` is lambda_melloss (default 45) times the multi-scale log-mel L1
  (``use_multiscale_melloss``, v2) or the L1 between BigVGAN log-mels with ``fmax_for_loss`` (v1).

Real and generated audio go through each discriminator as one batch (``[y; y_hat]``): the discriminators are
per-example, so this is the official pair of calls, in one pass.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.io import checkpoint
from jaxvoc.train import losses, optim
from jaxvoc.train import objective as objective_lib
from jaxvoc.train.config import TrainConfig
from jaxvoc.train.tasks import DISCRIMINATOR_TREE, OPT_TREES, Task, _check_same_structure, _place, load_factory
from jaxvoc.dsp.stft import MelConfig
from jaxvoc.models.bigvgan import BigVGAN, BigVGANConfig
from jaxvoc.models.discriminators import DiscriminatorConfig, discriminators

Array = jax.Array


class BigVGANObjective:
    """GanObjective for any official BigVGAN config (dict as in config.json, or a BigVGANConfig).

    ``freeze_step`` is train.py's ``--freeze_step``: below it the generator is trained on the mel loss only
    (the caller also skips the discriminator update, as the protocol's step does)."""

    name = "bigvgan"
    discriminator_groups = ("mpd", "mrd")

    def __init__(self, config: dict | BigVGANConfig, freeze_step: int = 0):
        cfg = config if isinstance(config, BigVGANConfig) else BigVGANConfig.from_dict(dict(config))
        d = cfg.to_dict()
        self.config = cfg
        self.freeze_step = int(freeze_step)
        self.d_config = DiscriminatorConfig.from_dict(d)
        self.generator = BigVGAN(cfg)
        self.discriminators = discriminators(self.d_config)
        self.lambda_melloss = float(d.get("lambda_melloss", 45.0))
        self.use_multiscale_melloss = bool(d.get("use_multiscale_melloss", False))
        # v1: the official loader's `mel_loss` and train.py's y_g_hat_mel, both with fmax_for_loss
        self.loss_mel_config: MelConfig = dataclasses.replace(cfg.mel, fmax=d.get("fmax_for_loss"))
        self.multiscale_configs = losses.multiscale_mel_configs(cfg.sampling_rate)

    # -- the protocol ---------------------------------------------------------------------------------------

    def init(self, rng, batch) -> tuple[Any, dict]:
        kg, *kd = jax.random.split(rng, 1 + len(self.discriminators))
        params_g = self.generator.init(kg, jnp.asarray(batch["mel"]))["params"]
        audio = jnp.asarray(batch["audio"])
        params_d = {name: m.init(k, audio)["params"] for (name, m), k in zip(self.discriminators.items(), kd)}
        return params_g, params_d

    def generate(self, params_g, batch) -> Array:
        return self.generator.apply({"params": params_g}, batch["mel"])

    def discriminator_loss(self, params_d, batch, y_g) -> tuple[Array, dict]:
        y = batch["audio"]
        aux = {}
        total = 0.0
        for name, suffix in (("mpd", "f"), ("mrd", "s")):
            (real, fake), _ = self._discriminate(name, params_d[name], y, y_g)
            loss, _, _ = losses.discriminator_loss(real, fake)
            aux[f"loss_disc_{suffix}"] = loss
            total = total + loss
        aux["loss_disc_all"] = total
        return total, aux

    def generator_loss(self, params_d, batch, y_g, step) -> tuple[Array, dict]:
        y = batch["audio"]
        aux = {"loss_mel": self.mel_loss(y, y_g)}
        for name, suffix in (("mpd", "f"), ("mrd", "s")):
            # two passes, as train.py: the gradient flows back through the fake half only (one pass over the
            # concatenated batch would pull the real half's input gradients back through every layer too)
            (_, fake), (fmap_r, fmap_g) = self._discriminate(name, params_d[name], y, y_g, joint=False)
            aux[f"loss_fm_{suffix}"] = losses.feature_loss(fmap_r, fmap_g)
            aux[f"loss_gen_{suffix}"] = losses.generator_loss(fake)[0]
        full = aux["loss_gen_s"] + aux["loss_gen_f"] + aux["loss_fm_s"] + aux["loss_fm_f"] + aux["loss_mel"]
        if self.freeze_step > 0:
            full = jnp.where(jnp.asarray(step) >= self.freeze_step, full, aux["loss_mel"])
        aux["loss_gen_all"] = full
        return full, aux

    # -- pieces ---------------------------------------------------------------------------------------------

    def mel_loss(self, y: Array, y_g: Array) -> Array:
        """loss_mel of train.py (lambda_melloss included)."""
        if self.use_multiscale_melloss:
            return losses.multiscale_mel_loss(y_g, y, self.multiscale_configs) * self.lambda_melloss
        return losses.mel_l1_loss(y, y_g, self.loss_mel_config) * self.lambda_melloss

    def _discriminate(self, name: str, params, y: Array, y_g: Array, joint: bool = True):
        """One discriminator group on y and y_g: ((real outputs, fake outputs), (real fmaps, fake fmaps)); with
        ``joint`` in one pass over [y; y_g] (the discriminator step, which needs no input gradient)."""
        d = self.discriminators[name]
        if not joint:
            real, fmap_r = d.apply({"params": params}, y)
            fake, fmap_g = d.apply({"params": params}, y_g.astype(y.dtype))
            return (real, fake), (fmap_r, fmap_g)
        B = y.shape[0]
        outs, fmaps = self.discriminators[name].apply({"params": params}, jnp.concatenate([y, y_g.astype(y.dtype)]))
        real, fake = [o[:B] for o in outs], [o[B:] for o in outs]
        fmap_r = [[f[:B] for f in fm] for fm in fmaps]
        fmap_g = [[f[B:] for f in fm] for fm in fmaps]
        return (real, fake), (fmap_r, fmap_g)


# ----------------------------------------------------------------------------------------------------------
# Official optimizer moments (converted by conversion/bigvgan.py) -> an optax state


def load_adam_moments(opt_state: Any, moments: dict) -> Any:
    """Returns ``opt_state`` (any optax state built around ``optax.adamw`` / ``scale_by_adam``) with its Adam
    count and first/second moments replaced by a converted official optimizer state: ``moments`` is the
    ``opt_state_g`` / ``opt_state_d`` tree that ``jaxvoc convert bigvgan`` writes ({'count', 'mu', 'nu', ...},
    mu/nu shaped like the parameters). Every ScaleByAdamState whose mu has the parameters' structure is
    replaced; nothing else changes (hyperparameters are the caller's: the official AdamW uses eps 1e-8 and
    weight_decay 0.01)."""
    import optax

    found = []

    def swap(node):
        if isinstance(node, optax.ScaleByAdamState):
            if jax.tree_util.tree_structure(node.mu) != jax.tree_util.tree_structure(moments["mu"]):
                return node
            found.append(True)
            cast = lambda new, old: jnp.asarray(new, dtype=old.dtype).reshape(old.shape)
            return optax.ScaleByAdamState(
                count=cast(moments["count"], node.count),
                mu=jax.tree_util.tree_map(cast, moments["mu"], node.mu),
                nu=jax.tree_util.tree_map(cast, moments["nu"], node.nu))
        return node

    out = jax.tree_util.tree_map(swap, opt_state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
    if not found:
        raise ValueError("no Adam state with the parameters' structure in opt_state")
    return out


def adam_moments(opt_state: Any, params: Any, hyper: dict) -> dict:
    """The inverse of :func:`load_adam_moments`: the Adam count and moments of ``opt_state`` (the
    ScaleByAdamState whose mu has the structure of ``params``) as the ``opt_state_g`` / ``opt_state_d`` tree
    a converted checkpoint holds, with the hyperparameters ``hyper`` (lr, initial_lr, b1, b2, eps,
    weight_decay) as float32 scalars."""
    import optax

    nodes = [n for n in jax.tree_util.tree_leaves(opt_state, is_leaf=lambda n: isinstance(n, optax.ScaleByAdamState))
             if isinstance(n, optax.ScaleByAdamState)
             and jax.tree_util.tree_structure(n.mu) == jax.tree_util.tree_structure(params)]
    if len(nodes) != 1:
        raise ValueError(f"expected one Adam state with the parameters' structure, found {len(nodes)}")
    n = nodes[0]
    return {"count": np.asarray(n.count, np.int32), "mu": n.mu, "nu": n.nu,
            **{k: np.asarray(v, np.float32) for k, v in hyper.items()}}


# ----------------------------------------------------------------------------------------------------------
# The training task (jaxvoc train)


class BigVGANTask(Task):
    kind = "bigvgan"
    style = "bigvgan"
    metric_keys = ("loss_gen_all", "loss_disc_all", "loss_mel")

    def __init__(self, cfg: TrainConfig, obj: objective_lib.GanObjective | None = None):
        super().__init__(cfg)
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
                   else BigVGANObjective(cfg.model, freeze_step=cfg.train.freeze_step))
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
                moments = load_tree(ckpt_dir, tree)
                params_key = "params_g" if key == "opt_g" else "params_d"
                _check_same_structure(moments["mu"], state[params_key], f"{tree} moments", ckpt_dir)
                new = load_adam_moments(jax.device_get(state[key]), moments)
                state = {**state, key: _place(new, state[key])}
                what.append(f"{key} moments")
        return state, " + ".join(what)

    def export_trees(self, state):
        """Generator, discriminators, both AdamW moments (with the official optimizer's hyperparameters: the
        learning rate at this step, the config's betas, torch's eps and weight decay) and the step; the epoch
        is 0 (jaxvoc counts steps only)."""
        step = int(np.asarray(state["step"]))
        h = self.cfg.model
        hyper = {"lr": self.lr(step), "initial_lr": float(h["learning_rate"]), "b1": float(h["adam_b1"]),
                 "b2": float(h["adam_b2"]), "eps": optim.TORCH_ADAM_EPS,
                 "weight_decay": optim.TORCH_ADAMW_WEIGHT_DECAY}
        trees = {"params": state["params_g"], DISCRIMINATOR_TREE: state["params_d"],
                 OPT_TREES["opt_g"]: adam_moments(state["opt_g"], state["params_g"], hyper),
                 OPT_TREES["opt_d"]: adam_moments(state["opt_d"], state["params_d"], hyper),
                 "train_progress": {"steps": np.asarray(step, np.int64), "epoch": np.asarray(0, np.int64)}}
        return self.gen_config.to_dict(), trees

    def export(self, state, out_dir):
        host = jax.device_get({"g": state["params_g"], "d": state["params_d"]})
        checkpoint.save(out_dir, "bigvgan", self.gen_config.to_dict(), host["g"],
                        extra={DISCRIMINATOR_TREE: host["d"]}, overwrite=True)


TASK = BigVGANTask
