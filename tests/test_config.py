"""jaxvoc.io.config.load_dataclass, the one loader of the dataclass configs (unit tests of jaxvoc's own code),
and the config classes that read through it."""

from __future__ import annotations

import dataclasses
import json
import os
import re
from typing import Any, Literal

import pytest

from conftest import REPO

from jaxvoc.errors import UserError
from jaxvoc.io.config import load_dataclass


@dataclasses.dataclass(frozen=True)
class Inner:
    width: int = dataclasses.field(default=4, metadata={"min": 1, "max": 64})
    name: str = "x"


@dataclasses.dataclass(frozen=True)
class Outer:
    rates: tuple[int, ...] = dataclasses.field(metadata={"min": 1})
    dilations: tuple[tuple[int, ...], ...]
    mode: Literal["a", "b"] = dataclasses.field(default="a", metadata={"lower": True})
    scale: float = 1.0
    limit: float | None = 8.0
    triples: tuple[tuple[int, int, int], ...] | None = None
    flag: bool = False
    inner: Inner = Inner()
    blob: Any = None
    extra: tuple[tuple[str, Any], ...] = dataclasses.field(default=(), metadata={"extra": True})

    def validate(self, source: str = "config") -> None:
        if len(self.rates) != len(self.dilations):
            raise UserError(f"{source}: rates and dilations differ in length")


GOOD = {"rates": [2, 4], "dilations": [[1, 3], [1, 3, 5]]}


def load(**upd):
    return load_dataclass(Outer, {**GOOD, **upd}, "cfg.json")


def refused(needle: str, **upd):
    with pytest.raises(UserError, match=re.escape(needle)) as e:
        load(**upd)
    assert "\n" not in str(e.value)
    return str(e.value)


def test_reads_converts_and_fills_defaults():
    got = load(mode="B", limit=None, triples=[[1, 2, 3]], flag=True, inner={"width": 8}, blob={"k": [1]},
               scale=2)
    assert got == Outer(rates=(2, 4), dilations=((1, 3), (1, 3, 5)), mode="b", scale=2, limit=None,
                        triples=((1, 2, 3),), flag=True, inner=Inner(8, "x"), blob={"k": [1]})
    assert type(got.scale) is int  # an integer in a float field is kept as read (a round trip writes it back)
    assert load(rates=[2.0, 4.0]).rates == (2, 4)  # an integral float is an integer
    default = load()
    assert (default.mode, default.scale, default.limit, default.inner, default.triples) == ("a", 1.0, 8.0, Inner(),
                                                                                           None)
    assert load(scale=None, mode=None) == default  # null means the default where the type does not allow None


def test_unknown_keys_refused_by_name():
    msg = refused("cfg.json: unknown key(s) ['foo', 'bar']", foo=1, bar=2)
    assert "known: blob, dilations" in msg
    refused("unknown key(s) ['inner.wide']", inner={"wide": 3})
    with pytest.raises(UserError, match=re.escape("unknown train setting(s) ['train.foo']; see the docs")):
        load_dataclass(Inner, {"foo": 1}, "c", prefix="train.", what="train setting", hint="see the docs")


def test_unknown_keys_kept_when_asked():
    got = load_dataclass(Outer, {**GOOD, "zeta": 1, "alpha": [2]}, "c", keep_unknown=True)
    assert got.extra == (("zeta", 1), ("alpha", [2]))
    # with the list of known other keys, a kept key that looks like a field's name is a typo
    with pytest.raises(UserError, match=re.escape("unknown key(s) ['ratess']; did you mean 'rates'?")):
        load_dataclass(Outer, {**GOOD, "ratess": [1]}, "c", keep_unknown=True, ignore=("zeta",))
    got = load_dataclass(Outer, {**GOOD, "zeta": 1}, "c", keep_unknown=True, ignore=("zeta",))
    assert got.extra == (("zeta", 1),)


def test_wrong_types_name_key_type_and_value():
    refused("cfg.json: rates must be a list of integers >= 1, got 'ab'", rates="ab")
    refused("rates must be a list of integers >= 1, got [2, 4.5]", rates=[2, 4.5])
    refused("rates must be a list of integers >= 1, got [True, 2]", rates=[True, 2])
    refused("dilations must be a list of lists of integers, got [1, 2]", dilations=[1, 2])
    refused("triples must be a list of lists of 3 integers or null, got [[1, 2]]", triples=[[1, 2]])
    refused("mode must be one of 'a', 'b', got 'c'", mode="c")
    refused("scale must be a number, got '1.0'", scale="1.0")
    refused("scale must be a number, got True", scale=True)
    refused("limit must be a number or null, got [8]", limit=[8])
    refused("flag must be true or false, got 1", flag=1)
    refused("inner.name must be a string, got 3", inner={"name": 3})
    refused("cfg.json: inner must be an object", inner=[1])
    with pytest.raises(UserError, match=re.escape("c: the config must be an object")):
        load_dataclass(Outer, [1, 2], "c")
    long = refused("rates must be", rates="x" * 500)
    assert len(long) < 200 and long.endswith("...")


def test_missing_keys_by_name():
    with pytest.raises(UserError, match=re.escape("cfg.json lacks key(s) ['rates', 'dilations']")):
        load_dataclass(Outer, {}, "cfg.json")
    with pytest.raises(UserError, match=re.escape("c lacks BigVGAN key(s) ['dilations']; give the file")):
        load_dataclass(Outer, {"rates": [1], "dilations": None}, "c", what="BigVGAN key", hint="give the file")


def test_ranges():
    refused("rates must be a list of integers >= 1, got [2, 0]", rates=[2, 0])
    refused("inner.width must be an integer in [1, 64], got 65", inner={"width": 65})
    refused("inner.width must be an integer in [1, 64], got 0", inner={"width": 0})
    assert load(inner={"width": 64}).inner.width == 64


def test_validate_runs_for_rules_across_fields():
    refused("cfg.json: rates and dilations differ in length", rates=[2])


def test_bigvgan_configs_round_trip_and_typos():
    from jaxvoc.models.bigvgan import BigVGANConfig, official_config_path, official_configs

    for name in official_configs():  # every key of the published files comes back, values unchanged
        with open(official_config_path(name)) as f:
            raw = json.load(f)
        cfg = BigVGANConfig.from_dict(raw, name)
        back = cfg.to_dict()
        assert {k: v for k, v in back.items() if k in raw} == raw and json.dumps(back) == json.dumps(
            BigVGANConfig.from_dict(back).to_dict())
    raw = BigVGANConfig.official("bigvgan_v2_24khz_100band_256x").to_dict()
    raw["upsample_rate"] = raw.pop("upsample_rates")
    with pytest.raises(UserError, match=re.escape("['upsample_rate']; did you mean 'upsample_rates'?")):
        BigVGANConfig.from_dict(raw)  # the typo is named before the key it leaves missing
    del raw["upsample_rate"]
    with pytest.raises(UserError, match=re.escape("lacks BigVGAN key(s) ['upsample_rates']")):
        BigVGANConfig.from_dict(raw)
    raw = dict(BigVGANConfig.official("bigvgan_v2_24khz_100band_256x").to_dict(), resblock_kernel_size=[3])
    with pytest.raises(UserError, match=re.escape("['resblock_kernel_size']; did you mean 'resblock_kernel_sizes'")):
        BigVGANConfig.from_dict(raw)
    raw = dict(BigVGANConfig.official("bigvgan_v2_24khz_100band_256x").to_dict(), resblock=2)
    with pytest.raises(UserError, match=re.escape("resblock must be one of '1', '2', got 2")):
        BigVGANConfig.from_dict(raw)
    kept = dict(raw, resblock="1", my_note="hello")
    assert BigVGANConfig.from_dict(kept).to_dict()["my_note"] == "hello"


def test_waveglow_and_train_sections_refuse_unknown_keys(tmp_path):
    from jaxvoc.models.waveglow import WaveGlowConfig
    from jaxvoc.train import config as train_config

    d = WaveGlowConfig().to_dict()
    d["waveglow_config"]["n_flow"] = 3
    with pytest.raises(UserError, match=re.escape("unknown key(s) ['waveglow_config.n_flow']")):
        WaveGlowConfig.from_dict(d)
    d = WaveGlowConfig().to_dict()
    d["waveglow_config"]["WN_config"]["n_layer"] = 3
    with pytest.raises(UserError, match=re.escape("unknown key(s) ['WN_config.n_layer']")):
        WaveGlowConfig.from_dict(d)
    d = WaveGlowConfig().to_dict()
    d["waveglow_config"]["n_flows"] = "12"
    with pytest.raises(UserError, match=re.escape("n_flows must be an integer >= 1, got '12'")):
        WaveGlowConfig.from_dict(d)
    raw = json.load(open(os.path.join(REPO, "experiments", "training", "configs", "waveglow_tiny_smoke.json")))
    raw["train"]["compute_dtype"] = "fp16"
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=re.escape("train.compute_dtype must be one of 'float32', 'bfloat16'")):
        train_config.load(str(tmp_path / "c.json"))
    raw["train"]["compute_dtype"] = "float32"
    raw["train"]["fsdp"] = 0
    (tmp_path / "c.json").write_text(json.dumps(raw))
    with pytest.raises(UserError, match=re.escape("train.fsdp must be an integer >= 1, got 0")):
        train_config.load(str(tmp_path / "c.json"))
