"""The one list of model families. Adding a model is its module under ``jaxvoc/models/`` plus one line here
(and, when it has them, its converter under ``conversion/`` and its training task under ``jaxvoc/train/``).

Entries are module names, imported on first use: this file imports nothing of jaxvoc's, so every layer may
read it without an upward import.
"""

from __future__ import annotations

import dataclasses
import importlib

from jaxvoc.errors import UserError


@dataclasses.dataclass(frozen=True)
class Family:
    model: str  # defines Pretrained.from_checkpoint(ckpt_dir, meta, fold=True)
    converter: str | None = None  # defines convert(src, config=None) -> Converted, compare(args) (and export)
    trainer: str | None = None  # defines Task(cfg) for jaxvoc train
    # the files a Hugging Face Hub repo of this kind holds (jaxvoc/io/hub.py fetches only these): each entry a
    # tuple of alternative glob patterns, the first present taken, each matching one top-level file; the
    # converter reads the one file, or a folder of them
    hub_files: tuple[tuple[str, ...], ...] = ()
    hub_training_files: tuple[str, ...] = ()  # fetched too for fine-tuning (--with-discriminator)


FAMILIES = {
    "bigvgan": Family("jaxvoc.models.bigvgan", "conversion.bigvgan", "jaxvoc.train.bigvgan",
                      hub_files=(("config.json",), ("bigvgan_generator.pt",)),
                      hub_training_files=("bigvgan_discriminator_optimizer.pt",)),
    "waveglow": Family("jaxvoc.models.waveglow", "conversion.waveglow", "jaxvoc.train.waveglow"),  # not on the Hub
    "codec": Family("jaxvoc.models.codec", "conversion.codec", "jaxvoc.train.codec", hub_files=(("*.nemo",),)),
    "wavlm": Family("jaxvoc.models.wavlm", "conversion.wavlm",
                    hub_files=(("config.json",), ("model.safetensors", "pytorch_model.bin"))),
}


def family(kind: str) -> Family:
    if kind not in FAMILIES:
        raise UserError(f"unknown model kind {kind!r}; choose one of: {', '.join(FAMILIES)}")
    return FAMILIES[kind]


def model_module(kind: str):
    return importlib.import_module(family(kind).model)


def converter_module(kind: str):
    """The torch-aware converter of ``kind`` (conversion/); a missing official package is one UserError."""
    name = family(kind).converter
    if name is None:
        raise UserError(f"there is no converter for {kind} models")
    try:
        return importlib.import_module(name)
    except ImportError as e:
        raise missing_package(e) from None


# the official PyTorch side that conversion/ imports (lazily, inside convert and compare)
OFFICIAL_PACKAGES = ("torch", "torchaudio", "bigvgan", "waveglow", "tacotron2", "nemo")


def is_missing_official(e: ImportError) -> bool:
    return (e.name or "").split(".")[0] in OFFICIAL_PACKAGES


class MissingPackage(UserError):
    """An official package a converter needs is not installed (``name``: the package)."""

    def __init__(self, message: str, name: str):
        super().__init__(message)
        self.name = name


def missing_package(e: ImportError) -> MissingPackage:
    """The one line for an official package (torch, bigvgan, waveglow, nemo) that a converter could not import
    (at load time or lazily, inside convert / compare)."""
    return MissingPackage(f"conversion needs the official PyTorch packages ({e.name or e} is missing); "
                          "install them with `pip install jaxvoc[conversion]` or `make venv`", str(e.name or e))


def convert_with(kind: str, src: str, **kw):
    """``convert(src, **kw)`` of the kind's converter -> Converted(config, params, extra); a missing official
    package, imported when the module loads or lazily inside, is one MissingPackage."""
    mod = converter_module(kind)
    try:
        return mod.convert(src, **kw)
    except ImportError as e:
        if is_missing_official(e):
            raise missing_package(e) from None
        raise


def trainer_module(kind: str):
    name = family(kind).trainer
    if name is None:
        raise UserError(f"{kind} models cannot be trained with jaxvoc train yet")
    return importlib.import_module(name)
