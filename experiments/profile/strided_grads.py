"""A/B of the strided convolutions' input gradient: the published BigVGAN discriminators (MPD and CQTD, or
MRD), forward + backward to their parameters and to the fake input as in experiments/profile/train_bigvgan.py,
with jaxvoc's sub-pixel input gradient (jaxvoc.nn.conv.conv_nd) and with autodiff's base-dilated one, both
jitted in one process and timed alternately (medians). The MPD's (5, 1) stride (3, 1) layers keep autodiff's
gradient in jaxvoc (conv_nd), so its two rows run the same program: their ratio is the run's noise.

    python -m experiments.profile.strided_grads [--config NAME] [--segment 8192] [--repeats 3]
    python -m experiments.profile.strided_grads --ops [--repeats 5]
    python -m experiments.profile.strided_grads --pointwise [--repeats 5]

--ops: the published CQTD's strided layers alone (128 channels, 33 frames, (3, 9) kernels, stride (1, 2)):
forward, autodiff's input gradient, the sub-pixel one, autodiff's kernel gradient (ms); and the input
gradients' SNR against float64 (torch's conv2d_input in float64) at 8 and 128 channels, with torch float32's.
--pointwise: WaveGlow's kernel-size-1 convolutions (T = 2000: cond 640 -> 4096, res_skip 256 -> 512, start
4 -> 256), backward pass as XLA convolutions and as a matrix product (einsum).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x")
    p.add_argument("--segment", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument("--ops", action="store_true", help="the CQTD's strided layers alone, speed and accuracy")
    p.add_argument("--pointwise", action="store_true", help="WaveGlow's 1x1 convolutions: conv vs dot")
    args = p.parse_args(argv)
    if args.ops:
        return ops(args.repeats)
    if args.pointwise:
        return pointwise(args.repeats)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from conversion import report as rp
    from experiments.reference.bigvgan_train import official_discriminator_config
    from jaxvoc.nn import conv
    from jaxvoc.train.bigvgan import BigVGANObjective

    h = official_discriminator_config(args.config)
    obj = BigVGANObjective(h)
    rng = np.random.default_rng(0)
    T = args.segment
    y = jnp.asarray((rng.standard_normal((1, T)) * 0.1).astype(np.float32))
    y_g = jnp.asarray((rng.standard_normal((1, T)) * 0.1).astype(np.float32))
    mel = jnp.asarray(rng.normal(-5, 2, (1, T // h["hop_size"], h["num_mels"])).astype(np.float32))
    _, params_d = obj.init(jax.random.PRNGKey(0), {"mel": mel, "audio": y})

    def d_grad(name):
        def loss(pd, yg):
            (real, fake), (fr, fg) = obj._discriminate(name, pd, y, yg, joint=False)
            return sum(jnp.sum(o) for o in real + fake) + sum(jnp.sum(f) for fm in fr + fg for f in fm)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    subpixel = conv._strided_conv
    fns, names = [], []
    for name in ("mpd", "mrd"):
        for form in ("sub-pixel", "autodiff"):
            f = d_grad(name)
            conv._strided_conv = subpixel if form == "sub-pixel" else (
                lambda x, k, s, pd, d, prec: conv._conv(x, k, s, pd, d, 1, prec))
            try:
                compiled = f.lower(params_d[name], y_g).compile()  # traced with this form
            finally:
                conv._strided_conv = subpixel
            fns.append(lambda c=compiled, n=name: c(params_d[n], y_g))
            names.append(f"{'MPD' if name == 'mpd' else 'CQTD/MRD'} fwd+bwd, {form} input gradient")
    with contextlib.redirect_stdout(io.StringIO()):
        t = rp.time_alternating(fns, args.repeats, 1, [rp.jax_sync] * len(fns))
    rows = [(n, f"{v * 1e3:8.0f} ms") for n, v in zip(names, t)]
    rows += [("MPD autodiff / sub-pixel", f"{t[1] / t[0]:.2f}"), ("CQTD/MRD autodiff / sub-pixel", f"{t[3] / t[2]:.2f}")]
    rp.print_table(rows, f"{args.config} discriminators, segment {T}, batch 1, CPU float32, {rp.versions()}")
    return 0


def _time(fns, repeats):
    import contextlib
    import io

    from conversion import report as rp

    with contextlib.redirect_stdout(io.StringIO()):
        return [v * 1e3 for v in rp.time_alternating(fns, repeats, 1, [rp.jax_sync] * len(fns))]


def ops(repeats: int) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np
    import torch

    from conversion import report as rp
    from jaxvoc.nn import conv

    rng = np.random.default_rng(0)
    s, ks = (1, 2), (3, 9)
    print(f"published CQTD strided layers alone, batch 1, CPU float32, {rp.versions()}")
    for H, W, d in [(33, 216, 1), (33, 108, 2)]:
        p = ((d * (ks[0] - 1) // 2,) * 2, ((ks[1] - 1) // 2,) * 2)
        x = jnp.asarray(rng.standard_normal((1, H, W, 128)).astype(np.float32))
        w = jnp.asarray((rng.standard_normal((*ks, 128, 128)) / np.sqrt(128 * 27)).astype(np.float32))
        g = jnp.asarray(rng.standard_normal(conv._conv(x, w, s, p, (d, 1), 1, None).shape).astype(np.float32))
        fwd = jax.jit(lambda x, w: conv._conv(x, w, s, p, (d, 1), 1, None))
        dx_ad = jax.jit(lambda g, w: jax.vjp(lambda xx: conv._conv(xx, w, s, p, (d, 1), 1, None), x)[1](g)[0])
        dx_sp = jax.jit(lambda g, w: conv.conv_input_grad(g, w, (H, W), s, p, (d, 1)))
        dx_rows = jax.jit(lambda g, w: conv.strided_input_grad(g, w, (H, W), s, p, (d, 1)))
        dw_ad = jax.jit(lambda g, x: jax.vjp(lambda ww: conv._conv(x, ww, s, p, (d, 1), 1, None), w)[1](g)[0])
        t = _time([lambda: fwd(x, w), lambda: dx_ad(g, w), lambda: dx_sp(g, w), lambda: dx_rows(g, w),
                   lambda: dw_ad(g, x)], repeats)
        print(f"  x [1, {H}, {W}, 128], dilation ({d}, 1): forward {t[0]:.0f} ms, input gradient: autodiff "
              f"{t[1]:.0f} ms, sub-pixel one convolution {t[2]:.0f} ms ({t[1] / t[2]:.2f}x), by kernel rows "
              f"(used) {t[3]:.0f} ms ({t[1] / t[3]:.2f}x); kernel gradient (autodiff, kept) {t[4]:.0f} ms")
    print("  input gradient SNR vs float64 (dB):")
    for c, H, W in [(8, 37, 50), (32, 37, 50), (128, 33, 216)]:
        p = ((1, 1), (4, 4))
        x = rng.standard_normal((1, H, W, c)).astype(np.float32)
        w = (rng.standard_normal((*ks, c, c)) / np.sqrt(c * 27)).astype(np.float32)
        g = rng.standard_normal(conv._conv(jnp.asarray(x), jnp.asarray(w), s, p, (1, 1), 1, None).shape
                                ).astype(np.float32)
        tw, tg = torch.from_numpy(w.transpose(3, 2, 0, 1).copy()), torch.from_numpy(g.transpose(0, 3, 1, 2).copy())

        def official(dtype):
            return torch.nn.grad.conv2d_input((1, c, H, W), tw.to(dtype), tg.to(dtype), stride=s, padding=(1, 4)
                                              ).numpy().transpose(0, 2, 3, 1).astype(np.float64)
        ref = official(torch.float64)
        ad = jax.vjp(lambda xx: conv._conv(xx, jnp.asarray(w), s, p, (1, 1), 1, None), jnp.asarray(x))[1](
            jnp.asarray(g))[0]
        sp = conv.conv_input_grad(jnp.asarray(g), jnp.asarray(w), (H, W), s, p, (1, 1))
        rows = conv.strided_input_grad(jnp.asarray(g), jnp.asarray(w), (H, W), s, p, (1, 1))
        print(f"    {c} channels: torch float32 {rp.snr_db(official(torch.float32), ref):.1f}, autodiff "
              f"{rp.snr_db(np.asarray(ad, np.float64), ref):.1f}, sub-pixel one convolution "
              f"{rp.snr_db(np.asarray(sp, np.float64), ref):.1f}, by kernel rows (used) "
              f"{rp.snr_db(np.asarray(rows, np.float64), ref):.1f}")
    return 0


def pointwise(repeats: int) -> int:
    import jax
    import jax.numpy as jnp
    import numpy as np

    from conversion import report as rp
    from jaxvoc.nn import conv

    rng = np.random.default_rng(0)
    print(f"WaveGlow's kernel-size-1 convolutions, backward pass (input and kernel gradient), CPU float32, "
          f"{rp.versions()}")
    for name, T, cin, cout in [("cond", 2000, 640, 4096), ("res_skip", 2000, 256, 512), ("start", 2000, 4, 256)]:
        x = jnp.asarray(rng.standard_normal((1, T, cin)).astype(np.float32))
        w = jnp.asarray((rng.standard_normal((1, cin, cout)) * 0.03).astype(np.float32))
        g = jnp.asarray(rng.standard_normal((1, T, cout)).astype(np.float32))
        as_conv = jax.jit(lambda x, w, g: jax.vjp(lambda x, w: conv.conv1d(x, w), x, w)[1](g))
        as_dot = jax.jit(lambda x, w, g: jax.vjp(lambda x, w: jnp.einsum("btc,co->bto", x, w[0]), x, w)[1](g))
        t = _time([lambda: as_conv(x, w, g), lambda: as_dot(x, w, g)], repeats)
        print(f"  {name} {cin} -> {cout}: convolution {t[0]:.1f} ms, dot {t[1]:.1f} ms (dot / conv {t[1] / t[0]:.2f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
