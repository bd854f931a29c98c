"""NeMo audio codec ``.nemo`` archive (``model_config.yaml`` + ``model_weights.ckpt``) -> jaxvoc checkpoint, and
the official NeMo model for comparisons, tests and benchmarks.

The archive is a tar (plain or gzip). Nothing is extracted to a path named by the archive: the two members
are read into a private temporary folder, and an archive with absolute, ``..`` or link members is refused.
The weights load with ``torch.load(weights_only=True)``.

Converted: ``audio_encoder.*`` and ``audio_decoder.*`` (weight norm kept, either key style); the FSQ buffers
(``vector_quantizer.fsqs.N.num_levels`` / ``dim_base_index``) are checked against the config (FSQ has no
weights). ``discriminator.*`` becomes the extra tree ``discriminator`` for fine-tuning, the parameters of
:class:`jaxvoc.models.codec_discriminators.CodecDiscriminator` for the config's discriminator section (checked
name by name): torch names mapped as everywhere in jaxvoc (``discriminators.0.convs.1.weight_v`` ->
``discriminators_0/convs_1/weight_v``), tensors in jaxvoc layout (Conv1d ``[K, in, out]``, Conv2d ``[kh, kw,
in, out]``, weight-norm gains permuted alike). Buffers (STFT windows, the resampling kernel, loss
filterbanks) and the SLM discriminator's WavLM are not converted (WavLM: ``jaxvoc convert wavlm``).
"""

from __future__ import annotations

import contextlib
import copy
import json
import os
import posixpath
import shutil
import tarfile
import tempfile
from typing import Iterator

import jax
import jax.numpy as jnp
import numpy as np

from conversion import common
from conversion.wavlm import BASE_PLUS
from jaxvoc.models.codec import FINGERPRINT_KEY, AudioCodec, CodecConfig, fingerprint
from jaxvoc.models.codec_discriminators import CodecDiscriminatorConfig
from jaxvoc.models.codec_discriminators import init_params as init_discriminator
from jaxvoc.errors import UserError, warn

CONFIG_NAME = "model_config.yaml"
WEIGHTS_NAME = "model_weights.ckpt"
MODULES = "nemo.collections.tts.modules.audio_codec_modules"


# ----------------------------------------------------------------------------------------------------------
# Reading the archive


def _safe_member(m: tarfile.TarInfo, src: str) -> str:
    name = m.name.replace("\\", "/")
    norm = posixpath.normpath(name)
    if name.startswith("/") or norm == ".." or norm.startswith("../") or "/../" in f"/{norm}/":
        raise UserError(f"{src} has a member with an unsafe path ({m.name!r}); refusing to read this archive")
    if m.issym() or m.islnk():
        raise UserError(f"{src} has a link member ({m.name!r}); refusing to read this archive")
    return norm


@contextlib.contextmanager
def open_nemo(src: str) -> Iterator[tuple[str, str]]:
    """Yields (model_config.yaml path, model_weights.ckpt path) of a ``.nemo`` archive (or of a folder holding
    the extracted pair); the archive's members are copied into a private temporary folder first."""
    if not os.path.exists(src):
        raise UserError(f"source not found: {src}")
    if os.path.isdir(src):
        cfg, ckpt = os.path.join(src, CONFIG_NAME), os.path.join(src, WEIGHTS_NAME)
        for p in (cfg, ckpt):
            if not os.path.exists(p):
                raise UserError(f"{src} has no {os.path.basename(p)}; give a .nemo archive or its extracted folder")
        yield cfg, ckpt
        return
    tmp = tempfile.mkdtemp(prefix="jaxvoc-nemo-")
    try:
        try:
            with tarfile.open(src, "r:*") as tf:
                members = tf.getmembers()
                found = {}
                for m in members:
                    norm = _safe_member(m, src)
                    if m.isfile() and norm in (CONFIG_NAME, WEIGHTS_NAME):
                        found[norm] = m
                for name in (CONFIG_NAME, WEIGHTS_NAME):
                    if name not in found:
                        raise UserError(f"{src} has no {name}; it is not a NeMo model archive (.nemo)")
                    f = tf.extractfile(found[name])
                    with open(os.path.join(tmp, name), "wb") as out:
                        shutil.copyfileobj(f, out, 1 << 20)
        except UserError:
            raise
        except (tarfile.TarError, EOFError, OSError, ValueError) as e:  # gzip/zlib errors are OSError / zlib.error
            first = str(e).splitlines()[0] if str(e) else type(e).__name__
            raise UserError(f"{src} is not a readable .nemo archive ({first[:160]}); download it again") from None
        except Exception as e:  # zlib.error and friends
            if type(e).__module__ in ("zlib", "gzip", "_compression"):
                raise UserError(f"{src} is a damaged .nemo archive ({e}); download it again") from None
            raise
        yield os.path.join(tmp, CONFIG_NAME), os.path.join(tmp, WEIGHTS_NAME)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_config(path: str) -> dict:
    """model_config.yaml -> plain dict, interpolations (``${...}``) resolved."""
    import yaml

    try:
        with open(path) as f:
            d = yaml.safe_load(f)
    except (yaml.YAMLError, UnicodeDecodeError) as e:
        raise UserError(f"{path} is not valid YAML ({str(e).splitlines()[0][:160]})") from None
    if not isinstance(d, dict):
        raise UserError(f"{path} is not a NeMo model config (a mapping)")
    try:
        from omegaconf import OmegaConf

        d = OmegaConf.to_container(OmegaConf.create(d), resolve=True)
    except ImportError:
        pass
    except Exception as e:  # omegaconf's interpolation errors
        raise UserError(f"{path}: cannot resolve the config's interpolations ({str(e).splitlines()[0][:160]})") \
            from None
    d.pop("target", None)  # NeMo's own bookkeeping keys
    d.pop("nemo_version", None)
    return d


def read_state_dict(path: str, info_out: dict | None = None) -> dict[str, np.ndarray]:
    """The archive's weights (numpy, weight norm as weight_g / weight_v); ``info_out`` (a dict) receives the
    file's weight-norm key style under 'weight_norm'."""
    obj = common.load_torch_file(path)
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise UserError(f"{path} holds no state dict")
    if info_out is not None:
        info_out["weight_norm"] = common.weight_norm_style(obj)
    return common.normalize_keys(common.to_numpy_state_dict(obj, path))


# ----------------------------------------------------------------------------------------------------------
# State dict -> parameter trees


def expected_tree(cfg: CodecConfig) -> dict:
    n = max(cfg.min_samples(), 4 * cfg.samples_per_frame)
    audio = jnp.zeros((1, n), jnp.float32)
    return common.expected_shapes(
        lambda: AudioCodec(cfg).init(jax.random.PRNGKey(0), audio, jnp.array([n]))["params"])


def quantizer_buffers(cfg: CodecConfig) -> dict[str, np.ndarray]:
    """NeMo's FSQ buffers (``num_levels``, ``dim_base_index``: int32 [1, D, 1] per group) of a config."""
    fsq = cfg.quantizer.fsq
    prefixes = ([f"vector_quantizer.fsqs.{g}." for g in range(cfg.num_groups)]
                if cfg.quantizer_target == "GroupFiniteScalarQuantizer" else ["vector_quantizer."])
    expected = {}
    for pre in prefixes:
        expected[pre + "num_levels"] = np.asarray(fsq.num_levels, np.int32).reshape(1, -1, 1)
        expected[pre + "dim_base_index"] = np.asarray(fsq.base, np.int32).reshape(1, -1, 1)
    return expected


def _check_quantizer(sd: dict[str, np.ndarray], cfg: CodecConfig, source: str) -> None:
    expected = quantizer_buffers(cfg)
    keys = [k for k in sd if k.startswith("vector_quantizer.")]
    unexpected = sorted(set(keys) - set(expected))
    if unexpected:
        raise UserError(f"{source}: unexpected quantizer tensors {unexpected[:4]} for a {cfg.quantizer_target}")
    for k, v in expected.items():
        if k in sd and (sd[k].shape != v.shape or np.any(sd[k] != v)):
            raise UserError(f"{source}: {k} is {sd[k].reshape(-1).tolist()}, but the config says "
                            f"{v.reshape(-1).tolist()}; the config does not belong to these weights")


def convert_state_dict(sd: dict[str, np.ndarray], cfg: CodecConfig, source: str) -> tuple[dict, dict]:
    """Normalised numpy state dict -> (params {audio_encoder, audio_decoder}, extra {discriminator: tree})."""
    _check_quantizer(sd, cfg, source)
    gen = {}
    disc = {}
    for k, v in sd.items():
        if k.startswith(("audio_encoder.", "audio_decoder.")):
            if k.endswith(".alpha"):  # NeMo's Snake alpha [1, C, 1] -> [C]
                v = v.reshape(-1)
            gen[k] = v
        elif k.startswith("discriminator."):
            disc[k[len("discriminator."):]] = v
    if not gen:
        raise UserError(f"{source} has no audio_encoder / audio_decoder weights; is it an AudioCodecModel?")
    params = common.state_dict_to_params(gen, expected_tree(cfg), source, transposed=_transposed)
    extra = {}
    section = json.loads(cfg.nemo).get("discriminator") if cfg.nemo else None
    if disc and section:
        try:
            dcfg = CodecDiscriminatorConfig.from_dict(section, source)
        except UserError as e:  # a discriminator jaxvoc lacks does not stop a conversion for inference
            warn(f"{e}; the discriminator is left out of the conversion")
        else:
            extra["discriminator"] = convert_discriminator(disc, dcfg, source)
    return params, extra


def _transposed(path: tuple[str, ...]) -> bool:
    return any(s.startswith("up_sample_conv_layers_") for s in path)  # the decoder's ConvTranspose1d layers


def _is_discriminator_weight(key: str) -> bool:
    """NeMo's discriminator state dict holds more than weights: the STFT discriminators' windows and the SLM's
    resampling kernel (buffers jaxvoc computes itself), and the SLM's whole WavLM (NeMo 3.0.0 means to leave
    it out, but its filter looks for ``.slm_model.slm_model.`` while the keys read ``.slm_model.ssl_model.``).
    Those are left out: WavLM comes from its own checkpoint (``jaxvoc convert wavlm``)."""
    return not (key.endswith(".window") or key.endswith(".resample.kernel") or ".slm_model." in key)


def convert_discriminator(sd: dict[str, np.ndarray], cfg: CodecDiscriminatorConfig, source: str) -> dict:
    """NeMo's discriminator state dict (keys without the ``discriminator.`` prefix, either weight-norm style) ->
    the parameter tree of :class:`jaxvoc.models.codec_discriminators.CodecDiscriminator` (weight norm kept),
    checked tensor by tensor against what the config builds."""
    sd = {k: v for k, v in common.normalize_keys(sd).items() if _is_discriminator_weight(k)}
    expected = common.expected_shapes(lambda: init_discriminator(cfg))
    return common.state_dict_to_params(sd, expected, f"{source} (discriminator)")


def convert(src: str, config: str | None = None) -> common.Converted:
    """Returns (config dict = NeMo's model config + fingerprint, weight-normed params, {discriminator: tree}).
    ``config``: a model_config.yaml to use instead of the archive's."""
    info: dict = {}
    with open_nemo(src) as (cfg_path, ckpt_path):
        d = read_config(config or cfg_path)
        cfg = CodecConfig.from_dict(d, config or f"{src}:{CONFIG_NAME}")
        sd = read_state_dict(ckpt_path, info)
    params, extra = convert_state_dict(sd, cfg, f"{src}:{WEIGHTS_NAME}")
    out = cfg.to_dict()
    out.pop(FINGERPRINT_KEY, None)
    out[FINGERPRINT_KEY] = fingerprint(cfg, params)
    if info["weight_norm"] == "weight_g":  # not NeMo's current style (parametrizations): recorded for export
        out[common.WEIGHT_NORM_KEY] = "weight_g"
    return common.Converted(out, params, extra)


# ----------------------------------------------------------------------------------------------------------
# jaxvoc checkpoint -> .nemo (jaxvoc export)

NEMO_FILE = "model.nemo"
NEMO_TARGET = "nemo.collections.tts.models.audio_codec.AudioCodecModel"  # the class NeMo's save_to records


def export(config: dict, trees: dict, out_dir: str, source: str) -> list[str]:
    """Writes ``model.nemo``, a NeMo archive as ``AudioCodecModel.save_to`` makes one (an uncompressed tar of
    ``./model_config.yaml`` and ``./model_weights.ckpt``) that ``AudioCodecModel.restore_from`` loads: the
    model config (jaxvoc's own keys left out, NeMo's ``target`` added), and the state dict of the encoder, the
    FSQ buffers, the decoder and, when the checkpoint holds it, the discriminator (WavLM's weights are not in
    it, as NeMo leaves them out; NeMo's loss buffers are recomputed by NeMo from the config). Weight norm is
    written in NeMo's current style (``parametrizations.weight.original0/1``) unless the source recorded the
    older one. Returns the files written."""
    import io

    import yaml

    cfg = CodecConfig.from_dict(config, source)
    sd = nemo_state_dict(trees, config.get(common.WEIGHT_NORM_KEY, "parametrizations"))
    sd.update(quantizer_buffers(cfg))
    nemo_cfg = dict(common.official_config(config), target=NEMO_TARGET)
    path = os.path.join(out_dir, NEMO_FILE)
    with tarfile.open(path, "w:") as tf:
        for name, data in ((CONFIG_NAME, yaml.safe_dump(nemo_cfg, sort_keys=False).encode()),
                           (WEIGHTS_NAME, _torch_bytes(common.to_torch(sd)))):
            member = tarfile.TarInfo("./" + name)
            member.size = len(data)
            member.mode = 0o644
            tf.addfile(member, io.BytesIO(data))
    return [NEMO_FILE]


def nemo_state_dict(trees: dict, style: str | None = "parametrizations") -> dict[str, np.ndarray]:
    """jaxvoc trees -> NeMo's state-dict tensors by name: ``params`` (encoder and decoder; Snake alphas as NeMo's
    [1, C, 1]) and, when given, ``discriminator`` (under ``discriminator.``; never WavLM), weight norm in
    ``style`` (NeMo's current ``parametrizations`` or ``weight_g``). The inverse of :func:`convert_state_dict`
    without the FSQ buffers; a gradient tree maps the same way (NeMo's ``named_parameters`` names)."""
    sd = {}
    for k, v in common.params_to_state_dict(trees["params"], transposed=_transposed).items():
        sd[k] = v.reshape(1, -1, 1) if k.endswith(".alpha") else v  # NeMo's Snake alpha is [1, C, 1]
    for k, v in common.params_to_state_dict(trees.get("discriminator", {})).items():
        if k.endswith(".resample.weight"):  # torchaudio Resample's buffer 'kernel' (jaxvoc's leaf name too)
            k = k[:-len("weight")] + "kernel"
        if ".slm_model.slm_model." not in k:
            sd["discriminator." + k] = v
    return common.with_weight_norm_style(sd, style)


def _torch_bytes(obj) -> bytes:
    import io

    import torch

    buf = io.BytesIO()
    torch.save(obj, buf)
    return buf.getvalue()


# ----------------------------------------------------------------------------------------------------------
# The official NeMo side (tests, compare, bench)


def lfr_config(discriminator: bool = True) -> dict:
    """NeMo's Low Frame-rate Speech Codec (22.05 kHz, 1024 samples per frame, 8 x FSQ[8,7,6,6]) model config,
    as in its published training config (dataset sections left out)."""
    cfg = {
        "sample_rate": 22050,
        "samples_per_frame": 1024,
        "audio_encoder": {"_target_": f"{MODULES}.HiFiGANEncoder", "down_sample_rates": [2, 2, 4, 8, 8],
                          "encoded_dim": 32, "base_channels": 48, "activation": "lrelu",
                          "resblock_dilation_sizes": [1]},
        "audio_decoder": {"_target_": f"{MODULES}.HiFiGANDecoder", "up_sample_rates": [8, 8, 4, 2, 2],
                          "input_dim": 32, "base_channels": 1024, "activation": "lrelu", "output_activation": "tanh",
                          "resblock_dilation_sizes": [1]},
        "vector_quantizer": {"_target_": f"{MODULES}.GroupFiniteScalarQuantizer", "num_groups": 8,
                             "num_levels_per_group": [8, 7, 6, 6]},
        "discriminator": {"_target_": f"{MODULES}.Discriminator", "discriminators": [
            {"_target_": "nemo.collections.tts.modules.encodec_modules.MultiResolutionDiscriminatorSTFT",
             "resolutions": [[128, 32, 128], [256, 64, 256], [512, 128, 512], [1024, 256, 1024], [2048, 512, 2048]]},
            {"_target_": f"{MODULES}.MultiPeriodDiscriminator"},
            {"_target_": f"{MODULES}.SLMDiscriminator", "slm_model_name": "microsoft/wavlm-base-plus", "slm_sr": 16000,
             "input_sr": 22050, "slm_hidden": 768, "slm_layers": 13, "initial_channel": 64}]},
        "loss_resolutions": [[32, 8, 32], [64, 16, 64], [128, 32, 128], [256, 64, 256], [512, 128, 512],
                             [1024, 256, 1024], [2048, 512, 2048]],
        "mel_loss_dims": [5, 10, 20, 40, 80, 160, 320],
        "mel_loss_log_guard": 1.0, "mel_loss_l1_scale": 1.0, "mel_loss_l2_scale": 0.0,
        "stft_loss_scale": 20.0, "stft_loss_log_guard": 1.0, "time_domain_loss_scale": 0.0,
        "commit_loss_scale": 0.0, "feature_loss_type": "absolute",
        "generator_loss": {"_target_": "nemo.collections.tts.losses.audio_codec_loss.GeneratorSquaredLoss"},
        "discriminator_loss": {"_target_": "nemo.collections.tts.losses.audio_codec_loss.DiscriminatorSquaredLoss"},
        "disc_updates_per_period": 1, "disc_update_period": 2,
        "optim": {"_target_": "torch.optim.Adam", "lr": 2e-4, "betas": [0.8, 0.99],
                  "sched": {"name": "ExponentialLR", "gamma": 0.998}},
    }
    if not discriminator:
        del cfg["discriminator"]
    return cfg


def variant_config(base: dict | None = None, *, sample_rate: int | None = None, samples_per_frame: int | None = None,
                   encoder: dict | None = None, decoder: dict | None = None, quantizer: dict | None = None,
                   discriminator: bool | dict = False) -> dict:
    """A copy of ``base`` (default: the LFR config) with sections updated; module sections are merged."""
    cfg = copy.deepcopy(base or lfr_config())
    if sample_rate is not None:
        cfg["sample_rate"] = sample_rate
    if samples_per_frame is not None:
        cfg["samples_per_frame"] = samples_per_frame
    for key, upd in (("audio_encoder", encoder), ("audio_decoder", decoder), ("vector_quantizer", quantizer)):
        if upd:
            if "_target_" in upd and upd["_target_"] != cfg[key]["_target_"]:
                cfg[key] = {}
            cfg[key].update(upd)
    if discriminator is False:
        cfg.pop("discriminator", None)
    elif isinstance(discriminator, dict):
        cfg["discriminator"] = discriminator
    return cfg


def small_discriminator(sample_rate: int = 22050) -> dict:
    """A cheap discriminator section of the LFR kind (STFT, period and SLM discriminators)."""
    return {"_target_": f"{MODULES}.Discriminator", "discriminators": [
        {"_target_": "nemo.collections.tts.modules.encodec_modules.MultiResolutionDiscriminatorSTFT",
         "resolutions": [[128, 32, 128], [256, 64, 256]]},
        {"_target_": f"{MODULES}.MultiPeriodDiscriminator", "periods": [2]},
        {"_target_": f"{MODULES}.SLMDiscriminator", "slm_model_name": "microsoft/wavlm-base-plus", "slm_sr": 16000,
         "input_sr": sample_rate, "slm_hidden": 32, "slm_layers": 2, "initial_channel": 8}]}


# Stand-in WavLMs for NeMo's SLM discriminator (transformers.WavLMConfig keys; random weights, no hub here):
# a small one, and microsoft/wavlm-base-plus's architecture (its config.json's architecture keys; the rest are
# transformers' defaults, which equal that file's).
WAVLM_SMALL = dict(hidden_size=32, num_hidden_layers=1, num_attention_heads=2, intermediate_size=64,
                   conv_dim=(16, 16), conv_stride=(5, 4), conv_kernel=(10, 4), num_conv_pos_embeddings=16,
                   num_conv_pos_embedding_groups=2)
WAVLM_BASE_PLUS = BASE_PLUS


def use_offline_wavlm(architecture: dict | None = None) -> None:
    """NeMo's SLMDiscriminator downloads WavLM from a hub; offline, give it a randomly initialised
    ``transformers.WavLMModel`` of ``architecture`` (default ``WAVLM_SMALL``) instead, for the models built
    from now on (NeMo leaves WavLM's weights out of the saved state dict anyway)."""
    import transformers
    from nemo.collections.tts.modules import audio_codec_modules as acm

    if not getattr(acm.SSLModel, "_jaxvoc_offline", False):
        class OfflineSSLModel(acm.NeuralModule):
            _jaxvoc_offline = True
            architecture = WAVLM_SMALL

            def __init__(self, slm_model_name):
                super().__init__()
                self.ssl_model = transformers.WavLMModel(transformers.WavLMConfig(**type(self).architecture))

            def forward(self, *args, **kwargs):
                return self.ssl_model(*args, **kwargs)

        acm.SSLModel = OfflineSSLModel
    acm.SSLModel.architecture = dict(architecture or WAVLM_SMALL)


def _quiet_nemo() -> None:
    import logging as _logging

    from nemo.utils import logging as nemo_logging

    nemo_logging.setLevel(_logging.ERROR)
    # NeMo routes Python warnings into its logger (now at ERROR: every warning would vanish); give them back to
    # the previous handler (jaxvoc's one line each, see jaxvoc/cli.py)
    nemo_logging.captureWarnings(False)


def randomize_(model, seed: int) -> None:
    """Stand-in weights that behave like a trained codec's numerically: non-trivial Snake alphas (NeMo's init
    sets all to 1) and conv biases, and every conv of the encoder and decoder scaled so that its output has
    unit spread on a test signal (one pass in execution order, "LSUV"). Torch's default init shrinks the
    signal about 6x per layer, which leaves the encoder output at ~1e-3 of its inputs: float32 rounding would
    then dominate the FSQ decisions and make a token comparison meaningless."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if not name.startswith(("audio_encoder.", "audio_decoder.")):
                continue
            if name.endswith(".alpha"):
                p.copy_(torch.exp(torch.randn(p.shape, generator=g) * 0.3))
            elif name.endswith("bias"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        spf = model.samples_per_frame
        frames = 8
        n = frames * spf
        t = torch.arange(n, dtype=torch.float32) / model.sample_rate
        x = 0.3 * torch.sin(2 * np.pi * 220 * t * (1 + 3 * t)) + 0.05 * torch.randn(n, generator=g)
        _lsuv(model.audio_encoder, lambda: model.audio_encoder(audio=x[None], audio_len=torch.tensor([n])),
              last_target=1.0)
        # the encoder's outputs centred, with a random offset per channel: tokens spread over the codebooks
        enc, enc_len = model.audio_encoder(audio=x[None], audio_len=torch.tensor([n]))
        conv = model.audio_encoder.post_conv.conv
        conv.bias.sub_(enc[0].mean(dim=-1)).add_(torch.randn(conv.bias.shape, generator=g) * 0.3)
        codes = torch.randint(0, model.codebook_size, (1, model.num_codebooks, enc.shape[-1]), generator=g)
        deq = model.dequantize(tokens=codes, tokens_len=enc_len)
        _lsuv(model.audio_decoder, lambda: model.audio_decoder(inputs=deq, input_len=enc_len), last_target=0.3)


def randomize_discriminator_(disc, seed: int = 0, bias: float = 0.01) -> None:
    """Test weights for NeMo's discriminators (every parameter but the SLM's WavLM): weight-norm gains
    U(0.5, 1.5), directions N(0, 1), biases N(0, ``bias``). Biases of 0.1 would bury the signal-dependent part
    of the deeper STFT-discriminator layers under constants, which the last conv then cancels: NeMo's own
    float32 output lands ~100 dB from its float64 run, and a comparison would measure NeMo's rounding."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in disc.named_parameters():
            if ".slm_model." in name:
                continue
            if name.endswith(("original0", "weight_g")):
                p.copy_(0.5 + torch.rand(p.shape, generator=g))
            elif name.endswith(("original1", "weight_v")):
                p.copy_(torch.randn(p.shape, generator=g))
            else:
                p.copy_(bias * torch.randn(p.shape, generator=g))


def _lsuv(module, run, last_target: float) -> None:
    """Rescales each weight-normed conv's gain in execution order so that its output (bias removed) has unit
    standard deviation on the signal ``run()`` feeds, the last conv ``last_target``."""
    import torch

    convs = [m for m in module.modules() if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d))]

    def hook(m, inputs, out):
        b = m.bias.reshape(1, -1, 1) if m.bias is not None else 0.0
        std = float((out - b).std())
        target = last_target if m is convs[-1] else 1.0
        if std > 0:
            m.parametrizations.weight.original0.mul_(target / std)
            return (out - b) * (target / std) + b
        return out

    handles = [m.register_forward_hook(hook) for m in convs]
    try:
        run()
    finally:
        for h in handles:
            h.remove()


def build_nemo_model(cfg: dict, seed: int = 0, randomize: bool = True, wavlm: dict | None = None):
    """``AudioCodecModel(cfg=...)`` with random weights from ``seed`` (offline WavLM of architecture ``wavlm``,
    default ``WAVLM_SMALL``), in eval mode."""
    import torch
    from omegaconf import OmegaConf

    use_offline_wavlm(wavlm)
    _quiet_nemo()
    from nemo.collections.tts.models import AudioCodecModel

    torch.manual_seed(seed)
    model = AudioCodecModel(cfg=OmegaConf.create(copy.deepcopy(cfg)))
    if randomize:
        randomize_(model, seed)
    return model.eval()


def write_nemo(path: str, cfg: dict, seed: int = 0, randomize: bool = True):
    """A real ``.nemo`` written by NeMo itself (``AudioCodecModel.save_to``); returns the model."""
    model = build_nemo_model(cfg, seed, randomize)
    model.save_to(path)
    return model


def official_model(src: str):
    """The NeMo AudioCodecModel of a ``.nemo`` for inference: encoder, quantizer and decoder loaded strictly from
    the archive (the discriminator and other training parts are left out, so nothing is downloaded)."""
    with open_nemo(src) as (cfg_path, ckpt_path):
        d = read_config(cfg_path)
        sd = common.load_torch_file(ckpt_path)
    CodecConfig.from_dict(d, f"{src}:{CONFIG_NAME}")  # refuse what jaxvoc cannot compare
    for key in ("discriminator", "use_scl_loss", "use_slm_loss", "slm_encoder", "slm_predictor"):
        d.pop(key, None)
    model = build_nemo_model(d, randomize=False)
    for name in ("audio_encoder", "audio_decoder", "vector_quantizer"):
        sub = {k[len(name) + 1:]: v for k, v in sd.items() if k.startswith(name + ".")}
        sub = {k.replace(".weight_g", ".parametrizations.weight.original0")
               .replace(".weight_v", ".parametrizations.weight.original1"): v for k, v in sub.items()}
        getattr(model, name).load_state_dict(sub, strict=True)
    return model.eval()


def remove_weight_norm_(model) -> None:
    """Folds NeMo's weight-norm parametrizations into plain weights (the fastest PyTorch inference)."""
    import torch
    from torch.nn.utils import parametrize

    for m in model.modules():
        if isinstance(m, (torch.nn.Conv1d, torch.nn.ConvTranspose1d)) and parametrize.is_parametrized(m, "weight"):
            parametrize.remove_parametrizations(m, "weight", leave_parametrized=True)


def nemo_encode(model, audio: np.ndarray, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    """NeMo ``AudioCodecModel.encode`` on float audio [B, N] (or [N]) -> (tokens [B, C, T], lengths)."""
    import torch

    w = next(model.parameters())  # the model's dtype and device
    a = torch.from_numpy(np.atleast_2d(np.asarray(audio))).to(w.device, w.dtype)
    n = torch.tensor(lengths if lengths is not None else [a.shape[1]] * a.shape[0], dtype=torch.long,
                     device=w.device)
    with torch.inference_mode():
        tokens, tlen = model.encode(audio=a, audio_len=n)
    return tokens.cpu().numpy(), tlen.cpu().numpy()


def nemo_decode(model, tokens: np.ndarray, lengths=None) -> tuple[np.ndarray, np.ndarray]:
    import torch

    device = next(model.parameters()).device
    t = torch.from_numpy(np.asarray(tokens)).long().to(device)
    if t.ndim == 2:
        t = t[None]
    n = torch.tensor(lengths if lengths is not None else [t.shape[2]] * t.shape[0], dtype=torch.long, device=device)
    with torch.inference_mode():
        audio, alen = model.decode(tokens=t, tokens_len=n)
    audio = audio.cpu()
    return audio.double().numpy() if audio.dtype == torch.float64 else audio.numpy(), alen.cpu().numpy()


def compare(args) -> dict:
    """NeMo's AudioCodecModel and the converted JAX codec on one audio file: token agreement (JAX encode vs
    NeMo encode) and decoded audio (both decoders on NeMo's tokens)."""
    import torch

    from conversion import report as rp
    from jaxvoc.dsp.stft import MelConfig
    from jaxvoc.io.audio import BUNDLED_SPEECH, load_audio
    from jaxvoc.models.codec import Pretrained

    tdev, jdev = rp.setup_device(args.device)
    config, params, _ = convert(args.src, getattr(args, "config", None))
    cfg = CodecConfig.from_dict(config)
    audio = load_audio(args.input or BUNDLED_SPEECH, cfg.sample_rate)
    if len(audio) < cfg.min_samples():
        raise UserError(f"the input is too short ({len(audio)} samples); the codec needs {cfg.min_samples()}")
    model = official_model(args.src)
    remove_weight_norm_(model)
    model = model.to(tdev)
    a_t = torch.from_numpy(audio[None]).to(tdev)
    n_t = torch.tensor([len(audio)], device=tdev)
    with torch.inference_mode():
        tok_t, tlen_t = model.encode(audio=a_t, audio_len=n_t)
        ref, _ = model.decode(tokens=tok_t, tokens_len=tlen_t)
        sync = rp.torch_sync(args.device)
        t_enc_torch = rp.time_call(lambda: model.encode(audio=a_t, audio_len=n_t), args.repeats, 1, sync)
        t_dec_torch = rp.time_call(lambda: model.decode(tokens=tok_t, tokens_len=tlen_t), args.repeats, 1, sync)
    tokens_ref = tok_t.cpu().numpy()
    ref = ref[0].float().cpu().numpy()
    with jax.default_device(jdev):
        jm = Pretrained(cfg, jax.device_put(params, jdev))
        a_j = jax.device_put(jnp.asarray(audio[None]), jdev)
        tok_j, _ = jm.encode(a_j)
        out, _ = jm.decode(tokens_ref)
        out = np.asarray(out)[0]
        t_enc_jax = rp.time_call(lambda: jm.encode(a_j), args.repeats, 1, rp.jax_sync)
        t_dec_jax = rp.time_call(lambda: jm.decode(tokens_ref), args.repeats, 1, rp.jax_sync)
    tok_j = np.asarray(tok_j)
    agree = float(np.mean(tok_j == tokens_ref)) * 100
    seconds = len(audio) / cfg.sample_rate
    n = cfg.output_samples(len(audio))
    mel = MelConfig(sampling_rate=cfg.out_sample_rate, n_fft=1024, num_mels=80, hop_size=256, win_size=1024)
    snr, mx, l1 = rp.snr_db(out, ref), rp.max_abs(out, ref), rp.logmel_l1(out[:n], ref[:n], mel)
    rows = [("audio", f"{len(audio)} samples ({seconds:.2f} s), {tokens_ref.shape[2]} frames x "
                      f"{tokens_ref.shape[1]} codebooks"),
            ("token agreement", f"{agree:.3f} % ({int(np.sum(tok_j != tokens_ref))} of {tok_j.size} differ)"),
            ("decode SNR", f"{snr:.1f} dB (same tokens)"),
            ("decode max abs error", f"{mx:.3e}"),
            ("decode log-mel L1", f"{l1:.3e}"),
            ("pytorch encode / decode", f"{t_enc_torch * 1e3:.1f} ms / {t_dec_torch * 1e3:.1f} ms"),
            ("jax encode / decode", f"{t_enc_jax * 1e3:.1f} ms / {t_dec_jax * 1e3:.1f} ms"),
            ("speed ratio", f"encode {t_enc_torch / t_enc_jax:.2f}, decode {t_dec_torch / t_dec_jax:.2f} "
                            "(jax over pytorch)")]
    return {"rows": rows, "reference": ref[:n], "jax": out[:n], "mel_config": mel,
            "title": f"NeMo codec {os.path.basename(os.path.abspath(args.src))}",
            "token_agreement_pct": agree, "snr_db": snr, "max_abs": mx, "logmel_l1": l1,
            "time_pytorch_s": t_enc_torch + t_dec_torch, "time_jax_s": t_enc_jax + t_dec_jax,
            "time_encode_pytorch_s": t_enc_torch, "time_decode_pytorch_s": t_dec_torch,
            "time_encode_jax_s": t_enc_jax, "time_decode_jax_s": t_dec_jax,
            "frames": int(tokens_ref.shape[2])}
