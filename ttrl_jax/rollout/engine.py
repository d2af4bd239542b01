"""The length-aware decode engine: ``S`` slots over a queue of the step's samples.

The static decoder (`sampling.decode`) keeps all ``N = B M`` samples in one batch until
the longest is done, so with mixed lengths most of its slot-steps produce padding. Here
decoding runs ``S`` *slots* over a queue of the ``N`` (prompt, vote) pairs, all inside
one jitted `lax.while_loop` (continuous batching, with static shapes):

* `start` prefills each prompt once (its k/v become the *shared prefix* of its ``M``
  votes) and draws token 0 of every sample from its prompt's last-position logits; the
  samples not already finished by token 0 form the queue, in global-id order, and the
  first ``S`` of them take the slots.
* Each iteration of `run` feeds every live slot's last token at its own position through
  the model (the same `transformer._block` as training, with a cache-reading ``attend``),
  writes its k/v into the slot's cache row at the slot's own length and draws the next
  token. A slot whose sample emits one of its row's EOS ids or reaches its length limit
  hands over, in the same iteration, to the next pending sample: the new sample's token
  0 was drawn at the start, its position restarts at its prompt length and it reuses the
  slot's cache row from slot 0 (older entries are masked by the slot's length). The loop
  ends when the queue is empty and every slot is idle.
* `decode_all` runs that loop in phases: once the queue is empty and at most half the
  slots are live, the live ones move to a state of half the slots (`shrink`), so the
  tail of a heavy-tailed length mix does not keep computing idle slots.

Randomness is keyed by (global sample id ``g = b M + m``, token index ``t``):
``fold_in(fold_in(key, g), t)``, as in the static decoder, never by slot, so a sample's
tokens do not depend on ``S``, on the refill order or on the mesh (up to float rounding
of different batch shapes). Memory: the response cache is ``S x T`` per layer instead
of ``N x T``; the outputs stay ``[N, T]`` token ids and log-probs.

Attention (`cache_attention`) reads the shared prefix and the own slots ``<= w`` of each
row in fp32 with one softmax; with ``attn_block`` > 0 it reads the own cache in blocks:
the static decoder the ``max(w) // attn_block + 1`` blocks that its longest row can see,
the engine each group of `RAGGED_GROUP` slots (ranked by length) only its own live
blocks, so a slot's read follows its own sample's length (`_own_attention_ragged`).
With ``attn_kernel="pallas"`` (the default on GPUs, `pallas_attention.resolve`) the
engine reads its own cache through jax's Pallas decode-attention kernel instead, each
row up to its own length (`pallas_attention.own_attention`).
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
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig
from ttrl_jax.rollout import pallas_attention
from ttrl_jax.rollout.token_sampling import SamplingParams, row_keys, sample_logits

Params = dict[str, Any]


# ------------------------------------------------------------------ shared helpers


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


def is_eos(tok: jax.Array, eos_ids: jax.Array) -> jax.Array:
    """``tok [R, ...]`` against the stop ids of each row ``eos_ids [R, E]`` -> bool."""
    ids = eos_ids.reshape(eos_ids.shape[:1] + (1,) * (tok.ndim - 1) + eos_ids.shape[1:])
    return jnp.any(tok[..., None] == ids, axis=-1)


def default_cache_dtype(param_dtype) -> jnp.dtype:
    """The KV-cache dtype: the params' dtype, except float32 for bf16 on CPU, where XLA
    upcasts every bf16 dynamic-update-slice to f32 and so rewrites the whole cache each
    step (bf16 values are stored exactly in f32)."""
    if jnp.dtype(param_dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
        return jnp.dtype(jnp.float32)
    return jnp.dtype(param_dtype)


def head_weight(params: Params, cfg: ModelConfig, head_dtype) -> jax.Array:
    """The ``[D, V]`` LM-head weight, cast to ``head_dtype`` (None: as stored)."""
    w = tfm.lm_head_weight(params, cfg)
    return w if head_dtype is None else w.astype(head_dtype)


def head_logits(hidden: jax.Array, head: jax.Array) -> jax.Array:
    """fp32 logits ``[..., V]`` = hidden ``[..., D]`` @ head ``[D, V]`` (`tfm.head_logits`).

    The hidden state is cast to the head's dtype. With ``head_dtype=bfloat16`` and fp32
    params this is the usual "rollouts in bf16, training in fp32" split (vLLM in verl),
    but the sampled distribution is then the bf16-head one, so the trainer must recompute
    the old log-probs (``algo.old_logprobs=recompute``; the config enforces it).
    """
    return tfm.head_logits(hidden, head, head.dtype)


def layer_params(params: Params, cfg: ModelConfig) -> list[Params]:
    """The stacked layer weights as one dict per layer."""
    return [jax.tree.map(operator.itemgetter(i), params["layers"]) for i in range(cfg.num_layers)]


def attention_block_size(max_len: int, block: int | None = None) -> int:
    """The own-cache block of the decode attention, checked against T (None or 0: read
    all T slots every step).

    On the XLA CPU at T = 1024 with the 11M model, blocks of 128 bounded by the longest
    row measured 0.94-1.02x the full read's speed in the static decoder; the engine's
    ragged reads (each group of `RAGGED_GROUP` slots bounded by its own longest) 1.13-1.30x
    (`benchmarks/bench_lengths.py`, BENCHMARKS.md)."""
    block = block or 0
    if block and max_len % block:
        raise ValueError(f"attention block {block} does not divide max_len {max_len}")
    return block


# ------------------------------------------------------------- cache attention


def _softmax_block(q, kb, vb, ok, carry):
    """One block of the online softmax over own slots ``s`` (scores ``q . k_s``)::

        mx' = max(mx, max_s s_s),  c = e^(mx - mx'),
        den = c den + sum_s e^(s_s - mx'),  acc = c acc + sum_s e^(s_s - mx') v_s

    Args: ``q [..., K, R, Dh]`` (scaled, fp32), the block's ``kb [..., K, Dh, blk]`` and
    ``vb [..., K, blk, Dh]``, ``ok`` (broadcasts to ``[..., K, R, blk]``) marking the
    slots a row may see, ``carry = (mx, den [..., K, R], acc [..., K, R, Dh])``.
    Returns the updated carry.
    """
    f32 = jnp.float32
    mx, den, acc = carry
    s = jnp.sum(q[..., None] * kb[..., None, :, :].astype(f32), axis=-2)  # [..., K, R, blk]
    s = jnp.where(ok, s, -jnp.inf)
    top = jnp.maximum(mx, jnp.max(s, axis=-1))
    c, e = jnp.exp(mx - top), jnp.exp(s - top[..., None])
    den = c * den + jnp.sum(e, axis=-1)
    acc = c[..., None] * acc + jnp.sum(e[..., None] * vb[..., None, :, :].astype(f32), axis=-2)
    return top, den, acc


def _own_attention_blocked(q, ck, cv, w, mx, den, acc, blk: int, n_blocks):
    """Online-softmax accumulation (`_softmax_block`) over the own slots ``<= w`` in
    blocks of ``blk``, ``n_blocks`` of them for every row.

    Args: ``q [B, G, K, R, Dh]`` (scaled, fp32), ``ck [B, G, K, Dh, T]``, ``cv [B, G, K,
    T, Dh]``, ``w [B, G]``; the prefix's ``mx, den [B, G, K, R]``, ``acc [..., Dh]``.
    """
    w = w[:, :, None, None, None]

    def block(j, carry):
        kb = jax.lax.dynamic_slice_in_dim(ck, j * blk, blk, axis=4)  # [B, G, K, Dh, blk]
        vb = jax.lax.dynamic_slice_in_dim(cv, j * blk, blk, axis=3)  # [B, G, K, blk, Dh]
        return _softmax_block(q, kb, vb, j * blk + jnp.arange(blk) <= w, carry)

    _, den, acc = jax.lax.fori_loop(0, n_blocks, block, (mx, den, acc))
    return acc, den


# Rows per group of the engine's ragged reads (`_own_attention_ragged`). On the XLA CPU
# (2 cores, T = 1024, 32 slots at W3's length mix, one layer) a group of 1 / 2 / 4 / 8
# / 16 rows read the own cache in 2.9 / 2.5 / 2.7 / 3.8 / 5.3 ms against 3.9-4.2 ms for
# all T slots: small groups follow each row's length, larger ones do fewer, larger
# gathers. On W3's whole workload at S = 64, groups of 4 took 31.4 s against 33.7 s
# for groups of 2 (BENCHMARKS.md has the table at 4).
RAGGED_GROUP = 4


def _own_attention_ragged(q, ck, cv, w, mx, den, acc, blk: int, group: int):
    """`_own_attention_blocked` with a read bound per group of rows instead of one for
    all: rows are ranked by ``w`` (longest first) and cut into groups of ``group``; group
    ``i`` reads only its own live blocks, ``max(w over i) // blk + 1`` of them, gathering
    its rows' block ``j`` from the cache. The reads follow each row's own length (a ragged
    read, to within a group and a block) instead of the longest live row's.

    Args: ``q [N, K, R, Dh]`` (scaled, fp32), ``ck [N, K, Dh, T]``, ``cv [N, K, T, Dh]``,
    ``w [N]``; the prefix's ``mx, den [N, K, R]``, ``acc [..., Dh]``.
    Returns ``acc [N, K, R, Dh], den [N, K, R]`` in the rows' own order.
    """
    n, kh, dh, _ = ck.shape
    order = jnp.argsort(-w, stable=True)  # [N] longest first
    out_acc, out_den = [], []
    for i in range(0, n, group):
        rows = order[i : i + group]  # [g]
        wg = w[rows][:, None, None, None]  # [g, 1, 1, 1]
        qg = q[rows]  # [g, K, R, Dh]

        def block(j, carry, rows=rows, wg=wg, qg=qg):
            take_k = lambda r: jax.lax.dynamic_slice(ck, (r, 0, 0, j * blk), (1, kh, dh, blk))
            take_v = lambda r: jax.lax.dynamic_slice(cv, (r, 0, j * blk, 0), (1, kh, blk, dh))
            kb = jax.vmap(take_k)(rows)[:, 0]  # [g, K, Dh, blk]
            vb = jax.vmap(take_v)(rows)[:, 0]  # [g, K, blk, Dh]
            return _softmax_block(qg, kb, vb, j * blk + jnp.arange(blk) <= wg, carry)

        n_blocks = w[rows[0]] // blk + 1  # the group's longest row comes first
        _, d, a = jax.lax.fori_loop(0, n_blocks, block, (mx[rows], den[rows], acc[rows]))
        out_acc.append(a)
        out_den.append(d)
    back = jnp.argsort(order)  # [N] each row's place in the ranked order
    return jnp.concatenate(out_acc)[back], jnp.concatenate(out_den)[back]


def cache_attention(
    q,
    ck,
    cv,
    w,
    prefix_k,
    prefix_v,
    prefix_mask,
    attn_block=0,
    n_blocks=None,
    ragged=0,
    kernel="xla",
):
    """One query per row against its prompt's shared prefix and its own cache slots.

    For row ``(b, g)`` with query ``q`` (scaled by ``1/sqrt(Dh)``), prefix keys ``k_p``
    (``prefix_mask[b, p]``) and own keys ``k_s``, ``s <= w[b, g]``, one softmax in fp32::

        o = (sum_p e_p v_p + sum_s e_s v_s) / (sum_p e_p + sum_s e_s),  e = exp(q.k - max)

    Own keys are stored transposed (``ck [B, G, K, Dh, T]``, ``cv [B, G, K, T, Dh]``), so
    both products are multiply-reduces reading the cache in place (on the CPU, batched
    ``[R, Dh] x [Dh, T]`` dots and layer slices of stacked arrays cost copies). With
    ``kernel="pallas"`` the own keys are ``[B, G, K, T, Dh]`` and the own sums come from
    the Pallas decode kernel (`pallas_attention.own_attention`), merged with the prefix's
    as in the blocked read.

    Args:
      q: ``[B, G, K, R, Dh]`` fp32 scaled queries.
      ck, cv: the own caches, new entries already written.
      w: ``[B, G]`` int32, the last own slot each row may see.
      prefix_k, prefix_v: ``[B, K, P, Dh]``; prefix_mask ``[B, P]`` bool (every row has a
        real prefix token, so the max is finite).
      attn_block: 0 reads all T own slots; else blocks of this many (`attention_block_size`),
        ``n_blocks`` of them (at least ``max(w) // attn_block + 1``) for every row, or
        with ``ragged`` > 0 each group of ``ragged`` rows its own live blocks
        (`_own_attention_ragged`; ``n_blocks`` unused).
      kernel: ``"xla"`` (the reads above) or ``"pallas"`` (``attn_block`` unused).

    Returns:
      ``[B, G, K, R, Dh]`` fp32.
    """
    f32 = jnp.float32
    s_pre = jnp.einsum("bgkrd,bkpd->bgkrp", q, prefix_k, preferred_element_type=f32)
    s_pre = jnp.where(prefix_mask[:, None, None, None, :], s_pre, -jnp.inf)  # [B, G, K, R, P]
    pre_spec = "bgkrp,bkpd->bgkrd"
    rows = lambda a: a.reshape((-1,) + a.shape[2:])  # the B G rows as one axis
    if kernel == "pallas" or attn_block:  # the prefix's online-softmax carry first
        mx = jnp.max(s_pre, axis=-1)  # [B, G, K, R]
        e_pre = jnp.exp(s_pre - mx[..., None])
        acc = jnp.einsum(pre_spec, e_pre, prefix_v, preferred_element_type=f32)
        den = jnp.sum(e_pre, axis=-1)
    if kernel == "pallas":
        o_own, l_own, m_own = pallas_attention.own_attention(
            rows(q), rows(ck), rows(cv), w.reshape(-1)
        )  # [B G, K, R, Dh], [B G, K, R] x 2
        m_own, l_own = m_own.reshape(mx.shape), l_own.reshape(mx.shape)
        top = jnp.maximum(mx, m_own)
        c_pre, c_own = jnp.exp(mx - top), jnp.exp(m_own - top)  # [B, G, K, R]
        o = c_pre[..., None] * acc + c_own[..., None] * o_own.reshape(q.shape)
        den = c_pre * den + c_own * l_own
    elif attn_block:
        if ragged:
            own = (rows(q), rows(ck), rows(cv), w.reshape(-1))
            o, den = _own_attention_ragged(
                *own, rows(mx), rows(den), rows(acc), attn_block, ragged
            )
            o, den = o.reshape(q.shape), den.reshape(q.shape[:-1])
        else:
            o, den = _own_attention_blocked(q, ck, cv, w, mx, den, acc, attn_block, n_blocks)
    else:
        own_ok = jnp.arange(cv.shape[3]) <= w[:, :, None, None, None]  # [B, G, 1, 1, T]
        s_own = jnp.sum(q[..., None] * ck[:, :, :, None].astype(f32), axis=-2)  # [B,G,K,R,T]
        s_own = jnp.where(own_ok, s_own, -jnp.inf)
        top = jnp.maximum(jnp.max(s_own, axis=-1), jnp.max(s_pre, axis=-1))[..., None]
        e_own, e_pre = jnp.exp(s_own - top), jnp.exp(s_pre - top)
        den = jnp.sum(e_own, axis=-1) + jnp.sum(e_pre, axis=-1)  # [B, G, K, R]
        o = jnp.sum(e_own[..., None] * cv[:, :, :, None].astype(f32), axis=-2) + jnp.einsum(
            pre_spec, e_pre, prefix_v, preferred_element_type=f32
        )
    return o / den[..., None]


def write_cache(ck, cv, k, v, w, kernel="xla"):
    """Writes ``k, v [B, G, K, Dh]`` into slot ``w [B, G]`` of each row's cache (in place
    under donation): ``ck[b, g, :, :, w] = k[b, g]`` (``ck[b, g, :, w, :]`` in the
    Pallas layout, ``kernel="pallas"``), ``cv[b, g, :, w, :] = v[b, g]``."""
    b, g = w.shape
    bi, gi = jnp.arange(b)[:, None], jnp.arange(g)[None, :]
    if kernel == "pallas":
        ck = ck.at[bi, gi, :, w, :].set(k.astype(ck.dtype))
    else:
        ck = ck.at[bi, gi, :, :, w].set(k.astype(ck.dtype))
    cv = cv.at[bi, gi, :, w, :].set(v.astype(cv.dtype))
    return ck, cv


def decode_layers(
    params: Params,
    layers: Sequence[Params],
    cfg: ModelConfig,
    tok: jax.Array,
    pos: jax.Array,
    w: jax.Array,
    cache: dict,
    prefix: dict,
    attn_block: int = 0,
    n_blocks=None,
    ragged: int = 0,
    kernel: str = "xla",
):
    """One new token per row through every block (`transformer._block`).

    Args:
      tok, pos, w: ``[B, G]`` tokens, rotary positions and the cache slot each row writes.
      cache: ``{"k": L x [B, G, K, Dh, T], "v": L x [B, G, K, T, Dh]}`` (keys ``[B, G,
        K, T, Dh]`` with ``kernel="pallas"``).
      prefix: ``{"k", "v": L x [B, K, P, Dh], "mask": [B, P]}``, each row's prompt.
      attn_block, n_blocks, ragged, kernel: see `cache_attention`.

    Returns:
      final-normed hidden ``[B, G, D]`` and the updated cache.
    """
    inv_freq = jnp.asarray(tfm.rope_inv_freq(cfg))
    x = jnp.take(params["embed"], tok, axis=0)[:, :, None]  # [B, G, 1, D]
    x = sharding.constrain(x, ("batch", None, None, None))
    new_k, new_v = [], []
    for i, lp in enumerate(layers):

        def attend(q, k, v, i=i):
            ck, cv = write_cache(
                cache["k"][i], cache["v"][i], k[:, :, 0], v[:, :, 0], w, kernel
            )
            qs = q[:, :, 0].astype(jnp.float32) * cfg.head_dim**-0.5  # [B, G, K, R, Dh]
            pk, pv = prefix["k"][i], prefix["v"][i]
            o = cache_attention(
                qs, ck, cv, w, pk, pv, prefix["mask"], attn_block, n_blocks, ragged, kernel
            )
            return o.astype(q.dtype)[:, :, None], (ck, cv)

        x, (ck, cv) = tfm._block(cfg, lp, x, pos[:, :, None], inv_freq, attend)
        new_k.append(ck)
        new_v.append(cv)
    hidden = tfm.rms_norm(x[:, :, 0], params["final_norm"], cfg.rms_norm_eps)
    return hidden, {"k": new_k, "v": new_v}


# ------------------------------------------------------------------- prefill


def empty_cache(
    cfg: ModelConfig, rows: tuple[int, int], t: int, dt, axes, kernel: str = "xla"
) -> dict:
    """Zeroed per-layer caches ``k [*rows, K, Dh, T]`` (``[*rows, K, T, Dh]`` for
    ``kernel="pallas"``), ``v [*rows, K, T, Dh]``."""
    kh, dh = cfg.num_kv_heads, cfg.head_dim
    v_axes = axes + ("kv_heads", "cache_seq", "head_dim")
    k_axes = v_axes if kernel == "pallas" else axes + ("kv_heads", "head_dim", "cache_seq")
    k_shape = (kh, t, dh) if kernel == "pallas" else (kh, dh, t)
    zeros = lambda shape, ax: sharding.constrain(jnp.zeros(rows + shape, dt), ax)
    return {
        "k": [zeros(k_shape, k_axes) for _ in range(cfg.num_layers)],
        "v": [zeros((kh, t, dh), v_axes) for _ in range(cfg.num_layers)],
    }


# -------------------------------------------------------------------- engine


class DecodeState(NamedTuple):
    """The static decoder's loop state (`sampling.decode`, donated). Shapes: B prompts,
    M samples, T max tokens."""

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


class SlotState(NamedTuple):
    """The engine's loop state (donated). N = B M samples, S slots, T max tokens."""

    tokens: jax.Array  # [N, T] int32 outputs (pad after a sample's end)
    logprobs: jax.Array  # [N, T] f32
    lengths: jax.Array  # [N] int32 tokens generated, EOS included
    sid: jax.Array  # [S] int32 sample in each slot (N = idle)
    pos: jax.Array  # [S] int32 tokens its sample has so far (>= 1)
    queue: jax.Array  # [N] int32 pending sample ids, in order (first n_queue valid)
    n_queue: jax.Array  # [] int32
    head: jax.Array  # [] int32 next queue entry to hand out
    steps: jax.Array  # [] int32 loop iterations run
    slot_steps: jax.Array  # [] int32 slots x iterations run (the work done)
    cache: dict  # {"k": L x [S, 1, K, Dh, T] ([S, 1, K, T, Dh]: Pallas), "v": [S, 1, K, T, Dh]}
    prefix: dict  # {"k", "v"}: L x [B, K, P, Dh], "mask": [B, P]
    prompt_len: jax.Array  # [B] int32
    row_limit: jax.Array  # [N] int32 per-sample length limits
    eos_ids: jax.Array  # [B, E] int32
    key: jax.Array
    sampling: SamplingParams
    pad_id: jax.Array  # [] int32


_SLOT_AXES = ("batch", None)  # the slot axis is split over the data axes


@functools.partial(
    jax.jit,
    static_argnames=(
        "cfg",
        "num_samples",
        "max_len",
        "slots",
        "unroll",
        "block",
        "cache_dtype",
        "head_dtype",
        "attn_kernel",
    ),
)
def start(
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
    slots: int = 0,
    unroll: int | bool = True,
    block: int = 256,
    cache_dtype=None,
    head_dtype=None,
    attn_kernel: str = "xla",
) -> DecodeState | SlotState:
    """Prefills each prompt once, draws token 0 of its ``M`` samples from the logits at
    its last position (sample ``g = b M + m`` with row key ``(g, 0)``) and sets up the
    decode state: the engine's `SlotState` with the first ``slots`` queued samples in
    its slots, or with ``slots=0`` the static decoder's `DecodeState` (`sampling.prefill`).

    Args:
      params, cfg: the model.
      prompt_tokens, prompt_mask: ``[B, P]`` left-padded int32 prompts and their 0/1 mask.
      key: PRNG key.
      sampling: `SamplingParams`.
      eos_ids: ``[B, E]`` int32 stop ids per prompt (-1 = unused), see `eos_table`.
      pad_id: ``[]`` int32 written after a sample ends.
      max_new_tokens: ``[]`` int32 length limit in ``[1, max_len]``.
      row_limit: optional ``[B, M]`` int32 per-sample limits (clipped to ``[1,
        max_new_tokens]``); a sample stops at its EOS or its limit, whichever comes first.
      num_samples, max_len, slots: M, T (a bucket) and S (static).
      unroll: layer-scan unroll of the prefill forward.
      block: vocabulary block of the two-stage draw (see `sample_logits`).
      cache_dtype: KV-cache dtype (default `default_cache_dtype` of the params).
      head_dtype: LM-head operand dtype, see `head_logits`.
      attn_kernel: the engine's own-cache read, ``"xla"`` or ``"pallas"`` (it sets the
        key cache's layout, `empty_cache`; the static decoder reads with XLA).

    Returns:
      The initial state, for `run` / `decode_all` (slots) or `sampling.decode` (static).
    """
    b, m, t = prompt_tokens.shape[0], num_samples, max_len
    mask = prompt_mask.astype(bool)  # [B, P]
    hidden, kv = tfm.forward(
        params,
        cfg,
        prompt_tokens[:, None],
        tfm.positions_from_mask(mask)[:, None],
        key_mask=mask[:, None],
        return_kv=True,
        unroll=unroll,
    )
    dt = jnp.dtype(cache_dtype or default_cache_dtype(kv["k"].dtype))
    pre_axes = ("batch", "kv_heads", "seq", "head_dim")
    to_prefix = lambda a: [
        sharding.constrain(jnp.swapaxes(a[i, :, 0], 1, 2).astype(dt), pre_axes)
        for i in range(cfg.num_layers)
    ]  # [B, K, P, Dh] per layer
    prefix = {"k": to_prefix(kv["k"]), "v": to_prefix(kv["v"]), "mask": mask}
    logits = head_logits(hidden[:, 0, -1], head_weight(params, cfg, head_dtype))  # [B, V]
    z = jnp.broadcast_to(logits[:, None], (b, m, logits.shape[-1])).reshape(b * m, -1)
    z = sharding.constrain(z, ("batch", None))
    rows = jnp.arange(b * m, dtype=jnp.uint32)
    tok, logp = sample_logits(z, row_keys(key, rows, 0), sampling, block)
    tok0, logp0 = tok.reshape(b, m), logp.reshape(b, m)  # token 0 of every sample
    limit = jnp.clip(max_new_tokens, 1, t).astype(jnp.int32)
    row_limit = limit if row_limit is None else jnp.clip(row_limit, 1, limit)
    row_limit = jnp.broadcast_to(row_limit, (b, m)).astype(jnp.int32)  # [B, M]
    done0 = is_eos(tok0, eos_ids) | (row_limit <= 1)  # [B, M] ended at token 0
    if not slots:  # the static decoder: all B x M samples in the loop
        seq_axes = ("batch", "samples", None)
        tokens = jnp.full((b, m, t), pad_id, jnp.int32).at[:, :, 0].set(tok0)  # [B, M, T]
        logprobs = jnp.zeros((b, m, t), jnp.float32).at[:, :, 0].set(logp0)
        return DecodeState(
            tokens=sharding.constrain(tokens, seq_axes),
            logprobs=sharding.constrain(logprobs, seq_axes),
            lengths=jnp.ones((b, m), jnp.int32),
            done=done0,
            step=jnp.int32(1),
            limit=limit,
            row_limit=row_limit,
            cache=empty_cache(cfg, (b, m), t, dt, ("batch", "samples")),
            prefix=prefix,
            prompt_len=jnp.sum(prompt_mask.astype(jnp.int32), axis=-1),
            eos_ids=eos_ids.astype(jnp.int32),
            key=key,
            sampling=sampling,
            pad_id=jnp.asarray(pad_id, jnp.int32),
        )
    n = b * m
    done0 = done0.reshape(n)  # [N]
    queue = jnp.argsort(done0, stable=True).astype(jnp.int32)  # unfinished first, by id
    n_queue = jnp.sum(~done0, dtype=jnp.int32)
    first = jnp.arange(slots, dtype=jnp.int32)
    sid = jnp.where(first < n_queue, queue[jnp.minimum(first, n - 1)], n)  # [S]
    seq_axes = ("batch", None)
    tokens = jnp.full((n, t), pad_id, jnp.int32).at[:, 0].set(tok0.reshape(n))  # [N, T]
    logprobs = jnp.zeros((n, t), jnp.float32).at[:, 0].set(logp0.reshape(n))
    return SlotState(
        tokens=sharding.constrain(tokens, seq_axes),
        logprobs=sharding.constrain(logprobs, seq_axes),
        lengths=jnp.ones((n,), jnp.int32),
        sid=sid,
        pos=jnp.ones((slots,), jnp.int32),
        queue=queue,
        n_queue=n_queue,
        head=jnp.minimum(n_queue, slots),
        steps=jnp.int32(0),
        slot_steps=jnp.int32(0),
        cache=empty_cache(cfg, (slots, 1), t, dt, _SLOT_AXES, attn_kernel),
        prefix=prefix,
        prompt_len=jnp.sum(prompt_mask.astype(jnp.int32), axis=-1),
        row_limit=row_limit.reshape(n),
        eos_ids=eos_ids.astype(jnp.int32),
        key=key,
        sampling=sampling,
        pad_id=jnp.asarray(pad_id, jnp.int32),
    )


@functools.partial(
    jax.jit,
    static_argnames=(
        "cfg",
        "num_samples",
        "block",
        "head_dtype",
        "attn_block",
        "stop_below",
        "attn_kernel",
    ),
    donate_argnames=("state",),
)
def run(
    params: Params,
    cfg: ModelConfig,
    state: SlotState,
    *,
    num_samples: int,
    block: int = 256,
    head_dtype=None,
    attn_block: int | None = None,
    stop_below: int = 0,
    attn_kernel: str = "xla",
) -> SlotState:
    """Decodes until the queue is empty and every slot is idle (see the module doc), or,
    with ``stop_below`` > 0, until the queue is empty and at most that many slots are live
    (`decode_all` then moves them to a smaller state).

    Iteration: every live slot ``s`` with sample ``g`` and ``t = pos[s]`` tokens feeds
    token ``t - 1`` at position ``prompt_len[g // M] + t - 1``, writes its k/v into its
    cache slot ``t - 1`` and draws token ``t`` with row key ``(g, t)``; a slot whose
    sample ends (EOS or ``t + 1 >= row_limit[g]``) takes the next queued sample.
    With ``attn_block`` the attention reads are ragged (`_own_attention_ragged`); with
    ``attn_kernel="pallas"`` (the state built by `start` with the same kernel) the own
    cache is read by the Pallas decode kernel, each row up to its own length.
    """
    n, t = state.tokens.shape
    attn_block = attention_block_size(t, attn_block)
    head = head_weight(params, cfg, head_dtype)  # [D, V], cast once outside the loop
    layers = layer_params(params, cfg)

    def cond(s: SlotState):
        n_live = jnp.sum(s.sid < n)
        return (n_live > 0) & ((s.head < s.n_queue) | (n_live > stop_below))

    def body(s: SlotState):
        live = s.sid < n  # [S]
        g = jnp.minimum(s.sid, n - 1)  # [S] gather-safe sample ids
        pb = g // num_samples  # [S] prompt of each slot
        w = s.pos - 1  # [S] cache slot written (and last token's index)
        last = s.tokens[g, w]  # [S]
        pos = s.prompt_len[pb] + w
        hidden, cache = decode_layers(
            params,
            layers,
            cfg,
            last[:, None],
            pos[:, None],
            w[:, None],
            s.cache,
            {
                "k": [a[pb] for a in s.prefix["k"]],  # [S, K, P, Dh]: each slot's prompt
                "v": [a[pb] for a in s.prefix["v"]],
                "mask": s.prefix["mask"][pb],  # [S, P]
            },
            attn_block,  # unused by the Pallas read (`cache_attention`)
            ragged=RAGGED_GROUP,
            kernel=attn_kernel,
        )
        logits = sharding.constrain(head_logits(hidden[:, 0], head), ("batch", None))  # [S, V]
        tok, logp = sample_logits(
            logits, row_keys(s.key, g.astype(jnp.uint32), s.pos), s.sampling, block
        )
        out = jnp.where(live, s.sid, n)  # [S]; row N is dropped
        tokens = s.tokens.at[out, s.pos].set(tok, mode="drop")
        logprobs = s.logprobs.at[out, s.pos].set(logp, mode="drop")
        new_pos = s.pos + 1
        lengths = s.lengths.at[out].set(new_pos, mode="drop")
        ended = is_eos(tok, s.eos_ids[pb]) | (new_pos >= s.row_limit[g])
        free = ~live | ended  # [S]
        rank = jnp.cumsum(free.astype(jnp.int32)) - 1
        take = s.head + rank  # [S] queue entry each free slot would take
        nxt = jnp.where(take < s.n_queue, s.queue[jnp.minimum(take, n - 1)], n)
        return s._replace(
            tokens=tokens,
            logprobs=logprobs,
            lengths=lengths,
            sid=jnp.where(free, nxt, s.sid),
            pos=jnp.where(free, 1, new_pos),
            head=jnp.minimum(s.head + jnp.sum(free, dtype=jnp.int32), s.n_queue),
            steps=s.steps + 1,
            slot_steps=s.slot_steps + s.sid.shape[0],
            cache=cache,
        )

    return jax.lax.while_loop(cond, body, state)


@functools.partial(jax.jit, static_argnames=("slots",))
def shrink(state: SlotState, *, slots: int) -> SlotState:
    """The same decode state on ``slots`` slots: the live slots (at most ``slots`` of
    them, the queue empty) keep their sample, position and cache row, in order."""
    n = state.tokens.shape[0]
    keep = jnp.argsort(state.sid >= n, stable=True)[:slots]  # live slots first
    rows = lambda a: sharding.constrain(a[keep], _SLOT_AXES + (None,) * (a.ndim - 2))
    return state._replace(
        sid=state.sid[keep], pos=state.pos[keep], cache=jax.tree.map(rows, state.cache)
    )


def decode_all(
    params: Params,
    cfg: ModelConfig,
    state: SlotState,
    *,
    num_samples: int,
    min_slots: int = 8,
    **kw,
) -> SlotState:
    """`run` in phases that halve the slots once the queue is empty: with S slots it runs
    until at most S/2 are live, moves those to S/2 slots (`shrink`), and so on down to
    ``min_slots`` (then until all are done). The tail of a heavy-tailed length mix -- a
    few long samples finishing while the other slots idle -- then costs S/2, S/4, ...
    rows per step instead of S. Each phase is its own compiled program (log2 of them);
    between phases the host reads one flag."""
    n = state.tokens.shape[0]
    s = state.sid.shape[0]
    while s // 2 >= max(min_slots, 1):
        state = run(params, cfg, state, num_samples=num_samples, stop_below=s // 2, **kw)
        if not bool(jnp.any(state.sid < n)):
            return state
        s //= 2
        state = shrink(state, slots=s)
    return run(params, cfg, state, num_samples=num_samples, **kw)
