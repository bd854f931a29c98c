"""What the training benchmarks (train_bigvgan.py, train_waveglow.py, train_codec.py) share: the speech
batch, and timing the jitted step of `jaxvoc train` against the official step in one process."""

from __future__ import annotations

import json
import os
import tempfile
import time

import numpy as np


def speech_segments(sr: int, batch: int, segment: int) -> np.ndarray:
    """``batch`` segments of ``segment`` samples of the bundled speech sample at ``sr`` (tiled when short)."""

    from jaxvoc.io.audio import BUNDLED_SPEECH, load_audio

    y = load_audio(BUNDLED_SPEECH, sr)
    y = np.tile(y, 1 + batch * segment // len(y))
    starts = np.linspace(0, len(y) - segment, batch).astype(int)
    return np.stack([y[s:s + segment] for s in starts]).astype(np.float32)


def torch_device(device: str):
    """The torch device of ``--device cpu|gpu`` and a ``sync(x)`` that waits for its queued work."""
    from conversion import report as rp

    return rp.setup_device(device)[0], rp.torch_sync(device)


def one_device_setup(task_cls, config, audio, device: str = "cpu"):
    """(setup, batch): ``jaxvoc train``'s step program (``loop.build``) for ``task_cls`` on ``config`` (the
    official config dict, or a loaded ``TrainConfig``) on one ``device`` (cpu or gpu), and the batch ``audio``
    (an array, or the codec's dict of ``audio`` and ``audio_len``) placed as the step takes it."""
    import jax

    from jaxvoc.train import config as config_lib
    from jaxvoc.train import loop, sharding

    if isinstance(config, dict):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "config.json")
            with open(path, "w") as f:
                json.dump(config, f)
            config = config_lib.load(path)
    segment = (audio["audio"] if isinstance(audio, dict) else audio).shape[1]
    setup = loop.build(task_cls(config), sharding.make_mesh(1, jax.devices(device)[:1]), segment, 0)
    return setup, sharding.global_batch(audio, setup.batch_sharding)


def time_train_steps(task_cls, config, audio, torch_step, repeats: int, device: str = "cpu",
                     steps_per_call: int = 1, metrics: list | None = None):
    """Median seconds per step of the jaxvoc step (``task_cls`` on ``config``: the official config dict, or a
    loaded ``TrainConfig``; one ``device``: cpu or gpu; batch ``audio``, an array or the codec's dict of
    ``audio`` and ``audio_len``) and of ``torch_step``, runs alternated after a warm-up; each timed call runs
    ``steps_per_call`` steps on both sides (``torch_step`` runs that many itself). ``metrics``, when given,
    receives the jaxvoc metrics of each step of the last call. Returns (jax s, torch s, jax compile s)."""
    import jax

    from conversion import report as rp

    setup, batch = one_device_setup(task_cls, config, audio, device)
    state = {"s": setup.init()}
    t0 = time.perf_counter()
    compiled = setup.step.lower(state["s"], batch).compile()
    t_compile = time.perf_counter() - t0

    def jax_step():
        ms = []
        for _ in range(steps_per_call):
            state["s"], m = compiled(state["s"], batch)
            ms.append(m)
        jax.block_until_ready((state["s"], ms))
        if metrics is not None:
            metrics[:] = [{k: float(v) for k, v in x.items()} for x in jax.device_get(ms)]

    tj, tt = rp.time_alternating([jax_step, torch_step], repeats)
    return tj / steps_per_call, tt / steps_per_call, t_compile


def runtime_line(t_compile: float) -> str:
    """Where the figures were taken: device, torch threads, versions, compile time."""
    import jax

    from conversion import report as rp

    return f"device {jax.devices()[0].device_kind}, {rp.versions()}; jax compile {t_compile:.1f} s"


def print_result(name: str, tj: float, tt: float, repeats: int) -> None:
    """The medians and the benchmark's last line, ``NAME: jax X steps/s, pytorch Y steps/s, ratio Z``."""
    print(f"median of {repeats}: jax {tj * 1e3:.0f} ms, pytorch {tt * 1e3:.0f} ms per step")
    print(f"{name}: jax {1 / tj:.3f} steps/s, pytorch {1 / tt:.3f} steps/s, ratio {tt / tj:.2f}")
