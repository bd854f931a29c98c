"""A convolution's kernel gradient inside ``jax.lax.cond`` on XLA's CPU backend: autodiff's form (a convolution
whose window spans the whole output) against ``jaxvoc.nn.conv.kernel_grad_by_taps`` (one matrix product per
kernel tap) and the forward convolution, each jitted alone and inside a ``cond`` branch (how the codec's step
holds its periodic discriminator update), on one of NeMo's period-discriminator layers (1024 -> 1024 channels,
kernel (5, 1), stride (3, 1), period 7, batch 2: real and generated audio of the LFR crop).

    python -m experiments.profile.cond_kernel_grad [--repeats 3]

Also prints each kernel gradient's relative distance from a float64 run of autodiff's, so the faster form is
seen to be as accurate.
"""

from __future__ import annotations

import argparse
import sys
import time


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxvoc.nn import conv as C

    taps, stride, pad, dil = (5, 1), (3, 1), ((2, 2), (0, 0)), (1, 1)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 148, 7, 1024)).astype(np.float32)
    k = (rng.standard_normal((*taps, 1024, 1024)) / np.sqrt(5 * 1024)).astype(np.float32)
    gy = rng.standard_normal(np.shape(C._conv(x, k, stride, pad, dil, 1, None))).astype(np.float32)

    def autodiff(x, k, gy):
        return jax.vjp(lambda kk: C._conv(x, kk, stride, pad, dil, 1, None), k)[1](gy)[0]

    forms = {"kernel gradient, autodiff": autodiff,
             "kernel gradient, by taps": lambda x, k, gy: C.kernel_grad_by_taps(x, gy, taps, stride, pad, dil),
             "forward convolution": lambda x, k, gy: C._conv(x, k, stride, pad, dil, 1, None)}
    with jax.enable_x64(True):
        ref = np.asarray(jax.jit(autodiff)(*(jnp.asarray(v, jnp.float64) for v in (x, k, gy))))
    print(f"jax {jax.__version__}, {jax.devices()[0].device_kind}; layer x {x.shape} kernel {k.shape} stride {stride}")
    for name, f in forms.items():
        plain = jax.jit(f)
        in_cond = jax.jit(lambda pred, x, k, gy, f=f: jax.lax.cond(
            pred, lambda: f(x, k, gy), lambda: jnp.zeros_like(f(x, k, gy))))
        times = {}
        for label, fn, a in (("alone", plain, (x, k, gy)), ("in cond", in_cond, (jnp.bool_(True), x, k, gy))):
            out = jax.block_until_ready(fn(*a))
            ts = []
            for _ in range(args.repeats):
                t0 = time.perf_counter()
                jax.block_until_ready(fn(*a))
                ts.append(time.perf_counter() - t0)
            times[label] = min(ts)
        err = ("" if "forward" in name else
               f"; relative distance from float64 {np.linalg.norm(np.asarray(out) - ref) / np.linalg.norm(ref):.2e}")
        print(f"{name}: alone {times['alone'] * 1e3:.1f} ms, in cond {times['in cond'] * 1e3:.1f} ms{err}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
