"""BigVGAN's GAN objective (jaxvoc.models.discriminators, jaxvoc.train.losses, jaxvoc.train.bigvgan) against the official
code: bigvgan.discriminators (with nnAudio's CQT and torchaudio's Resample), bigvgan.loss, and one step of
bigvgan/train.py written with those modules (experiments/reference/bigvgan_train.py), from identical weights and batch;
and the conversion of train.py's discriminator/optimizer file.

Bounds (issue 5, item 5): every loss term within 1e-5 relative of the official float32 step; gradients of
the generator and of each discriminator with cosine similarity >= 0.99999 and relative norm difference
|‖g_jax‖ - ‖g_torch‖| / ‖g_torch‖ <= 1e-4. Where the official float32 step itself is further than that from
its float64 run (same weights and batch, `.double()`), the bound is twice that official rounding error
(``_bound``); with the configs below the official rounding stays well inside the issue's bounds, so the
issue's bounds are the ones that apply.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from conftest import run_cli, speech

LOSS_REL = 1e-5  # issue bound, loss terms
GRAD_COS = 1e-5  # issue bound on 1 - cosine similarity
GRAD_NORM = 1e-4  # issue bound, relative norm difference


def _bound(issue: float, official_rounding: float) -> float:
    """The issue's bound, or 2x the official float32-vs-float64 error where that is larger."""
    return max(issue, 2.0 * official_rounding)


def _segments(sr: int, length: int, batch: int = 2, short_last: bool = False) -> np.ndarray:
    """Speech segments; ``short_last``: the last one is a short clip zero-padded to ``length``, as the
    official loader pads short files (digital silence exercises the torch-style gradients at |x| = 0)."""
    a = speech(sr)
    starts = np.linspace(2000, len(a) - length - 2000, batch).astype(int)
    segs = np.stack([a[s:s + length] for s in starts])
    if short_last:
        segs[-1, length * 3 // 4:] = 0.0
    return segs


def _check_step(result: dict, frozen: bool) -> None:
    assert result["audio_snr_db"] > 110, result["audio_snr_db"]  # same generator output to float32 rounding
    for term, r in result["losses"].items():
        assert r["jax_vs_32"] <= _bound(LOSS_REL, r.get("32_vs_64", 0.0)), (term, r)
    groups = {"g"} if frozen else {"g", "mpd", "mrd"}
    assert set(result["grads"]) == groups
    for group, r in result["grads"].items():
        m, off = r["jax_vs_32"], r.get("32_vs_64", {"cos": 1.0, "norm_diff": 0.0})
        assert 1 - m["cos"] <= _bound(GRAD_COS, 1 - off["cos"]), (group, r)
        assert m["norm_diff"] <= _bound(GRAD_NORM, off["norm_diff"]), (group, r)
    if frozen:  # train.py: below freeze_step the generator sees the mel loss only
        assert result["losses"]["loss_gen_all"]["jax"] == result["losses"]["loss_mel"]["jax"]


@pytest.mark.parametrize("name,steps,freeze_step", [
    ("bigvgan_24khz_100band", (1, 0), 1),  # v1: MPD + MRD + single-scale mel L1; a free and a frozen step
    ("bigvgan_v2_24khz_100band_256x", (0,), 0),  # v2: MPD + CQTD + multi-scale mel loss
])
def test_objective_matches_official_train_step(name, steps, freeze_step):
    from experiments.reference.bigvgan_train import measure_equivalence, small_config

    config = small_config(name)
    # float64 reference for the free step (the frozen one is held to the issue's bounds as they stand)
    results = measure_equivalence(config, _segments(config["sampling_rate"], config["segment_size"], short_last=True),
                                  steps=steps, freeze_step=freeze_step, float64=[s for s in steps if s >= freeze_step])
    for step, result in results.items():
        _check_step(result, frozen=step < freeze_step)


@pytest.mark.parametrize("sr,hop,octaves,bpo", [
    (24000, 512, 9, 24),  # bigvgan_v2 24 kHz, first CQTD scale
    (44100, 256, 9, 36),  # 44 kHz, second scale
    (22050, 512, 4, 24),  # few octaves: nnAudio's early downsampling (factor 16) kicks in
])
def test_resample_and_cqt_match_official(sr, hop, octaves, bpo):
    import jax.numpy as jnp
    import torch
    import torchaudio
    from nnAudio import features

    from jaxvoc.models import discriminators as D

    x = _segments(sr, 8192)
    x[1] *= 0.3
    up = torchaudio.transforms.Resample(orig_freq=sr, new_freq=2 * sr)(torch.from_numpy(x)[:, None])[:, 0]
    up_j = np.asarray(D.resample(jnp.asarray(x), sr, 2 * sr))
    # same float32 kernel and taps; only the accumulation order of a 15-tap convolution can differ
    assert up_j.shape == tuple(up.shape)
    assert np.max(np.abs(up_j - up.numpy())) <= 1e-6 * np.max(np.abs(up.numpy()))

    # the transform DiscriminatorCQT builds: CQT2010v2(sr=2*fs, hop, n_bins, bins_per_octave, Complex, constant)
    cqt = features.cqt.CQT2010v2(sr=2 * sr, hop_length=hop, n_bins=bpo * octaves, bins_per_octave=bpo,
                                 output_format="Complex", pad_mode="constant", verbose=False)
    ref = cqt(up).numpy()  # [B, bins, frames, 2]
    plan = D.cqt_plan(float(2 * sr), hop, bpo * octaves, bpo)
    assert plan.downsample_factor == cqt.downsample_factor
    np.testing.assert_array_equal(plan.kernel_real[:, 0].T, cqt.cqt_kernels_real[:, 0].numpy())
    np.testing.assert_array_equal(plan.kernel_imag[:, 0].T, cqt.cqt_kernels_imag[:, 0].numpy())
    out = np.asarray(D.cqt(jnp.asarray(up.numpy()), plan)).transpose(0, 2, 1, 3)
    assert out.shape == ref.shape
    # float32 convolutions with up to 1024 taps, chained through 8 low-pass stages: accumulation-order
    # rounding of ~1e-6 relative (measured 6e-7); 1e-5 leaves a 15x margin and fails on any real error
    assert np.max(np.abs(out - ref)) <= 1e-5 * np.max(np.abs(ref))


def _train_folder(tmp_path, name: str):
    """An official model folder as train.py leaves it: config.json, bigvgan_generator.pt and the
    {'mpd','mrd','optim_g','optim_d','steps','epoch'} state of train.py's AdamW optimizers after a step (here
    with random gradients: the file's layout is what matters)."""
    import torch

    from conversion import bigvgan as cb
    from experiments.reference.bigvgan_train import official_discriminators, randomize_discriminator_, small_config

    config = small_config(name)
    folder = cb.write_official_folder(str(tmp_path / name), config, seed=3)
    generator = cb.official_model(config, torch.load(os.path.join(folder, cb.GENERATOR_FILE))["generator"])
    mpd, mrd = official_discriminators(config, seed=4)
    randomize_discriminator_(mpd, 5)
    randomize_discriminator_(mrd, 6)
    optim_g, optim_d = cb.official_optimizers(config, generator, mpd, mrd)
    _random_grads(generator, mpd, mrd, seed=7)
    optim_g.step()
    optim_d.step()
    torch.save({"generator": generator.state_dict()}, os.path.join(folder, cb.GENERATOR_FILE))
    state = {"mpd": mpd.state_dict(), "mrd": mrd.state_dict(), "optim_g": optim_g.state_dict(),
             "optim_d": optim_d.state_dict(), "steps": 7, "epoch": 2}
    return config, folder, generator, mpd, mrd, optim_g, optim_d, state


def _random_grads(*models, seed: int) -> None:
    import torch

    g = torch.Generator().manual_seed(seed)
    for model in models:
        for p in model.parameters():
            p.grad = torch.randn(p.shape, generator=g) * 1e-2


def test_convert_discriminator_file_round_trip(tmp_path):
    """train.py's discriminator/optimizer file -> `jaxvoc convert bigvgan` -> checkpoint trees; the converted
    AdamW moments continue the official optimizer: one more optax.adamw step from them gives the parameters
    one more torch AdamW step gives (same gradients)."""
    import jax
    import optax
    import torch

    from conversion import bigvgan as cb
    from conversion import common
    from jaxvoc.io import checkpoint
    from jaxvoc.train.bigvgan import load_adam_moments

    config, folder, generator, mpd, mrd, optim_g, optim_d, state = _train_folder(tmp_path, "bigvgan_24khz_100band")
    assert cb.convert(folder).extra == {}  # no discriminator file: the generator-only result, as before
    torch.save(state, os.path.join(folder, cb.DISCRIMINATOR_FILE))

    out = tmp_path / "ckpt"
    proc = run_cli("convert", "bigvgan", folder, str(out))
    assert proc.returncode == 0, proc.stderr
    meta = checkpoint.read_meta(str(out))
    assert set(meta["trees"]) == {"params", "discriminator", "opt_state_g", "opt_state_d", "train_progress"}
    params_g = checkpoint.load_tree(str(out))
    disc = checkpoint.load_tree(str(out), "discriminator")
    opt_g = checkpoint.load_tree(str(out), "opt_state_g")
    opt_d = checkpoint.load_tree(str(out), "opt_state_d")
    progress = checkpoint.load_tree(str(out), "train_progress")
    assert int(progress["steps"]) == 7 and int(progress["epoch"]) == 2
    assert int(opt_d["count"]) == 1 and int(opt_g["count"]) == 1

    # the saved weights, leaf by leaf, through the torch-name -> path map
    for name, model in (("mpd", mpd), ("mrd", mrd)):
        flat = common.flatten(disc[name])
        sd = model.state_dict()
        assert len(flat) == len(sd)
        for key, value in sd.items():
            np.testing.assert_array_equal(flat[common.torch_key_to_path(key)], common.to_jax_layout(value.numpy()))

    # continue both optimizers by one step with the same gradients
    groups = {"g": (generator, optim_g, params_g, opt_g), "d": (None, optim_d, disc, opt_d)}
    _random_grads(generator, mpd, mrd, seed=0)
    for tag, (_, optim, params, moments) in groups.items():
        hp = {k: float(moments[k]) for k in ("lr", "b1", "b2", "eps", "weight_decay")}
        assert hp["weight_decay"] == pytest.approx(0.01) and hp["eps"] == pytest.approx(1e-8)  # torch defaults
        tx = optax.adamw(hp["lr"], b1=hp["b1"], b2=hp["b2"], eps=hp["eps"], weight_decay=hp["weight_decay"])
        opt_state = load_adam_moments(tx.init(params), moments)
        if tag == "g":
            grads = cb.convert_state_dict({n: p.grad for n, p in generator.named_parameters()},
                                          cb.BigVGANConfig.from_dict(config), "grads")
        else:
            dcfg = cb.discriminator_config(config)
            grads = {n: cb.convert_discriminator_state_dict({k: p.grad for k, p in m.named_parameters()}, dcfg, n,
                                                            "grads") for n, m in (("mpd", mpd), ("mrd", mrd))}
        step = jax.jit(lambda gr, st, pa: optax.apply_updates(pa, tx.update(gr, st, pa)[0]))
        groups[tag] = step(grads, opt_state, params)
        optim.step()
    expected = {"g": cb.convert_state_dict(generator.state_dict(), cb.BigVGANConfig.from_dict(config), "after"),
                "d": {n: cb.convert_discriminator_state_dict(m.state_dict(), cb.discriminator_config(config), n,
                                                             "after") for n, m in (("mpd", mpd), ("mrd", mrd))}}
    for tag in ("g", "d"):
        a = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(groups[tag])])
        b = np.concatenate([np.ravel(v) for v in jax.tree_util.tree_leaves(expected[tag])])
        # float32 AdamW arithmetic in two orders: a few ulps of each parameter
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_discriminator_file_errors(tmp_path):
    """A discriminator file that does not fit the config, and unsupported settings, fail with one line
    naming the problem."""
    import torch

    from conversion import bigvgan as cb
    from experiments.reference.bigvgan_train import official_discriminators, small_config
    from jaxvoc.errors import UserError

    config = small_config("bigvgan_v2_24khz_100band_256x")
    folder = cb.write_official_folder(str(tmp_path / "m"), config, seed=1)
    mpd, mrd = official_discriminators(dict(config, cqtd_filters=4, cqtd_max_filters=8))
    torch.save({"mpd": mpd.state_dict(), "mrd": mrd.state_dict()}, os.path.join(folder, cb.DISCRIMINATOR_FILE))
    with pytest.raises(UserError, match="does not fit the model config.*wrong shape"):
        cb.convert(folder)
    torch.save({"generator": {}}, os.path.join(folder, cb.DISCRIMINATOR_FILE))
    with pytest.raises(UserError, match="expected train.py's discriminator file"):
        cb.convert(folder)
    from jaxvoc.models.discriminators import DiscriminatorConfig

    for bad, needle in (({"use_spectral_norm": True}, "spectral"), ({"use_mbd_instead_of_mrd": True}, "MultiBand"),
                        ({"cqtd_hop_lengths": [100, 128]}, "divisible")):
        with pytest.raises(UserError, match=needle):
            DiscriminatorConfig.from_dict(dict(config, **bad))
