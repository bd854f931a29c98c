"""jaxvoc train CONFIG [--set KEY=VALUE]... [--resume] [--init CKPT]: train BigVGAN (GAN), WaveGlow (flow) or
NeMo's audio codec (GAN) from a config file.

CONFIG is an official config.json with a "train" section, or for the codec NeMo's training YAML with a "train:"
section (see experiments/training/configs/, docs/training.md and docs/codec.md).
The run folder (train.checkpoint_path) receives checkpoints/, logs/ (TensorBoard), metrics.jsonl,
validation.jsonl, provenance.json (package versions, git commit, the resolved config; also in TensorBoard as
text) and, at the end, export/ (a jaxvoc checkpoint for `jaxvoc synth`).
"""

from __future__ import annotations

from jaxvoc.errors import UserError


def add_arguments(p):
    p.add_argument("config", help="training config: official model config (JSON; the codec: NeMo's YAML) + "
                                  "\"train\" section")
    p.add_argument("--resume", action="store_true", help="continue from the last checkpoint of the run folder")
    p.add_argument("--init", metavar="CKPT", help="start from a jaxvoc checkpoint (from jaxvoc convert): generator "
                                                  "or flow weights, and discriminators when it holds them")
    p.add_argument("--steps", type=int, help="stop after this many steps in all (default: train.training_steps)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key (repeatable): dotted for sections, e.g. train.validation_interval=5 "
                        "or learning_rate=1e-4; VALUE is parsed as JSON (else a string) and must have the type "
                        "of the value it replaces")
    p.add_argument("--run-dir", help="run folder (default: train.checkpoint_path, else runs/<config name>)")
    p.add_argument("--coordinator", help="multi-process: coordinator address host:port (jax.distributed)")
    p.add_argument("--num-processes", type=int, help="multi-process: number of processes")
    p.add_argument("--process-id", type=int, help="multi-process: this process's index")


def run(args) -> int:
    import os

    from jaxvoc.train import config as config_lib
    from jaxvoc.train import sharding
    from jaxvoc.train.tasks import check_start

    try:  # Orbax logs routine warnings through absl; keep the terminal to our own lines
        from absl import logging as absl_logging

        absl_logging.set_verbosity(absl_logging.ERROR)
    except ImportError:
        pass
    if args.steps is not None and args.steps < 1:
        raise UserError("--steps must be at least 1")
    cfg = config_lib.load(args.config, args.overrides)
    check_start(args.init, args.resume, cfg.kind)
    if args.run_dir:
        cfg.run_dir = os.path.abspath(args.run_dir)
    from jaxvoc.io.atomic import check_writable_dir

    check_writable_dir(cfg.run_dir)  # a run folder below a file, or unwritable: one line before any compiling
    sharding.initialize_distributed(args.coordinator, args.num_processes, args.process_id)
    from jaxvoc.train.loop import train

    train(cfg, resume=args.resume, init=args.init, max_steps=args.steps)
    return 0
