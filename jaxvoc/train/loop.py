"""The training loop: data -> sharded jit step -> logging, validation, checkpoints; resume and ``--init``.

* Progress bar (tqdm, stderr) with the main losses and steps/s; when stderr is not a terminal, a line on
  stdout every ``stdout_interval`` steps instead.
* TensorBoard (``<run>/logs``, tensorboardX): every ``summary_interval`` steps the scalars ``training/*``
  (every loss term, gradient norms, learning rate, steps/s); every ``validation_interval`` steps
  ``validation/mel_spec_error`` (mean L1 between the log-mels, with the loss settings, of the held-out clips
  and of the model's synthesis from their mels), mel images and audio of the first clips. The same numbers go
  to ``<run>/metrics.jsonl`` and ``<run>/validation.jsonl``.
* Checkpoints every ``checkpoint_interval`` steps and at the end (``checkpointing.py``).
* ``<run>/provenance.json`` and the TensorBoard text ``provenance``: versions, git commit, resolved config
  (``provenance.py``).
* A NaN/Inf in any loss or gradient norm stops the run with one message; no checkpoint is written after
  the last finite step (losses are checked one step behind the device, and always before a save).
* Several processes (one job, ``jax.distributed``): one mesh over all their devices, each process feeds its
  rows of the global batch; process 0 holds the run-folder lock, writes the logs, runs the validation (on
  parameters gathered to its host) and writes the export; a watchdog ends every process with one line when
  a peer dies (``sharding.Watchdog``).
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import sys
import time
from typing import Any, Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.train import checkpointing, data, provenance, sharding
from jaxvoc.train.config import TrainConfig


class Diverged(UserError):
    """A loss became NaN or Inf."""


def _paths(cfg: TrainConfig) -> tuple[list[str], list[str]]:
    t = cfg.train
    if t.input_training_file:
        if cfg.kind == "bigvgan" and t.input_wavs_dir:
            train = data.read_bigvgan_filelist(t.input_training_file, t.input_wavs_dir)
            val = (data.read_bigvgan_filelist(t.input_validation_file, t.input_wavs_dir)
                   if t.input_validation_file else [])
        else:
            train = data.read_plain_filelist(t.input_training_file)
            val = data.read_plain_filelist(t.input_validation_file) if t.input_validation_file else []
        if not val and t.num_validation_files:
            train, val = data.split_validation(train, t.num_validation_files, cfg.seed)
        return train, val
    if t.input_wavs_dir:
        return data.split_validation(data.scan_directory(t.input_wavs_dir), t.num_validation_files, cfg.seed)
    raise UserError(f"{cfg.path}: no training data; set train.input_wavs_dir (a folder of audio) or "
                    "train.input_training_file (a file list)")


def _mel_image(mel: np.ndarray, lo: float = -11.5, hi: float = 2.0) -> np.ndarray:
    """[frames, n_mels] log-mel -> [n_mels, frames, 3] uint8 (low frequencies at the bottom)."""
    import matplotlib

    x = np.clip((np.asarray(mel).T[::-1] - lo) / (hi - lo), 0, 1)
    return (matplotlib.colormaps["viridis"](x)[..., :3] * 255).astype(np.uint8)


class _Logger:
    def __init__(self, run_dir: str, enabled: bool):
        self.enabled = enabled
        self.writer = None
        self.run_dir = run_dir
        if not enabled:
            return
        os.makedirs(run_dir, exist_ok=True)
        try:
            from tensorboardX import SummaryWriter
        except ImportError:  # a dependency of jaxvoc (pyproject.toml); say so when an install lacks it
            from jaxvoc.errors import warn

            warn(f"tensorboardX is not installed: no TensorBoard logs in {os.path.join(run_dir, 'logs')} "
                 "(metrics.jsonl is still written); install it with `pip install tensorboardX`")
            return
        self.writer = SummaryWriter(os.path.join(run_dir, "logs"))

    def text(self, step: int, tag: str, text: str) -> None:
        if self.writer is not None:
            self.writer.add_text(tag, text, step)

    def scalars(self, step: int, values: dict, prefix: str, jsonl: str) -> None:
        if not self.enabled:
            return
        if self.writer is not None:
            for k, v in values.items():
                self.writer.add_scalar(f"{prefix}/{k}", v, step)
        with open(os.path.join(self.run_dir, jsonl), "a") as f:
            f.write(json.dumps({"step": step, **{k: float(v) for k, v in values.items()}}) + "\n")

    def media(self, step: int, tag: str, audio: np.ndarray | None, mel: np.ndarray | None, sr: int) -> None:
        if self.writer is None:
            return
        if audio is not None:
            self.writer.add_audio(f"{tag}/audio", np.clip(audio, -1, 1).reshape(-1), step, sample_rate=sr)
        if mel is not None:
            self.writer.add_image(f"{tag}/mel", _mel_image(mel), step, dataformats="HWC")

    def close(self):
        if self.writer is not None:
            self.writer.close()


class Validator:
    """Synthesises the held-out clips from their mels (lengths padded into a few buckets, so that a few
    programs compile) and measures the mean L1 between log-mels (loss settings)."""

    def __init__(self, task, clips: list[np.ndarray]):
        from jaxvoc.io.batching import bucket_length

        self.task = task
        self.clips = clips
        self.silence = math.log(task.mel_config.clip_val)
        from jaxvoc.dsp.stft import mel_spectrogram

        mel_fn = jax.jit(lambda a: mel_spectrogram(a, task.mel_config))
        loss_fn = jax.jit(lambda a: mel_spectrogram(a, task.loss_mel_config))
        self.mels = [np.asarray(mel_fn(c[None]))[0] for c in clips]
        self.ref = [np.asarray(loss_fn(c[None]))[0] for c in clips]
        self.bucket = bucket_length
        self._synth = jax.jit(lambda state, mel: task.synthesize(state, mel))
        self._loss_mel = loss_fn

    def __call__(self, state) -> tuple[float, list]:
        errs, samples = [], []
        for clip, mel, ref in zip(self.clips, self.mels, self.ref):
            L = self.bucket(len(mel))
            padded = np.full((1, L, mel.shape[1]), self.silence, np.float32)
            padded[0, :len(mel)] = mel
            y = np.asarray(self._synth(state, jnp.asarray(padded)))[0, :len(clip)]
            m = np.asarray(self._loss_mel(y[None].astype(np.float32)))[0]
            t = min(len(m), len(ref))
            errs.append(float(np.mean(np.abs(m[:t] - ref[:t]))))
            samples.append((y, m))
        return float(np.mean(errs)), samples


def _fmt(m: dict, keys) -> str:
    return ", ".join(f"{k} {m[k]:.4g}" for k in keys if k in m)


@dataclasses.dataclass
class Setup:
    abstract_state: Any
    state_shardings: Any
    batch_sharding: Any
    init: Callable[[], dict]  # -> a fresh, sharded train state
    step: Callable  # jit(step)(state, global audio batch) -> (state, metrics); donates the state
    # state (restored from a checkpoint, which leaves them out) -> state with the task's frozen weights added
    with_frozen: Callable[[dict], dict] = lambda state: state


def build(task, mesh, segment_size: int, seed: int, fsdp_min_size: int = 2 ** 16) -> Setup:
    """The sharded init and step of ``task`` on ``mesh``: explicit in/out shardings, state donated. A task's
    frozen weights (``task.frozen_params()``, the codec's WavLM) join the state under ``objective.FROZEN``,
    placed on the devices as they are (not through the compiled init)."""
    from jaxvoc.train.objective import FROZEN

    rng = jax.random.PRNGKey(seed)
    example = jnp.zeros((1, segment_size), jnp.float32)
    abstract = jax.eval_shape(task.init_state, rng, example)
    frozen = task.frozen_params()
    if frozen is not None:
        abstract = {**abstract, FROZEN: jax.eval_shape(lambda: frozen)}
    state_sh = sharding.state_shardings(abstract, mesh, fsdp_min_size)
    batch_sh = sharding.batch_sharding(mesh)
    init_jit = jax.jit(task.init_state, out_shardings={k: v for k, v in state_sh.items() if k != FROZEN})
    step = jax.jit(task.step_fn(sharding.gather_params(mesh)), in_shardings=(state_sh, batch_sh),
                   out_shardings=(state_sh, sharding.replicated(mesh)), donate_argnums=0)

    def with_frozen(state: dict) -> dict:
        if frozen is None:
            return state
        return {**state, FROZEN: sharding.place(frozen, state_sh[FROZEN])}

    return Setup(abstract, state_sh, batch_sh, lambda: with_frozen(init_jit(rng, example)), step, with_frozen)


def train(cfg: TrainConfig, *, resume: bool = False, init: str | None = None, task=None,
          max_steps: int | None = None, progress: bool | None = None) -> dict:
    """Runs (or resumes) training; returns a summary dict (steps done, last metrics, last validation)."""
    from jaxvoc.train.tasks import check_start

    t = cfg.train
    total = int(max_steps or t.training_steps)
    ckpt_dir = os.path.join(cfg.run_dir, "checkpoints")
    check_start(init, resume, cfg.kind)
    held: list = []  # the run-folder lock and the watchdog, once taken (after the input is checked)
    try:
        out = _train(cfg, resume, init, task, total, ckpt_dir, progress, held)
        for h in reversed(held):
            h.release() if hasattr(h, "release") else h.stop()
        held.clear()
        sharding.shutdown_distributed()
        return out
    except Exception as e:
        if not isinstance(e, UserError):  # a peer's death seen as a failing collective: the watchdog's line
            for h in held:
                if isinstance(h, sharding.Watchdog):
                    h.grace()
        elif jax.process_count() > 1:  # the same error on every process (a config, the lock): end in order
            for h in reversed(held):
                h.release() if hasattr(h, "release") else h.stop()
            held.clear()
            sharding.shutdown_distributed(barrier_s=10.0)
        raise
    finally:
        for h in reversed(held):
            h.release() if hasattr(h, "release") else h.stop()


def _lock_run_folder(run_dir: str, take: bool = True):
    """Process 0 takes the run-folder lock (``take``), or only checks that no live job holds it; with several
    processes the others learn the outcome from the coordinator (and stop with the same one-line error when
    it was refused)."""
    n, primary = jax.process_count(), jax.process_index() == 0
    lock, err = None, ""
    if primary:
        try:
            if take:
                lock = checkpointing.RunLock(run_dir).acquire()
            else:
                checkpointing.RunLock(run_dir).check_free()
        except UserError as e:
            err = str(e) or "refused"
    if n > 1:
        client = sharding.distributed_client()
        key = "jaxvoc/lock" if take else "jaxvoc/lock_check"
        if primary:
            client.key_value_set(key, "ERR " + err if err else "OK")
        else:
            got = client.blocking_key_value_get(key, 1000 * sharding.INIT_TIMEOUT_S)
            err = got[4:] if got.startswith("ERR ") else ""
    if err:
        raise UserError(err)
    return lock


def _train(cfg: TrainConfig, resume: bool, init: str | None, task, total: int, ckpt_dir: str,
           progress: bool | None, held: list) -> dict:
    from tqdm import tqdm

    from jaxvoc.train.tasks import build_task

    t = cfg.train
    watchdog = sharding.Watchdog(cfg.run_dir)  # several processes: a peer that ends (error or death) ends us
    held.append(watchdog)
    _lock_run_folder(cfg.run_dir, take=False)  # in use by another job? (read-only; the lock is taken below)
    latest = checkpointing.latest_step(ckpt_dir)
    if resume and latest is None:
        raise UserError(f"nothing to resume: no checkpoint in {ckpt_dir}; run without --resume")
    if not resume and latest is not None:
        raise UserError(f"{cfg.run_dir} already holds checkpoints (last: step {latest}); pass --resume to "
                        "continue that run, or set train.checkpoint_path to a new folder")
    task = task or build_task(cfg)
    mesh = sharding.make_mesh(t.fsdp)
    sharding.check_batch_size(cfg.batch_size, mesh)
    primary = jax.process_index() == 0

    # data
    if cfg.kind == "codec":  # NeMo's manifests / dataset_meta, or a folder; whole validation clips
        train_files, clips = data.codec_run_data(cfg.codec, t, cfg.seed)
    else:
        train_paths, val_paths = _paths(cfg)
        train_files = data.probe(train_paths, cfg.sampling_rate, task.style)
        val_files = data.probe(val_paths[: t.validation_max_files], cfg.sampling_rate, task.style, allow_empty=True)
        max_val = int(t.validation_max_seconds * cfg.sampling_rate) if t.validation_max_seconds else None
        clips = [data.load_validation_clip(f, cfg.sampling_rate, task.hop_size, task.style, max_val)
                 for f in val_files]
        clips = [c for c in clips if len(c) >= 4 * task.hop_size]
    ds = data.train_dataset(train_files, segment_size=cfg.segment_size, sampling_rate=cfg.sampling_rate,
                            batch_size=cfg.batch_size, seed=cfg.seed, style=task.style,
                            process_index=jax.process_index(), process_count=jax.process_count(),
                            num_threads=t.data_threads,
                            volume_norm=bool(cfg.codec and cfg.codec.train_ds.dataset.volume_norm))
    iterator = iter(ds)
    multi = jax.process_count() > 1
    lock = _lock_run_folder(cfg.run_dir)  # nothing is written to the run folder before this
    if lock is not None:
        held.append(lock)
        watchdog.on_exit = lock.release
    make_validator = getattr(task, "validator", lambda clips: Validator(task, clips))  # the codec: NeMo's losses
    validator = make_validator(clips) if clips and primary else None
    validating = bool(clips)  # the same on every process
    resolved = checkpointing.resolved_config(cfg)

    # state and step, sharded
    sharding.warm_collectives()
    setup = build(task, mesh, cfg.segment_size, cfg.seed, t.fsdp_min_size)
    batch_sh, state_sh = setup.batch_sharding, setup.state_shardings
    if resume:
        ckpt = checkpointing.Checkpointer(ckpt_dir, keep=t.keep_checkpoints, async_save=t.async_checkpointing)
        try:
            state, iterator, latest = ckpt.restore_latest_good(
                checkpointing.abstract_with_shardings(checkpointing.saved_part(setup.abstract_state),
                                                      checkpointing.saved_part(state_sh)),
                lambda: iter(ds), resolved)
        except BaseException:
            ckpt.close()
            raise
        state = setup.with_frozen(state)
        started = f"resumed from step {latest}"
    else:
        state = setup.init()
        started = "started"
        if init:
            state, what = task.apply_init(state, init)
            started = f"initialised {what} from {init}"
        ckpt = checkpointing.Checkpointer(ckpt_dir, keep=t.keep_checkpoints, async_save=t.async_checkpointing)
    step = int(jax.device_get(state["step"]))
    step_fn = setup.step

    logger = _Logger(cfg.run_dir, primary)
    if primary:
        record = provenance.collect(cfg)
        provenance.write(cfg.run_dir, record)
        logger.text(step, "provenance", provenance.markdown(record))
    meta = {"kind": cfg.kind, "config": cfg.raw, "config_path": cfg.path, "resolved": resolved,
            "processes": jax.process_count()}
    if progress is None:
        progress = sys.stderr.isatty()
    bar = tqdm(total=total, initial=step, desc=f"train {cfg.name}", unit="step", disable=not (progress and primary),
               dynamic_ncols=True, file=sys.stderr)
    if primary:
        n_dev = mesh.devices.size
        print(f"jaxvoc train: {started}; {len(train_files)} training / {len(clips)} validation file(s); "
              f"{n_dev} device(s) as data {mesh.shape['data']} x fsdp {mesh.shape['fsdp']}; run folder "
              f"{cfg.run_dir}", flush=True)

    last_saved = latest
    pending: tuple[int, Any] | None = None
    last_metrics: dict = {}
    last_val: float | None = None
    t_window, s_window = time.perf_counter(), step
    rate = float("nan")

    def check(s: int, metrics: Any) -> dict:
        m = {k: float(v) for k, v in jax.device_get(metrics).items()}
        if not m.pop("finite", 1.0):
            bad = sorted(k for k, v in m.items() if not math.isfinite(v))
            ckpt.wait()
            where = (f"the last good checkpoint is step {last_saved} in {ckpt.directory}; resume it with --resume"
                     if last_saved is not None else "no checkpoint was written")
            raise Diverged(f"loss became NaN/Inf at step {s} ({', '.join(bad[:4])}); training stopped and {where} "
                           "after lowering the learning rate or checking the data")
        return m

    def report(s: int, m: dict) -> None:
        nonlocal last_metrics, t_window, s_window, rate
        last_metrics = m
        if s % t.summary_interval == 0 or s == total:
            now = time.perf_counter()
            rate = (s - s_window) / max(now - t_window, 1e-9)
            t_window, s_window = now, s
            logger.scalars(s, {**m, "steps_per_sec": rate}, "training", "metrics.jsonl")
        if s % t.stdout_interval == 0 or s == total:
            bar.set_postfix_str(_fmt(m, task.metric_keys), refresh=False)
            if bar.disable and primary:
                print(f"step {s}: {_fmt(m, task.metric_keys)}", flush=True)

    def validate(s: int) -> float | None:
        if multi:  # every process takes part in the gather; process 0 synthesises on its own device
            host = sharding.to_host(state)
            if validator is None:
                return None
            err, samples = validator(host)
        else:
            err, samples = validator(state)
        values = err if isinstance(err, dict) else {"mel_spec_error": err}
        err = next(iter(values.values()))  # the first is the main one (the codec's val_loss)
        logger.scalars(s, values, "validation", "validation.jsonl")
        for j, (y, m) in enumerate(samples[: t.num_audio_samples]):
            logger.media(s, f"generated/{j}", y, m, cfg.sampling_rate)
            if s == first_step:
                logger.media(s, f"ground_truth/{j}", validator.clips[j], validator.ref[j], cfg.sampling_rate)
        if bar.disable and primary:
            text = f"mel L1 {err:.4f}" if "mel_spec_error" in values else _fmt(values, list(values)[:2])
            print(f"step {s}: validation {text}", flush=True)
        return err

    first_step = step
    try:
        if validating and not resume:  # the starting point of the validation curve
            last_val = validate(step)
        while step < total:
            audio = next(iterator)
            batch = sharding.global_batch(audio, batch_sh)
            if multi and step_fn is setup.step:  # compile first, then start together (see sharding.barrier)
                step_fn = setup.step.lower(state, batch).compile()
                sharding.barrier("first step")
            state, metrics = step_fn(state, batch)
            step += 1
            bar.update(1)
            if pending is not None:  # the previous step, while this one runs
                report(pending[0], check(*pending))
            pending = (step, metrics)
            save_now = step % t.checkpoint_interval == 0 or step == total
            validate_now = validating and (step % t.validation_interval == 0 or step == total)
            if save_now or validate_now or step % t.summary_interval == 0:
                report(step, check(*pending))
                pending = None
            if validate_now:
                last_val = validate(step)
            if save_now:
                ckpt.save(step, state, iterator, {**meta, "step": step})
                last_saved = step
        if pending is not None:
            report(pending[0], check(*pending))
        ckpt.wait()
    finally:
        bar.close()
        logger.close()
        try:
            ckpt.close()
        except Exception:
            pass

    export_dir = None
    if t.export_at_end and step >= total:  # parameters gathered to the host; process 0 writes
        export_dir = os.path.join(cfg.run_dir, "export")
        host = sharding.to_host(state)
        if primary:
            task.export(host, export_dir)
    if primary:
        val = f", validation {task.validation_metric} {last_val:.4f}" if last_val is not None else ""
        print(f"jaxvoc train: {step} steps done{val}; checkpoints in {ckpt.directory}"
              + (f"; model exported to {export_dir}" if export_dir else ""), flush=True)
    return {"step": step, "metrics": last_metrics, "validation": last_val, "state": state, "export": export_dir}
