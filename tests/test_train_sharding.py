"""The sharded train step gives what one device gives (issue 5, item 2).

In a subprocess with 8 host CPU devices (XLA_FLAGS=--xla_force_host_platform_device_count=8), from the same
initial state and batches: 3 GAN steps (the first with the discriminators frozen, ``freeze_step=1``;
stand-in objective of tests/train_standin.py: the BigVGAN generator and two small discriminators) and 3
WaveGlow flow steps (tiny WaveGlow), each on one device, on a data-parallel mesh dp=8, and on dp=4 x fsdp=2
with every parameter and optimizer-state leaf that can be split sharded over fsdp.
XLA compiles them without LLVM's optimisation (conftest.quick_compile_xla_flags: the check compares layouts of
one program with each other, not speed; it roughly halves the compile-bound run).

Losses and parameters must agree within a relative difference of 1e-6 (the issue's bound: the sharded
programs sum the batch in a different order, float32 rounding of ~1e-7 relative is expected), with the
official optimizer settings (BigVGAN-v2 AdamW lr 1e-4, betas 0.8/0.99; WaveGlow Adam lr 1e-4). The
parameter *updates* (params - initial params) are a stricter measure: Adam's first steps are nearly
sign(g) * lr, so a gradient component that is a sum with heavy cancellation (conv_pre's bias: a sum over
batch and time of the output gradient) gets an O(lr) change from rounding alone. They are reported and
must agree within 1e-4.

The codec's step (issue 12) is checked in tests/test_codec_train_run.py with ``run_on_cpu_devices``, but each
step from the same state (train_standin.gan_steps_from_same_state): its generator gradient holds small
elements that float32 reduction order changes by O(1) of themselves, which Adam's first update moves by about
lr * sign(g) either way (docs/codec.md).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

from conftest import REPO, quick_compile_xla_flags

SCRIPT = textwrap.dedent(r"""
    import json, os, sys, tempfile
    import jax, jax.numpy as jnp, numpy as np
    sys.path.insert(0, os.path.join(REPO, "tests"))
    from conftest import speech
    from train_standin import StandinObjective, layouts_vs_single, tiny_config
    from jaxvoc.models.bigvgan import BigVGANConfig
    from jaxvoc.train import config as config_lib
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

    LAYOUTS = (("dp8", 1), ("dp4_fsdp2", 2))
    gan_batches = [b[:, :2048].astype(np.float32) for b in batches]
    out = {"gan": layouts_vs_single(task, 2048, gan_batches,
                                    lambda st: {"g": st["params_g"], "d": st["params_d"]}, LAYOUTS, cfg.seed)}

    # the WaveGlow flow step (tiny: 2 flows of 2-layer 16-channel WNs), float32
    from jaxvoc.train.waveglow import WaveGlowTask
    wg_raw = json.load(open(os.path.join(REPO, "experiments", "training", "configs", "waveglow_tiny_smoke.json")))
    wg_raw["waveglow_config"].update(n_flows=2, n_early_every=2, WN_config={"n_layers": 2, "n_channels": 16,
                                                                            "kernel_size": 3})
    wg_raw["train_config"].update(batch_size=8, learning_rate=1e-4)
    wg_raw["data_config"]["segment_length"] = 1024
    wg_path = os.path.join(tempfile.mkdtemp(), "wg.json")
    json.dump(wg_raw, open(wg_path, "w"))
    out["flow"] = layouts_vs_single(WaveGlowTask(config_lib.load(wg_path)), 1024,
                                    [b[:, :1024].astype(np.float32) for b in batches], lambda st: st["params"],
                                    LAYOUTS, cfg.seed)
    print("RESULT " + json.dumps(out))
""")


def run_on_cpu_devices(code: str, n: int, quick_compile: bool = False) -> dict:
    """``code`` (with ``REPO`` defined) in a subprocess with ``n`` host CPU devices; its line ``RESULT {json}``.
    ``quick_compile``: XLA without LLVM's optimisation (conftest.quick_compile_xla_flags; every layout and the
    single device alike)."""
    device_flag = f"--xla_force_host_platform_device_count={n}"
    env = dict(os.environ, XLA_FLAGS=quick_compile_xla_flags(device_flag) if quick_compile else device_flag,
               PYTHONPATH=REPO, JAX_PLATFORMS="cpu")
    proc = subprocess.run([sys.executable, "-c", f"REPO = {REPO!r}\n" + code], capture_output=True, text=True,
                          env=env, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(proc.stdout.split("RESULT ", 1)[1])
    print(json.dumps(res, indent=1))
    return res


def check_layout(kind: str, name: str, r: dict) -> None:
    """The bounds of the module docstring for one layout of ``train_standin.layouts_vs_single``."""
    assert r["finite"], (kind, name)
    assert r["init_rel"] == 0.0, (kind, name, r)  # the same initial state on every layout
    assert r["loss_rel"] <= 1e-6, (kind, name, r)
    assert r["params_rel"] <= 1e-6, (kind, name, r)
    assert r["update_rel"] <= 1e-4, (kind, name, r)


def test_sharded_step_matches_single_device(tmp_path):
    res = run_on_cpu_devices(SCRIPT, 8, quick_compile=True)
    for kind, rows in res.items():
        for name, r in rows.items():
            check_layout(kind, name, r)
        assert rows["dp8"]["sharded_leaves"] == 0
        assert rows["dp4_fsdp2"]["sharded_leaves"] > 10  # parameters and both Adam moments split over fsdp
    assert "loss_disc_f" in res["gan"]["dp8"]["loss_keys"] and "grad_norm_mpd" in res["gan"]["dp8"]["loss_keys"]
    assert "loss" in res["flow"]["dp8"]["loss_keys"]
