"""The machine's ceiling: the float32 and bfloat16 throughput this machine reaches on a large matrix product and
on a convolution of BigVGAN's largest layer, in JAX and in PyTorch, so that every benchmark can say what
fraction of the achievable it runs at.

    python -m experiments.bench ceiling [--size 4096] [--repeats 5] [--config NAME] [--frames 128]
                                        [--device cpu|gpu] [--json FILE]

GEMM: ``size`` x ``size`` times ``size`` x ``size`` (2 size^3 FLOP); bfloat16 inputs accumulate in float32 (JAX
``preferred_element_type=float32``; PyTorch's bf16 ``mm`` accumulates in float32 and rounds its output).
Convolution: the conv1d of ``--config`` (default BigVGAN v2 24 kHz) with the most multiply-adds at
``--frames`` mel frames, as jaxvoc runs it (``jaxvoc.nn.conv.conv1d``, channels-last) and as the official
model does (``F.conv1d``, channels-first). Each figure is the best of ``--repeats`` runs after a warm-up (a
ceiling: the most the machine gives). Ends with ``ceiling: jax X GFLOP/s, pytorch Y GFLOP/s, ratio Z``
(float32 GEMM; the JAX figure is the ceiling the benchmarks divide by).

The benchmarks (``bigvgan``, ``waveglow``, ``codec``) print, just above their last line, a ``% of ceiling`` line:
the model's FLOPs per call counted on the official PyTorch model by ``torch.utils.flop_counter`` (convolutions
and matrix products, 2 FLOP per multiply-add; for BigVGAN v2 24 kHz 7.16 MFLOP per output sample, the
anti-aliasing filters included), over each side's time, as a fraction of the JAX float32 GEMM ceiling.
That ceiling is measured in the same run (a few seconds: the same machine state as the timings), or
given with ``--ceiling GFLOPS`` (e.g. the last line of this benchmark).
"""

from __future__ import annotations

import argparse
import time
from typing import Any, Callable

import numpy as np

DTYPES = ("float32", "bfloat16")


def _best(fn: Callable[[], Any], sync: Callable[[Any], Any], repeats: int) -> float:
    """Shortest wall time of ``fn()`` over ``repeats`` runs, after one warm-up run."""
    sync(fn())
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        sync(fn())
        best = min(best, time.perf_counter() - t)
    return best


def gemm_jax(n: int, dtype: str = "float32", repeats: int = 5, device=None) -> float:
    """GFLOP/s of a jitted n x n matrix product in JAX (bfloat16: float32 accumulation and output)."""
    import jax
    import jax.numpy as jnp

    device = device or jax.devices()[0]
    rng = np.random.default_rng(0)
    a, b = (jax.device_put(jnp.asarray(rng.standard_normal((n, n)), dtype), device) for _ in range(2))
    mm = jax.jit(lambda x, y: jnp.matmul(x, y, preferred_element_type=jnp.float32))
    return 2 * n ** 3 / _best(lambda: mm(a, b), jax.block_until_ready, repeats) / 1e9


def gemm_torch(n: int, dtype: str = "float32", repeats: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of an n x n ``torch.mm`` (all the threads torch uses)."""
    import torch

    from conversion.report import torch_sync

    dev = "cuda" if device == "gpu" else "cpu"
    g = torch.Generator().manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(dev, getattr(torch, dtype)) for _ in range(2))
    with torch.inference_mode():
        return 2 * n ** 3 / _best(lambda: torch.mm(a, b), torch_sync(device), repeats) / 1e9


def largest_conv(config_name: str, frames: int) -> dict:
    """The BigVGAN generator conv1d with the most multiply-adds on ``frames`` mel frames (the first of equals)."""
    return max(generator_convs(config_name, frames), key=conv_flops)  # max() keeps the first of equals


def generator_convs(config_name: str, frames: int) -> list[dict]:
    """The stride-1 conv1d layers of the BigVGAN generator on ``frames`` mel frames, each as {c_in, c_out,
    kernel, dilation, length, where}: conv_pre, every AMP block's dilated convs (AMPBlock1's dilation-1
    second convs, same shapes, not listed), conv_post. Reads the official config (the AMP blocks' convs keep
    their stage's channel count and length)."""
    from jaxvoc.models.bigvgan import BigVGANConfig

    h = BigVGANConfig.official(config_name)
    convs = [dict(c_in=h.num_mels, c_out=h.upsample_initial_channel, kernel=7, dilation=1, length=frames,
                  where="conv_pre")]
    length = frames
    for i, u in enumerate(h.upsample_rates):
        ch, length = h.upsample_initial_channel // 2 ** (i + 1), length * u
        for j, (k, ds) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes)):
            for d in ds:
                convs.append(dict(c_in=ch, c_out=ch, kernel=k, dilation=d, length=length,
                                  where=f"resblocks_{i * len(h.resblock_kernel_sizes) + j} (stage {i})"))
    convs.append(dict(c_in=ch, c_out=1, kernel=7, dilation=1, length=length, where="conv_post"))
    return convs


def conv_flops(c: dict) -> float:
    """2 x multiply-adds of a stride-1 "same" conv1d of shape ``c`` (batch 1)."""
    return 2.0 * c["length"] * c["kernel"] * c["c_in"] * c["c_out"]


def conv_jax(c: dict, dtype: str = "float32", repeats: int = 5, device=None) -> float:
    """GFLOP/s of the conv1d ``c`` as jaxvoc runs it (channels-last ``jaxvoc.nn.conv.conv1d``, jitted)."""
    import jax
    import jax.numpy as jnp

    from jaxvoc.nn.conv import conv1d, get_padding

    device = device or jax.devices()[0]
    rng = np.random.default_rng(0)
    x = jax.device_put(jnp.asarray(rng.standard_normal((1, c["length"], c["c_in"])), dtype), device)
    w = jax.device_put(jnp.asarray(rng.standard_normal((c["kernel"], c["c_in"], c["c_out"])) * 0.01, dtype), device)
    pad = get_padding(c["kernel"], c["dilation"])
    f = jax.jit(lambda x, w: conv1d(x, w, dilation=c["dilation"], padding=pad))
    return conv_flops(c) / _best(lambda: f(x, w), jax.block_until_ready, repeats) / 1e9


def conv_torch(c: dict, dtype: str = "float32", repeats: int = 5, device: str = "cpu") -> float:
    """GFLOP/s of the conv1d ``c`` as the official model runs it (``F.conv1d``, channels-first)."""
    import torch
    import torch.nn.functional as F

    from conversion.report import torch_sync
    from jaxvoc.nn.conv import get_padding

    dev = "cuda" if device == "gpu" else "cpu"
    g = torch.Generator().manual_seed(0)
    x = torch.randn(1, c["c_in"], c["length"], generator=g).to(dev, getattr(torch, dtype))
    w = (torch.randn(c["c_out"], c["c_in"], c["kernel"], generator=g) * 0.01).to(dev, getattr(torch, dtype))
    pad = get_padding(c["kernel"], c["dilation"])
    with torch.inference_mode():
        return conv_flops(c) / _best(lambda: F.conv1d(x, w, dilation=c["dilation"], padding=pad),
                                     torch_sync(device), repeats) / 1e9


def jax_ceiling(n: int = 4096, repeats: int = 3, device=None) -> float:
    """The JAX float32 GEMM ceiling (GFLOP/s) the benchmarks divide by."""
    return gemm_jax(n, "float32", repeats, device)


# ----------------------------------------------------------------------------------------------------------
# What the benchmarks share: FLOPs counted on the official model, and the `% of ceiling` line


def official_flops(fn: Callable[[], Any]) -> float:
    """FLOPs of ``fn()`` (a call of an official PyTorch model) by ``torch.utils.flop_counter``: convolutions
    and matrix products, 2 per multiply-add. ``fn`` may run on the meta device (shapes only: no arithmetic)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        fn()
    return float(counter.get_total_flops())


def add_ceiling_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument("--ceiling", type=float, help="the JAX float32 GEMM ceiling in GFLOP/s for the `%% of "
                   "ceiling` line (default: measured in this run, 4096^2, best of 3; see `bench ceiling`)")


def resolve_ceiling(args, device=None) -> float:
    return args.ceiling if args.ceiling else jax_ceiling(device=device)


def ceiling_line(flops: float, t_jax: float, t_torch: float, ceiling: float, what: str = "") -> str:
    """``% of ceiling`` of one benchmark: each side's GFLOP/s (``flops`` per call over its time) and its share
    of the JAX float32 GEMM ceiling ``ceiling`` (GFLOP/s)."""
    gj, gt = flops / t_jax / 1e9, flops / t_torch / 1e9
    return (f"% of ceiling{' (' + what + ')' if what else ''}: {flops / 1e9:.2f} GFLOP per call; jax {gj:.0f} GFLOP/s"
            f" = {100 * gj / ceiling:.0f}%, pytorch {gt:.0f} GFLOP/s = {100 * gt / ceiling:.0f}% of the ceiling "
            f"{ceiling:.0f} GFLOP/s (JAX float32 GEMM)")


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="bench.py ceiling", description=__doc__.split("\n")[0])
    p.add_argument("--size", type=int, default=4096, help="GEMM size n (n x n times n x n)")
    p.add_argument("--repeats", type=int, default=5, help="timed runs per figure (best kept)")
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official BigVGAN config of the conv")
    p.add_argument("--frames", type=int, default=128, help="mel frames that set the conv's length")
    p.add_argument("--device", default="cpu", choices=["cpu", "gpu"])
    p.add_argument("--json", help="also write the figures here as JSON")
    args = p.parse_args(argv)

    import jax
    import torch

    from conversion import report as rp

    _, jdev = rp.setup_device(args.device)
    conv = largest_conv(args.config, args.frames)
    rows: dict[str, dict[str, float]] = {}
    for dtype in DTYPES:
        rows[f"gemm {dtype}"] = {"jax": gemm_jax(args.size, dtype, args.repeats, jdev),
                                 "pytorch": gemm_torch(args.size, dtype, args.repeats, args.device)}
        rows[f"conv {dtype}"] = {"jax": conv_jax(conv, dtype, args.repeats, jdev),
                                 "pytorch": conv_torch(conv, dtype, args.repeats, args.device)}
    print(f"device {args.device} ({jdev.device_kind}), {rp.versions()}")
    print(f"gemm: {args.size} x {args.size} x {args.size} ({2 * args.size ** 3 / 1e9:.0f} GFLOP); conv: "
          f"{args.config} {conv['where']}: {conv['c_in']} -> {conv['c_out']} channels, kernel {conv['kernel']}, "
          f"dilation {conv['dilation']}, length {conv['length']} ({conv_flops(conv) / 1e9:.2f} GFLOP); best of "
          f"{args.repeats}")
    for name, r in rows.items():
        print(f"  {name:15s} jax {r['jax']:7.1f} GFLOP/s  pytorch {r['pytorch']:7.1f} GFLOP/s  "
              f"ratio {r['jax'] / r['pytorch']:.2f}")
    if args.json:
        rp.write_json(args.json, {"device": args.device, "device_kind": jdev.device_kind, "gemm_size": args.size,
                                  "conv": conv, "repeats": args.repeats, "gflops": rows, "versions": rp.versions(),
                                  "jax": jax.__version__, "torch": torch.__version__})
    g = rows["gemm float32"]
    print(f"ceiling: jax {g['jax']:.1f} GFLOP/s, pytorch {g['pytorch']:.1f} GFLOP/s, ratio {g['jax'] / g['pytorch']:.2f}")
    return 0
