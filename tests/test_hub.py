"""Models by Hugging Face Hub repo id (issue #11, item 2), offline: the test lays out a Hugging Face cache folder
itself (models--nvidia--NAME/{refs, snapshots/COMMIT, blobs}, as huggingface_hub writes it) holding official
files written by the official code (BigVGAN folders, a NeMo codec .nemo, a transformers WavLM folder), and runs with HF_HUB_OFFLINE=1 and
HF_HUB_CACHE / JAXVOC_CACHE in tmp: `jaxvoc convert KIND nvidia/NAME OUT`, `jaxvoc.load("nvidia/NAME")`,
--revision, the converted cache, provenance, only the needed files, and the offline miss as one line."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess

import numpy as np
import pytest

from conftest import absent_packages_env, assert_user_error
from test_codec import cli  # jaxvoc's main() in this process, output captured, warning filters restored

import jax  # noqa: E402

from conversion import bigvgan as cb  # noqa: E402
from conversion.report import snr_db  # noqa: E402
from jaxvoc.errors import UserError  # noqa: E402
from jaxvoc.io import checkpoint  # noqa: E402
from jaxvoc.models.bigvgan import BigVGANConfig  # noqa: E402

BIGVGAN = "nvidia/bigvgan_base_24khz_100band"
CODEC = "nvidia/low-frame-rate-speech-codec-22khz"
WAVLM = "microsoft/wavlm-base-plus"
MAIN, TRAINED, CODEC_COMMIT, WAVLM_COMMIT = "1" * 40, "2" * 40, "3" * 40, "4" * 40
# the published config of that repo, kernel and dilation sizes as published, at 32 channels; its four upsampling
# stages compile in a third of the time of the v2 configs' six
SMALL = dict(BigVGANConfig.official("bigvgan_base_24khz_100band").to_dict(), upsample_initial_channel=32)


def add_snapshot(cache, repo: str, commit: str, files: dict[str, str], refs=()) -> None:
    """Files into a Hugging Face cache as huggingface_hub stores them: blobs named by sha256 (Git LFS files) or
    by git's blob sha1 (small text files), snapshots/COMMIT/NAME relative links to them, refs/REF = commit."""
    folder = os.path.join(cache, "models--" + repo.replace("/", "--"))
    for name, src in files.items():
        data = open(src, "rb").read()
        lfs = name.endswith((".pt", ".nemo"))
        blob = hashlib.sha256(data).hexdigest() if lfs else hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        os.makedirs(os.path.join(folder, "blobs"), exist_ok=True)
        with open(os.path.join(folder, "blobs", blob), "wb") as f:
            f.write(data)
        snap = os.path.join(folder, "snapshots", commit)
        os.makedirs(snap, exist_ok=True)
        os.symlink(os.path.join("..", "..", "blobs", blob), os.path.join(snap, name))
    for ref in refs:
        os.makedirs(os.path.join(folder, "refs"), exist_ok=True)
        with open(os.path.join(folder, "refs", ref), "w") as f:
            f.write(commit)


@pytest.fixture(scope="module")
def hub(tmp_path_factory):
    """A Hugging Face cache with BigVGAN at two commits — main (generator only: a missing discriminator file
    must not matter) and tag 'trained' (train.py's folder, with bigvgan_discriminator_optimizer.pt) — and the
    codec's .nemo and a WavLM folder, each beside a README; plus the official files they were made from."""
    from test_bigvgan_gan import _train_folder

    root = tmp_path_factory.mktemp("hub")
    cache = str(root / "hf")
    main = cb.write_official_folder(str(root / "main"), SMALL, seed=11)
    add_snapshot(cache, BIGVGAN, MAIN, {n: os.path.join(main, n) for n in ("config.json", cb.GENERATOR_FILE)},
                 refs=("main",))
    _, trained, *_, state = _train_folder(root, "bigvgan_base_24khz_100band")
    import torch

    torch.save(state, os.path.join(trained, cb.DISCRIMINATOR_FILE))
    add_snapshot(cache, BIGVGAN, TRAINED, {n: os.path.join(trained, n) for n in os.listdir(trained)},
                 refs=("trained",))
    from conversion import codec as cc
    from test_codec import narrow_config

    nemo = str(root / "low-frame-rate-speech-codec-22khz.nemo")
    codec_model = cc.write_nemo(nemo, narrow_config(), seed=2)
    (root / "README.md").write_text("a model card\n")
    add_snapshot(cache, CODEC, CODEC_COMMIT, {os.path.basename(nemo): nemo, "README.md": str(root / "README.md")},
                 refs=("main",))
    from test_wavlm import SMALL as WAVLM_SMALL, official, save_folder

    wavlm_model = official(WAVLM_SMALL, seed=3)
    wavlm = save_folder(wavlm_model, root / "wavlm")  # transformers' config.json + model.safetensors
    add_snapshot(cache, WAVLM, WAVLM_COMMIT, {n: os.path.join(wavlm, n) for n in ("config.json", "model.safetensors")}
                 | {"README.md": str(root / "README.md")}, refs=("main",))
    return {"cache": cache, "main": main, "trained": trained, "nemo": nemo, "codec_model": codec_model,
            "wavlm": wavlm, "wavlm_model": wavlm_model, "root": root}


@pytest.fixture
def offline(hub, tmp_path, monkeypatch):
    """HF_HUB_OFFLINE=1, the fake Hugging Face cache, a fresh jaxvoc cache; every file huggingface_hub hands
    out is recorded."""
    import huggingface_hub

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", hub["cache"])
    monkeypatch.setenv("JAXVOC_CACHE", str(tmp_path / "jaxvoc_cache"))
    fetched = []
    real = huggingface_hub.hf_hub_download

    def spy(repo_id, filename, **kw):
        fetched.append((repo_id, filename, kw.get("revision"), kw.get("local_files_only")))
        return real(repo_id, filename, **kw)

    monkeypatch.setattr(huggingface_hub, "hf_hub_download", spy)
    return fetched


def same_tree(a, b) -> bool:
    la, lb = jax.tree_util.tree_flatten_with_path(a)[0], jax.tree_util.tree_flatten_with_path(b)[0]
    return len(la) == len(lb) and all(pa == pb and np.array_equal(xa, xb) for (pa, xa), (pb, xb) in zip(la, lb))


def sha256(path: str) -> str:
    return hashlib.sha256(open(path, "rb").read()).hexdigest()


def test_bigvgan_by_repo_id(hub, offline, tmp_path, monkeypatch):
    import torch

    import jaxvoc
    from jaxvoc.io import hub as jhub

    conversions = []
    real_convert = cb.convert
    monkeypatch.setattr(cb, "convert", lambda *a, **k: conversions.append(a) or real_convert(*a, **k))

    model = jaxvoc.load(BIGVGAN)
    # only the generator's two files were asked for, at the commit refs/main names, without the network
    assert sorted(f[1] for f in offline) == ["bigvgan_generator.pt", "config.json"]
    assert {(f[0], f[2], f[3]) for f in offline} == {(BIGVGAN, MAIN, True)}
    assert len(conversions) == 1
    # the official model on the same mel: equal to float32 rounding (the project's bar, 110 dB; a wrong weight,
    # layout or filter gives ~0 dB)
    official = cb.official_model(SMALL, torch.load(os.path.join(hub["main"], cb.GENERATOR_FILE))["generator"])
    mel = np.random.default_rng(0).normal(-5, 2, (1, SMALL["num_mels"], 12)).astype(np.float32)
    with torch.no_grad():
        ref = official(torch.from_numpy(mel)).numpy().reshape(-1)
    out = np.asarray(model(mel.transpose(0, 2, 1))).reshape(-1)
    assert snr_db(out, ref) >= 110, snr_db(out, ref)
    # ... and the very parameters of the local folder's conversion
    local = cb.convert(hub["main"])
    assert same_tree(jaxvoc.load(BIGVGAN, fold=False).params, local.params)

    # cached by repo + the commit the branch resolved to, with the provenance of every source file
    entry = jhub.entry_dir(BIGVGAN, MAIN)
    meta = checkpoint.read_meta(entry)
    src = meta["source"]["hub"]
    assert (src["repo"], src["revision"], src["commit"]) == (BIGVGAN, "main", MAIN)
    assert src["files"] == {n: {"sha256": sha256(os.path.join(hub["main"], n)),
                                "bytes": os.path.getsize(os.path.join(hub["main"], n))}
                            for n in ("config.json", cb.GENERATOR_FILE)}
    # a second load (and a CLI convert of the same repo) reads the cache: no conversion, the entry untouched
    stamp = os.stat(os.path.join(entry, "jaxvoc.json")).st_mtime_ns
    n_conv = len(conversions)
    jaxvoc.load(BIGVGAN + "@main")
    proc = cli("convert", "bigvgan", BIGVGAN, tmp_path / "out")
    assert proc.returncode == 0, proc.stderr
    assert "read from jaxvoc's cache" in proc.stdout and MAIN[:12] in proc.stdout, proc.stdout
    assert len(conversions) == n_conv and os.stat(os.path.join(entry, "jaxvoc.json")).st_mtime_ns == stamp
    assert checkpoint.read_meta(str(tmp_path / "out"))["source"] == meta["source"]
    assert same_tree(checkpoint.load_tree(str(tmp_path / "out")), local.params)

    # --revision picks the other snapshot; without --with-discriminator its discriminator file is not fetched
    del offline[:]
    other = jaxvoc.load(BIGVGAN, revision="trained", fold=False)
    assert sorted(f[1] for f in offline) == ["bigvgan_generator.pt", "config.json"]
    assert {f[2] for f in offline} == {TRAINED}
    gen_cfg, gen_params, _, _ = cb.convert_generator(hub["trained"])
    assert same_tree(other.params, gen_params) and not same_tree(other.params, local.params)
    assert checkpoint.read_meta(jhub.entry_dir(BIGVGAN, TRAINED))["trees"] == ["params"]


def test_bigvgan_with_discriminator_from_the_hub(hub, offline, tmp_path):
    proc = cli("convert", "bigvgan", BIGVGAN, tmp_path / "ft", "--revision", "trained", "--with-discriminator")
    assert proc.returncode == 0, proc.stderr
    assert "converted into jaxvoc's cache" in proc.stdout
    assert sorted(f[1] for f in offline) == ["bigvgan_discriminator_optimizer.pt", "bigvgan_generator.pt",
                                             "config.json"]
    meta = checkpoint.read_meta(str(tmp_path / "ft"))
    assert set(meta["trees"]) >= {"params", "discriminator", "opt_state_g", "opt_state_d"}
    assert sorted(meta["source"]["hub"]["files"]) == sorted(os.listdir(hub["trained"]))
    local = cb.convert(hub["trained"])  # the folder itself, discriminator file and all
    for name in ("params", "discriminator"):
        assert same_tree(checkpoint.load_tree(str(tmp_path / "ft"), name),
                         local.params if name == "params" else local.extra[name]), name
    # compare fetches the official files it needs (not the discriminator's) and runs both models on them
    del offline[:]
    report = tmp_path / "cmp.json"
    proc = cli("compare", "bigvgan", BIGVGAN, "--revision", "trained", "--report", report, "--repeats", "1")
    assert proc.returncode == 0, proc.stderr
    assert sorted(f[1] for f in offline) == ["bigvgan_generator.pt", "config.json"]
    assert json.loads(report.read_text())["src"] == BIGVGAN
    # float32 on both sides through the same weights (as tests/test_published_folder.py): > 100 dB measured at
    # this width; a wrong file or tree gives ~0 dB
    assert json.loads(report.read_text())["runs"][0]["snr_db"] > 60
    # main has no discriminator file: asked for, one line naming it, nothing written
    proc = cli("convert", "bigvgan", BIGVGAN, tmp_path / "ft2", "--with-discriminator")
    assert_user_error(proc, "bigvgan_discriminator_optimizer.pt", "HF_HUB_OFFLINE")
    assert not (tmp_path / "ft2").exists()


def test_codec_by_repo_id(hub, offline):
    from conversion import codec as cc

    import jaxvoc

    codec = jaxvoc.load(CODEC)  # the kind found from the repo's files: one .nemo
    assert codec.kind == "codec"
    assert [f[1] for f in offline] == ["low-frame-rate-speech-codec-22khz.nemo"]  # not the README
    assert same_tree(jaxvoc.load(CODEC, fold=False).params, cc.convert(hub["nemo"]).params)
    # NeMo's decoder and the loaded codec on the same tokens: equal to float32 rounding (110 dB)
    tokens = np.random.default_rng(1).integers(0, codec.config.codebook_size, (1, codec.num_codebooks, 6))
    ref, _ = cc.nemo_decode(hub["codec_model"], tokens)
    out, _ = codec.decode(tokens[0])
    n = min(ref.size, np.asarray(out).size)
    assert snr_db(np.asarray(out).reshape(-1)[:n], ref.reshape(-1)[:n]) >= 110
    from jaxvoc.io import hub as jhub

    meta = checkpoint.read_meta(jhub.converted(CODEC).path)
    assert meta["source"]["hub"]["files"] == {
        "low-frame-rate-speech-codec-22khz.nemo": {"sha256": sha256(hub["nemo"]), "bytes": os.path.getsize(hub["nemo"])}}


def test_wavlm_by_repo_id(hub, offline):
    from conversion import wavlm as cw
    from test_wavlm import assert_equivalent, audio_of, jax_states, official_states

    import jaxvoc

    jm = jaxvoc.load(WAVLM)
    assert jm.kind == "wavlm"
    assert sorted(f[1] for f in offline) == ["config.json", "model.safetensors"]
    assert same_tree(jaxvoc.load(WAVLM, fold=False).params, cw.convert(hub["wavlm"]).params)
    # every hidden state against transformers' (>= 110 dB, and the float64 rule of tests/test_wavlm.py)
    import copy

    audio = audio_of(400 + 20 * 320, batch=1)
    ref, _ = official_states(hub["wavlm_model"], audio)
    ref64, _ = official_states(copy.deepcopy(hub["wavlm_model"]).double(), audio.astype(np.float64))
    out, _ = jax_states(jm, audio)
    for i, (o, r, r64) in enumerate(zip(out, ref, ref64)):
        assert_equivalent(o, r, r64, f"hidden state {i}")


def test_online_resolution_and_an_unreachable_hub(hub, offline, tmp_path, monkeypatch):
    """The online path with huggingface_hub's Hub query answered by a stand-in (no network here): a tag the
    local cache does not know resolves through the Hub, the file is fetched at the commit it names, and
    jaxvoc's cache remembers tag -> commit; with the Hub unreachable the local caches serve."""
    import types

    import huggingface_hub

    import jaxvoc
    from jaxvoc.io import hub as jhub

    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", False)
    asked = []

    def model_info(self, repo_id, revision=None, **kw):
        asked.append((repo_id, revision))
        names = ("README.md", ".gitattributes", "low-frame-rate-speech-codec-22khz.nemo")
        return types.SimpleNamespace(sha=CODEC_COMMIT, siblings=[types.SimpleNamespace(rfilename=n) for n in names])

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", model_info)
    assert jaxvoc.load(CODEC + "@v1").kind == "codec"
    assert asked == [(CODEC, "v1")]
    assert [f[1:] for f in offline] == [("low-frame-rate-speech-codec-22khz.nemo", CODEC_COMMIT, False)]
    # offline, with an empty Hugging Face cache: jaxvoc's cache knows v1 and holds the converted model
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(tmp_path / "empty"))
    assert jhub.converted(CODEC + "@v1").path == jhub.entry_dir(CODEC, CODEC_COMMIT)
    # the Hub unreachable: the local caches serve (main -> the commit in the Hugging Face cache's refs), and a
    # repo that is in neither is one line saying so
    monkeypatch.delenv("HF_HUB_OFFLINE")
    monkeypatch.setenv("HF_HUB_CACHE", hub["cache"])

    def unreachable(self, repo_id, revision=None, **kw):
        raise ConnectionError("no route to host")

    monkeypatch.setattr(huggingface_hub.HfApi, "model_info", unreachable)
    got = jhub.converted(CODEC)
    assert (got.path, got.converted, got.snapshot.online) == (jhub.entry_dir(CODEC, CODEC_COMMIT), False, False)
    with pytest.raises(UserError, match="cannot be reached .ConnectionError: no route to host"):
        jaxvoc.load("nvidia/bigvgan_22khz_80band")


def test_offline_misses_and_bad_requests_are_one_line(hub, offline, tmp_path, monkeypatch):
    import shutil

    import jaxvoc
    from jaxvoc.io import hub as jhub

    for src in (f"{BIGVGAN}@v9", "nvidia/bigvgan_22khz_80band"):  # an unknown tag, a repo never fetched
        with pytest.raises(UserError) as e:
            jaxvoc.load(src)
        assert src.split("@")[-1] in str(e.value) and "HF_HUB_OFFLINE" in str(e.value), str(e.value)
        assert "\n" not in str(e.value)
    assert offline == []  # nothing was asked of huggingface_hub's downloader for either
    with pytest.raises(UserError, match="not a codec model"):
        jaxvoc.load(BIGVGAN, kind="codec")
    with pytest.raises(UserError, match="not a waveglow model"):
        jhub.converted(BIGVGAN, kind="waveglow")
    with pytest.raises(UserError, match="not loaded from the Hugging Face Hub"):
        jhub.select_files("waveglow", jhub.resolve(BIGVGAN))
    assert_user_error(cli("convert", "bigvgan", f"{BIGVGAN}@main", tmp_path / "x", "--revision", "trained"),
                      "--revision says trained")
    # a damaged blob (its content no longer the sha256 it is named by) is refused, not converted
    broken = str(tmp_path / "hf")
    shutil.copytree(hub["cache"], broken, symlinks=True)
    blob = os.path.realpath(os.path.join(broken, "models--" + CODEC.replace("/", "--"), "snapshots", CODEC_COMMIT,
                                         "low-frame-rate-speech-codec-22khz.nemo"))
    with open(blob, "r+b") as f:
        f.seek(100)
        f.write(b"\0\0\0\0")
    monkeypatch.setenv("HF_HUB_CACHE", broken)
    with pytest.raises(UserError, match="damaged"):
        jaxvoc.load(CODEC)
    assert not os.path.exists(jhub.entry_dir(CODEC, CODEC_COMMIT))


def test_cli_offline_miss_and_missing_package_exit_2(hub, tmp_path):
    """Through the real command line (exit code, stderr): the offline miss, and no huggingface_hub installed."""
    import sys

    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_CACHE=hub["cache"], JAXVOC_CACHE=str(tmp_path / "jc"))
    env = absent_packages_env(tmp_path / "site", "", base=env)  # this tree first on the path, nothing absent
    cmd = [sys.executable, "-m", "jaxvoc.cli"]
    proc = subprocess.run(cmd + ["convert", "bigvgan", "nvidia/bigvgan_22khz_80band", str(tmp_path / "o")],
                          capture_output=True, text=True, env=env, timeout=600)
    line = assert_user_error(proc, "nvidia/bigvgan_22khz_80band", "HF_HUB_OFFLINE")
    print(line)
    assert not (tmp_path / "o").exists()
    np.save(tmp_path / "m.npy", np.zeros((SMALL["num_mels"], 8), np.float32))
    proc = subprocess.run(cmd + ["synth", BIGVGAN, str(tmp_path / "m.npy"), "-o", str(tmp_path / "w")],
                          capture_output=True, text=True, env=dict(env, JAXVOC_TEST_ABSENT="huggingface_hub"),
                          timeout=600)
    print(assert_user_error(proc, f"{BIGVGAN} is not a local path", "huggingface_hub", "jaxvoc[hub]"))
    assert not (tmp_path / "w").exists()
    # not converted yet and no torch: the one line says to install the conversion extra or convert elsewhere
    proc = subprocess.run(cmd + ["synth", BIGVGAN, str(tmp_path / "m.npy"), "-o", str(tmp_path / "w")],
                          capture_output=True, text=True, env=dict(env, JAXVOC_TEST_ABSENT="torch"), timeout=600)
    print(assert_user_error(proc, "not in jaxvoc's cache", "torch is missing", "jaxvoc[conversion]",
                            f"jaxvoc convert bigvgan {BIGVGAN} OUT"))
    assert not (tmp_path / "w").exists() and not os.path.exists(jhub_entry(tmp_path / "jc"))
    # jaxvoc's cache cannot be written (a file in the way): one line naming JAXVOC_CACHE, before any work
    (tmp_path / "file").write_text("")
    proc = subprocess.run(cmd + ["convert", "bigvgan", BIGVGAN, str(tmp_path / "c")], capture_output=True,
                          text=True, env=dict(env, JAXVOC_CACHE=str(tmp_path / "file" / "cache")), timeout=600)
    print(assert_user_error(proc, "cannot write jaxvoc's cache", "JAXVOC_CACHE"))
    assert not (tmp_path / "c").exists()


def jhub_entry(cache) -> str:
    return os.path.join(str(cache), "hub", "models--" + BIGVGAN.replace("/", "--"), MAIN)
