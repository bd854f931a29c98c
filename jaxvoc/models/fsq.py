"""Finite scalar quantization (Mentzer et al., 2023, "Finite Scalar Quantization: VQ-VAE Made Simple") as NeMo's
``FiniteScalarQuantizer`` / ``GroupFiniteScalarQuantizer`` compute it: no parameters, so plain functions of
the input (channels-last, ``[B, T, D]``) and host-side constants.

Each dimension ``d`` with ``L_d`` levels is squashed with ``scale_d * tanh(x + shift_d) - offset_d``
(``scale_d = (L_d - 1) / 2 * (1 - eps)``, ``offset_d = 0.5`` for even ``L_d``, ``shift_d = tan(offset_d /
scale_d)``), rounded (straight-through gradient) and divided by ``L_d // 2``; a code vector's token is the
mixed-radix number of its per-dimension levels. A group quantizer splits ``D`` into ``num_groups`` equal
chunks, each its own codebook.

Exactness. The constants are computed on the host in float32 in NeMo's order of operations (``tan`` is
float32 ``tan``, as torch's CPU kernel gives). NeMo turns a code vector into its token with float32
arithmetic, ``int(sum_d (s_d * (r_d / s_d) + s_d) * base_d)``, which for some level counts (26, 27, 38, 39,
...) is not exact: ``13 * (-7 / 13) + 13`` is 5.9999995 in float32 and the truncation then gives a different
token than the digits say. XLA contracts multiply-adds into FMAs, which would round differently, so the
token is computed here from the integer digits through a host-built table holding NeMo's float32 result for
every code vector (the identity for the usual level counts, where no table is used).
"""

from __future__ import annotations

import dataclasses


import jax
import jax.numpy as jnp
import numpy as np

Array = jax.Array

MAX_TABLE = 1 << 22  # codebooks up to this size get the exact token table when they need one


@dataclasses.dataclass(frozen=True)
class FSQ:
    """One finite scalar quantizer with ``num_levels[d]`` levels per dimension (NeMo's FiniteScalarQuantizer)."""

    num_levels: tuple[int, ...]
    eps: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "num_levels", tuple(int(n) for n in self.num_levels))
        if not self.num_levels or min(self.num_levels) < 2:
            raise ValueError(f"FSQ needs at least one dimension with >= 2 levels, got {self.num_levels}")

    # --- constants (host, float32 as NeMo computes them) -------------------------------------------------
    @property
    def dim(self) -> int:
        return len(self.num_levels)

    @property
    def codebook_size(self) -> int:
        return int(np.prod(self.num_levels))

    @property
    def base(self) -> np.ndarray:
        """Mixed-radix place value of each dimension (int32): cumprod([1] + num_levels[:-1])."""
        return np.cumprod([1] + list(self.num_levels[:-1])).astype(np.int32)

    @property
    def half(self) -> np.ndarray:
        """``num_levels // 2`` (int32): the code scale and the offset of the non-negative digits."""
        return (np.asarray(self.num_levels, np.int32) // 2).astype(np.int32)

    def compress_constants(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(output_scale, output_offset, input_shift), float32, NeMo's order of operations."""
        levels = np.asarray(self.num_levels, np.int32)
        scale = ((levels - 1).astype(np.float32) / np.float32(2)) * np.float32(1 - self.eps)
        offset = np.where(levels % 2 == 0, np.float32(0.5), np.float32(0.0)).astype(np.float32)
        shift = np.tan((offset / scale).astype(np.float32)).astype(np.float32)
        return scale.astype(np.float32), offset, shift

    def token_table(self) -> np.ndarray | None:
        """NeMo's float32 token for every digit vector (indexed by the exact mixed-radix number), or None when
        that is the identity."""
        half = self.half.astype(np.float32)
        base = self.base.astype(np.float32)
        # per dimension, the float NeMo multiplies by the place value: s * (r / s) + s for r in [-s, s]
        exact = True
        for d, n in enumerate(self.num_levels):
            r = np.arange(n, dtype=np.float32) - half[d]
            v = (half[d] * (r / half[d])).astype(np.float32) + half[d]
            if np.any(v != np.arange(n, dtype=np.float32)):
                exact = False
        if exact:
            return None
        if self.codebook_size > MAX_TABLE:
            raise ValueError(f"FSQ levels {self.num_levels}: codebook too large for an exact token table")
        digits = np.stack(np.meshgrid(*[np.arange(n) for n in self.num_levels], indexing="ij"), -1)
        digits = digits.reshape(-1, self.dim)  # row order is not the mixed-radix order yet
        acc = np.zeros(len(digits), np.float32)
        for d in range(self.dim):  # left to right, float32, as torch's sum over a small dim
            r = (digits[:, d] - self.half[d]).astype(np.float32)
            v = (half[d] * (r / half[d])).astype(np.float32) + half[d]
            acc = (acc + (v * base[d]).astype(np.float32)).astype(np.float32)
        mixed = (digits * self.base).sum(-1)
        table = np.zeros(self.codebook_size, np.int32)
        table[mixed] = acc.astype(np.int32)
        return table

    # --- computations ------------------------------------------------------------------------------------
    def compress(self, x: Array) -> Array:
        scale, offset, shift = self.compress_constants()
        return jnp.asarray(scale) * jnp.tanh(x + jnp.asarray(shift)) - jnp.asarray(offset)

    def round_codes(self, x: Array) -> Array:
        """Compressed inputs -> integer-valued rounded levels (straight-through gradient)."""
        c = self.compress(x)
        return c + jax.lax.stop_gradient(jnp.round(c) - c)

    def code_values(self) -> np.ndarray:
        """[dim, max_levels] float32: the code ``(digit - L//2) / (L//2)`` of every digit, divided on the host
        (XLA rewrites a division by a constant into a multiplication by its reciprocal, which is not exact)."""
        out = np.zeros((self.dim, max(self.num_levels)), np.float32)
        for d, n in enumerate(self.num_levels):
            out[d, :n] = (np.arange(n, dtype=np.int32) - self.half[d]).astype(np.float32) / np.float32(self.half[d])
        return out

    def _codes(self, digits: Array) -> Array:
        """digits int [..., dim] -> float32 codes [..., dim] (exact, via the host table)."""
        table = jnp.asarray(self.code_values())
        return table[jnp.arange(self.dim), digits]

    def quantize(self, x: Array) -> tuple[Array, Array]:
        """x [..., dim] -> (dequantized codes in [-1, 1] (straight-through), tokens int32 [...])."""
        r = self.round_codes(x)
        digits = jax.lax.stop_gradient(r).astype(jnp.int32) + jnp.asarray(self.half)
        # value: NeMo's r / (L // 2) exactly; gradient: 1 / (L // 2) times r's straight-through gradient
        codes = self._codes(digits).astype(x.dtype) + (r - jax.lax.stop_gradient(r)) / jnp.asarray(self.half, x.dtype)
        mixed = jnp.sum(digits * jnp.asarray(self.base), axis=-1)
        table = self.token_table()
        tokens = mixed if table is None else jnp.asarray(table)[mixed]
        return codes, tokens

    def dequantize(self, tokens: Array, dtype=jnp.float32) -> Array:
        """tokens int [...] -> codes [..., dim] (NeMo: (digit - L//2) / (L//2), digits by // and %)."""
        t = jnp.asarray(tokens).astype(jnp.int32)[..., None]
        digits = (t // jnp.asarray(self.base)) % jnp.asarray(self.num_levels, jnp.int32)
        return self._codes(digits).astype(dtype)


@dataclasses.dataclass(frozen=True)
class GroupFSQ:
    """``num_groups`` FSQs over equal chunks of the feature axis (NeMo's GroupFiniteScalarQuantizer)."""

    num_groups: int
    num_levels_per_group: tuple[int, ...]
    eps: float = 1e-3

    def __post_init__(self):
        object.__setattr__(self, "num_levels_per_group", tuple(int(n) for n in self.num_levels_per_group))

    @property
    def fsq(self) -> FSQ:
        return FSQ(self.num_levels_per_group, self.eps)

    @property
    def num_codebooks(self) -> int:
        return self.num_groups

    @property
    def codebook_size(self) -> int:
        return self.fsq.codebook_size

    @property
    def codebook_dim(self) -> int:
        return self.num_groups * len(self.num_levels_per_group)

    def _split(self, x: Array) -> Array:
        *lead, D = x.shape
        if D != self.codebook_dim:
            raise ValueError(f"quantizer input has {D} features, expected {self.codebook_dim}")
        return x.reshape(*lead, self.num_groups, D // self.num_groups)

    def quantize(self, x: Array, lengths: Array | None = None) -> tuple[Array, Array]:
        """x [B, T, D] -> (dequantized [B, T, D] (straight-through), tokens int32 [B, num_groups, T]); frames at
        or past ``lengths`` are zero in both (NeMo's masking)."""
        codes, tokens = self.fsq.quantize(self._split(x))  # [B, T, G, d], [B, T, G]
        codes = codes.reshape(x.shape)
        tokens = jnp.swapaxes(tokens, 1, 2)
        if lengths is not None:
            valid = jnp.arange(x.shape[1])[None, :] < jnp.asarray(lengths)[:, None]
            codes = codes * valid[..., None].astype(codes.dtype)
            tokens = tokens * valid[:, None, :].astype(tokens.dtype)
        return codes, tokens

    def encode(self, x: Array, lengths: Array | None = None) -> Array:
        return self.quantize(x, lengths)[1]

    def decode(self, tokens: Array, lengths: Array | None = None, dtype=jnp.float32) -> Array:
        """tokens [B, num_groups, T] -> dequantized [B, T, D], zero at and past ``lengths``."""
        tokens = jnp.asarray(tokens)
        B, G, T = tokens.shape
        if G != self.num_groups:
            raise ValueError(f"got {G} codebooks, the quantizer has {self.num_groups}")
        codes = self.fsq.dequantize(jnp.swapaxes(tokens, 1, 2), dtype)  # [B, T, G, d]
        codes = codes.reshape(B, T, self.codebook_dim)
        if lengths is not None:
            valid = jnp.arange(T)[None, :] < jnp.asarray(lengths)[:, None]
            codes = codes * valid[..., None].astype(codes.dtype)
        return codes
