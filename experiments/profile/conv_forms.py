"""One BigVGAN convolution at a time, in the two forms jaxvoc can trace a 1-D convolution in: 1-D (XLA's own
convolution, jaxvoc's default) and 2-D over [B, 1, T, C] (which XLA's CPU backend hands to YNNPACK,
`jaxvoc.nn.conv.CONV1D_AS_2D`). For each stage shape (channels x steps of a 128-frame mel), kernel size and
dilation of the AMP blocks: the time of each form (medians, the two interleaved in one process) and each
form's distance from torch's float64 convolution, beside torch float32's (SNR, dB).

    python -m experiments.profile.conv_forms [--shapes 768x512 384x1024 ...] [--repeats 7]

Default shapes: BigVGAN v2 24 kHz's first three stages and base 22 kHz's four, at 128 mel frames.
"""

from __future__ import annotations

import argparse
import sys

# BigVGAN v2 24 kHz (1536 initial channels, up-sampling 4, 4, 2, ...): stages 0-2; base 22 kHz (512; 8, 8, 2, 2)
SHAPES = ["768x512", "384x1024", "192x2048", "256x1024", "128x8192", "64x16384", "32x32768"]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--shapes", nargs="+", default=SHAPES, help="CHANNELSxSTEPS")
    p.add_argument("--repeats", type=int, default=7)
    args = p.parse_args(argv)

    import jax
    import numpy as np
    import torch

    from conversion import report as rp
    from jaxvoc.nn import conv

    torch.set_num_threads(2)
    rng = np.random.default_rng(0)
    print(f"jax {jax.__version__}, torch {torch.__version__} ({torch.get_num_threads()} threads); ratio = 1-D time "
          "/ 2-D time (> 1: the 2-D form is faster); SNR against torch float64")
    totals = {}
    for shape in args.shapes:
        C, T = (int(v) for v in shape.split("x"))
        for K in (3, 7, 11):
            for d in (1, 3, 5):
                x = rng.standard_normal((1, T, C)).astype(np.float32)
                w = (rng.standard_normal((K, C, C)) / np.sqrt(K * C)).astype(np.float32)
                pad = d * (K - 1) // 2
                xj, wj = jax.numpy.asarray(x), jax.numpy.asarray(w)
                forms = []
                for as_2d in (False, True):
                    conv.CONV1D_AS_2D = as_2d  # read when traced: each jitted function is traced (called) now
                    forms.append(jax.jit(lambda a, b: conv.conv1d(a, b, dilation=d, padding=pad)))
                    jax.block_until_ready(forms[-1](xj, wj))
                conv.CONV1D_AS_2D = False
                t1, t2 = rp.time_alternating([lambda f=f: f(xj, wj) for f in forms], args.repeats, 1,
                                             [rp.jax_sync] * 2)
                xt = torch.from_numpy(x).permute(0, 2, 1)
                wt = torch.from_numpy(w).permute(2, 1, 0)
                ref = torch.nn.functional.conv1d(xt.double(), wt.double(), padding=pad, dilation=d)
                ref = ref.permute(0, 2, 1).numpy()
                tf = torch.nn.functional.conv1d(xt, wt, padding=pad, dilation=d).permute(0, 2, 1).numpy()
                s1, s2 = (rp.snr_db(np.asarray(f(xj, wj)), ref) for f in forms)
                st = rp.snr_db(tf, ref)
                tot = totals.setdefault(shape, [0.0, 0.0])
                tot[0] += t1
                tot[1] += t2
                print(f"C={C:4d} T={T:6d} K={K:2d} d={d}: 1-D {t1 * 1e3:7.2f} ms, 2-D {t2 * 1e3:7.2f} ms "
                      f"({t1 / t2:4.2f}) | SNR vs f64: 1-D {s1:5.1f}, 2-D {s2:5.1f}, torch f32 {st:5.1f} dB",
                      flush=True)
    for shape, (t1, t2) in totals.items():
        print(f"{shape}: the 9 convolutions 1-D {t1 * 1e3:.1f} ms, 2-D {t2 * 1e3:.1f} ms, ratio {t1 / t2:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
