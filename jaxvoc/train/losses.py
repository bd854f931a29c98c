"""GAN vocoder losses, following NVIDIA's ``bigvgan/loss.py`` (MIT): least-squares GAN losses, feature
matching, the multi-scale log-mel L1 loss of BigVGAN-v2 (descript-audio-codec's) and the single-scale log-mel
L1 of v1. Every function returns a scalar (float32) and is differentiable; the log-mels come from
:mod:`jaxvoc.dsp.stft`.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxvoc.dsp.stft import MelConfig, mel_spectrogram

Array = jax.Array


def torch_abs(diff: Array) -> Array:
    """|diff| elementwise with torch's gradient sign(diff), 0 where diff == 0 (jnp.abs has 1 there): L1 terms
    between identical values (e.g. mels clamped at clip_val in both signals) pass no gradient, as in torch."""
    return diff * jax.lax.stop_gradient(jnp.sign(diff))


def l1(diff: Array) -> Array:
    """mean |diff| with torch's gradient (:func:`torch_abs`)."""
    return jnp.mean(torch_abs(diff))


def discriminator_loss(real_outputs: Sequence[Array], fake_outputs: Sequence[Array]) -> tuple[Array, list, list]:
    """sum_d mean((1 - D(y))^2) + mean(D(y_hat)^2); also the per-discriminator real and fake terms."""
    loss, r_losses, g_losses = 0.0, [], []
    for dr, dg in zip(real_outputs, fake_outputs):
        r = jnp.mean((1 - dr) ** 2)
        g = jnp.mean(dg ** 2)
        loss = loss + r + g
        r_losses.append(r)
        g_losses.append(g)
    return loss, r_losses, g_losses


def generator_loss(fake_outputs: Sequence[Array]) -> tuple[Array, list]:
    """sum_d mean((1 - D(y_hat))^2); also the per-discriminator terms."""
    losses = [jnp.mean((1 - dg) ** 2) for dg in fake_outputs]
    return sum(losses[1:], losses[0]), losses


def feature_loss(fmap_r: Sequence[Sequence[Array]], fmap_g: Sequence[Sequence[Array]]) -> Array:
    """2 * sum over discriminators and layers of mean |real - fake| (the official lambda 2 built in)."""
    loss = 0.0
    for dr, dg in zip(fmap_r, fmap_g):
        for rl, gl in zip(dr, dg):
            loss = loss + l1(rl - gl)
    return loss * 2


def mel_l1_loss(y: Array, y_hat: Array, cfg: MelConfig) -> Array:
    """v1's mel loss before lambda_melloss: mean |logmel(y) - logmel(y_hat)| with BigVGAN's front-end
    (``cfg`` with fmax = fmax_for_loss)."""
    return l1(mel_spectrogram(y, cfg) - mel_spectrogram(y_hat, cfg))


def multiscale_mel_configs(sampling_rate: int, n_mels: Sequence[int] = (5, 10, 20, 40, 80, 160, 320),
                           window_lengths: Sequence[int] = (32, 64, 128, 256, 512, 1024, 2048),
                           mel_fmin: Sequence[float] = (0,) * 7, mel_fmax: Sequence[float | None] = (None,) * 7,
                           clamp_eps: float = 1e-5) -> list[MelConfig]:
    """The front-ends of MultiScaleMelSpectrogramLoss (its defaults): periodic Hann windows of length w, hop
    w//4, torch.stft(center=True) reflect padding, |STFT| without epsilon, log(clamp(mel, clamp_eps))."""
    return [MelConfig(sampling_rate=sampling_rate, n_fft=w, num_mels=n, hop_size=w // 4, win_size=w, fmin=lo,
                      fmax=hi, padding="center", magnitude_eps=0.0, clip_val=clamp_eps)
            for n, w, lo, hi in zip(n_mels, window_lengths, mel_fmin, mel_fmax)]


def multiscale_mel_loss(y_hat: Array, y: Array, configs: Sequence[MelConfig], log_weight: float = 1.0,
                        mag_weight: float = 0.0, pow: float = 1.0) -> Array:
    """MultiScaleMelSpectrogramLoss(x=y_hat, y=y) before lambda_melloss: over the scales, log_weight * L1 of
    the log10 mels (plus mag_weight times the same L1, as the official code computes it)."""
    ln10 = jnp.log(jnp.float32(10.0))
    loss = 0.0
    for cfg in configs:
        x_log = mel_spectrogram(y_hat, cfg) * pow / ln10 if pow != 1 else mel_spectrogram(y_hat, cfg) / ln10
        y_log = mel_spectrogram(y, cfg) * pow / ln10 if pow != 1 else mel_spectrogram(y, cfg) / ln10
        dist = l1(x_log - y_log)
        loss = loss + log_weight * dist
        if mag_weight:
            loss = loss + mag_weight * dist
    return loss
