"""A small stand-in GAN objective for the training-infrastructure tests: the jaxvoc BigVGAN generator and two
tiny convolutional discriminator groups, least-squares GAN losses, feature matching and a mel L1 — the shape
of BigVGAN's objective at a fraction of its cost. The tests of the real BigVGAN objective live with it; these
test the step, sharding, checkpoints and loop, which do not depend on which losses are plugged in.

``factory(cfg)`` is the ``train.objective`` hook (``"tests.train_standin:factory"``). Set
``JAXVOC_STANDIN_NAN_AT=k`` to make every loss NaN from step k on (the NaN-stop test)."""

from __future__ import annotations

import dataclasses
import os

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxvoc.dsp.stft import mel_spectrogram
from jaxvoc.models.bigvgan import BigVGAN, BigVGANConfig
from jaxvoc.nn.conv import Conv1d


class TinyDisc(nn.Module):
    period: int = 1

    @nn.compact
    def __call__(self, y):  # y [B, T] -> (score [B, n], fmaps)
        B, T = y.shape
        x = y.reshape(B, T // self.period, self.period)  # periods as channels
        fmaps = []
        for i, (c, s) in enumerate(((8, 4), (16, 4))):
            x = nn.leaky_relu(Conv1d(c, 5, stride=s, padding=2, weight_norm=True, name=f"convs_{i}")(x), 0.1)
            fmaps.append(x)
        x = Conv1d(1, 3, padding=1, weight_norm=True, name="conv_post")(x)
        fmaps.append(x)
        return x.reshape(B, -1), fmaps


@dataclasses.dataclass
class StandinObjective:
    config: BigVGANConfig
    freeze_step: int = 0
    name: str = "standin"
    discriminator_groups: tuple = ("mpd", "mrd")

    def __post_init__(self):
        self.gen = BigVGAN(self.config)
        self.discs = {"mpd": TinyDisc(2), "mrd": TinyDisc(1)}
        self.nan_at = int(os.environ.get("JAXVOC_STANDIN_NAN_AT", "-1"))

    def init(self, rng, batch):
        kg, kd = jax.random.split(rng)
        params_g = self.gen.init(kg, batch["mel"][:1])["params"]
        y = batch["audio"][:1]
        params_d = {g: d.init(jax.random.fold_in(kd, i), y)["params"] for i, (g, d) in enumerate(self.discs.items())}
        return params_g, params_d

    def generate(self, params_g, batch):
        return self.gen.apply({"params": params_g}, batch["mel"])

    def _d(self, params_d, g, y):
        return self.discs[g].apply({"params": params_d[g]}, y)

    def discriminator_loss(self, params_d, batch, y_g):
        aux = {}
        for g, short in (("mpd", "f"), ("mrd", "s")):
            r, _ = self._d(params_d, g, batch["audio"])
            f, _ = self._d(params_d, g, y_g)
            aux[f"loss_disc_{short}"] = jnp.mean((1 - r) ** 2) + jnp.mean(f ** 2)
        return aux["loss_disc_f"] + aux["loss_disc_s"], aux

    def generator_loss(self, params_d, batch, y_g, step):
        mel_cfg = self.config.mel
        loss_mel = jnp.mean(jnp.abs(mel_spectrogram(y_g, mel_cfg) - batch["mel_loss"])) * 45.0
        aux = {"loss_mel": loss_mel}
        for g, short in (("mpd", "f"), ("mrd", "s")):
            r, fr = self._d(params_d, g, batch["audio"])
            f, ff = self._d(params_d, g, y_g)
            aux[f"loss_gen_{short}"] = jnp.mean((1 - f) ** 2)
            aux[f"loss_fm_{short}"] = 2 * sum(jnp.mean(jnp.abs(a - b)) for a, b in zip(fr, ff))
        adv = aux["loss_gen_f"] + aux["loss_gen_s"] + aux["loss_fm_f"] + aux["loss_fm_s"]
        total = jnp.where(step >= self.freeze_step, adv + loss_mel, loss_mel)
        if self.nan_at >= 0:
            total = jnp.where(step >= self.nan_at, jnp.nan, total)
        return total, aux


def tiny_config(**over) -> dict:
    """A small BigVGAN config (official key names) for CPU tests: 24 kHz, 100 mels, hop 256."""
    h = {
        "resblock": "2", "batch_size": 8, "learning_rate": 1e-3, "adam_b1": 0.8, "adam_b2": 0.99,
        "lr_decay": 0.999, "seed": 1234, "upsample_rates": [8, 8, 4], "upsample_kernel_sizes": [16, 16, 8],
        "upsample_initial_channel": 32, "resblock_kernel_sizes": [3], "resblock_dilation_sizes": [[1, 3]],
        "use_tanh_at_final": False, "use_bias_at_final": False, "activation": "snakebeta", "snake_logscale": True,
        "clip_grad_norm": 500, "segment_size": 4096, "num_mels": 100, "n_fft": 1024, "hop_size": 256,
        "win_size": 1024, "sampling_rate": 24000, "fmin": 0, "fmax": None, "fmax_for_loss": None,
    }
    h.update(over)
    return h


def factory(cfg):
    return StandinObjective(BigVGANConfig.from_dict(cfg.model), freeze_step=cfg.train.freeze_step)


# ------------------------------------------------------------------------------------------------------------
# helpers for the CLI tests


FAST = dict(segment_size=2048, upsample_initial_channel=16, upsample_rates=[16, 16], upsample_kernel_sizes=[32, 32],
            resblock_dilation_sizes=[[1]], batch_size=4)


def write_wavs(folder, n: int = 5, sr: int = 24000) -> str:
    """``n`` clips of the committed speech at ``sr`` (24000 or 22050; different offsets and lengths) and one
    shorter than a segment in ``folder``."""
    import soundfile as sf
    from conftest import speech

    os.makedirs(folder, exist_ok=True)
    y = speech(sr)
    for i in range(n):
        sf.write(os.path.join(folder, f"clip{i}.wav"), y[i * 7000: i * 7000 + 9000 + 4000 * i], sr,
                 subtype="PCM_16")
    sf.write(os.path.join(folder, "short.wav"), y[20000:21500], sr, subtype="PCM_16")
    return str(folder)


def write_config(path, wavs: str, run_dir: str, model: dict | None = None, **train) -> str:
    import json

    h = tiny_config(**{**FAST, **(model or {})})
    h["train"] = {"input_wavs_dir": wavs, "num_validation_files": 0, "checkpoint_path": run_dir,
                  "objective": "tests.train_standin:factory", "checkpoint_interval": 2, "stdout_interval": 1,
                  "summary_interval": 1, "validation_interval": 1000, "training_steps": 6, **train}
    with open(path, "w") as f:
        json.dump(h, f)
    return str(path)


def cli_env(cache_dir: str | None = None, **extra) -> dict:
    """Environment of a `python -m jaxvoc.cli` subprocess: this tree first on the path; optionally a
    persistent compilation cache shared by the runs of one test (same programs, compiled once)."""
    from conftest import REPO

    env = dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore", JAX_PLATFORMS="cpu", **extra)
    if cache_dir:
        env.update(JAX_COMPILATION_CACHE_DIR=str(cache_dir), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
                   JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0")
    return env


# ------------------------------------------------------------------------------------------------------------
# the codec at test size (tests/test_codec_train_run.py): the committed tiny config, shrunk further by --set


CODEC_TINY = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "experiments", "training",
                          "configs", "codec_tiny_smoke.yaml")
CODEC_BATCH = 4  # with 8 training files: 2 batches per epoch, so a step with and one without a discriminator update


def codec_settings(wavlm: str, **train) -> list[str]:
    """``--set`` overrides of the tiny codec config for tests: two of the LFR discriminator kinds at small size
    (from conversion.codec.small_discriminator: its finest STFT resolution, and the SLM head on a stand-in WavLM
    of 2 hidden states of width 32; two, so that the Discriminator's list and its names by index are there),
    batch 4 of 2048-sample crops (8 frames), ``train.wavlm`` the converted stand-in WavLM, 4 steps; ``train``:
    further train settings (JSON values). These tests are about the run (resume, export, --init), not the
    numbers: the period discriminator and every discriminator and loss against NeMo are in
    tests/test_codec_gan.py and tests/test_codec_train_step.py (the whole step, small_discriminator), and the
    .nemo round trip with all three kinds in tests/test_export.py; leaving the period discriminator and one STFT
    resolution out here makes the step these runs compile smaller."""
    import json

    from conversion import codec as cc

    stft, _mpd, slm = cc.small_discriminator()["discriminators"]
    discs = [{**stft, "resolutions": stft["resolutions"][:1]}, slm]
    t = {"wavlm": wavlm, "training_steps": 4, "checkpoint_interval": 2, "stdout_interval": 1, "summary_interval": 1,
         "validation_interval": 2, "num_validation_files": 0, "validation_max_seconds": 0.5, **train}
    return ([f"model.discriminator.discriminators={json.dumps(discs)}", f"batch_size={CODEC_BATCH}",
             "train_n_samples=2048"] + [f"train.{k}={json.dumps(v)}" for k, v in t.items()])


def set_args(settings: list[str]) -> list[str]:
    return [a for s in settings for a in ("--set", s)]


def write_manifest(path, files, sr: int) -> str:
    """A NeMo JSON-lines manifest (``audio_filepath`` relative to the manifest's folder, ``duration``)."""
    import json

    import soundfile as sf

    with open(path, "w") as f:
        for p in files:
            rel = os.path.relpath(p, os.path.dirname(os.path.abspath(path)))
            f.write(json.dumps({"audio_filepath": rel, "duration": sf.info(p).frames / sr}) + "\n")
    return str(path)


# ------------------------------------------------------------------------------------------------------------
# the sharded step against one device (tests/test_train_sharding.py; the codec's: tests/test_codec_train_run.py)


def _rel(a, b) -> float:
    import numpy as np

    a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(a)])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(b)])
    return float(np.linalg.norm(a - b) / np.linalg.norm(b))


def layouts_vs_single(task, segment_size: int, batches, params_of, layouts, seed: int) -> dict:
    """The jitted step of ``task`` (``loop.build``) over ``batches`` from one initial state, made once on one
    device, then on each ``layouts`` entry ``(name, fsdp size)``: a mesh over all devices with every leaf
    that can be split sharded over fsdp. Per layout, relative to one device: the worst loss (``loss_rel``, at
    ``worst``), the parameters ``params_of(state)`` after the steps (``params_rel``, relative norm over all of
    them; ``group_rel``, each entry of a dict; ``leaf_rel``, the worst leaf, at ``worst_leaf``), their updates
    (``update_rel``), the initial state (``init_rel``); ``sharded_leaves``; ``frozen_same``: the frozen
    weights (``objective.FROZEN``) bitwise unchanged by the steps, None without them."""
    import numpy as np

    from jaxvoc.train import loop, sharding
    from jaxvoc.train.objective import FROZEN

    def run(mesh, fsdp_min, first):
        s = loop.build(task, mesh, segment_size, seed, fsdp_min)
        if first is None:  # initialise once (one device), then place the same values on each layout
            first = jax.device_get(s.init())
        state, losses = jax.device_put(first, s.state_shardings), []
        init = jax.device_get(params_of(state))
        n_sharded = sum(1 for x in jax.tree_util.tree_leaves(state) if "fsdp" in str(x.sharding.spec))
        for b in batches:
            state, m = s.step(state, sharding.global_batch(b, s.batch_sharding))
            losses.append({k: float(v) for k, v in jax.device_get(m).items()})
        frozen = None
        if FROZEN in first:
            frozen = all(np.array_equal(x, y) for x, y in zip(jax.tree_util.tree_leaves(jax.device_get(state[FROZEN])),
                                                              jax.tree_util.tree_leaves(first[FROZEN])))
        return losses, init, jax.device_get(params_of(state)), n_sharded, first, frozen

    ref_l, ref_init, ref_p, _, first, ref_frozen = run(sharding.make_mesh(1, jax.devices()[:1]), 2 ** 16, None)
    out = {}
    for name, fsdp in layouts:
        l, init, p, n_sharded, _, frozen = run(sharding.make_mesh(fsdp), 0, first)
        keys = [k for k in ref_l[0] if k not in ("finite", "lr")]
        errs = {f"step{i}/{k}": abs(a[k] - b[k]) / max(abs(b[k]), 1e-30)
                for i, (a, b) in enumerate(zip(l, ref_l)) for k in keys}
        worst = max(errs, key=errs.get)
        upd = jax.tree_util.tree_map(lambda x, x0: x - x0, p, init)
        ref_upd = jax.tree_util.tree_map(lambda x, x0: x - x0, ref_p, ref_init)
        leaves = {jax.tree_util.keystr(k): _rel(x, y) for (k, x), (_, y) in
                  zip(jax.tree_util.tree_flatten_with_path(p)[0], jax.tree_util.tree_flatten_with_path(ref_p)[0])}
        worst_leaf = max(leaves, key=leaves.get)
        groups = {k: _rel(p[k], ref_p[k]) for k in p} if isinstance(p, dict) else {}
        out[name] = {"loss_rel": errs[worst], "params_rel": _rel(p, ref_p), "update_rel": _rel(upd, ref_upd),
                     "group_rel": groups,
                     "leaf_rel": leaves[worst_leaf], "worst_leaf": worst_leaf, "init_rel": _rel(init, ref_init),
                     "sharded_leaves": n_sharded, "worst": worst, "finite": all(x["finite"] for x in l),
                     "loss_keys": keys, "losses": l, "frozen_same": None if frozen is None else frozen and ref_frozen}
    return out


def _one_minus_cos(a, b) -> float:
    import numpy as np

    a = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(a)])
    b = np.concatenate([np.ravel(x).astype(np.float64) for x in jax.tree_util.tree_leaves(b)])
    return float(1.0 - a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


def with_recorded_gradients(task_cls):
    """A subclass of the GAN task ``task_cls`` whose two optimizers keep the gradients they receive in their
    states, ``(grads, state)`` (``experiments.equivalence.codec_train_step.recording``)."""
    from experiments.equivalence.codec_train_step import recording

    class Recorded(task_cls):
        def optimizers(self):
            tx_g, tx_d, schedule = super().optimizers()
            return recording(tx_g), recording(tx_d), schedule

        def init_state(self, rng, audio):
            st = super().init_state(rng, audio)
            zeros = lambda t: jax.tree_util.tree_map(jnp.zeros_like, t)  # noqa: E731
            return {**st, "opt_g": (zeros(st["params_g"]), st["opt_g"]), "opt_d": (zeros(st["params_d"]), st["opt_d"])}

    return Recorded


def state_from_checkpoint(task, setup, seed: int, ckpt_dir: str) -> dict:
    """``task``'s first train state (no frozen part) with the weights of the converted checkpoint ``ckpt_dir``
    (``task.apply_init``, as ``--init``) and its optimizers' ``init`` of them, made without compiling
    ``task.init_state`` (for the codec a forward pass of every model and the random initialisers: minutes on a
    CPU). ``setup``: ``loop.build``'s, whose ``abstract_state`` the result matches leaf by leaf."""
    import numpy as np

    from jaxvoc.train.objective import FROZEN

    abstract = {k: v for k, v in setup.abstract_state.items() if k != FROZEN}
    dev = jax.devices()[0]
    state, _ = task.apply_init(jax.tree_util.tree_map(lambda s: jax.device_put(np.zeros(s.shape, s.dtype), dev),
                                                      abstract), ckpt_dir)
    tx_g, tx_d, _ = task.optimizers()
    opt_g, opt_d = jax.jit(lambda g, d: (tx_g.init(g), tx_d.init(d)))(state["params_g"], state["params_d"])
    state = {**state, "opt_g": opt_g, "opt_d": opt_d, "rng": jax.random.split(jax.random.PRNGKey(seed))[1]}
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(abstract)
    assert all(x.shape == a.shape and x.dtype == a.dtype for x, a in zip(jax.tree_util.tree_leaves(state),
                                                                       jax.tree_util.tree_leaves(abstract)))
    return state


def gan_steps_from_same_state(task, segment_size: int, batches, layouts, seed: int, corruptions=(),
                              init_from: str | None = None) -> dict:
    """Each step of ``task``'s one-device run taken again on each ``layouts`` entry ``(name, fsdp size)`` from
    the *same* state (the one-device state before that step), so that no step inherits the previous step's
    rounding differences (amplified by Adam's first updates, about lr * sign(g)). ``task.optimizers()`` must
    keep the gradients they receive (:func:`with_recorded_gradients`). Per layout and step, relative to one device: ``loss_rel`` (worst metric, at
    ``worst``); per parameter tree ``g``/``d`` the gradients the optimizers received (``grad_rel``: ||a - b|| /
    ||b||, ``grad_cos``: 1 - cos), and ``opt_rel``: the layout's parameter update against the one-device
    optimizer's update *of the layout's own gradients* (what the sharded optimizer did with what it was given);
    ``d_unchanged`` where the discriminator was not updated (its parameters and optimizer state bitwise kept).
    ``corruptions``: ``(name, fn(batch) -> batch)`` applied to the layouts' batches only (an injected sharding
    fault, to show the checks catch it); reported under ``name`` per layout. ``init_from``: a converted
    checkpoint to start from (:func:`state_from_checkpoint`) instead of the task's compiled init. ``seconds``: wall time of the
    one-device build and init (``one_init``), its steps (``one_steps``, the compile included), and per layout
    its steps (``steps``) and the faults' (``faults``)."""
    import time

    import numpy as np

    from jaxvoc.train import loop, sharding

    tx_g, tx_d, _ = task.optimizers()

    def one_device_update(tx, grads, opt, params, step):
        upd, _ = tx.update(grads, opt, params, step=step)
        return jax.tree_util.tree_map(jnp.add, params, upd)

    upd_g = jax.jit(lambda g, o, p, s: one_device_update(tx_g, g, o, p, s))  # host arrays: the first device
    upd_d = jax.jit(lambda g, o, p, s: one_device_update(tx_d, g, o, p, s))

    t0 = time.perf_counter()
    one = loop.build(task, sharding.make_mesh(1, jax.devices()[:1]), segment_size, seed)
    if init_from is None:
        state = jax.device_get(one.init())
    else:
        state = jax.device_get(one.with_frozen(state_from_checkpoint(task, one, seed, init_from)))
    t1 = time.perf_counter()
    ref = []
    for b in batches:
        new, m = one.step(jax.device_put(state, one.state_shardings), sharding.global_batch(b, one.batch_sharding))
        ref.append((state, b, jax.device_get(new), {k: float(v) for k, v in jax.device_get(m).items()}))
        state = ref[-1][2]
    seconds = {"one_init": t1 - t0, "one_steps": time.perf_counter() - t1}

    def compare(s, i, batch):
        before, _, after, m_ref = ref[i]
        new, m = s.step(jax.device_put(before, s.state_shardings), sharding.global_batch(batch, s.batch_sharding))
        new = jax.device_get(new)
        m = {k: float(v) for k, v in jax.device_get(m).items()}
        keys = [k for k in m_ref if k not in ("finite", "lr")]
        errs = {k: abs(m[k] - m_ref[k]) / max(abs(m_ref[k]), 1e-30) for k in keys}
        worst = max(errs, key=errs.get)
        row = {"loss_rel": errs[worst], "worst": worst, "finite": bool(m["finite"]),
               "disc_updated": m.get("disc_updated", 1.0), "loss_keys": keys, "losses": m}
        trees = [("g", "params_g", "opt_g", upd_g)]
        if m_ref.get("disc_updated", 1.0):
            trees.append(("d", "params_d", "opt_d", upd_d))
        else:
            row["d_unchanged"] = all(np.array_equal(x, y) for x, y in zip(
                jax.tree_util.tree_leaves((new["params_d"], new["opt_d"])),
                jax.tree_util.tree_leaves((before["params_d"], before["opt_d"]))))
        for t, p, o, upd in trees:
            g, g_ref = new[o][0], after[o][0]
            expected = jax.device_get(upd(g, before[o], before[p], before["step"]))
            delta = jax.tree_util.tree_map(lambda x, x0: x - x0, new[p], before[p])
            delta_exp = jax.tree_util.tree_map(lambda x, x0: x - x0, expected, before[p])
            row[t] = {"grad_rel": _rel(g, g_ref), "grad_cos": _one_minus_cos(g, g_ref),
                      "opt_rel": _rel(delta, delta_exp), "params_rel": _rel(new[p], after[p])}
        return row

    out = {}
    for name, fsdp in layouts:
        t0 = time.perf_counter()
        s = loop.build(task, sharding.make_mesh(fsdp), segment_size, seed, 0)
        rows = {"sharded_leaves": sum("fsdp" in str(sh.spec) for sh in jax.tree_util.tree_leaves(s.state_shardings)),
                "steps": [compare(s, i, ref[i][1]) for i in range(len(ref))]}
        t1 = time.perf_counter()
        for cname, fn in corruptions:
            rows[cname] = compare(s, 0, fn(ref[0][1]))
        rows["seconds"] = {**seconds, "steps": t1 - t0, "faults": time.perf_counter() - t1}
        out[name] = rows
    return out


def codec_batches(n_batches: int = 2, n_items: int = 4, n: int = 2048) -> list[dict]:
    """Batches of the speech fixture for the codec's step, ``n`` samples (the config's segment_size), mixed
    lengths (the losses' masks, not whole frames): items of n, 375/512 n, n and 625/1024 n samples (2048: 2048,
    1500, 2048, 1250; 4096: 4096, 3000, 4096, 2500), zero past their lengths."""
    import numpy as np

    from conftest import speech

    y = speech(22050)
    lens = np.resize(np.array([n, n * 375 // 512, n, n * 625 // 1024], np.int32), n_items)
    out = []
    for i in range(n_batches):
        a = np.stack([y[(i * n_items + j) * 5000:(i * n_items + j) * 5000 + n] for j in range(n_items)])
        a = a.astype(np.float32)
        a[np.arange(n)[None] >= lens[:, None]] = 0
        out.append({"audio": a, "audio_len": lens.copy()})
    return out
