"""Model FLOPs utilisation (MFU) of the jitted policy update on this machine.

What is timed: one call of `ttrl_jax.update.train_step.make_train_step` (forward, backward,
AdamW; params and optimizer state donated) on one RL mini-batch of S sequences of
L = P + T tokens (P prompt, T response; log-probs, PPO-clip loss and k3 KL to reference
log-probs on the T response tokens), for a ~100M-parameter Qwen2-shaped model:
hidden 768, 12 layers, 12 heads (Dh 64), 4 kv heads, SwiGLU 2048, vocab 32000, tied
embeddings, q/k/v biases (N_body = 75.5M in the blocks, N_emb = 24.6M; 100.1M total).

Model FLOPs per update (the PaLM convention: matmuls only, causal masking not
discounted, rematerialisation not counted)::

    F = 6 N_body S L  +  6 N_emb S T  +  12 n_layers H Dh L (S L)
        (blocks)         (LM head, response tokens only)   (q k^T and p v, fwd + bwd)

MFU = F / time / peak, with the peak measured in the same run: a 2048^3 `jnp.matmul`
in fp32 and in bf16 x bf16 -> fp32 (`preferred_element_type`). The bf16 rows run the
library's bf16 path (bf16 params, fp32 master weights and optimizer state). XLA's own
count (``compiled.cost_analysis()["flops"]``) is printed as a cross-check (it includes
elementwise work, and counts a loop body once, not once per iteration).

Run: ``python benchmarks/bench_mfu.py`` (``--smoke``: a tiny model in seconds).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

MODEL_100M = {
    "vocab": 32000,
    "hidden": 768,
    "layers": 12,
    "heads": 12,
    "kv_heads": 4,
    "inter": 2048,
}


def model_config(d: dict):
    from ttrl_jax.models.config import ModelConfig

    return ModelConfig(
        model_type="qwen2",
        vocab_size=d["vocab"],
        hidden_size=d["hidden"],
        intermediate_size=d["inter"],
        num_layers=d["layers"],
        num_heads=d["heads"],
        num_kv_heads=d["kv_heads"],
        head_dim=d["hidden"] // d["heads"],
        qkv_bias=True,
        tie_word_embeddings=True,
    )


def model_flops(cfg, n_body: int, n_emb: int, s: int, p: int, t: int) -> float:
    """F = 6 N_body S L + 6 N_emb S T + 12 n_layers H Dh L S L  (see the module doc)."""
    length = p + t
    attn = 12 * cfg.num_layers * cfg.num_heads * cfg.head_dim * length * (s * length)
    return 6.0 * n_body * s * length + 6.0 * n_emb * s * t + attn


def batch(cfg, s: int, p: int, t: int, seed: int = 0) -> dict:
    """A synthetic RL mini-batch: ``tokens [S, P+T]``, masks, log-probs, advantages."""
    import numpy as np

    rng = np.random.RandomState(seed)
    lp = (-np.log(cfg.vocab_size) + 0.1 * rng.randn(s, t)).astype(np.float32)  # [S, T]
    return {
        "tokens": rng.randint(4, cfg.vocab_size, (s, p + t)).astype(np.int32),
        "attn_mask": np.ones((s, p + t), np.int32),
        "resp_mask": np.ones((s, t), np.float32),
        "old_logprobs": lp,
        "ref_logprobs": lp,
        "advantages": np.repeat(rng.randn(s, 1).astype(np.float32), t, 1),
    }


def run_update(cfg, dtype: str, s: int, p: int, t: int, micro: int, remat: bool, repeats: int):
    """(seconds per update, XLA flop count, compile seconds) of the jitted train step."""
    import jax
    import jax.numpy as jnp

    from ttrl_jax.models import transformer as tfm
    from ttrl_jax.update import train_step as ts

    params = tfm.init_params(cfg, jax.random.key(0), dtype=jnp.dtype(dtype))
    tx = ts.make_optimizer(lambda c: 1e-6)
    opt = ts.MasterWeights(tx) if dtype == "bfloat16" else ts.Plain(tx)
    loss = ts.LossConfig(kl_as_loss=True, micro_batch_size=micro, remat=remat)
    step = ts.make_train_step(cfg, loss, opt)
    b = jax.tree.map(jnp.asarray, batch(cfg, s, p, t))
    hyper = {
        "temperature": jnp.float32(1.0),
        "kl_coef": jnp.float32(0.04),
        "entropy_coef": jnp.float32(0.0),
    }
    state = {"p": params, "o": opt.init(params)}
    t0 = time.perf_counter()
    compiled = step.lower(state["p"], state["o"], b, hyper).compile()
    compile_s = time.perf_counter() - t0
    cost = compiled.cost_analysis()
    cost = cost[0] if isinstance(cost, (list, tuple)) else cost
    xla_flops = float((cost or {}).get("flops", float("nan")))

    def go():
        state["p"], state["o"], m = compiled(state["p"], state["o"], b, hyper)
        jax.block_until_ready(m)

    return common.timed(go, repeats), xla_flops, compile_s


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--smoke", action="store_true", help="tiny model and batch, seconds")
    ap.add_argument("--seqs", type=int, default=8, help="S sequences per update")
    ap.add_argument("--prompt", type=int, default=64, help="P prompt tokens")
    ap.add_argument("--response", type=int, default=192, help="T response tokens")
    ap.add_argument("--repeats", type=int, default=2, help="timed calls (best is kept)")
    ap.add_argument("--dtypes", default="float32,bfloat16")
    ap.add_argument(
        "--variants",
        default="micro=0 remat=0,micro=0 remat=1,micro=4 remat=0",
        help="comma-separated 'micro=<seqs per micro-batch, 0 all> remat=<0|1>'",
    )
    a = ap.parse_args(argv)
    if a.smoke:
        d, a.seqs, a.prompt, a.response, a.repeats = common.SMOKE_QWEN2, 4, 16, 16, 1
        a.variants, a.dtypes = "micro=0 remat=0", "float32"
        n_mm = 256
    else:
        d, n_mm = MODEL_100M, 2048
    common.banner(f"bench_mfu: jitted policy update (fwd + bwd + AdamW){' (smoke)' * a.smoke}")
    import jax

    from ttrl_jax.models import transformer as tfm

    cfg = model_config(d)
    shapes = jax.eval_shape(functools.partial(tfm.init_params, cfg), jax.random.key(0))
    n_body = sum(x.size for x in jax.tree.leaves(shapes["layers"]))
    n_emb = shapes["embed"].size
    n_all = sum(x.size for x in jax.tree.leaves(shapes))
    s, p, t = a.seqs, a.prompt, a.response
    flops = model_flops(cfg, n_body, n_emb, s, p, t)
    print(
        f"model {d}: {n_all / 1e6:.1f}M params (blocks {n_body / 1e6:.1f}M, embedding / "
        f"tied LM head {n_emb / 1e6:.1f}M); update on S={s} x (P={p} + T={t}) tokens; "
        f"model FLOPs {flops / 1e12:.3f} TFLOP per update",
        flush=True,
    )
    peaks = {}
    for dt in a.dtypes.split(","):
        peaks[dt] = common.matmul_peak(dt, n_mm, 3)
    common.table(
        ["matmul peak", "GFLOP/s", "load"],
        [[f"{n_mm}^3 {dt}", g, f"{os.getloadavg()[0]:.2f}"] for dt, g in peaks.items()],
    )
    rows = []
    for dt in a.dtypes.split(","):
        for v in a.variants.split(","):
            kv = dict(x.split("=") for x in v.split())
            micro, remat = int(kv.get("micro", 0)), bool(int(kv.get("remat", 0)))
            if micro and s % micro:
                continue
            sec, xla, comp = run_update(cfg, dt, s, p, t, micro, remat, a.repeats)
            gflops = flops / sec / 1e9
            rows.append(
                [
                    dt,
                    micro or s,
                    int(remat),
                    sec,
                    gflops,
                    f"{100 * gflops / peaks[dt]:.0f}%",
                    xla / 1e12,
                    comp,
                    f"{os.getloadavg()[0]:.2f}",
                ]
            )
            print(f"  {dt} micro={micro or s} remat={int(remat)}: {sec:.2f} s", flush=True)
    common.table(
        [
            "dtype",
            "micro-batch",
            "remat",
            "s / update",
            "model GFLOP/s",
            "MFU (of matmul peak)",
            "XLA TFLOP",
            "compile s",
            "load",
        ],
        rows,
    )
    print(f"peak RSS {common.peak_rss_gib():.2f} GiB", flush=True)


if __name__ == "__main__":
    main()
