"""Windows against one whole call: pure execution time (AOT-compiled programs, compile excluded) of a vocoder
checkpoint on a .npy mel [n_mels, T], over the window plan of `jaxvoc synth --window W`, then in one call.

    python -m experiments.profile.window_throughput CKPT MEL.npy [--window 1024] [--windows-only]
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ckpt")
    p.add_argument("mel")
    p.add_argument("--window", type=int, default=1024)
    p.add_argument("--windows-only", action="store_true")
    args = p.parse_args()

    import jax
    import jax.numpy as jnp

    import jaxvoc
    from jaxvoc.models import windowed

    model = jaxvoc.load(args.ckpt)
    mel = np.load(args.mel).T.astype(np.float32)
    f = jax.jit(lambda prm, m: model.module.apply({"params": prm}, m))
    W = args.window
    plan = windowed.plan_windows(len(mel), W, model.receptive_field())
    cw = f.lower(model.params, jnp.zeros((1, W, model.num_mels), jnp.float32)).compile()
    t0 = time.perf_counter()
    for w in plan:
        np.asarray(cw(model.params, jnp.asarray(mel[None, w.start:w.start + W])))
    tw = time.perf_counter() - t0
    print(f"windows of {W}: {tw:.1f} s for {len(mel)} frames ({len(plan)} windows)", flush=True)
    if args.windows_only:
        return 0
    cu = f.lower(model.params, jnp.asarray(mel[None])).compile()
    t0 = time.perf_counter()
    np.asarray(cu(model.params, jnp.asarray(mel[None])))
    tu = time.perf_counter() - t0
    print(f"whole: {tu:.1f} s; windows / whole throughput {tu / tw:.3f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
