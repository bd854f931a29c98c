"""The codec's training config: NeMo's AudioCodecModel YAML (e.g. ``audio_codec_low_frame_rate_22050.yaml``,
copied in experiments/training/configs/) read with NeMo 3.0.0's key names and defaults.

* :func:`read_yaml`: a NeMo/Hydra YAML as a plain dict, by OmegaConf (NeMo's own config library, so that
  ``${...}`` interpolations, ``???`` and YAML 1.2 numbers such as ``2e-4`` mean what they mean to NeMo).
  A mandatory ``???`` that was not filled in reads as null ("not set").
* :class:`CodecTrainingConfig`: the ``model:`` section. The generator part is :class:`jaxvoc.models.codec.
  CodecConfig` (the same reader as a ``.nemo``'s model_config.yaml); the rest are the hyperparameters of
  ``AudioCodecModel.__init__`` / ``training_step`` / ``configure_optimizers`` under their official names,
  NeMo's defaults where the YAML leaves them out, and the two ``VocoderDataset`` sections.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass

MISSING = "???"  # OmegaConf's mandatory value
_POS = {"min": 1}
_NONNEG = {"min": 0}


def read_yaml(path: str, what: str, fix: str) -> dict:
    """The YAML file at ``path`` as a plain dict, unresolved (interpolations kept as written); one-line
    errors for a missing file, a folder or bad YAML."""
    from omegaconf import OmegaConf

    try:
        cfg = OmegaConf.load(path)
    except FileNotFoundError:
        raise UserError(f"{what} not found: {path}; {fix}") from None
    except IsADirectoryError:
        raise UserError(f"{path} is a folder, not a {what} file; {fix}") from None
    except Exception as e:  # yaml's scanner / parser errors, undecodable text
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0][:160]}); {fix}") from None
    out = OmegaConf.to_container(cfg, resolve=False)
    if not isinstance(out, dict):
        raise UserError(f"{path} must hold a YAML mapping; {fix}")
    return out


def resolve(raw: dict, path: str) -> dict:
    """``raw`` with every ``${...}`` interpolation resolved as OmegaConf (NeMo) resolves it; ``???`` values
    (mandatory, not filled in) become null first, so that an interpolation of one reads null too."""
    from omegaconf import OmegaConf

    def unset(node):
        if isinstance(node, dict):
            return {k: unset(v) for k, v in node.items()}
        if isinstance(node, list):
            return [unset(v) for v in node]
        return None if node == MISSING else node

    try:
        return OmegaConf.to_container(OmegaConf.create(unset(raw)), resolve=True)
    except Exception as e:  # omegaconf's interpolation errors (a key that does not exist, a cycle)
        raise UserError(f"{path}: cannot resolve the config's interpolations ({str(e).splitlines()[0][:160]})") \
            from None


def target_name(section: Any, where: str, path: str) -> str:
    """The class name of a ``_target_`` section (the last dotted part)."""
    if not isinstance(section, dict) or "_target_" not in section:
        raise UserError(f"{path}: {where} has no _target_; start from NeMo's codec config")
    return str(section["_target_"]).rpartition(".")[2]


# ----------------------------------------------------------------------------------------------------------
# VocoderDataset sections (train_ds / validation_ds)


@dataclasses.dataclass(frozen=True)
class VocoderDatasetArgs:
    """``nemo.collections.tts.data.vocoder_dataset.VocoderDataset`` arguments (its defaults)."""

    sample_rate: int = dataclasses.field(metadata=_POS)
    dataset_meta: dict | None = None  # {name: {manifest_path, audio_dir, sample_weight}}
    n_samples: int | None = None  # random crop length (training); None: whole clips
    min_duration: float | None = None  # seconds, from the manifest's "duration"
    max_duration: float | None = None
    trunc_duration: float | None = None  # whole clips: at most this many seconds
    volume_norm: bool = False  # peak-normalise to 0.95
    resample_rate: int | None = None
    weighted_sampling_steps_per_epoch: int | None = None
    feature_processors: dict | None = None

    def validate(self, source: str) -> None:
        if self.n_samples is not None and self.n_samples < 1:
            raise UserError(f"{source}: n_samples must be at least 1, got {self.n_samples}")
        if self.resample_rate and self.resample_rate != self.sample_rate:
            raise UserError(f"{source}: resample_rate (NeMo's batch resampling on the GPU) is not supported by "
                            "jaxvoc; remove it and set sample_rate to the rate the model trains at")
        if self.weighted_sampling_steps_per_epoch:
            raise UserError(f"{source}: weighted sampling (weighted_sampling_steps_per_epoch) is not supported by "
                            "jaxvoc yet; set it to null (every file once per epoch)")
        if self.feature_processors:
            raise UserError(f"{source}: feature_processors are not supported by jaxvoc; remove them")


@dataclasses.dataclass(frozen=True)
class DataSection:
    """A ``train_ds`` / ``validation_ds`` section: the dataset and the DataLoader settings jaxvoc uses."""

    dataset: VocoderDatasetArgs
    batch_size: int
    drop_last: bool = False


def _data_section(d: Any, where: str, path: str) -> DataSection | None:
    if d is None:
        return None
    if not isinstance(d, dict) or not isinstance(d.get("dataset"), dict):
        raise UserError(f"{path}: model.{where} must hold a 'dataset' section; start from NeMo's codec config")
    ds = dict(d["dataset"])
    if "dataset_args" in ds or ds.get("_target_") is None:
        raise UserError(f"{path}: model.{where}.dataset must be a VocoderDataset with _target_ (NeMo's "
                        "dataset_args / Lhotse form is not supported by jaxvoc)")
    name = target_name(ds, f"model.{where}.dataset", path)
    if name != "VocoderDataset":
        raise UserError(f"{path}: model.{where}.dataset is {ds['_target_']}; jaxvoc reads VocoderDataset only")
    ds.pop("_target_")
    dataset = load_dataclass(VocoderDatasetArgs, ds, path, prefix=f"model.{where}.dataset.",
                             what="VocoderDataset argument")
    params = d.get("dataloader_params") or {}
    if not isinstance(params, dict):
        raise UserError(f"{path}: model.{where}.dataloader_params must be a mapping")
    if params.get("use_lhotse"):
        raise UserError(f"{path}: model.{where} uses Lhotse; jaxvoc reads VocoderDataset manifests and folders")
    batch = params.get("batch_size")
    if not isinstance(batch, int) or isinstance(batch, bool) or batch < 1:
        raise UserError(f"{path}: model.{where}.dataloader_params.batch_size must be a positive integer, got "
                        f"{batch!r}")
    return DataSection(dataset, batch, bool(params.get("drop_last", False)))


# ----------------------------------------------------------------------------------------------------------
# The model section


@dataclasses.dataclass(frozen=True)
class _Hyper:
    """``AudioCodecModel.__init__``'s ``cfg.get(...)`` keys and their NeMo 3.0.0 defaults (the others of the
    section are read elsewhere or kept as they are)."""

    loss_resolutions: tuple[tuple[int, int, int], ...] = dataclasses.field(metadata=_POS)
    mel_loss_dims: tuple[int, ...] | None = None
    mel_loss_log_guard: float = 1.0
    mel_loss_l1_scale: float = 1.0
    mel_loss_l2_scale: float = 1.0
    stft_loss_log_guard: float = 1.0
    stft_loss_scale: float = 0.0
    time_domain_loss_scale: float = 1.0
    si_sdr_loss_scale: float = 0.0
    gen_loss_scale: float = 1.0
    feature_loss_scale: float = 1.0
    feature_loss_type: Literal["relative", "absolute"] = "relative"
    commit_loss_scale: float = 1.0  # 0 when there is no quantizer
    disc_updates_per_period: int = dataclasses.field(default=1, metadata=_NONNEG)
    disc_update_period: int = dataclasses.field(default=1, metadata=_POS)
    disc_start_epoch: int = dataclasses.field(default=0, metadata=_NONNEG)
    encoder_noise_stdev: float = 0.0
    clip_grad_norm: float | None = None
    skip_nan_gradients: bool = False
    use_slm_loss: bool = False
    use_scl_loss: bool = False
    max_epochs: int | None = None
    max_steps: int | None = None
    steps_per_epoch: int | None = None

    def validate(self, source: str) -> None:
        if self.disc_updates_per_period > self.disc_update_period:
            raise UserError(f"{source}: disc_updates_per_period ({self.disc_updates_per_period}) must not exceed "
                            f"disc_update_period ({self.disc_update_period}), as NeMo requires")
        if self.mel_loss_dims is not None and len(self.mel_loss_dims) != len(self.loss_resolutions):
            raise UserError(f"{source}: mel_loss_dims has {len(self.mel_loss_dims)} entries but loss_resolutions "
                            f"{len(self.loss_resolutions)}; give one mel size per resolution")
        for name in ("use_slm_loss", "use_scl_loss"):
            if getattr(self, name):
                raise UserError(f"{source}: model.{name} is not supported by jaxvoc; set it to false")


@dataclasses.dataclass(frozen=True)
class Optim:
    """``model.optim``: the optimizer (``_target_`` class name and its arguments, torch's defaults) and
    ``sched``; NeMo builds the same optimizer and scheduler for the generator and the discriminator."""

    name: str  # "Adam" (torch.optim.Adam)
    lr: float
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    sched_name: str | None = None  # "ExponentialLR"
    gamma: float | None = None
    # NeMo's EPOCH_SCHEDULERS (ExponentialLR, ReduceLROnPlateau) step once per epoch; the others every step
    sched_interval: Literal["epoch", "step"] = "step"


@dataclasses.dataclass(frozen=True)
class _AdamArgs:
    lr: float = dataclasses.field(metadata={"min": 0})
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0
    amsgrad: bool = False
    foreach: bool | None = None
    maximize: bool = False
    capturable: bool = False
    differentiable: bool = False
    fused: bool | None = None


@dataclasses.dataclass(frozen=True)
class _ExponentialLRArgs:
    gamma: float
    last_epoch: int = -1


def _optim(d: Any, path: str) -> Optim:
    if not isinstance(d, dict):
        raise UserError(f"{path}: model.optim must be a mapping with _target_ torch.optim.Adam")
    d = dict(d)
    sched = d.pop("sched", None)
    name = target_name(d, "model.optim", path)
    if name != "Adam":
        raise UserError(f"{path}: model.optim {d['_target_']} is not supported by jaxvoc (supported: "
                        "torch.optim.Adam, as NeMo's codec configs)")
    d.pop("_target_")
    a = load_dataclass(_AdamArgs, d, path, prefix="model.optim.", what="torch.optim.Adam argument")
    if a.amsgrad or a.maximize:
        raise UserError(f"{path}: model.optim amsgrad / maximize are not supported by jaxvoc; remove them")
    kw = dict(name=name, lr=float(a.lr), betas=tuple(float(b) for b in a.betas), eps=float(a.eps),
              weight_decay=float(a.weight_decay))
    if sched is not None:
        if not isinstance(sched, dict) or "name" not in sched:
            raise UserError(f"{path}: model.optim.sched must name its scheduler (name: ExponentialLR)")
        sched = dict(sched)
        sname = str(sched.pop("name"))
        for k in ("max_steps", "monitor", "reduce_on_plateau", "t_max_epochs", "t_accumulate_grad_batches",
                  "t_limit_train_batches", "t_num_workers"):  # NeMo's bookkeeping keys, not scheduler arguments
            sched.pop(k, None)
        if sname != "ExponentialLR":
            raise UserError(f"{path}: model.optim.sched {sname} is not supported by jaxvoc (supported: "
                            "ExponentialLR, as NeMo's codec configs)")
        s = load_dataclass(_ExponentialLRArgs, sched, path, prefix="model.optim.sched.",
                           what="ExponentialLR argument")
        kw.update(sched_name=sname, gamma=float(s.gamma), sched_interval="epoch")
    return Optim(**kw)


@dataclasses.dataclass(frozen=True)
class CodecTrainingConfig:
    """The ``model:`` section of a NeMo codec training YAML (resolved)."""

    codec: Any  # jaxvoc.models.codec.CodecConfig: encoder, quantizer, decoder
    hyper: _Hyper
    optim: Optim
    discriminators: tuple[tuple[str, dict], ...]  # (class name, arguments) in the config's order
    generator_loss: str  # class names of NeMo's adversarial losses
    discriminator_loss: str
    train_ds: DataSection | None
    validation_ds: DataSection | None

    def __getattr__(self, name: str):  # the official names read through: cfg.stft_loss_scale, ...
        hyper = self.__dict__.get("hyper")
        if hyper is not None and name in {f.name for f in dataclasses.fields(hyper)}:
            return getattr(hyper, name)
        raise AttributeError(name)

    @property
    def sample_rate(self) -> int:
        return self.codec.sample_rate

    @property
    def samples_per_frame(self) -> int:
        return self.codec.samples_per_frame

    def should_update_disc(self, batch_idx: int, epoch: int = 0) -> bool:
        """NeMo's ``should_update_disc``: the discriminator is trained on batch ``batch_idx`` of the epoch
        (``batch_idx`` restarts at 0 every epoch) when ``batch_idx % disc_update_period <
        disc_updates_per_period``, and not before ``disc_start_epoch``."""
        h = self.hyper
        return epoch >= h.disc_start_epoch and batch_idx % h.disc_update_period < h.disc_updates_per_period

    @classmethod
    def from_dict(cls, model: dict, path: str) -> "CodecTrainingConfig":
        from jaxvoc.models.codec import CodecConfig

        if not isinstance(model, dict):
            raise UserError(f"{path}: 'model' must be NeMo's AudioCodecModel section (a mapping)")
        codec = CodecConfig.from_dict(model, path)
        hyper = load_dataclass(_Hyper, model, path, keep_unknown=True, prefix="model.",
                               hint="start from NeMo's codec config")
        if model.get("vector_quantizer") is None:
            hyper = dataclasses.replace(hyper, commit_loss_scale=0.0)
        for key in ("mmd_loss", "mmd_time_loss", "slm_encoder", "slm_predictor"):
            if key in model:
                raise UserError(f"{path}: model.{key} is not supported by jaxvoc; remove it")
        discs: list[tuple[str, dict]] = []
        disc = model.get("discriminator")
        if disc:
            top = target_name(disc, "model.discriminator", path)
            if top == "Discriminator":  # NeMo's wrapper around a list
                items = disc.get("discriminators") or []
            else:
                items = [disc]
            for i, item in enumerate(items):
                name = target_name(item, f"model.discriminator.discriminators[{i}]", path)
                discs.append((name, {k: v for k, v in item.items() if k != "_target_"}))
        gen_loss = target_name(model.get("generator_loss"), "model.generator_loss", path)
        disc_loss = target_name(model.get("discriminator_loss"), "model.discriminator_loss", path)
        return cls(codec=codec, hyper=hyper, optim=_optim(model.get("optim"), path), discriminators=tuple(discs),
                   generator_loss=gen_loss, discriminator_loss=disc_loss,
                   train_ds=_data_section(model.get("train_ds"), "train_ds", path),
                   validation_ds=_data_section(model.get("validation_ds"), "validation_ds", path))
