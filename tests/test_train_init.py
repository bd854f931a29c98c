"""`--init CKPT` for BigVGAN: a jaxvoc checkpoint with the generator, the `discriminator` tree and the AdamW
moments that `jaxvoc convert bigvgan` writes from `bigvgan_discriminator_optimizer.pt` (`opt_state_g` /
`opt_state_d`: count, mu, nu, hyperparameters) lands in the train state exactly; a checkpoint of another
model is refused with one clear error."""

from __future__ import annotations

import json

import jax
import numpy as np
import optax
import pytest

from jaxvoc.io import checkpoint
from jaxvoc.errors import UserError


def _task(tmp_path, **over):
    from experiments.reference.bigvgan_train import small_config
    from jaxvoc.train import config as config_lib
    from jaxvoc.train.bigvgan import BigVGANTask

    h = small_config("bigvgan_24khz_100band", **over)
    path = tmp_path / f"c{len(over)}.json"
    path.write_text(json.dumps({**h, "segment_size": 4096, "batch_size": 1}))
    return BigVGANTask(config_lib.load(str(path))), h


def test_init_loads_generator_discriminators_and_adam_moments(tmp_path):
    from jaxvoc.train import loop, sharding

    task, h = _task(tmp_path)
    setup = loop.build(task, sharding.make_mesh(1, jax.devices()[:1]), 4096, 0)
    state = setup.init()
    rng = np.random.default_rng(0)
    rand = lambda tree: jax.tree_util.tree_map(lambda x: rng.standard_normal(x.shape).astype(np.float32), tree)
    host = jax.device_get(state)
    params, disc = rand(host["params_g"]), rand(host["params_d"])

    def moments(like, count):
        return {"count": np.asarray(count, np.int32), "mu": rand(like), "nu": jax.tree_util.tree_map(np.abs, rand(like)),
                "lr": np.float32(1e-4), "b1": np.float32(0.8)}

    opt_g, opt_d = moments(params, 1234), moments(disc, 1200)
    ckpt = str(tmp_path / "ckpt")
    checkpoint.save(ckpt, "bigvgan", h, params, extra={"discriminator": disc, "opt_state_g": opt_g, "opt_state_d": opt_d})
    new, what = task.apply_init(state, ckpt)
    assert what == "generator + discriminators + opt_g moments + opt_d moments"
    new = jax.device_get(new)
    same = lambda a, b: all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b)))
    assert same(new["params_g"], params) and same(new["params_d"], disc)
    for key, m in (("opt_g", opt_g), ("opt_d", opt_d)):
        adam = new[key][0]
        assert isinstance(adam, optax.ScaleByAdamState)
        assert int(adam.count) == int(m["count"]) and same(adam.mu, m["mu"]) and same(adam.nu, m["nu"])
    assert int(new["step"]) == 0  # the step (and the learning rate) start from the config
    # the initialised state trains: one step runs and stays finite
    _, metrics = setup.step(jax.device_put(new, setup.state_shardings),
                            jax.numpy.asarray(rng.standard_normal((1, 4096)).astype(np.float32) * 0.1))
    assert bool(metrics["finite"])


def test_init_refuses_another_model(tmp_path):
    from jaxvoc.train import loop, sharding

    task, h = _task(tmp_path)
    other, h2 = _task(tmp_path, upsample_initial_channel=32)
    params = jax.device_get(jax.eval_shape(other.init_state, jax.random.PRNGKey(0),
                                           jax.numpy.zeros((1, 4096)))["params_g"])
    params = jax.tree_util.tree_map(lambda x: np.zeros(x.shape, x.dtype), params)
    checkpoint.save(str(tmp_path / "other"), "bigvgan", h2, params)
    setup = loop.build(task, sharding.make_mesh(1, jax.devices()[:1]), 4096, 0)
    with pytest.raises(UserError, match="do not fit the model of the training config.*shape"):
        task.apply_init(setup.init(), str(tmp_path / "other"))
