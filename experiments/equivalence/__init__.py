"""Equivalence measurements against the official PyTorch code, with their figures for docs/."""
