"""Rollouts: a jitted batched sampler built for majority voting.

For ``B`` left-padded prompts and ``M`` votes per prompt, `sample` returns tokens
``[B, M, T]``, the log-probs of the sampled tokens and the lengths, via two pure jitted
functions:

1. `prefill`: one `transformer.forward` over the prompts ``[B, 1, P]`` -- each prompt
   **once**; its k/v become a *shared prefix* (per layer ``[B, K, P, Dh]``) that the ``M``
   samples attend to without copies. The first token of each sample is drawn from the
   logits at the last prompt position.
2. `decode`: a `lax.while_loop` (state donated); iteration ``t`` feeds every sample's token
   ``t-1`` at position ``prompt_len + t - 1``, writes its k/v into slot ``t-1`` of the
   per-sample cache in place and draws token ``t``. It stops as soon as every sample has
   emitted one of its row's EOS ids or the length limit is reached.

Tokens are drawn by `token_sampling.sample_logits` (exact full-vocabulary two-stage inverse
CDF; top-k, top-p, greedy; traced knobs, so changing them never recompiles). The uniforms
of global row ``r = b M + m`` at step ``t`` come from ``fold_in(fold_in(key, r), t)``, so
the same key gives the same tokens on any mesh. Returned log-probs are those of the
temperature-scaled **full** softmax, what the trainer recomputes. Prompt and response
lengths are bucketed (`bucket`) so a run compiles a handful of programs.
"""

from __future__ import annotations

import functools
import operator
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax import sharding
from ttrl_jax.data.padding import bucket_length, pad_left_to
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig
from ttrl_jax.rollout.token_sampling import SamplingParams, row_keys, sample_logits, sampling_params

__all__ = [
    "DecodeState",
    "Rollout",
    "SamplingParams",
    "decode",
    "default_cache_dtype",
    "eos_table",
    "prefill",
    "row_keys",
    "sample",
    "sample_logits",
    "sampling_params",
]

Params = dict[str, Any]


class Rollout(NamedTuple):
    """What `sample` returns.

    Attributes:
      tokens: ``[B, M, T]`` int32; ``pad_id`` after a sample's EOS / length limit.
      logprobs: ``[B, M, T]`` f32 log p(token) under softmax(logits / tau); 0 on padding.
      lengths: ``[B, M]`` int32 generated tokens per sample, its EOS included.
      decode_steps: ``[]`` int32 decode-loop iterations run (the first token comes from
        the prefill, so at most ``T - 1``).
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    decode_steps: jax.Array


class DecodeState(NamedTuple):
    """The `decode` loop state (donated). Shapes: B prompts, M samples, T max tokens."""

    tokens: jax.Array  # [B, M, T] int32
    logprobs: jax.Array  # [B, M, T] f32
    lengths: jax.Array  # [B, M] int32
    done: jax.Array  # [B, M] bool, emitted an EOS or reached its row limit
    step: jax.Array  # [] int32, token columns filled so far
    limit: jax.Array  # [] int32, max token columns (<= T)
    row_limit: jax.Array  # [B, M] int32, each sample's own length limit (<= limit)
    cache: dict  # {"k": L x [B, M, K, Dh, T], "v": L x [B, M, K, T, Dh]}
    prefix: dict  # {"k", "v"}: L x [B, K, P, Dh], "mask": [B, P] bool
    prompt_len: jax.Array  # [B] int32
    eos_ids: jax.Array  # [B, E] int32 (-1 = unused slot)
    key: jax.Array  # PRNG key
    sampling: SamplingParams
    pad_id: jax.Array  # [] int32


# ------------------------------------------------------------------ host helpers


def eos_table(eos_ids, batch: int, multiple: int = 8) -> np.ndarray:
    """EOS ids as int32 ``[B, E]``: one shared sequence, or one per row.

    Unused slots hold -1; E is rounded up to ``multiple`` so that stop sets of different
    sizes share one compiled program.
    """
    eos_ids = list(eos_ids)
    rows = eos_ids if eos_ids and not np.isscalar(eos_ids[0]) else [eos_ids] * batch
    if len(rows) != batch:
        raise ValueError(f"{len(rows)} per-row EOS sets for a batch of {batch}")
    width = -(-max(len(e) for e in rows) // multiple) * multiple or multiple
    out = np.full((batch, width), -1, np.int32)
    for i, e in enumerate(rows):
        out[i, : len(e)] = e
    return out


# ------------------------------------------------------------ prefill / decode


def _is_eos(tok: jax.Array, eos_ids: jax.Array) -> jax.Array:
    return jnp.any(tok[..., None] == eos_ids[:, None, :], axis=-1)  # [B, M]


def _decode_layers(
    params: Params,
    layers: Sequence[Params],
    cfg: ModelConfig,
    tok: jax.Array,
    pos: jax.Array,
    cache: dict,
    w: jax.Array,
    prefix: dict,
    attn_block: int = 0,
):
    """One new token per sample through every block (the math of `transformer._block`).

    Own keys are stored transposed, per layer ``k: [B, M, K, Dh, T]``, ``v: [B, M, K, T, Dh]``,
    so both attention products are multiply-reduces reading the cache in place (on CPU
    batched ``[H/K, Dh] x [Dh, T]`` dots and layer slices of stacked arrays cost copies).
    Prefix and own slots ``s <= w`` share one softmax, in fp32::

        o = (sum_p e_p v_p + sum_s e_s v_s) / (sum_p e_p + sum_s e_s),  e = exp(q.k/sqrt(Dh) - max)

    With ``attn_block`` > 0 the own slots are read in blocks of that many, only the
    ``w // attn_block + 1`` blocks holding slots ``<= w`` (`_own_attention_blocked`:
    the same softmax, accumulated block by block), instead of all T every step.

    Args: ``tok``/``pos`` ``[B, M]`` tokens and positions, ``w`` the cache slot.
    Returns: final-normed hidden ``[B, M, D]`` and the updated cache.
    """
    b, m = tok.shape
    kh, r, dh = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
    inv_freq = jnp.asarray(tfm.rope_inv_freq(cfg))
    x = sharding.constrain(jnp.take(params["embed"], tok, axis=0), ("batch", None, None))
    own_ok = jnp.arange(cache["v"][0].shape[3]) <= w  # [T]
    pre_ok = prefix["mask"][:, None, None, None, :]  # [B, 1, 1, 1, P]
    f32 = jnp.float32
    new_k, new_v = [], []
    for i, lp in enumerate(layers):
        n = tfm.rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
        q = tfm.mm("bmd,dhe->bmhe", n, lp["wq"])  # [B, M, H, Dh]
        k = tfm.mm("bmd,dke->bmke", n, lp["wk"])  # [B, M, K, Dh]
        v = tfm.mm("bmd,dke->bmke", n, lp["wv"])
        if cfg.qkv_bias:
            q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
        q = tfm.apply_rope(q[:, :, None], pos[:, :, None], inv_freq)[:, :, 0]
        k = tfm.apply_rope(k[:, :, None], pos[:, :, None], inv_freq)[:, :, 0]
        q = q.reshape(b, m, kh, r, dh).astype(f32) * dh**-0.5  # [B, M, K, R, Dh]
        ck = jax.lax.dynamic_update_slice(
            cache["k"][i], k[..., None].astype(cache["k"][i].dtype), (0, 0, 0, 0, w)
        )  # [B, M, K, Dh, T]
        cv = jax.lax.dynamic_update_slice(
            cache["v"][i], v[:, :, :, None].astype(cache["v"][i].dtype), (0, 0, 0, w, 0)
        )  # [B, M, K, T, Dh]
        s_pre = jnp.einsum(
            "bmkrd,bkpd->bmkrp", q, prefix["k"][i], preferred_element_type=f32
        )  # [B, M, K, R, P]
        s_pre = jnp.where(pre_ok, s_pre, -jnp.inf)
        if attn_block:
            o, den = _own_attention_blocked(q, ck, cv, w, s_pre, prefix["v"][i], attn_block)
        else:
            s_own = jnp.sum(q[..., None] * ck[:, :, :, None].astype(f32), axis=-2)  # [B,M,K,R,T]
            s_own = jnp.where(own_ok, s_own, -jnp.inf)
            top = jnp.maximum(jnp.max(s_own, axis=-1), jnp.max(s_pre, axis=-1))[..., None]
            e_own, e_pre = jnp.exp(s_own - top), jnp.exp(s_pre - top)
            den = jnp.sum(e_own, axis=-1) + jnp.sum(e_pre, axis=-1)  # [B, M, K, R]
            o = jnp.sum(e_own[..., None] * cv[:, :, :, None].astype(f32), axis=-2) + jnp.einsum(
                "bmkrp,bkpd->bmkrd", e_pre, prefix["v"][i], preferred_element_type=f32
            )
        o = (o / den[..., None]).astype(x.dtype).reshape(b, m, kh * r, dh)  # [B, M, H, Dh]
        o = tfm.mm("bmhe,hed->bmd", o, lp["wo"])
        x = x + (o + lp["bo"] if cfg.o_bias else o)
        n = tfm.rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
        gate = tfm.mm("bmd,df->bmf", n, lp["w_gate"])
        up = tfm.mm("bmd,df->bmf", n, lp["w_up"])
        if cfg.mlp_bias:
            gate, up = gate + lp["b_gate"], up + lp["b_up"]
        down = tfm.mm("bmf,fd->bmd", jax.nn.silu(gate) * up, lp["w_down"])
        x = x + (down + lp["b_down"] if cfg.mlp_bias else down)
        new_k.append(ck)
        new_v.append(cv)
    return tfm.rms_norm(x, params["final_norm"], cfg.rms_norm_eps), {"k": new_k, "v": new_v}


def _own_attention_blocked(q, ck, cv, w, s_pre, prefix_v, blk: int):
    """Unnormalised attention output and its softmax denominator over the prefix and the
    own slots ``<= w``, reading only the live blocks of ``blk`` own slots (online softmax)::

        start: mx = max_p s_p,  den = sum_p e^(s_p - mx),  acc = sum_p e^(s_p - mx) v_p
        block j: mx' = max(mx, max_s s_s),  c = e^(mx - mx'),
                 den = c den + sum_s e^(s_s - mx'),  acc = c acc + sum_s e^(s_s - mx') v_s

    Args: ``q [B, M, K, R, Dh]`` (scaled, fp32), ``ck [B, M, K, Dh, T]``, ``cv [B, M, K, T,
    Dh]``, ``s_pre [B, M, K, R, P]`` masked prefix scores, ``prefix_v [B, K, P, Dh]``.
    Returns: ``(acc [B, M, K, R, Dh], den [B, M, K, R])``, fp32.
    """
    f32 = jnp.float32
    mx = jnp.max(s_pre, axis=-1)  # finite: every prompt has a real last token
    e_pre = jnp.exp(s_pre - mx[..., None])
    den = jnp.sum(e_pre, axis=-1)
    acc = jnp.einsum("bmkrp,bkpd->bmkrd", e_pre, prefix_v, preferred_element_type=f32)

    def block(j, carry):
        mx, den, acc = carry
        kb = jax.lax.dynamic_slice_in_dim(ck, j * blk, blk, axis=4)  # [B, M, K, Dh, blk]
        vb = jax.lax.dynamic_slice_in_dim(cv, j * blk, blk, axis=3)  # [B, M, K, blk, Dh]
        s = jnp.sum(q[..., None] * kb[:, :, :, None].astype(f32), axis=-2)  # [B, M, K, R, blk]
        s = jnp.where(j * blk + jnp.arange(blk) <= w, s, -jnp.inf)
        top = jnp.maximum(mx, jnp.max(s, axis=-1))
        c, e = jnp.exp(mx - top), jnp.exp(s - top[..., None])
        den = c * den + jnp.sum(e, axis=-1)
        acc = c[..., None] * acc + jnp.sum(e[..., None] * vb[:, :, :, None].astype(f32), axis=-2)
        return top, den, acc

    _, den, acc = jax.lax.fori_loop(0, w // blk + 1, block, (mx, den, acc))
    return acc, den


def attention_block_size(max_len: int, block: int | None = None) -> int:
    """The decode loop's own-cache block, checked against T (None or 0: read all T slots
    every step, the default).

    Blocked reads are opt-in: on the XLA CPU at T = 1024 with the 11M model (where the
    LM head, not the KV reads, dominates a step) they measured 0.88-0.93x the full
    read's speed (`benchmarks/bench_lengths.py`, BENCHMARKS.md); they are meant for
    long T with large KV caches, where reading the unfilled slots dominates."""
    block = block or 0
    if block and max_len % block:
        raise ValueError(f"attention block {block} does not divide max_len {max_len}")
    return block


def _layer_params(params: Params, cfg: ModelConfig) -> list[Params]:
    return [jax.tree.map(operator.itemgetter(i), params["layers"]) for i in range(cfg.num_layers)]


def _head(params: Params, cfg: ModelConfig, head_dtype) -> jax.Array:
    """The ``[D, V]`` LM-head weight, cast to ``head_dtype`` (None: as stored)."""
    w = tfm.lm_head_weight(params, cfg)
    return w if head_dtype is None else w.astype(head_dtype)


def head_logits(hidden: jax.Array, head: jax.Array) -> jax.Array:
    """fp32 logits ``[..., V]`` = hidden ``[..., D]`` @ head ``[D, V]`` (`tfm.head_logits`).

    The hidden state is cast to the head's dtype. With ``head_dtype=bfloat16`` and fp32
    params this is the usual "rollouts in bf16, training in fp32" split (vLLM in verl):
    on this CPU it halves the head's weight traffic and doubles its matmul peak (the head
    is about half of a decode step of the 11M-parameter benchmark model), but the sampled
    distribution is then the bf16-head one, so the trainer must recompute the old
    log-probs (``algo.old_logprobs=recompute``; the config enforces it).
    """
    return tfm.head_logits(hidden, head, head.dtype)


def default_cache_dtype(param_dtype) -> jnp.dtype:
    """The KV-cache dtype: the params' dtype, except float32 for bf16 on CPU, where XLA
    upcasts every bf16 dynamic-update-slice to f32 and so rewrites the whole cache each
    step (bf16 values are stored exactly in f32)."""
    if jnp.dtype(param_dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
        return jnp.dtype(jnp.float32)
    return jnp.dtype(param_dtype)


@functools.partial(
    jax.jit,
    static_argnames=(
        "cfg",
        "num_samples",
        "max_len",
        "unroll",
        "block",
        "cache_dtype",
        "head_dtype",
    ),
)
def prefill(
    params: Params,
    cfg: ModelConfig,
    prompt_tokens: jax.Array,
    prompt_mask: jax.Array,
    key: jax.Array,
    sampling: SamplingParams,
    eos_ids: jax.Array,
    pad_id: jax.Array,
    max_new_tokens: jax.Array,
    row_limit: jax.Array | None = None,
    *,
    num_samples: int,
    max_len: int,
    unroll: int | bool = True,
    block: int = 256,
    cache_dtype=None,
    head_dtype=None,
) -> DecodeState:
    """Prefills each prompt once and draws the first token of its ``M`` samples.

    Args:
      params, cfg: the model.
      prompt_tokens, prompt_mask: ``[B, P]`` left-padded int32 prompts and their 0/1 mask.
      key: PRNG key.
      sampling: `SamplingParams`.
      eos_ids: ``[B, E]`` int32 stop ids per row (-1 = unused slot), see `eos_table`.
      pad_id: ``[]`` int32 written after a sample ends.
      max_new_tokens: ``[]`` int32 length limit, ``1 <= max_new_tokens <= max_len``.
      row_limit: ``[B, M]`` int32 per-sample length limits (clipped to
        ``[1, max_new_tokens]``; None: ``max_new_tokens`` for every sample). A sample
        stops at its EOS or its limit, whichever comes first.
      num_samples, max_len: M and T (static; T is a bucket).
      unroll: layer-scan unroll of the prefill forward.
      block: vocabulary block of the two-stage draw (see `sample_logits`).
      cache_dtype: KV-cache dtype (default `default_cache_dtype` of the params).
      head_dtype: LM-head operand dtype, see `head_logits`.

    Returns:
      The initial `DecodeState` (step 1), to be passed to `decode`.
    """
    b, m, t = prompt_tokens.shape[0], num_samples, max_len
    mask = prompt_mask.astype(bool)  # [B, P]
    positions = tfm.positions_from_mask(mask)  # [B, P]
    hidden, kv = tfm.forward(
        params,
        cfg,
        prompt_tokens[:, None],
        positions[:, None],
        key_mask=mask[:, None],
        return_kv=True,
        unroll=unroll,
    )
    kh, dh = cfg.num_kv_heads, cfg.head_dim
    dt = jnp.dtype(cache_dtype or default_cache_dtype(kv["k"].dtype))
    pre_axes = ("batch", "kv_heads", "seq", "head_dim")
    to_prefix = lambda a: [
        sharding.constrain(jnp.swapaxes(a[i, :, 0], 1, 2).astype(dt), pre_axes)
        for i in range(cfg.num_layers)
    ]  # [B, K, P, Dh] per layer
    prefix = {"k": to_prefix(kv["k"]), "v": to_prefix(kv["v"]), "mask": mask}
    head = _head(params, cfg, head_dtype)  # [D, V]
    logits = head_logits(hidden[:, 0, -1], head)  # [B, V]
    z = jnp.broadcast_to(logits[:, None], (b, m, logits.shape[-1])).reshape(b * m, -1)
    z = sharding.constrain(z, ("batch", None))
    rows = jnp.arange(b * m, dtype=jnp.uint32)
    tok, logp = sample_logits(z, row_keys(key, rows, 0), sampling, block)
    tok, logp = tok.reshape(b, m), logp.reshape(b, m)  # [B, M]
    seq_axes = ("batch", "samples", None)
    tokens = jnp.full((b, m, t), pad_id, jnp.int32).at[:, :, 0].set(tok)  # [B, M, T]
    logprobs = jnp.zeros((b, m, t), jnp.float32).at[:, :, 0].set(logp)
    k_axes = ("batch", "samples", "kv_heads", "head_dim", "cache_seq")
    v_axes = ("batch", "samples", "kv_heads", "cache_seq", "head_dim")
    cache = {
        "k": [
            sharding.constrain(jnp.zeros((b, m, kh, dh, t), dt), k_axes)
            for _ in range(cfg.num_layers)
        ],  # [B, M, K, Dh, T] per layer
        "v": [
            sharding.constrain(jnp.zeros((b, m, kh, t, dh), dt), v_axes)
            for _ in range(cfg.num_layers)
        ],
    }  # [B, M, K, T, Dh] per layer
    limit = jnp.clip(max_new_tokens, 1, t).astype(jnp.int32)
    row_limit = limit if row_limit is None else jnp.clip(row_limit, 1, limit)
    row_limit = jnp.broadcast_to(row_limit, (b, m)).astype(jnp.int32)  # [B, M]
    return DecodeState(
        tokens=sharding.constrain(tokens, seq_axes),
        logprobs=sharding.constrain(logprobs, seq_axes),
        lengths=jnp.ones((b, m), jnp.int32),
        done=_is_eos(tok, eos_ids) | (row_limit <= 1),
        step=jnp.int32(1),
        limit=limit,
        row_limit=row_limit,
        cache=cache,
        prefix=prefix,
        prompt_len=jnp.sum(mask, axis=-1, dtype=jnp.int32),
        eos_ids=eos_ids.astype(jnp.int32),
        key=key,
        sampling=sampling,
        pad_id=jnp.asarray(pad_id, jnp.int32),
    )


@functools.partial(
    jax.jit,
    static_argnames=("cfg", "unstack_layers", "block", "head_dtype", "attn_block"),
    donate_argnames=("state",),
)
def decode(
    params: Params,
    cfg: ModelConfig,
    state: DecodeState,
    *,
    unstack_layers: bool = True,
    block: int = 256,
    head_dtype=None,
    attn_block: int | None = None,
) -> DecodeState:
    """Runs the decode `lax.while_loop` until every sample is done or the limit is hit.

    Iteration ``t`` (``1 <= t < limit``) feeds token ``t-1`` of every sample at position
    ``prompt_len + t - 1``, writes its k/v into cache slot ``t-1`` and draws token ``t``.
    ``state`` is donated: the cache and token buffers are updated in place.

    Args:
      unstack_layers: slice the stacked layer weights once before the loop (fast on CPU,
        one extra copy of the layer weights while decoding) instead of once per step.
      head_dtype: LM-head operand dtype, see `head_logits`.
      attn_block: own-cache block of the attention reads (`attention_block_size`; None
        or 0: every step reads all T slots).

    Returns:
      The final `DecodeState`; ``step - 1`` is the number of iterations run.
    """
    b, m, t = state.tokens.shape
    attn_block = attention_block_size(t, attn_block)
    rows = jnp.arange(b * m, dtype=jnp.uint32)
    head = _head(params, cfg, head_dtype)  # [D, V], cast once outside the loop
    outer = _layer_params(params, cfg) if unstack_layers else None

    def cond(s: DecodeState):
        return (s.step < s.limit) & ~jnp.all(s.done)

    def body(s: DecodeState):
        w = s.step - 1
        last = jax.lax.dynamic_index_in_dim(s.tokens, w, axis=2, keepdims=False)  # [B, M]
        pos = jnp.broadcast_to(s.prompt_len[:, None] + w, last.shape)
        layers = outer if unstack_layers else _layer_params(params, cfg)
        hidden, cache = _decode_layers(
            params, layers, cfg, last, pos, s.cache, w, s.prefix, attn_block
        )
        logits = head_logits(hidden, head).reshape(b * m, -1)  # [B*M, V]
        logits = sharding.constrain(logits, ("batch", None))
        tok, logp = sample_logits(logits, row_keys(s.key, rows, s.step), s.sampling, block)
        tok = jnp.where(s.done, s.pad_id, tok.reshape(b, m))  # [B, M]
        logp = jnp.where(s.done, 0.0, logp.reshape(b, m))
        lengths = s.lengths + (~s.done).astype(jnp.int32)  # [B, M]
        return s._replace(
            tokens=jax.lax.dynamic_update_slice_in_dim(s.tokens, tok[..., None], s.step, axis=2),
            logprobs=jax.lax.dynamic_update_slice_in_dim(s.logprobs, logp[..., None], s.step, 2),
            lengths=lengths,
            done=s.done | _is_eos(tok, s.eos_ids) | (lengths >= s.row_limit),
            step=s.step + 1,
            cache=cache,
        )

    return jax.lax.while_loop(cond, body, state)


def _host_readable(x) -> bool:
    """Whether ``x`` can be read here (not a tracer, not a multi-host global array)."""
    if isinstance(x, jax.core.Tracer):
        return False
    return not isinstance(x, jax.Array) or x.is_fully_addressable


def sample(
    params: Params,
    cfg: ModelConfig,
    prompt_tokens,
    prompt_mask,
    key: jax.Array,
    *,
    num_samples: int,
    max_new_tokens: int,
    sampling: SamplingParams | None = None,
    eos_ids: Sequence = (),
    pad_id: int = 0,
    max_len: int | None = None,
    prompt_len: int | None = None,
    unstack_layers: bool = True,
    block: int = 256,
    cache_dtype=None,
    head_dtype=None,
    row_limits=None,
    attn_block: int | None = None,
) -> Rollout:
    """Draws ``M = num_samples`` completions of every prompt (prefill once, then decode).

    Args:
      params, cfg: the model (``model.params()``, ``model.config``).
      prompt_tokens: ``[B, P]`` int32 left-padded prompts (under a mesh: sharded over the
        batch axes, e.g. with `sharding.shard_batch`, and call inside ``jax.set_mesh``).
      prompt_mask: ``[B, P]`` 1 on real tokens; every row needs its last column real.
      key: PRNG key; same key -> same tokens, on any mesh.
      num_samples: M, votes per prompt.
      max_new_tokens: the length limit (traced: values within one bucket share a program).
      sampling: `SamplingParams` (default: temperature 1, full vocabulary).
      eos_ids: stop ids shared by all rows, or one sequence per row (may be empty).
      pad_id: written after a sample's end.
      max_len: T; default the power-of-two bucket of ``max_new_tokens`` (at least 16).
      prompt_len: pad P up to this (default its power-of-two bucket, at least 32); P if
        P is larger.
      unstack_layers: see `decode`.
      block: vocabulary block size of the exact two-stage draw.
      cache_dtype: KV-cache dtype (default: `default_cache_dtype`).
      head_dtype: LM-head operand dtype (default: the params'); see `head_logits`.
      row_limits: optional ``[B, M]`` per-sample length limits in ``[1,
        max_new_tokens]`` (per-prompt budgets); a sample's tokens do not depend on its
        own or any other sample's limit, only where it stops.
      attn_block: own-cache block of the decode attention (see `decode`).

    Returns:
      A `Rollout` with ``[B, M, T]`` tokens / log-probs and ``[B, M]`` lengths.
    """
    b, p = prompt_tokens.shape
    if num_samples < 1 or max_new_tokens < 1:
        raise ValueError(
            f"need num_samples >= 1 and max_new_tokens >= 1, got {num_samples}, {max_new_tokens}"
        )
    t = max_len or bucket_length(max_new_tokens, rule="pow2", multiple=16)
    if max_new_tokens > t:
        raise ValueError(f"max_new_tokens={max_new_tokens} exceeds max_len={t}")
    if _host_readable(prompt_mask) and not np.all(np.asarray(prompt_mask[:, -1])):
        raise ValueError("prompts must be left-padded: the last column of prompt_mask must be 1")
    width = max(p, prompt_len or bucket_length(p, rule="pow2", multiple=32))
    if width != p:
        prompt_tokens, prompt_mask = pad_left_to(prompt_tokens, prompt_mask, width, pad_id)
    sampling = sampling_params() if sampling is None else sampling
    if row_limits is not None:
        row_limits = np.asarray(row_limits, np.int32)
        if row_limits.shape != (b, num_samples):
            raise ValueError(f"row_limits has shape {row_limits.shape}, not {(b, num_samples)}")
        if row_limits.min() < 1 or row_limits.max() > max_new_tokens:
            raise ValueError(f"row_limits must lie in [1, max_new_tokens={max_new_tokens}]")
    state = prefill(
        params,
        cfg,
        prompt_tokens,
        prompt_mask,
        key,
        sampling,
        eos_table(eos_ids, b),
        np.int32(pad_id),
        np.int32(max_new_tokens),
        row_limits,
        num_samples=num_samples,
        max_len=t,
        block=block,
        cache_dtype=cache_dtype,
        head_dtype=head_dtype,
    )
    state = decode(
        params,
        cfg,
        state,
        unstack_layers=unstack_layers,
        block=block,
        head_dtype=head_dtype,
        attn_block=attn_block,
    )
    return Rollout(state.tokens, state.logprobs, state.lengths, state.step - 1)
