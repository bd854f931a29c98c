"""Where BigVGAN's synthesis time goes: per up-sampling stage, the official PyTorch modules of that stage
(transposed conv, then its AMP residual blocks) timed against jaxvoc's, and within the AMP blocks the
dilated convolutions alone and the anti-aliased activations alone, same process, interleaved runs.

    python -m experiments.profile.bigvgan [--config NAME] [--frames 128] [--repeats 3]

Every row is one stage at its real shape for a mel of --frames frames; 'sum' is the sum of the rows (the
whole generator adds only conv_pre, activation_post and conv_post).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x")
    p.add_argument("--frames", type=int, default=128)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch

    from conversion import bigvgan as cb
    from conversion import report as rp
    from jaxvoc.models import bigvgan as jb
    from jaxvoc.nn.activations import Activation1d
    from jaxvoc.nn.conv import ConvTranspose1d, conv1d, fold_weight_norm

    model, cfg, params = cb.random_official(jb.BigVGANConfig.official(args.config).to_dict())
    params = fold_weight_norm(params)
    cb.remove_weight_norm_(model)
    model.eval()
    h = cfg
    n_k = len(h.resblock_kernel_sizes)
    beta = h.activation == "snakebeta"
    rng = np.random.default_rng(0)
    rows, tot = [], np.zeros(6)
    T = args.frames
    for i, (u, k) in enumerate(zip(h.upsample_rates, h.upsample_kernel_sizes)):
        cin = h.upsample_initial_channel // (2 ** i)
        ch = cin // 2
        x = (rng.standard_normal((1, T, cin)) * 0.5).astype(np.float32)
        T *= u
        xj, xt = jnp.asarray(x), torch.from_numpy(x.transpose(0, 2, 1).copy())

        # the whole stage
        stage_params = {n: params[n] for n in [f"ups_{i}_0"] + [f"resblocks_{i * n_k + j}" for j in range(n_k)]}

        def jax_stage(p, x, i=i, u=u, k=k, ch=ch):
            y = ConvTranspose1d(ch, k, stride=u, padding=(k - u) // 2).apply({"params": p[f"ups_{i}_0"]}, x)
            ys = [jb.AMPBlock1(ch, rk, tuple(rd), h.activation, h.snake_logscale, h.jaxvoc_antialias_filter)
                  .apply({"params": p[f"resblocks_{i * n_k + j}"]}, y)
                  for j, (rk, rd) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes))]
            return sum(ys) / n_k

        f_stage = jax.jit(jax_stage)

        def torch_stage(xt=xt, i=i):
            with torch.inference_mode():
                y = model.ups[i][0](xt)
                return sum(model.resblocks[i * n_k + j](y) for j in range(n_k)) / n_k

        # the AMP blocks' convolutions alone
        convs = []
        for j, (rk, rd) in enumerate(zip(h.resblock_kernel_sizes, h.resblock_dilation_sizes)):
            rb = stage_params[f"resblocks_{i * n_k + j}"]
            for m, d in enumerate(rd):
                convs.append((rb[f"convs1_{m}"], rk, d, model.resblocks[i * n_k + j].convs1[m]))
                convs.append((rb[f"convs2_{m}"], rk, 1, model.resblocks[i * n_k + j].convs2[m]))
        y = (rng.standard_normal((1, T, ch)) * 0.5).astype(np.float32)
        yj, yt = jnp.asarray(y), torch.from_numpy(y.transpose(0, 2, 1).copy())
        f_convs = jax.jit(lambda ps, y: [conv1d(y, q["kernel"], dilation=d, padding=(rk * d - d) // 2) + q["bias"]
                                         for q, (_, rk, d, _) in zip(ps, convs)])
        conv_params = [c[0] for c in convs]

        def torch_convs(yt=yt, convs=convs):
            with torch.inference_mode():
                return [c[3](yt) for c in convs]

        # the activations alone (two per dilation and block)
        acts = [(model.resblocks[i * n_k + j].activations[a], stage_params[f"resblocks_{i * n_k + j}"][f"activations_{a}"])
                for j in range(n_k) for a in range(len(model.resblocks[i * n_k + j].activations))]
        act = Activation1d(beta=beta, logscale=h.snake_logscale, filter=h.jaxvoc_antialias_filter)
        f_acts = jax.jit(lambda ps, y: [act.apply({"params": q}, y) for q in ps])
        act_params = [a[1] for a in acts]

        def torch_acts(yt=yt, acts=acts):
            with torch.inference_mode():
                return [a[0](yt) for a in acts]

        t = rp.time_alternating(
            [lambda: f_stage(stage_params, xj), torch_stage, lambda: f_convs(conv_params, yj), torch_convs,
             lambda: f_acts(act_params, yj), torch_acts], args.repeats, 1, [rp.jax_sync, lambda v: v] * 3)
        tot += np.array(t)
        rows.append((f"stage {i}: {cin}->{ch} ch, T={T}",
                     f"stage jax {t[0] * 1e3:7.1f} ms pt {t[1] * 1e3:7.1f} ms ({t[1] / t[0]:4.2f}) | "
                     f"{len(convs)} convs jax {t[2] * 1e3:7.1f} pt {t[3] * 1e3:7.1f} ({t[3] / t[2]:4.2f}) | "
                     f"{len(acts)} acts jax {t[4] * 1e3:6.1f} pt {t[5] * 1e3:6.1f} ({t[5] / t[4]:4.2f})"))
    t = tot
    rows.append(("sum", f"stage jax {t[0] * 1e3:7.1f} ms pt {t[1] * 1e3:7.1f} ms ({t[1] / t[0]:4.2f}) | "
                        f"convs jax {t[2] * 1e3:7.1f} pt {t[3] * 1e3:7.1f} ({t[3] / t[2]:4.2f}) | "
                        f"acts jax {t[4] * 1e3:6.1f} pt {t[5] * 1e3:6.1f} ({t[5] / t[4]:4.2f})"))
    rp.print_table(rows, f"{args.config}, {args.frames} frames, CPU float32, {rp.versions()} "
                         "(ratio = pytorch time / jax time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
