"""FLOP reductions for the two models that already run near the machine's float32 GEMM ceiling (issue 13): does
doing less arithmetic make them faster, and does it keep the float64 rule? Each candidate is measured against
the form jaxvoc runs now, in one process, alternated in rounds after jit warm-up (ratio = current time /
candidate time per round: > 1 means the candidate is faster; median and range over the rounds), and its
output is compared with a float64 reference next to the official float32 output's distance from the same
reference.

    python -m experiments.profile.flop_reductions [--which waveglow-cond|winograd|all] [--rounds N]
        [--frames 32 128] [--config NAME|codec] [--stages 0 1 2 ...] [--forms split|blocked] [--json FILE]
    python -m experiments.profile.flop_reductions --table docs/results/flop_reductions.json

waveglow-cond: WaveGlow's mel up-sampler (ConvTranspose1d 80 -> 80, kernel 1024, stride 256, cropped to
``frames * 256`` samples) and the 12 flows' ``cond_layer`` (1x1 conv 640 -> 4096 on the squeezed up-sampled
mel, 8 samples per group) are both linear. Group g = 32 f + r (r the phase within frame f) holds samples
256 f + 8 r + j (j < 8), and sample s = 256 f' + k reads frame f' through tap k < 1024, so group g reads
frames f, f-1, f-2, f-3 only: per phase r one [4 * 80 = 320 -> 4096] matrix per flow, half the cond FLOPs,
no up-sampler, but 32 phases x 320 x 4096 x 12 flows = 503 M weights (2.0 GB float32), built once in float64
and rounded to float32. Forms timed (the cond tensors of all 12 flows from the mel; random published-size
weights, ``conversion.waveglow.randomize_``):
  * ``current``: jaxvoc's up-sampler (``conv_transpose1d``, sub-pixel), crop, ``squeeze_mel``, 12 x ``conv1d``;
  * ``one-dot``: the same, the 12 cond layers as one [640 -> 49152] product (same FLOPs, one larger GEMM);
  * ``composed``: one [320 -> 32 * 49152] product on the mel frames (each frame with its 3 predecessors).
The reference is the official modules (``waveglow.glow``: ``upsample``, crop, unfold, ``WN[k].cond_layer``)
in float64; the official float32 run is measured against it too.

winograd: BigVGAN v2 24 kHz's AMP-block convolutions (kernels 3, 7, 11; dilations 1, 3, 5; 768 ... 24
channels at the lengths a ``--frames`` mel gives each stage; ``--config codec``: the LFR codec's residual
convolutions at ``--frames`` codec frames instead, ``codec_convs``) in Winograd minimal-filtering form F(m, r):
input transform -> one batched matrix product over the m + r - 1 transform points -> output transform,
m outputs per tile for m + r - 1 products instead of m * r. Long kernels are cut into chunks of r taps
(F(m, r)xc, zero taps appended): when m divides r, chunk c reads the tile c r / m blocks on (one input
transform for all), else each chunk has its own input transform, of the input c r d samples on; the chunks'
products are summed inside one matrix product. Dilation d: the d interleaved
phases are tiled together (tile blocks of m * d samples). Toom-Cook matrices from exact rational
arithmetic on the points 0, 1, -1, 2, -2, 1/2, -1/2, ..., infinity, rows scaled so that the input and output
transforms have small integer coefficients (the fractions go into the kernel transform, computed in float64
once, as a model would at load time). The products: one dot per transform point, or (``split s``) the
contraction cut into s pieces added pairwise, or (``blocked b``) in jaxvoc.nn.blocked's blocks of b channels:
a shorter rounding chain. ``--forms split`` (default) or ``blocked`` picks the candidate set (FORM_SETS). Checked first against
``jax.lax.conv_general_dilated``. Per layer:
time against ``jaxvoc.nn.conv.conv1d`` (XLA), and SNR against ``torch.nn.functional.conv1d`` in float64 next
to the float32 official (torch) conv's and jaxvoc's current conv's SNR against it. The float64 rule of the
tests (tests/test_wavlm.py ``assert_equivalent``): SNR vs float64 >= min(torch float32's - 3 dB, 130 dB).
"Full size" totals weight each layer shape by how often the generator runs it (AMPBlock1: the dilation-1
shape four times, as convs1 and as the three convs2).

Writes the load average before each measurement into the output; --json appends this run's report to the
file's ``runs``. --table prints each Winograd run of such a file as the markdown table of docs/bigvgan.md.
"""

from __future__ import annotations

import argparse
import datetime
import itertools
import os
import statistics
import sys
import time
from fractions import Fraction
from typing import Any, Callable, Sequence

import numpy as np

F64_MARGIN = 3.0  # the float64 rule of the equivalence tests (tests/test_wavlm.py)
F64_ENOUGH = 130.0


def load() -> float:
    return round(os.getloadavg()[0], 2)


def alternate(fns: dict[str, Callable[[], Any]], rounds: int, base: str) -> dict[str, dict]:
    """Each ``fns[name]()`` (which blocks on its result) once per round, the order rotated each round, after
    one warm-up call each; per name: median time and ``base`` time / this time per round (median, range)."""
    names = list(fns)
    for n in names:
        fns[n]()
    times: dict[str, list[float]] = {n: [] for n in names}
    for r in range(rounds):
        for n in names[r % len(names):] + names[:r % len(names)]:
            t = time.perf_counter()
            fns[n]()
            times[n].append(time.perf_counter() - t)
    out = {}
    for n in names:
        ratios = [b / t for b, t in zip(times[base], times[n])]
        out[n] = {"median_s": statistics.median(times[n]), "ratio_median": statistics.median(ratios),
                  "ratio_range": [min(ratios), max(ratios)]}
    return out


def passes_f64_rule(snr64: float, official64: float) -> bool:
    return snr64 >= min(official64 - F64_MARGIN, F64_ENOUGH)


# ----------------------------------------------------------------------------------------------------------
# Winograd minimal filtering, 1-D


def _points(n: int) -> list[Fraction]:
    """n - 1 finite interpolation points (0, 1, -1, 2, -2, 1/2, -1/2, 3, -3, 1/3, ...); infinity is the n-th."""
    pts = [Fraction(0)]
    for a in itertools.count(1):
        for v in (Fraction(a), Fraction(-a), Fraction(1, a), Fraction(-1, a)):
            if len(pts) < n - 1 and v not in pts:
                pts.append(v)
        if len(pts) >= n - 1:
            return pts


def _evaluation(pts: list[Fraction], k: int) -> list[list[Fraction]]:
    """Rows: a polynomial of k coefficients evaluated at each point, then its leading coefficient (infinity)."""
    return [[p ** i for i in range(k)] for p in pts] + [[Fraction(int(i == k - 1)) for i in range(k)]]


def _inverse(a: list[list[Fraction]]) -> list[list[Fraction]]:
    n = len(a)
    m = [row[:] + [Fraction(int(i == j)) for j in range(n)] for i, row in enumerate(a)]
    for c in range(n):
        p = next(r for r in range(c, n) if m[r][c] != 0)
        m[c], m[p] = m[p], m[c]
        m[c] = [v / m[c][c] for v in m[c]]
        for r in range(n):
            if r != c and m[r][c] != 0:
                m[r] = [a - m[r][c] * b for a, b in zip(m[r], m[c])]
    return [row[n:] for row in m]


def _integer_rows(rows: list[list[Fraction]]) -> tuple[list[list[int]], list[Fraction]]:
    """Each row as (scale) x (coprime integers): returns the integer rows and the scales."""
    import math

    ints, scales = [], []
    for row in rows:
        den = math.lcm(*[v.denominator for v in row])
        num = [int(v * den) for v in row]
        g = math.gcd(*num) or 1
        ints.append([v // g for v in num])
        scales.append(Fraction(g, den))
    return ints, scales


def toom_cook(m: int, r: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(AT [m, n], G [n, r], BT [n, n]) with n = m + r - 1 such that the correlation y_i = sum_k d_{i+k} g_k
    (i < m, d of length n) is ``AT @ ((G @ g) * (BT @ d))``; AT and BT hold small integers (float64), the
    row and column scales are folded into G.

    From the linear convolution s = a * g (a of m, g of r coefficients) by evaluation at n points and
    interpolation, s = C^-1 [(E_m a) * (E_r g)]; the correlation is its transpose: y = E_m^T diag(E_r g)
    C^-T d (E_k: evaluation of k coefficients, C = E_n)."""
    n = m + r - 1
    pts = _points(n)
    em, er, c = _evaluation(pts, m), _evaluation(pts, r), _evaluation(pts, n)
    c_inv = _inverse(c)
    bt = [[c_inv[j][p] for j in range(n)] for p in range(n)]  # C^-T
    at = [[em[p][i] for p in range(n)] for i in range(m)]  # E_m^T
    bt_int, b_scale = _integer_rows(bt)
    at_cols, a_scale = _integer_rows([[at[i][p] for i in range(m)] for p in range(n)])
    g = [[er[p][k] * b_scale[p] * a_scale[p] for k in range(r)] for p in range(n)]
    f = lambda x: np.array(x, np.float64)
    return f([[at_cols[p][i] for p in range(n)] for i in range(m)]), f(g), f(bt_int)


class Winograd:
    """A stride-1 "same" conv1d (kernel K, dilation d, zero padding (K-1) d / 2 each side) in the form
    F(m, r): kernel taps cut into ``chunks`` = ceil(K / r) chunks of r (zero taps appended), each an F(m, r)
    on the input shifted by c r d samples; when m divides r that is the tile c r / m blocks on (one input
    transform for all chunks), else each chunk has its own input transform. The chunks' products are one
    contraction of chunks * Cin terms per transform point (``splits``: cut into that many pieces, one dot
    each, added pairwise; ``block``: jaxvoc.nn.blocked's blocks of that many terms)."""

    def __init__(self, m: int, r: int, kernel: int, dilation: int, block: int | None = None,
                 splits: int | None = None):
        self.m, self.r, self.K, self.d, self.block, self.splits = m, r, kernel, dilation, block, splits
        self.chunks = -(-kernel // r)
        self.n = m + r - 1
        self.at, self.g, self.bt = toom_cook(m, r)

    @property
    def name(self) -> str:
        return (f"F({self.m},{self.r})" + (f"x{self.chunks}" if self.chunks > 1 else "")
                + (f" blocked {self.block}" if self.block else "") + (f" split {self.splits}" if self.splits else ""))

    def multiplies_per_output(self) -> float:
        return self.chunks * self.n / self.m

    def transform_kernel(self, w: np.ndarray) -> np.ndarray:
        """w [K, Cin, Cout] -> U [n, chunks * Cin, Cout] (float64 arithmetic, float32 result)."""
        K, cin, cout = w.shape
        wp = np.zeros((self.chunks * self.r, cin, cout), np.float64)
        wp[:K] = w
        u = np.einsum("pk,ckio->pcio", self.g, wp.reshape(self.chunks, self.r, cin, cout))
        return u.reshape(self.n, self.chunks * cin, cout).astype(np.float32)

    def __call__(self, x, u):
        """x [B, T, Cin], u from :meth:`transform_kernel` -> [B, T, Cout]."""
        import jax.numpy as jnp

        m, n, d = self.m, self.n, self.d
        B, T, cin = x.shape
        shared = self.chunks > 1 and self.r % m == 0  # chunk c reads the tiles c * r / m blocks on
        step = self.r // m if shared else 0  # blocks between consecutive chunks
        nb = -(-T // (m * d))  # output blocks of m * d samples (d interleaved tiles of m outputs)
        nbt = nb + (self.chunks - 1) * step  # blocks whose input transform is needed
        shift = 0 if shared else self.r * d  # else chunk c: its own input transform, c * r * d samples on
        need = (n - 1) * d + nbt * m * d + (self.chunks - 1) * shift
        left = (self.K - 1) * d // 2
        assert need - left - T >= 0, (need, left, T)
        xp = jnp.pad(x, ((0, 0), (left, need - left - T), (0, 0)))

        def transformed(o):  # tile element j of every (block, phase): xp[o + block * m * d + j * d + phase]
            el = [xp[:, o + j * d: o + j * d + nbt * m * d].reshape(B, nbt, m * d, cin)[:, :, :d] for j in range(n)]
            return jnp.stack([_combine(self.bt[p], el) for p in range(n)])  # [n, B, nbt, d, Cin]

        if shared or self.chunks == 1:
            v = transformed(0)
            if self.chunks > 1:
                v = jnp.concatenate([v[:, :, c * step: c * step + nb] for c in range(self.chunks)], axis=-1)
        else:
            v = jnp.concatenate([transformed(c * shift) for c in range(self.chunks)], axis=-1)
        v = v.reshape(n, B * nb * d, self.chunks * cin)
        if self.splits:  # the contraction cut into `splits` contiguous pieces, one dot each, added pairwise
            from jaxvoc.nn.blocked import pairwise_sum

            s, kc = self.splits, self.chunks * cin
            v = v.reshape(n, -1, s, kc // s).transpose(0, 2, 1, 3)  # [n, s, rows, piece]
            prod = jnp.einsum("pskc,psco->psko", v, u.astype(x.dtype).reshape(n, s, kc // s, -1))
            prod = pairwise_sum(prod, 1)
        elif self.block:  # the contraction in blocks added pairwise (jaxvoc.nn.blocked): a shorter rounding chain
            from jaxvoc.nn.blocked import _blocked

            prod = _blocked(v, u.astype(x.dtype), self.block)
        else:
            prod = jnp.einsum("pkc,pco->pko", v, u.astype(x.dtype))  # one batched matrix product
        prod = [prod[p].reshape(B, nb, d, -1) for p in range(n)]
        y = jnp.stack([_combine(self.at[i], prod) for i in range(m)], axis=2)  # [B, nb, m, d, Cout]
        return y.reshape(B, nb * m * d, -1)[:, :T]


def _combine(coefs: np.ndarray, terms: list):
    """sum_j coefs[j] * terms[j], small integer coefficients, zeros skipped, +-1 as additions."""
    out = None
    for c, t in zip(coefs, terms):
        if c == 0:
            continue
        t = t if c == 1 else -t if c == -1 else float(c) * t
        out = t if out is None else out + t
    return out


# Candidates per kernel size: (m, r, splits, block) of the tiles; r < K means chunks of r taps; splits: the
# product's contraction cut into that many pieces, one dot each, added pairwise; block: the contraction in
# jaxvoc.nn.blocked's blocks of that many channels (None, None: one dot per transform point).
FORM_SETS = {
    "split": {3: [(2, 3, None, None), (2, 3, 2, None), (2, 3, 4, None), (4, 3, 2, None)],
              7: [(2, 3, None, None), (2, 3, 3, None), (3, 3, 3, None), (4, 4, 2, None)],
              11: [(2, 3, None, None), (2, 3, 4, None), (3, 3, 4, None), (4, 4, 3, None)]},
    "blocked": {3: [(2, 3, None, None), (2, 3, None, 32), (2, 3, None, 64), (4, 3, None, 32)],
                7: [(4, 4, None, None), (2, 4, None, 32), (3, 3, None, 32), (4, 4, None, 32)],
                11: [(4, 4, None, None), (2, 4, None, 32), (3, 3, None, 32), (4, 4, None, 32)]},
}


def check_winograd(forms_set: dict, seed: int = 0) -> list[dict]:
    """Every candidate form, dilations 1, 3, 5, odd lengths, against jax.lax.conv_general_dilated (float32):
    the SNR must be >= 100 dB (float32 rounding only; a wrong index gives ~0 dB)."""
    import jax
    import jax.numpy as jnp

    from conversion.report import snr_db

    rng = np.random.default_rng(seed)
    rows = []
    for K, forms in forms_set.items():
        for (m, r, splits, block), d, T in itertools.product(forms, (1, 3, 5), (37, 64)):
            w = rng.standard_normal((K, 48, 6))
            x = rng.standard_normal((2, T, 48)).astype(np.float32)
            wg = Winograd(m, r, K, d, block, splits)
            got = np.asarray(jax.jit(wg.__call__)(jnp.asarray(x), jnp.asarray(wg.transform_kernel(w))))
            ref = np.asarray(jax.lax.conv_general_dilated(
                jnp.asarray(x), jnp.asarray(w, jnp.float32), (1,), [((K - 1) * d // 2,) * 2], rhs_dilation=(d,),
                dimension_numbers=("NWC", "WIO", "NWC"), precision=jax.lax.Precision.HIGHEST))
            s = snr_db(got, ref)
            rows.append({"form": wg.name, "kernel": K, "dilation": d, "length": T, "snr_vs_lax_db": s})
            if not s >= 100:
                raise AssertionError(f"Winograd {wg.name} K={K} d={d} T={T}: {s:.1f} dB against lax.conv")
    return rows


def run_winograd(args) -> dict:
    import jax
    import jax.numpy as jnp
    import torch
    import torch.nn.functional as F

    from conversion.report import snr_db
    from experiments.bench.ceiling import conv_flops, generator_convs
    from jaxvoc.nn.conv import conv1d, get_padding

    t0 = time.time()
    check = check_winograd(FORM_SETS[args.forms])
    print(f"winograd: {len(check)} forms x dilations x lengths match lax.conv_general_dilated "
          f"(min {min(c['snr_vs_lax_db'] for c in check):.1f} dB), {time.time() - t0:.0f} s", flush=True)
    if args.config == "codec":
        convs = codec_convs(args.frames)
    else:
        convs = [c for c in generator_convs(args.config, args.frames) if c["where"].startswith("resblocks")]
    layers, seen = [], set()
    for c in convs:
        stage = int(c["where"].split("stage ")[1].rstrip(")"))
        key = (c["c_in"], c["length"], c["kernel"], c["dilation"])
        if stage in args.stages and key not in seen:
            seen.add(key)
            layers.append(dict(c, stage=stage, count=c.get("count", 4 if c["dilation"] == 1 else 1)))
    rng = np.random.default_rng(1)
    results = []
    for c in layers:
        K, d, C, T = c["kernel"], c["dilation"], c["c_in"], c["length"]
        w = rng.standard_normal((K, C, C)) * 0.01  # the official init's scale: N(0, 0.01)
        x = rng.standard_normal((1, T, C))
        with torch.inference_mode():  # the official layer's arithmetic, channels-first
            xt, wt = torch.from_numpy(x.transpose(0, 2, 1)), torch.from_numpy(w.transpose(2, 1, 0))
            pad = get_padding(K, d)
            ref64 = F.conv1d(xt, wt, dilation=d, padding=pad).numpy().transpose(0, 2, 1)
            ref32 = F.conv1d(xt.float(), wt.float(), dilation=d, padding=pad).numpy().transpose(0, 2, 1)
        xj, wj = jnp.asarray(x, jnp.float32), jnp.asarray(w, jnp.float32)
        cur = jax.jit(lambda x, w: conv1d(x, w, dilation=d, padding=get_padding(K, d)))
        fns = {"xla": lambda: jax.block_until_ready(cur(xj, wj))}
        row = dict(c, flops=conv_flops(c), snr64_official_f32=snr_db(ref32, ref64),
                   snr64={"xla": snr_db(np.asarray(fns["xla"]()), ref64)}, forms={})
        for m, r, splits, block in FORM_SETS[args.forms][K]:
            wg = Winograd(m, r, K, d, block, splits)
            uj = jnp.asarray(wg.transform_kernel(w))
            f = jax.jit(wg.__call__)
            fns[wg.name] = (lambda f, uj: lambda: jax.block_until_ready(f(xj, uj)))(f, uj)
            row["snr64"][wg.name] = snr_db(np.asarray(fns[wg.name]()), ref64)
            row["forms"][wg.name] = {"multiplies_per_output": wg.multiplies_per_output(),
                                     "flop_cut": K / wg.multiplies_per_output()}
        row["load_before"] = load()
        row["timing"] = alternate(fns, args.rounds, "xla")
        results.append(row)
        r64 = row["snr64_official_f32"]
        print(f"stage {c['stage']} C={C} T={T} K={K} d={d}: load {row['load_before']}, xla "
              f"{1e3 * row['timing']['xla']['median_s']:.1f} ms; official f32 {r64:.1f} dB, xla "
              f"{row['snr64']['xla']:.1f} dB vs f64 | " + " | ".join(
                  f"{n} cut {v['flop_cut']:.2f}: x{row['timing'][n]['ratio_median']:.2f} "
                  f"({row['timing'][n]['ratio_range'][0]:.2f}-{row['timing'][n]['ratio_range'][1]:.2f}), "
                  f"{row['snr64'][n]:.1f} dB{'' if passes_f64_rule(row['snr64'][n], r64) else ' FAILS'}"
                  for n, v in row["forms"].items()), flush=True)
    return {"check": check, "layers": results, "totals": winograd_totals(results)}


def codec_convs(frames: int) -> list[dict]:
    """The residual convolutions of the Low Frame-rate codec (NeMo's published LFR config, as
    ``conversion.codec`` builds it) on ``frames`` codec frames, in ``generator_convs``' form: the encoder's
    HiFi-GAN residual layers as stages 0-4 (48 ... 768 channels, before each down-sampling), the decoder's as
    stages 5-9 (512 ... 32 channels, after each up-sampling). NeMo's ResidualBlock runs its input conv at
    dilation d and its skip conv at dilation 1, so per kernel the dilation-1 shape runs 1 + len(dilations)
    times (``count``; the LFR config has dilations [1]: twice). The model pads by reflection, these layers by
    zeros: the same arithmetic per output sample."""
    from conversion import codec as cc
    from jaxvoc.models.codec import CodecConfig

    c = CodecConfig.from_dict(cc.variant_config())
    e, dc = c.encoder, c.decoder

    def count(part, d: int) -> int:
        return 1 + len(part.resblock_dilation_sizes) if d == 1 else 1
    convs, length, ch = [], frames * int(np.prod(e.down_sample_rates)), e.base_channels
    for i, r in enumerate(e.down_sample_rates):
        convs += [dict(c_in=ch, c_out=ch, kernel=k, dilation=d, length=length, count=count(e, d),
                       where=f"encoder res_layers_{i} (stage {i})")
                  for k in e.resblock_kernel_sizes for d in e.resblock_dilation_sizes]
        length, ch = length // r, ch * 2
    length, ch = frames, dc.base_channels
    for i, r in enumerate(dc.up_sample_rates):
        length, ch = length * r, ch // 2
        convs += [dict(c_in=ch, c_out=ch, kernel=k, dilation=d, length=length, count=count(dc, d),
                       where=f"decoder res_layers_{i} (stage {len(e.down_sample_rates) + i})")
                  for k in dc.resblock_kernel_sizes for d in dc.resblock_dilation_sizes]
    return convs


def winograd_totals(rows: list[dict]) -> dict:
    """Full-size estimate: the AMP convolutions' time summed over the generator (each layer shape times its
    count), XLA against the best form per layer (fastest form that passes the float64 rule; XLA where
    none is faster), and against each form family per kernel size."""
    t_xla = sum(r["count"] * r["timing"]["xla"]["median_s"] for r in rows)
    best = 0.0
    for r in rows:
        ok = [n for n in r["forms"] if passes_f64_rule(r["snr64"][n], r["snr64_official_f32"])]
        best += r["count"] * min([r["timing"]["xla"]["median_s"]] + [r["timing"][n]["median_s"] for n in ok])
    any_form = sum(r["count"] * min(t["median_s"] for t in r["timing"].values()) for r in rows)
    return {"xla_s": t_xla, "best_passing_s": best, "xla_over_best_passing": t_xla / best,
            "best_any_s": any_form, "xla_over_best_any": t_xla / any_form}


def winograd_table(rows: list[dict]) -> list[str]:
    """Markdown rows: per form, its multiplication cut and per stage (the three dilations together, each layer
    shape times its count) XLA time / form time (✗: a layer of the stage fails the float64 rule), the form's
    SNR vs float64 (lowest, highest; the official float32's at that layer in brackets) and how many layers
    pass the rule."""
    stages = sorted({r["stage"] for r in rows})
    out = ["| kernel | form | mult. cut | " + " | ".join(f"stage {s} ({rows_at(rows, s)})" for s in stages)
           + " | SNR vs f64 (official f32) | passes |", "|---" * (5 + len(stages)) + "|"]
    forms = {(r["kernel"], n): v["flop_cut"] for r in rows for n, v in r["forms"].items()}
    for (K, n), cut in forms.items():
        cells, snrs, ok, total = [], [], 0, 0
        for s in stages:
            at = [r for r in rows if r["stage"] == s and r["kernel"] == K]
            t_x = sum(r["count"] * r["timing"]["xla"]["median_s"] for r in at)
            t_f = sum(r["count"] * r["timing"][n]["median_s"] for r in at)
            fail = not all(passes_f64_rule(r["snr64"][n], r["snr64_official_f32"]) for r in at)
            cells.append(f"{t_x / t_f:.2f}" + (" ✗" if fail else ""))
            for r in at:
                snrs.append((r["snr64"][n], r["snr64_official_f32"]))
                ok += passes_f64_rule(r["snr64"][n], r["snr64_official_f32"])
                total += 1
        lo, hi = min(snrs), max(snrs)
        out.append(f"| {K} | {n} | {cut:.2f} | " + " | ".join(cells)
                   + f" | {lo[0]:.1f} ({lo[1]:.1f}) – {hi[0]:.1f} ({hi[1]:.1f}) dB | {ok}/{total} |")
    return out


def rows_at(rows: list[dict], stage: int) -> str:
    r = next(r for r in rows if r["stage"] == stage)
    return f"{r['c_in']} ch × {r['length']}"


# ----------------------------------------------------------------------------------------------------------
# WaveGlow: the up-sampler composed with the cond layers


def waveglow_weights():
    """(official float32 model, up-sampler kernel [1024, 80, 80] + bias, cond kernels [12, 640, 4096] +
    biases [12, 4096]) for the published config, random weights as the benchmarks make them."""
    import torch

    from conversion import waveglow as cw
    from jaxvoc.models.waveglow import WaveGlowConfig

    cfg = WaveGlowConfig()
    model = cw.official_model(cfg, seed=0)
    cw.randomize_(model, 0)
    cw.detach_weight_norm_(model)
    with torch.no_grad():
        model(*_dummy_forward(cfg))  # weight norm's hooks compute every .weight once
    cw.detach_weight_norm_(model)
    ku = model.upsample.weight.detach().numpy().transpose(2, 0, 1).astype(np.float64)
    bu = model.upsample.bias.detach().numpy().astype(np.float64)
    wc = np.stack([wn.cond_layer.weight.detach().numpy()[..., 0].T for wn in model.WN]).astype(np.float64)
    bc = np.stack([wn.cond_layer.bias.detach().numpy() for wn in model.WN]).astype(np.float64)
    return cfg, model, (ku, bu, wc, bc)


def _dummy_forward(cfg):
    import torch

    return ((torch.zeros(1, cfg.n_mel_channels, 4), torch.zeros(1, 4 * 256)),)


def official_cond(model, mel: np.ndarray, dtype) -> np.ndarray:
    """The official modules' cond tensors of every flow, [B, G, 12 * 4096] (channels-last), in ``dtype``."""
    import copy

    import torch

    m = copy.deepcopy(model).to(getattr(torch, dtype))
    with torch.inference_mode():
        s = m.upsample(torch.from_numpy(mel.transpose(0, 2, 1)).to(getattr(torch, dtype)))
        s = s[:, :, :-(m.upsample.kernel_size[0] - m.upsample.stride[0])]
        s = s.unfold(2, m.n_group, m.n_group).permute(0, 2, 1, 3)
        s = s.contiguous().view(s.size(0), s.size(1), -1).permute(0, 2, 1)
        out = torch.cat([wn.cond_layer(s) for wn in m.WN], dim=1)
    return out.numpy().transpose(0, 2, 1)


def compose(ku, bu, wc, bc, n_group: int = 8, stride: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """(P [4 * 80, 32 * 12 * 4096] float32, bias [12 * 4096] float32), computed in float64: cond of group
    32 f + r, flow k = [mel[f], mel[f-1], mel[f-2], mel[f-3]] @ P[:, (r, k, :)] + bias[(k, :)]."""
    K, cin, M = ku.shape
    taps, phases = K // stride, stride // n_group
    ku = ku.reshape(taps, phases, n_group, cin, M)  # tap 256 q + 8 r + j
    flows, _, cout = wc.shape
    p = np.empty((taps * cin, phases, flows, cout), np.float32)
    a = ku.transpose(0, 1, 3, 4, 2).reshape(taps * phases * cin, M * n_group)  # rows (q, r, c), columns (m, j)
    for k in range(flows):  # wc[k] rows: channel m * 8 + j
        prod = (a @ wc[k]).reshape(taps, phases, cin, cout)
        p[:, :, k] = prod.transpose(0, 2, 1, 3).reshape(taps * cin, phases, cout)
    bias = bc + np.einsum("m,kmjo->ko", bu, wc.reshape(flows, M, n_group, cout))
    return p.reshape(taps * cin, -1), bias.reshape(-1).astype(np.float32)


def run_waveglow(args) -> dict:
    import jax
    import jax.numpy as jnp

    from conversion.report import snr_db
    from experiments.bench.ceiling import official_flops
    from jaxvoc.models.waveglow import UPSAMPLE_KERNEL, UPSAMPLE_STRIDE, squeeze_mel
    from jaxvoc.nn.conv import conv1d, conv_transpose1d

    import torch

    from conversion import waveglow as cw

    cfg, model, (ku, bu, wc, bc) = waveglow_weights()
    flows, cin_c, cout = wc.shape
    t0 = time.time()
    p, pbias = compose(ku, bu, wc, bc, cfg.n_group, UPSAMPLE_STRIDE)
    t_compose = time.time() - t0
    taps = UPSAMPLE_KERNEL // UPSAMPLE_STRIDE
    kuj, buj = jnp.asarray(ku, jnp.float32), jnp.asarray(bu, jnp.float32)
    wcj, bcj = jnp.asarray(wc, jnp.float32), jnp.asarray(bc, jnp.float32)
    wc_all = jnp.asarray(wc.transpose(1, 0, 2).reshape(cin_c, flows * cout), jnp.float32)
    pj, pbj = jnp.asarray(p), jnp.asarray(pbias)
    del p

    # weights are arguments, not constants captured by the programs (XLA would fold 2 GB of constants)
    cur_w, one_w, comp_w = (kuj, buj, wcj, bcj), (kuj, buj, wc_all, bcj), (pj, pbj)

    def upsampled(mel, ku, bu):  # what WaveGlow.infer does before its flows
        s = conv_transpose1d(mel, ku, stride=UPSAMPLE_STRIDE) + bu
        return squeeze_mel(s[:, :s.shape[1] - (UPSAMPLE_KERNEL - UPSAMPLE_STRIDE)], cfg.n_group)

    @jax.jit
    def current(mel, ku, bu, wc, bc):
        s = upsampled(mel, ku, bu)
        return tuple(conv1d(s, wc[k][None]) + bc[k] for k in range(flows))

    @jax.jit
    def one_dot(mel, ku, bu, w_all, bc):
        return jnp.einsum("bgc,co->bgo", upsampled(mel, ku, bu), w_all) + bc.reshape(-1)

    @jax.jit
    def composed(mel, p, pb):
        B, F, M = mel.shape
        mp = jnp.pad(mel, ((0, 0), (taps - 1, 0), (0, 0)))
        x = jnp.concatenate([mp[:, taps - 1 - q: taps - 1 - q + F] for q in range(taps)], axis=-1)
        y = jnp.einsum("bfc,co->bfo", x, p)  # [B, F, 32 * 12 * 4096]
        return y.reshape(B, F * (UPSAMPLE_STRIDE // cfg.n_group), flows * cout) + pb

    forms = {"current": lambda m: jnp.concatenate(current(m, *cur_w), axis=-1),
             "one-dot": lambda m: one_dot(m, *one_w), "composed": lambda m: composed(m, *comp_w)}
    fl_cond = lambda F: 2.0 * F * (UPSAMPLE_STRIDE // cfg.n_group) * cin_c * flows * cout
    fl_up = lambda F: 2.0 * F * taps * cfg.n_mel_channels * UPSAMPLE_STRIDE * cfg.n_mel_channels  # sub-pixel
    out = {"compose_s": t_compose, "weights_bytes": {
        "current": 4 * (ku.size + bu.size + wc.size + bc.size), "one-dot": 4 * (ku.size + bu.size + wc.size + bc.size),
        "composed": 4 * (pj.size + pbj.size)}, "frames": {}}
    rng = np.random.default_rng(0)
    for F in args.frames:
        mel = (rng.standard_normal((1, F, cfg.n_mel_channels)) - 5.0)  # as the WaveGlow benchmark's mels
        ref64 = official_cond(model, mel, "float64")
        ref32 = official_cond(model, mel, "float32")
        melj = jnp.asarray(mel, jnp.float32)
        row = {"flops": {"current": fl_up(F) + fl_cond(F), "one-dot": fl_up(F) + fl_cond(F),
                         "composed": 2.0 * F * taps * cfg.n_mel_channels * pj.shape[1]},
               "snr64_official_f32": snr_db(ref32, ref64), "snr64": {}}
        del ref32
        for name, f in forms.items():
            row["snr64"][name] = snr_db(np.asarray(f(melj)), ref64)
        del ref64
        mt = torch.from_numpy(mel.transpose(0, 2, 1).astype(np.float32))
        with cw.official_noise(seed=0):  # the whole official infer, for the cond share of its FLOPs
            row["flops_official_infer"] = official_flops(lambda: model.infer(mt, sigma=0.6))
        row["load_before"] = load()
        fns = {"current": lambda: jax.block_until_ready(current(melj, *cur_w)),
               "one-dot": lambda: jax.block_until_ready(one_dot(melj, *one_w)),
               "composed": lambda: jax.block_until_ready(composed(melj, *comp_w))}
        row["timing"] = alternate(fns, args.rounds, "current")
        out["frames"][str(F)] = row
        r64 = row["snr64_official_f32"]
        print(f"waveglow cond, {F} frames: load {row['load_before']}; official infer "
              f"{row['flops_official_infer'] / 1e9:.1f} GFLOP, of it cond + up-sampler "
              f"{100 * row['flops']['current'] / row['flops_official_infer']:.0f}%; official f32 {r64:.1f} dB vs f64 | "
              + " | ".join(f"{n}: {row['flops'][n] / 1e9:.1f} GFLOP, {out['weights_bytes'][n] / 1e6:.0f} MB, "
                           f"{1e3 * row['timing'][n]['median_s']:.0f} ms, x{row['timing'][n]['ratio_median']:.2f} "
                           f"({row['timing'][n]['ratio_range'][0]:.2f}-{row['timing'][n]['ratio_range'][1]:.2f}), "
                           f"{row['snr64'][n]:.1f} dB{'' if passes_f64_rule(row['snr64'][n], r64) else ' FAILS'}"
                           for n in forms), flush=True)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="flop_reductions", description=__doc__.split("\n")[0])
    p.add_argument("--which", default="all", choices=["waveglow-cond", "winograd", "all"])
    p.add_argument("--rounds", type=int, default=5, help="timed rounds per comparison")
    p.add_argument("--frames", type=int, nargs="+", default=None,
                   help="mel frames (waveglow-cond default: 32 128, the bench sizes; winograd: its first, 128)")
    p.add_argument("--config", default="bigvgan_v2_24khz_100band_256x", help="official BigVGAN config, or "
                   "'codec': the LFR codec's residual convolutions (encoder stages 0-4, decoder 5-9; --frames "
                   "codec frames, e.g. 86 = the codec benchmark's 4 s) (winograd)")
    p.add_argument("--forms", default="split", choices=list(FORM_SETS), help="Winograd candidates (FORM_SETS)")
    p.add_argument("--stages", type=int, nargs="+", default=list(range(10)), help="stages (winograd; BigVGAN "
                   "has 0-5 or 0-3, the codec 0-9)")
    p.add_argument("--table", metavar="JSON", help="print the Winograd table of every run in JSON and exit")
    p.add_argument("--json", help="write the results here: {\"runs\": [this run's report]}, appended to the runs "
                   "the file holds already")
    args = p.parse_args(argv)

    from conversion.report import versions, write_json

    if args.table:
        import json

        with open(args.table) as f:
            for run in json.load(f)["runs"]:
                if "winograd" in run:
                    print(f"{run['command']} ({run['date']}, load {run['load_start']})")
                    print("\n".join(winograd_table(run["winograd"]["layers"])))
        return 0
    report = {"date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "command": "python -m experiments.profile.flop_reductions " + " ".join(
                  sys.argv[1:] if argv is None else argv),
              "machine": f"{os.cpu_count()} cores", "load_start": load(), "versions": versions(),
              "f64_rule": f"SNR vs float64 >= min(official float32's - {F64_MARGIN} dB, {F64_ENOUGH} dB)"}
    print(report["command"], report["date"], report["versions"], f"load {report['load_start']}", flush=True)
    if args.which in ("waveglow-cond", "all"):
        a = argparse.Namespace(**vars(args))
        a.frames = args.frames or [32, 128]
        report["waveglow_cond"] = run_waveglow(a)
    if args.which in ("winograd", "all"):
        a = argparse.Namespace(**vars(args))
        a.frames = (args.frames or [128])[0]
        report["winograd"] = dict(frames=a.frames, config=args.config, forms=args.forms, **run_winograd(a))
        t = report["winograd"]["totals"]
        print(f"winograd totals (the residual-block convs of the stages run, each shape x its count): "
              f"xla {t['xla_s']:.3f} s; "
              f"best passing form per layer {t['best_passing_s']:.3f} s (x{t['xla_over_best_passing']:.2f}); "
              f"best any form {t['best_any_s']:.3f} s (x{t['xla_over_best_any']:.2f})", flush=True)
        print("\n".join(winograd_table(report["winograd"]["layers"])), flush=True)
    report["load_end"] = load()
    if args.json:
        runs = []
        if os.path.exists(args.json):
            import json

            with open(args.json) as f:
                runs = json.load(f).get("runs", [])
        write_json(args.json, {"runs": runs + [report]})
        print(f"written: {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
