"""The optimizers against torch's: AdamW + ExponentialLR as bigvgan/train.py uses them (scheduler stepped
every step, also while the discriminator optimizer is frozen), Adam as waveglow/train.py, and
clip_grad_norm_. Tolerance: float32 rounding — optax divides by sqrt(v / bc2) where torch divides by
sqrt(v) / sqrt(bc2), a difference of an ulp or two per step; 1e-6 relative on the parameters after 6
steps leaves room for that and none for a wrong formula (a wrong weight decay, bias correction or
learning-rate step shows at 1e-3 or more). The updates (params - initial params, ~1e-2 of parameters of
size ~1) are checked too, within 1e-4: each step torch and optax round the float32 parameter in a
different order (p * (1 - lr wd) then + step, against p + (-lr)(u + wd p)), one ulp of p (6e-8) being
~1e-5 of an update."""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from jaxvoc.train import optim


def _rel(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def _data(seed=0, steps=6):
    rng = np.random.default_rng(seed)
    p0 = {"w": rng.standard_normal((5, 7)).astype(np.float32), "b": rng.standard_normal(7).astype(np.float32)}
    grads = [{k: (rng.standard_normal(v.shape) * 10 ** rng.uniform(-3, 1)).astype(np.float32) for k, v in p0.items()}
             for _ in range(steps)]
    return p0, grads


@pytest.mark.parametrize("freeze", [0, 2])
def test_adamw_exponential_matches_torch(freeze):
    """freeze > 0: the optimizer does not step for the first ``freeze`` steps (the discriminators under
    freeze_step) while the scheduler does, so its first update uses lr * lr_decay ** freeze and Adam's bias
    correction of step 1."""
    lr, b1, b2, decay = 2e-3, 0.8, 0.99, 0.9
    p0, grads = _data()
    tp = [torch.nn.Parameter(torch.tensor(p0[k])) for k in ("w", "b")]
    opt = torch.optim.AdamW(tp, lr, betas=[b1, b2])
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, gamma=decay)
    tx = optim.adamw_exponential(lr, b1, b2, decay)
    params = jax.tree_util.tree_map(jnp.asarray, p0)
    state = tx.init(params)
    for step, g in enumerate(grads):
        if step >= freeze:
            for p, k in zip(tp, ("w", "b")):
                p.grad = torch.tensor(g[k])
            opt.step()
            upd, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, params, step=jnp.int32(step))
            params = jax.tree_util.tree_map(jnp.add, params, upd)
        sched.step()
    for p, k in zip(tp, ("w", "b")):
        assert _rel(np.float64(params[k]) - p0[k], np.float64(p.detach().numpy()) - p0[k]) < 1e-4  # the updates
        assert _rel(params[k], p.detach().numpy()) < 1e-6


def test_adam_matches_torch():
    lr = 1e-4
    p0, grads = _data(1)
    tp = [torch.nn.Parameter(torch.tensor(p0[k])) for k in ("w", "b")]
    opt = torch.optim.Adam(tp, lr=lr)
    tx = optim.adam(lr)
    params = jax.tree_util.tree_map(jnp.asarray, p0)
    state = tx.init(params)
    for step, g in enumerate(grads):
        for p, k in zip(tp, ("w", "b")):
            p.grad = torch.tensor(g[k])
        opt.step()
        upd, state = tx.update(jax.tree_util.tree_map(jnp.asarray, g), state, params, step=jnp.int32(step))
        params = jax.tree_util.tree_map(jnp.add, params, upd)
    for p, k in zip(tp, ("w", "b")):
        assert _rel(np.float64(params[k]) - p0[k], np.float64(p.detach().numpy()) - p0[k]) < 1e-4
        assert _rel(params[k], p.detach().numpy()) < 1e-6


@pytest.mark.parametrize("max_norm", [1e-3, 1e3])
def test_clip_grad_norm_matches_torch(max_norm):
    _, grads = _data(2, steps=1)
    g = grads[0]
    tg = [torch.nn.Parameter(torch.zeros(v.shape)) for v in g.values()]
    for p, v in zip(tg, g.values()):
        p.grad = torch.tensor(v)
    tnorm = float(torch.nn.utils.clip_grad_norm_(tg, max_norm))
    clipped, norm = optim.clip_grad_norm(jax.tree_util.tree_map(jnp.asarray, g), max_norm)
    assert abs(float(norm) - tnorm) <= 1e-6 * tnorm
    for p, k in zip(tg, g):
        np.testing.assert_allclose(np.asarray(clipped[k]), p.grad.numpy(), rtol=1e-6, atol=0)


def test_learning_rate_over_millions_of_steps():
    """lr_decay 0.9999996 (BigVGAN v2) after 2M steps: float32 powers of a rounded lr_decay would be off by
    percents; torch's scheduler multiplies in double precision."""
    sched = optim.exponential_lr(1e-4, 0.9999996)
    for step in (0, 1, 1000, 2_000_000):
        ref = 1e-4 * 0.9999996 ** step
        assert abs(float(sched(jnp.int32(step))) - ref) <= 1e-6 * ref, step
    assert math.isclose(float(sched(0)), 1e-4, rel_tol=1e-7)
