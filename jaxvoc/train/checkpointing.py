"""Training checkpoints with Orbax's ``CheckpointManager``: one folder per saved step under
``<checkpoint_path>/checkpoints/``, holding

* ``state``: the whole train state pytree (step, rng, parameters, optimizer states), sharded arrays as they
  are (each process writes its shards; restore puts them back with the shardings asked for);
* ``data``: the grain iterator state of every process (``process_<i>-of-<n>.json``);
* ``meta``: JSON (step, model kind, the config the run started with).

Saves run in the background (async): the arrays are copied off the device before ``save`` returns, so the
train step may go on (and donate its buffers) at once. A step folder appears under its final name only once
complete, so a process killed during a save leaves the previous checkpoints usable. The last ``keep``
checkpoints are kept.
"""

from __future__ import annotations

import os
from typing import Any

import jax

from jaxvoc.errors import UserError


class Checkpointer:
    def __init__(self, directory: str, keep: int = 3, async_save: bool = True):
        import orbax.checkpoint as ocp

        self.directory = os.path.abspath(directory)
        options = ocp.CheckpointManagerOptions(max_to_keep=keep, create=True,
                                               enable_async_checkpointing=async_save,
                                               cleanup_tmp_directories=True)
        self._ocp = ocp
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_names=("state", "data", "meta"))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def all_steps(self) -> list[int]:
        return list(self.manager.all_steps())

    def save(self, step: int, state: Any, data_iterator: Any, meta: dict) -> bool:
        import grain

        ocp = self._ocp
        args = {"state": ocp.args.StandardSave(state), "meta": ocp.args.JsonSave(meta)}
        if data_iterator is not None:
            args["data"] = grain.checkpoint.CheckpointSave(data_iterator)
        return self.manager.save(step, args=ocp.args.Composite(**args), force=True)

    def restore(self, step: int, abstract_state: Any, data_iterator: Any) -> tuple[Any, dict]:
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
            raise UserError(f"cannot restore checkpoint step {step} from {self.directory} "
                            f"({type(e).__name__}: {str(e).splitlines()[0][:200]}); the config must match the "
                            "run that wrote it") from None
        return out["state"], dict(out["meta"] or {})

    def wait(self) -> None:
        self.manager.wait_until_finished()

    def close(self) -> None:
        self.manager.wait_until_finished()
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


def abstract_with_shardings(abstract_state: Any, shardings: Any) -> Any:
    return jax.tree_util.tree_map(lambda a, s: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=s),
                                  abstract_state, shardings)
