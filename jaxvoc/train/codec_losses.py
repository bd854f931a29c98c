"""NeMo's audio codec losses (nemo_toolkit 3.0.0 ``tts/losses/audio_codec_loss.py``, Apache-2.0), each computed as
NeMo computes it, reductions and length masks included:

* :func:`mel_loss` — ``MultiResolutionMelLoss``: per resolution, NeMo's ``FilterbankFeatures`` log-mel
  (``torch.stft(center=True)`` with **zero** padding, symmetric Hann window, ``sqrt(re^2 + im^2 + 1e-5)``,
  librosa mel filters without normalisation, ``log(mel + log_guard)``, frames at or past ``length // hop``
  set to 0) of both signals, then ``MaskedMAELoss`` / ``MaskedMSELoss``; averaged over resolutions;
* :func:`stft_loss` — ``MultiResolutionSTFTLoss``: ``log(sqrt(|STFT|^2 + 1e-5) + log_guard)`` (reflect
  padding, symmetric Hann), frames past ``length // hop + 1`` zeroed, ``MaskedMAELoss``, averaged;
* ``MaskedLoss``'s reduction (:func:`masked_mean`): the elementwise loss averaged over the feature axis, summed
  over frames, divided by the item's frame count (at least 1), averaged over the batch;
* :func:`time_domain_loss` — ``TimeDomainLoss``: the L1 of the waveforms summed over time, divided by the
  lengths (NeMo's validation loss);
* :func:`generator_squared_loss`, :func:`discriminator_squared_loss` — least squares, averaged over the
  score tensors (the discriminator's real and generated terms halved); BigVGAN's sums reused;
* :func:`feature_matching_loss` — ``FeatureMatchingLoss`` ("absolute"): mean |real - gen| per feature map,
  averaged over each discriminator's maps, then over discriminators.

Layouts are jaxvoc's (spectrograms ``[B, frames, bins]``); scores and feature maps as the discriminators of
:mod:`jaxvoc.models.codec_discriminators` return them. Absolute values have torch's gradient (0 at 0). The
scales (``mel_loss_l1_scale``, ``stft_loss_scale``, ...) are applied by the caller, as NeMo's model does.
"""

from __future__ import annotations

from typing import Sequence

import jax
import jax.numpy as jnp

from jaxvoc.dsp.stft import center_pad, mel_filterbank, stft
from jaxvoc.train.losses import discriminator_loss, generator_loss, l1, torch_abs

Array = jax.Array
SQRT_GUARD = 1e-5  # NeMo's FilterbankFeatures CONSTANT with use_grads=True, and STFTLoss's sqrt_guard default


def frame_mask(frames: int, lengths: Array) -> Array:
    """[B, frames, 1] booleans: frame t of item b is before ``lengths[b]``."""
    return (jnp.arange(frames)[None, :] < jnp.asarray(lengths)[:, None])[..., None]


def masked_mean(elementwise: Array, lengths: Array) -> Array:
    """NeMo's MaskedLoss reduction of an elementwise loss [B, T, D] (already zero past each item's length):
    mean over D, sum over T, / max(length, 1), mean over B."""
    per_item = jnp.sum(jnp.mean(elementwise, axis=2), axis=1) / jnp.maximum(jnp.asarray(lengths), 1)
    return jnp.mean(per_item)


def _guarded_magnitude(spec: Array, guard: float) -> Array:
    return jnp.sqrt(jnp.real(spec) ** 2 + jnp.imag(spec) ** 2 + guard)


def nemo_log_mel(audio: Array, lengths: Array, sample_rate: int, resolution: Sequence[int], n_mels: int,
                 log_guard: float = 1.0) -> tuple[Array, Array]:
    """NeMo's FilterbankFeatures as MultiResolutionMelLoss configures it -> (log-mel [B, frames, n_mels] with
    the frames at or past each item's ``mel_len`` set to 0, mel_len [B])."""
    n_fft, hop, win = resolution
    spec = stft(center_pad(audio, n_fft, "constant"), n_fft, hop, win, window="hann_symmetric")
    mag = _guarded_magnitude(spec, SQRT_GUARD)
    fb = jnp.asarray(mel_filterbank(sample_rate, n_fft, n_mels, 0.0, sample_rate / 2, norm=None), audio.dtype)
    mel = jnp.log(jnp.einsum("btf,mf->btm", mag, fb, precision=jax.lax.Precision.HIGHEST) + log_guard)
    mel_len = (jnp.asarray(lengths) + 2 * (n_fft // 2) - n_fft) // hop
    return jnp.where(frame_mask(mel.shape[1], mel_len), mel, 0.0), mel_len


def mel_loss(audio_real: Array, audio_gen: Array, audio_len: Array, sample_rate: int,
             resolutions: Sequence[Sequence[int]], mel_dims: Sequence[int],
             log_guard: float = 1.0) -> tuple[Array, Array]:
    """MultiResolutionMelLoss(real, gen, lengths) -> (L1 loss, L2 loss), each averaged over the resolutions
    (``loss_resolutions`` [n_fft, hop, win] and ``mel_loss_dims`` of the NeMo config)."""
    l1_total, l2_total = 0.0, 0.0
    for res, n_mels in zip(resolutions, mel_dims):
        real, mel_len = nemo_log_mel(audio_real, audio_len, sample_rate, res, n_mels, log_guard)
        gen, _ = nemo_log_mel(audio_gen, audio_len, sample_rate, res, n_mels, log_guard)
        diff = gen - real
        l1_total = l1_total + masked_mean(torch_abs(diff), mel_len)
        l2_total = l2_total + masked_mean(diff ** 2, mel_len)
    return l1_total / len(resolutions), l2_total / len(resolutions)


def stft_loss(audio_real: Array, audio_gen: Array, audio_len: Array, resolutions: Sequence[Sequence[int]],
              log_guard: float = 1.0, sqrt_guard: float = SQRT_GUARD) -> Array:
    """MultiResolutionSTFTLoss(real, gen, lengths): the masked L1 of log(|STFT| + log_guard), averaged."""
    total = 0.0
    for n_fft, hop, win in resolutions:
        spec_len = jnp.asarray(audio_len) // hop + 1

        def log_spec(audio):
            spec = stft(center_pad(audio, n_fft), n_fft, hop, win, window="hann_symmetric")
            s = jnp.log(_guarded_magnitude(spec, sqrt_guard) + log_guard)
            return jnp.where(frame_mask(s.shape[1], spec_len), s, 0.0)

        total = total + masked_mean(torch_abs(log_spec(audio_gen) - log_spec(audio_real)), spec_len)
    return total / len(resolutions)


def time_domain_loss(audio_real: Array, audio_gen: Array, audio_len: Array) -> Array:
    """TimeDomainLoss: ``MaskedMAELoss`` of the waveforms. As NeMo's, nothing is masked: every sample's |gen -
    real| is summed and divided by the item's length (past it both are zero in NeMo's step, the decoder's output
    masked, the real audio zero-padded)."""
    return masked_mean(torch_abs(audio_gen - audio_real)[..., None], audio_len)


def generator_squared_loss(scores_gen: Sequence[Array]) -> Array:
    """GeneratorSquaredLoss: mean over score tensors of mean((1 - D(gen))^2)."""
    _, terms = generator_loss(scores_gen)
    return sum(terms[1:], terms[0]) / len(terms)


def discriminator_squared_loss(scores_real: Sequence[Array], scores_gen: Sequence[Array]) -> Array:
    """DiscriminatorSquaredLoss: mean over score tensors of (mean((1 - D(real))^2) + mean(D(gen)^2)) / 2."""
    _, real, gen = discriminator_loss(scores_real, scores_gen)
    terms = [(r + g) / 2 for r, g in zip(real, gen)]
    return sum(terms[1:], terms[0]) / len(terms)


def feature_matching_loss(fmaps_real: Sequence[Sequence[Array]], fmaps_gen: Sequence[Sequence[Array]]) -> Array:
    """FeatureMatchingLoss ("absolute"): sum over discriminators of (sum over their maps of mean |real - gen|)
    / number of maps, divided by the number of discriminators."""
    loss = 0.0
    for fr, fg in zip(fmaps_real, fmaps_gen):
        for r, g in zip(fr, fg):
            loss = loss + l1(r - g) / len(fr)
    return loss / len(fmaps_real)
