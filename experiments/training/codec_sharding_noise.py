"""Where the codec's sharded train step departs from the one-device step (issue 12): the tiny codec of
tests/test_codec_train_run.py (``train_standin.codec_settings``) at the size its report
docs/results/codec_sharding_noise.json was measured with (``report_size()``: all three discriminator kinds of
``conversion.codec.small_discriminator`` and 4096-sample crops, more than the test's), a stand-in WavLM, one
batch of 4 with mixed lengths; one device against a data 2 x fsdp 2 mesh of 4 host CPU devices, the same
initial state.

Measured per layout, relative to one device: the encoder output before FSQ and its distance to the nearest
rounding boundary, the FSQ codes per item, the generated audio, the per-item loss terms (NeMo's reductions
before the batch mean), the loss metrics, the gradients the two Adam optimizers receive (per leaf: relative
difference, and the worst element's gradient relative to its leaf's largest), and the parameters after the
update (which elements differ and what their gradients were).

    XLA_FLAGS=--xla_force_host_platform_device_count=4 JAX_PLATFORMS=cpu \
        PYTHONPATH=. python -m experiments.training.codec_sharding_noise [--report J] [--drop-shard]

``--drop-shard`` injects a sharding bug (the sharded run's batch has its last item zeroed, as if one shard's
examples were lost) to show the size of a real fault beside the noise.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

import jax
import jax.numpy as jnp
import numpy as np

N_SAMPLES = 4096


def report_size() -> list[str]:
    """``--set`` overrides after ``codec_settings`` for the report's size: the three discriminator kinds of
    small_discriminator (2 STFT resolutions, period 2, SLM) and ``N_SAMPLES``-sample crops."""
    from conversion import codec as cc

    return [f"model.discriminator.discriminators={json.dumps(cc.small_discriminator()['discriminators'])}",
            f"train_n_samples={N_SAMPLES}"]


def wavlm_checkpoint(folder: str) -> str:
    """A random WavLM of ``conversion.codec.WAVLM_SMALL`` (transformers' own init), converted."""
    import transformers

    from conversion import codec as cc
    from conversion import wavlm as cw
    from jaxvoc.io import checkpoint

    import torch

    torch.manual_seed(0)
    transformers.WavLMModel(transformers.WavLMConfig(**cc.WAVLM_SMALL)).save_pretrained(os.path.join(folder, "hf"))
    conv = cw.convert(os.path.join(folder, "hf"))
    checkpoint.save(os.path.join(folder, "wavlm"), "wavlm", conv.config, conv.params)
    return os.path.join(folder, "wavlm")


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser()
    ap.add_argument("--report", default=None)
    ap.add_argument("--drop-shard", action="store_true")
    args = ap.parse_args(argv)
    sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "tests"))
    from train_standin import CODEC_TINY, codec_batches, codec_settings, with_recorded_gradients

    from jaxvoc.models.codec import HiFiGANEncoder
    from jaxvoc.train import codec_losses as cl
    from jaxvoc.train import config as config_lib
    from jaxvoc.train import loop, sharding
    from jaxvoc.train.codec import CodecTask

    assert jax.device_count() == 4, jax.devices()
    tmp = tempfile.mkdtemp()
    cfg = config_lib.load(CODEC_TINY, codec_settings(wavlm_checkpoint(tmp)) + report_size())
    assert cfg.segment_size == N_SAMPLES

    task = with_recorded_gradients(CodecTask)(cfg, steps_per_epoch=2)
    obj, codec, h = task.obj, task.obj.codec, task.obj.hyper
    batch = codec_batches(1, cfg.batch_size, N_SAMPLES)[0]

    def probe(params_g, b):
        """Per item: encoder output (pre-FSQ), codes, generated audio, mel-L1 and STFT per item."""
        b = obj.prepare(b)
        audio, lens = b["audio"], b["audio_len"]
        ends = jnp.broadcast_to(jnp.max(lens), lens.shape)
        enc, enc_len = HiFiGANEncoder(codec.encoder).apply({"params": params_g["audio_encoder"]}, audio, lens, ends)
        _, tokens = codec.quantizer.quantize(enc, enc_len)
        q = codec.quantizer
        c = q.fsq.compress(q._split(enc))  # [B, T, G, d]: what FSQ rounds
        valid = (jnp.arange(enc.shape[1])[None] < enc_len[:, None])[..., None, None]
        boundary = jnp.min(jnp.where(valid, 0.5 - jnp.abs(c - jnp.round(c)), 1.0))
        y_g = obj.generate(params_g, b)
        per_item = {}
        for i in range(audio.shape[0]):
            sl = slice(i, i + 1)
            l1, _ = cl.mel_loss(audio[sl], y_g[sl], lens[sl], codec.sample_rate, h.loss_resolutions,
                                h.mel_loss_dims, h.mel_loss_log_guard)
            st = cl.stft_loss(audio[sl], y_g[sl], lens[sl], h.loss_resolutions, h.stft_loss_log_guard)
            per_item[i] = (l1, st)
        return enc, tokens, y_g, per_item, boundary

    def run(mesh, fsdp_min, first):
        s = loop.build(task, mesh, cfg.segment_size, cfg.seed, fsdp_min)
        if first is None:
            first = jax.device_get(s.init())
        state = jax.device_put(first, s.state_shardings)
        b = dict(batch)
        if args.drop_shard and mesh.size > 1:
            b = {"audio": b["audio"].copy(), "audio_len": b["audio_len"]}
            b["audio"][-1] = 0.0
        gb = sharding.global_batch(b, s.batch_sharding)
        pj = jax.jit(probe, in_shardings=(s.state_shardings["params_g"], s.batch_sharding))
        enc, tokens, y_g, per_item, boundary = jax.device_get(pj(state["params_g"], gb))
        state, m = s.step(state, gb)
        host = jax.device_get({"m": m, "g": state["params_g"], "d": state["params_d"],
                               "gg": state["opt_g"][0], "gd": state["opt_d"][0]})
        return first, {"boundary": float(boundary), "enc": enc, "tokens": tokens, "y_g": y_g, "per_item": per_item, **host}

    first, one = run(sharding.make_mesh(1, jax.devices()[:1]), 2 ** 16, None)
    _, shd = run(sharding.make_mesh(2), 0, first)

    def rel(a, b):
        a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
        return float(np.linalg.norm(a - b) / max(np.linalg.norm(b), 1e-30))

    def leaves(t):
        return {jax.tree_util.keystr(k): np.asarray(x, np.float64) for k, x in jax.tree_util.tree_flatten_with_path(t)[0]}

    out = {"drop_shard": args.drop_shard}
    out["fsq_nearest_boundary"] = one["boundary"]  # smallest |c - (k + 1/2)| over valid frames, one device
    out["enc_rel"] = rel(shd["enc"], one["enc"])
    out["enc_maxabs_diff"] = float(np.max(np.abs(shd["enc"] - one["enc"])))
    out["tokens_equal"] = bool(np.array_equal(shd["tokens"], one["tokens"]))
    out["tokens_differing"] = int(np.sum(shd["tokens"] != one["tokens"]))
    out["y_g_rel_per_item"] = [rel(shd["y_g"][i], one["y_g"][i]) for i in range(len(batch["audio_len"]))]
    out["per_item_rel"] = {str(i): [rel(shd["per_item"][i][k], one["per_item"][i][k]) for k in range(2)]
                           for i in one["per_item"]}
    out["metrics_rel"] = {k: abs(float(shd["m"][k]) - float(one["m"][k])) / max(abs(float(one["m"][k])), 1e-30)
                          for k in one["m"] if k not in ("finite", "lr")}
    for name in ("gg", "gd"):
        g1, g2 = leaves(one[name]), leaves(shd[name])
        all1 = np.concatenate([x.ravel() for x in g1.values()])
        all2 = np.concatenate([x.ravel() for x in g2.values()])
        out[f"{name}_rel"] = rel(all2, all1)
        out[f"{name}_cos"] = float(1 - all1 @ all2 / np.linalg.norm(all1) / np.linalg.norm(all2))
        per_leaf = {k: rel(g2[k], g1[k]) for k in g1}
        worst = sorted(per_leaf, key=per_leaf.get, reverse=True)[:5]
        out[f"{name}_worst_leaves"] = {k: per_leaf[k] for k in worst}
    for name, gname in (("g", "gg"), ("d", "gd")):
        p1, p2, g1, g2 = leaves(one[name]), leaves(shd[name]), leaves(one[gname]), leaves(shd[gname])
        P1 = np.concatenate([x.ravel() for x in p1.values()])
        P2 = np.concatenate([x.ravel() for x in p2.values()])
        G1 = np.concatenate([x.ravel() for x in g1.values()])
        G2 = np.concatenate([x.ravel() for x in g2.values()])
        scale = np.concatenate([np.full(x.size, np.max(np.abs(x)) if x.size else 0.0) for x in g1.values()])
        d = np.abs(P2 - P1)
        out[f"{name}_params_rel"] = rel(P2, P1)
        out[f"{name}_params_n_differ"] = int(np.sum(d > 0))
        out[f"{name}_params_n"] = int(P1.size)
        big = d > 1e-5  # more than 5 % of lr 2e-4
        out[f"{name}_params_n_moved_gt_1e-5"] = int(np.sum(big))
        if big.any():
            out[f"{name}_moved_grad_abs_max"] = float(np.max(np.abs(G1[big])))
            out[f"{name}_moved_grad_rel_to_leaf_max"] = float(np.max(np.abs(G1[big]) / np.maximum(scale[big], 1e-30)))
            out[f"{name}_moved_grad_sign_flips"] = int(np.sum(np.sign(G1[big]) != np.sign(G2[big])))
        # with the gradient not near zero (|g| > 1e-3 x its leaf's largest): update difference
        ok = np.abs(G1) > 1e-3 * scale
        out[f"{name}_params_maxabs_where_grad_not_tiny"] = float(np.max(d[ok])) if ok.any() else 0.0
        out[f"{name}_params_maxabs"] = float(np.max(d))
    print("RESULT " + json.dumps(out, indent=1))
    if args.report:
        with open(args.report, "w") as f:
            json.dump(out, f, indent=1)
    return out


if __name__ == "__main__":
    main()
