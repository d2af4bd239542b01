"""Rollouts: a jitted batched sampler built for majority voting.

For ``B`` left-padded prompts and ``M`` votes per prompt, `sample` returns tokens
``[B, M, T]``, the log-probs of the sampled tokens and the lengths. Both decoders prefill
each prompt **once** (`engine.start`: its k/v become a *shared prefix*, per
layer ``[B, K, P, Dh]``, that the ``M`` samples attend to without copies; token 0 of each
sample is drawn from the logits at the prompt's last position) and then run one jitted
`lax.while_loop` (state donated) through the model's one block function:

* the length-aware engine (`engine.start` + `engine.decode_all`, the default): ``S`` slots over
  the queue of the ``B M`` samples; a slot whose sample ends takes the next one, so the
  loop's work follows the samples' real lengths (see `engine`);
* the static decoder (`prefill` + `decode`, ``decode_slots=0``): iteration ``t`` feeds
  every sample's token ``t-1`` at position ``prompt_len + t - 1``, writes its k/v into
  slot ``t-1`` of the per-sample cache ``[B, M, K, Dh, T]`` and draws token ``t``, until
  every sample has emitted one of its row's EOS ids or reached its limit.

Tokens are drawn by `token_sampling.sample_logits` (exact full-vocabulary two-stage inverse
CDF; top-k, top-p, greedy; traced knobs, so changing them never recompiles). The uniforms
of sample ``g = b M + m`` at token ``t`` come from ``fold_in(fold_in(key, g), t)``, so the
same key gives the same tokens on any mesh, with either decoder and any slot count.
Returned log-probs are those of the temperature-scaled **full** softmax, what the trainer
recomputes. Prompt and response lengths are bucketed so a run compiles a handful of
programs.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax import sharding
from ttrl_jax.data.padding import bucket_length, pad_left_to
from ttrl_jax.models.config import ModelConfig
from ttrl_jax.rollout import engine, pallas_attention
from ttrl_jax.rollout.engine import (
    DecodeState,
    attention_block_size,
    default_cache_dtype,
    eos_table,
    head_logits,
)
from ttrl_jax.rollout.token_sampling import SamplingParams, row_keys, sample_logits, sampling_params

__all__ = [
    "DecodeState",
    "Rollout",
    "SamplingParams",
    "attention_block_size",
    "decode",
    "default_cache_dtype",
    "eos_table",
    "head_logits",
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
        the prefill; the static decoder runs at most ``T - 1``).
      slot_steps: ``[]`` int32 rows x iterations the loop computed, finished rows
        included (the static decoder: ``decode_steps B M``; the engine: its slots per
        phase); the useful part is ``sum(lengths) - B M``.
    """

    tokens: jax.Array
    logprobs: jax.Array
    lengths: jax.Array
    decode_steps: jax.Array
    slot_steps: jax.Array | None = None


def _decode_layers(params, layers, cfg, tok, pos, cache, w, prefix, attn_block: int = 0):
    """One new token per sample ``tok, pos [B, M]`` through every block, all rows writing
    cache slot ``w`` (`engine.decode_layers` with a shared slot index).

    Returns: final-normed hidden ``[B, M, D]`` and the updated cache."""
    n_blocks = w // attn_block + 1 if attn_block else None
    w = jnp.broadcast_to(w, tok.shape)
    return engine.decode_layers(
        params, layers, cfg, tok, pos, w, cache, prefix, attn_block, n_blocks
    )


# the static decoder's prefill is the engine's with no slots (`engine.start`, slots=0)
prefill = engine.start


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
    head = engine.head_weight(params, cfg, head_dtype)  # [D, V], cast once outside the loop
    outer = engine.layer_params(params, cfg) if unstack_layers else None

    def cond(s: DecodeState):
        return (s.step < s.limit) & ~jnp.all(s.done)

    def body(s: DecodeState):
        w = s.step - 1
        last = jax.lax.dynamic_index_in_dim(s.tokens, w, axis=2, keepdims=False)  # [B, M]
        pos = jnp.broadcast_to(s.prompt_len[:, None] + w, last.shape)
        layers = outer if unstack_layers else engine.layer_params(params, cfg)
        hidden, cache = _decode_layers(
            params, layers, cfg, last, pos, s.cache, w, s.prefix, attn_block
        )
        logits = engine.head_logits(hidden, head).reshape(b * m, -1)  # [B*M, V]
        logits = sharding.constrain(logits, ("batch", None))
        tok, logp = sample_logits(logits, row_keys(s.key, rows, s.step), s.sampling, block)
        tok = jnp.where(s.done, s.pad_id, tok.reshape(b, m))  # [B, M]
        logp = jnp.where(s.done, 0.0, logp.reshape(b, m))
        lengths = s.lengths + (~s.done).astype(jnp.int32)  # [B, M]
        return s._replace(
            tokens=jax.lax.dynamic_update_slice_in_dim(s.tokens, tok[..., None], s.step, axis=2),
            logprobs=jax.lax.dynamic_update_slice_in_dim(s.logprobs, logp[..., None], s.step, 2),
            lengths=lengths,
            done=s.done | engine.is_eos(tok, s.eos_ids) | (lengths >= s.row_limit),
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
    decode_slots: int | None = None,
    attn_kernel: str | None = None,
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
      unstack_layers: see `decode` (the static decoder; the engine always slices once).
      block: vocabulary block size of the exact two-stage draw.
      cache_dtype: KV-cache dtype (default: `default_cache_dtype`).
      head_dtype: LM-head operand dtype (default: the params'); see `head_logits`.
      row_limits: optional ``[B, M]`` per-sample length limits in ``[1,
        max_new_tokens]`` (per-prompt budgets); a sample's tokens do not depend on its
        own or any other sample's limit, only where it stops.
      attn_block: own-cache block of the decode attention (see `decode`; in the engine,
        ragged reads, `engine.cache_attention`). None: all T slots in the static decoder,
        `engine_attn_block` in the engine; 0: all T slots.
      decode_slots: S, the slots of the length-aware engine (`engine`; None: the default
        rule, `slots_for`); 0 runs the static decoder (`prefill` + `decode`, all B M samples in
        one batch until the longest is done).
      attn_kernel: the engine's own-cache read (`pallas_attention.resolve`): ``"xla"``,
        ``"pallas"`` (jax's Pallas GPU decode kernel; interpret mode off a GPU) or None /
        ``"auto"`` (Pallas on GPUs where it compiles, else XLA). The static decoder
        always reads with XLA.

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
    eos = eos_table(eos_ids, b)
    slots = slots_for(b * num_samples, decode_slots, t)
    common = {"num_samples": num_samples, "max_len": t, "block": block, "cache_dtype": cache_dtype}
    args = (params, cfg, prompt_tokens, prompt_mask, key, sampling, eos, np.int32(pad_id))
    args += (np.int32(max_new_tokens), row_limits)
    if slots:
        kernel = pallas_attention.resolve(
            attn_kernel or "auto",
            max_len=t,
            kv_heads=cfg.num_kv_heads,
            rep=cfg.num_heads // cfg.num_kv_heads,
            head_dim=cfg.head_dim,
            cache_dtype=cache_dtype or engine.default_cache_dtype(params["embed"].dtype),
        )
        if attn_block is None:
            attn_block = engine_attn_block(t)
        st = engine.start(
            *args, slots=slots, head_dtype=head_dtype, attn_kernel=kernel, **common
        )
        st = engine.decode_all(
            params,
            cfg,
            st,
            num_samples=num_samples,
            block=block,
            head_dtype=head_dtype,
            attn_block=attn_block,
            attn_kernel=kernel,
        )
        shape = (b, num_samples, t)
        return Rollout(
            st.tokens.reshape(shape),
            st.logprobs.reshape(shape),
            st.lengths.reshape(shape[:2]),
            st.steps,
            st.slot_steps,
        )
    state = prefill(*args, head_dtype=head_dtype, **common)
    state = decode(
        params,
        cfg,
        state,
        unstack_layers=unstack_layers,
        block=block,
        head_dtype=head_dtype,
        attn_block=attn_block,
    )
    steps = state.step - 1
    return Rollout(state.tokens, state.logprobs, state.lengths, steps, steps * b * num_samples)


ENGINE_MIN_LEN = 256  # the default runs the engine from this response length T up,
SLOTS_PER_SAMPLE_CPU = 0.5  # with S = B M / 2 slots on the CPU (a multiple of 8), B M else,
ENGINE_ATTN_BLOCK_CPU = 128  # and on the CPU ragged attention reads in blocks of 128


def engine_attn_block(
    max_len: int, backend: str | None = None, devices: int | None = None
) -> int:
    """The engine's default own-cache read: on one CPU device (``backend`` and
    ``devices``, default JAX's) ragged reads in blocks of `ENGINE_ATTN_BLOCK_CPU` where
    they divide ``max_len``, else 0 (all T slots).

    In W3 (`benchmarks/bench_lengths.py`, BENCHMARKS.md) ragged reads raised the engine's
    useful tokens/s 1.13-1.30x over reading all 1024 slots at S = 16-96. They rank all
    slots by length and gather across them, which over slots split between devices would
    move cache rows between shards, so a mesh reads all T slots. GPU / TPU read all T
    slots too with XLA (the ragged read's gathers are not measured there); on GPUs the
    engine reads with the Pallas decode kernel by default instead, per device on a mesh
    (`pallas_attention.resolve`), which bounds each row's read by its own length."""
    if (backend or jax.default_backend()) != "cpu" or max_len % ENGINE_ATTN_BLOCK_CPU:
        return 0
    if (devices or jax.device_count()) > 1:
        return 0
    return ENGINE_ATTN_BLOCK_CPU


def round_slots(slots: float) -> int:
    """``slots`` rounded up to a multiple of 8, so that the slot axis splits over up to 8
    batch shards (a count the shards do not divide is replicated)."""
    return 8 * math.ceil(slots / 8)


def slots_for(n: int, decode_slots: int | None, max_len: int, backend: str | None = None) -> int:
    """The engine's slot count for ``n = B M`` samples of at most ``max_len`` tokens:
    ``min(decode_slots, n)``; 0 means the static decoder.

    None takes the default. Below ``max_len = 256`` it is the static decoder: short
    responses leave little padding to save (at T = 64 on the demo task, whose answers all
    have about the same length, the engine took 2x the static decoder's time). From 256
    up, on the CPU (``backend``, default JAX's), ``S = n / 2`` rounded up to a multiple of
    8 (so the slots split over data shards), chosen from `benchmarks/bench_lengths.py`
    (W3, 8 x 16 samples, lognormal lengths, 10 % clipped at T; BENCHMARKS.md): with
    ragged reads (`engine_attn_block`), S = 16 / 32 / 48 / 64 / 96 of 128 gave 1.74 /
    2.10 / 2.16 / 2.19 / 2.30x the static decoder's useful tokens/s at T = 1024, at
    0.24-0.78x its loop memory; S = 64 takes most of the gain at 0.57x. On GPU / TPU,
    ``S = n``: a decode step there is bound by reading the weights up to hundreds of
    rows, so fewer slots only add steps (`benchmarks/project_costs.py`'s projection over
    S; not measured on an accelerator).
    """
    if decode_slots is None:
        if max_len < ENGINE_MIN_LEN:
            return 0
        if (backend or jax.default_backend()) != "cpu":
            return n
        decode_slots = round_slots(n * SLOTS_PER_SAMPLE_CPU)
    if decode_slots < 0:
        raise ValueError(f"decode_slots must be >= 0, got {decode_slots}")
    return min(int(decode_slots), n)
