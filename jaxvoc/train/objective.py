"""Training objectives and the generic jit-able train steps.

Two families:

* :class:`GanObjective` — a generator and groups of discriminators (BigVGAN now; the NeMo codec later).
  A model family implements only its losses; :func:`make_gan_step` is the one GAN update, in the order of the
  official ``bigvgan/train.py``:

  1. ``y_g = generate(params_g, batch)`` (the VJP is kept for step 3);
  2. discriminator update on ``stop_gradient(y_g)``, skipped while ``step < freeze_step``: each
     discriminator group's gradient clipped separately at ``clip_grad_norm``, then one optimizer update
     over all groups (the official code has one AdamW over MPD and MRD/CQTD);
  3. generator loss against the *updated* discriminators, its gradient with respect to ``y_g`` pulled back
     through the generator, clipped, optimizer update.

  The NeMo codec's schedule plugs into the same step: ``disc_update`` (:func:`periodic_disc_update`, NeMo's
  ``should_update_disc``) decides from the traced global step whether step 2 runs at all (NeMo neither
  evaluates nor updates the discriminators otherwise), inside one compiled program; ``clip_grad_norm=None``
  leaves the gradients unclipped (NeMo's default).

* :class:`FlowObjective` — a normalising flow trained by maximum likelihood (WaveGlow):
  :func:`make_flow_step`, optionally computing in bfloat16 with float32 master weights.

A train state is a plain dict pytree (``step``, ``rng``, parameters, optimizer states), so it shards,
checkpoints and restores as one tree. Steps take the state and a batch of audio ``[B, T]``; ``prepare`` turns
the audio into the batch dict the objective sees (audio plus its mel from the jaxvoc front-end) inside the
compiled step. An objective with weights it uses but does not train (the codec's frozen WavLM) returns them
from ``frozen_params()``; the caller puts them in the state under :data:`FROZEN` (``init_gan_state`` does
not: the training loop places them on the devices itself, and leaves them out of checkpoints), so that they
enter the compiled step as an argument rather than as constants baked into the program, are never updated,
and reach the objective as ``batch[FROZEN]``.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import jax
import jax.numpy as jnp

from jaxvoc.train import optim

Array = jax.Array
FROZEN = "frozen"  # train-state entry of the weights an objective uses but does not train (never updated)
Batch = dict  # {"audio": [B, T] float32, "mel": [B, frames, num_mels], "mel_loss": [B, frames, num_mels]}


@runtime_checkable
class GanObjective(Protocol):
    """A GAN model family's losses (see GAN_PROTOCOL in the docs).

    ``batch = {"audio": [B, T], "mel": [B, frames, num_mels], "mel_loss": ...}``: ``mel`` is the generator
    input (fmax), ``mel_loss`` the same audio's mel with the loss settings (fmax_for_loss), as the official
    loader returns both. ``aux`` are flat dicts of scalar loss terms named as in the official code."""

    name: str
    discriminator_groups: tuple[str, ...]

    def init(self, rng: Array, batch: Batch) -> tuple[Any, Any]: ...

    def generate(self, params_g: Any, batch: Batch) -> Array: ...

    def discriminator_loss(self, params_d: Any, batch: Batch, y_g: Array) -> tuple[Array, dict]: ...

    def generator_loss(self, params_d: Any, batch: Batch, y_g: Array, step: Array) -> tuple[Array, dict]: ...


@runtime_checkable
class FlowObjective(Protocol):
    """A flow model trained by its negative log-likelihood: ``loss(params, batch) -> (nll, aux)``."""

    name: str

    def init(self, rng: Array, batch: Batch) -> Any: ...

    def loss(self, params: Any, batch: Batch) -> tuple[Array, dict]: ...


# ------------------------------------------------------------------------------------------------------------
# GAN


def init_gan_state(obj: GanObjective, tx_g, tx_d, rng: Array, batch: Batch) -> dict:
    init_rng, rng = jax.random.split(rng)
    params_g, params_d = obj.init(init_rng, batch)
    missing = set(obj.discriminator_groups) - set(params_d)
    if missing:
        raise ValueError(f"{obj.name}: init returned no discriminator group(s) {sorted(missing)}")
    return {"step": jnp.zeros((), jnp.int32), "rng": rng, "params_g": params_g, "params_d": params_d,
            "opt_g": tx_g.init(params_g), "opt_d": tx_d.init(params_d)}


def periodic_disc_update(steps_per_epoch: int, disc_update_period: int = 1, disc_updates_per_period: int = 1,
                         disc_start_epoch: int = 0) -> Callable[[Array], Array]:
    """NeMo's ``AudioCodecModel.should_update_disc`` as a traced predicate of the global step: batch ``b =
    step % steps_per_epoch`` of epoch ``e = step // steps_per_epoch`` (``batch_idx`` restarts every epoch)
    updates the discriminators when ``e >= disc_start_epoch`` and ``b % disc_update_period <
    disc_updates_per_period``."""
    if steps_per_epoch < 1 or disc_update_period < 1:
        raise ValueError(f"steps_per_epoch ({steps_per_epoch}) and disc_update_period ({disc_update_period}) "
                         "must be positive")

    def update(step):
        epoch, batch_idx = jnp.divmod(jnp.asarray(step, jnp.int32), steps_per_epoch)
        return (epoch >= disc_start_epoch) & (batch_idx % disc_update_period < disc_updates_per_period)

    return update


def make_gan_step(obj: GanObjective, tx_g, tx_d, prepare: Callable[[Array], Batch], *,
                  clip_grad_norm: float | None = optim.DEFAULT_CLIP_GRAD_NORM, freeze_step: int = 0,
                  disc_update: Callable[[Array], Array] | None = None,
                  lr_schedule: Callable | None = None, gather: Callable[[Any], Any] = lambda t: t
                  ) -> Callable[[dict, Array], tuple[dict, dict]]:
    """The pure GAN train step ``(state, audio) -> (state, metrics)`` (jit it with the shardings of
    ``sharding.py``). Metrics: the objective's aux terms, ``loss_disc_all``, ``loss_gen_all``,
    ``grad_norm_g``, ``grad_norm_<group>``, ``lr`` and ``finite`` (all losses and norms finite).

    ``freeze_step`` (BigVGAN): below it the discriminators are evaluated (logged) but not updated.
    ``disc_update(step) -> bool`` (the codec, :func:`periodic_disc_update`): where false the discriminators are
    neither evaluated nor updated, their loss terms and norms read 0 and the metric ``disc_updated`` 0; their
    optimizer's state (Adam's count) does not advance. ``clip_grad_norm=None``: no clipping (norms logged).
    ``audio`` is whatever ``prepare`` takes (the codec: ``{"audio", "audio_len"}``).

    ``gather`` is applied to parameters before they enter a forward pass (``sharding.gather_params``:
    fsdp-sharded weights all-gathered for compute, while the optimizer update stays sharded)."""
    groups = tuple(obj.discriminator_groups)
    if freeze_step > 0 and disc_update is not None:
        raise ValueError("give freeze_step or disc_update, not both")

    def clip(grads):
        if clip_grad_norm is None:
            return grads, optim.global_norm(grads)
        return optim.clip_grad_norm(grads, clip_grad_norm)

    def step_fn(state: dict, audio: Array) -> tuple[dict, dict]:
        batch = prepare(audio)
        if FROZEN in state:
            batch = {**batch, FROZEN: gather(state[FROZEN])}
        step = state["step"]
        params_g, params_d = state["params_g"], state["params_d"]

        # 1. generator forward, VJP kept
        y_g, pullback = jax.vjp(lambda p: obj.generate(p, batch), gather(params_g))
        y_d = jax.lax.stop_gradient(y_g)

        # 2. discriminators (each group clipped on its own), skipped while frozen
        def d_update(_):
            (loss_d, aux_d), grads = jax.value_and_grad(obj.discriminator_loss, has_aux=True)(
                gather(params_d), batch, y_d)
            clipped, norms = {}, {}
            for g in groups:
                clipped[g], norms[g] = clip(grads[g])
            grads = {**grads, **clipped}
            updates, opt_d = tx_d.update(grads, state["opt_d"], params_d, step=step)
            return jax.tree_util.tree_map(jnp.add, params_d, updates), opt_d, loss_d, aux_d, norms

        def d_frozen(_):
            loss_d, aux_d = obj.discriminator_loss(gather(params_d), batch, y_d)  # logged, not applied (as official)
            return params_d, state["opt_d"], loss_d, aux_d, {g: jnp.float32(0.0) for g in groups}

        def d_skipped(_):  # NeMo: no discriminator pass at all on this step
            loss_shape, aux_shape = jax.eval_shape(obj.discriminator_loss, params_d, batch, y_d)
            zeros = lambda t: jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), t)  # noqa: E731
            return params_d, state["opt_d"], zeros(loss_shape), zeros(aux_shape), {g: jnp.float32(0.0) for g in groups}

        updated = None
        if freeze_step > 0:
            new_params_d, opt_d, loss_d, aux_d, norms_d = jax.lax.cond(step >= freeze_step, d_update, d_frozen, None)
        elif disc_update is not None:
            updated = jnp.asarray(disc_update(step), bool)
            new_params_d, opt_d, loss_d, aux_d, norms_d = jax.lax.cond(updated, d_update, d_skipped, None)
        else:
            new_params_d, opt_d, loss_d, aux_d, norms_d = d_update(None)

        # 3. generator against the updated discriminators
        (loss_g, aux_g), dy = jax.value_and_grad(obj.generator_loss, argnums=2, has_aux=True)(
            gather(new_params_d), batch, y_g, step)
        (grads_g,) = pullback(dy)
        grads_g, norm_g = clip(grads_g)
        updates, opt_g = tx_g.update(grads_g, state["opt_g"], params_g, step=step)
        new_params_g = jax.tree_util.tree_map(jnp.add, params_g, updates)

        metrics = {**{k: jnp.asarray(v, jnp.float32) for k, v in {**aux_d, **aux_g}.items()},
                   "loss_disc_all": loss_d.astype(jnp.float32), "loss_gen_all": loss_g.astype(jnp.float32),
                   "grad_norm_g": norm_g, **{f"grad_norm_{g}": n for g, n in norms_d.items()}}
        metrics["finite"] = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
        if updated is not None:
            metrics["disc_updated"] = updated.astype(jnp.float32)
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(step)
        new_state = {**state, "step": step + 1, "params_g": new_params_g, "params_d": new_params_d,
                     "opt_g": opt_g, "opt_d": opt_d}
        return new_state, metrics

    return step_fn


# ------------------------------------------------------------------------------------------------------------
# Flow


def init_flow_state(obj: FlowObjective, tx, rng: Array, batch: Batch) -> dict:
    init_rng, rng = jax.random.split(rng)
    params = obj.init(init_rng, batch)
    return {"step": jnp.zeros((), jnp.int32), "rng": rng, "params": params, "opt": tx.init(params)}


def cast_floating(tree: Any, dtype) -> Any:
    """Casts the floating-point leaves of ``tree`` to ``dtype`` (the others unchanged)."""
    return jax.tree_util.tree_map(
        lambda x: x.astype(dtype) if jnp.issubdtype(x.dtype, jnp.floating) else x, tree)


def make_flow_step(obj: FlowObjective, tx, prepare: Callable[[Array], Batch], *, compute_dtype=jnp.float32,
                   clip_grad_norm: float | None = None, lr_schedule: Callable | None = None,
                   gather: Callable[[Any], Any] = lambda t: t, cast_params: Callable | None = None
                   ) -> Callable[[dict, Array], tuple[dict, dict]]:
    """The pure flow train step ``(state, audio) -> (state, metrics)``. With ``compute_dtype=bfloat16`` the
    parameters (float32 master copy in the state) and the batch are cast to bfloat16 for the forward and
    backward pass; gradients arrive in float32 (the cast's transpose) and the update is float32.
    ``cast_params(params, dtype)`` replaces the cast of every floating leaf (an objective keeping some
    weights in float32)."""
    low = jnp.dtype(compute_dtype) != jnp.float32
    cast = cast_params or cast_floating

    def step_fn(state: dict, audio: Array) -> tuple[dict, dict]:
        batch = prepare(audio)
        step = state["step"]

        def loss_fn(params):
            params = gather(params)
            if low:
                return obj.loss(cast(params, compute_dtype), cast_floating(batch, compute_dtype))
            return obj.loss(params, batch)

        (loss, aux), grads = jax.value_and_grad(loss_fn, has_aux=True)(state["params"])
        grad_norm = optim.global_norm(grads)
        if clip_grad_norm is not None:
            grads, grad_norm = optim.clip_grad_norm(grads, clip_grad_norm)
        updates, opt = tx.update(grads, state["opt"], state["params"], step=step)
        params = jax.tree_util.tree_map(jnp.add, state["params"], updates)
        metrics = {**{k: jnp.asarray(v, jnp.float32) for k, v in aux.items()},
                   "loss": loss.astype(jnp.float32), "grad_norm": grad_norm}
        metrics["finite"] = jnp.all(jnp.stack([jnp.isfinite(v) for v in metrics.values()]))
        if lr_schedule is not None:
            metrics["lr"] = lr_schedule(step)
        return {**state, "step": step + 1, "params": params, "opt": opt}, metrics

    return step_fn
