"""Where the codec's encode time goes: every convolution of the Low Frame-rate codec's encoder (its shape at
a 4 s input), timed alone in JAX (jit, reflect padding as the model does) and in PyTorch, same process.

    python -m experiments.profile.codec_conv [--seconds 4]

The JAX encoder's total time is within a few percent of the sum of its convolutions (the masks, paddings and
activations fuse into cheap elementwise passes), so this table is the encoder's profile.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--seconds", type=float, default=4.0)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion.report import jax_sync, print_table, time_call
    from jaxvoc.nn.conv import conv1d, pad_time

    rows, tot_j, tot_t = [], 0.0, 0.0

    def bench(name, T, cin, cout, K, stride=1, pad=None, n=1):
        nonlocal tot_j, tot_t
        pad = (K - 1) // 2 if pad is None else pad
        rs = np.random.RandomState(0)
        x = rs.randn(1, T, cin).astype(np.float32)
        w = (rs.randn(K, cin, cout) * 0.1).astype(np.float32)
        f = jax.jit(lambda x, w: conv1d(pad_time(x, pad, pad, "reflect"), w, stride=stride))
        xj, wj = jnp.asarray(x), jnp.asarray(w)
        tj = time_call(lambda: f(xj, wj), 3, 1, jax_sync) * n
        xt, wt = torch.tensor(x.transpose(0, 2, 1)), torch.tensor(w.transpose(2, 1, 0))
        with torch.inference_mode():
            tt = time_call(lambda: torch.nn.functional.conv1d(
                torch.nn.functional.pad(xt, (pad, pad), mode="reflect"), wt, stride=stride), 3, 1) * n
        tot_j, tot_t = tot_j + tj, tot_t + tt
        rows.append((name, f"jax {tj * 1e3:8.1f} ms  pytorch {tt * 1e3:8.1f} ms  ratio {tt / tj:5.2f}"))

    T = int(args.seconds * 22050) // 1024 * 1024
    C = 48
    bench("pre_conv 1->48 k7", T, 1, 48, 7)
    for i, r in enumerate([2, 2, 4, 8, 8]):
        for k in (3, 7, 11):
            bench(f"stage {i} residual C={C} k={k} (2 convs)", T, C, C, k, n=2)
        bench(f"stage {i} down-sample {C}->{2 * C} k={2 * r} stride {r}", T, C, 2 * C, 2 * r, stride=r,
              pad=(r + 1) // 2)
        T //= r
        C *= 2
    bench(f"post_conv {C}->32 k7", T, C, 32, 7)
    rows.append(("sum", f"jax {tot_j * 1e3:8.1f} ms  pytorch {tot_t * 1e3:8.1f} ms  ratio {tot_t / tot_j:5.2f}"))
    print_table(rows, f"LFR encoder convolutions at {args.seconds:.1f} s of 22.05 kHz audio (CPU, float32, "
                      f"torch {torch.get_num_threads()} threads)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
