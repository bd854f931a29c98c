"""WaveGlow checkpoints: both published layouts (full-object pickles from module ``glow`` / ``glow_old``,
the old unfused WN layouts), state dicts (wrapped / bare / ``module.``), config inference, the restricted
unpickler's refusals (the payload must not run), and bad input through the CLI.

Outputs are compared with the official code running the same weights (SNR >= 100 dB, as tests/
test_waveglow.py explains); conversions of the same weights in different layouts must give identical
parameters (the fusion is a concatenation, no arithmetic).
"""

from __future__ import annotations

import copy
import dataclasses
import json
import os
import pickle
import pickletools
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

from conversion import common, safe_pickle
from conversion import waveglow as cw
from conversion.report import snr_db
from jaxvoc.models import waveglow as wg
from jaxvoc.errors import UserError
from conftest import REPO, assert_user_error, run_cli

CFG = wg.WaveGlowConfig(n_flows=5, n_early_every=2, n_early_size=2, WN_config=wg.WNConfig(3, 16, 3))


@pytest.fixture(scope="module")
def model():
    m = cw.official_model(CFG, seed=0)
    cw.randomize_(m, 0)
    return cw.detach_weight_norm_(m)


@pytest.fixture(scope="module")
def reference(model, tmp_path_factory):
    """Parameters converted from the current published layout (glow.WaveGlow, fused, zip format)."""
    path = cw.save_full_object(str(tmp_path_factory.mktemp("ref") / "wg.pt"), model)
    return cw.convert(path)


def clone(m):
    return copy.deepcopy(cw.detach_weight_norm_(m))


def assert_same_params(a: dict, b: dict) -> None:
    fa, fb = common.flatten(a), common.flatten(b)
    assert fa.keys() == fb.keys(), set(fa) ^ set(fb)
    for k in fa:
        assert np.array_equal(np.asarray(fa[k]), np.asarray(fb[k])), k


def infer_both(official, params, cfg, frames=8, sigma=0.7, seed=0, f64=False):
    """(official infer, jaxvoc infer) on the same random mel and noise; with ``f64``, (official infer, jaxvoc
    infer, official infer in float64)."""
    mel = (np.random.default_rng(seed).standard_normal((1, cfg.n_mel_channels, frames)) - 5).astype(np.float32)
    noise = cw.make_noise(cfg, 1, frames, seed)
    with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise)):
        ref = official.infer(torch.from_numpy(mel), sigma=sigma)[0].numpy()
    if f64:
        m64 = cw.double_model(official)
        with torch.inference_mode(), cw.official_noise(cw.to_torch_noise(noise), dtype=torch.float64):
            ref64 = m64.infer(torch.from_numpy(mel).double(), sigma=sigma)[0].numpy()
    out = jax.jit(lambda p, m, n: wg.WaveGlow(cfg).apply({"params": p}, m, sigma, n, method=wg.WaveGlow.infer))(
        wg.prepare_for_inference(params), jnp.asarray(mel.transpose(0, 2, 1)), [jnp.asarray(n) for n in noise])
    return (ref, np.asarray(out)[0], ref64) if f64 else (ref, np.asarray(out)[0])


def test_published_object_equals_official(model, reference):
    config, params, _ = reference
    assert wg.WaveGlowConfig.from_dict(config) == CFG
    ref, out, ref64 = infer_both(model, params, CFG, f64=True)
    # the acceptance (tests/test_waveglow.py): 110 dB, and the float64 rule (3 dB margin, or 130 dB)
    assert snr_db(out, ref) >= 110
    assert snr_db(out, ref64) >= min(snr_db(ref, ref64) - 3.0, 130), (snr_db(out, ref64), snr_db(ref, ref64))


@pytest.mark.parametrize("layout", ["legacy-format", "state_dict+module.", "bare-state_dict", "cond_layers",
                                    "cond_layers-state_dict", "res+skip+cond_layers"])
def test_layouts_convert_identically(layout, model, reference, tmp_path):
    path = str(tmp_path / "wg.pt")
    m = model
    if layout.startswith("cond_layers") or layout.startswith("res+skip"):
        m = clone(model)
        cw.unfuse_cond_(m)  # glow.py before Aug 2019 / DeepLearningExamples
        if layout.startswith("res+skip"):
            cw.unfuse_res_skip_(m)  # the first release
    if layout == "legacy-format" or layout == "cond_layers":
        cw.save_full_object(path, m, legacy=True)
    elif layout == "state_dict+module.":
        cw.save_state_dict(path, m, prefix="module.")
    elif layout == "cond_layers-state_dict":
        cw.save_state_dict(path, m, prefix="module.")
    elif layout == "bare-state_dict":
        cw.save_state_dict(path, m, wrap=False)
    else:
        cw.save_full_object(path, m)
    config, params, _ = cw.convert(path)
    assert wg.WaveGlowConfig.from_dict(config) == CFG
    assert_same_params(params, reference[1])


def test_unfused_layout_matches_official_convert_model(model, reference, tmp_path):
    """The official convert_model.update_model on the first release's layout gives back the weights our
    conversion reads (it refolds weight norm, hence float32 rounding, not equality)."""
    from waveglow.convert_model import update_model

    old = clone(model)
    cw.unfuse_cond_(old)
    cw.unfuse_res_skip_(old)
    with cw._quiet():
        new = update_model(cw.detach_weight_norm_(old))
    ref, out = infer_both(new, reference[1], CFG)
    assert snr_db(out, ref) >= 100


@pytest.mark.parametrize("split", [False, True])
def test_glow_old(split, tmp_path):
    """glow_old.py models (the first published checkpoints): odd flows couple the other half."""
    cfg = dataclasses.replace(CFG, n_flows=6, n_early_every=4, glow_old=True)
    m = cw.official_model(cfg, seed=1)
    cw.randomize_(m, 1)
    target = clone(m)
    if split:
        cw.unfuse_res_skip_(target)
    path = cw.save_full_object(str(tmp_path / "old.pt"), target, legacy=True)
    with open(path, "rb") as f:
        assert b"glow_old" in f.read()  # the classes are named from module glow_old, as published
    config, params, _ = cw.convert(path)
    got = wg.WaveGlowConfig.from_dict(config)
    assert got.glow_old and got == cfg
    ref, out = infer_both(m, params, cfg)
    assert snr_db(out, ref) >= 100
    if split:
        return
    # the same weights read as a glow.py model give other audio: the flag matters
    plain = dataclasses.replace(cfg, glow_old=False)
    _, out_plain = infer_both(m, params, plain)
    assert snr_db(out_plain, ref) < 40


def test_config_inferred_from_shapes(tmp_path):
    """A state dict carries no config: it is inferred from the shapes (incl. where nothing leaves early)."""
    for cfg in (CFG, dataclasses.replace(CFG, n_flows=3, n_early_every=4, n_group=12, n_early_size=4),
                dataclasses.replace(CFG, n_flows=7, n_early_every=3, n_early_size=4, n_group=16,
                                    WN_config=wg.WNConfig(2, 8, 5))):
        m = cw.official_model(cfg, seed=2)
        config, _, _ = cw.convert(cw.save_state_dict(str(tmp_path / "sd.pt"), m))
        got = wg.WaveGlowConfig.from_dict(config)
        assert got.WN_config == cfg.WN_config and got.n_flows == cfg.n_flows and got.n_group == cfg.n_group
        assert [got.remaining_channels(k) for k in range(cfg.n_flows)] == \
               [cfg.remaining_channels(k) for k in range(cfg.n_flows)]


def test_config_file(model, reference, tmp_path):
    path = cw.save_state_dict(str(tmp_path / "sd.pt"), model)
    official = {"train_config": {"sigma": 1.0}, "data_config": {"sampling_rate": 22050, "filter_length": 1024,
                                                                "hop_length": 256, "win_length": 1024,
                                                                "mel_fmin": 0.0, "mel_fmax": 8000.0},
                "waveglow_config": cw.official_config_kwargs(CFG)}
    cfile = tmp_path / "config.json"
    cfile.write_text(json.dumps(official))
    config, params, _ = cw.convert(path, str(cfile))
    assert wg.WaveGlowConfig.from_dict(config) == CFG
    assert_same_params(params, reference[1])
    wrong = dict(official, waveglow_config=dict(official["waveglow_config"], WN_config=dict(
        n_layers=3, n_channels=32, kernel_size=3)))
    cfile.write_text(json.dumps(wrong))
    with pytest.raises(UserError, match="wrong shape"):
        cw.convert(path, str(cfile))


# ----------------------------------------------------------------------------------------------------------
# The restricted unpickler


class _System:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


class _Eval:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (eval, (f"open({self.marker!r}, 'w').close()",))


class _CallsModelClass:
    """Calls an allowed class (glow.WaveGlow) instead of restoring it: refused too."""

    def __reduce__(self):
        from waveglow.glow import WaveGlow

        return (WaveGlow, (80, 2, 8, 4, 2, {"n_layers": 2, "n_channels": 8, "kernel_size": 3}))


@pytest.mark.parametrize("payload", ["os.system", "os.system-legacy-inside-model", "eval", "call-model-class"])
def test_malicious_pickle_refused_and_not_run(payload, model, tmp_path):
    marker = tmp_path / "PWNED"
    path = str(tmp_path / "evil.pt")
    if payload == "os.system":
        torch.save({"model": _System(marker)}, path)
    elif payload == "os.system-legacy-inside-model":
        with cw.module_alias("glow", "glow"):
            torch.save({"model": model, "hook": _System(marker)}, path, _use_new_zipfile_serialization=False)
    elif payload == "eval":
        torch.save({"state_dict": {"x": torch.zeros(1)}, "meta": _Eval(marker)}, path)
    else:
        with cw.module_alias("glow", "glow"):
            torch.save({"model": _CallsModelClass()}, path)
    with pytest.raises(UserError) as e:
        cw.convert(path)
    msg = str(e.value)
    assert "refused" in msg and "\n" not in msg, msg
    assert ("WaveGlow" in msg) if payload == "call-model-class" else ("system" in msg or "eval" in msg), msg
    assert not marker.exists()


def test_malicious_payload_is_live(tmp_path):
    """Control: the same kind of file does run its payload under a plain pickle load, so the refusal above
    is what keeps it from running (run in a subprocess, the payload only touches a file in tmp_path)."""
    marker = tmp_path / "PWNED"
    path = str(tmp_path / "evil.pt")
    torch.save({"model": _System(marker)}, path)
    code = f"import torch; torch.load({path!r}, weights_only=False)"
    subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, timeout=120)
    assert marker.exists()


def test_safe_pickle_plain_data(tmp_path):
    path = str(tmp_path / "plain.pt")
    from collections import OrderedDict

    obj = {"sd": OrderedDict(a=torch.arange(6.0).reshape(2, 3), b=torch.nn.Parameter(torch.ones(2))),
           "s": {1, 2}, "t": (1, "x", None), "half": torch.ones(3, dtype=torch.float16)}
    torch.save(obj, path)
    got = safe_pickle.load(path)
    assert isinstance(got["sd"], OrderedDict) and torch.equal(got["sd"]["a"], obj["sd"]["a"])
    assert got["s"] == {1, 2} and got["t"] == (1, "x", None) and got["half"].dtype == torch.float16
    # a torch module comes back as an inert record with its state dict
    lin = torch.nn.Linear(3, 2)
    torch.save({"m": lin}, path)
    rec = safe_pickle.load(path)["m"]
    assert isinstance(rec, safe_pickle.Record) and rec.qualified_name == "torch.nn.modules.linear.Linear"
    sd = safe_pickle.module_state_dict(rec)
    assert set(sd) == {"weight", "bias"} and torch.equal(sd["weight"], lin.weight.detach())
    with pytest.raises(safe_pickle.RefusedPickle):
        type(rec)()  # records cannot be called into existence
    # a class of a module that is not allowed is refused, even as a plain object
    with open(path, "wb") as f:
        pickle.dump({"x": _Eval("nothing")}, f, protocol=2)
    with pytest.raises(UserError, match="refused"):
        safe_pickle.load(path)
    ops = {op.name for op, _, _ in pickletools.genops(open(path, "rb").read())}
    assert "REDUCE" in ops


# ----------------------------------------------------------------------------------------------------------
# CLI


@pytest.fixture(scope="module")
def ckpt(model, tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    src = cw.save_full_object(str(d / "waveglow.pt"), model)
    proc = run_cli("convert", "waveglow", src, d / "ck")
    assert proc.returncode == 0, proc.stderr
    return d / "ck"


def test_cli_synth(model, ckpt, tmp_path):
    """jaxvoc synth with a WaveGlow checkpoint, default buckets, --sigma 0.5 --seed 7 --denoise 0.1, two files
    of different lengths: each file equals the official infer (given the draws jaxvoc's seed gives that file:
    a function of the seed and the sample position alone) followed by the official Denoiser, on that file
    alone; float32 >= 110 dB and the float64 rule (tests/test_waveglow.py, assert_infer_equivalent)."""
    import soundfile as sf
    from waveglow.denoiser import Denoiser

    from tests.test_waveglow import assert_infer_equivalent

    rng = np.random.default_rng(0)
    mels = {"a": (rng.standard_normal((80, 20)) - 5).astype(np.float32),
            "b": (rng.standard_normal((80, 45)) - 5).astype(np.float32)}
    for name, mel in mels.items():
        np.save(tmp_path / f"{name}.npy", mel)
    out = tmp_path / "out"
    proc = run_cli("synth", ckpt, tmp_path / "a.npy", tmp_path / "b.npy", "-o", out, "--sigma", "0.5", "--seed",
                   "7", "--denoise", "0.1", "--subtype", "FLOAT")
    assert proc.returncode == 0, proc.stderr
    m64 = cw.double_model(model)
    for name, mel in mels.items():
        y, sr = sf.read(out / f"{name}.wav", dtype="float32")
        frames = mel.shape[1]
        assert sr == 22050 and y.shape == (frames * 256,)
        groups = frames * 256 // CFG.n_group
        draws = [np.asarray(n) for n in wg.positional_noise(CFG, jax.random.PRNGKey(7), jnp.zeros(1, jnp.int32),
                                                             groups)]
        refs = []
        for net, dtype in ((model, torch.float32), (m64, torch.float64)):
            with torch.inference_mode(), cw.official_denoiser_on_cpu(float64=dtype == torch.float64):
                with cw.official_noise(seed=0, dtype=dtype):  # its bias audio: sigma 0, the draws do not matter
                    den = Denoiser(net)
                with cw.official_noise(cw.to_torch_noise(draws), dtype=dtype):
                    audio = net.infer(torch.from_numpy(mel[None]).to(dtype), sigma=0.5)
                refs.append(den(audio, 0.1)[0, 0].numpy())
        assert_infer_equivalent(y, *refs)


def test_cli_convert_bad_inputs(model, tmp_path):
    marker = tmp_path / "PWNED"
    evil = str(tmp_path / "evil.pt")
    torch.save({"model": _System(marker)}, evil)
    out = tmp_path / "out"
    assert_user_error(run_cli("convert", "waveglow", evil, out), "refused", "system")
    assert not marker.exists() and not out.exists()

    good = cw.save_full_object(str(tmp_path / "good.pt"), model)
    data = open(good, "rb").read()
    trunc = tmp_path / "trunc.pt"
    trunc.write_bytes(data[: len(data) // 2])
    text = tmp_path / "text.pt"
    text.write_text("not a checkpoint\n")
    sd = {k: v for k, v in model.state_dict().items() if k != "WN.1.cond_layer.bias"}
    missing = tmp_path / "missing.pt"
    torch.save({"state_dict": sd}, missing)
    cases = [(trunc, ["truncated"]), (text, ["not"]), (missing, ["missing", "cond_layer"]),
             (tmp_path / "nope.pt", ["not found"])]
    # several bad inputs in one process (one-line errors, exit 2, nothing written): the CLI's main()
    script = ("import sys; from jaxvoc.cli import main\n"
              "codes = [main(['convert', 'waveglow', p, sys.argv[1]]) for p in sys.argv[2:]]\n"
              "print(codes)\n")
    proc = subprocess.run([sys.executable, "-c", script, str(out), *[str(p) for p, _ in cases]],
                          capture_output=True, text=True, cwd=REPO, timeout=600,
                          env=dict(os.environ, PYTHONPATH=REPO, PYTHONWARNINGS="ignore"))
    assert proc.stdout.strip() == str([2] * len(cases)), (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr
    lines = [l for l in proc.stderr.splitlines() if l.startswith("jaxvoc: error:")]
    assert len(lines) == len(cases), proc.stderr
    for line, (_, needles) in zip(lines, cases):
        for n in needles:
            assert n.lower() in line.lower(), (n, line)
    assert not out.exists()

    # a config that does not fit the weights, through the real CLI
    cfile = tmp_path / "config.json"
    cfile.write_text(json.dumps({"waveglow_config": dict(cw.official_config_kwargs(CFG), n_flows=6)}))
    assert_user_error(run_cli("convert", "waveglow", good, out, "--config", cfile), "does not fit")
    assert not out.exists()


def test_cli_synth_bad_mel(ckpt, tmp_path):
    np.save(tmp_path / "m100.npy", np.zeros((100, 10), np.float32))
    out = tmp_path / "out"
    assert_user_error(run_cli("synth", ckpt, tmp_path / "m100.npy", "-o", out), "100 mel bands", "80")
    assert not (out / "m100.wav").exists()


def test_compare(model, tmp_path):
    """jaxvoc compare's WaveGlow side: the official model rebuilt from the converted tensors vs jaxvoc."""
    import argparse

    import soundfile as sf

    from conftest import speech

    wav = tmp_path / "in.wav"
    sf.write(wav, speech(22050)[13000:13000 + 12 * 256], 22050, subtype="FLOAT")
    src = cw.save_full_object(str(tmp_path / "wg.pt"), model)
    res = cw.compare(argparse.Namespace(src=src, input=str(wav), device="cpu", config=None, sigma=0.6, seed=3,
                                        repeats=1))
    assert res["snr_db"] >= 100 and res["z_snr_db"] >= 110
    assert res["frames"] == 13 and res["reference"].shape == res["jax"].shape == (13 * 256,)
    with pytest.raises(UserError, match="CPU only"):
        cw.compare(argparse.Namespace(src=src, input=str(wav), device="gpu", config=None, sigma=0.6, seed=3,
                                      repeats=1))
