"""Rollout throughput: `ttrl_jax.rollout.sampling` vs `transformers.generate` (PyTorch CPU).

One process, identical weights: a tiny random Qwen2 (hidden 256, 4 layers, 4 heads, 2 kv
heads, intermediate 704, vocab 32000, tied embeddings, ~11M params) is written once with
`transformers.save_pretrained` and loaded by both. Workload: 8 prompts x 8 samples = 64
sequences, prompts of 32 tokens, 128 new tokens, temperature 1.0, full vocabulary, EOS
disabled on both sides (no stop ids for ours; ``min_new_tokens=128`` for `generate`), so
both produce exactly 64 x 128 tokens. Prints new tokens/s of each and the ratio, the
votes-per-prompt curve (M = 1, 8, 32, 64) for ours, and a profile of one decode step
(model forward, LM head, sampler).

Run: ``python benchmarks/bench_rollout.py`` (``--smoke`` for a tiny config in seconds,
``--dtype bfloat16`` for bf16 weights on both sides; ``--shape=qwen2.5-math-1.5b`` for
Qwen2.5-Math-1.5B's shape with random weights written by this library's exporter, ours
only: meant for a GPU).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import numpy as np


from common import (  # noqa: E402
    QWEN2P5_MATH_1P5B,
    SMOKE_QWEN2,
    TINY_QWEN2,
    banner,
    table,
    timed,
    write_qwen2,
    write_random_qwen2,
)


def run_ours(
    path, prompts, mask, m, new_tokens, dtype, repeats, head_dtype=None, eos=(), slots=None
):
    """Best wall time of `sampling.sample`; with ``eos`` also the tokens it produced (each
    sample's length, its stop token included)."""
    import jax

    from ttrl_jax import models
    from ttrl_jax.rollout import sampling

    model = models.load_hf(path, dtype=dtype)
    params, cfg = model.params(), model.config
    sp = sampling.sampling_params(temperature=1.0)
    key = jax.random.key(0)

    def go():
        out = sampling.sample(
            params,
            cfg,
            prompts,
            mask,
            key,
            num_samples=m,
            max_new_tokens=new_tokens,
            sampling=sp,
            eos_ids=eos,
            head_dtype=head_dtype,
            decode_slots=slots,
        )
        jax.block_until_ready(out)
        assert eos or int(out.lengths.min()) == new_tokens
        return out

    wall = timed(go, repeats)
    return (wall, int(np.asarray(go().lengths).sum())) if eos else wall


def run_hf(path, prompts, mask, m, new_tokens, dtype, repeats, eos=()):
    """Best wall time of `generate`; with ``eos`` (stop ids, no minimum length) also the
    tokens it produced (up to and including each row's first stop id)."""
    import torch
    from transformers import AutoModelForCausalLM

    torch.set_num_threads(2)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype)).eval()
    ids, att = torch.as_tensor(prompts, dtype=torch.long), torch.as_tensor(mask, dtype=torch.long)

    def go():
        with torch.no_grad():
            out = model.generate(
                input_ids=ids,
                attention_mask=att,
                do_sample=True,
                temperature=1.0,
                top_k=0,
                top_p=1.0,
                num_return_sequences=m,
                max_new_tokens=new_tokens,
                min_new_tokens=0 if eos else new_tokens,
                eos_token_id=list(eos) or None,
                pad_token_id=0,
            )
        assert eos or out.shape == (len(prompts) * m, prompts.shape[1] + new_tokens), out.shape
        return out

    wall = timed(go, repeats)
    if not eos:
        return wall
    gen = go()[:, prompts.shape[1] :].numpy()
    stop = np.isin(gen, list(eos))
    first = np.where(stop.any(1), stop.argmax(1) + 1, gen.shape[1])
    return wall, int(first.sum())


def profile_step(path, b, m, p, t, dtype, repeats=5):
    """Times one decode step's parts at cache length T=t: the blocks (attention + MLP, in a
    donated loop as in `decode`), the LM head matmul and the sampler."""
    import functools

    import jax
    import jax.numpy as jnp

    from ttrl_jax import models
    from ttrl_jax.models import transformer as tfm
    from ttrl_jax.rollout import engine, sampling

    model = models.load_hf(path, dtype=dtype)
    params, cfg = model.params(), model.config
    layers = engine.layer_params(params, cfg)
    dt = sampling.default_cache_dtype(dtype)
    nl, kh, dh = cfg.num_layers, cfg.num_kv_heads, cfg.head_dim
    cache = {
        "k": [jnp.zeros((b, m, kh, dh, t), dt) for _ in range(nl)],
        "v": [jnp.zeros((b, m, kh, t, dh), dt) for _ in range(nl)],
    }
    prefix = {
        "k": [jnp.ones((b, kh, p, dh), dt)] * nl,
        "v": [jnp.ones((b, kh, p, dh), dt)] * nl,
        "mask": jnp.ones((b, p), bool),
    }
    tok = jnp.ones((b, m), jnp.int32)
    sp = sampling.sampling_params()
    steps = 16

    @functools.partial(jax.jit, donate_argnums=(2,))
    def blocks(params, layers, cache):
        def body(i, c):
            _, c = sampling._decode_layers(params, layers, cfg, tok, tok + p + i, c, i, prefix)
            return c

        return jax.lax.fori_loop(0, steps, body, cache)

    @jax.jit
    def head(params, h):  # the carry dependence keeps each product inside the loop
        w = tfm.lm_head_weight(params, cfg)

        def body(i, h):
            z = jnp.einsum("bmd,dv->bmv", h, w, preferred_element_type=jnp.float32)
            return h + (1e-9 * z[..., : h.shape[-1]]).astype(h.dtype)

        return jax.lax.fori_loop(0, steps, body, h)

    @jax.jit
    def samp(z):
        rows = jnp.arange(b * m, dtype=jnp.uint32)

        def body(i, acc):
            keys = sampling.row_keys(jax.random.key(0), rows, i)
            tok, lp = sampling.sample_logits(z + 0.0 * acc, keys, sp)
            return acc + 1e-9 * jnp.sum(lp) + tok[0]

        return jax.lax.fori_loop(0, steps, body, jnp.float32(0))

    h = jnp.ones((b, m, cfg.hidden_size), jnp.dtype(dtype))
    z = jax.random.normal(jax.random.key(0), (b * m, cfg.vocab_size), jnp.float32)
    state = {"cache": blocks(params, layers, cache)}

    def run_blocks():
        state["cache"] = jax.block_until_ready(blocks(params, layers, state["cache"]))

    out = {}
    out["blocks (attention + MLP, cache write)"] = timed(run_blocks, repeats) / steps
    out["LM head matmul"] = timed(lambda: jax.block_until_ready(head(params, h)), repeats) / steps
    out["sampler (two-stage exact + log-prob)"] = (
        timed(lambda: jax.block_until_ready(samp(z)), repeats) / steps
    )
    return out


def w1_with_eos(tmp, prompts, mask, m, new, args, repeats, vocab):
    """W1 with real stop ids: the engine (default slots), the static decoder, `generate`."""
    eos = tuple(range(100, vocab, 100))
    rows = []
    n = len(prompts) * m
    s = max(1, n // 4)
    runs = (("static decoder (the default at T < 256)", 0), (f"engine, S={s} of {n}", s))
    for name, slots in runs + (("engine, S=B*M", n),):
        wall, n = run_ours(tmp, prompts, mask, m, new, args.dtype, repeats, eos=eos, slots=slots)
        rows.append([f"ttrl_jax.rollout.sampling, {name}", wall, n, n / wall])
    if not args.no_hf:
        wall, n = run_hf(tmp, prompts, mask, m, new, args.dtype, max(1, repeats // 2), eos=eos)
        rows.append([f"transformers.generate ({args.dtype})", wall, n, n / wall])
    return rows


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="tiny config, a few seconds")
    ap.add_argument("--dtype", default="float32", choices=["float32", "bfloat16"])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--no-hf", action="store_true", help="skip transformers.generate")
    ap.add_argument("--curve", default="1,8,32,64", help="votes-per-prompt values, '' to skip")
    ap.add_argument("--shape", default="tiny", choices=["tiny", "qwen2.5-math-1.5b"])
    args = ap.parse_args(argv)
    big = args.shape == "qwen2.5-math-1.5b"
    args.no_hf = args.no_hf or big  # torch here is a CPU build: no 1.5B generate in time
    if args.smoke:
        dims = dict(SMOKE_QWEN2)
        b, m, p, new, repeats, curve = 2, 4, 8, 16, 1, []  # CI: only check that it runs
    else:
        dims = dict(TINY_QWEN2)
        b, m, p, new, repeats = 8, 8, 32, 128, args.repeats
        curve = [int(x) for x in args.curve.split(",") if x]
    dims = dict(QWEN2P5_MATH_1P5B) if big else dims

    banner(f"rollout: ttrl_jax.rollout.sampling vs transformers.generate ({args.dtype})")
    with tempfile.TemporaryDirectory() as tmp:
        if big:
            write_random_qwen2(tmp, dtype=args.dtype, **dims)
        else:
            write_qwen2(tmp, dtype=args.dtype, **dims)
        rng = np.random.RandomState(0)
        prompts = rng.randint(2, dims["vocab"], (b, p)).astype(np.int32)
        mask = np.ones((b, p), np.int32)
        n_tok = b * m * new
        print(
            f"model {dims}; {b} prompts x {m} samples, prompt {p}, {new} new tokens, "
            f"temperature 1.0, full vocabulary, EOS disabled; best of {repeats} timed runs"
        )
        rows = []
        ours = run_ours(tmp, prompts, mask, m, new, args.dtype, repeats)
        rows.append([f"ttrl_jax.rollout.sampling ({args.dtype})", ours, n_tok / ours, ""])
        if args.dtype == "float32":
            mixed = run_ours(tmp, prompts, mask, m, new, args.dtype, repeats, "bfloat16")
            rows.append(["ttrl_jax.rollout.sampling, bf16 LM head", mixed, n_tok / mixed, ""])
        if not args.no_hf:
            hf = run_hf(tmp, prompts, mask, m, new, args.dtype, max(1, repeats // 2))
            rows.append([f"transformers.generate ({args.dtype})", hf, n_tok / hf, ""])
            for r in rows[:-1]:
                r[3] = f"{hf / r[1]:.1f}x"
        table(["implementation", "seconds", "new tokens/s", "speed-up vs transformers"], rows)
        curve_rows = []
        for mm in curve:
            tt = run_ours(
                tmp,
                prompts,
                mask,
                mm,
                new,
                args.dtype,
                max(1, repeats // 2) if mm >= 32 else repeats,
            )
            curve_rows.append([mm, b * mm, tt, b * mm * new / tt])
        if curve_rows:
            print("votes per prompt (one prefill per prompt, shared by its M samples):")
            table(["M", "rows", "seconds", "new tokens/s"], curve_rows)
        eos_rows = w1_with_eos(tmp, prompts, mask, m, new, args, repeats, dims["vocab"])
        print(
            "W1 with EOS on: stop ids = every id divisible by 100 (1 % of the vocabulary; "
            "a random model stops after a geometric number of tokens, capped at the limit); "
            "useful tokens = sample lengths, stop token included:"
        )
        table(["implementation", "seconds", "useful tokens", "useful tokens/s"], eos_rows)
        if not args.smoke:
            prof = profile_step(tmp, b, m, p, new, args.dtype)
            prof["whole rollout / (new tokens - 1)"] = ours / (new - 1)
            print(f"profile of one decode step ({b}x{m} rows, cache T={new}):")
            table(["part", "ms"], [[k, 1e3 * v] for k, v in prof.items()])
        print(f"load average at the end: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
