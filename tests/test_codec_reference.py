"""The official side of codec training (experiments/reference/codec_train.py): NeMo's own
AudioCodecModel.training_step driven for three steps (epoch 0: batch_idx 0 with a discriminator update, 1
without; epoch 1: batch_idx 0 again) in float32 and float64, at CPU size. What is checked here is NeMo's
behaviour as the harness records it, the facts the JAX codec step will be compared against."""

from __future__ import annotations

import math

import numpy as np
import pytest

from experiments.reference import codec_train as ct


@pytest.fixture(scope="module")
def run(codec_reference_run):  # tests/conftest.py: shared with tests/test_codec_train_step.py
    return codec_reference_run


def _disc_params(run, sd):
    """The discriminator's trainable parameters (WavLM and buffers such as windows left out) in ``sd``."""
    names = {n for n, p in run["model"].named_parameters() if p.requires_grad and n.startswith(ct.DISC)}
    return {k: v for k, v in sd.items() if k in names}


def test_batch_is_vocoder_dataset_batch(run):
    b = run["batch"]
    assert b["audio"].dtype == np.float32 and b["audio"].shape == (2, 6144)
    assert list(b["audio_lens"]) == [6144, 5000]
    assert not b["audio"][1, 5000:].any() and b["audio"][1, :5000].any()  # zero-padded by the collate function


def test_discriminator_schedule_and_updates(run):
    steps, initial = run["steps32"], run["initial_state_dict"]
    # LFR: disc_update_period 2, disc_updates_per_period 1, batch_idx restarting each epoch
    assert [(s["epoch"], s["batch_idx"], s["disc_updated"]) for s in steps] == [(0, 0, True), (0, 1, False),
                                                                                (1, 0, True)]
    assert "d_loss" in steps[0]["losses"] and "d_loss" not in steps[1]["losses"] and "d_loss" in steps[2]["losses"]
    assert steps[0]["grads_d"] and not steps[1]["grads_d"] and steps[2]["grads_d"]
    d0 = _disc_params(run, steps[0]["state_dict"])
    assert len(d0) > 20
    for k, v in d0.items():  # Adam moves every parameter with a non-zero gradient
        assert not np.array_equal(v, initial[k]), k
    d1 = _disc_params(run, steps[1]["state_dict"])
    for k, v in d1.items():  # no discriminator update at batch_idx 1
        assert np.array_equal(v, d0[k]), k
    d2 = _disc_params(run, steps[2]["state_dict"])
    assert any(not np.array_equal(v, d1[k]) for k, v in d2.items())
    # the generator moves at every step
    for a, b in ((initial, steps[0]["state_dict"]), (steps[0]["state_dict"], steps[1]["state_dict"])):
        key = "audio_decoder.post_conv.conv.bias"
        assert not np.array_equal(a[key], b[key])
    # the gradients cover exactly the two parameter groups (encoder+decoder; discriminator without WavLM)
    assert all(k.startswith(ct.GEN) for k in steps[0]["grads_g"])
    assert all(k.startswith(ct.DISC) and ct.SLM_PREFIX not in k for k in steps[0]["grads_d"])


def test_learning_rate_decays_per_epoch(run):
    lr = [(s["lr_g"], s["lr_d"]) for s in run["steps32"]]
    assert lr[0] == lr[1] == (2e-4, 2e-4)  # ExponentialLR is not stepped within the epoch
    assert lr[2] == pytest.approx((2e-4 * 0.998, 2e-4 * 0.998), rel=1e-12)


def test_losses_finite_and_composed_as_lfr(run):
    cfg = run["config"]
    for s in run["steps32"] + run["steps64"]:
        losses = s["losses"]
        assert all(math.isfinite(v) for v in losses.values()), losses
        assert set(losses) - {"d_loss"} == {"g_loss_mel_l1", "g_loss_stft", "g_loss_gen", "g_loss_feature",
                                            "loss_gen_all"}
        total = (cfg["mel_loss_l1_scale"] * losses["g_loss_mel_l1"] + cfg["stft_loss_scale"] * losses["g_loss_stft"]
                 + losses["g_loss_gen"] + losses["g_loss_feature"])  # gen_loss_scale, feature_loss_scale: 1
        assert losses["loss_gen_all"] == pytest.approx(total, rel=1e-6)  # a sum of float32 terms


def test_float32_and_float64_agree(run):
    s32, s64 = run["steps32"], run["steps64"]
    # the float64 run really is float64 (NeMo's float32 casts neutralised), the float32 run float32
    assert all(v.dtype == np.float64 for s in s64 for v in s["grads_g"].values())
    assert all(v.dtype == np.float32 for s in s32 for v in s["grads_g"].values())
    rows = ct.compare_runs(s32, s64)
    # Step 0 starts both runs from the same weights. Bounds: the issue's own tolerances for JAX vs NeMo (losses
    # 1e-5 relative; gradients 1 - cos 1e-5, norm difference 1e-4), which NeMo's float32 must meet against its
    # float64 for them to be attainable. Measured (2026-11-29): losses <= 6e-8, generator 1 - cos 2e-7 / norm
    # difference 1.8e-6, discriminator 5e-11 / 7.6e-7.
    first = rows[0]
    assert 0 < max(first["losses"].values())  # two different roundings, not one run twice
    for term, err in first["losses"].items():
        assert err <= 1e-5, (term, err)
    for key in ("grads_g", "grads_d"):
        assert 1 - first[key]["cos"] <= 1e-5 and first[key]["norm_diff"] <= 1e-4, (key, first[key])
    # Later steps start from weights that one Adam step moved: its first update is ~lr * sign(g), so elements
    # whose gradient is at rounding level move by up to 2 lr differently and the runs drift apart. Measured:
    # batch_idx 1: losses <= 3e-7, generator 1 - cos 3.0e-5 / norm difference 1.2e-4 (beyond the 1e-5 /
    # 1e-4: there its fallback, 2x NeMo's own float32-vs-float64 difference, is the bound); epoch 1 batch_idx 0:
    # losses <= 2.4e-3, generator 1 - cos 1.4e-2. Bounds 10x the measurement catch a broken float64 path.
    for row, loss_bound, cos_bound in ((rows[1], 3e-6, 3e-4), (rows[2], 2.4e-2, 0.14)):
        assert max(row["losses"].values()) <= loss_bound, row["losses"]
        assert 1 - row["grads_g"]["cos"] <= cos_bound, row["grads_g"]


def test_wavlm_frozen_and_left_out(run):
    model = run["model"]
    w = ct.wavlm(model)
    assert not w.training and all(not p.requires_grad for p in w.parameters())
    after = {k: v.detach().numpy() for k, v in w.state_dict().items()}
    assert set(after) == set(run["wavlm_state_dict"])
    for k, v in run["wavlm_state_dict"].items():
        assert np.array_equal(after[k], v), k
    # NeMo's state dict (what it saves in a .nemo and a checkpoint) has the SLM head but not WavLM
    for sd in [run["initial_state_dict"]] + [s["state_dict"] for s in run["steps32"]]:
        assert not any(ct.SLM_PREFIX in k for k in sd)
        assert any(k.startswith("discriminator.discriminators.2.pre.") for k in sd)
    # and the randomisation reached WavLM's norms and biases (they would be 1 and 0 from transformers' init)
    norms = [v for k, v in run["wavlm_state_dict"].items() if k.endswith("layer_norm.weight")]
    assert norms and all(not np.allclose(v, 1.0) for v in norms)


def test_wavlm_folder_for_the_jax_side(run, tmp_path):
    """The stand-in WavLM leaves as a Hugging Face folder that jaxvoc's WavLM converter accepts, holding the
    weights the run used (NeMo does not save them, so the JAX side must get them this way)."""
    from conversion import wavlm as cw

    ct.save_wavlm(run["model"], str(tmp_path))
    sd = cw.load_state_dict(cw.find_files_weights(str(tmp_path)))
    for k, v in run["wavlm_state_dict"].items():
        if v.dtype.kind == "f":
            np.testing.assert_array_equal(sd[k], v, err_msg=k)
    cw.convert(str(tmp_path))  # the config and every tensor are accepted
