"""The codec's whole jitted GAN step (jaxvoc.train.codec.CodecObjective in objective.make_gan_step, with
optim.codec_optimizers and objective.periodic_disc_update) against NeMo 3.0.0's own
``AudioCodecModel.training_step`` with its own Adam optimizers (experiments/reference/codec_train.py; the run
is shared with tests/test_codec_reference.py through tests/conftest.py): NeMo's random small LFR-kind model,
every parameter randomised, its weights converted by conversion/codec.py (generator and discriminator), its
stand-in WavLM written as a Hugging Face folder (``save_wavlm``), converted by conversion/wavlm.py and read
from that jaxvoc checkpoint; the same VocoderDataset batch (audio_lens 6144 and 5000). Two steps: batch_idx
0 (discriminator update) and 1 (none, LFR's disc_update_period 2).

The JAX side is ``jax_steps`` of experiments/equivalence/codec_train_step.py (which runs the same comparison at
the full LFR config): what the optimizers receive is recorded by wrapping each optax transformation, so the
gradients are those of the step itself, compared by NeMo's parameter names (conversion.codec.nemo_state_dict).

Bounds (issue 12, item 5). Step 0, from identical weights: every loss term <= 1e-5 relative; generator and
discriminator gradients 1 - cos <= 1e-5 and relative norm difference <= 1e-4, or 2x NeMo's own
float32-vs-float64 difference where that is larger (measured beside, same run). Later quantities start from
weights one Adam step moved, whose first update is about lr * sign(g): elements whose gradient is at rounding
level move by up to 2 lr differently in any two float32 runs (docs/codec.md, "Reference training step"), so
step 1's losses and gradients and both steps' parameter updates are held to 2x NeMo's own float32-vs-float64
figures (the issue's bounds where those are larger), against NeMo float32 and against NeMo float64.
"""

from __future__ import annotations

import numpy as np
import optax
import pytest

import jax

from conversion import codec as cc
from conversion import common
from experiments.equivalence import codec_train_step as cts
from experiments.reference import codec_train as ct
from jaxvoc.train import objective
from jaxvoc.train.codec import CodecObjective

LOSS_REL, GRAD_COS, GRAD_NORM = cts.LOSS_REL, cts.GRAD_COS, cts.GRAD_NORM  # issue 12, item 5
STEPS = cts.STEPS
_bound = cts.bound


@pytest.fixture(scope="module")
def steps(codec_reference_run, tmp_path_factory):
    run = codec_reference_run
    tmp = tmp_path_factory.mktemp("codec_step")
    ct.save_wavlm(run["model"], str(tmp / "wavlm_hf"))  # WavLM is frozen: the run left it unchanged
    cts.convert_wavlm(str(tmp / "wavlm_hf"), str(tmp / "wavlm"))
    res = cts.jax_steps(run["config"], run["initial_state_dict"], run["batch"], str(tmp / "wavlm"),
                        source="small_config")
    return {"run": run, **res, "wavlm": str(tmp / "wavlm")}


def _rows(steps):
    run = steps["run"]
    ref32, ref64 = run["steps32"][:STEPS], run["steps64"][:STEPS]
    initial = run["initial_state_dict"]
    return (ct.compare_runs(steps["jax"], ref32, initial), ct.compare_runs(steps["jax"], ref64, initial),
            ct.compare_runs(ref32, ref64, initial))


def test_schedule_and_state(steps):
    """batch_idx 0 updates the discriminator, 1 does not (bitwise unchanged, Adam count not advanced); the
    learning rate is the config's; WavLM stays out of the trained trees; one compiled program for both steps."""
    jx, states = steps["jax"], steps["states"]
    assert [s["disc_updated"] for s in jx] == [True, False]
    assert [s["disc_updated"] for s in steps["run"]["steps32"][:STEPS]] == [True, False]
    for s in jx:
        assert float(s["metrics"]["lr"]) == pytest.approx(2e-4, rel=1e-7)
        assert bool(s["metrics"]["finite"])
    d0, d1, d2 = (jax.tree_util.tree_leaves(s["params_d"]) for s in states)
    assert any(not np.array_equal(a, b) for a, b in zip(d0, d1))
    assert all(np.array_equal(a, b) for a, b in zip(d1, d2))
    adam = lambda n: isinstance(n, optax.ScaleByAdamState)  # noqa: E731
    counts = [[int(x.count) for x in jax.tree_util.tree_leaves(s["opt_d"], is_leaf=adam) if adam(x)]
              for s in states]
    assert counts == [[0], [1], [1]]
    assert jx[1]["losses"]["d_loss"] == 0.0 and "d_loss" not in steps["run"]["steps32"][1]["losses"]
    g0, g2 = jax.tree_util.tree_leaves(states[0]["params_g"]), jax.tree_util.tree_leaves(states[2]["params_g"])
    assert all(a.shape == b.shape for a, b in zip(g0, g2)) and any(not np.array_equal(a, b) for a, b in zip(g0, g2))
    # WavLM: in the state beside the trained trees, never changed by a step, and no part of params_d
    for a, b in zip(jax.tree_util.tree_leaves(states[0][objective.FROZEN]),
                    jax.tree_util.tree_leaves(states[2][objective.FROZEN])):
        np.testing.assert_array_equal(a, b)
    abstract = steps["abstract"]
    assert objective.FROZEN not in abstract  # the caller adds it (the loop; here by hand, above)
    for key in ("params_g", "params_d"):  # what init makes has the converted layout
        assert (jax.tree_util.tree_structure(abstract[key]) == jax.tree_util.tree_structure(states[0][key])), key
        for a, b in zip(jax.tree_util.tree_leaves(abstract[key]), jax.tree_util.tree_leaves(states[0][key])):
            assert a.shape == b.shape, key
    assert steps["step"]._cache_size() == 1


def test_losses_and_gradients_match_nemo(steps):
    vs32, vs64, own = _rows(steps)
    for s in range(STEPS):
        print(f"step {s}: losses vs NeMo f32 {vs32[s]['losses']}; NeMo f32 vs f64 {own[s]['losses']}")
        for key in ("grads_g", "grads_d"):
            if key in own[s]:
                print(f"step {s} {key}: 1-cos / norm diff vs NeMo f32 {1 - vs32[s][key]['cos']:.2e} / "
                      f"{vs32[s][key]['norm_diff']:.2e}, vs f64 {1 - vs64[s][key]['cos']:.2e} / "
                      f"{vs64[s][key]['norm_diff']:.2e}; NeMo f32 vs f64 {1 - own[s][key]['cos']:.2e} / "
                      f"{own[s][key]['norm_diff']:.2e}")
    # step 0: identical weights
    assert set(vs32[0]["losses"]) == {"d_loss", "g_loss_mel_l1", "g_loss_stft", "g_loss_gen", "g_loss_feature",
                                      "loss_gen_all"}
    for term, err in vs32[0]["losses"].items():
        assert err <= _bound(LOSS_REL, own[0]["losses"][term]), (term, err)
    for key in ("grads_g", "grads_d"):
        for rows in (vs32, vs64):
            m, o = rows[0][key], own[0][key]
            assert 1 - m["cos"] <= _bound(GRAD_COS, 1 - o["cos"]), (key, m, o)
            assert m["norm_diff"] <= _bound(GRAD_NORM, o["norm_diff"]), (key, m, o)
    # step 1: from weights one Adam step moved (see the module docstring); no discriminator pass
    assert "grads_d" not in vs32[1]
    for term, err in vs32[1]["losses"].items():
        assert err <= _bound(LOSS_REL, own[1]["losses"][term]), (term, err)
    for rows in (vs32, vs64):
        m, o = rows[1]["grads_g"], own[1]["grads_g"]
        assert 1 - m["cos"] <= _bound(GRAD_COS, 1 - o["cos"]), (m, o)
        assert m["norm_diff"] <= _bound(GRAD_NORM, o["norm_diff"]), (m, o)


def test_parameter_updates_match_nemo(steps):
    vs32, vs64, own = _rows(steps)
    for s in range(STEPS):
        for key in ("update_g", "update_d"):
            m32, m64, o = vs32[s][key], vs64[s][key], own[s][key]
            print(f"step {s} {key}: 1-cos / norm diff vs NeMo f32 {1 - m32['cos']:.2e} / {m32['norm_diff']:.2e}, "
                  f"vs f64 {1 - m64['cos']:.2e} / {m64['norm_diff']:.2e}; NeMo f32 vs f64 {1 - o['cos']:.2e} / "
                  f"{o['norm_diff']:.2e}")
            for m in (m32, m64):
                assert 1 - m["cos"] <= _bound(GRAD_COS, 1 - o["cos"]), (s, key, m, o)
                assert m["norm_diff"] <= _bound(GRAD_NORM, o["norm_diff"]), (s, key, m, o)


@pytest.mark.parametrize("change,needle", [
    ({"encoder_noise_stdev": 0.1}, "encoder_noise_stdev"),
    ({"output_sample_rate": 44100}, "output_sample_rate"),
    ({"time_domain_loss_scale": 1.0}, "time_domain_loss_scale"),
    ({"commit_loss_scale": 1.0}, "commit_loss_scale"),
    ({"feature_loss_type": "relative"}, "feature_loss_type"),
    ({"skip_nan_gradients": True}, "skip_nan_gradients"),
    ({"discriminator": None}, "discriminator"),
])
def test_refuses_what_it_does_not_compute(change, needle):
    """One line each, before anything is loaded (WavLM included), for NeMo settings the objective lacks."""
    from jaxvoc.errors import UserError

    cfg = {**cc.lfr_config(), **change}
    with pytest.raises(UserError) as e:
        CodecObjective(cfg, wavlm="/nonexistent", source="lfr")
    msg = str(e.value)
    assert needle in msg and "\n" not in msg and "/nonexistent" not in msg, msg


def test_validation_losses_match_nemo(codec_reference_run, steps):
    """CodecValidator against NeMo's own ``validation_step`` on a clip of its own (5000 samples: padded to
    whole frames), with the weights after the reference run's last step (NeMo's float32 model). Bound: 1e-5
    relative per loss, the issue's bound for a loss from identical weights."""
    import torch

    from jaxvoc.train.codec import CodecValidator

    run = codec_reference_run
    model, sd = run["model"], run["steps32"][-1]["state_dict"]
    obj = CodecObjective(run["config"], wavlm=steps["wavlm"], source="small_config")
    params_g, _ = cc.convert_state_dict(common.normalize_keys(sd), obj.codec, "NeMo's weights")
    clip = run["batch"]["audio"][1, :5000]
    logged = {}
    model.log_dict = lambda d, **kw: logged.update({k: float(v) for k, v in d.items()})
    with torch.no_grad():
        model.validation_step({"audio": torch.from_numpy(clip[None].copy()),
                               "audio_lens": torch.tensor([5000], dtype=torch.int32)}, 0)
    got, samples = CodecValidator(obj, [clip])({"params_g": params_g})
    got = {k: v for k, v in got.items() if k.startswith("val_")}  # the codebook usage: test_codec_codebook_usage.py
    print({k: (got[k], logged[k]) for k in got})
    assert set(got) == set(logged) - {"val_loss_si_sdr"}
    for k, v in got.items():
        assert abs(v - logged[k]) <= 1e-5 * abs(logged[k]), (k, v, logged[k])
    assert samples[0][0].shape == (5000,)
