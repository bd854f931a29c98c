"""NeMo's codec GAN (nemo_toolkit 3.0.0 ``AudioCodecModel.training_step``, Apache-2.0) as a ``GanObjective`` for
the generic GAN step of :mod:`jaxvoc.train.objective`:

- generator: NeMo's ``_process_batch`` (:func:`jaxvoc.models.codec_train.generator_forward`: encoder,
  straight-through FSQ, decoder) on the batch zero-padded to whole frames, the lengths rounded up to whole
  frames (``prepare``: what NeMo's losses mask with);
- discriminators: NeMo's ``Discriminator`` over its configured members
  (:class:`jaxvoc.models.codec_discriminators.CodecDiscriminator`), one parameter group ``discriminator``
  (NeMo has one optimizer, and one gradient norm, over all of them); the SLM member's WavLM is no parameter:
  its weights come from their own converted checkpoint (``jaxvoc convert wavlm``), sit in the train state under
  ``objective.FROZEN`` and are never updated nor saved with the training checkpoints;
- discriminator loss: ``DiscriminatorSquaredLoss`` of (real, generated.detach()) -> ``d_loss``;
- generator loss, terms in NeMo's order, each logged under NeMo's metric name where its scale is non-zero:
  ``mel_loss_l1_scale * g_loss_mel_l1 + mel_loss_l2_scale * g_loss_mel_l2 + stft_loss_scale * g_loss_stft +
  gen_loss_scale * g_loss_gen + feature_loss_scale * g_loss_feature`` (the adversarial terms against the
  discriminator the step has just updated, as NeMo's second discriminator pass).

The schedule (the discriminator trained on ``batch_idx % disc_update_period < disc_updates_per_period``, Adam with
ExponentialLR stepped per epoch, no clipping unless ``clip_grad_norm``) is the step's
(``objective.periodic_disc_update``, ``optim.codec_optimizers``).

Refused with one line (NeMo computes them, jaxvoc does not yet): ``encoder_noise_stdev``, an
``output_sample_rate`` other than ``sample_rate``, non-zero ``time_domain_loss_scale`` / ``si_sdr_loss_scale``,
the ``relative`` feature-matching loss, other adversarial losses, ``skip_nan_gradients`` (jaxvoc stops on a
non-finite loss), a commit loss (FSQ has none; NeMo refuses it too), no discriminator.

The batch tensor: NeMo cuts it to the longest item's padded length, jaxvoc keeps its static length (the data
pads to ``n_samples``). The generator pads each item there (``crop_to_longest``); the losses and
discriminators see the zeros beyond it. Both are NeMo's whenever the longest item of the batch fills the
crop (any clip at least ``n_samples`` long does), docs/codec.md.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxvoc.errors import UserError
from jaxvoc.io import checkpoint
from jaxvoc.models import codec_discriminators as cd
from jaxvoc.models.codec import AudioCodec, fingerprint
from jaxvoc.models.codec_train import generator_forward, pad_batch
from jaxvoc.train import codec_losses as cl
from jaxvoc.train import data, optim
from jaxvoc.train import objective as objective_lib
from jaxvoc.train.codec_config import CodecTrainingConfig
from jaxvoc.train.config import TrainConfig
from jaxvoc.train.objective import FROZEN
from jaxvoc.train.tasks import DISCRIMINATOR_TREE, Task, _check_same_structure, _place, load_factory

Array = jax.Array

ADVERSARIAL_LOSSES = ("GeneratorSquaredLoss", "DiscriminatorSquaredLoss")


def check_supported(training: CodecTrainingConfig, source: str) -> None:
    """The NeMo codec settings this objective computes as NeMo does; the others are one UserError each."""
    h, codec = training.hyper, training.codec
    fix = "set it as NeMo's Low Frame-rate codec config does"
    if h.encoder_noise_stdev:
        raise UserError(f"{source}: model.encoder_noise_stdev {h.encoder_noise_stdev} is not supported by jaxvoc "
                        "training; set it to 0")
    if codec.out_sample_rate != codec.sample_rate:
        raise UserError(f"{source}: model.output_sample_rate {codec.out_sample_rate} differs from sample_rate "
                        f"{codec.sample_rate}; jaxvoc trains codecs whose output rate is the input rate")
    for name in ("time_domain_loss_scale", "si_sdr_loss_scale", "commit_loss_scale"):
        if getattr(h, name):
            raise UserError(f"{source}: model.{name} {getattr(h, name)} is not supported by jaxvoc training; set "
                            f"it to 0 ({fix})")
    if h.feature_loss_type != "absolute":
        raise UserError(f"{source}: model.feature_loss_type {h.feature_loss_type!r} is not supported by jaxvoc "
                        f"training; set it to \"absolute\" ({fix})")
    if (training.generator_loss, training.discriminator_loss) != ADVERSARIAL_LOSSES:
        raise UserError(f"{source}: model.generator_loss / discriminator_loss must be NeMo's "
                        f"{' / '.join(ADVERSARIAL_LOSSES)} for jaxvoc training, got {training.generator_loss} / "
                        f"{training.discriminator_loss}")
    if h.skip_nan_gradients:
        raise UserError(f"{source}: model.skip_nan_gradients is not supported (jaxvoc stops on a non-finite loss "
                        "and keeps the last good checkpoint); set it to false")
    if h.mel_loss_dims is None:
        raise UserError(f"{source}: model.mel_loss_dims is not set; give one mel size per loss resolution")
    if not training.discriminators:
        raise UserError(f"{source}: model.discriminator is not set; jaxvoc trains the codec as NeMo's GAN, with "
                        "its discriminators")


def load_wavlm(where: str):
    """A converted WavLM (``jaxvoc convert wavlm``) from a checkpoint folder or a Hugging Face repo id."""
    import jaxvoc

    model = jaxvoc.load(where)
    if getattr(model, "kind", None) != "wavlm":
        raise UserError(f"{where} is a {getattr(model, 'kind', '?')} checkpoint, not WavLM; give the SLM "
                        "discriminator's WavLM converted with `jaxvoc convert wavlm`")
    return model


class CodecObjective:
    """GanObjective of a NeMo codec training config. ``model``: the resolved ``model:`` section (NeMo's keys);
    ``wavlm``: the SLM discriminator's WavLM, a converted checkpoint folder / repo id or a loaded
    ``jaxvoc.models.wavlm.Pretrained`` (default: the discriminator's ``slm_model_name``); unused without an SLM
    discriminator."""

    name = "codec"
    discriminator_groups = ("discriminator",)

    def __init__(self, model: dict, wavlm: Any = None, source: str = "config"):
        self.training = CodecTrainingConfig.from_dict(model, source)
        check_supported(self.training, source)
        self.codec = self.training.codec
        self.hyper = self.training.hyper
        self.d_config = cd.CodecDiscriminatorConfig.from_dict(model.get("discriminator"), source)
        slm = self.d_config.slm
        self.wavlm_params = None
        wavlm_config = None
        if slm is not None:
            if slm.input_sr != self.codec.sample_rate:
                raise UserError(f"{source}: the SLM discriminator's input_sr {slm.input_sr} differs from the "
                                f"codec's sample_rate {self.codec.sample_rate}")
            loaded = load_wavlm(wavlm or slm.slm_model_name) if wavlm is None or isinstance(wavlm, str) else wavlm
            slm.check_wavlm(loaded.config, str(wavlm or slm.slm_model_name))
            wavlm_config, self.wavlm_params = loaded.config, loaded.params
        self.discriminator = cd.CodecDiscriminator(self.d_config, wavlm_config)

    # -- the protocol ---------------------------------------------------------------------------------------

    def frozen_params(self) -> dict | None:
        """The frozen WavLM, held in the train state beside (not among) the trained parameters."""
        return None if self.wavlm_params is None else {"wavlm": self.wavlm_params}

    def prepare(self, batch: dict) -> dict:
        """{"audio" [B, N], "audio_len" [B]} -> the same zero-padded to whole frames, the lengths rounded up to
        whole frames (NeMo's ``pad_audio``: the generator's input and the losses' lengths)."""
        audio, audio_len = pad_batch(self.codec, jnp.asarray(batch["audio"], jnp.float32), batch["audio_len"])
        return {"audio": audio, "audio_len": audio_len}

    def init(self, rng, batch) -> tuple[Any, dict]:
        """Fresh weights (torch's default initialisers, weight norm kept; jit-able)."""
        kg, kd = jax.random.split(rng)
        audio = jnp.zeros((1, max(batch["audio"].shape[1], self.codec.min_samples(),
                                  4 * self.codec.samples_per_frame)), jnp.float32)
        params_g = AudioCodec(self.codec).init(kg, audio, jnp.array([audio.shape[1]]))["params"]
        params_d = cd.CodecDiscriminator(self.d_config).init(kd, audio)["params"]
        return params_g, {"discriminator": params_d}

    def generate(self, params_g, batch) -> Array:
        return generator_forward(self.codec, params_g, batch["audio"], batch["audio_len"]).audio_gen

    def discriminator_loss(self, params_d, batch, y_g) -> tuple[Array, dict]:
        (real, fake), _ = self._discriminate(params_d, batch, y_g, joint=True)
        loss = cl.discriminator_squared_loss(real, fake)
        return loss, {"d_loss": loss}

    def generator_loss(self, params_d, batch, y_g, step) -> tuple[Array, dict]:
        h = self.hyper
        audio, lengths = batch["audio"], batch["audio_len"]
        aux, terms = {}, []

        def add(name, scale, value):
            if scale:
                aux[name] = value
                terms.append(scale * value)

        l1, l2 = cl.mel_loss(audio, y_g, lengths, self.codec.sample_rate, h.loss_resolutions, h.mel_loss_dims,
                             h.mel_loss_log_guard)
        add("g_loss_mel_l1", h.mel_loss_l1_scale, l1)
        add("g_loss_mel_l2", h.mel_loss_l2_scale, l2)
        if h.stft_loss_scale:
            add("g_loss_stft", h.stft_loss_scale, cl.stft_loss(audio, y_g, lengths, h.loss_resolutions,
                                                                h.stft_loss_log_guard))
        (_, fake), (fmap_r, fmap_g) = self._discriminate(params_d, batch, y_g, joint=False)
        add("g_loss_gen", h.gen_loss_scale, cl.generator_squared_loss(fake))
        add("g_loss_feature", h.feature_loss_scale, cl.feature_matching_loss(fmap_r, fmap_g))
        total = sum(terms[1:], terms[0]) if terms else jnp.float32(0.0)
        aux["loss_gen_all"] = total
        return total, aux

    # -- pieces ---------------------------------------------------------------------------------------------

    def _discriminate(self, params_d, batch, y_g, joint: bool):
        """((real scores, generated scores), (real fmaps, generated fmaps)); with ``joint`` one pass over
        [real; generated] (the discriminator update: every member is per-example), else two passes, as NeMo,
        so that the generator's gradient flows back through the generated half only."""
        wavlm = batch[FROZEN]["wavlm"] if FROZEN in batch else None
        apply = lambda x: self.discriminator.apply({"params": params_d["discriminator"]}, x, wavlm)  # noqa: E731
        y = batch["audio"]
        y_g = y_g.astype(y.dtype)
        if not joint:
            real, fmap_r = apply(y)
            fake, fmap_g = apply(y_g)
            return (real, fake), (fmap_r, fmap_g)
        B = y.shape[0]
        outs, fmaps = apply(jnp.concatenate([y, y_g]))
        return (([o[:B] for o in outs], [o[B:] for o in outs]),
                ([[f[:B] for f in fm] for fm in fmaps], [[f[B:] for f in fm] for fm in fmaps]))


# ----------------------------------------------------------------------------------------------------------
# The training task (jaxvoc train)


class CodecTask(Task):
    """NeMo's codec training config (``cfg.codec``) as a task of the generic loop. The schedule's epoch is the
    data's (``data.steps_per_epoch`` of the training files and the global batch; NeMo's ``batch_idx`` restarts
    there), computed from the file list when first needed unless given."""

    kind = "codec"
    style = "codec"
    metric_keys = ("loss_gen_all", "d_loss", "g_loss_mel_l1")
    validation_metric = "val_loss"

    def __init__(self, cfg: TrainConfig, obj: CodecObjective | None = None, steps_per_epoch: int | None = None):
        super().__init__(cfg)
        if obj is None:
            obj = (load_factory(cfg.train.objective)(cfg) if cfg.train.objective
                   else CodecObjective(cfg.model, cfg.train.wavlm, cfg.path))
        self.obj = obj
        self.hop_size = obj.codec.samples_per_frame
        self._steps_per_epoch = steps_per_epoch
        self._optimizers = None

    @property
    def steps_per_epoch(self) -> int:
        if self._steps_per_epoch is None:
            files, _ = data.codec_files(self.cfg.codec, self.cfg.train, self.cfg.seed)
            self._steps_per_epoch = data.steps_per_epoch(len(files), self.cfg.batch_size)
        return self._steps_per_epoch

    def optimizers(self):
        """(generator Adam, discriminator Adam, learning-rate schedule) as NeMo's ``configure_optimizers``."""
        if self._optimizers is None:
            epochs = self.cfg.train.training_steps // self.steps_per_epoch + 1
            self._optimizers = optim.codec_optimizers(self.obj.training.optim, self.steps_per_epoch, epochs)
        return self._optimizers

    def prepare(self, batch) -> dict:
        return self.obj.prepare(batch)

    def frozen_params(self):
        return self.obj.frozen_params()

    def init_state(self, rng, audio):
        if not isinstance(audio, dict):  # the loop's example batch: full-length items
            audio = {"audio": audio, "audio_len": jnp.full((audio.shape[0],), audio.shape[1], jnp.int32)}
        # Adam's state does not depend on the schedule: no need for the epoch length (the data) here
        tx_g, tx_d, _ = optim.codec_optimizers(self.obj.training.optim, 1, 1)
        return objective_lib.init_gan_state(self.obj, tx_g, tx_d, rng, self.prepare(audio))

    def step_fn(self, gather=lambda t: t):
        tx_g, tx_d, schedule = self.optimizers()
        h = self.obj.hyper
        update = objective_lib.periodic_disc_update(self.steps_per_epoch, h.disc_update_period,
                                                    h.disc_updates_per_period, h.disc_start_epoch)
        return objective_lib.make_gan_step(self.obj, tx_g, tx_d, self.prepare, clip_grad_norm=h.clip_grad_norm,
                                           disc_update=update, lr_schedule=schedule, gather=gather)

    def lr(self, step: int) -> float:
        return float(self.optimizers()[2](step))

    def validator(self, clips):
        return CodecValidator(self.obj, clips)

    def apply_init(self, state, ckpt_dir):
        """Generator weights from a converted codec (``jaxvoc convert codec``), and its discriminators when the
        checkpoint has them (a ``.nemo`` holds them; WavLM is never part of them). The step starts at 0."""
        meta, load_tree = self._read_init(ckpt_dir)
        params = load_tree(ckpt_dir, "params")
        _check_same_structure(params, state["params_g"], "generator weights", ckpt_dir)
        state = {**state, "params_g": _place(params, state["params_g"])}
        what = ["generator"]
        if DISCRIMINATOR_TREE in meta.get("trees", []):
            disc = {"discriminator": load_tree(ckpt_dir, DISCRIMINATOR_TREE)}
            _check_same_structure(disc, state["params_d"], "discriminator weights", ckpt_dir)
            state = {**state, "params_d": _place(disc, state["params_d"])}
            what.append("discriminators")
        return state, " + ".join(what)

    def export_trees(self, state):
        """The codec as ``jaxvoc convert codec`` writes it: generator ``params`` and the ``discriminator`` tree
        (WavLM is not part of it, as NeMo's archive leaves it out)."""
        params = jax.device_get(state["params_g"])
        config = dataclasses.replace(self.obj.codec, fingerprint=fingerprint(self.obj.codec, params)).to_dict()
        return config, {"params": params, DISCRIMINATOR_TREE: jax.device_get(state["params_d"])["discriminator"]}

    def export(self, state, out_dir):
        config, trees = self.export_trees(state)
        checkpoint.save(out_dir, "codec", config, trees.pop("params"), extra=trees, overwrite=True)


def code_counts(tokens: Array, lengths: Array, codebook_size: int) -> Array:
    """tokens [B, C, frames] int, lengths [B] frames -> int32 [C, codebook_size]: per codebook, how often each
    code occurs among the frames within each item's length."""
    B, C, T = tokens.shape
    valid = (jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]).astype(jnp.int32)  # [B, T]
    rows = jnp.broadcast_to(jnp.arange(C)[None, :, None], tokens.shape)
    weights = jnp.broadcast_to(valid[:, None, :], tokens.shape)
    return jnp.zeros((C, codebook_size), jnp.int32).at[rows, tokens].add(weights)


def codebook_usage(counts) -> dict[str, float]:
    """Code histograms [C, codebook_size] -> per codebook c: ``codebook{c}_used``, the fraction of its codes
    that occur, and ``codebook{c}_perplexity``, exp of the entropy (natural log) of its code distribution (1
    when one code is used throughout, codebook_size when all are used equally)."""
    counts = np.asarray(counts, np.float64)
    out = {}
    for c, row in enumerate(counts):
        p = row[row > 0] / max(row.sum(), 1.0)
        out[f"codebook{c}_used"] = float(np.count_nonzero(row)) / row.size
        out[f"codebook{c}_perplexity"] = float(np.exp(-np.sum(p * np.log(p))))
    return out


class CodecValidator:
    """NeMo's ``validation_step`` losses on the held-out clips: ``val_loss`` (mel L1 + STFT + time domain, unscaled,
    as NeMo sums them), ``val_loss_mel_l1``, ``val_loss_mel_l2``, ``val_loss_stft``, ``val_loss_time_domain``,
    each the mean over the clips (``val_loss_si_sdr`` is not computed); and the codebook usage over all frames of
    all clips (``codebook_usage``: ``codebook{c}_used``, ``codebook{c}_perplexity``), of the FSQ codes the
    generator's encoder gives each clip (those of ``jaxvoc encode``: a clip alone, at its length). Each clip is a
    batch of its own at its length (NeMo's validation batches pad clips to their longest): one compiled program
    per distinct length. Returns (values, [(generated audio, its log-mel)]) for the loop's logs."""

    def __init__(self, obj: CodecObjective, clips):
        self.clips = clips
        h, sr = obj.hyper, obj.codec.sample_rate
        res, dims, guard = h.loss_resolutions[-1], h.mel_loss_dims[-1], h.mel_loss_log_guard

        def run(params_g, audio, audio_len):
            batch = obj.prepare({"audio": audio, "audio_len": audio_len})
            real, lengths = batch["audio"], batch["audio_len"]
            out = generator_forward(obj.codec, params_g, real, lengths)
            gen = out.audio_gen
            l1, l2 = cl.mel_loss(real, gen, lengths, sr, h.loss_resolutions, h.mel_loss_dims, guard)
            stft = cl.stft_loss(real, gen, lengths, h.loss_resolutions, h.stft_loss_log_guard)
            td = cl.time_domain_loss(real, gen, lengths)
            losses = {"val_loss": l1 + stft + td, "val_loss_mel_l1": l1, "val_loss_mel_l2": l2,
                      "val_loss_stft": stft, "val_loss_time_domain": td}
            counts = code_counts(out.tokens, out.encoded_len, obj.codec.codebook_size)
            return losses, counts, gen, cl.nemo_log_mel(gen, lengths, sr, res, dims, guard)[0]

        self._run = jax.jit(run)
        self._mel = jax.jit(lambda a, n: cl.nemo_log_mel(a, n, sr, res, dims, guard)[0])
        self.ref = [np.asarray(self._mel(c[None], jnp.array([len(c)])))[0] for c in clips]

    def __call__(self, state) -> tuple[dict, list]:
        totals, samples, counts = {}, [], 0
        for clip in self.clips:
            losses, n, gen, mel = self._run(state["params_g"], jnp.asarray(clip[None], jnp.float32),
                                            jnp.array([len(clip)], jnp.int32))
            for k, v in jax.device_get(losses).items():
                totals[k] = totals.get(k, 0.0) + float(v) / len(self.clips)
            counts = counts + np.asarray(n, np.int64)
            samples.append((np.asarray(gen)[0, :len(clip)], np.asarray(mel)[0]))
        return {**totals, **codebook_usage(counts)}, samples


TASK = CodecTask
