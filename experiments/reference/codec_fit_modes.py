"""In which mode does the SLM discriminator's frozen WavLM run during NeMo's codec training? Runs NeMo 3.0.0's
``AudioCodecModel`` (the harness's small LFR-kind model, ``codec_train.small_config``, with its stand-in
``transformers.WavLMModel``, whose dropout 0.1, layer drop 0.1 and time masking 0.05 are transformers'
defaults) under a real ``lightning.pytorch.Trainer.fit`` on CPU: the sanity validation, two epochs of two
training batches each, a validation pass after each epoch.

    python -m experiments.reference.codec_fit_modes

The model enters ``fit`` as NeMo's training script leaves it (``AudioCodecModel(cfg)`` built, nothing else:
train mode, WavLM in eval mode from NeMo's ``freeze()``). Recorded:

- at each ``training_step`` (before NeMo's own): ``.training`` of the WavLM module and of every submodule,
  and two calls of WavLM (``output_hidden_states``, no gradient) on the batch's audio resampled as NeMo does:
  bitwise equal or not;
- at every call NeMo's ``training_step`` makes of WavLM (a forward hook): the mode of its submodules and
  the hidden states; a step with a discriminator update calls WavLM on the real audio twice (the
  discriminator pass and the generator pass), which must then agree bitwise if WavLM runs in eval mode;
- the same modes at each validation batch, and of the whole model (codec and discriminators).
Prints one line per step and a verdict; ``--report`` writes the records as JSON.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Sequence


def _modes(module) -> dict:
    """{'self': module.training, 'train': names of submodules in train mode, 'eval': count in eval mode}."""
    sub = list(module.named_modules())
    return {"self": bool(module.training), "train": [n for n, m in sub if m.training],
            "eval": sum(1 for _, m in sub if not m.training), "modules": len(sub)}


def run(seed: int = 0) -> dict:
    import copy

    import torch
    from lightning.pytorch import Callback, Trainer
    from omegaconf import OmegaConf

    from conversion import codec as cc
    from experiments.reference import codec_train as ct

    cc.use_offline_wavlm()
    cc._quiet_nemo()
    from nemo.collections.tts.models import AudioCodecModel

    rec: dict = {"train_steps": [], "wavlm_calls": [], "validation": [], "in_step": None}

    class Probed(AudioCodecModel):
        def training_step(self, batch, batch_idx):
            slm = _slm(self)
            a, b = _two_calls(slm, batch["audio"])
            rec["train_steps"].append({
                "global_step": int(self.trainer.global_step), "epoch": int(self.current_epoch),
                "batch_idx": int(batch_idx), "model_training": bool(self.training),
                "wavlm": _modes(slm.slm_model.ssl_model), "codec_train_mode": _count_train(self),
                "two_calls_bitwise_equal": all(torch.equal(p, q) for p, q in zip(a, b)),
                "two_calls_max_abs_diff": max(float((p - q).abs().max()) for p, q in zip(a, b)),
                })
            rec["in_step"] = len(rec["train_steps"]) - 1
            try:
                return super().training_step(batch, batch_idx)
            finally:
                rec["in_step"] = None

    torch.manual_seed(seed)
    model = Probed(cfg=OmegaConf.create(copy.deepcopy(ct.small_config())))
    rec["before_fit"] = {"model_training": bool(model.training), "wavlm": _modes(_slm(model).slm_model.ssl_model)}
    ssl = _slm(model).slm_model.ssl_model
    # NeMo passes input_values as a keyword: a pre-hook with kwargs keeps it for the forward hook
    handle_pre = ssl.register_forward_pre_hook(
        lambda m, args, kwargs: rec.__setitem__("_last_input", kwargs.get("input_values")), with_kwargs=True)

    def record_call(m, args, out):
        if rec["in_step"] is not None:  # a call made by NeMo's training_step
            rec["wavlm_calls"].append({"training_step": rec["in_step"], "wavlm": _modes(m),
                                       "input": rec["_last_input"].detach().clone(),
                                       "states": [h.detach().clone() for h in out.hidden_states]})

    handle = ssl.register_forward_hook(record_call)
    c = ssl.config
    rec["wavlm_config"] = {k: getattr(c, k) for k in ("hidden_dropout", "attention_dropout", "activation_dropout",
                                                      "feat_proj_dropout", "layerdrop", "apply_spec_augment",
                                                      "mask_time_prob")}

    class Record(Callback):
        def on_validation_batch_start(self, trainer, pl_module, batch, batch_idx, dataloader_idx=0):
            rec["validation"].append({"sanity": bool(trainer.sanity_checking), "epoch": int(pl_module.current_epoch),
                                      "model_training": bool(pl_module.training),
                                      "wavlm": _modes(_slm(pl_module).slm_model.ssl_model)})

    batch = ct.as_torch_batch(ct.small_batch(seed))
    data = torch.utils.data.DataLoader([batch, batch], batch_size=None)
    trainer = Trainer(accelerator="cpu", devices=1, max_epochs=2, limit_train_batches=2, limit_val_batches=1,
                      num_sanity_val_steps=1, check_val_every_n_epoch=1, logger=False, enable_checkpointing=False,
                      enable_progress_bar=False, enable_model_summary=False, callbacks=[Record()])
    trainer.fit(model, train_dataloaders=data, val_dataloaders=data)
    handle.remove()
    handle_pre.remove()
    rec.pop("_last_input", None)
    # the control: the same probe with WavLM put in train mode tells the two calls apart
    slm = _slm(model)
    slm.slm_model.train()
    a, b = _two_calls(slm, batch["audio"])
    rec["control_train_mode_two_calls_bitwise_equal"] = all(torch.equal(p, q) for p, q in zip(a, b))

    # WavLM calls made by training_step on the same input (the real audio, twice in a discriminator-update step)
    calls = rec["wavlm_calls"]
    same_input = []
    for i, c in enumerate(calls):
        for d in calls[i + 1:]:
            if d["training_step"] == c["training_step"] and torch.equal(c["input"], d["input"]):
                same_input.append({"training_step": c["training_step"],
                                   "bitwise_equal": all(torch.equal(p, q) for p, q in zip(c["states"], d["states"]))})
    rec["same_input_calls_in_training_step"] = same_input
    rec.pop("in_step")
    rec["wavlm_calls"] = [{"training_step": c["training_step"], "wavlm_training": c["wavlm"]["self"],
                           "wavlm_submodules_in_train_mode": len(c["wavlm"]["train"])} for c in rec["wavlm_calls"]]
    import lightning
    import nemo

    rec["versions"] = {"lightning": lightning.__version__, "nemo": nemo.__version__, "torch": torch.__version__}
    return rec


def _two_calls(slm, audio):
    """Two calls of the SLM discriminator's WavLM on ``audio`` resampled as NeMo does (no gradient)."""
    import torch

    x = slm.resample(audio)
    with torch.no_grad():
        return [slm.slm_model(input_values=x, output_hidden_states=True).hidden_states for _ in range(2)]


def _slm(model):
    for d in model.discriminator.discriminators:
        if hasattr(d, "slm_model"):
            return d
    raise ValueError("no SLM discriminator")


def _count_train(model) -> dict:
    sub = list(model.modules())
    return {"train": sum(1 for m in sub if m.training), "modules": len(sub)}


def main(argv: Sequence[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--report", help="write the records as JSON here")
    args = ap.parse_args(argv)
    import torch

    torch.set_num_threads(1)
    rec = run()
    print(f"versions {rec['versions']}")
    print(f"before fit: model training {rec['before_fit']['model_training']}, WavLM training "
          f"{rec['before_fit']['wavlm']['self']} ({len(rec['before_fit']['wavlm']['train'])} of "
          f"{rec['before_fit']['wavlm']['modules']} WavLM modules in train mode)")
    for v in rec["validation"]:
        print(f"validation batch ({'sanity' if v['sanity'] else 'epoch ' + str(v['epoch'])}): model training "
              f"{v['model_training']}, WavLM modules in train mode {len(v['wavlm']['train'])}")
    for s in rec["train_steps"]:
        print(f"training_step global_step {s['global_step']} (epoch {s['epoch']}, batch_idx {s['batch_idx']}): "
              f"model training {s['model_training']} ({s['codec_train_mode']['train']} of "
              f"{s['codec_train_mode']['modules']} modules in train mode), WavLM training {s['wavlm']['self']}, "
              f"WavLM submodules in train mode {len(s['wavlm']['train'])} of {s['wavlm']['modules']}; two WavLM "
              f"calls bitwise equal {s['two_calls_bitwise_equal']} (max |diff| {s['two_calls_max_abs_diff']:.1e})")
    calls = rec["wavlm_calls"]
    print(f"WavLM calls made by NeMo's training_step: {len(calls)}, in train mode: "
          f"{sum(c['wavlm_training'] or c['wavlm_submodules_in_train_mode'] > 0 for c in calls)}; calls on the "
          f"same input within a step: {len(rec['same_input_calls_in_training_step'])}, bitwise equal: "
          f"{sum(c['bitwise_equal'] for c in rec['same_input_calls_in_training_step'])}")
    eval_only = (not any(s["wavlm"]["train"] for s in rec["train_steps"])
                 and all(s["two_calls_bitwise_equal"] for s in rec["train_steps"])
                 and not any(c["wavlm_training"] or c["wavlm_submodules_in_train_mode"] for c in calls)
                 and all(c["bitwise_equal"] for c in rec["same_input_calls_in_training_step"]))
    print(f"WavLM config (transformers' defaults): {rec['wavlm_config']}; control, WavLM put in train mode after "
          f"fit: two calls bitwise equal {rec['control_train_mode_two_calls_bitwise_equal']}")
    print("verdict: WavLM runs in eval mode throughout training" if eval_only
          else "verdict: WavLM runs in TRAIN mode during training (dropout, layer drop, time masking)")
    if args.report:
        with open(args.report, "w") as f:
            json.dump(rec, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
