"""W3: rollouts at real lengths -- the static decoder against the slot-refill engine.

The workload of issue #16: the tiny 11M Qwen2 of the rollout benchmark, 8 prompts x 16
votes, T_max = 1024, temperature 1.0, identical weights and key for every decoder. Each
sample stops at a pre-drawn length from a heavy-tailed law (lognormal with median 250
and sigma chosen so that 10 % of samples exceed T_max, which clips them there), passed
as per-sample ``row_limits`` -- a real feature (per-prompt budgets) and a stand-in for
EOS that every decoder honours identically.

Decoders: the static decoder (`sampling.decode`: all B*M rows stay in the loop until the
longest is done) and the engine (`rollout.engine`: S slots over the queue of B*M
samples, refilled as samples end) for several S, each with the own-cache attention
reading all T_max slots every step and with ragged reads (each group of
`engine.RAGGED_GROUP` slots reads only its own live blocks of 128 slots); the static
decoder with all T_max slots and with the live blocks of its longest row. With
``--pallas`` (the default on a GPU, and in ``--smoke``) each S also runs with jax's
Pallas decode-attention kernel reading each slot's own length
(`rollout.pallas_attention`; off a GPU in interpret mode, which checks that it runs,
not its speed).
Printed per decoder: useful tokens/s (the sum of sample lengths over the wall time),
loop iterations, slot-steps run (iterations x rows in the batch) and the wasted share
of them, and the loop's memory (XLA's memory analysis of the compiled loop: arguments
+ temporaries, the KV cache included); then the ratio to the static decoder, the share of samples
whose tokens equal the static decoder's, the static decoder with every sample at T_max
(no padding work) for reference, the engine's cost per loop iteration and per
slot-step fitted over its runs with the ceiling that cost allows (`ceiling`), and the
curve over T_max = 256, 512 at the best S and read.

``--shape=qwen2.5-math-1.5b`` runs the same workload on Qwen2.5-Math-1.5B's shape
(vocabulary 151,936, random bf16 weights built on the device; meant for a GPU), with
``--slots`` and ``--no-curve`` to keep a device run short.

Run: ``python benchmarks/bench_lengths.py [--smoke] [--pallas | --no-pallas]
[--shape=tiny|qwen2.5-math-1.5b] [--slots=16,32,48,64,96] [--no-curve]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common
import numpy as np


def decoder_bytes(params, cfg, prompts, mask, key, sp, limits, t_max, m, slots, attn, kernel):
    """Compiled-program memory of one decoder's loop (XLA's memory analysis): arguments
    plus temporaries of `sampling.decode` (static) or `engine.run` (slots), bytes."""
    import numpy as np

    from ttrl_jax.rollout import engine, sampling

    b = prompts.shape[0]
    args = (params, cfg, prompts, mask, key, sp, sampling.eos_table((), b), np.int32(0))
    args += (np.int32(t_max), limits)
    common = {"num_samples": m, "max_len": t_max}
    if slots:
        st = engine.start(*args, slots=slots, attn_kernel=kernel, **common)
        run = engine.run.lower(params, cfg, st, num_samples=m, attn_block=attn, attn_kernel=kernel)
        exe = run.compile()
    else:
        st = sampling.prefill(*args, **common)
        exe = sampling.decode.lower(params, cfg, st, attn_block=attn).compile()
    ma = exe.memory_analysis()
    return ma.argument_size_in_bytes + ma.temp_size_in_bytes


def ceiling(static: list, engine_rows: list) -> None:
    """Prints the engine's cost model and what it allows: a least-squares fit of the
    engine rows' wall time, ``wall = a * steps + c * slot_steps`` (a: the cost of a loop
    iteration whatever its rows, e.g. reading the weights; c: the cost of one row in
    one iteration, its cache read included), then the engine's ceiling at that cost,
    with no wasted slot-step and no refill delay (the static decoder's iterations, the
    fewest the longest sample needs; one slot-step per useful token), and the ``c`` that
    a 3x target needs."""
    steps = np.array([r[4] for r in engine_rows], float)
    slot_steps = np.array([r[5] for r in engine_rows], float)
    wall = np.array([r[1] for r in engine_rows], float)
    if len(engine_rows) < 2 or np.ptp(steps) == 0:
        return
    (a, c), *_ = np.linalg.lstsq(np.stack([steps, slot_steps], 1), wall, rcond=None)
    fit = np.abs(np.stack([steps, slot_steps], 1) @ [a, c] - wall).max()
    useful, iters = static[2], static[4]
    floor = a * iters + c * useful
    need = (static[1] / 3 - a * iters) / useful
    print(
        f"engine cost model over {len(engine_rows)} runs (ragged reads): {1e3 * a:.2f} ms per "
        f"iteration + {1e3 * c:.3f} ms per slot-step (max misfit {fit:.1f} s); with no "
        f"wasted slot-step and no refill delay ({iters} iterations, {useful} slot-steps) "
        f"it would take {floor:.1f} s = {static[1] / floor:.2f}x the static decoder; 3x "
        f"needs <= {1e3 * need:.3f} ms per slot-step"
    )


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--smoke", action="store_true", help="tiny model and lengths")
    ap.add_argument(
        "--pallas",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="also run the engine with the Pallas decode kernel (default: on a GPU / smoke)",
    )
    ap.add_argument("--shape", default="tiny", choices=["tiny", "qwen2.5-math-1.5b"])
    ap.add_argument("--slots", default="", help="engine slot counts (default 16,32,48,64,96)")
    ap.add_argument("--no-curve", action="store_true", help="skip the T_max = 256, 512 curve")
    args = ap.parse_args()
    common.banner("W3: static decoder vs slot-refill engine at real (mixed) lengths")
    import jax

    from ttrl_jax import models
    from ttrl_jax.rollout import sampling

    big = args.shape == "qwen2.5-math-1.5b"
    dims = common.SMOKE_QWEN2 if args.smoke else common.TINY_QWEN2
    dims = common.QWEN2P5_MATH_1P5B if big else dims
    b, m, p = (2, 4, 16) if args.smoke else (8, 16, 32)
    t_top, median = (64, 16) if args.smoke else (1024, 250)
    slot_counts = (2, 4) if args.smoke else (16, 32, 48, 64, 96)
    slot_counts = tuple(int(x) for x in args.slots.split(",")) if args.slots else slot_counts
    t_curve = () if args.no_curve else (32,) if args.smoke else (256, 512)
    if big:
        model = common.random_qwen2(**dims, dtype="bfloat16")
    else:
        with tempfile.TemporaryDirectory() as tmp:
            common.write_qwen2(tmp, **dims)
            model = models.load_hf(tmp, dtype="float32")
    params, cfg = model.params(), model.config
    print(f"model {dims}, {model.dtype} weights, on {jax.devices()[0].device_kind}")
    rng = np.random.RandomState(1)
    prompts = rng.randint(4, dims["vocab"], (b, p)).astype(np.int32)
    mask = np.ones((b, p), np.int32)
    sp = sampling.sampling_params(temperature=1.0)
    key = jax.random.key(0)
    on_gpu = jax.default_backend() == "gpu"
    pallas = args.pallas if args.pallas is not None else args.smoke or on_gpu

    def go(t_max, row_limits, slots, attn, kernel="xla"):
        out = sampling.sample(
            params,
            cfg,
            prompts,
            mask,
            key,
            num_samples=m,
            max_new_tokens=t_max,
            sampling=sp,
            max_len=t_max,
            row_limits=row_limits,
            attn_block=attn,
            decode_slots=slots,
            attn_kernel=kernel,
        )
        return jax.block_until_ready(out)

    def measure(name, t_max, limits, slots, attn, kernel="xla"):
        # compile: every sample ends at token 0 except one at T_max, so that the engine
        # compiles each of its tail phases (`engine.decode_all`) too
        warm = None if limits is None else np.ones_like(limits)
        if warm is not None and slots:
            warm[0, 0] = t_max
        go(t_max, warm, slots, attn, kernel)
        t0 = time.perf_counter()
        out = go(t_max, limits, slots, attn, kernel)
        wall = time.perf_counter() - t0
        useful = int(np.asarray(out.lengths).sum())
        slot_steps = int(out.slot_steps) + b * m  # token 0 of every sample: the prefill
        mem = decoder_bytes(
            params, cfg, prompts, mask, key, sp, limits, t_max, m, slots, attn, kernel
        )
        row = [name, wall, useful, useful / wall, int(out.decode_steps), slot_steps]
        return row + [(slot_steps - useful) / slot_steps, mem / 2**20], out

    def law(t_max):
        lengths, mu, sigma = common.length_law(b * m, t_max, median * t_max / t_top, 0.10, seed=0)
        print(
            f"T_max {t_max}: {b} prompts x {m} votes; lengths ~ lognormal(mu {mu:.3f}, sigma "
            f"{sigma:.3f}) = median {median * t_max / t_top:.0f}, P(L > T_max) = 0.10 before "
            f"clipping; drawn: mean {lengths.mean():.0f}, median {np.median(lengths):.0f}, "
            f"max {lengths.max()}, {np.mean(lengths == t_max):.1%} at T_max"
        )
        return lengths.reshape(b, m)

    header = [
        "decoder",
        "wall s",
        "useful tokens",
        "useful tokens/s",
        "loop steps",
        "slot-steps run",
        "wasted share",
        "loop memory MiB (args + temps)",
    ]
    limits = law(t_top)
    blk = sampling.attention_block_size(t_top, 128 if t_top >= 128 else 16)
    rows, outs = [], []
    runs = [("static, full cache reads", 0, 0), (f"static, live blocks of {blk}", 0, blk)]
    for s in slot_counts:
        runs += [(f"engine S={s}, full cache reads", s, 0), (f"engine S={s}, ragged reads", s, blk)]
    for name, slots, attn in runs:
        row, out = measure(name, t_top, limits, slots, attn)
        rows.append(row)
        outs.append(np.asarray(out.tokens))
    ref, _ = measure("static, all at T_max (no padding work)", t_top, None, 0, 0)
    common.table(header, rows + [ref])
    rate = [r[3] / rows[0][3] for r in rows]  # useful tokens/s over the static decoder's
    best = max(range(2, len(rows)), key=lambda i: rows[i][3])
    same = np.mean(np.all(outs[best] == outs[0], axis=-1))
    print(
        f"engine / static useful tokens/s: best ({runs[best][0]}) {rate[best]:.2f}x at "
        f"{rows[best][7] / rows[0][7]:.2f}x the loop memory; samples identical to the "
        f"static decoder's: {same:.1%}"
    )
    for i in range(2, len(rows), 2):
        print(f"S={runs[i][1]}: full reads {rate[i]:.2f}x, ragged reads {rate[i + 1]:.2f}x")
    ceiling(rows[0], rows[3::2])
    if pallas:
        kernel_rows, where = [], "gpu" if on_gpu else f"{jax.default_backend()}, interpret mode"
        for i, s in enumerate(slot_counts):
            row, out = measure(f"engine S={s}, Pallas kernel", t_top, limits, s, 0, "pallas")
            kernel_rows.append(row)
            same = np.mean(np.all(np.asarray(out.tokens) == outs[0], axis=-1))
            print(
                f"S={s}: Pallas kernel {row[3] / rows[0][3]:.2f}x the static decoder, "
                f"{row[3] / rows[3 + 2 * i][3]:.2f}x the XLA ragged reads "
                f"({where}); samples identical to the static decoder's: {same:.1%}"
            )
        common.table(header, kernel_rows)
    curve, (_, s_best, attn_best) = [], runs[best]
    for t_max in t_curve:
        lim = law(t_max)
        st_row, _ = measure(f"T_max {t_max}: static", t_max, lim, 0, 0)
        name = f"T_max {t_max}: engine S={s_best}" + (", ragged reads" if attn_best else "")
        en_row, _ = measure(name, t_max, lim, s_best, attn_best)
        curve += [st_row, en_row]
        print(f"T_max {t_max}: engine / static useful tokens/s {en_row[3] / st_row[3]:.2f}x")
    if curve:
        common.table(header, curve)


if __name__ == "__main__":
    main()
