"""W3: rollouts at real lengths -- how much of the static decoder's work is padding.

The workload of issue #16: the tiny 11M Qwen2 of the rollout benchmark, 8 prompts x 16
votes, T_max = 1024, temperature 1.0. Each sample stops at a pre-drawn length from a
heavy-tailed law (lognormal with median 250 and sigma chosen so that 10 % of samples
exceed T_max, which clips them there), passed to `sampling.sample` as per-sample
``row_limits`` -- a real feature (per-prompt budgets) and a stand-in for EOS that every
decoder can honour identically. Printed: the length law's parameters, useful tokens/s
(the sum of sample lengths over the wall time), slot-steps run against slot-steps
useful (the static decoder keeps all B*M rows in the loop until the longest is done, so
each step costs B*M rows whether they are live or not), the process's peak RSS after
each run (cumulative: one process runs every row, so a later row never reads lower),
and the same static decoder at a fixed length of T_max with no limits (every slot
useful) for the rate it reaches when nothing is wasted.

Each workload runs with the own-cache attention reading all T_max slots every step (the
default) and reading only the live blocks of 128 slots (``attn_block``, opt-in). Slot
refill (the rest of the length-aware engine) is to be measured beside them.

Run: ``python benchmarks/bench_lengths.py [--smoke]``.
"""

from __future__ import annotations

import argparse
import math
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np


def length_law(n: int, t_max: int, median: float, clipped: float, seed: int):
    """``n`` lengths from a lognormal (median ``median``, P(L > t_max) = ``clipped``),
    rounded up and clipped to ``[1, t_max]``; returns (lengths, mu, sigma)."""
    from statistics import NormalDist

    mu = math.log(median)
    sigma = math.log(t_max / median) / NormalDist().inv_cdf(1.0 - clipped)
    raw = np.random.RandomState(seed).lognormal(mu, sigma, n)
    return np.clip(np.ceil(raw), 1, t_max).astype(np.int32), mu, sigma


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny model and lengths")
    args = ap.parse_args()
    common.banner("W3: static decoder at real (mixed) lengths")
    import jax

    from ttrl_jax import models
    from ttrl_jax.rollout import sampling

    dims = common.SMOKE_QWEN2 if args.smoke else common.TINY_QWEN2
    b, m, p = (2, 4, 16) if args.smoke else (8, 16, 32)
    t_max, median = (64, 16) if args.smoke else (1024, 250)
    lengths, mu, sigma = length_law(b * m, t_max, median, 0.10, seed=0)
    limits = lengths.reshape(b, m)
    print(
        f"workload: {b} prompts x {m} votes, T_max {t_max}; lengths ~ lognormal(mu "
        f"{mu:.3f}, sigma {sigma:.3f}) = median {median}, P(L > T_max) = 0.10 before "
        f"clipping; drawn: mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
        f"max {lengths.max()}, {np.mean(lengths == t_max):.1%} at T_max"
    )
    with tempfile.TemporaryDirectory() as tmp:
        common.write_qwen2(tmp, **dims)
        model = models.load_hf(tmp, dtype="float32")
    params, cfg = model.params(), model.config
    rng = np.random.RandomState(1)
    prompts = rng.randint(4, dims["vocab"], (b, p)).astype(np.int32)
    mask = np.ones((b, p), np.int32)
    sp = sampling.sampling_params(temperature=1.0)

    def go(row_limits, attn_block):
        out = sampling.sample(
            params,
            cfg,
            prompts,
            mask,
            jax.random.key(0),
            num_samples=m,
            max_new_tokens=t_max,
            sampling=sp,
            max_len=t_max,
            row_limits=row_limits,
            attn_block=attn_block,
        )
        return jax.block_until_ready(out)

    blk = sampling.attention_block_size(t_max, 128 if t_max >= 128 else 16)
    runs = (
        ("static, real lengths, full cache reads", limits, 0),
        (f"static, real lengths, live blocks of {blk}", limits, blk),
        ("static, all at T_max, full cache reads", None, 0),
        (f"static, all at T_max, live blocks of {blk}", None, blk),
    )
    rows = []
    for name, lim, attn in runs:
        out = go(lim, attn)  # compile + warm
        t0 = time.perf_counter()
        out = go(lim, attn)
        wall = time.perf_counter() - t0
        useful = int(np.asarray(out.lengths).sum())
        steps = int(out.decode_steps) + 1
        slot_steps = steps * b * m
        rows.append(
            [
                name,
                wall,
                useful,
                useful / wall,
                slot_steps,
                slot_steps - useful,
                (slot_steps - useful) / slot_steps,
                common.peak_rss_gib(),
            ]
        )
    common.table(
        [
            "decoder",
            "wall s",
            "useful tokens",
            "useful tokens/s",
            "slot-steps run",
            "slot-steps wasted",
            "wasted share",
            "process peak RSS GiB so far",
        ],
        rows,
    )
    print(
        f"useful tokens/s, live blocks / full reads: real lengths "
        f"{rows[1][3] / rows[0][3]:.2f}x, all at T_max {rows[3][3] / rows[2][3]:.2f}x; "
        f"real lengths / all at T_max (1.00: no padding work): full reads "
        f"{rows[0][3] / rows[2][3]:.2f}, live blocks {rows[1][3] / rows[3][3]:.2f}"
    )


if __name__ == "__main__":
    main()
