"""Scaling of one RL step: rollout and update time and memory as M, T and B grow.

Model: `common.TINY_QWEN2` (hidden 256, 4 layers, 4 heads, 2 kv heads, intermediate 704,
vocab 32000, tied, ~11M params), fp32, written once by `transformers.save_pretrained`
and loaded with `ttrl_jax.models.load_hf`. One point (B prompts, M votes, T new tokens)
runs the library's own path:

* rollout: `ttrl_jax.rollout.sampling.sample` on B random prompts of P = 32 tokens, M samples
  each, EOS disabled (every sample is exactly T tokens), temperature 1, full vocabulary;
* update: the jitted, donated `ttrl_jax.update.train_step.make_train_step` (PPO-clip, AdamW,
  one optimizer update, remat, micro-batches of 8 sequences) on the first N = M / 2
  samples of every prompt (TTRL trains on 32 of 64 votes), so S = B N sequences of
  L = P + T tokens with +-1 advantages and the sampler's log-probs as the old ones.

Sweeps (the fixed values of the other two in brackets): M in 8..64 [B = 8, T = 128];
T in 128..1024 [B = 4, M = 8: B = 4 keeps the 1024-token point to ~30 s]; B in 1..16
[M = 8, T = 128]. Every program is compiled ahead of time (`jit(f).lower(...).compile()`,
which also fills the call cache, so the timed calls run without compiling) and timed
``--repeats`` times (best run reported).

Work and fits. Rollout tokens ``n_r = B M T``, update tokens ``n_u = B N (P + T)``; over
all points, least squares ``time = a + b n`` with ``R^2 = 1 - sum (t - a - b n)^2 /
sum (t - mean t)^2``. Decode attention adds a term in ``B M T^2`` (each new token reads
the cache), so the per-token time of the T sweep rises slowly with T.

Memory is XLA's buffer assignment of the compiled programs (``memory_analysis()``:
argument + output - aliased + temporary bytes; parameters included), and the KV cache
is read off the prefill's output shapes, split into the prompt part (per layer
``[B, K, P, Dh]`` k and v: each prompt prefilled once, shared by its M votes) and the
response part (``[B, M, K, T, Dh]``)::

    prompt KV = 2 L_m B P K Dh b       response KV = 2 L_m B M T K Dh b

Run: ``python benchmarks/bench_scaling.py`` (a few minutes; ``--smoke``: a tiny model
and one small point, seconds).
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

MIB = 2**20
PROMPT_LEN = 32


def program_bytes(compiled) -> int:
    """Bytes a compiled program holds: argument + output - aliased (donated) + temporary."""
    ma = compiled.memory_analysis()
    if ma is None:
        return 0
    return int(
        ma.argument_size_in_bytes
        + ma.output_size_in_bytes
        - ma.alias_size_in_bytes
        + ma.temp_size_in_bytes
    )


def _nbytes(structs) -> int:
    import jax

    return sum(math.prod(s.shape) * s.dtype.itemsize for s in jax.tree.leaves(structs))


class Runner:
    """Measures (B, M, T) points on one set of weights; results are cached by point."""

    def __init__(self, params, cfg, repeats: int, micro: int = 8):
        self.params, self.cfg, self.repeats, self.micro = params, cfg, repeats, micro
        self.cache: dict[tuple[int, int, int], dict] = {}

    def point(self, b: int, m: int, t: int) -> dict:
        if (b, m, t) not in self.cache:
            r = self.cache[b, m, t] = self._measure(b, m, t)
            print(
                f"  point B={b} M={m} T={t}: rollout {r['rollout_s']:.2f} s, update "
                f"{r['update_s']:.2f} s, compile {r['compile_sampler_s']:.0f} + "
                f"{r['compile_update_s']:.0f} s, load {r['load']:.2f}",
                flush=True,
            )
        return self.cache[b, m, t]

    def _measure(self, b: int, m: int, t: int) -> dict:
        import jax
        import jax.numpy as jnp

        from ttrl_jax.rollout import sampling
        from ttrl_jax.update import train_step as ts

        params, cfg, p = self.params, self.cfg, PROMPT_LEN
        rng = np.random.RandomState(b * 1000 + m * 10 + t)
        prompts = rng.randint(2, cfg.vocab_size, (b, p)).astype(np.int32)
        mask = np.ones((b, p), np.int32)
        key, sp = jax.random.key(0), sampling.sampling_params(temperature=1.0)
        out = {"B": b, "M": m, "T": t}

        # Ahead-of-time compile, with exactly the arguments `sampling.sample` passes.
        t0 = time.perf_counter()
        pre = sampling.prefill.lower(
            params, cfg, prompts, mask, key, sp, sampling.eos_table((), b), np.int32(0),
            np.int32(t), num_samples=m, max_len=t, block=256, cache_dtype=None,
        )  # fmt: skip
        pre_c = pre.compile()
        state = pre_c(
            params, prompts, mask, key, sp, sampling.eos_table((), b), np.int32(0), np.int32(t)
        )
        dec_c = sampling.decode.lower(params, cfg, state, unstack_layers=True, block=256).compile()
        del state
        out["compile_sampler_s"] = time.perf_counter() - t0
        shapes = pre.out_info
        out["prompt_kv"] = _nbytes((shapes.prefix["k"], shapes.prefix["v"]))
        out["response_kv"] = _nbytes(shapes.cache)
        out["sampler_mem"] = max(program_bytes(pre_c), program_bytes(dec_c))

        def rollout():
            r = sampling.sample(
                params, cfg, prompts, mask, key, num_samples=m, max_new_tokens=t,
                sampling=sp, eos_ids=(), max_len=t,
            )  # fmt: skip
            return jax.block_until_ready(r)

        # The update's batch: the first N samples of every prompt, as the trainer builds it.
        roll = rollout()
        assert int(np.min(roll.lengths)) == t, "EOS is disabled: every sample has T tokens"
        n = max(1, m // 2)
        resp = np.asarray(roll.tokens)[:, :n].reshape(b * n, t)
        s = b * n
        batch = {
            "tokens": np.concatenate([np.repeat(prompts, n, 0), resp], 1),  # [S, P + T]
            "attn_mask": np.ones((s, p + t), np.int32),
            "resp_mask": np.ones((s, t), np.float32),
            "old_logprobs": np.asarray(roll.logprobs)[:, :n].reshape(s, t),
            "advantages": np.repeat(rng.choice([-1.0, 1.0], (s, 1)), t, 1).astype(np.float32),
        }
        hyper = {k: jnp.float32(v) for k, v in (("temperature", 1), ("kl_coef", 0), ("entropy_coef", 0))}  # fmt: skip
        opt = ts.Plain(ts.make_optimizer(1e-6))
        loss = ts.LossConfig(num_minibatches=1, micro_batch_size=min(self.micro, s))
        step = ts.make_train_step(cfg, loss, opt)
        train = {"p": jax.tree.map(jnp.copy, params)}
        train["o"] = opt.init(train["p"])
        t1 = time.perf_counter()
        step_c = step.lower(train["p"], train["o"], batch, hyper).compile()
        out["compile_update_s"] = time.perf_counter() - t1
        out["update_mem"] = program_bytes(step_c)

        def update():
            train["p"], train["o"], met = step(train["p"], train["o"], batch, hyper)
            jax.block_until_ready(met)

        out["rollout_s"] = common.timed(rollout, self.repeats, warmup=0)
        out["update_s"] = common.timed(update, self.repeats, warmup=0)
        out["rollout_tokens"] = b * m * t
        out["update_tokens"] = s * (p + t)
        out["load"] = os.getloadavg()[0]
        return out


def fit(x, y) -> tuple[float, float, float]:
    """Least squares ``y = a + b x``; returns (a, b, R^2)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    b, a = np.polyfit(x, y, 1)
    ss_res = float(np.sum((y - a - b * x) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return float(a), float(b), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0


def fit_quadratic_attention(pts: list[dict]) -> tuple[float, float, float, float]:
    """Rollout least squares ``time = a + b n + c n T`` (n = B M T tokens; the c term is
    the decode attention reading all T cache slots of every row at every step); returns
    (a, b, c, R^2)."""
    n = np.array([p["rollout_tokens"] for p in pts], float)
    t = np.array([p["T"] for p in pts], float)
    y = np.array([p["rollout_s"] for p in pts], float)
    x = np.stack([np.ones_like(n), n, n * t], 1)
    coef = np.linalg.lstsq(x, y, rcond=None)[0]
    ss_res = float(np.sum((y - x @ coef) ** 2))
    ss_tot = float(np.sum((y - y.mean()) ** 2))
    return (*map(float, coef), 1.0 - ss_res / ss_tot if ss_tot > 0 else 1.0)


def print_fits(pts: list[dict]) -> None:
    """Least-squares ``time = a + b tokens`` of each phase over all points."""
    print("\nlinear fits over all points: time = a + b x tokens")
    rows = []
    for phase in ("rollout", "update"):
        x = [p[f"{phase}_tokens"] for p in pts]
        y = [p[f"{phase}_s"] for p in pts]
        a, b, r2 = fit(x, y)
        per = [yy / xx * 1e6 for xx, yy in zip(x, y)]
        rows.append(
            (phase, len(pts), a, b * 1e6, round(1 / b) if b > 0 else "-", f"{r2:.4f}",
             f"{min(per):.3g}-{max(per):.3g}")
        )  # fmt: skip
    common.table(
        ["phase", "points", "a (s)", "b (us/token)", "1/b (tokens/s)", "R^2", "us/token range"],
        rows,
    )
    if len({p["T"] for p in pts}) > 1 and len(pts) > 3:
        a, b, c, r2 = fit_quadratic_attention(pts)
        print(
            f"rollout with the attention term, time = a + b n + c n T: a = {a:.3g} s, "
            f"b = {b * 1e6:.3g} us/token, c = {c * 1e9:.3g} ns/(token x cache slot), "
            f"R^2 = {r2:.4f}"
        )


def sweep_table(name: str, rows: list[dict]) -> None:
    print(f"\n{name}", flush=True)
    common.table(
        [name.split()[0], "rollout tokens", "rollout s", "rollout tok/s", "update tokens",
         "update s", "update tok/s", "step s", "prompt KV MiB", "response KV MiB",
         "sampler mem MiB", "update mem MiB", "load"],
        [
            (
                r[name.split()[0]], r["rollout_tokens"], r["rollout_s"],
                round(r["rollout_tokens"] / r["rollout_s"]), r["update_tokens"], r["update_s"],
                round(r["update_tokens"] / r["update_s"]), r["rollout_s"] + r["update_s"],
                r["prompt_kv"] / MIB, r["response_kv"] / MIB, r["sampler_mem"] / MIB,
                round(r["update_mem"] / MIB), f"{r['load']:.2f}",
            )
            for r in rows
        ],
    )  # fmt: skip


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model, one small point")
    ap.add_argument("--repeats", type=int, default=1, help="timed runs per point (best kept)")
    args = ap.parse_args(argv)
    if args.smoke:
        dims, base = common.SMOKE_QWEN2, {"b": 1, "m": 2, "t": 8}
        ms, ts_, bs, t_batch = [2], [8], [1], 1
    else:
        dims, base = common.TINY_QWEN2, {"b": 8, "m": 8, "t": 128}
        ms, ts_, bs, t_batch = [8, 16, 32, 64], [128, 256, 512, 1024], [1, 2, 4, 8, 16], 4
    common.banner("bench_scaling: step time and memory vs votes M, length T, prompts B")

    from ttrl_jax import models

    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        common.write_qwen2(tmp, **dims)
        model = models.load_hf(tmp, dtype="float32")
    params, cfg = model.params(), model.config
    n_params = sum(int(np.prod(x.shape)) for x in __import__("jax").tree.leaves(params))
    print(
        f"model {dims} ({n_params / 1e6:.1f}M params), fp32; prompts P={PROMPT_LEN}; "
        f"train N = M/2 votes per prompt, micro-batch 8; best of {args.repeats} run(s)"
    )
    run = Runner(params, cfg, args.repeats)
    b0, m0, t0 = base["b"], base["m"], base["t"]
    by_m = [dict(run.point(b0, m, t0), M=m) for m in ms]
    sweep_table(f"M (votes per prompt; B={b0}, T={t0})", by_m)
    by_t = [dict(run.point(t_batch, m0, t), T=t) for t in ts_]
    sweep_table(f"T (response tokens; B={t_batch}, M={m0})", by_t)
    by_b = [dict(run.point(b, m0, t0), B=b) for b in bs]
    sweep_table(f"B (prompts; M={m0}, T={t0})", by_b)

    pts = list(run.cache.values())
    if len(pts) > 1:
        print_fits(pts)
    pk = {p["prompt_kv"] for p in by_m}
    print(
        f"prompt KV over the M sweep: {sorted(v / MIB for v in pk)} MiB "
        f"({'constant in M' if len(pk) == 1 else 'NOT constant in M'}); a per-vote copy "
        f"would be {by_m[-1]['prompt_kv'] * ms[-1] / MIB:.1f} MiB at M={ms[-1]}"
    )
    assert len(pk) == 1, "the prompt part of the KV cache must not grow with M"
    c_s = sum(p["compile_sampler_s"] for p in pts)
    c_u = sum(p["compile_update_s"] for p in pts)
    print(
        f"{len(pts)} points; compile {c_s:.0f} s sampler + {c_u:.0f} s update; total {time.perf_counter() - start:.0f} s;"
        f" peak RSS {common.peak_rss_gib():.2f} GiB; load average {os.getloadavg()[0]:.2f}"
    )


if __name__ == "__main__":
    main()
