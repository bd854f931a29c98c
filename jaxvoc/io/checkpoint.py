"""jaxvoc checkpoints: a folder with ``jaxvoc.json`` (model kind + the official config) and ``params/``
(an Orbax checkpoint of the parameter pytree, weight norm unfolded, as in the official file).

Writing is atomic: everything goes to a temporary sibling folder that is renamed into place at the end, so a
failed conversion leaves no OUT_DIR behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import sys
from typing import Any

import jax
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.io.atomic import atomic_dir
from jaxvoc.io.config import read_json

META = "jaxvoc.json"
FORMAT_VERSION = 1


def _to_numpy(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda a: np.asarray(a), tree)


def quiet_failed_io_reports() -> None:
    """Orbax reads and writes through tensorstore, whose threads complete the futures of an asyncio loop. When
    one array fails (a full disk, a file size limit, a damaged checkpoint) Orbax raises that error and closes
    its loop while the other arrays are still in flight. Those then report, around jaxvoc's one-line error:
    each ``RuntimeError: Event loop is closed`` (raised in asyncio's ``_check_closed``) as an unraisable
    exception, and each of their own failures as asyncio's "<Task|Future|_GatheringFuture> exception was never
    retrieved" log record; and Orbax's background threads log the failure itself with a traceback (absl) before
    it reaches the caller. This drops exactly those reports (installed once per process, before Orbax runs: they arrive
    while it fails); every other unraisable exception and log record goes on as before."""
    previous = sys.unraisablehook
    if getattr(previous, "jaxvoc_closed_loop", False):
        return

    def hook(unraisable) -> None:
        e, tb = unraisable.exc_value, unraisable.exc_traceback
        while tb is not None and tb.tb_next is not None:
            tb = tb.tb_next
        if (isinstance(e, RuntimeError) and str(e) == "Event loop is closed" and tb is not None
                and tb.tb_frame.f_code.co_name == "_check_closed"):
            return
        previous(unraisable)

    hook.jaxvoc_closed_loop = True
    sys.unraisablehook = hook
    logging.getLogger("asyncio").addFilter(_orphaned_orbax_task)
    logging.getLogger("absl").addFilter(_orbax_storage_failure)


def storage_error(e: BaseException) -> OSError | None:
    """The OSError inside a tensorstore (Orbax) error, which arrives as a ValueError whose text carries
    ``os_error_code='28'`` (a full disk while saving a checkpoint) and the path, or None. Its path is the folder
    the output goes to, not the temporaries (jaxvoc's own, Orbax's) it was written in."""
    m = re.search(r"os_error_code='(\d+)'", str(e))
    if m is None:
        return None
    code = int(m.group(1))
    path = re.search(r'(?:Failed writing|Error writing local file|Error opening local file): "([^"]+)"', str(e))
    where = None
    if path:
        where = re.sub(r"/(\.tmp-[^/]*|[^/]*\.orbax-checkpoint-tmp)(/.*)?$", "", os.path.dirname(path.group(1)))
    return OSError(code, os.strerror(code), where)


def _orbax_storage_failure(record: logging.LogRecord) -> bool:
    """False (dropped) for Orbax's own logged traceback of a write or read that failed in the operating system
    (:func:`storage_error`: a full disk, a file size limit): its background threads log it before the same
    error reaches the caller, which reports it (``jaxvoc.cli``: one line)."""
    exc = record.exc_info[1] if record.exc_info else None
    return not ("orbax" in record.pathname and exc is not None and storage_error(exc) is not None)


def _orphaned_orbax_task(record: logging.LogRecord) -> bool:
    """False (dropped) for asyncio's report of an Orbax/tensorstore task whose failure nobody awaited, or that
    its closed loop left pending."""
    msg = record.getMessage()  # asyncio names the class: Task, Future, _GatheringFuture, ...
    return not (re.match(r"\w+ exception was never retrieved|Task was destroyed but it is pending", msg)
                is not None and any(k in msg for k in ("orbax", "tensorstore", "OCDBT")))


def save_params(path: str, tree: Any) -> None:
    import orbax.checkpoint as ocp

    quiet_failed_io_reports()

    kw = {}
    if jax.process_count() > 1:  # host numpy written by this process alone (training export on process 0)
        me = jax.process_index()
        kw["multiprocessing_options"] = ocp.options.MultiprocessingOptions(primary_host=me, active_processes={me})
    ckptr = ocp.StandardCheckpointer(**kw)
    try:
        ckptr.save(os.path.abspath(path), _to_numpy(tree))
        ckptr.wait_until_finished()
    finally:  # also after a failed write (a full disk): its threads end before the folder is removed
        ckptr.close()


def restore_params(path: str) -> Any:
    import orbax.checkpoint as ocp

    quiet_failed_io_reports()
    ckptr = ocp.StandardCheckpointer()
    meta = ckptr.metadata(os.path.abspath(path))
    tree = getattr(meta, "item_metadata", meta)
    target = jax.tree_util.tree_map(lambda m: np.zeros(m.shape, m.dtype), tree,
                                    is_leaf=lambda m: hasattr(m, "shape") and hasattr(m, "dtype"))
    return ckptr.restore(os.path.abspath(path), target)


def save(out_dir: str, kind: str, config: dict, params: Any, extra: dict | None = None,
         overwrite: bool = False, source: dict | None = None) -> None:
    """Writes a jaxvoc checkpoint folder atomically. ``extra`` holds further pytrees (e.g. discriminators)
    saved beside ``params`` under their own names; ``source``, where the weights came from (a Hub model's
    repo, revision, commit and files with their sha256: jaxvoc/io/hub.py), is kept in the metadata."""
    with atomic_dir(out_dir, overwrite) as tmp:
        save_params(os.path.join(tmp, "params"), params)
        for name, tree in (extra or {}).items():
            save_params(os.path.join(tmp, name), tree)
        meta = {"format": FORMAT_VERSION, "kind": kind, "config": config, "trees": ["params", *(extra or {})]}
        if source is not None:
            meta["source"] = source
        with open(os.path.join(tmp, META), "w") as f:
            json.dump(meta, f, indent=2)


def read_meta(ckpt_dir: str) -> dict:
    path = os.path.join(ckpt_dir, META)
    if not os.path.isdir(ckpt_dir):
        raise UserError(f"checkpoint not found: {ckpt_dir}; convert a model first (jaxvoc convert ...)")
    if not os.path.exists(path):
        raise UserError(f"{ckpt_dir} is not a jaxvoc checkpoint (no {META}); convert it with jaxvoc convert")
    meta = read_json(path, "checkpoint metadata", "convert the model again")
    if meta.get("format") != FORMAT_VERSION or "kind" not in meta:
        raise UserError(f"{path} has an unknown format; convert the model again with this jaxvoc")
    return meta


def load_tree(ckpt_dir: str, name: str = "params") -> Any:
    path = os.path.join(ckpt_dir, name)
    if not os.path.isdir(path):
        raise UserError(f"{ckpt_dir} has no '{name}' tree; convert the model again")
    try:
        return restore_params(path)
    except Exception as e:  # orbax raises assorted errors for damaged folders
        raise UserError(f"cannot read {path} ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "convert the model again") from None
