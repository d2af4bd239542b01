"""Microbenchmark: exact full-vocabulary sampling from ``[R, V]`` logits on this machine.

Every method draws one token per row from softmax(z) over the *whole* vocabulary (no
truncation), with per-row randomness derived as ``fold_in(fold_in(key, row), step)`` so
the draw of a row never depends on how rows are split across devices, and also returns
the log-probability of the drawn token (the sampler must report it). Timings are the
median of ``--iters`` calls of one jitted function, per step of ``R`` rows.

Methods (all exact):

* ``categorical``   `jax.random.categorical` per row (Gumbel-max, threefry bits).
* ``gumbel``        argmax(z - log(-log u)) with u from threefry, one fused pass.
* ``gumbel_rbg``    the same with the XLA RngBitGenerator ("rbg") key implementation.
* ``exp_race``      argmax(e_i / E_i), e = exp(z - max), E_i = -log u_i (one log, not two).
* ``inverse_cdf``   one uniform per row, index of the first cumsum(e) entry above u * sum(e).
* ``two_stage``     inverse CDF in two levels: pick a vocab block of ``block`` tokens by
                    its mass, then a token inside it (two uniforms per row; what
                    `ttrl_jax.rollout.token_sampling` uses).

Not exact (for reference only, not eligible): ``topk_then_sample`` (top-64 + categorical).

``library: ...`` rows time `ttrl_jax.rollout.token_sampling.sample_logits` itself (mode switch
included) in its full-vocabulary, greedy, top-p and top-k modes (chi-square against the
*unfiltered* law, so only the full-vocabulary row's p-value is meaningful there).

Run: ``python benchmarks/bench_sampling_methods.py [--rows 64 --vocab 32000]``.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax
import jax.numpy as jnp


def _row_keys(key, rows, step):
    return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, r), step))(
        jnp.arange(rows, dtype=jnp.uint32)
    )


def _logprob(z, tok):
    lse = jax.nn.logsumexp(z, axis=-1)
    return jnp.take_along_axis(z, tok[:, None], axis=-1)[:, 0] - lse


def categorical(z, key, step):
    keys = _row_keys(key, z.shape[0], step)
    tok = jax.vmap(jax.random.categorical)(keys, z)
    return tok, _logprob(z, tok)


def gumbel(z, key, step):
    keys = _row_keys(key, z.shape[0], step)
    u = jax.vmap(lambda k: jax.random.uniform(k, z.shape[1:], minval=1e-38))(keys)
    tok = jnp.argmax(z - jnp.log(-jnp.log(u)), axis=-1)
    return tok, _logprob(z, tok)


def gumbel_rbg(z, key, step):
    del key
    keys = jax.vmap(
        lambda r: jax.random.fold_in(jax.random.fold_in(jax.random.key(0, impl="rbg"), r), step)
    )(jnp.arange(z.shape[0], dtype=jnp.uint32))
    u = jax.vmap(lambda k: jax.random.uniform(k, z.shape[1:], minval=1e-38))(keys)
    tok = jnp.argmax(z - jnp.log(-jnp.log(u)), axis=-1)
    return tok, _logprob(z, tok)


def exp_race(z, key, step):
    keys = _row_keys(key, z.shape[0], step)
    u = jax.vmap(lambda k: jax.random.uniform(k, z.shape[1:], minval=1e-38))(keys)
    m = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - m)
    tok = jnp.argmax(e / -jnp.log(u), axis=-1)
    lse = m[:, 0] + jnp.log(jnp.sum(e, axis=-1))
    return tok, jnp.take_along_axis(z, tok[:, None], axis=-1)[:, 0] - lse


def inverse_cdf(z, key, step):
    keys = _row_keys(key, z.shape[0], step)
    u = jax.vmap(lambda k: jax.random.uniform(k, ()))(keys)
    m = jnp.max(z, axis=-1, keepdims=True)
    c = jnp.cumsum(jnp.exp(z - m), axis=-1)  # [R, V]
    total = c[:, -1]
    target = jnp.minimum(u * total, jnp.nextafter(total, 0.0))
    tok = jnp.sum(c <= target[:, None], axis=-1).astype(jnp.int32)
    lse = m[:, 0] + jnp.log(total)
    return tok, jnp.take_along_axis(z, tok[:, None], axis=-1)[:, 0] - lse


def make_two_stage(block):
    def two_stage(z, key, step):
        r, v = z.shape
        nb = -(-v // block)
        keys = _row_keys(key, r, step)
        u = jax.vmap(lambda k: jax.random.uniform(k, (2,)))(keys)  # [R, 2]
        m = jnp.max(z, axis=-1, keepdims=True)
        zp = jnp.pad(z, ((0, 0), (0, nb * block - v)), constant_values=-jnp.inf)
        zb = zp.reshape(r, nb, block)
        mass = jnp.sum(jnp.exp(zb - m[..., None]), axis=-1)  # [R, nb]
        cm = jnp.cumsum(mass, axis=-1)
        total = cm[:, -1]
        t1 = jnp.minimum(u[:, 0] * total, jnp.nextafter(total, 0.0))
        b = jnp.sum(cm <= t1[:, None], axis=-1)  # [R]
        inner = jnp.take_along_axis(zb, b[:, None, None], axis=1)[:, 0]  # [R, block]
        c = jnp.cumsum(jnp.exp(inner - m), axis=-1)
        t2 = jnp.minimum(u[:, 1] * c[:, -1], jnp.nextafter(c[:, -1], 0.0))
        j = jnp.sum(c <= t2[:, None], axis=-1)
        tok = (b * block + j).astype(jnp.int32)
        lse = m[:, 0] + jnp.log(total)
        return tok, jnp.take_along_axis(z, tok[:, None], axis=-1)[:, 0] - lse

    return two_stage


def topk_then_sample(z, key, step):
    keys = _row_keys(key, z.shape[0], step)
    vals, idx = jax.lax.top_k(z, min(64, z.shape[-1]))
    j = jax.vmap(jax.random.categorical)(keys, vals)
    tok = jnp.take_along_axis(idx, j[:, None], axis=-1)[:, 0]
    return tok, _logprob(z, tok)


def library(**knobs):
    """`ttrl_jax.rollout.token_sampling.sample_logits` (two-stage; top-k / top-p modes when set)."""
    from ttrl_jax.rollout import sampling

    sp = sampling.sampling_params(**knobs)

    def fn(z, key, step):
        keys = _row_keys(key, z.shape[0], step)
        return sampling.sample_logits(z, keys, sp)

    return fn


def time_fn(fn, z, key, iters):
    f = jax.jit(fn)
    jax.block_until_ready(f(z, key, 0))
    times = []
    for i in range(iters):
        t0 = time.perf_counter()
        jax.block_until_ready(f(z, key, i + 1))
        times.append(time.perf_counter() - t0)
    return 1e3 * float(np.median(times)), 1e3 * float(np.min(times))


def check_exact(fn, v=12, rows=4096, seed=0):
    """Chi-square p-value of ``rows`` draws against softmax(z) on a small vocabulary."""
    from scipy import stats

    z = jax.random.normal(jax.random.key(seed), (v,)) * 2.0
    zz = jnp.broadcast_to(z, (rows, v))
    tok, _ = jax.jit(fn)(zz, jax.random.key(seed + 1), 0)
    counts = np.bincount(np.asarray(tok), minlength=v)
    p = np.asarray(jax.nn.softmax(z), np.float64)
    return stats.chisquare(counts, rows * p / p.sum()).pvalue


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=64)
    ap.add_argument("--vocab", type=int, default=32000)
    ap.add_argument("--iters", type=int, default=30)
    ap.add_argument("--smoke", action="store_true", help="tiny sizes, few iterations")
    args = ap.parse_args(argv)
    if args.smoke:
        args.rows, args.vocab, args.iters = 8, 1000, 3
    methods = {
        "categorical": categorical,
        "gumbel": gumbel,
        "gumbel_rbg": gumbel_rbg,
        "exp_race": exp_race,
        "inverse_cdf": inverse_cdf,
        "two_stage_b128": make_two_stage(128),
        "two_stage_b256": make_two_stage(256),
        "two_stage_b512": make_two_stage(512),
        "topk_then_sample (NOT exact)": topk_then_sample,
        "library: full vocabulary": library(),
        "library: greedy": library(greedy=True),
        "library: top_p=0.95": library(top_p=0.95),
        "library: top_k=50": library(top_k=50),
        "library: top_k=50, top_p=0.95": library(top_k=50, top_p=0.95),
    }
    z = 3.0 * jax.random.normal(jax.random.key(0), (args.rows, args.vocab), jnp.float32)
    key = jax.random.key(1)
    print(
        f"devices={jax.devices()} rows={args.rows} vocab={args.vocab} (tokens + log-prob per step)"
    )
    print(f"{'method':32s} {'median ms':>10s} {'min ms':>8s} {'chi2 p':>8s}")
    for name, fn in methods.items():
        med, best = time_fn(fn, z, key, args.iters)
        pval = check_exact(fn) if not args.smoke else float("nan")
        print(f"{name:32s} {med:10.2f} {best:8.2f} {pval:8.3f}", flush=True)


if __name__ == "__main__":
    main()
