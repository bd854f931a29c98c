"""The sharded train step gives what one device gives (issue 5, item 2).

In a subprocess with 8 host CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), from the same
initial state and batches: 3 GAN steps (the first with the discriminators frozen, ``freeze_step=1``;
stand-in objective of tests/train_standin.py: the BigVGAN generator and two small discriminators) and 3
WaveGlow flow steps (tiny WaveGlow), each on one device, on a data-parallel mesh dp=8, and on dp=4 x fsdp=2
with every parameter and optimizer-state leaf that can be split sharded over fsdp.

Losses and parameters must agree within a relative difference of 1e-6 (the issue's bound: the sharded
programs sum the batch in a different order, float32 rounding of ~1e-7 relative is expected), with the
official optimizer settings (BigVGAN-v2 AdamW lr 1e-4, betas 0.8/0.99; WaveGlow Adam lr 1e-4). The
parameter *updates* (params - initial params) are a stricter measure: Adam's first steps are nearly
sign(g) * lr, so a gradient component that is a sum with heavy cancellation (conv_pre's bias: a sum over
batch and time of the output gradient) gets an O(lr) change from rounding alone. They are reported and
must agree within 1e-4.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO

SCRIPT = textwrap.dedent(r"""
    import json, os, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import speech
    from train_standin import StandinObjective, tiny_config
    from jaxvoc.models.bigvgan import BigVGANConfig
    from jaxvoc.train import config as config_lib, loop, sharding
    from jaxvoc.train.bigvgan import BigVGANTask

    assert jax.device_count() == 8, jax.devices()
    h = tiny_config(segment_size=2048, upsample_initial_channel=16, upsample_rates=[16, 16],
                    upsample_kernel_sizes=[32, 32], resblock_dilation_sizes=[[1]], learning_rate=1e-4, lr_decay=0.9999996)
    h["train"] = {"freeze_step": 1}
    path = os.path.join(tempfile.mkdtemp(), "tiny.json")
    json.dump(h, open(path, "w"))
    cfg = config_lib.load(path)
    task = BigVGANTask(cfg, obj=StandinObjective(BigVGANConfig.from_dict(cfg.model), freeze_step=1))
    y = speech(24000)
    batches = [np.stack([y[(i * 8 + j) * 1000:(i * 8 + j) * 1000 + 2048] for j in range(8)]) for i in range(3)]
    batches = [b / np.abs(b).max(axis=1, keepdims=True) * 0.95 for b in batches]

    def run(task, seg, mesh, fsdp_min, first, params_of):
        s = loop.build(task, mesh, seg, cfg.seed, fsdp_min)
        if first is None:  # initialise once (one device), then place the same values on each layout
            first = jax.device_get(s.init())
        state, losses = jax.device_put(first, s.state_shardings), []
        init = jax.device_get(params_of(state))
        n_sharded = sum(1 for x in jax.tree_util.tree_leaves(state) if "fsdp" in str(x.sharding.spec))
        for b in batches:
            state, m = s.step(state, sharding.global_batch(b[:, :seg].astype(np.float32), s.batch_sharding))
            losses.append({k: float(v) for k, v in jax.device_get(m).items()})
        return losses, init, jax.device_get(params_of(state)), n_sharded, first

    def rel(a, b):
        a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(a)])
        b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(b)])
        return float(np.linalg.norm(a - b) / np.linalg.norm(b))

    def compare(task, seg, params_of):
        ref_l, ref_init, ref_p, _, first = run(task, seg, sharding.make_mesh(1, jax.devices()[:1]), 2 ** 16, None,
                                               params_of)
        out = {}
        for name, fsdp in (("dp8", 1), ("dp4_fsdp2", 2)):
            l, init, p, n_sharded, _ = run(task, seg, sharding.make_mesh(fsdp), 0, first, params_of)
            keys = [k for k in ref_l[0] if k not in ("finite", "lr")]
            errs = {f"step{i}/{k}": abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
                    for i, (a, b) in enumerate(zip(l, ref_l)) for k in keys}
            worst = max(errs, key=errs.get)
            loss_rel = errs[worst]
            upd = jax.tree_util.tree_map(lambda x, x0: x - x0, p, init)
            ref_upd = jax.tree_util.tree_map(lambda x, x0: x - x0, ref_p, ref_init)
            out[name] = {"loss_rel": loss_rel, "params_rel": rel(p, ref_p), "update_rel": rel(upd, ref_upd),
                         "init_rel": rel(init, ref_init), "sharded_leaves": n_sharded, "worst": worst,
                         "finite": all(x["finite"] for x in l), "loss_keys": keys}
        return out

    out = {"gan": compare(task, 2048, lambda st: {"g": st["params_g"], "d": st["params_d"]})}

    # the WaveGlow flow step (tiny: 2 flows of 2-layer 16-channel WNs), float32
    from jaxvoc.train.waveglow import WaveGlowTask
    wg_raw = json.load(open(os.path.join(REPO, "experiments", "training", "configs", "waveglow_tiny_smoke.json")))
    wg_raw["waveglow_config"].update(n_flows=2, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16,
                                                                            "kernel_size": 3})
    wg_raw["train_config"].update(batch_size=8, learning_rate=1e-4)
    wg_raw["data_config"]["segment_length"] = 1024
    wg_path = os.path.join(tempfile.mkdtemp(), "wg.json")
    json.dump(wg_raw, open(wg_path, "w"))
    out["flow"] = compare(WaveGlowTask(config_lib.load(wg_path)), 1024, lambda st: st["params"])
    print("RESULT " + json.dumps(out))
""")


def test_sharded_step_matches_single_device(tmp_path):
    env = dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=8", PYTHONPATH=REPO,
               JAX_PLATFORMS="cpu")
    code = f"REPO = {REPO!r}\n" + SCRIPT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT ", 1)[1])
    print(json.dumps(res, indent=1))
    for kind, rows in res.items():
        for name, r in rows.items():
            assert r["finite"], (kind, name)
            assert r["init_rel"] == 0.0, (kind, name, r)  # the same initial state on every layout
            assert r["loss_rel"] <= 1e-6, (kind, name, r)
            assert r["params_rel"] <= 1e-6, (kind, name, r)
            assert r["update_rel"] <= 1e-4, (kind, name, r)
        assert rows["dp8"]["sharded_leaves"] == 0
        assert rows["dp4_fsdp2"]["sharded_leaves"] > 10  # parameters and both Adam moments split over fsdp
    assert "loss_disc_f" in res["gan"]["dp8"]["loss_keys"] and "grad_norm_mpd" in res["gan"]["dp8"]["loss_keys"]
    assert "loss" in res["flow"]["dp8"]["loss_keys"]
