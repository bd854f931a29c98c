"""What the generic loop needs from a model family: the train state and step, the mel front-ends, validation
synthesis, ``--init`` from a converted checkpoint, and the export of the trained model.

Each family's task lives in its own module (``jaxvoc/train/<kind>.py``, named in :mod:`jaxvoc.registry`),
which sets ``TASK`` to its :class:`Task` subclass.
"""

from __future__ import annotations

import importlib
import os
from typing import Any, Callable

import jax
import numpy as np

from jaxvoc.dsp.stft import MelConfig, mel_spectrogram
from jaxvoc.errors import UserError
from jaxvoc.train.config import TrainConfig

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


def check_start(init: str | None, resume: bool, kind: str) -> dict | None:
    """The checks of ``--init`` / ``--resume`` (before anything is built): they exclude each other, and an
    init checkpoint must exist and be of the kind the config trains. Returns the init checkpoint's metadata."""
    from jaxvoc.io.checkpoint import read_meta

    if init and resume:
        raise UserError("--init and --resume exclude each other: a resumed run continues its own weights")
    if not init:
        return None
    if not os.path.isdir(init):
        raise UserError(f"--init checkpoint not found: {init}; convert a model first (jaxvoc convert ...)")
    meta = read_meta(init)
    if meta["kind"] != kind:
        raise UserError(f"{init} is a {meta['kind']} checkpoint but the training config trains {kind}; "
                        f"give a {kind} checkpoint to --init")
    return meta


def build_task(cfg: TrainConfig):
    from jaxvoc.registry import trainer_module

    return trainer_module(cfg.kind).TASK(cfg)


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
    validation_metric = "mel L1"  # the main validation number, as the end-of-run line names it

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

    def export_trees(self, state: dict) -> tuple[dict, dict]:
        """(model config, trees) of a train state as a converted checkpoint holds them ('params' and, where
        the task has them, 'discriminator', 'opt_state_g', ...): what `jaxvoc export` writes out."""
        raise NotImplementedError

    def lr(self, step: int) -> float:
        return float("nan")

    def frozen_params(self) -> Any:
        """Weights the objective uses but does not train (``objective.FROZEN``: the codec's WavLM), or None;
        the loop adds them to the state and leaves them out of checkpoints."""
        return None

    # --- shared -------------------------------------------------------------------------------------------
    def prepare(self, audio: jax.Array) -> dict:
        """The batch dict of the objectives, computed inside the step: audio and its mel(s)."""
        mel = mel_spectrogram(audio, self.mel_config)
        loss_mel = mel if self.loss_mel_config == self.mel_config else mel_spectrogram(audio, self.loss_mel_config)
        return {"audio": audio, "mel": mel, "mel_loss": loss_mel}

    def _read_init(self, ckpt_dir: str):
        from jaxvoc.io.checkpoint import load_tree

        return check_start(ckpt_dir, False, self.kind), load_tree


def run_folder_trees(run_dir: str) -> tuple[str, dict, dict, int]:
    """(kind, model config, trees, step) of the latest checkpoint of a training run folder (read-only: it
    neither takes the run's lock nor cleans anything, so a running job is not disturbed)."""
    import jax.numpy as jnp
    import orbax.checkpoint as ocp

    from jaxvoc.train import checkpointing
    from jaxvoc.train.config import from_raw

    ckpt_dir = os.path.join(os.path.abspath(run_dir), "checkpoints")
    step = checkpointing.latest_step(ckpt_dir)
    if step is None:
        raise UserError(f"{run_dir} holds no training checkpoint yet; train until one is saved, or give a jaxvoc "
                        "checkpoint")
    mngr = ocp.CheckpointManager(ckpt_dir, options=ocp.CheckpointManagerOptions(create=False),
                                 item_names=("state", "data", "meta"))
    try:
        meta = mngr.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))["meta"] or {}
        if "config" not in meta:
            raise UserError(f"{ckpt_dir}/{step} has no stored config; it was not written by jaxvoc train")
        cfg = from_raw(meta["config"], meta.get("config_path") or run_dir)
        task = build_task(cfg)
        abstract = jax.eval_shape(task.init_state, jax.random.PRNGKey(0), jnp.zeros((1, cfg.segment_size), jnp.float32))
        dev = jax.sharding.SingleDeviceSharding(jax.devices()[0])
        abstract = jax.tree_util.tree_map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=dev), abstract)
        try:
            state = mngr.restore(step, args=ocp.args.Composite(state=ocp.args.StandardRestore(abstract)))["state"]
        except (ValueError, KeyError, TypeError) as e:
            raise UserError(f"cannot read checkpoint step {step} of {run_dir} ({type(e).__name__}: "
                            f"{str(e).splitlines()[0][:200]})") from None
    finally:
        mngr.close()
    config, trees = task.export_trees(jax.device_get(state))
    return cfg.kind, config, trees, int(step)
