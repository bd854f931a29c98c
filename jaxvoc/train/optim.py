"""Optimizers built from the official config keys, as optax gradient transformations.

BigVGAN (``bigvgan/train.py``): ``torch.optim.AdamW(params, learning_rate, betas=[adam_b1, adam_b2])`` for the
generator and one for both discriminators, with torch's defaults eps=1e-8 and weight_decay=0.01, and an
``ExponentialLR(gamma=lr_decay)`` that v2 steps after *every* training step (v1 stepped once per epoch). The
scheduler steps even while the discriminators are frozen (``freeze_step``), while Adam's own step counter
(bias correction) only advances when the optimizer steps. So the learning rate here is a function of the
global training step passed to ``update(..., step=...)``, and Adam keeps its own count.

WaveGlow (``waveglow/train.py``): ``torch.optim.Adam(lr=learning_rate)``, constant, eps=1e-8, no decay.

NeMo's codec (``AudioCodecModel.configure_optimizers``): one ``torch.optim.Adam`` (``model.optim``) for the
generator and one for the discriminators, each with its own ``ExponentialLR`` (``model.optim.sched``), which
NeMo steps once per *epoch* (``on_train_epoch_end``; ExponentialLR is one of NeMo's EPOCH_SCHEDULERS): the
learning rate of global step ``s`` is ``lr * gamma ** (s // steps_per_epoch)``, for both optimizers, whether or
not the discriminator was updated on that step.

Gradient clipping follows ``torch.nn.utils.clip_grad_norm_``: the gradient is scaled by
``min(1, max_norm / (norm + 1e-6))`` (the norm is the global 2-norm over the group), and the unclipped norm
is returned for logging.
"""

from __future__ import annotations

import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

TORCH_ADAMW_WEIGHT_DECAY = 0.01  # torch.optim.AdamW default; the official configs do not set it
TORCH_ADAM_EPS = 1e-8
DEFAULT_CLIP_GRAD_NORM = 1000.0  # bigvgan/train.py: h.get("clip_grad_norm", 1000.0)


def exponential_lr(learning_rate: float, lr_decay: float):
    """``step -> learning_rate * lr_decay ** step`` (ExponentialLR stepped once per training step).

    Computed as ``exp(step * log(lr_decay))`` with the log taken in float64: lr_decay = 0.9999996 is not
    representable in float32 closely enough for a power over millions of steps."""
    log_decay = np.float32(math.log(lr_decay))

    def schedule(step):
        return jnp.float32(learning_rate) * jnp.exp(jnp.asarray(step, jnp.float32) * log_decay)

    return schedule


class ScaleByStepScheduleState(NamedTuple):
    pass


def scale_by_step_schedule(schedule) -> optax.GradientTransformationExtraArgs:
    """Multiplies updates by ``-schedule(step)``, where ``step`` is the global training step passed to
    ``update(..., step=...)`` (not a count of this optimizer's own updates)."""

    def init(params):
        del params
        return ScaleByStepScheduleState()

    def update(updates, state, params=None, *, step, **extra):
        del params, extra
        lr = schedule(step)
        return jax.tree_util.tree_map(lambda u: (-lr * u).astype(u.dtype), updates), state

    return optax.GradientTransformationExtraArgs(init, update)


def adamw_exponential(learning_rate: float, adam_b1: float, adam_b2: float, lr_decay: float = 1.0,
                      weight_decay: float = TORCH_ADAMW_WEIGHT_DECAY, eps: float = TORCH_ADAM_EPS
                      ) -> optax.GradientTransformationExtraArgs:
    """torch AdamW (decoupled weight decay ``p *= 1 - lr * wd``) with an exponential per-step decay.
    ``update(grads, state, params, step=global_step)``."""
    return optax.chain(
        optax.scale_by_adam(b1=adam_b1, b2=adam_b2, eps=eps),
        optax.add_decayed_weights(weight_decay),
        scale_by_step_schedule(exponential_lr(learning_rate, lr_decay)),
    )


def adam(learning_rate: float, eps: float = TORCH_ADAM_EPS) -> optax.GradientTransformationExtraArgs:
    """torch Adam (no weight decay), constant learning rate; accepts and ignores ``step=``."""
    return torch_adam(lambda step: jnp.float32(learning_rate), eps=eps)


def epoch_exponential_lr(learning_rate: float, gamma: float, steps_per_epoch: int, num_epochs: int):
    """``step -> learning_rate * gamma ** (step // steps_per_epoch)`` (ExponentialLR stepped once per epoch), for
    the ``num_epochs`` epochs of a run (later steps keep the last epoch's rate).

    The rates are a host table of torch's own recursion (``lr = lr * gamma`` in double precision, then rounded
    once to float32): a float32 power would be off by a few 1e-7 after hundreds of epochs."""
    if steps_per_epoch < 1 or num_epochs < 1:
        raise ValueError(f"steps_per_epoch and num_epochs must be positive, got {steps_per_epoch}, {num_epochs}")
    rates = np.empty(num_epochs, np.float64)
    lr = float(learning_rate)
    for e in range(num_epochs):
        rates[e] = lr
        lr = lr * float(gamma)
    table = rates.astype(np.float32)

    def schedule(step):
        epoch = jnp.minimum(jnp.asarray(step, jnp.int32) // steps_per_epoch, num_epochs - 1)
        return jnp.asarray(table)[epoch]

    return schedule


def torch_adam(schedule, b1: float = 0.9, b2: float = 0.999, eps: float = TORCH_ADAM_EPS,
               weight_decay: float = 0.0) -> optax.GradientTransformationExtraArgs:
    """torch.optim.Adam (weight decay added to the gradient before the moments, torch's L2 form) at the rate
    ``schedule(step)`` of the global step given to ``update(..., step=...)``."""
    parts = [optax.add_decayed_weights(weight_decay)] if weight_decay else []
    return optax.chain(*parts, optax.scale_by_adam(b1=b1, b2=b2, eps=eps), scale_by_step_schedule(schedule))


def codec_optimizers(optim_cfg, steps_per_epoch: int, num_epochs: int):
    """(generator, discriminator, schedule) from a codec config's ``model.optim`` (``jaxvoc.train.codec_config.
    Optim``: torch Adam, optionally ExponentialLR stepped per epoch), as NeMo's ``configure_optimizers``."""
    if optim_cfg.sched_name is None:
        schedule = lambda step: jnp.float32(optim_cfg.lr)  # noqa: E731
    elif optim_cfg.sched_name == "ExponentialLR" and optim_cfg.sched_interval == "epoch":
        schedule = epoch_exponential_lr(optim_cfg.lr, optim_cfg.gamma, steps_per_epoch, num_epochs)
    else:
        raise ValueError(f"scheduler {optim_cfg.sched_name} ({optim_cfg.sched_interval}) is not supported")
    make = lambda: torch_adam(schedule, *optim_cfg.betas, eps=optim_cfg.eps,  # noqa: E731
                              weight_decay=optim_cfg.weight_decay)
    return make(), make(), schedule


def bigvgan_optimizers(h: dict) -> tuple[optax.GradientTransformationExtraArgs, optax.GradientTransformationExtraArgs]:
    """(generator, discriminator) optimizers from an official BigVGAN config dict."""
    kw = dict(learning_rate=float(h["learning_rate"]), adam_b1=float(h["adam_b1"]), adam_b2=float(h["adam_b2"]),
              lr_decay=float(h.get("lr_decay", 1.0)))
    return adamw_exponential(**kw), adamw_exponential(**kw)


def global_norm(tree: Any) -> jax.Array:
    leaves = jax.tree_util.tree_leaves(tree)
    if not leaves:
        return jnp.float32(0.0)
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in leaves))


def clip_grad_norm(grads: Any, max_norm: float) -> tuple[Any, jax.Array]:
    """torch.nn.utils.clip_grad_norm_: (clipped grads, total norm before clipping)."""
    norm = global_norm(grads)
    coef = jnp.minimum(jnp.float32(max_norm) / (norm + 1e-6), 1.0)
    return jax.tree_util.tree_map(lambda g: (g * coef).astype(g.dtype), grads), norm
