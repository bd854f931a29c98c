"""WaveGlow's training: the flow objective (the official ``WaveGlowLoss`` of the model's forward pass) and its
task for ``jaxvoc train`` (Adam at a constant learning rate, optional bfloat16 compute)."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxvoc.dsp.stft import mel_spectrogram
from jaxvoc.errors import UserError
from jaxvoc.io import checkpoint
from jaxvoc.models.waveglow import WaveGlow, WaveGlowConfig, nll
from jaxvoc.train import objective as objective_lib
from jaxvoc.train import optim
from jaxvoc.train.config import TrainConfig
from jaxvoc.train.tasks import Task, _check_same_structure, _place, load_factory


class WaveGlowObjective:
    """WaveGlow's flow objective: the official ``WaveGlowLoss(sigma)`` of the model's forward pass
    (``waveglow.glow.WaveGlow.forward((mel, audio))``), batch = {"audio": [B, N], "mel": [B, frames, M]}.

    Mixed precision (``cast_params``): every weight is cast to the compute dtype except the invertible 1x1
    convolutions, whose log-determinant (slogdet) is taken in float32; the loss is summed in float32."""

    name = "waveglow"

    def __init__(self, config, sigma: float):
        self.config = config
        self.sigma = float(sigma)
        self.model = WaveGlow(config)

    def init(self, rng, batch):
        return self.model.init(rng, batch["mel"][:1], batch["audio"][:1])["params"]

    def loss(self, params, batch):
        z, log_s, log_det = self.model.apply({"params": params}, batch["mel"], batch["audio"])
        return nll(z, log_s, log_det, self.sigma), {}

    @staticmethod
    def cast_params(params, dtype):
        return {k: (v if k.startswith("convinv_") else objective_lib.cast_floating(v, dtype)) for k, v in params.items()}


class WaveGlowTask(Task):
    kind = "waveglow"
    style = "waveglow"
    metric_keys = ("loss",)

    def __init__(self, cfg: TrainConfig, obj: objective_lib.FlowObjective | None = None):
        super().__init__(cfg)
        tc = cfg.model["train_config"]
        self.model_config = WaveGlowConfig.from_dict(cfg.model, cfg.path)
        self.mel_config = self.loss_mel_config = self.model_config.mel
        self.hop_size = self.model_config.hop_length
        self.sigma = float(tc["sigma"])
        if obj is None:
            obj = (load_factory(cfg.train.objective)(cfg) if cfg.train.objective
                   else WaveGlowObjective(self.model_config, self.sigma))
        self.obj = obj
        self.learning_rate = float(tc["learning_rate"])
        self.tx = optim.adam(self.learning_rate)
        self.compute_dtype = jnp.bfloat16 if cfg.train.compute_dtype == "bfloat16" else jnp.float32
        if cfg.segment_size % self.model_config.n_group:
            raise UserError(f"{cfg.path}: segment_length {cfg.segment_size} is not a multiple of n_group "
                            f"{self.model_config.n_group}")

    def prepare(self, audio):
        return {"audio": audio, "mel": mel_spectrogram(audio, self.mel_config)}

    def init_state(self, rng, audio):
        return objective_lib.init_flow_state(self.obj, self.tx, rng, self.prepare(audio))

    def step_fn(self, gather=lambda t: t):
        return objective_lib.make_flow_step(self.obj, self.tx, self.prepare, compute_dtype=self.compute_dtype,
                                            lr_schedule=lambda step: jnp.float32(self.learning_rate), gather=gather,
                                            cast_params=getattr(self.obj, "cast_params", None))

    def synthesize(self, state, mel):
        rng = jax.random.PRNGKey(self.cfg.seed)
        return self.obj.model.apply({"params": state["params"]}, mel, self.cfg.train.validation_sigma, rng=rng,
                                    method="infer")

    def lr(self, step: int) -> float:
        return self.learning_rate

    def apply_init(self, state, ckpt_dir):
        meta, load_tree = self._read_init(ckpt_dir)
        params = load_tree(ckpt_dir, "params")
        _check_same_structure(params, state["params"], "weights", ckpt_dir)
        return {**state, "params": _place(params, state["params"])}, "WaveGlow"

    def export_trees(self, state):
        return self.model_config.to_dict(), {"params": state["params"]}

    def export(self, state, out_dir):
        checkpoint.save(out_dir, "waveglow", self.model_config.to_dict(), jax.device_get(state["params"]),
                        overwrite=True)


TASK = WaveGlowTask
