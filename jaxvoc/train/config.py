"""Training config files: the official config with a ``"train"`` section for what the official scripts take
on their command line (names kept: ``input_wavs_dir``, ``input_training_file``, ``checkpoint_path``,
``checkpoint_interval``, ``freeze_step``, ...) and for jaxvoc's own settings.

* BigVGAN: the official flat ``config.json`` (``learning_rate``, ``adam_b1``, ``lr_decay``, ``batch_size``,
  ``segment_size``, ``clip_grad_norm``, ...) + ``"train": {...}``.
* WaveGlow: the official nested ``config.json`` (``train_config``, ``data_config``, ``waveglow_config``);
  ``train_config.output_directory`` is the run folder, ``iters_per_checkpoint`` the checkpoint interval,
  ``data_config.training_files`` the file list, ``fp16_run`` turns on bfloat16 compute (float32 master
  weights; bfloat16 needs no loss scaling). Extra settings go in ``"train": {...}`` as for BigVGAN.
* Codec: NeMo's training YAML (``.yaml`` / ``.yml``; e.g. the Low Frame-rate codec's, in
  experiments/training/configs/) + a ``train:`` section. Interpolations (``${...}``) are resolved after the
  ``--set`` overrides, so ``--set sample_rate=24000`` reaches every ``${sample_rate}``; ``model:`` is read by
  :class:`jaxvoc.train.codec_config.CodecTrainingConfig` (``TrainConfig.codec``). The batch size is
  ``model.train_ds.dataloader_params.batch_size``, the segment ``model.train_ds.dataset.n_samples``, the rate
  ``model.sample_rate``; NeMo's ``train_ds_meta`` (``model.train_ds.dataset.dataset_meta``) and
  ``val_ds_meta`` name the data when set, else the ``train:`` section does (jaxvoc/train/data.py).

The model kind is ``"model"`` when it is a string, else recognised from the keys.
"""

from __future__ import annotations

import dataclasses
import os
from typing import Any, Literal

from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass, read_json


_POS = {"min": 1}


@dataclasses.dataclass
class TrainSettings:
    """The ``"train"`` section. Names from the official train.py arguments where one exists."""

    # data (official names)
    input_wavs_dir: str | None = None  # BigVGAN: folder the filelist paths are relative to; alone: scan it
    input_training_file: str | None = None  # BigVGAN `path|text` list (or WaveGlow's data_config.training_files)
    input_validation_file: str | None = None
    num_validation_files: int = 4  # directory mode / no validation list: files held out for validation
    # run (official names)
    checkpoint_path: str | None = None  # run folder (checkpoints/, logs/, export/)
    # jaxvoc: the official scripts run `training_epochs` epochs instead
    training_steps: int = dataclasses.field(default=1_000_000, metadata=_POS)
    stdout_interval: int = dataclasses.field(default=5, metadata=_POS)
    summary_interval: int = dataclasses.field(default=100, metadata=_POS)
    checkpoint_interval: int = dataclasses.field(default=50_000, metadata=_POS)
    validation_interval: int = dataclasses.field(default=50_000, metadata=_POS)
    freeze_step: int = 0
    # jaxvoc
    keep_checkpoints: int = dataclasses.field(default=3, metadata=_POS)
    async_checkpointing: bool = True
    fsdp: int = dataclasses.field(default=1, metadata=_POS)  # devices per parameter shard group (1: replicated)
    fsdp_min_size: int = 2 ** 16  # leaves with fewer elements stay replicated
    data_threads: int = dataclasses.field(default=2, metadata=_POS)
    validation_max_files: int = 8
    validation_max_seconds: float | None = None
    validation_sigma: float = 0.6  # WaveGlow: noise scale for validation synthesis
    num_audio_samples: int = 2  # validation clips logged as audio and mel images
    # "bfloat16": bf16 compute with float32 master weights (WaveGlow)
    compute_dtype: Literal["float32", "bfloat16"] = "float32"
    objective: str | None = None  # "module:factory" to replace the model's default objective
    export_at_end: bool = True  # write <checkpoint_path>/export as a jaxvoc checkpoint when done
    seed: int | None = None  # codec only (NeMo's YAML has no seed; default 1234); the others: the official key
    # codec only: the SLM discriminator's WavLM, a converted checkpoint (jaxvoc convert wavlm) or a Hugging Face
    # repo id; default its slm_model_name (microsoft/wavlm-base-plus). Read, never trained nor checkpointed.
    wavlm: str | None = None


@dataclasses.dataclass
class TrainConfig:
    path: str
    kind: str
    raw: dict  # the whole file, with the --set overrides applied
    model: dict  # the model's official config (BigVGAN: the flat dict; WaveGlow: waveglow_config etc.)
    train: TrainSettings
    batch_size: int
    segment_size: int
    sampling_rate: int
    seed: int
    run_dir: str
    overrides: list = dataclasses.field(default_factory=list)  # the --set KEY=VALUE strings, in order
    codec: Any = None  # codec: the CodecTrainingConfig of the resolved ``model:`` section

    @property
    def name(self) -> str:
        return os.path.splitext(os.path.basename(self.path))[0]


def _settings(section: Any, path: str, overrides: dict) -> TrainSettings:
    if section is None:
        section = {}
    if not isinstance(section, dict):
        raise UserError(f"{path}: \"train\" must be an object of settings")
    return load_dataclass(TrainSettings, {**overrides, **section}, path, prefix="train.", what="train setting")


@dataclasses.dataclass(frozen=True)
class _BigVGANRun:
    """The official flat config.json's keys that set up a run (the others: the model, the objective)."""

    batch_size: int = dataclasses.field(metadata=_POS)
    segment_size: int = dataclasses.field(metadata=_POS)
    sampling_rate: int = dataclasses.field(metadata=_POS)
    learning_rate: float
    adam_b1: float
    adam_b2: float
    seed: int = 1234


@dataclasses.dataclass(frozen=True)
class _WaveGlowTrain:
    """The official ``train_config`` keys that set up a run."""

    batch_size: int = dataclasses.field(metadata=_POS)
    learning_rate: float
    sigma: float
    seed: int = 1234
    output_directory: str | None = None
    iters_per_checkpoint: int | None = None
    fp16_run: bool = False


@dataclasses.dataclass(frozen=True)
class _WaveGlowData:
    """The official ``data_config`` keys that set up a run (the mel settings: WaveGlowConfig)."""

    segment_length: int = dataclasses.field(metadata=_POS)
    sampling_rate: int = dataclasses.field(metadata=_POS)
    training_files: str | None = None


def _type_name(v: Any) -> str:
    return {bool: "a boolean", int: "an integer", float: "a number", str: "a string", list: "a list",
            dict: "an object"}.get(type(v), type(v).__name__)


def apply_overrides(raw: dict, overrides: list[str] | tuple[str, ...], path: str) -> dict:
    """``--set KEY=VALUE`` on the config JSON: a copy of ``raw`` with each dotted KEY (``learning_rate``,
    ``train.validation_interval``, ``train_config.sigma``) set to VALUE, parsed as JSON when it parses and
    taken as a string otherwise. The key must exist (a ``train.*`` key may also be any known train setting),
    and the value must have the type of the value it replaces (an integer is accepted for a number)."""
    import copy
    import json

    raw = copy.deepcopy(raw)
    known_train = {f.name: f for f in dataclasses.fields(TrainSettings)}
    for item in overrides:
        key, sep, text = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise UserError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.validation_interval=5")
        try:
            value = json.loads(text)
        except ValueError:
            value = text
        parts = key.split(".")
        node = raw
        for i, part in enumerate(parts[:-1]):
            if part == "train" and i == 0 and "train" not in node:
                node["train"] = {}
            if not isinstance(node.get(part), dict):
                where = ".".join(parts[:i + 1])
                raise UserError(f"--set {key}: {where!r} is not a section of {path}; "
                                f"{'no such key' if part not in node else 'it is not an object'}")
            node = node[part]
        last = parts[-1]
        in_train = len(parts) == 2 and parts[0] == "train"
        if last in node:
            old = node[last]
            if isinstance(old, str) and (old == "???" or old.startswith("${")):
                old = None  # a NeMo YAML's unfilled mandatory value or an interpolation: any value replaces it
        elif in_train and last in known_train:
            default = known_train[last].default
            old = None if default is dataclasses.MISSING else default
        else:
            import difflib

            choices = sorted(known_train) if in_train else sorted(node)
            close = difflib.get_close_matches(last, choices, n=3)
            hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(choices)}"
            raise UserError(f"--set {key}: unknown key {last!r} in {path}; {hint}")
        if isinstance(old, dict):
            raise UserError(f"--set {key}: {key} is a section; set one of its keys, e.g. --set {key}.KEY=VALUE")
        if isinstance(old, str) and not isinstance(value, str):
            value = text  # a string setting keeps the text as given (--set train.checkpoint_path=123)
        ok = (old is None or (isinstance(old, bool) and isinstance(value, bool))
              or (isinstance(old, float) and isinstance(value, (int, float)) and not isinstance(value, bool))
              or (type(old) in (int, str, list) and type(value) is type(old)))
        if not ok:
            raise UserError(f"--set {key}={text}: {key} is {_type_name(old)} ({json.dumps(old)}), "
                            f"got {_type_name(value)}")
        node[last] = float(value) if isinstance(old, float) else value
    return raw


def load(path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The training config at ``path`` with the ``--set`` ``overrides`` applied (see apply_overrides)."""
    fix = "give a training config (see experiments/training/configs/)"
    if path.lower().endswith((".yaml", ".yml")):
        from jaxvoc.train.codec_config import read_yaml

        raw = read_yaml(path, "config", fix)
    else:
        raw = read_json(path, "config", fix)
    if not isinstance(raw, dict):
        raise UserError(f"{path} must hold a JSON object")
    raw = apply_overrides(raw, overrides, path)
    return from_raw(raw, path, overrides)


def from_raw(raw: dict, path: str, overrides: list[str] | tuple[str, ...] = ()) -> TrainConfig:
    """The training config of an already read (and overridden) config dict ``raw``, as stored in a training
    checkpoint's meta; ``path``: the file it came from (messages, the run name)."""
    kind = raw.get("model")
    if isinstance(kind, dict):
        kind = "codec" if "audio_encoder" in kind else None
    elif kind is None:
        kind = "waveglow" if "waveglow_config" in raw else "bigvgan" if "upsample_rates" in raw else None
    readable = ("bigvgan", "waveglow", "codec")  # the families with a training config reader (trainers: registry)
    if kind not in readable:
        raise UserError(f"{path}: cannot tell the model; set \"model\" to one of bigvgan, waveglow, or give NeMo's "
                        "codec YAML (its model: section)")
    stem = os.path.splitext(os.path.basename(path))[0]
    model = {k: v for k, v in raw.items() if k not in ("train", "model")}
    codec = None
    if kind != "codec" and isinstance(raw.get("train"), dict) and raw["train"].get("seed") is not None:
        raise UserError(f"{path}: train.seed is for the codec; set the official \"seed\" key instead")
    if kind == "codec":
        from jaxvoc.train.codec_config import CodecTrainingConfig, resolve

        resolved = resolve(raw, path)
        model = resolved["model"]
        codec = CodecTrainingConfig.from_dict(model, path)
        if codec.train_ds is None or codec.train_ds.dataset.n_samples is None:
            raise UserError(f"{path}: model.train_ds.dataset.n_samples (the training crop) is not set; start from "
                            "NeMo's codec config")
        if codec.train_ds.dataset.sample_rate != codec.sample_rate:
            raise UserError(f"{path}: model.train_ds.dataset.sample_rate ({codec.train_ds.dataset.sample_rate}) "
                            f"differs from model.sample_rate ({codec.sample_rate})")
        train = _settings(resolved.get("train"), path, {})
        batch_size, segment_size = codec.train_ds.batch_size, codec.train_ds.dataset.n_samples
        sampling_rate = codec.sample_rate
        seed = 1234 if train.seed is None else train.seed
    elif kind == "bigvgan":
        run = load_dataclass(_BigVGANRun, model, path, keep_unknown=True, what="BigVGAN training key",
                             hint="start from an official config")
        train = _settings(raw.get("train"), path, {})
        if train.compute_dtype != "float32":  # only the flow (WaveGlow) task casts its compute
            raise UserError(f"{path}: train.compute_dtype {train.compute_dtype!r} is not supported for BigVGAN "
                            "training (only WaveGlow trains in bfloat16); remove it or set \"float32\"")
        batch_size, segment_size, sampling_rate, seed = run.batch_size, run.segment_size, run.sampling_rate, run.seed
    else:
        for sec in ("train_config", "data_config", "waveglow_config"):
            if not isinstance(raw.get(sec), dict):
                raise UserError(f"{path} lacks the WaveGlow section {sec!r}; start from the official config.json")
        tc = load_dataclass(_WaveGlowTrain, raw["train_config"], path, keep_unknown=True, prefix="train_config.",
                            hint="start from the official config.json")
        dc = load_dataclass(_WaveGlowData, raw["data_config"], path, keep_unknown=True, prefix="data_config.",
                            hint="start from the official config.json")
        over = {}
        if dc.training_files:
            over["input_training_file"] = dc.training_files
        if tc.output_directory:
            over["checkpoint_path"] = tc.output_directory
        if tc.iters_per_checkpoint:
            over["checkpoint_interval"] = tc.iters_per_checkpoint
        if tc.fp16_run:
            over["compute_dtype"] = "bfloat16"
        train = _settings(raw.get("train"), path, over)
        batch_size, segment_size, sampling_rate, seed = tc.batch_size, dc.segment_length, dc.sampling_rate, tc.seed
    run_dir = os.path.abspath(train.checkpoint_path or os.path.join("runs", stem))
    return TrainConfig(path=os.path.abspath(path), kind=kind, raw=raw, model=model, train=train,
                       batch_size=batch_size, segment_size=segment_size, sampling_rate=sampling_rate, seed=seed,
                       run_dir=run_dir, overrides=list(overrides), codec=codec)
