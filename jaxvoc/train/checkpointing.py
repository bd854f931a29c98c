"""Training checkpoints with Orbax's ``CheckpointManager``: one folder per saved step under
``<checkpoint_path>/checkpoints/``, holding

* ``state``: the whole train state pytree (step, rng, parameters, optimizer states), sharded arrays as they
  are (each process writes its shards; restore puts them back with the shardings asked for);
* ``data``: the grain iterator state of every process (``process_<i>-of-<n>.json``);
* ``meta``: JSON (step, model kind, the config file as read, and ``resolved``: the resolved training config,
  :func:`resolved_config`).

Resume (:meth:`Checkpointer.restore_latest_good`) takes the newest checkpoint whose config matches the
training config (a mismatch is refused, naming the differing keys) and that restores; a damaged newest
checkpoint (files missing, truncated, corrupt) is skipped with one warning line naming it, down to the oldest
one kept; when none restores the run stops with one line (never silently from scratch).

A run folder is held by one job at a time: :class:`RunLock` (``<run>/.jaxvoc.lock``, the holder's pid, host
and start time, refreshed every ``LOCK_REFRESH_S``). A lock is stale when its pid is not running on this host,
or, from another host, when it was not refreshed for ``LOCK_STALE_S``; a stale lock is taken over with a
warning.

Saves run in the background (async): the arrays are copied off the device before ``save`` returns, so the
train step may go on (and donate its buffers) at once. A step folder appears under its final name only once
complete, so a process killed during a save leaves the previous checkpoints usable. The last ``keep``
checkpoints are kept.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import socket
import threading
import time
from typing import Any

import jax

from jaxvoc.errors import UserError, warn
from jaxvoc.io.atomic import remove_tree
from jaxvoc.io.checkpoint import quiet_failed_io_reports

LOCK_NAME = ".jaxvoc.lock"
LOCK_REFRESH_S = 10.0
LOCK_STALE_S = 120.0

# train settings that may change between a checkpoint and its resume (schedule of logs and saves, paths of
# the same data, memory layout); any other difference in the resolved config is refused
RESUMABLE_CHANGES = {
    "train.training_steps", "train.stdout_interval", "train.summary_interval", "train.checkpoint_interval",
    "train.validation_interval", "train.keep_checkpoints", "train.async_checkpointing", "train.data_threads",
    "train.validation_max_files", "train.validation_max_seconds", "train.num_audio_samples",
    "train.export_at_end", "train.checkpoint_path", "train.input_wavs_dir", "train.input_training_file",
    "train.input_validation_file", "train.fsdp", "train.fsdp_min_size",
}


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self._ocp = ocp
        quiet_failed_io_reports()  # before any save or restore: a failing one reports while it fails
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict) -> bool:
        import grain

        ocp = self._ocp
        args = {"state": ocp.args.StandardSave(saved_part(state)), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        with self._unfinished_discarded():  # (this save, or the previous one still running, may fail here)
            return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

    @contextlib.contextmanager
    def _unfinished_discarded(self):
        """On a failed save (a full disk, a file size limit), the step's unfinished Orbax folders
        (``<step>.orbax-checkpoint-tmp``) are removed before the error goes on (process 0; the others wait for
        nothing: the error ends the run), so that a failed run leaves only whole checkpoints."""
        try:
            yield
        except BaseException:
            if jax.process_index() == 0:
                for name in os.listdir(self.directory) if os.path.isdir(self.directory) else ():
                    if name.endswith(".orbax-checkpoint-tmp"):
                        remove_tree(os.path.join(self.directory, name))
            raise

    def read_meta(self, step: int) -> dict:
        ocp = self._ocp
        out = self.manager.restore(step, args=ocp.args.Composite(meta=ocp.args.JsonRestore()))
        return dict(out["meta"] or {})

    def restore_latest_good(self, abstract_state: Any, data_iterator_factory, resolved: dict
                            ) -> tuple[Any, Any, int]:
        """Restores the newest checkpoint that restores: ``(state, data_iterator, step)``. Each candidate's
        stored config must equal ``resolved`` but for :data:`RESUMABLE_CHANGES` (else UserError naming the
        keys); a damaged one (missing, truncated or corrupt files) is skipped with one warning line; with
        several processes they agree on every candidate (all restore it or all skip it)."""
        steps = sorted(self.all_steps(), reverse=True)
        skipped, bad = [], []
        for step in steps:
            iterator = data_iterator_factory()
            why = None
            try:
                meta = self.read_meta(step)
            except Exception as e:
                meta, why = None, _short(e)
            if meta is not None and "resolved" in meta:
                diff = config_diff(meta["resolved"], resolved)
                if diff:
                    raise UserError(f"checkpoint step {step} in {self.directory} was written with another config "
                                    f"({'; '.join(diff[:6])}{'; ...' if len(diff) > 6 else ''}); restore the "
                                    "config it was written with, or start a new run folder")
            state = None
            if why is None:
                try:
                    state, _ = self.restore(step, abstract_state, iterator, damaged_ok=True)
                except Exception as e:
                    why = _short(e)
            if not _all_agree(why is None):
                why = why or "another process could not restore it"
            if why is None:
                if skipped:
                    aside = self._move_aside(bad)
                    warn(f"skipped damaged checkpoint(s) {', '.join(skipped)} in {self.directory} (moved to "
                         f"{aside}); resuming from step {step}")
                return state, iterator, step
            skipped.append(f"step {step} ({why})")
            bad.append(step)
        raise UserError(f"no usable checkpoint in {self.directory}: {'; '.join(skipped)}; delete the damaged "
                        "step folders, or start a new run folder")

    def _move_aside(self, steps: list[int]) -> str:
        """Moves damaged step folders to ``<run>/damaged_checkpoints/`` (process 0; all wait), so that the
        run can write those steps again."""
        aside = os.path.join(os.path.dirname(self.directory), "damaged_checkpoints")
        if jax.process_index() == 0:
            os.makedirs(aside, exist_ok=True)
            stamp = time.strftime("%Y%m%d-%H%M%S")
            for step in steps:
                src = os.path.join(self.directory, str(step))
                if os.path.exists(src):
                    os.replace(src, os.path.join(aside, f"{step}-{stamp}"))
        _all_agree(True)  # a barrier: the folders are gone for every process
        self.manager.reload()
        return aside

    def restore(self, step: int, abstract_state: Any, data_iterator: Any, damaged_ok: bool = False
                ) -> tuple[Any, dict]:
        """Restores ``step`` into arrays shaped and sharded like ``abstract_state`` (a tree of
        ``jax.ShapeDtypeStruct`` with shardings); sets ``data_iterator`` to its saved position."""
        import grain

        ocp = self._ocp
        args = {"state": ocp.args.StandardRestore(abstract_state), "meta": ocp.args.JsonRestore()}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointRestore(data_iterator)
        try:
            out = self.manager.restore(step, args=ocp.args.Composite(**args))
        except (ValueError, KeyError, TypeError) as e:
            if damaged_ok:
                raise
            raise UserError(f"cannot restore checkpoint step {step} from {self.directory} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the config must match the "
                            "run that wrote it") from None
        return out["state"], dict(out["meta"] or {})

    def wait(self) -> None:
        with self._unfinished_discarded():
            self.manager.wait_until_finished()

    def close(self) -> None:
        self.wait()
        self.manager.close()


def latest_step(directory: str) -> int | None:
    """The last complete checkpoint step in ``directory`` (None when there is none); creates nothing."""
    if not os.path.isdir(directory):
        return None
    import orbax.checkpoint as ocp

    mngr = ocp.CheckpointManager(os.path.abspath(directory),
                                 options=ocp.CheckpointManagerOptions(create=False),
                                 item_names=("state", "data", "meta"))
    try:
        return mngr.latest_step()
    finally:
        mngr.close()


def is_run_folder(path: str) -> bool:
    """Whether ``path`` looks like a jaxvoc training run folder (a ``checkpoints/`` folder in it)."""
    return os.path.isdir(os.path.join(path, "checkpoints"))


def _short(e: BaseException) -> str:
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}: {msg[:120]}" if msg else type(e).__name__


def _all_agree(ok: bool) -> bool:
    """True when ``ok`` on every process (an all-gather; just ``ok`` for one process)."""
    if jax.process_count() == 1:
        return ok
    import numpy as np
    from jax.experimental import multihost_utils

    from jaxvoc.train.sharding import barrier

    barrier("agree")
    return bool(np.all(multihost_utils.process_allgather(np.asarray([ok], np.int32))))


def resolved_config(cfg) -> dict:
    """The training config as the run uses it: the model's official settings, every train setting (defaults
    filled in), batch and segment size, rate, seed, kind; stored with each checkpoint."""
    return json.loads(json.dumps({
        "kind": cfg.kind, "model": cfg.model, "train": dataclasses.asdict(cfg.train), "batch_size": cfg.batch_size,
        "segment_size": cfg.segment_size, "sampling_rate": cfg.sampling_rate, "seed": cfg.seed}, default=str))


def _flatten(d: Any, prefix: str = "") -> dict:
    if isinstance(d, dict):
        out = {}
        for k, v in d.items():
            out.update(_flatten(v, f"{prefix}{k}."))
        return out
    return {prefix[:-1]: d}


def config_diff(stored: dict, current: dict) -> list[str]:
    """``key: stored -> current`` for every differing key (dotted), :data:`RESUMABLE_CHANGES` excepted."""
    a, b = _flatten(stored), _flatten(current)
    keys = sorted(k for k in set(a) | set(b) if a.get(k, "<unset>") != b.get(k, "<unset>")
                  and k not in RESUMABLE_CHANGES)
    return [f"{k} {json.dumps(a.get(k, '<unset>'))} -> {json.dumps(b.get(k, '<unset>'))}" for k in keys]


def _pid_running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class RunLock:
    """``<run>/.jaxvoc.lock`` held by one ``jaxvoc train`` job (its process 0) while it runs."""

    def __init__(self, run_dir: str):
        self.path = os.path.join(run_dir, LOCK_NAME)
        self._stop = threading.Event()
        self._thread = None

    def check_free(self) -> None:
        """Raises the in-use error when a live holder has the lock (changes nothing)."""
        if os.path.exists(self.path):
            holder = self._read()
            if self._stale(holder) is None:
                self._refuse(holder)

    def _refuse(self, holder: dict | None) -> None:
        h = holder or {}
        raise UserError(f"run folder {os.path.dirname(self.path)} is in use by another jaxvoc train "
                        f"(pid {h.get('pid', '?')} on {h.get('host', '?')}, since "
                        f"{h.get('started', '?')}; lock file {self.path}); wait for it to end, use "
                        "another run folder, or delete the lock file if that process is gone")

    def acquire(self) -> "RunLock":
        os.makedirs(os.path.dirname(self.path), exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        for _ in range(3):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._read()
                stale = self._stale(holder)
                if stale is None:
                    self._refuse(holder)
                warn(f"took over the stale lock {self.path} ({stale})")
                try:
                    os.unlink(self.path)
                except FileNotFoundError:
                    pass
                continue
            with os.fdopen(fd, "w") as f:
                json.dump(me, f)
            self._thread = threading.Thread(target=self._refresh, name="jaxvoc-lock", daemon=True)
            self._thread.start()
            return self
        raise UserError(f"cannot take the lock {self.path} (another process keeps taking it); retry")

    def _read(self) -> dict | None:
        try:
            with open(self.path) as f:
                return json.load(f)
        except (OSError, ValueError):
            return None

    def _stale(self, holder: dict | None) -> str | None:
        """Why the lock is stale, or None when its holder may be alive."""
        try:
            age = time.time() - os.path.getmtime(self.path)
        except OSError:
            return "gone"
        if holder is None or not isinstance(holder.get("pid"), int):
            return "unreadable" if age > 5 else None  # a lock being written right now
        if holder.get("host") == socket.gethostname():
            if not _pid_running(holder["pid"]) or holder["pid"] == os.getpid():
                return f"pid {holder['pid']} on {holder['host']} is not running"
            return None
        if age > LOCK_STALE_S:
            return f"pid {holder['pid']} on {holder.get('host')} has not refreshed it for {age:.0f} s"
        return None

    def _refresh(self) -> None:
        while not self._stop.wait(LOCK_REFRESH_S):
            try:
                os.utime(self.path)
            except OSError:
                return

    def release(self) -> None:
        self._stop.set()
        holder = self._read()
        if holder and holder.get("pid") == os.getpid() and holder.get("host") == socket.gethostname():
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass


def saved_part(state: Any) -> Any:
    """What a checkpoint holds of a train state: all of it but the frozen weights (``objective.FROZEN``, the
    codec's WavLM), which are read from their own converted checkpoint when a run starts or resumes."""
    from jaxvoc.train.objective import FROZEN

    return {k: v for k, v in state.items() if k != FROZEN} if isinstance(state, dict) else state


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, shardings)
