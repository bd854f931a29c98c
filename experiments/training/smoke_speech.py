"""Speech for the training smoke runs: espeak-ng sentences in several voices and speeds, at 24 kHz and
22.05 kHz, with the quiet full-band noise floor of tests/fixtures (sox white noise, amplitude 0.002).

    python -m experiments.training.smoke_speech [--out runs/smoke_speech] [--wavlm runs/wavlm_standin]

writes OUT/24000/*.wav and OUT/22050/*.wav (runs/ is git-ignored). Needs espeak-ng and sox.

The codec's SLM discriminator needs a WavLM; with no hub here, ``--wavlm DIR`` also writes a stand-in: a small
randomly initialised ``transformers.WavLMModel`` (``conversion.codec.WAVLM_SMALL``, not
microsoft/wavlm-base-plus), saved as a Hugging Face folder and converted by ``conversion/wavlm.py`` to the
jaxvoc checkpoint DIR, and prints the ``jaxvoc train`` overrides that give the tiny codec config that WavLM
(``train.wavlm`` and the SLM discriminator's ``slm_hidden`` / ``slm_layers``).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile

SENTENCES = [
    "A vocoder turns a mel spectrogram back into sound.",
    "The quick brown fox jumps over the lazy dog near the riverbank.",
    "Training a neural network takes patience, data, and a good learning rate.",
    "She sells sea shells by the sea shore every summer morning.",
    "Numbers like three hundred and forty two are spoken slowly and clearly.",
    "The weather tomorrow will be cloudy with a chance of light rain in the evening.",
    "Please remember to save your work before closing the application.",
    "Every checkpoint holds the parameters, the optimizer state, and the data position.",
    "A flow model maximises the likelihood of the waveform given its spectrogram.",
    "Discriminators judge short windows of audio at many periods and scales.",
    "The library opens at nine and closes at six on weekdays.",
    "Bright violins and deep cellos filled the old concert hall with music.",
    "He asked whether the train to the airport leaves from platform four.",
    "Small models learn quickly but forget the fine details of the voice.",
    "Quietly, the cat walked across the kitchen and sat by the window.",
    "Mixed precision saves memory while the master weights stay in full precision.",
]
VOICES = ["en-us", "en-gb", "en-us+f3", "en-gb-x-rp+m3"]
SPEEDS = [140, 165, 185]
TINY_CONFIG = os.path.join(os.path.dirname(os.path.abspath(__file__)), "configs", "codec_tiny_smoke.yaml")


def write_standin_wavlm(out: str, seed: int = 0) -> list[str]:
    """The stand-in WavLM (module docstring) at ``out``; returns the ``--set`` overrides of ``jaxvoc train
    experiments/training/configs/codec_tiny_smoke.yaml`` that use it."""
    import json

    import torch
    import transformers

    from conversion import codec as cc
    from conversion import wavlm as cw
    from jaxvoc.io import checkpoint
    from jaxvoc.train.codec_config import read_yaml, resolve

    torch.manual_seed(seed)
    wavlm_cfg = transformers.WavLMConfig(**cc.WAVLM_SMALL)
    with tempfile.TemporaryDirectory() as hf:
        transformers.WavLMModel(wavlm_cfg).save_pretrained(hf)
        conv = cw.convert(hf)
    checkpoint.save(out, "wavlm", conv.config, conv.params, overwrite=True)
    # the tiny config's discriminators, the SLM one sized to this WavLM (a list: --set replaces it whole)
    discriminators = resolve(read_yaml(TINY_CONFIG, "config", "restore it from the repository"),
                             TINY_CONFIG)["model"]["discriminator"]["discriminators"]
    for d in discriminators:
        if d["_target_"].endswith(".SLMDiscriminator"):
            d.update(slm_hidden=wavlm_cfg.hidden_size, slm_layers=wavlm_cfg.num_hidden_layers + 1)
    return [f"train.wavlm={out}",
            "model.discriminator.discriminators=" + json.dumps(discriminators, separators=(",", ":"))]


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--out", default="runs/smoke_speech")
    p.add_argument("--wavlm", default=None, metavar="DIR",
                   help="also write the codec smoke run's stand-in WavLM to DIR (random, small; see above)")
    args = p.parse_args(argv)
    for tool in ("espeak-ng", "sox"):
        if shutil.which(tool) is None:
            print(f"smoke_speech: error: {tool} not found; install it (apt-get install {tool})", file=sys.stderr)
            return 2
    tmp = tempfile.mkdtemp()
    try:
        for sr in (24000, 22050):
            os.makedirs(os.path.join(args.out, str(sr)), exist_ok=True)
        for i, text in enumerate(SENTENCES):
            voice, speed = VOICES[i % len(VOICES)], SPEEDS[i % len(SPEEDS)]
            raw = os.path.join(tmp, f"{i}.wav")
            subprocess.run(["espeak-ng", "-v", voice, "-s", str(speed), "-w", raw, text], check=True)
            dur = subprocess.run(["soxi", "-D", raw], check=True, capture_output=True, text=True).stdout.strip()
            for sr in (24000, 22050):
                res, noise = os.path.join(tmp, f"{i}_{sr}.wav"), os.path.join(tmp, f"n{i}_{sr}.wav")
                subprocess.run(["sox", "-R", raw, "-r", str(sr), "-b", "16", res], check=True)
                subprocess.run(["sox", "-R", "-n", "-r", str(sr), "-c", "1", "-b", "16", noise, "synth", dur,
                                "whitenoise", "vol", "0.002"], check=True)
                subprocess.run(["sox", "-m", res, noise, os.path.join(args.out, str(sr), f"s{i:02d}.wav")],
                               check=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print(f"wrote {len(SENTENCES)} sentences to {args.out}/{{24000,22050}}")
    if args.wavlm:
        import shlex

        sets = write_standin_wavlm(args.wavlm)
        print(f"wrote a stand-in WavLM (random, small; not wavlm-base-plus) to {args.wavlm}; train the codec with\n"
              "  jaxvoc train experiments/training/configs/codec_tiny_smoke.yaml "
              + " ".join(f"--set {shlex.quote(s)}" for s in sets))
    return 0


if __name__ == "__main__":
    sys.exit(main())
