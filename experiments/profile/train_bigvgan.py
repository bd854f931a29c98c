"""Where a BigVGAN train step's time goes: the generator, each discriminator group and the mel loss, each
forward + backward, jaxvoc (jit) against the official PyTorch modules, same process, interleaved runs.

    python -m experiments.profile.train_bigvgan [--config NAME] [--segment 8192] [--repeats 3]

Rows (batch 1, random weights; speed does not depend on the values): generator forward + backward of a
random projection of its output; each discriminator on real and fake audio, forward + backward to its
parameters and to the fake input (what the two updates of a step need between them, counted once); the
mel loss forward + backward to the generated audio.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import sys

import numpy as np



def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x")
    p.add_argument("--segment", type=int, default=8192)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args(argv)

    import jax
    import jax.numpy as jnp
    import torch
    from bigvgan import loss as official_loss

    from conversion import bigvgan as cb
    from conversion import report as rp
    from experiments.reference.bigvgan_train import official_discriminators
    from jaxvoc.models.bigvgan import BigVGANConfig
    from jaxvoc.train.bigvgan import BigVGANObjective

    h = BigVGANConfig.official(args.config).to_dict()
    gen = cb.official_model(h, seed=0)
    mpd, mrd = official_discriminators(h, seed=1)
    obj = BigVGANObjective(h)
    rng = np.random.default_rng(0)
    T = args.segment
    frames = T // h["hop_size"]
    mel = rng.normal(-5, 2, (1, h["num_mels"], frames)).astype(np.float32)
    y = (rng.standard_normal((1, T)) * 0.1).astype(np.float32)
    y_g = (rng.standard_normal((1, T)) * 0.1).astype(np.float32)
    proj = rng.standard_normal((1, T)).astype(np.float32)
    batch = {"mel": jnp.asarray(mel.transpose(0, 2, 1)), "audio": jnp.asarray(y)}
    params_g, params_d = obj.init(jax.random.PRNGKey(0), batch)
    yj, ygj, pj = jnp.asarray(y), jnp.asarray(y_g), jnp.asarray(proj)
    mel_t, y_t = torch.from_numpy(mel), torch.from_numpy(y)[:, None]
    proj_t = torch.from_numpy(proj)[:, None]

    f_gen = jax.jit(jax.grad(lambda pg: jnp.sum(obj.generate(pg, batch) * pj)))

    def t_gen():
        gen.zero_grad()
        (gen(mel_t) * proj_t).sum().backward()

    def d_loss(name):
        def loss(pd, yg):
            (real, fake), (fr, fg) = obj._discriminate(name, pd, yj, yg, joint=False)
            return sum(jnp.sum(o) for o in real + fake) + sum(jnp.sum(f) for fm in fr + fg for f in fm)
        return jax.jit(jax.grad(loss, argnums=(0, 1)))

    def t_d(model):
        def run():
            model.zero_grad()
            yg = torch.from_numpy(y_g)[:, None].requires_grad_(True)
            rr, gg, fr, fg = model(y_t, yg)
            (sum(o.sum() for o in rr + gg) + sum(f.sum() for fm in fr + fg for f in fm)).backward()
        return run

    f_mpd, f_mrd = d_loss("mpd"), d_loss("mrd")
    f_mel = jax.jit(jax.grad(lambda yg: obj.mel_loss(yj, yg)))
    if h.get("use_multiscale_melloss", False):
        mel_fn = official_loss.MultiScaleMelSpectrogramLoss(sampling_rate=h["sampling_rate"])
    else:
        mel_fn = None

    def t_mel():
        yg = torch.from_numpy(y_g)[:, None].requires_grad_(True)
        if mel_fn is not None:
            mel_fn(y_t, yg).backward()
        else:
            from bigvgan.meldataset import mel_spectrogram
            a = mel_spectrogram(yg[:, 0], h["n_fft"], h["num_mels"], h["sampling_rate"], h["hop_size"],
                                h["win_size"], h["fmin"], h["fmax_for_loss"])
            b = mel_spectrogram(y_t[:, 0], h["n_fft"], h["num_mels"], h["sampling_rate"], h["hop_size"],
                                h["win_size"], h["fmin"], h["fmax_for_loss"])
            torch.nn.functional.l1_loss(a, b).backward()

    jobs = [("generator fwd+bwd", lambda: f_gen(params_g), t_gen),
            ("MPD fwd+bwd (params, fake input)", lambda: f_mpd(params_d["mpd"], ygj), t_d(mpd)),
            (f"{type(mrd).__name__} fwd+bwd", lambda: f_mrd(params_d["mrd"], ygj), t_d(mrd)),
            ("mel loss fwd+bwd", lambda: f_mel(ygj), t_mel)]
    fns, syncs = [], []
    for _, a, b in jobs:
        fns += [a, b]
        syncs += [rp.jax_sync, lambda v: v]
    with contextlib.redirect_stdout(io.StringIO()):
        t = rp.time_alternating(fns, args.repeats, 1, syncs)
    rows = [(name, f"jax {t[2 * i] * 1e3:8.0f} ms  pytorch {t[2 * i + 1] * 1e3:8.0f} ms  ratio {t[2 * i + 1] / t[2 * i]:5.2f}")
            for i, (name, _, _) in enumerate(jobs)]
    rows.append(("sum", f"jax {sum(t[0::2]) * 1e3:8.0f} ms  pytorch {sum(t[1::2]) * 1e3:8.0f} ms  ratio "
                        f"{sum(t[1::2]) / sum(t[0::2]):5.2f}"))
    rp.print_table(rows, f"{args.config}, segment {T}, batch 1, CPU float32, {rp.versions()} "
                         "(ratio = pytorch time / jax time)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
