"""Device mesh and shardings for training: one ``Mesh`` over all devices with axes ``("data", "fsdp")``.

* The batch is split over both axes (every device sees its own examples; with fsdp=1 this is plain data
  parallelism over ``data``).
* Parameters and optimizer states are replicated, or, with fsdp > 1, each large enough leaf is split over
  ``fsdp`` along its last axis (output channels of a conv kernel) when divisible, else along its largest
  divisible axis. Optimizer moments have the shapes of their parameters and get the same sharding. Inside
  the step the parameters are all-gathered (:func:`gather_params`) before each forward pass and the
  gradients reduce-scattered into the sharded optimizer update: parameter, moment and update memory is
  split over fsdp, the activations and the gathered weights of one step are not.

  The explicit gather is not only the usual FSDP pattern: XLA's SPMD partitioner (jax 0.10.2, CPU)
  miscompiles jaxvoc's sub-pixel transposed convolution when its kernel arrives split along the tap axis
  and the batch is split too (the output was wrong by O(10)); with gathered weights every op sees the
  layout it would see on one device, and the sharded step matches the single-device one (tests).
* Several processes (multi-host): :func:`initialize_distributed` calls ``jax.distributed.initialize`` once
  (CPU collectives over gloo; the coordinator declares a process dead after ``HEARTBEAT_TIMEOUT_S``); the
  mesh spans the devices of all processes (process-major, so each process holds a contiguous block of batch
  rows); each process loads its own rows of the global batch (see ``data.py``) and :func:`global_batch`
  assembles the global array from the per-process parts. :func:`to_host` gathers a sharded tree to every
  process as numpy (export, validation). :class:`Watchdog` ends a process whose peer died with one line.
"""

from __future__ import annotations

import os
from typing import Any

import jax
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from jaxvoc.errors import UserError

AXES = ("data", "fsdp")  # the mesh; a batch is split over both axes, parameters over fsdp

_distributed_done = False

# Multi-process failure detection (seconds). A process is declared dead when the coordinator hears no
# heartbeat from it for HEARTBEAT_TIMEOUT_S; jaxvoc's watchdog polls the coordinator every WATCHDOG_POLL_S
# and ends the surviving processes with one line when a peer is dead or the coordinator is gone, so a
# survivor exits within about HEARTBEAT_TIMEOUT_S + 2 * WATCHDOG_POLL_S of a peer's death. Env overrides:
# JAXVOC_HEARTBEAT_TIMEOUT, JAXVOC_INIT_TIMEOUT.
HEARTBEAT_TIMEOUT_S = 20
INIT_TIMEOUT_S = 300
WATCHDOG_POLL_S = 1.0
# When process 0 (which hosts the coordination service) dies, the runtime of every other process sees the
# broken channel at once and aborts with a multi-line fatal log (jax 0.10.2 offers no way to replace that
# handler from Python: its missed-heartbeat callback fails with std::bad_cast). So in multi-process runs the
# native code's stderr (file descriptor 2) goes through a pipe that jaxvoc reads: the runtime's fatal report is
# recognised by these markers, held back, and replaced by jaxvoc's one line and exit code 2 (the runtime takes
# a while to unwind its abort; the forwarding thread ends the process first). Python's own sys.stderr keeps
# the original descriptor (a terminal stays a terminal for progress bars).
RUNTIME_FATAL_MARKER = "Terminating process because the JAX distributed service detected fatal errors"
RUNTIME_FATAL_PRELUDE = "Polled an error from coordination service"  # the line before it, held back a moment


def initialize_distributed(coordinator: str | None = None, num_processes: int | None = None,
                           process_id: int | None = None) -> None:
    """Calls ``jax.distributed.initialize`` when the run is one of several processes: when a coordinator
    address is given, or the environment of a cluster launcher (SLURM, Open MPI, ``JAX_COORDINATOR_ADDRESS``)
    says so. Does nothing for a single process. Must run before anything touches a device."""
    global _distributed_done
    if _distributed_done:
        return
    env = os.environ
    auto = (env.get("JAX_COORDINATOR_ADDRESS") or int(env.get("SLURM_NTASKS", "1")) > 1
            or int(env.get("OMPI_COMM_WORLD_SIZE", "1")) > 1)
    if coordinator is None and num_processes is None and not auto:
        return
    kw = {k: v for k, v in (("coordinator_address", coordinator), ("num_processes", num_processes),
                            ("process_id", process_id)) if v is not None}
    global HEARTBEAT_TIMEOUT_S
    HEARTBEAT_TIMEOUT_S = int(env.get("JAXVOC_HEARTBEAT_TIMEOUT", HEARTBEAT_TIMEOUT_S))
    kw["heartbeat_timeout_seconds"] = HEARTBEAT_TIMEOUT_S
    kw["initialization_timeout"] = int(env.get("JAXVOC_INIT_TIMEOUT", INIT_TIMEOUT_S))
    kw["shutdown_timeout_seconds"] = kw["initialization_timeout"]
    try:
        jax.config.update("jax_cpu_collectives_implementation", "gloo")  # CPU devices of several processes
        # a dead task does not make the runtime abort the others (a multi-line fatal log): the Watchdog
        # sees it among the dead nodes and ends them with one line
        jax.config.update("jax_enable_recoverability", True)
        jax.distributed.initialize(**kw)
    except Exception as e:  # wrong address, missing ids: one line for the user
        raise UserError(f"cannot start multi-process JAX ({type(e).__name__}: {str(e).splitlines()[0][:200]}); "
                        "check --coordinator/--num-processes/--process-id") from None
    _distributed_done = True


def distributed_client():
    """jax's coordination-service client (None for a single process)."""
    from jax._src import distributed

    return distributed.global_state.client


class Watchdog:
    """A daemon thread, in multi-process runs only: every ``WATCHDOG_POLL_S`` it asks the coordinator which
    processes are alive; when one is not (dead past the heartbeat timeout) or the coordinator cannot be
    reached, it prints ``jaxvoc: error: ...`` (one line) and ends this process with exit code 2 at once
    (``os._exit``: the main thread may be blocked in a collective that will never complete)."""

    def __init__(self, run_dir: str, on_exit=None):
        import threading

        self.run_dir = run_dir
        self.on_exit = on_exit  # called before the process ends (releases the run-folder lock)
        self.client = distributed_client()
        self.n = jax.process_count()
        self._stop = threading.Event()
        self._thread = None
        if self.client is not None and self.n > 1:
            self._thread = threading.Thread(target=self._watch, name="jaxvoc-watchdog", daemon=True)
            self._thread.start()
            _NativeStderr.install(self)

    def _die(self, why: str) -> None:
        import sys

        if self._stop.is_set():
            return
        print(f"jaxvoc: error: {why}; process {jax.process_index()} stops too (no checkpoint is written after "
              f"the last complete one); restart all {self.n} processes with --resume to continue {self.run_dir}",
              file=sys.stderr, flush=True)
        try:
            if self.on_exit is not None:
                self.on_exit()
        finally:
            os._exit(2)

    def _watch(self) -> None:
        ids = list(range(self.n))
        while not self._stop.wait(WATCHDOG_POLL_S):
            try:
                live = self.client.get_live_nodes(ids)
            except Exception as e:
                if self._stop.is_set():
                    return
                self._die(f"lost the multi-process coordinator ({type(e).__name__}: "
                          f"{str(e).splitlines()[0][:120] if str(e) else 'no reply'}); process 0 probably died")
                return
            dead = sorted(set(ids) - set(int(i) for i in live))
            if dead:
                self._die(f"process(es) {dead} of {self.n} stopped responding (no heartbeat for "
                          f"{HEARTBEAT_TIMEOUT_S} s)")
                return

    def grace(self) -> None:
        """After an unexpected error in the main thread (e.g. a collective failing because a peer died):
        give the watchdog time to recognise a dead peer and end the process with its one line."""
        import time

        if self._thread is not None and not self._stop.is_set():
            time.sleep(HEARTBEAT_TIMEOUT_S + 3 * WATCHDOG_POLL_S)

    def stop(self) -> None:
        self._stop.set()


class _NativeStderr:
    """File descriptor 2 through a pipe read by a daemon thread that copies every line to the original stderr,
    except the runtime's fatal report (RUNTIME_FATAL_MARKER and the line before it), which ends the process with the watchdog's
    one line instead. Installed once per process, by the first multi-process Watchdog."""

    installed = None

    @classmethod
    def install(cls, watchdog: "Watchdog") -> None:
        import sys
        import threading

        if cls.installed is not None:
            cls.installed.watchdog = watchdog
            return
        try:
            sys.stderr.flush()
            original = os.dup(2)
            read, write = os.pipe()
            os.dup2(write, 2)
            os.close(write)
        except OSError:  # no stderr to redirect: leave the runtime's own report
            return
        self = cls.installed = cls()
        self.watchdog, self.original = watchdog, original
        if getattr(sys.stderr, "fileno", None) is not None:
            sys.stderr = os.fdopen(os.dup(original), "w", buffering=1, encoding=getattr(sys.stderr, "encoding",
                                                                                        None) or "utf-8",
                                   errors="backslashreplace")
        threading.Thread(target=self._forward, args=(read,), name="jaxvoc-native-stderr", daemon=True).start()

    def _forward(self, read: int) -> None:
        buf, held = b"", []
        while True:
            try:
                chunk = os.read(read, 65536)
            except OSError:
                return
            if not chunk:
                return
            buf += chunk
            *lines, buf = buf.split(b"\n")
            for line in lines:
                text = line.decode(errors="replace")
                if RUNTIME_FATAL_MARKER in text and not self.watchdog._stop.is_set():
                    self.watchdog._die("lost the multi-process coordinator (the runtime reported: "
                                       f"{_runtime_status(text)}); process 0 probably died")
                    return
                if RUNTIME_FATAL_PRELUDE in text:
                    held.append(line)
                    continue
                try:
                    os.write(self.original, b"".join(h + b"\n" for h in held) + line + b"\n")
                except OSError:
                    return
                held = []


def _runtime_status(line: str) -> str:
    """The short status of a runtime log line (after its 'absl::Status: ' part when present)."""
    status = line.split("absl::Status: ", 1)[-1] if "absl::Status: " in line else line.split("] ", 1)[-1]
    return status.split(". ", 1)[0][:160]


def shutdown_distributed(timeout_s: float = 60.0, barrier_s: float | None = None) -> None:
    """The end of a multi-process run, in order: all meet at a barrier; the others disconnect; process 0,
    which hosts the coordination service, waits until they are gone and then shuts down. (With
    ``jax_enable_recoverability`` the runtime's own shutdown barrier no longer holds process 0 back, and a
    process still disconnecting when the service ends dies with a fatal log.) Call after the Watchdog has
    stopped."""
    import time

    client = distributed_client()
    if client is None or jax.process_count() == 1:
        return
    try:
        barrier("end", barrier_s)
    except Exception:  # (after an error: not every process came) leave it to the runtime
        if barrier_s is None:
            raise
        return
    if jax.process_index() != 0:
        jax.distributed.shutdown()
        return
    others = list(range(1, jax.process_count()))
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if not set(others) & set(int(i) for i in client.get_live_nodes(list(range(jax.process_count())))):
                break
        except Exception:
            break
        time.sleep(0.2)
    jax.distributed.shutdown()


def make_mesh(fsdp: int = 1, devices: list | None = None) -> Mesh:
    """A ``(data, fsdp)`` mesh over ``devices`` (default: all devices of all processes)."""
    if devices is None:  # process-major: each process's devices are one contiguous block of batch rows
        devices = sorted(jax.devices(), key=lambda d: (d.process_index, d.id))
    devices = list(devices)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise UserError(f"fsdp={fsdp} does not divide the {n} devices; choose a divisor of {n}")
    return Mesh(np.asarray(devices).reshape(n // fsdp, fsdp), AXES)


def batch_sharding(mesh: Mesh) -> NamedSharding:
    """Leading (batch) axis split over every device of the mesh."""
    return NamedSharding(mesh, P(AXES))


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def leaf_spec(shape: tuple[int, ...], fsdp_size: int, min_size: int) -> P:
    """Partition spec of one parameter / optimizer-state leaf with at least ``min_size`` elements: the last
    axis split over ``fsdp`` when divisible by ``fsdp_size``, else the largest divisible axis; smaller or
    indivisible leaves replicated."""
    if fsdp_size <= 1 or not shape or int(np.prod(shape)) < min_size:
        return P()
    order = [len(shape) - 1] + sorted(range(len(shape) - 1), key=lambda a: (-shape[a], a))
    for a in order:
        if shape[a] % fsdp_size == 0:
            spec = [None] * len(shape)
            spec[a] = "fsdp"
            return P(*spec)
    return P()


def state_shardings(abstract_state: Any, mesh: Mesh, fsdp_min_size: int = 2 ** 16) -> Any:
    """NamedShardings for a train state (params, optimizer states, step, rng) given its abstract shapes."""
    size = mesh.shape["fsdp"]
    return jax.tree_util.tree_map(
        lambda x: NamedSharding(mesh, leaf_spec(tuple(x.shape), size, fsdp_min_size)), abstract_state)


def gather_params(mesh: Mesh):
    """``tree -> tree`` constrained to be replicated (an all-gather of fsdp-sharded leaves), for use inside
    a jitted step; the identity when fsdp is 1."""
    if mesh.shape["fsdp"] == 1:
        return lambda tree: tree
    rep = NamedSharding(mesh, P())
    return lambda tree: jax.lax.with_sharding_constraint(tree, jax.tree_util.tree_map(lambda _: rep, tree))


def place(tree: Any, shardings: Any) -> Any:
    """Host (or single-device) arrays, the same full value on every process, as global arrays with
    ``shardings`` (a tree of NamedShardings like ``tree``): each process fills its addressable shards."""
    def put(x, sh):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sh, lambda index: x[index])

    return jax.tree_util.tree_map(put, tree, shardings)


def global_batch(local: np.ndarray, sharding: NamedSharding) -> jax.Array:
    """The global batch array from this process's rows (the process-local part of the leading axis: with
    the process-major mesh of :func:`make_mesh`, process ``p`` of ``n`` holds rows
    ``[p * B / n, (p + 1) * B / n)``). A dict of such arrays (the codec's ``audio`` and ``audio_len``) gives
    a dict of global arrays."""
    if isinstance(local, dict):
        return {k: global_batch(v, sharding) for k, v in local.items()}
    local = np.asarray(local)
    shape = (local.shape[0] * jax.process_count(),) + local.shape[1:]
    return jax.make_array_from_process_local_data(sharding, local, shape)


_barriers = 0


def barrier(name: str, timeout_s: float | None = None) -> None:
    """Several processes: wait for all at the coordinator (timeout ``INIT_TIMEOUT_S``). Used before the
    first run of each new collective: gloo sets up a communicator on first use and gives up when the
    processes arrive more than 30 s apart (a slow compile on a busy host), while this barrier waits long."""
    global _barriers
    if jax.process_count() == 1:
        return
    _barriers += 1
    distributed_client().wait_at_barrier(f"jaxvoc/{name}/{_barriers}", int(1000 * (timeout_s or INIT_TIMEOUT_S)))


def warm_collectives() -> None:
    """Several processes: a barrier, then the small all-gather that Orbax's and jaxvoc's host syncs use, so
    that its communicator exists before the first checkpoint."""
    if jax.process_count() == 1:
        return
    from jax.experimental import multihost_utils

    barrier("warm")
    multihost_utils.process_allgather(np.zeros((1,), np.int32))
    multihost_utils.sync_global_devices("jaxvoc warm")


def to_host(tree: Any) -> Any:
    """A tree of (possibly sharded, possibly multi-process) arrays as full numpy arrays on this host. With
    several processes every process must call it (an all-gather)."""
    if jax.process_count() == 1:
        return jax.device_get(tree)
    from jax.experimental import multihost_utils

    barrier("to_host")
    return multihost_utils.process_allgather(tree, tiled=True)


def check_batch_size(batch_size: int, mesh: Mesh) -> int:
    """The per-process batch size; the global batch must split evenly over devices and processes."""
    n = mesh.devices.size
    if batch_size % n:
        raise UserError(f"batch_size {batch_size} does not split over {n} devices; make it a multiple of {n}")
    return batch_size // jax.process_count()
