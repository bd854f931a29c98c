"""Length buckets and batches: inputs of many lengths are padded to a few lengths (a ladder of ratio sqrt(2))
and grouped into fixed-size batches, so that a run compiles a few programs rather than one per length."""

from __future__ import annotations

import math

BUCKET_QUANTUM = 32  # frames


def bucket_length(n: int, quantum: int = BUCKET_QUANTUM) -> int:
    """Smallest length >= n on a ladder of ratio sqrt(2), in multiples of ``quantum`` (<= ~41% padding)."""
    if n <= quantum:
        return quantum
    k = math.ceil(2 * math.log2(n / quantum) - 1e-9)
    return int(math.ceil(quantum * 2 ** (k / 2) / quantum) * quantum)


def plan_batches(lengths: list[int], batch_size: int, bucket: bool,
                 quantum: int = BUCKET_QUANTUM) -> tuple[list[tuple[int, list[int]]], int]:
    """([(padded length, [item indices])], number of distinct padded lengths): items sorted by length, grouped
    by length bucket (or by exact length when ``bucket`` is False), then cut into batches of ``batch_size``."""
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    groups: dict[int, list[int]] = {}
    for i in order:
        groups.setdefault(bucket_length(lengths[i], quantum) if bucket else lengths[i], []).append(i)
    plan = [(L, idx[j:j + batch_size]) for L, idx in groups.items() for j in range(0, len(idx), batch_size)]
    return plan, len(groups)


def unique_stems(paths: list[str]) -> list[str]:
    """The output stems of input paths; a UserError when two would collide."""
    import os

    from jaxvoc.errors import UserError

    stems = [os.path.splitext(os.path.basename(p))[0] for p in paths]
    dup = {s for s in stems if stems.count(s) > 1}
    if dup:
        raise UserError(f"several inputs share the stem {sorted(dup)[0]!r}; their outputs would collide")
    return stems


def fill_batch(items: list, rows: int, length: int, fill: float = 0, axis: int = 0, dtype=None):
    """(batch, lengths): the arrays ``items`` padded with ``fill`` to ``length`` along their ``axis`` and
    stacked into ``rows`` rows (rows past the items are all ``fill``, whole length), and each row's own
    length (int32 [rows]) for the model's ``lengths`` argument."""
    import numpy as np

    first = np.asarray(items[0])
    shape = list(first.shape)
    shape[axis] = length
    batch = np.full((rows, *shape), fill, dtype or first.dtype)
    lengths = np.full((rows,), length, np.int32)
    for r, item in enumerate(items):
        n = np.shape(item)[axis]
        index = (r,) + (slice(None),) * axis + (slice(0, n),)
        batch[index] = item
        lengths[r] = n
    return batch, lengths
