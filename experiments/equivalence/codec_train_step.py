"""jaxvoc's whole jitted codec GAN step against NeMo 3.0.0's own ``AudioCodecModel.training_step`` at the full
LFR config (issue 12, item 5: "the full LFR config in an experiment script"); the small-size test is
tests/test_codec_train_step.py, which drives the JAX side with ``jax_steps`` below.

    python -m experiments.equivalence.codec_train_step [--work DIR] [--batch 2] [--report J] [--small]

The official side is experiments/reference/codec_train.py: NeMo's model built from the LFR config
(``lfr_config_full``: encoder base_channels 48, decoder 1024, 8 FSQ groups of [8,7,6,6], all 7 mel/STFT loss
resolutions, the STFT discriminator at its 5 resolutions, the period discriminator at periods 2,3,5,7,11, the
SLM discriminator with its published head on 13 hidden states 768 wide) whose WavLM has the wavlm-base-plus
architecture (``conversion.codec.WAVLM_BASE_PLUS``: 12 layers, 768 wide, 94.4 M parameters) with random
weights, since the hub is unreachable here; every parameter randomised (``build_model``). The batch is what
NeMo's VocoderDataset makes of two clips of the speech fixture: a random 24576-sample crop of the whole
sentence and its first 20000 samples, kept whole and zero-padded (``--batch 1``: the crop alone). Two steps,
batch_idx 0 (discriminator update) and 1 (none): NeMo float32, NeMo float64 (a ``.double()`` copy of the
same weights) and jaxvoc (weights converted by conversion/codec.py, WavLM written as a Hugging Face folder and
converted by conversion/wavlm.py).

Memory: both NeMo precisions in one process hold over 14 GB, so each run is a process of its own (``--phase``,
started by the driver) that writes its steps to ``--work`` (numpy files, read back lazily); a phase whose
files are there is not run again. The comparison (``compare_runs`` of the harness) is made in the driver.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time
from collections.abc import Mapping
from typing import Sequence

import numpy as np

PHASES = ("nemo32", "jax", "nemo64")  # jaxvoc vs NeMo float32 first: NeMo float64 is the longest and largest
STEPS = 2
BATCHES_PER_EPOCH = 2  # the reference run's epoch: batch_idx 0 (discriminator update) and 1 (none)
# issue 12, item 5
LOSS_REL, GRAD_COS, GRAD_NORM = 1e-5, 1e-5, 1e-4


# ----------------------------------------------------------------------------------------------------------
# The JAX side


def recording(tx):
    """``tx`` with the gradients it was last given kept in its state: ``(grads, tx's state)``."""
    import jax
    import jax.numpy as jnp
    import optax

    def init(params):
        return (jax.tree_util.tree_map(jnp.zeros_like, params), tx.init(params))

    def update(grads, state, params=None, **extra):
        updates, inner = tx.update(grads, state[1], params, **extra)
        return updates, (grads, inner)

    return optax.GradientTransformationExtraArgs(init, update)


def jax_steps(config: dict, initial: Mapping, batch: dict, wavlm: str, steps: int = STEPS,
              keep_states: bool = True, source: str = "config", first_step: int = 0) -> dict:
    """``steps`` steps of jaxvoc's whole jitted GAN step (``objective.make_gan_step`` with ``CodecObjective``,
    ``optim.codec_optimizers`` and ``objective.periodic_disc_update``, one compiled program) from NeMo's
    weights ``initial`` (NeMo's state dict, converted by conversion/codec.py) on NeMo's ``batch`` ({'audio',
    'audio_lens'}), WavLM read from the converted checkpoint ``wavlm``. What the optimizers receive is recorded
    by wrapping each optax transformation: the gradients of the step itself. Returns {'jax': per step the keys
    of the harness's ``run_steps`` under NeMo's names ('batch_idx', 'disc_updated', 'metrics', 'losses',
    'grads_g', 'grads_d', 'state_dict'), 'states' (the train states, initial one first; only with
    ``keep_states``), 'abstract' (what ``init_gan_state`` makes, as shapes), 'step' (the jitted step)}.
    ``first_step``: the global step the first one takes (its batch_idx; fresh Adam states either way)."""
    import jax
    import jax.numpy as jnp

    from conversion import codec as cc
    from conversion import common
    from jaxvoc.train import objective, optim
    from jaxvoc.train.codec import CodecObjective

    obj = CodecObjective(config, wavlm=wavlm, source=source)
    params_g, extra = cc.convert_state_dict(common.normalize_keys(dict(initial)), obj.codec, "NeMo's initial weights")
    params_d = {"discriminator": extra["discriminator"]}

    h = obj.hyper
    tx_g, tx_d, schedule = optim.codec_optimizers(obj.training.optim, BATCHES_PER_EPOCH, 2)
    tx_g, tx_d = recording(tx_g), recording(tx_d)
    jbatch = {"audio": jnp.asarray(batch["audio"]), "audio_len": jnp.asarray(batch["audio_lens"], jnp.int32)}
    # the state as the loop's init makes it (checked against the converted weights' shapes), NeMo's weights in it
    abstract = jax.eval_shape(lambda rng, b: objective.init_gan_state(obj, tx_g, tx_d, rng, obj.prepare(b)),
                              jax.random.PRNGKey(0), jbatch)
    state = {"step": jnp.asarray(first_step, jnp.int32), "rng": jax.random.PRNGKey(0), "params_g": params_g,
             "params_d": params_d, "opt_g": tx_g.init(params_g), "opt_d": tx_d.init(params_d),
             objective.FROZEN: obj.frozen_params()}
    state = jax.tree_util.tree_map(jnp.asarray, state)
    step = jax.jit(objective.make_gan_step(
        obj, tx_g, tx_d, obj.prepare, clip_grad_norm=h.clip_grad_norm, lr_schedule=schedule,
        disc_update=objective.periodic_disc_update(BATCHES_PER_EPOCH, h.disc_update_period,
                                                   h.disc_updates_per_period, h.disc_start_epoch)))
    out, states = [], [state] if keep_states else None
    for i in range(steps):
        state, metrics = step(state, jbatch)
        if keep_states:
            states.append(state)
        host = jax.device_get({"m": metrics, "g": state["params_g"], "d": state["params_d"],
                               "gg": state["opt_g"][0], "gd": state["opt_d"][0]})
        updated = bool(host["m"]["disc_updated"])
        sd_after = dict(initial)  # NeMo's names; buffers (windows, ...) stay as NeMo's, unchanged by a step
        mine = cc.nemo_state_dict({"params": host["g"], "discriminator": host["d"]["discriminator"]})
        if not set(mine) <= set(initial):
            raise ValueError(f"names NeMo's state dict lacks: {sorted(set(mine) - set(initial))[:4]}")
        sd_after.update(mine)
        out.append({"batch_idx": first_step + i, "disc_updated": updated, "metrics": host["m"],
                    "losses": {k: float(v) for k, v in host["m"].items()},
                    "grads_g": cc.nemo_state_dict({"params": host["gg"]}),
                    "grads_d": cc.nemo_state_dict({"params": {}, "discriminator": host["gd"]["discriminator"]})
                    if updated else {},
                    "state_dict": sd_after})
    return {"jax": out, "states": jax.device_get(states) if keep_states else None, "abstract": abstract,
            "step": step}


def convert_wavlm(hf_folder: str, out: str) -> None:
    """The stand-in WavLM (``codec_train.save_wavlm``'s Hugging Face folder) as a jaxvoc checkpoint, by
    conversion/wavlm.py (what ``jaxvoc convert wavlm`` does)."""
    from conversion import wavlm as cw
    from jaxvoc.io import checkpoint

    conv = cw.convert(hf_folder)
    checkpoint.save(out, "wavlm", conv.config, conv.params)


# ----------------------------------------------------------------------------------------------------------
# Steps on disk


ARRAYS = ("grads_g", "grads_d", "state_dict")


def save_steps(path: str, steps: list[dict]) -> None:
    """``path``.json (per step: batch_idx, disc_updated, losses, ...) and ``path``.npz (the arrays)."""
    arrays = {f"{i}/{key}/{name}": np.asarray(v) for i, s in enumerate(steps) for key in ARRAYS
              for name, v in s[key].items()}
    meta = [{k: v for k, v in s.items() if k not in ARRAYS + ("metrics", "logged")} for s in steps]
    np.savez(path + ".npz", **arrays)
    with open(path + ".json", "w") as f:
        json.dump(meta, f, indent=1)


class _Lazy(Mapping):
    """The arrays of an npz file under ``prefix``, each read when asked for."""

    def __init__(self, npz, prefix: str):
        self.npz, self.prefix = npz, prefix
        self.names = [k[len(prefix):] for k in npz.files if k.startswith(prefix)]

    def __getitem__(self, name):
        return self.npz[self.prefix + name]

    def __iter__(self):
        return iter(self.names)

    def __len__(self):
        return len(self.names)


def load_steps(path: str) -> list[dict]:
    with open(path + ".json") as f:
        meta = json.load(f)
    npz = np.load(path + ".npz", allow_pickle=False)
    return [{**m, **{key: _Lazy(npz, f"{i}/{key}/") for key in ARRAYS}} for i, m in enumerate(meta)]


def _done(work: str, phase: str) -> bool:
    return os.path.exists(os.path.join(work, phase + ".done.json"))


def _peak_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux


# ----------------------------------------------------------------------------------------------------------
# The phases (one process each)


def _setup(args):
    from conversion import codec as cc
    from experiments.reference import codec_train as ct

    if args.small:
        return ct.small_config(), ct.small_batch(args.seed), cc.WAVLM_SMALL
    batch = ct.vocoder_batch([-1, 20000][:args.batch], ct.LFR_N_SAMPLES, seed=args.seed)
    return ct.lfr_config_full(), batch, cc.WAVLM_BASE_PLUS


def run_phase(phase: str, args) -> None:
    import torch

    from experiments.reference import codec_train as ct

    torch.set_num_threads(args.threads)
    t0 = time.time()
    w = lambda name: os.path.join(args.work, name)  # noqa: E731
    if phase == "nemo32":
        cfg, batch, arch = _setup(args)
        model = ct.build_model(cfg, args.seed, wavlm=arch)
        from safetensors.torch import save_file

        save_file({k: v.detach().clone().contiguous() for k, v in torch.nn.Module.state_dict(model).items()},
                  w("initial_full.safetensors"))
        np.savez(w("initial.npz"), **ct._state(model))
        np.savez(w("batch.npz"), **batch)
        ct.save_wavlm(model, w("wavlm_hf"))
        with open(w("config.json"), "w") as f:
            json.dump({"config": cfg, "wavlm": arch}, f, indent=1)
        save_steps(w("nemo32"), ct.run_steps(model, batch, (STEPS,)))
    elif phase == "nemo64":
        from safetensors.torch import load_file

        cfg, arch = _read_config(args.work)
        model = ct.float64_model(cfg, load_file(w("initial_full.safetensors")), args.seed, arch)
        save_steps(w("nemo64"), ct.run_steps(model, _read_batch(args.work), (STEPS,), float64=True))
    elif phase == "jax":
        import shutil

        cfg, _ = _read_config(args.work)
        shutil.rmtree(w("wavlm"), ignore_errors=True)  # an earlier try's conversion
        convert_wavlm(w("wavlm_hf"), w("wavlm"))
        initial = dict(np.load(w("initial.npz"), allow_pickle=False))
        res = jax_steps(cfg, initial, _read_batch(args.work), w("wavlm"), keep_states=False,
                        source="lfr_config_full")
        save_steps(w("jax"), res["jax"])
    elif phase == "jax_same":  # step 1 from NeMo float32's own state after step 0 (see --same-state)
        cfg, _ = _read_config(args.work)
        after0 = dict(load_steps(w("nemo32"))[0]["state_dict"])
        res = jax_steps(cfg, after0, _read_batch(args.work), w("wavlm"), steps=1, keep_states=False,
                        source="lfr_config_full", first_step=1)
        save_steps(w("jax_same"), res["jax"])
    else:
        raise ValueError(phase)
    with open(w(phase + ".done.json"), "w") as f:
        json.dump({"wall_s": time.time() - t0, "peak_rss_gib": _peak_gb()}, f)


def _read_config(work: str):
    with open(os.path.join(work, "config.json")) as f:
        c = json.load(f)
    return c["config"], c["wavlm"]


def _read_batch(work: str) -> dict:
    return dict(np.load(os.path.join(work, "batch.npz"), allow_pickle=False))


# ----------------------------------------------------------------------------------------------------------
# The comparison


def bound(issue: float, official_rounding: float) -> float:
    """The issue's bound, or 2x NeMo's own float32-vs-float64 figure where that is larger."""
    return max(issue, 2.0 * official_rounding)


def compare(work: str) -> dict:
    """Per step, jaxvoc vs NeMo float32, vs NeMo float64, NeMo float32 vs float64 (the harness's
    ``compare_runs``), and each figure's bound and whether it holds. Step 0 (identical weights): losses and
    gradients against the issue's bounds, updates against 2x NeMo's own (Adam's first step is about
    lr * sign(g), docs/codec.md "Reference training step"); step 1: everything against the issue's bound or 2x
    NeMo's own, whichever is larger, as tests/test_codec_train_step.py holds it."""
    from experiments.reference import codec_train as ct

    initial = _Lazy(np.load(os.path.join(work, "initial.npz"), allow_pickle=False), "")
    done = [p for p in PHASES if _done(work, p)]
    runs = {p: load_steps(os.path.join(work, p)) for p in done}
    vs32 = ct.compare_runs(runs["jax"], runs["nemo32"], initial)
    vs64 = ct.compare_runs(runs["jax"], runs["nemo64"], initial) if "nemo64" in runs else None
    own = ct.compare_runs(runs["nemo32"], runs["nemo64"], initial) if "nemo64" in runs else None
    pick = lambda rows, s, key, f: None if rows is None else f(rows[s][key])  # noqa: E731
    rows = []
    for s in range(STEPS):
        for term, err in vs32[s]["losses"].items():
            ref = pick(own, s, "losses", lambda d: d[term])
            b = LOSS_REL if s == 0 or ref is None else bound(LOSS_REL, ref)
            rows.append({"step": s, "quantity": f"loss {term}", "kind": "relative error", "jax_vs_nemo32": err,
                         "jax_vs_nemo64": pick(vs64, s, "losses", lambda d: d[term]), "nemo32_vs_nemo64": ref,
                         "bound": b})
        for key in ("grads_g", "grads_d", "update_g", "update_d"):
            if key not in vs32[s]:
                continue
            for kind, f, issue in (("1 - cos", lambda m: 1 - m["cos"], GRAD_COS),
                                   ("relative norm difference", lambda m: m["norm_diff"], GRAD_NORM)):
                ref = pick(own, s, key, f)
                b = issue if (s == 0 and key.startswith("grads")) or ref is None else bound(issue, ref)
                rows.append({"step": s, "quantity": key, "kind": kind, "size": vs32[s][key]["size"],
                             "jax_vs_nemo32": f(vs32[s][key]), "jax_vs_nemo64": pick(vs64, s, key, f),
                             "nemo32_vs_nemo64": ref, "bound": b})
    for r in rows:
        r["holds"] = bool(all(r[k] is None or r[k] <= r["bound"] for k in ("jax_vs_nemo32", "jax_vs_nemo64")))
    info = {}
    for p in done:
        with open(os.path.join(work, p + ".done.json")) as f:
            info[p] = json.load(f)
    losses = {p: [dict(s["losses"]) for s in runs[p]] for p in done}
    return {"rows": rows, "phases": info, "losses": losses, "missing": [p for p in PHASES if p not in done],
            "disc_updated": {p: [s["disc_updated"] for s in runs[p]] for p in done}}


def table(rows: list[dict]) -> str:
    lines = ["| step | quantity | jaxvoc vs NeMo float32 | jaxvoc vs NeMo float64 | NeMo float32 vs float64 | "
             "bound | holds |", "|---|---|---|---|---|---|---|"]
    fmt = lambda v: "—" if v is None else f"{v:.1e}"  # noqa: E731
    for r in rows:
        lines.append(f"| {r['step']} | {r['quantity']} {r['kind']} | {fmt(r['jax_vs_nemo32'])} | "
                     f"{fmt(r['jax_vs_nemo64'])} | {fmt(r['nemo32_vs_nemo64'])} | {r['bound']:.1e} | "
                     f"{'yes' if r['holds'] else 'NO'} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", default="/tmp/jaxvoc_codec_train_full",
                    help="folder for each run's steps (a phase whose files are there is not run again)")
    ap.add_argument("--batch", type=int, choices=(1, 2), default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--small", action="store_true", help="the small config of the test instead (a quick check)")
    ap.add_argument("--report", help="write the comparison as JSON here")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a loaded 2-core machine two threads run ~3x slower)")
    ap.add_argument("--same-state", action="store_true",
                    help="also step 1 of jaxvoc from NeMo float32's own weights after step 0, against NeMo's step 1 "
                         "(after the three phases): the step-1 difference without the runs' divergence")
    ap.add_argument("--phase", choices=PHASES + ("jax_same",), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    os.makedirs(args.work, exist_ok=True)
    if args.phase:
        run_phase(args.phase, args)
        return 0
    t0, load0, failed = time.time(), os.getloadavg(), []
    for phase in PHASES:
        if _done(args.work, phase):
            print(f"{phase}: already in {args.work}", flush=True)
            continue
        t = time.time()
        cmd = [sys.executable, "-m", "experiments.equivalence.codec_train_step", *_phase_args(args), "--phase", phase]
        rc = subprocess.call(cmd)
        if rc != 0:  # the comparison is made of the phases that ran (NeMo float64 may not fit in memory)
            print(f"{phase} failed (exit {rc}, load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
            failed.append(phase)
            if phase != "nemo64":
                return 1
            continue
        print(f"{phase}: {time.time() - t:.0f} s, load {os.getloadavg()[0]:.1f}", flush=True)
    rep = compare(args.work)
    import jax
    import torch

    rep.update({"command": "python -m experiments.equivalence.codec_train_step " + " ".join(
        sys.argv[1:] if argv is None else argv), "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "versions": {"torch": torch.__version__, "jax": jax.__version__}, "batch": args.batch,
        "config": "small_config" if args.small else "LFR full size, WavLM wavlm-base-plus architecture (random)",
        "wall_s_this_call": time.time() - t0, "load_average_start_end": [load0, os.getloadavg()]})
    print(table(rep["rows"]))
    for p, info in rep["phases"].items():
        print(f"{p}: {info['wall_s']:.0f} s, peak RSS {info['peak_rss_gib']:.1f} GiB; losses {rep['losses'][p]}")
    if args.same_state:
        rep["same_state"] = same_state(args)
    if args.report:
        from jaxvoc.io.atomic import atomic_file

        with atomic_file(args.report) as tmp, open(tmp, "w") as f:
            json.dump(rep, f, indent=1)
    if rep["missing"]:
        print(f"not run: {', '.join(rep['missing'])} (the figures beside it are missing)")
    return 0 if all(r["holds"] for r in rep["rows"]) and not failed else 1


def same_state(args) -> dict:
    """jaxvoc's step 1 (no discriminator update) from NeMo float32's weights after its step 0 (phase
    ``jax_same``, run once) against NeMo float32's step 1: the losses and the generator gradient from one and
    the same state, with the bounds of step 0 (the issue's). Prints and returns the rows."""
    from experiments.reference import codec_train as ct

    if not _done(args.work, "jax_same"):
        cmd = [sys.executable, "-m", "experiments.equivalence.codec_train_step", *_phase_args(args), "--phase",
               "jax_same"]
        if subprocess.call(cmd) != 0:
            raise SystemExit("the jax_same phase failed")
    mine = load_steps(os.path.join(args.work, "jax_same"))
    ref = load_steps(os.path.join(args.work, "nemo32"))[1:]
    row = ct.compare_runs(mine, ref)[0]
    out = {"losses": row["losses"], "grads_g": {"1 - cos": 1 - row["grads_g"]["cos"],
                                                "relative norm difference": row["grads_g"]["norm_diff"]}}
    out["holds"] = bool(max(out["losses"].values()) <= LOSS_REL and out["grads_g"]["1 - cos"] <= GRAD_COS
                        and out["grads_g"]["relative norm difference"] <= GRAD_NORM)
    print("step 1 from NeMo float32's state after step 0, jaxvoc vs NeMo float32: losses max relative "
          f"{max(out['losses'].values()):.1e} ({max(out['losses'], key=out['losses'].get)}); generator gradient "
          f"1 - cos {out['grads_g']['1 - cos']:.1e}, norm difference {out['grads_g']['relative norm difference']:.1e}"
          f" (bounds {LOSS_REL:g}, {GRAD_COS:g}, {GRAD_NORM:g}: {'hold' if out['holds'] else 'DO NOT hold'})")
    return out


def _phase_args(args) -> list[str]:
    out = ["--work", args.work, "--batch", str(args.batch), "--seed", str(args.seed), "--threads", str(args.threads)]
    return out + (["--small"] if args.small else [])


if __name__ == "__main__":
    sys.exit(main())
