"""Shared neural-network layers: convolutions with weight norm, Snake and the anti-aliased activation."""
