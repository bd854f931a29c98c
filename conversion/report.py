"""Shared pieces of `jaxvoc compare`, the benchmarks and the demo: error metrics, timing, device set-up,
the table, the JSON report and the spectrogram PNG."""

from __future__ import annotations

import json
import statistics
import time
from typing import Any, Callable, Sequence

import numpy as np

from jaxvoc.io.atomic import atomic_file
from jaxvoc.errors import UserError


def snr_db(test: np.ndarray, ref: np.ndarray) -> float:
    """10 log10(sum ref^2 / sum (test - ref)^2), in float64; inf when identical."""
    test = np.asarray(test, np.float64).reshape(-1)
    ref = np.asarray(ref, np.float64).reshape(-1)
    if test.shape != ref.shape:
        raise ValueError(f"shapes differ: {test.shape} vs {ref.shape}")
    err = np.sum((test - ref) ** 2)
    return float("inf") if err == 0 else float(10 * np.log10(np.sum(ref ** 2) / err))


def max_abs(test: np.ndarray, ref: np.ndarray) -> float:
    return float(np.max(np.abs(np.asarray(test, np.float64) - np.asarray(ref, np.float64))))


def logmel_l1(a: np.ndarray, b: np.ndarray, mel_config) -> float:
    """Mean absolute difference of the log-mels of two waveforms (the model's own front-end)."""
    from jaxvoc.dsp.stft import mel_spectrogram

    ma = np.asarray(mel_spectrogram(np.asarray(a, np.float32).reshape(1, -1), mel_config))
    mb = np.asarray(mel_spectrogram(np.asarray(b, np.float32).reshape(1, -1), mel_config))
    return float(np.mean(np.abs(ma - mb)))


def time_call(fn: Callable[[], Any], repeats: int = 3, warmup: int = 1, sync: Callable[[Any], Any] = lambda x: x
              ) -> float:
    """Median wall time of ``fn()`` over ``repeats`` runs after ``warmup`` runs (``sync`` blocks on results)."""
    for _ in range(warmup):
        sync(fn())
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def time_alternating(fns: Sequence[Callable[[], Any]], repeats: int = 3, warmup: int = 1,
                     syncs: Sequence[Callable[[Any], Any]] | None = None, runs: list | None = None) -> list[float]:
    """Median wall time of each ``fns[i]()``, the calls interleaved (a, b, a, b, ...) after ``warmup`` runs of
    each, so that load from other processes on a shared machine falls on all sides alike. ``runs``, when
    given, receives every side's list of times."""
    syncs = list(syncs) if syncs is not None else [lambda x: x] * len(fns)
    for _ in range(warmup):
        for fn, sync in zip(fns, syncs):
            sync(fn())
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, sync, ts in zip(fns, syncs, times):
            t = time.perf_counter()
            sync(fn())
            ts.append(time.perf_counter() - t)
    if runs is not None:
        runs.extend(times)
    return [statistics.median(ts) for ts in times]


def jax_sync(x):
    import jax

    return jax.block_until_ready(x)


def torch_sync(device: str):
    def sync(x):
        import torch

        if device == "gpu":
            torch.cuda.synchronize()
        return x

    return sync


def setup_device(device: str) -> tuple[Any, Any]:
    """(torch device, jax device) for 'cpu' or 'gpu'; a clear error when no GPU is visible."""
    import jax
    import torch

    if device == "cpu":
        return torch.device("cpu"), jax.devices("cpu")[0]
    if not torch.cuda.is_available():
        raise UserError("--device gpu: torch sees no CUDA GPU; run on a GPU machine or use --device cpu")
    try:
        jdev = jax.devices("gpu")[0]
    except RuntimeError:
        raise UserError("--device gpu: jax sees no GPU (install jax[cuda]); or use --device cpu") from None
    return torch.device("cuda"), jdev


def set_precision(mode: str) -> None:
    """'highest': full float32 matmuls/convs on both sides (no TF32); 'default': each framework's default."""
    import jax
    import torch

    highest = mode == "highest"
    torch.backends.cuda.matmul.allow_tf32 = not highest and torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = not highest
    jax.config.update("jax_default_matmul_precision", "highest" if highest else None)


def versions() -> str:
    """The timing context of a benchmark line: torch's thread count and both frameworks' versions."""
    import jax
    import torch

    return f"torch {torch.get_num_threads()} threads, jax {jax.__version__}, torch {torch.__version__}"


def print_table(rows: list[tuple[str, str]], title: str) -> None:
    width = max(len(k) for k, _ in rows)
    print(title)
    for k, v in rows:
        print(f"  {k.ljust(width)}  {v}")


def write_json(path: str, report: dict) -> None:
    with atomic_file(path, ".json") as tmp, open(tmp, "w") as f:
        json.dump(report, f, indent=2, default=float)


def spectrogram_png(path: str, ref: np.ndarray, test: np.ndarray, mel_config, title: str) -> None:
    """Log-mel of the official output, of the JAX output, and their difference, one above the other."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from jaxvoc.dsp.stft import mel_spectrogram

    mr = np.asarray(mel_spectrogram(np.asarray(ref, np.float32).reshape(1, -1), mel_config))[0].T
    mt = np.asarray(mel_spectrogram(np.asarray(test, np.float32).reshape(1, -1), mel_config))[0].T
    fig, axes = plt.subplots(3, 1, figsize=(10, 7.5), constrained_layout=True)
    for ax, m, name in ((axes[0], mr, "official PyTorch"), (axes[1], mt, "jaxvoc (JAX)")):
        im = ax.imshow(m, origin="lower", aspect="auto", interpolation="none")
        ax.set_title(f"{name}: log-mel")
        fig.colorbar(im, ax=ax)
    d = mt - mr
    lim = max(float(np.max(np.abs(d))), 1e-12)
    im = axes[2].imshow(d, origin="lower", aspect="auto", interpolation="none", cmap="coolwarm", vmin=-lim, vmax=lim)
    axes[2].set_title(f"difference (JAX - PyTorch), max |d| = {lim:.2e}")
    axes[2].set_xlabel("frame")
    fig.colorbar(im, ax=axes[2])
    fig.suptitle(title)
    try:
        with atomic_file(path, ".png") as tmp:
            fig.savefig(tmp, dpi=90, format="png")
    finally:
        plt.close(fig)
