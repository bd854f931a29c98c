# jaxvoc: every target does its own set-up on a fresh clone.
PY      ?= python3
VENV    := .venv
VPY     := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
CKPT    ?=
PYTEST_ARGS ?=

.PHONY: venv test demo bench clean

venv: $(STAMP)

# The official references are pinned to the versions verified in the reference recipe; they go in with
# --no-deps because their own pins (numpy<2, librosa<0.10, tensorflow) cannot be met next to JAX.
$(STAMP): pyproject.toml Makefile
	test -x $(VPY) || $(PY) -m venv $(VENV)
	$(VPY) -m pip install -q --upgrade pip
	$(VPY) -m pip install -q "torch==2.13.0"
	$(VPY) -m pip install -q -e ".[conversion,dev,hub]"
	$(VPY) -m pip install -q --no-deps bigvgan==2.4.1 waveglow==22.12.28 tacotron2==22.12.28 nemo_toolkit==3.0.0
	# the official BigVGAN discriminators: nnAudio's CQT and torchaudio's Resample (no torchaudio is built for
	# torch 2.13; 2.11's pure-Python transforms import and run against it)
	$(VPY) -m pip install -q --no-deps nnAudio==0.3.4 torchaudio==2.11.0
	# ...but its compiled extension links torch 2.11's CUDA libraries and cannot load: drop it, and torchaudio
	# falls back to the pure-Python transforms the tests use
	$(VPY) -c "import glob, os, sysconfig; [os.remove(p) for p in glob.glob(os.path.join(sysconfig.get_paths()['purelib'], 'torchaudio', 'lib', '*.so'))]"
	$(VPY) -m pip install -q scipy huggingface_hub "hydra-core>1.3,<=1.3.2" "omegaconf<=2.3" \
	    "lightning>2.2.1,<=2.4.0" wrapt einops onnx nv_one_logger_core nv_one_logger_training_telemetry \
	    nv_one_logger_pytorch_lightning_integration text-unidecode lhotse transformers sentencepiece pandas \
	    kaldialign braceexpand webdataset smart-open tensorboard datasets wandb tensorboardX
	touch $(STAMP)

# Two pytest workers, one test file each at a time (--dist loadfile: a file's module fixtures are built once):
# most of a test's time is single-threaded XLA compilation, so two files overlap well on two cores. The files
# are handed out longest first (tests/conftest.py, SLOW_FILES_FIRST; --no-loadscope-reorder keeps that order).
# The 30 slowest tests are listed at the end.
test: venv
	$(VPY) -m pytest -q -n 2 --dist loadfile --no-loadscope-reorder --durations=30 $(PYTEST_ARGS)

demo: venv
	$(VPY) -m experiments.demo $(if $(CKPT),--ckpt $(CKPT),)

bench: venv
	$(VPY) -m experiments.bench bigvgan

clean:
	rm -rf $(VENV) demo_out .pytest_cache
