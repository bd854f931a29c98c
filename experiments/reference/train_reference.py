"""The whole jaxvoc BigVGAN train step against iterations of the official bigvgan/train.py loop body
(tests/test_train_gan_step.py, experiments/equivalence/train_step.py).

From identical weights (official random init, gains and Snake parameters randomised) and batch, runs
``steps`` iterations of the official loop (``experiments.reference.bigvgan_train.official_train_step`` with train.py's
AdamW optimizers and ExponentialLR schedulers stepped after every iteration), optionally also in float64,
and the same number of steps of the jitted step ``jaxvoc train`` uses (BigVGANTask: BigVGANObjective +
jaxvoc.train.objective.make_gan_step + jaxvoc.train.optim). Reports per-step loss differences and, per
parameter group, the agreement of the parameter updates (params after the steps - initial params).
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np


def _flat(tree) -> dict:
    from conversion import common

    return {k: np.asarray(v, np.float64) for k, v in common.flatten(tree).items()}


def update_metrics(test: dict, ref: dict) -> dict:
    keys = sorted(ref)
    if sorted(test) != keys:
        raise ValueError("parameter trees differ")
    u = np.concatenate([test[k].ravel() for k in keys])
    r = np.concatenate([ref[k].ravel() for k in keys])
    nu, nr = np.linalg.norm(u), np.linalg.norm(r)
    return {"cos": float(u @ r / (nu * nr)), "norm_diff": float(abs(nu - nr) / nr),
            "rel_err": float(np.linalg.norm(u - r) / nr)}


def _official_steps(h, gen, mpd, mrd, x, y, y_mel, steps, freeze_step, mel_fn=None):
    import torch

    from experiments.reference.bigvgan_train import official_train_step

    from conversion.bigvgan import official_optimizers

    optim_g, optim_d = official_optimizers(h, gen, mpd, mrd)
    sg = torch.optim.lr_scheduler.ExponentialLR(optim_g, gamma=h["lr_decay"])
    sd = torch.optim.lr_scheduler.ExponentialLR(optim_d, gamma=h["lr_decay"])
    losses = []
    for step in range(steps):
        out = official_train_step(h, gen, mpd, mrd, x, y, y_mel, steps=step, freeze_step=freeze_step,
                                  optim_g=optim_g, optim_d=optim_d, **({"mel_fn": mel_fn} if mel_fn else {}))
        losses.append(out["losses"])
        sg.step()
        sd.step()
    return losses


def compare_train_steps(h: dict, segments: np.ndarray, *, steps: int = 2, freeze_step: int = 1,
                        float64: bool = False, seed: int = 0) -> dict:
    """``h``: an official BigVGAN config dict (small for CPU); ``segments`` [B, T] audio at its rate.
    Returns {'losses': [{term: {'jax_vs_32', '32_vs_64'?}} per step], 'updates': {group: {'jax_vs_32': metrics,
    '32_vs_64': metrics?}}, 'grad_norms': [{name: (jax, torch32)}]}."""
    import jax
    import jax.numpy as jnp

    from conversion import bigvgan as cb
    from experiments.reference.bigvgan_train import float64_mel_constants, official_batch, official_discriminators, randomize_discriminator_
    from jaxvoc.models.bigvgan import BigVGANConfig
    from jaxvoc.train import config as config_lib
    from jaxvoc.train import loop, sharding
    from jaxvoc.train.bigvgan import BigVGANTask

    seg = int(segments.shape[1])
    gen = cb.official_model(h, seed=seed)
    cb.randomize_(gen, seed)
    mpd, mrd = official_discriminators(h, seed=seed + 1)
    randomize_discriminator_(mpd, seed + 2)
    randomize_discriminator_(mrd, seed + 3)
    snap = lambda m: {k: v.detach().clone().float() for k, v in m.state_dict().items()}
    g0, mpd0, mrd0 = snap(gen), snap(mpd), snap(mrd)
    bcfg = BigVGANConfig.from_dict(h)
    dcfg = cb.discriminator_config(bcfg)
    p_g0 = cb.convert_state_dict(g0, bcfg, "g")
    p_d0 = {n: cb.convert_discriminator_state_dict(sd, dcfg, n, n) for n, sd in (("mpd", mpd0), ("mrd", mrd0))}

    def updates(g, d1, d2):
        fg, f0 = _flat(cb.convert_state_dict(snap(g), bcfg, "g")), _flat(p_g0)
        out = {"g": {k: fg[k] - f0[k] for k in f0}}
        for n, m in (("mpd", d1), ("mrd", d2)):
            fd, f0 = _flat(cb.convert_discriminator_state_dict(snap(m), dcfg, n, n)), _flat(p_d0[n])
            out[n] = {k: fd[k] - f0[k] for k in f0}
        return out

    x, y, y_mel = official_batch(h, segments)
    runs = {"32": _official_steps(h, gen, mpd, mrd, x, y, y_mel, steps, freeze_step)}
    upd = {"32": updates(gen, mpd, mrd)}
    if float64:
        g64 = cb.official_model(h, g0).double()
        m64, r64 = official_discriminators(h)
        m64.load_state_dict(mpd0)
        r64.load_state_dict(mrd0)
        m64, r64 = m64.double(), r64.double()
        with float64_mel_constants() as mel64:
            runs["64"] = _official_steps(h, g64, m64, r64, x.double(), y.double(), y_mel.double(), steps,
                                         freeze_step, mel_fn=mel64)
        upd["64"] = updates(g64, m64, r64)

    # jaxvoc: the jitted step of `jaxvoc train`, one device
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.json")
        with open(path, "w") as f:
            json.dump({**h, "segment_size": seg, "batch_size": int(segments.shape[0]),
                       "train": {"freeze_step": freeze_step}}, f)
        task = BigVGANTask(config_lib.load(path))
    setup = loop.build(task, sharding.make_mesh(1, jax.devices()[:1]), seg, seed)
    state = setup.init()
    state = {**state, "params_g": jax.tree_util.tree_map(jnp.asarray, p_g0),
             "params_d": jax.tree_util.tree_map(jnp.asarray, p_d0)}
    state = jax.device_put(state, setup.state_shardings)
    audio = jnp.asarray(y.numpy())
    lj = []
    for _ in range(steps):
        state, m = setup.step(state, audio)
        lj.append({k: float(v) for k, v in jax.device_get(m).items()})
    fj = {"g": _flat(jax.device_get(state["params_g"])),
          **{n: _flat(jax.device_get(state["params_d"][n])) for n in ("mpd", "mrd")}}
    f0 = {"g": _flat(p_g0), **{n: _flat(p_d0[n]) for n in ("mpd", "mrd")}}
    updj = {grp: {k: fj[grp][k] - f0[grp][k] for k in f0[grp]} for grp in f0}

    rel = lambda a, b: abs(a - b) / max(abs(b), 1e-30)
    report = {"losses": [], "updates": {}, "metrics": lj}
    for s in range(steps):
        row = {}
        for term, v32 in runs["32"][s].items():
            row[term] = {"jax_vs_32": rel(lj[s][term], v32)}
            if float64:
                row[term]["32_vs_64"] = rel(v32, runs["64"][s][term])
        report["losses"].append(row)
    for grp in ("g", "mpd", "mrd"):
        report["updates"][grp] = {"jax_vs_32": update_metrics(updj[grp], upd["32"][grp])}
        if float64:
            report["updates"][grp]["32_vs_64"] = update_metrics(upd["32"][grp], upd["64"][grp])
    return report
