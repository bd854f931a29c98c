"""The official PyTorch side of codec training: NeMo 3.0.0's ``AudioCodecModel.training_step`` itself, driven on
CPU without a Lightning Trainer, for tests and equivalence measurements (issue 12, item 5).

What is NeMo's and what is ours:

- the model is ``AudioCodecModel(cfg=...)`` built from the Low Frame-rate Speech Codec hyperparameters
  (``conversion.codec.lfr_config``), shrunk by ``small_config`` (encoder/decoder widths, one MPD period, two
  STFT-discriminator resolutions; losses, loss resolutions, FSQ, optimizer, schedule and discriminator update
  period exactly as the LFR config). The SLM discriminator's WavLM is a small randomly initialised
  ``transformers.WavLMModel`` (``conversion.codec.use_offline_wavlm``: no hub here). Every parameter is
  randomised from the seed: encoder/decoder as ``conversion.codec.randomize_`` (LSUV gains, Snake alphas,
  biases), and here every other parameter too (weight-norm gains away from ||v||, biases and norm weights away
  from their constant initial values, WavLM included), so that a mapping error cannot hide behind 0 or 1.
- each step is the model's own ``training_step(batch, batch_idx)``. Only Lightning's plumbing is stubbed:
  ``optimizers()`` returns the two Adam optimizers that the model's own ``configure_optimizers()`` built,
  ``lr_schedulers()`` its two ExponentialLR schedulers (NeMo files ExponentialLR under interval "epoch"),
  ``manual_backward(loss)`` is ``loss.backward()`` (what Lightning's 32-bit precision plugin does), and
  ``log``/``log_dict`` record the values instead of logging. After each epoch's batches the driver calls the
  model's ``on_train_epoch_end()``, which steps the schedulers, as Lightning does. Module modes are as in
  Lightning 2.4's fit loop, which never calls ``.train()`` on the model: everything in training mode except the
  modules NeMo froze (WavLM), which ``freeze()`` left in eval mode.
- the batch is what NeMo's ``VocoderDataset`` (random crop of ``n_samples``, clips shorter than that whole,
  ``min_duration`` 0.4 s) and its ``collate_fn`` make of clips of the project's speech fixture, written to a
  temporary NeMo manifest (``audio_filepath``, ``duration``): audio [B, N] float32 zero-padded, audio_lens [B].
- float64 (the rounding reference): a copy of the same model with ``.double()`` (parameters and buffers; the
  float32 constants NeMo caches, such as windows, mel filterbanks and the resampling kernel, keep their values)
  and the batch in float64. Two NeMo casts to float32 would otherwise make it a float32 run: inside
  ``nemo_float64()`` ``Tensor.float()`` leaves float64 tensors float64 (``training_step`` casts the audio for
  the mel and STFT losses), and FilterbankFeatures' STFT takes its window in the input's dtype.

What the JAX side must return to be compared (``compare_runs``, ``grad_metrics``):

- per step, the loss terms by NeMo's metric names: ``d_loss`` (only on discriminator-update steps),
  ``g_loss_mel_l1``, ``g_loss_stft``, ``g_loss_gen``, ``g_loss_feature`` (``g_loss_mel_l2`` /
  ``g_loss_time_domain`` are 0-scaled in the LFR config, so NeMo does not compute them in training), and the
  total generator loss ``loss_gen_all`` (the value NeMo back-propagates);
- per step, the gradients before the optimizer step as {NeMo state-dict name: array}: the generator's
  (``audio_encoder.*``, ``audio_decoder.*``) and, on update steps, the discriminator's (``discriminator.*``
  without WavLM, which is frozen);
- the parameters after each step, compared with ``state_dict`` of each step (``update_metrics`` of
  experiments.reference.train_reference on params - initial params).
The converters in ``conversion/codec.py`` map these names to jaxvoc's trees (the ``discriminator`` extra tree);
``save_wavlm`` writes the stand-in WavLM as a Hugging Face folder for ``jaxvoc convert wavlm``.

Run ``python -m experiments.reference.codec_train`` for NeMo's own float32-vs-float64 differences (the table in
docs/codec.md, "Reference training step"); ``python -m experiments.equivalence.codec_train_step`` compares
jaxvoc's step with both at the full LFR config (``lfr_config_full``, WavLM of the wavlm-base-plus architecture).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import tempfile
from typing import Any, Sequence

import numpy as np

from experiments.reference.bigvgan_train import grad_metrics, rel_err

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
SPEECH = os.path.join(REPO, "tests", "fixtures", "speech_22050.wav")
SLM_PREFIX = ".slm_model.slm_model."  # WavLM inside the SLM discriminator (NeMo drops it from state dicts)

# NeMo's LFR data settings (VocoderDataset of audio_codec_low_frame_rate_22050.yaml)
LFR_N_SAMPLES = 24576
LFR_MIN_DURATION = 0.4


def small_config(**overrides) -> dict:
    """The LFR model config at CPU-test size: encoder base_channels 4, decoder base_channels 64 (same rates,
    kernels, activations, FSQ 8 x [8,7,6,6]); discriminators of the LFR kinds (STFT resolutions [128,32,128] and
    [256,64,256], MPD with period 2 only (NeMo hard-codes the widths: 8.4M parameters per period), SLM head of 8 channels on the stand-in
    WavLM's 2 hidden states of width 32). Losses, loss resolutions, scales, optimizer, ExponentialLR and
    disc_update_period as the LFR config. ``max_steps`` is set because NeMo's configure_optimizers asks for it
    (ExponentialLR does not use it)."""
    from conversion import codec as cc

    cfg = cc.variant_config(cc.lfr_config(), encoder={"base_channels": 4}, decoder={"base_channels": 64},
                            discriminator=cc.small_discriminator(22050))
    cfg["max_steps"] = 1000
    cfg.update(overrides)
    return cfg


def lfr_config_full() -> dict:
    """The LFR model config at full size, for a WavLM of the wavlm-base-plus architecture
    (``conversion.codec.WAVLM_BASE_PLUS``, random weights: no hub here; 13 hidden states 768 wide). Its float32
    and float64 runs together hold over 14 GB: experiments/equivalence/codec_train_step.py runs them one
    process each."""
    from conversion import codec as cc

    cfg = cc.lfr_config()
    cfg["max_steps"] = 1000
    return cfg


def randomize_rest_(model, seed: int) -> None:
    """Every parameter outside the encoder and decoder (which ``conversion.codec.randomize_`` handles) away from
    the values its initialiser leaves: weight-norm gains times U(0.5, 1.5) (the init makes them ||v||), and any
    parameter whose elements are all equal (biases at 0, norm weights at 1, WavLM's gate constants) plus
    N(0, 0.1^2). WavLM is included: the JAX side converts its weights (``save_wavlm``)."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith(("audio_encoder.", "audio_decoder.")):
                continue
            if name.endswith(("original0", "weight_g")):
                p.mul_(0.5 + torch.rand(p.shape, generator=g, dtype=p.dtype))
            elif p.numel() > 0 and bool((p == p.reshape(-1)[0]).all()):
                p.add_(0.1 * torch.randn(p.shape, generator=g, dtype=p.dtype))


def set_training_modes_(model) -> None:
    """Module modes as Lightning 2.4's fit loop leaves them (it never calls ``.train()``): training mode, except
    the modules NeMo's ``freeze()`` put in eval mode (the SLM discriminator's WavLM)."""
    model.train()
    for m in model.modules():
        if hasattr(m, "_frozen_grad_map"):
            m.eval()


def wavlm(model):
    """The stand-in ``transformers.WavLMModel`` inside the SLM discriminator."""
    for d in model.discriminator.discriminators:
        if hasattr(d, "slm_model"):
            return d.slm_model.ssl_model
    raise ValueError("no SLM discriminator in this model")


def save_wavlm(model, folder: str) -> None:
    """The SLM discriminator's WavLM as a Hugging Face folder (``save_pretrained``: config.json +
    model.safetensors) for ``jaxvoc convert wavlm``."""
    wavlm(model).save_pretrained(folder)


def build_model(cfg: dict | None = None, seed: int = 0, wavlm: dict | None = None):
    """NeMo's ``AudioCodecModel(cfg)`` (``small_config()`` by default; its stand-in WavLM of architecture
    ``wavlm``, default ``conversion.codec.WAVLM_SMALL``) with every parameter randomised from ``seed``, in
    Lightning's training modes."""
    from conversion import codec as cc

    model = cc.build_nemo_model(cfg or small_config(), seed=seed, randomize=True, wavlm=wavlm)
    randomize_rest_(model, seed + 1)
    set_training_modes_(model)
    return model


def float64_model(cfg: dict, state: dict, seed: int = 0, wavlm: dict | None = None):
    """A float64 ``AudioCodecModel(cfg)`` holding the weights ``state`` (``torch.nn.Module.state_dict`` of a
    ``build_model`` model: WavLM's included, which NeMo's own ``load_state_dict`` would skip), in Lightning's
    training modes."""
    import torch

    from conversion import codec as cc

    model64 = cc.build_nemo_model(cfg, seed=seed, randomize=False, wavlm=wavlm)
    torch.nn.Module.load_state_dict(model64, state, strict=True)
    model64.double()
    set_training_modes_(model64)
    return model64


def vocoder_batch(clip_lengths: Sequence[int], n_samples: int, *, seed: int = 0, wav: str = SPEECH,
                  sample_rate: int = 22050, min_duration: float = LFR_MIN_DURATION) -> dict:
    """A batch as NeMo's ``VocoderDataset`` + ``collate_fn`` make it: clip i is the first ``clip_lengths[i]``
    samples of ``wav`` (the project's espeak-ng sentence; -1: all of it), written as a wav with a NeMo manifest
    entry; the dataset crops ``n_samples`` at random (python/numpy RNGs seeded with ``seed``) from clips longer
    than that and keeps shorter ones whole; the collate function zero-pads. Returns {'audio': float32 [B, N],
    'audio_lens': int32 [B]} as numpy arrays (``as_torch_batch`` gives NeMo's tensors)."""
    import random

    import soundfile as sf
    import torch

    from conversion import codec as cc

    cc._quiet_nemo()
    from nemo.collections.tts.data.vocoder_dataset import VocoderDataset

    y, sr = sf.read(wav, dtype="float32")
    subtype = sf.info(wav).subtype  # NeMo reads int32 samples: a FLOAT wav would come back as zeros
    if sr != sample_rate:
        raise ValueError(f"{wav}: {sr} Hz, expected {sample_rate}")
    with tempfile.TemporaryDirectory() as tmp:
        manifest = os.path.join(tmp, "manifest.json")
        with open(manifest, "w") as f:
            for i, n in enumerate(clip_lengths):
                clip = y if n < 0 else y[:n]
                name = f"clip{i}.wav"
                sf.write(os.path.join(tmp, name), clip, sample_rate, subtype=subtype)
                f.write(json.dumps({"audio_filepath": name, "duration": len(clip) / sample_rate}) + "\n")
        ds = VocoderDataset({"fixture": {"manifest_path": manifest, "audio_dir": tmp}}, sample_rate=sample_rate,
                            n_samples=n_samples, min_duration=min_duration)
        if len(ds) != len(clip_lengths):
            raise ValueError(f"VocoderDataset kept {len(ds)} of {len(clip_lengths)} clips (min_duration {min_duration} s)")
        random.seed(seed)
        np.random.seed(seed)
        torch.manual_seed(seed)
        batch = ds.collate_fn([ds[i] for i in range(len(ds))])
    for i, n in enumerate(batch["audio_lens"].tolist()):
        if not batch["audio"][i, :n].abs().max() > 0:
            raise ValueError(f"clip {i} of the batch is silent")
    return {"audio": batch["audio"].numpy(), "audio_lens": batch["audio_lens"].numpy()}


def as_torch_batch(batch: dict, dtype=None) -> dict:
    import torch

    audio = torch.from_numpy(np.asarray(batch["audio"]))
    return {"audio": audio.to(dtype) if dtype is not None else audio,
            "audio_lens": torch.from_numpy(np.asarray(batch["audio_lens"])).to(torch.int32)}


@contextlib.contextmanager
def nemo_float64():
    """Lets NeMo's training step run in float64: ``Tensor.float()`` leaves float64 tensors as they are (NeMo casts
    audio to float32 before the mel and STFT losses), and FilterbankFeatures' STFT uses its window in the input's
    dtype (NeMo casts the window to float32). Float32 tensors are unaffected."""
    import torch
    from nemo.collections.asr.parts.preprocessing.features import FilterbankFeatures

    orig_float, orig_stft = torch.Tensor.float, FilterbankFeatures.stft

    def keep64(self, *args, **kwargs):
        return self if self.dtype == torch.float64 else orig_float(self, *args, **kwargs)

    def stft_in_dtype(self, x):
        if x.dtype != torch.float64:
            return orig_stft(self, x)
        return torch.stft(x, n_fft=self.n_fft, hop_length=self.hop_length, win_length=self.win_length,
                          center=not self.exact_pad, window=self.window.to(dtype=x.dtype), return_complex=True,
                          pad_mode="constant")

    torch.Tensor.float = keep64
    FilterbankFeatures.stft = stft_in_dtype
    try:
        yield
    finally:
        torch.Tensor.float = orig_float
        FilterbankFeatures.stft = orig_stft


def _state(model) -> dict[str, np.ndarray]:
    """NeMo's own state dict (WavLM left out, as NeMo saves it), copied to numpy."""
    return {k: v.detach().cpu().clone().numpy() for k, v in model.state_dict().items()}


def _param_names(model) -> dict[int, str]:
    return {id(p): n for n, p in model.named_parameters()}


class _Plumbing:
    """Lightning's side of manual optimisation, reduced to what AudioCodecModel.training_step calls."""

    def __init__(self, model, record_grads: bool = True):
        optimizers, schedulers = model.configure_optimizers()
        self.optim_g, self.optim_d = optimizers
        self.schedulers = [s["scheduler"] if isinstance(s, dict) else s for s in schedulers]
        names = _param_names(model)
        self.records: dict[str, Any] = {}
        for opt, key in ((self.optim_g, "grads_g"), (self.optim_d, "grads_d")):
            if record_grads:
                opt.register_step_pre_hook(self._grad_hook(key, names))
        model.optimizers = lambda use_pl_optimizer=True: (self.optim_g, self.optim_d)
        model.lr_schedulers = lambda: self.schedulers
        model.manual_backward = self._backward
        model.log = lambda name, value, **kw: self.records["logged"].__setitem__(name, _num(value))
        model.log_dict = lambda d, **kw: self.records["logged"].update({k: _num(v) for k, v in d.items()})

    def _grad_hook(self, key, names):
        def hook(opt, args, kwargs):
            self.records[key] = {names[id(p)]: p.grad.detach().cpu().clone().numpy()
                                 for group in opt.param_groups for p in group["params"] if p.grad is not None}
        return hook

    def _backward(self, loss, *args, **kwargs):
        self.records["backward"].append(_num(loss))
        loss.backward(*args, **kwargs)

    def new_step(self):
        self.records = {"logged": {}, "backward": []}


def _num(v) -> float:
    return float(v.detach()) if hasattr(v, "detach") else float(v)


def official_stepper(model, batch: dict, device=None):
    """A function that runs one NeMo ``model.training_step(batch, batch_idx)`` per call, batch_idx 0, 1, 2, ...
    in one epoch (no scheduler step), with the model's own two Adam optimizers and the plumbing of
    ``run_steps`` (no gradient copies: for timing), and returns {'loss_gen_all', and 'd_loss' on discriminator
    update steps} of that step. ``device``: where the batch goes (default: the CPU)."""
    import itertools

    tb = as_torch_batch(batch)
    if device is not None:
        tb = {k: v.to(device) for k, v in tb.items()}
    plumbing = _Plumbing(model, record_grads=False)
    batch_idx = itertools.count()

    def step() -> dict:
        plumbing.new_step()
        model.training_step(tb, next(batch_idx))
        out = {"loss_gen_all": plumbing.records["backward"][-1]}
        if "d_loss" in plumbing.records["logged"]:
            out["d_loss"] = plumbing.records["logged"]["d_loss"]
        return out

    return step


def run_steps(model, batch: dict, epochs: Sequence[int] = (2,), *, float64: bool = False) -> list[dict]:
    """``epochs[e]`` batches in epoch e (batch_idx 0, 1, ... restarting each epoch), each NeMo's
    ``model.training_step(batch, batch_idx)`` on the same batch, ``on_train_epoch_end()`` after each epoch.
    The model is updated in place. Per step: {'epoch', 'batch_idx', 'disc_updated', 'lr_g', 'lr_d' (during the
    step), 'losses' (NeMo's metric names, floats, plus 'loss_gen_all'), 'logged' (everything NeMo logged),
    'grads_g', 'grads_d' ({state-dict name: array} before the optimizer step; grads_d empty without a
    discriminator update), 'state_dict' (after the step)}."""
    import torch

    dtype = torch.float64 if float64 else torch.float32
    tb = as_torch_batch(batch, dtype)
    plumbing = _Plumbing(model)
    out = []
    with nemo_float64() if float64 else contextlib.nullcontext():
        for epoch, n_batches in enumerate(epochs):
            for batch_idx in range(n_batches):
                plumbing.new_step()
                lr_g, lr_d = plumbing.optim_g.param_groups[0]["lr"], plumbing.optim_d.param_groups[0]["lr"]
                update = bool(model.should_update_disc(batch_idx))
                model.training_step(tb, batch_idx)
                rec = plumbing.records
                logged = rec["logged"]
                losses = {k: v for k, v in logged.items() if k == "d_loss" or k.startswith("g_loss_")}
                losses["loss_gen_all"] = rec["backward"][-1]
                out.append({"epoch": epoch, "batch_idx": batch_idx, "disc_updated": update, "lr_g": lr_g,
                            "lr_d": lr_d, "losses": losses, "logged": logged, "grads_g": rec.get("grads_g", {}),
                            "grads_d": rec.get("grads_d", {}) if update else {}, "state_dict": _state(model)})
            model.on_train_epoch_end()
    return out


def reference_run(cfg: dict | None = None, *, seed: int = 0, batch: dict | None = None,
                  epochs: Sequence[int] = (2,), float64: bool = True, wavlm_arch: dict | None = None) -> dict:
    """The official runs from one randomised model: float32 (and float64 from a copy of the same weights).
    ``batch`` defaults to ``small_batch()``. Returns {'config', 'batch', 'initial_state_dict' (NeMo's, no
    WavLM), 'wavlm_state_dict', 'steps32', 'steps64' (when float64), 'model' (the float32 model after the
    steps)}. ``wavlm_arch``: the stand-in WavLM's architecture (``build_model``)."""
    import torch

    cfg = cfg or small_config()
    batch = batch if batch is not None else small_batch()
    model = build_model(cfg, seed, wavlm=wavlm_arch)
    initial = _state(model)
    wavlm_sd = {k: v.detach().clone().numpy() for k, v in wavlm(model).state_dict().items()}
    model64 = float64_model(cfg, torch.nn.Module.state_dict(model), seed, wavlm_arch) if float64 else None
    res = {"config": cfg, "batch": batch, "initial_state_dict": initial, "wavlm_state_dict": wavlm_sd,
           "steps32": run_steps(model, batch, epochs)}
    if float64:
        res["steps64"] = run_steps(model64, batch, epochs, float64=True)
    res["model"] = model
    return res


def small_batch(seed: int = 0) -> dict:
    """Two clips for ``small_config``: the whole fixture sentence (cropped at random to 6144 samples, 6 LFR
    frames) and its first 5000 samples (kept whole and zero-padded), so audio_lens [6144, 5000] and NeMo's frame
    padding to [6144, 5120] both matter. The dataset's min_duration is lowered from the LFR's 0.4 s to 0.2 s
    so that a clip shorter than the (CPU-sized) crop is accepted; it only filters the manifest."""
    return vocoder_batch([-1, 5000], 6144, seed=seed, min_duration=0.2)


def _flat_params(sd: dict, prefix: tuple[str, ...]) -> dict:
    return {k: v for k, v in sd.items() if k.startswith(prefix) and SLM_PREFIX not in k}


def update_of(step: dict, initial: dict, prefix: tuple[str, ...]) -> dict:
    """{name: params after the step - initial params} for parameters (not buffers) under ``prefix``."""
    after = _flat_params(step["state_dict"], prefix)
    return {k: np.asarray(after[k], np.float64) - np.asarray(initial[k], np.float64) for k in after
            if k in initial and np.issubdtype(np.asarray(after[k]).dtype, np.floating)}


GEN = ("audio_encoder.", "audio_decoder.")
DISC = ("discriminator.",)


def compare_runs(test: list[dict], ref: list[dict], initial: dict | None = None) -> list[dict]:
    """Per step: {'losses': {term: relative error}, 'grads_g' / 'grads_d': grad_metrics (1 - cos is
    1 - metrics['cos'], relative norm difference metrics['norm_diff'])}, of ``test`` against ``ref`` (lists of
    run_steps dicts; a JAX side returns the same keys with NeMo's names). With ``initial`` (the state dict both
    started from), also 'update_g' / 'update_d': the same metrics on params after the step - initial params."""
    rows = []
    for t, r in zip(test, ref, strict=True):
        row = {"batch_idx": r["batch_idx"], "disc_updated": r["disc_updated"],
               "losses": {k: rel_err(t["losses"][k], v) for k, v in r["losses"].items()}}
        for key in ("grads_g", "grads_d"):
            if r[key]:
                row[key] = grad_metrics(t[key], r[key])
        if initial is not None:
            for key, prefix in (("update_g", GEN), ("update_d", DISC)):
                row[key] = grad_metrics(update_of(t, initial, prefix), update_of(r, initial, prefix))
        rows.append(row)
    return rows


def _table(rows: list[dict]) -> str:
    lines = ["| step | batch_idx | quantity | float32 vs float64 |", "|---|---|---|---|"]
    for s, row in enumerate(rows):
        for term, v in row["losses"].items():
            lines.append(f"| {s} | {row['batch_idx']} | {term} (relative) | {v:.1e} |")
        for key in ("grads_g", "grads_d", "update_g", "update_d"):
            if key in row:
                m = row[key]
                lines.append(f"| {s} | {row['batch_idx']} | {key} 1 - cos / norm diff ({m['size']} values) | "
                             f"{1 - m['cos']:.1e} / {m['norm_diff']:.1e} |")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, nargs="+", default=[2], help="batches per epoch (default: 2)")
    ap.add_argument("--report", help="write the comparison as JSON here")
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads (default 1: on a loaded 2-core machine two threads run ~3x slower)")
    args = ap.parse_args(argv)
    import time

    import torch

    torch.set_num_threads(args.threads)

    t0 = time.time()
    cfg, batch = small_config(), small_batch(args.seed)
    run = reference_run(cfg, seed=args.seed, batch=batch, epochs=args.epochs)
    rows = compare_runs(run["steps32"], run["steps64"], run["initial_state_dict"])
    print(f"NeMo AudioCodecModel.training_step, float32 vs float64 (small_config"
          f", batch audio_lens {list(map(int, batch['audio_lens']))}, torch {torch.__version__}, "
          f"{time.time() - t0:.0f} s)")
    print(_table(rows))
    for i, s in enumerate(run["steps32"]):
        print(f"step {i} (epoch {s['epoch']}, batch_idx {s['batch_idx']}), float32: " + ", ".join(f"{k} {v:.6g}" for k, v in s["losses"].items()))
    if args.report:
        from jaxvoc.io.atomic import atomic_file

        with atomic_file(args.report) as tmp, open(tmp, "w") as f:
            json.dump(rows, f, indent=1)


if __name__ == "__main__":
    main()
