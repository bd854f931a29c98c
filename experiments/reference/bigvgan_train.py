"""The official PyTorch side of BigVGAN training, for tests, equivalence measurements and benchmarks: the
official discriminators, a batch built as the official MelDataset builds one, and ONE step of the official
``bigvgan/train.py`` loop (discriminator update, then generator update, in its order and with its loss
composition), written with the official modules (bigvgan.discriminators, bigvgan.loss, bigvgan.meldataset).
"""

from __future__ import annotations

import contextlib
from typing import Any, Sequence

import numpy as np


from conversion.bigvgan import official_discriminators  # noqa: F401 (re-exported: tests and experiments use it here)


def _attrdict(config: dict):
    from bigvgan.env import AttrDict

    return AttrDict(dict(config))


def randomize_discriminator_(model, seed: int) -> None:
    """Weight-norm gains away from ||v|| (the official init makes them equal, which hides g/v mix-ups)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("weight_g") or name.endswith("original0"):
                p.mul_(0.5 + torch.rand(p.shape, generator=g))


def official_batch(config: dict, segments: np.ndarray):
    """(x, y, y_mel) as MelDataset.__getitem__ + the DataLoader give them for fixed audio segments [B, T]
    at the config's sampling rate: volume-normalised audio (librosa.util.normalize * 0.95), mel with fmax
    (generator input), mel with fmax_for_loss (v1's mel-loss target). Torch float32 tensors."""
    import librosa
    import torch
    from bigvgan.meldataset import mel_spectrogram

    h = _attrdict(config)
    xs, ys, ms = [], [], []
    for seg in np.asarray(segments, np.float32):
        audio = torch.FloatTensor(librosa.util.normalize(seg) * 0.95).unsqueeze(0)
        args = (h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin)
        xs.append(mel_spectrogram(audio, *args, h.fmax, center=False).squeeze())
        ms.append(mel_spectrogram(audio, *args, h.get("fmax_for_loss"), center=False).squeeze())
        ys.append(audio.squeeze(0))
    return torch.stack(xs), torch.stack(ys), torch.stack(ms)


@contextlib.contextmanager
def float64_mel_constants():
    """Lets the official mel code run in float64 (for rounding reference runs): its float32 mel bases and
    windows are used as float64 (the same values), instead of failing on mixed-dtype matmuls."""
    import torch
    from bigvgan import loss as L
    from bigvgan import meldataset as M

    saved_cache = (dict(M.mel_basis_cache), dict(M.hann_window_cache))
    saved_get = L.MultiScaleMelSpectrogramLoss.__dict__["get_mel_filters"]
    orig_mel = M.mel_spectrogram

    def mel64(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax=None, center=False):
        key = f"{n_fft}_{num_mels}_{sampling_rate}_{hop_size}_{win_size}_{fmin}_{fmax}_{y.device}"
        if key not in M.mel_basis_cache or M.mel_basis_cache[key].dtype != y.dtype:
            basis = M.librosa_mel_fn(sr=sampling_rate, n_fft=n_fft, n_mels=num_mels, fmin=fmin, fmax=fmax)
            M.mel_basis_cache[key] = torch.from_numpy(basis).float().to(y.dtype)
            M.hann_window_cache[key] = torch.hann_window(win_size).to(y.dtype)
        return orig_mel(y, n_fft, num_mels, sampling_rate, hop_size, win_size, fmin, fmax, center)

    def filters64(sr, n_fft, n_mels, fmin, fmax):
        return saved_get.__func__(sr, n_fft, n_mels, fmin, fmax).astype(np.float64)

    M.mel_spectrogram = mel64
    L.MultiScaleMelSpectrogramLoss.get_mel_filters = staticmethod(filters64)
    try:
        yield mel64
    finally:
        M.mel_spectrogram = orig_mel
        L.MultiScaleMelSpectrogramLoss.get_mel_filters = saved_get
        M.mel_basis_cache.clear()
        M.mel_basis_cache.update(saved_cache[0])
        M.hann_window_cache.clear()
        M.hann_window_cache.update(saved_cache[1])


def _grads(model) -> dict[str, Any]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def official_train_step(config: dict, generator, mpd, mrd, x, y, y_mel, *, steps: int = 0, freeze_step: int = 0,
                        optim_g=None, optim_d=None, mel_fn=None) -> dict:
    """One iteration of the official train.py loop body (same statements, same order, no logging): returns
    the loss terms (floats), the raw gradients (before clipping) of the generator and of each discriminator
    ({name: tensor}), the clipped gradient norms, and y_g_hat. Optimizers default to train.py's AdamW(
    learning_rate, betas=[adam_b1, adam_b2]) (optim_d over chain(mrd, mpd)); the models are updated in place.
    ``mel_fn``: bigvgan.meldataset.mel_spectrogram unless given (float64 runs pass the float64 wrapper)."""
    import torch
    import torch.nn.functional as F
    from bigvgan import loss as L
    from bigvgan import meldataset as M

    h = _attrdict(config)
    mel_fn = mel_fn or M.mel_spectrogram
    if optim_g is None or optim_d is None:
        from conversion.bigvgan import official_optimizers

        default_g, default_d = official_optimizers(config, generator, mpd, mrd)
        optim_g = default_g if optim_g is None else optim_g
        optim_d = default_d if optim_d is None else optim_d
    generator.train()
    mpd.train()
    mrd.train()
    out: dict = {}

    y = y.unsqueeze(1)
    y_g_hat = generator(x)
    y_g_hat_mel = mel_fn(y_g_hat.squeeze(1), h.n_fft, h.num_mels, h.sampling_rate, h.hop_size, h.win_size, h.fmin,
                         h.fmax_for_loss)

    optim_d.zero_grad()
    y_df_hat_r, y_df_hat_g, _, _ = mpd(y, y_g_hat.detach())
    loss_disc_f, _, _ = L.discriminator_loss(y_df_hat_r, y_df_hat_g)
    y_ds_hat_r, y_ds_hat_g, _, _ = mrd(y, y_g_hat.detach())
    loss_disc_s, _, _ = L.discriminator_loss(y_ds_hat_r, y_ds_hat_g)
    loss_disc_all = loss_disc_s + loss_disc_f
    clip_grad_norm = h.get("clip_grad_norm", 1000.0)
    if steps >= freeze_step:
        loss_disc_all.backward()
        out["grads_mpd"], out["grads_mrd"] = _grads(mpd), _grads(mrd)
        out["grad_norm_mpd"] = float(torch.nn.utils.clip_grad_norm_(mpd.parameters(), clip_grad_norm))
        out["grad_norm_mrd"] = float(torch.nn.utils.clip_grad_norm_(mrd.parameters(), clip_grad_norm))
        optim_d.step()

    optim_g.zero_grad()
    lambda_melloss = h.get("lambda_melloss", 45.0)
    if h.get("use_multiscale_melloss", False):
        fn_mel_loss_multiscale = L.MultiScaleMelSpectrogramLoss(sampling_rate=h.sampling_rate)
        loss_mel = fn_mel_loss_multiscale(y, y_g_hat) * lambda_melloss
    else:
        loss_mel = F.l1_loss(y_mel, y_g_hat_mel) * lambda_melloss
    y_df_hat_r, y_df_hat_g, fmap_f_r, fmap_f_g = mpd(y, y_g_hat)
    loss_fm_f = L.feature_loss(fmap_f_r, fmap_f_g)
    loss_gen_f, _ = L.generator_loss(y_df_hat_g)
    y_ds_hat_r, y_ds_hat_g, fmap_s_r, fmap_s_g = mrd(y, y_g_hat)
    loss_fm_s = L.feature_loss(fmap_s_r, fmap_s_g)
    loss_gen_s, _ = L.generator_loss(y_ds_hat_g)
    if steps >= freeze_step:
        loss_gen_all = loss_gen_s + loss_gen_f + loss_fm_s + loss_fm_f + loss_mel
    else:
        loss_gen_all = loss_mel
    loss_gen_all.backward()
    out["grads_g"] = _grads(generator)
    out["grad_norm_g"] = float(torch.nn.utils.clip_grad_norm_(generator.parameters(), clip_grad_norm))
    optim_g.step()

    out["losses"] = {k: float(v) for k, v in dict(
        loss_disc_f=loss_disc_f, loss_disc_s=loss_disc_s, loss_disc_all=loss_disc_all, loss_mel=loss_mel,
        loss_fm_f=loss_fm_f, loss_gen_f=loss_gen_f, loss_fm_s=loss_fm_s, loss_gen_s=loss_gen_s,
        loss_gen_all=loss_gen_all).items()}
    out["y_g_hat"] = y_g_hat.detach()
    out["optim_g"], out["optim_d"] = optim_g, optim_d
    return out


# ----------------------------------------------------------------------------------------------------------
# Equivalence of jaxvoc's BigVGANObjective with the official step (tests/test_bigvgan_gan.py,
# experiments/equivalence/gan.py)


def rel_err(a: float, b: float) -> float:
    return abs(float(a) - float(b)) / max(abs(float(b)), 1e-30)


def grad_metrics(test: dict, ref: dict) -> dict:
    """Over the concatenation of all leaves (same paths in both flat dicts): cosine similarity, relative norm
    difference |‖a‖-‖b‖|/‖b‖, and relative error ‖a-b‖/‖b‖ (float64)."""
    keys = sorted(ref)
    if sorted(test) != keys:
        raise ValueError(f"gradient trees differ: {sorted(set(test) ^ set(keys))[:5]}")
    a = np.concatenate([np.asarray(test[k], np.float64).ravel() for k in keys])
    b = np.concatenate([np.asarray(ref[k], np.float64).ravel() for k in keys])
    na, nb = np.linalg.norm(a), np.linalg.norm(b)
    return {"cos": float(a @ b / (na * nb)), "norm_diff": float(abs(na - nb) / nb),
            "rel_err": float(np.linalg.norm(a - b) / nb), "size": int(a.size)}


def _flat_np(tree) -> dict:
    from conversion import common

    return {k: np.asarray(v) for k, v in common.flatten(tree).items()}


def _torch_grads_to_trees(out: dict, config: dict) -> dict:
    """Official gradients ({torch name: tensor}) -> flat {jax path: array} per group, via the converters."""
    from conversion import bigvgan as cb
    from jaxvoc.models.bigvgan import BigVGANConfig

    cfg = BigVGANConfig.from_dict(dict(config))
    dcfg = cb.discriminator_config(cfg)
    res = {"g": _flat_np(cb.convert_state_dict(out["grads_g"], cfg, "official grads"))}
    for name in ("mpd", "mrd"):
        if f"grads_{name}" in out:
            res[name] = _flat_np(cb.convert_discriminator_state_dict(out[f"grads_{name}"], dcfg, name,
                                                                     "official grads"))
    return res


def _snapshot(model) -> dict:
    """A state dict that the model's later in-place updates do not reach (conversion shares memory)."""
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def measure_equivalence(config: dict, segments: np.ndarray, *, seed: int = 0, steps: Sequence[int] = (0,),
                        freeze_step: int = 0, float64: bool | Sequence[int] = True) -> dict:
    """For each value of ``steps`` (train.py's step counter; below ``freeze_step`` the step is frozen): one
    official train.py step in float32 (and in float64 when ``float64`` is True or lists that step value), and
    the same step through
    jaxvoc.train.bigvgan.BigVGANObjective in the protocol's order, from identical weights and batch. The
    generator loss of both sides uses the discriminators the official optim_d.step() produced (converted), so
    losses and gradients are compared, not an optimizer. The jitted JAX functions are shared by the steps.
    Returns {step: {'losses': {term: {'jax', 'torch32', 'torch64', 'jax_vs_32', '32_vs_64', 'jax_vs_64'}},
    'grads': {group: {'jax_vs_32': metrics, '32_vs_64': ..., 'jax_vs_64': ...}}, 'audio_snr_db': float}}
    with groups 'g', 'mpd', 'mrd' (no discriminator gradients for a frozen step)."""
    import jax
    import jax.numpy as jnp

    from jaxvoc.train.bigvgan import BigVGANObjective

    obj = BigVGANObjective(config, freeze_step=freeze_step)
    fns = {
        "gen": jax.jit(lambda p, b: jax.vjp(lambda q: obj.generate(q, b), p)),
        "vjp": jax.jit(lambda v, d: v(d)[0]),
        "d_step": jax.jit(jax.value_and_grad(obj.discriminator_loss, has_aux=True)),
        "g_step": jax.jit(jax.value_and_grad(obj.generator_loss, argnums=2, has_aux=True)),
    }
    x, y, y_mel = official_batch(config, segments)
    with64 = (lambda st: bool(float64)) if isinstance(float64, bool) else (lambda st: st in tuple(float64))
    return {int(st): _measure_step(config, obj, fns, x, y, y_mel, seed, int(st), freeze_step, with64(st))
            for st in steps}


def _measure_step(config, obj, fns, x, y, y_mel, seed, steps, freeze_step, float64) -> dict:
    import jax
    import jax.numpy as jnp

    from conversion import bigvgan as cb
    from conversion.report import snr_db

    cfg, dcfg = obj.config, obj.d_config
    generator = cb.official_model(config, seed=seed)
    cb.randomize_(generator, seed)
    mpd, mrd = official_discriminators(config, seed=seed + 1)
    randomize_discriminator_(mpd, seed + 2)
    randomize_discriminator_(mrd, seed + 3)
    params_g = cb.convert_state_dict(_snapshot(generator), cfg, "official generator")
    params_d = {name: cb.convert_discriminator_state_dict(_snapshot(m), dcfg, name, "official " + name)
                for name, m in (("mpd", mpd), ("mrd", mrd))}

    runs = {}
    if float64:
        g64 = cb.official_model(config, _snapshot(generator)).double()
        mpd64, mrd64 = official_discriminators(config)
        mpd64.load_state_dict(_snapshot(mpd))
        mrd64.load_state_dict(_snapshot(mrd))
        mpd64, mrd64 = mpd64.double(), mrd64.double()
        with float64_mel_constants() as mel64:
            runs["torch64"] = official_train_step(config, g64, mpd64, mrd64, x.double(), y.double(), y_mel.double(),
                                                  steps=steps, freeze_step=freeze_step, mel_fn=mel64)
    runs["torch32"] = official_train_step(config, generator, mpd, mrd, x, y, y_mel, steps=steps,
                                          freeze_step=freeze_step)
    new_params_d = {name: cb.convert_discriminator_state_dict(_snapshot(m), dcfg, name, "updated " + name)
                    for name, m in (("mpd", mpd), ("mrd", mrd))}

    # the protocol's step: generate (vjp), discriminator loss on stop_gradient(y_g) unless frozen, generator
    # loss with the updated discriminators, generator gradient = vjp(d loss / d y_g)
    batch = {"audio": jnp.asarray(y.numpy()), "mel": jnp.asarray(x.numpy().transpose(0, 2, 1))}
    y_g, vjp = fns["gen"](params_g, batch)
    (_, aux_d), grads_d = fns["d_step"](params_d, batch, jax.lax.stop_gradient(y_g))
    aux = dict(aux_d)
    grads = {name: _flat_np(grads_d[name]) for name in ("mpd", "mrd")} if steps >= freeze_step else {}
    (_, aux_g), dy = fns["g_step"](new_params_d, batch, y_g, jnp.asarray(steps))
    aux.update(aux_g)
    grads["g"] = _flat_np(fns["vjp"](vjp, dy))

    ref = {name: _torch_grads_to_trees(out, config) for name, out in runs.items()}
    result = {"losses": {}, "grads": {},
              "audio_snr_db": snr_db(np.asarray(y_g), runs["torch32"]["y_g_hat"][:, 0].numpy())}
    for term, v32 in runs["torch32"]["losses"].items():
        row = {"jax": float(aux[term]), "torch32": v32, "jax_vs_32": rel_err(aux[term], v32)}
        if "torch64" in runs:
            v64 = runs["torch64"]["losses"][term]
            row.update(torch64=v64, **{"32_vs_64": rel_err(v32, v64), "jax_vs_64": rel_err(aux[term], v64)})
        result["losses"][term] = row
    for group in grads:
        row = {"jax_vs_32": grad_metrics(grads[group], ref["torch32"][group])}
        if "torch64" in ref:
            row["32_vs_64"] = grad_metrics(ref["torch32"][group], ref["torch64"][group])
            row["jax_vs_64"] = grad_metrics(grads[group], ref["torch64"][group])
        result["grads"][group] = row
    return result


def small_config(name: str, **overrides) -> dict:
    """An official config (e.g. 'bigvgan_24khz_100band', v1 with MRD, or 'bigvgan_v2_24khz_100band_256x', v2
    with CQTD) shrunk for CPU tests: a two-stage generator (hop 64, n_fft 256), MPD at 1/8 width with periods
    [2, 3], MRD with the official resolutions, CQTD with 8-16 filters over two scales of 9 and 8 octaves;
    loss settings (lambda_melloss, multi-scale mel loss, fmax_for_loss) as published."""
    import json

    from jaxvoc.models.bigvgan import official_config_path

    with open(official_config_path(name)) as f:
        cfg = json.load(f)
    cfg.update(upsample_rates=[8, 8], upsample_kernel_sizes=[16, 16], upsample_initial_channel=16, n_fft=256,
               win_size=256, hop_size=64, num_mels=40, resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]],
               discriminator_channel_mult=0.125, mpd_reshapes=[2, 3], segment_size=4096)
    if cfg.get("use_cqtd_instead_of_mrd"):
        cfg.update(cqtd_filters=8, cqtd_max_filters=16, cqtd_hop_lengths=[256, 128], cqtd_n_octaves=[9, 8],
                   cqtd_bins_per_octaves=[24, 36])
    cfg.update(overrides)
    return cfg


def official_discriminator_config(name: str, **overrides) -> dict:
    """An official config with its discriminators and losses exactly as published and only the generator
    shrunk (upsample [8, 8, 4] or [8, 8, 8], 32 channels, one resblock kernel; mel settings and hop
    unchanged) and segment_size 8192, for measurements on CPU."""
    import json

    from jaxvoc.models.bigvgan import official_config_path

    with open(official_config_path(name)) as f:
        cfg = json.load(f)
    rates = [8, 8, 4] if cfg["hop_size"] == 256 else [8, 8, 8]
    cfg.update(upsample_rates=rates, upsample_kernel_sizes=[2 * r for r in rates], upsample_initial_channel=32,
               resblock_kernel_sizes=[3], resblock_dilation_sizes=[[1, 3]], segment_size=8192)
    cfg.update(overrides)
    return cfg
