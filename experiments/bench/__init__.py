"""Benchmarks: jaxvoc against the official PyTorch code on this machine (`python -m experiments.bench NAME`)."""
