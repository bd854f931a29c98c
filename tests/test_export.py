"""`jaxvoc export`: official checkpoint -> `jaxvoc convert` -> `jaxvoc export` -> the official code loads the
result (issue #11, item 3). For each family the source is written by the official code (random weights, fixed
seeds, norms/biases/gains randomised so that a mix-up shows); the exported tensors must be bitwise those of
the source and the official model's output on a short input identical (torch.equal: the same weights in the
same official code compute the same thing, so no tolerance is needed)."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch

from conftest import assert_user_error
from test_codec import cli

BIGVGAN = "bigvgan_v2_24khz_100band_256x"  # the published v2 layout (CQTD); reduced width, published kernels


def assert_same_state(src: dict, out: dict, what: str) -> None:
    """Same keys in the same order, every tensor bitwise equal with the same dtype."""
    assert list(src) == list(out), (what, set(src) ^ set(out))
    for k in src:
        assert src[k].dtype == out[k].dtype and torch.equal(src[k], out[k]), (what, k)


def not_wavlm(sd: dict) -> dict:
    """A NeMo codec state dict without the SLM discriminator's WavLM (not part of a jaxvoc codec checkpoint:
    see test_export_codec_round_trip)."""
    return {k: v for k, v in sd.items() if ".slm_model.ssl_model." not in k}


def assert_same_optimizer(src: dict, out: dict, what: str) -> None:
    assert src["state"].keys() == out["state"].keys(), what
    for pid, st in src["state"].items():
        assert st.keys() == out["state"][pid].keys(), (what, pid)
        for k, v in st.items():
            assert torch.equal(v, out["state"][pid][k]) and v.dtype == out["state"][pid][k].dtype, (what, pid, k)
    # the source optimizer had no LR scheduler; the export adds initial_lr, as train.py's scheduler does
    ga, gb = dict(src["param_groups"][0]), dict(out["param_groups"][0])
    assert gb.pop("initial_lr") == ga.pop("initial_lr", ga["lr"]), what
    assert ga == gb, (what, ga, gb)


# ----------------------------------------------------------------------------------------------------------
# BigVGAN


@pytest.fixture(scope="module")
def bigvgan_round_trip(tmp_path_factory):
    """A published folder with the discriminator/optimizer file (train.py's layout after one AdamW step),
    converted and exported through the CLI."""
    from conversion import bigvgan as cb
    from test_bigvgan_gan import _train_folder

    tmp = tmp_path_factory.mktemp("export_bigvgan")
    config, folder, *_, state = _train_folder(tmp, BIGVGAN)
    torch.save(state, os.path.join(folder, cb.DISCRIMINATOR_FILE))
    proc = cli("convert", "bigvgan", folder, tmp / "ckpt")
    assert proc.returncode == 0, proc.stderr
    proc = cli("export", tmp / "ckpt", tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return config, folder, str(tmp / "out")


def test_export_bigvgan_round_trip(bigvgan_round_trip):
    from conversion import bigvgan as cb

    config, folder, out = bigvgan_round_trip
    assert sorted(os.listdir(out)) == sorted(os.listdir(folder))
    with open(os.path.join(out, "config.json")) as f:
        h = json.load(f)
    assert {k: h[k] for k in config} == config and not any(k.startswith("jaxvoc_") for k in h)
    src = torch.load(os.path.join(folder, cb.GENERATOR_FILE), weights_only=True)["generator"]
    exp = torch.load(os.path.join(out, cb.GENERATOR_FILE), weights_only=True)["generator"]
    assert_same_state(src, exp, "generator")

    a, b = cb.official_model(config, src), cb.official_model(h, exp)  # the exported folder as NVIDIA's code reads it
    mel = torch.from_numpy(np.random.default_rng(0).normal(-5, 2, (1, config["num_mels"], 12)).astype(np.float32))
    with torch.no_grad():
        ya, yb = a(mel), b(mel)
    assert ya.abs().max() > 1e-3 and torch.equal(ya, yb)

    d_src = torch.load(os.path.join(folder, cb.DISCRIMINATOR_FILE), weights_only=True)
    d_exp = torch.load(os.path.join(out, cb.DISCRIMINATOR_FILE), weights_only=True)
    assert d_src.keys() == d_exp.keys()
    for name in ("mpd", "mrd"):
        assert_same_state(d_src[name], d_exp[name], name)
    for name in ("optim_g", "optim_d"):
        assert_same_optimizer(d_src[name], d_exp[name], name)
    assert (d_exp["steps"], d_exp["epoch"]) == (d_src["steps"], d_src["epoch"])

    # train.py's resume: discriminators and both AdamW optimizers load the exported file
    mpd, mrd = cb.official_discriminators(h)
    mpd.load_state_dict(d_exp["mpd"])
    mrd.load_state_dict(d_exp["mrd"])
    optim_g, optim_d = cb.official_optimizers(h, b, mpd, mrd)
    optim_g.load_state_dict(d_exp["optim_g"])
    optim_d.load_state_dict(d_exp["optim_d"])
    y = torch.from_numpy(np.random.default_rng(1).normal(0, 0.3, (1, 1, 4096)).astype(np.float32))
    mpd_src, mrd_src = cb.official_discriminators(config)
    mpd_src.load_state_dict(d_src["mpd"])
    mrd_src.load_state_dict(d_src["mrd"])
    with torch.no_grad():
        for m_src, m_exp in ((mpd_src, mpd), (mrd_src, mrd)):
            ra, rb = m_src(y, y * 0.5)[0], m_exp(y, y * 0.5)[0]
            assert all(torch.equal(p, q) for p, q in zip(ra, rb))


def test_export_bigvgan_parametrizations_keys(tmp_path):
    """A source saved with torch's newer weight-norm keys (parametrizations.weight.original0/1) is exported
    with the same keys; no discriminator file in the source, none in the export. The published 44 kHz 512x
    config (its upsampling, kernel and dilation sizes) at 128 channels."""
    from conversion import bigvgan as cb
    from jaxvoc.models.bigvgan import official_config_path

    with open(official_config_path("bigvgan_v2_44khz_128band_512x")) as f:
        config = dict(json.load(f), upsample_initial_channel=128)  # 2 channels at the last of 6 stages
    folder = cb.write_official_folder(str(tmp_path / "src"), config, seed=5, parametrizations=True)
    assert cli("convert", "bigvgan", folder, tmp_path / "ckpt").returncode == 0
    proc = cli("export", tmp_path / "ckpt", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["bigvgan_generator.pt", "config.json"]
    src = torch.load(os.path.join(folder, cb.GENERATOR_FILE), weights_only=True)["generator"]
    exp = torch.load(tmp_path / "out" / cb.GENERATOR_FILE, weights_only=True)["generator"]
    assert any(".parametrizations.weight.original0" in k for k in exp)
    assert_same_state(src, exp, "generator")
    with open(tmp_path / "out" / "config.json") as f:
        assert json.load(f) == config


# ----------------------------------------------------------------------------------------------------------
# WaveGlow


@pytest.mark.parametrize("glow_old", [False, True], ids=["glow", "glow_old"])
def test_export_waveglow_round_trip(tmp_path, glow_old):
    """A published full-object pickle (current glow.py, and the first release's glow_old.py with per-layer
    cond_layers) -> convert -> export -> the official class of that model loads waveglow.pt built from the
    exported config.json."""
    from conversion import waveglow as cw
    from jaxvoc.models import waveglow as wg
    from waveglow import glow, glow_old as old_module

    cfg = wg.WaveGlowConfig(n_flows=5, n_early_every=4 if glow_old else 2, n_early_size=2,  # glow_old: fixed 4
                            WN_config=wg.WNConfig(3, 16, 3), glow_old=glow_old)
    model = cw.official_model(cfg, seed=2)
    cw.randomize_(model, 2)
    src_path = cw.save_full_object(str(tmp_path / "waveglow_256channels.pt"), cw.detach_weight_norm_(model))
    assert cli("convert", "waveglow", src_path, tmp_path / "ckpt").returncode == 0
    proc = cli("export", tmp_path / "ckpt", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert sorted(os.listdir(tmp_path / "out")) == ["config.json", "waveglow.pt"]
    with open(tmp_path / "out" / "config.json") as f:
        h = json.load(f)
    assert set(h) == {"waveglow_config", "data_config"} | ({"glow_old"} if glow_old else set())
    exp = torch.load(tmp_path / "out" / "waveglow.pt", weights_only=True)["state_dict"]
    with cw._quiet():  # as the official code builds it from config.json
        loaded = (old_module if glow_old else glow).WaveGlow(**h["waveglow_config"])
    loaded.load_state_dict(exp)
    loaded.eval()
    assert_same_state(model.state_dict(), exp, "waveglow")

    mel = torch.from_numpy(np.random.default_rng(0).normal(-5, 2, (1, cfg.n_mel_channels, 6)).astype(np.float32))
    audio = torch.from_numpy(np.random.default_rng(1).normal(0, 0.3, (1, 5 * 256)).astype(np.float32))
    with torch.no_grad():
        if not glow_old:  # glow_old.py has no training direction
            assert torch.equal(model((mel, audio))[0], loaded((mel, audio))[0])
        with cw.official_noise(seed=3):
            ya = model.infer(mel, sigma=0.6)
        with cw.official_noise(seed=3):
            yb = loaded.infer(mel, sigma=0.6)
    assert ya.abs().max() > 1e-3 and torch.equal(ya, yb)


# ----------------------------------------------------------------------------------------------------------
# Codec


@pytest.fixture(scope="module")
def codec_round_trip(tmp_path_factory):
    """A real .nemo written by NeMo (encoder, FSQ, decoder, discriminators), converted and exported."""
    from conversion import codec as cc

    from test_codec import narrow_config

    tmp = tmp_path_factory.mktemp("export_codec")
    src = str(tmp / "src.nemo")
    model = cc.write_nemo(src, narrow_config(discriminator=True), seed=4)
    assert cli("convert", "codec", src, tmp / "ckpt").returncode == 0
    proc = cli("export", tmp / "ckpt", tmp / "out")
    assert proc.returncode == 0, proc.stderr
    return src, model, tmp / "out"


def _nemo_weights(path: str) -> dict:
    from conversion import codec as cc

    with cc.open_nemo(path) as (_, ckpt):
        return torch.load(ckpt, weights_only=True)


def test_export_codec_round_trip(codec_round_trip):
    """-> NeMo's restore_from: every tensor bitwise, and NeMo's encode/decode of the restored model identical."""
    from conversion import codec as cc
    from nemo.collections.tts.models import AudioCodecModel

    src, model, out = codec_round_trip
    assert os.listdir(out) == ["model.nemo"]
    restored = AudioCodecModel.restore_from(str(out / "model.nemo"), map_location="cpu").eval()
    # The SLM discriminator's WavLM is not part of a jaxvoc codec checkpoint (it comes from its own, `jaxvoc
    # convert wavlm`; NeMo 3.0.0 means to leave it out of its archives too, but its key filter misses
    # `.slm_model.ssl_model.`): the restored model keeps the WavLM it builds itself, everything else is bitwise.
    src_sd, out_sd = not_wavlm(model.state_dict()), not_wavlm(restored.state_dict())
    assert any(k.startswith("discriminator.") for k in out_sd)
    assert_same_state(src_sd, out_sd, "codec")
    # restore_from loads non-strictly: the archive itself must hold every weight NeMo saves, but for WavLM and
    # the buffers NeMo recomputes from the config (loss filterbanks, the STFT discriminators' windows, the SLM's
    # resampling kernel: equal above all the same)
    recomputed = lambda k: k.startswith(("mel_loss_fn.", "stft_loss_fn.")) or k.endswith((".window", ".resample.kernel"))
    held, saved = _nemo_weights(str(out / "model.nemo")), not_wavlm(_nemo_weights(src))
    assert set(k for k in saved if not recomputed(k)) == set(held)

    audio = np.random.default_rng(0).normal(0, 0.2, (1, 4 * 1024)).astype(np.float32)
    tok_a, _ = cc.nemo_encode(model, audio)
    tok_b, _ = cc.nemo_encode(restored, audio)
    assert np.array_equal(tok_a, tok_b)
    ya, _ = cc.nemo_decode(model, tok_a)
    yb, _ = cc.nemo_decode(restored, tok_a)
    assert np.abs(ya).max() > 1e-3 and np.array_equal(ya, yb)


def test_export_codec_keeps_weight_g_keys(codec_round_trip, tmp_path):
    """A .nemo whose weights use the older weight_g / weight_v keys is exported with those keys (the same
    tensors), and NeMo still loads it (torch's compatibility hook maps them onto its parametrizations)."""
    import io
    import tarfile

    from conversion import codec as cc
    from nemo.collections.tts.models import AudioCodecModel

    src, model, _ = codec_round_trip
    old = {k.replace(".parametrizations.weight.original0", ".weight_g")
           .replace(".parametrizations.weight.original1", ".weight_v"): v for k, v in _nemo_weights(src).items()}
    path = str(tmp_path / "old.nemo")
    with tarfile.open(src) as tf_in, tarfile.open(path, "w:") as tf_out:
        for m in tf_in.getmembers():
            data = tf_in.extractfile(m).read() if m.isfile() else None
            if m.name.endswith(cc.WEIGHTS_NAME):
                buf = io.BytesIO()
                torch.save(old, buf)
                data = buf.getvalue()
                m.size = len(data)
            tf_out.addfile(m, io.BytesIO(data) if data is not None else None)
    assert cli("convert", "codec", path, tmp_path / "ckpt").returncode == 0
    assert cli("export", tmp_path / "ckpt", tmp_path / "out").returncode == 0
    held = _nemo_weights(str(tmp_path / "out" / "model.nemo"))
    assert any(k.endswith(".weight_g") for k in held) and not any(".parametrizations." in k for k in held)
    for k, v in held.items():
        assert torch.equal(v, old[k]), k
    restored = AudioCodecModel.restore_from(str(tmp_path / "out" / "model.nemo"), map_location="cpu")
    assert_same_state(not_wavlm(model.state_dict()), not_wavlm(restored.state_dict()), "codec")


# ----------------------------------------------------------------------------------------------------------
# Errors: one line, exit 2, no output


def test_export_errors(bigvgan_round_trip, tmp_path):
    from conftest import absent_packages_env

    import subprocess
    import sys

    from conftest import REPO

    _, folder, out = bigvgan_round_trip
    ckpt = os.path.join(os.path.dirname(out), "ckpt")
    assert_user_error(cli("export", ckpt, out), "exists", "--overwrite")
    assert_user_error(cli("export", folder, tmp_path / "o1"), "not a jaxvoc checkpoint")
    assert_user_error(cli("export", tmp_path / "nothing", tmp_path / "o2"), "not found")
    (tmp_path / "file").write_text("x")
    assert_user_error(cli("export", ckpt, tmp_path / "file" / "o3"), "file is in the way")
    # a checkpoint whose config does not fit its weights: refused by the official model's strict load
    import shutil

    bad = tmp_path / "bad"
    shutil.copytree(ckpt, bad)
    meta = json.loads((bad / "jaxvoc.json").read_text())
    meta["config"]["resblock_kernel_sizes"] = [5]  # the weights have kernel 3
    (bad / "jaxvoc.json").write_text(json.dumps(meta))
    assert_user_error(cli("export", bad, tmp_path / "o4"), "does not fit the official model")
    # a kind without an official format to go back to
    wavlm = tmp_path / "wavlm"
    wavlm.mkdir()
    (wavlm / "jaxvoc.json").write_text(json.dumps({"format": 1, "kind": "wavlm", "config": {}, "trees": ["params"]}))
    assert_user_error(cli("export", wavlm, tmp_path / "o6"), "wavlm models cannot be exported")
    # the official package missing
    env = absent_packages_env(tmp_path / "site", "bigvgan", base=dict(os.environ, PYTHONWARNINGS="ignore"))
    proc = subprocess.run([sys.executable, "-m", "jaxvoc.cli", "export", ckpt, str(tmp_path / "o5")],
                          capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert_user_error(proc, "bigvgan", "pip install")
    assert not any(p.name.startswith(("o", ".tmp")) for p in tmp_path.iterdir()), list(tmp_path.iterdir())


# ----------------------------------------------------------------------------------------------------------
# A model trained in JAX: the training run folder


def test_export_training_run_folder(tmp_path):
    """`jaxvoc train` (WaveGlow, the tiny smoke config, 22.05 kHz speech, 2 steps) -> `jaxvoc export RUN` (its
    latest checkpoint) -> the official glow.WaveGlow loads waveglow.pt with the exported config.json and
    computes what the trained JAX model computes: the same z in the training direction and the same audio
    from the same noise (>= 110 dB, the project's bound for float32 agreement)."""
    import subprocess
    import sys

    import jax.numpy as jnp
    import soundfile as sf

    import jaxvoc
    from conftest import REPO, speech
    from conversion import waveglow as cw
    from conversion.report import snr_db
    from jaxvoc.models.waveglow import WaveGlow as JaxWaveGlow
    from train_standin import cli_env
    from waveglow.glow import WaveGlow

    os.makedirs(tmp_path / "wavs")
    y = speech(22050)
    for i in range(2):
        sf.write(tmp_path / "wavs" / f"c{i}.wav", y[i * 5000: i * 5000 + 12000], 22050, subtype="PCM_16")
    with open(os.path.join(REPO, "experiments", "training", "configs", "waveglow_tiny_smoke.json")) as f:
        cfg = json.load(f)
    cfg["train_config"].update(batch_size=1, output_directory=str(tmp_path / "run"))
    cfg["data_config"]["segment_length"] = 2048
    cfg["train"] = {"input_wavs_dir": str(tmp_path / "wavs"), "num_validation_files": 0, "training_steps": 2,
                    "checkpoint_interval": 2, "async_checkpointing": False, "stdout_interval": 1}
    (tmp_path / "c.json").write_text(json.dumps(cfg))
    proc = subprocess.run([sys.executable, "-m", "jaxvoc.cli", "train", str(tmp_path / "c.json")],
                          capture_output=True, text=True, cwd=REPO, env=cli_env(), timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    proc = cli("export", tmp_path / "run", tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "training run step 2" in proc.stdout
    with open(tmp_path / "out" / "config.json") as f:
        h = json.load(f)
    with cw._quiet():
        official = WaveGlow(**h["waveglow_config"])
    official.load_state_dict(torch.load(tmp_path / "out" / "waveglow.pt", weights_only=True)["state_dict"])
    official.eval()

    trained = jaxvoc.load(str(tmp_path / "run" / "export"), fold=False)  # what jaxvoc train wrote at the end
    mel = np.random.default_rng(0).normal(-5, 2, (1, 6, 80)).astype(np.float32)
    audio = np.random.default_rng(1).normal(0, 0.3, (1, 5 * 256)).astype(np.float32)
    with torch.no_grad():
        z_ref = official((torch.from_numpy(mel.transpose(0, 2, 1)), torch.from_numpy(audio)))[0].numpy()
    z = np.asarray(trained.forward(jnp.asarray(mel), jnp.asarray(audio))[0]).transpose(0, 2, 1)
    assert snr_db(z, z_ref) >= 110, snr_db(z, z_ref)
    noise = cw.make_noise(trained.config, 1, 6, seed=2)
    with torch.no_grad(), cw.official_noise(cw.to_torch_noise(noise)):
        ref = official.infer(torch.from_numpy(mel.transpose(0, 2, 1)), sigma=0.6)[0].numpy()
    out = np.asarray(trained.module.apply({"params": trained.params}, jnp.asarray(mel), 0.6,
                                          [jnp.asarray(n) for n in noise], method=JaxWaveGlow.infer))[0]
    assert snr_db(out, ref) >= 110, snr_db(out, ref)


def test_export_bigvgan_training_state(bigvgan_round_trip, tmp_path):
    """The path of a training run's checkpoint for BigVGAN, without the cost of training: the converted official
    folder -> `jaxvoc train --init`'s loading into a train state (generator, discriminators, AdamW moments
    into optax) -> the task's export trees -> the official files. Every tensor and optimizer setting is the
    official source's, bitwise; steps and epoch are the train state's (0: --init starts a new run)."""
    from conversion import bigvgan as cb
    from jaxvoc.train import config as config_lib
    from jaxvoc.train.bigvgan import BigVGANTask

    config, folder, out = bigvgan_round_trip
    ckpt = os.path.join(os.path.dirname(out), "ckpt")
    path = tmp_path / "c.json"
    path.write_text(json.dumps({**config, "train": {"input_wavs_dir": str(tmp_path)}}))
    task = BigVGANTask(config_lib.load(str(path)))
    import jax
    import jax.numpy as jnp

    shapes = jax.eval_shape(task.init_state, jax.random.PRNGKey(0), jnp.zeros((1, config["segment_size"]), jnp.float32))
    state = jax.tree_util.tree_map(lambda a: jnp.zeros(a.shape, a.dtype), shapes)  # every leaf is replaced or unused
    state, what = task.apply_init(state, ckpt)
    assert "opt_g moments" in what and "opt_d moments" in what
    h, trees = task.export_trees(jax.device_get(state))  # at step 0, as --init starts: lr = learning_rate
    os.makedirs(tmp_path / "out")
    cb.export(h, trees, str(tmp_path / "out"), "state")
    src = torch.load(os.path.join(folder, cb.GENERATOR_FILE), weights_only=True)["generator"]
    exp = torch.load(tmp_path / "out" / cb.GENERATOR_FILE, weights_only=True)["generator"]
    assert_same_state(src, exp, "generator")
    d_src = torch.load(os.path.join(folder, cb.DISCRIMINATOR_FILE), weights_only=True)
    d_exp = torch.load(tmp_path / "out" / cb.DISCRIMINATOR_FILE, weights_only=True)
    for name in ("mpd", "mrd"):
        assert_same_state(d_src[name], d_exp[name], name)
    for name in ("optim_g", "optim_d"):
        assert_same_optimizer(d_src[name], d_exp[name], name)
    assert d_exp["steps"] == 0 and d_exp["epoch"] == 0


# ----------------------------------------------------------------------------------------------------------
# jaxvoc convert when the disk fills up (simulated by a file size limit): one line, no Orbax noise


def test_convert_write_failure_is_one_line(bigvgan_round_trip, tmp_path):
    """A write that fails half-way through Orbax's save (ulimit -f: EFBIG at 59 KiB, after some arrays are
    written, as a full disk would) ends with the one-line error and nothing else on stderr (Orbax's writes
    still in flight used to print an "Event loop is closed" traceback each), and leaves no output."""
    import subprocess
    import sys

    from conftest import REPO
    from train_standin import cli_env

    _, folder, _ = bigvgan_round_trip
    env = cli_env()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # the cache's own writes would hit the limit first
    out = tmp_path / "ckpt"
    # SIGXFSZ ignored: a write past the limit fails with EFBIG instead of killing the process; 59 KiB
    limit = 'trap "" XFSZ; ulimit -f 59; exec "$@"'
    proc = subprocess.run(["bash", "-c", limit, "bash", sys.executable, "-m", "jaxvoc.cli", "convert", "bigvgan",
                           folder, str(out)], capture_output=True, text=True, cwd=REPO, env=env, timeout=900)
    assert_user_error(proc, "file too large", "ulimit")
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert os.listdir(tmp_path) == [], os.listdir(tmp_path)
