"""pytest's root conftest: its presence puts the repository root on pytest's import path, so that tests can
import the official-reference harnesses of experiments/reference/ from any working directory."""
