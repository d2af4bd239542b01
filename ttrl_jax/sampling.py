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

Sampling, per row, from ``z = logits / tau``::

    p_i = exp(z_i - max z) / S,   S = sum_j exp(z_j - max z),   log p_y = z_y - max z - log S

* **Full vocabulary, exact: two-stage inverse CDF.** The vocabulary is cut into blocks of
  ``block`` tokens with masses ``S_b``. A uniform ``u1`` picks the block
  ``b = min{b : S_1 + ... + S_b > u1 S}`` (probability ``S_b / S``), a second ``u2`` the
  token ``i = min{i in b : sum_{j in b, j <= i} exp(z_j - max z) > u2 S_b}`` (probability
  ``p_i S / S_b``): ``P(i) = p_i``. Two uniforms per row instead of V Gumbel variates, and
  the one exp pass that ``log S`` needs anyway (`benchmarks/bench_sampling_methods.py`).
* **top-k** (HF semantics): keep ``z_i >= v_k``, the k-th largest value (ties kept), found
  by bisection over order-preserving integer keys of the floats (<= 32 counting passes).
* **top-p** (HF semantics, after top-k, on the renormalised top-k law): keep ``i`` iff
  ``sum_{j: z_j > z_i} p_j < top_p`` (the largest token always stays). Drawn exactly and
  without a sort by *pivot rejection*: propose from ``p`` on ``{z > pivot}`` (pivot
  ``-inf`` first), accept if the proposal passes the test, else raise the pivot to its
  value. Tokens at or below a rejected one fail too, so every proposal set contains the
  nucleus and the accepted token has law ``p`` renormalised on it.
* **greedy** (or ``temperature <= 0``): the first index of ``max z``.

The knobs (`SamplingParams`) are traced: changing them never recompiles (`lax.switch`
picks the mode at run time). The uniforms of global row ``r = b M + m`` at step ``t`` come
from ``fold_in(fold_in(key, r), t)``, so draws do not depend on how rows are split over
devices. Returned log-probs are those of the temperature-scaled **full** softmax (what the
trainer recomputes with `transformer.token_logprobs`), also under top-k / top-p.
"""

from __future__ import annotations

import functools
from typing import Any, NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax import sharding
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig

Params = dict[str, Any]


class SamplingParams(NamedTuple):
  """Sampling knobs, all traced scalars (build with `sampling_params` for fixed dtypes):
  temperature ``tau`` (f32, ``<= 0`` means greedy), top_p (f32 in (0, 1], 1 = off),
  top_k (int32, ``<= 0`` or ``>= V`` = off), greedy (bool)."""

  temperature: Any
  top_p: Any
  top_k: Any
  greedy: Any


def sampling_params(temperature: float = 1.0, top_p: float = 1.0, top_k: int = 0,
                    greedy: bool = False) -> SamplingParams:
  """`SamplingParams` as fixed-dtype numpy scalars (so new values never retrace)."""
  if not 0.0 < float(top_p) <= 1.0:
    raise ValueError(f"top_p must be in (0, 1], got {top_p}")
  return SamplingParams(np.float32(temperature), np.float32(top_p), np.int32(top_k),
                        np.bool_(greedy))


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
  done: jax.Array  # [B, M] bool, emitted an EOS
  step: jax.Array  # [] int32, token columns filled so far
  limit: jax.Array  # [] int32, max token columns (<= T)
  cache: dict  # {"k": L x [B, M, K, Dh, T], "v": L x [B, M, K, T, Dh]}
  prefix: dict  # {"k", "v"}: L x [B, K, P, Dh], "mask": [B, P] bool
  prompt_len: jax.Array  # [B] int32
  eos_ids: jax.Array  # [B, E] int32 (-1 = unused slot)
  key: jax.Array  # PRNG key
  sampling: SamplingParams
  pad_id: jax.Array  # [] int32


# ------------------------------------------------------------------ host helpers


def bucket(n: int, *, minimum: int = 16, multiple: int | None = None) -> int:
  """Rounds a length up to its bucket: the next power of two >= max(n, minimum), or the
  next multiple of ``multiple`` if given. Few buckets = few compiled programs."""
  if n < 1:
    raise ValueError(f"length must be >= 1, got {n}")
  if multiple:
    return -(-n // multiple) * multiple
  return max(minimum, 1 << (n - 1).bit_length())


def pad_prompts(tokens, mask, length: int, pad_id: int):
  """Left-pads ``[B, P]`` prompts and mask to ``[B, length]`` (numpy or jax arrays)."""
  p = tokens.shape[1]
  if length < p:
    raise ValueError(f"cannot pad {p} prompt columns down to {length}")
  xp = np if isinstance(tokens, np.ndarray) else jnp
  widths = ((0, 0), (length - p, 0))
  return (xp.pad(tokens, widths, constant_values=pad_id), xp.pad(mask, widths))


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
    out[i, :len(e)] = e
  return out


# ------------------------------------------------------------- sampling (traced)


def row_keys(key: jax.Array, rows: jax.Array, step) -> jax.Array:
  """Per-row keys ``fold_in(fold_in(key, row), step)`` for global row ids ``[R]``."""
  return jax.vmap(lambda r: jax.random.fold_in(jax.random.fold_in(key, r), step))(rows)


def _uniforms(keys: jax.Array) -> jax.Array:
  return jax.vmap(lambda k: jax.random.uniform(k, (2,)))(keys)  # [R, 2]


def _blocks(x: jax.Array, block: int, fill) -> jax.Array:
  """``[R, V]`` -> ``[R, nb, block]`` (padded with ``fill``)."""
  r, v = x.shape
  nb = -(-v // block)
  return jnp.pad(x, ((0, 0), (0, nb * block - v)), constant_values=fill).reshape(r, nb, block)


def _pick(cum: jax.Array, u: jax.Array) -> jax.Array:
  """min{i : cum_i > u cum_last} for cumulative masses ``[R, N]`` (never a zero-mass i)."""
  total = cum[:, -1]
  target = jnp.minimum(u * total, jnp.nextafter(total, 0.0))
  return jnp.minimum(jnp.sum(cum <= target[:, None], axis=-1), cum.shape[-1] - 1)


def _draw(cum: jax.Array, inner_fn, u: jax.Array) -> jax.Array:
  """Two-stage inverse CDF: a block by the cumulative block masses ``cum [R, nb]``, then a
  token inside it; ``inner_fn(b)`` returns the ``[R, block]`` weights of block ``b [R]``."""
  b = _pick(cum, u[:, 0])  # [R]
  inner = inner_fn(b)  # [R, block]
  return b * inner.shape[-1] + _pick(jnp.cumsum(inner, axis=-1), u[:, 1])


def _gather_block(xb: jax.Array, b: jax.Array) -> jax.Array:
  return jnp.take_along_axis(xb, b[:, None, None], axis=1)[:, 0]  # [R, block]


def _draw_weights(w: jax.Array, u: jax.Array, block: int) -> jax.Array:
  """Exact draw from unnormalised weights ``w [R, V]`` (>= 0, not all 0)."""
  wb = _blocks(w, block, 0.0)  # [R, nb, block]
  return _draw(jnp.cumsum(jnp.sum(wb, axis=-1), axis=-1), lambda b: _gather_block(wb, b), u)


def _sortable(z: jax.Array) -> jax.Array:
  """f32 -> uint32 keys with the same order (``a < b  <=>  key(a) < key(b)``)."""
  bits = jax.lax.bitcast_convert_type(z, jnp.uint32)
  return jnp.where(bits >> 31 == 1, ~bits, bits | jnp.uint32(0x80000000))


def _topk_threshold(z: jax.Array, k: jax.Array) -> jax.Array:
  """``[R]`` key t with ``{key(z) >= t}`` = the top-k set of each row (ties kept).

  Bisection keeping ``count(key >= lo) >= k > count(key >= hi)``; stops per row when the
  interval is one key wide (lo is then the k-th largest) or exactly k keys are >= lo.
  """
  keys = _sortable(z)  # [R, V]
  count = lambda t: jnp.sum(keys >= t[:, None], axis=-1, dtype=jnp.int32)
  lo = jnp.min(keys, axis=-1)
  hi = jnp.max(keys, axis=-1) + jnp.uint32(1)
  c_lo = jnp.full(lo.shape, z.shape[-1], jnp.int32)

  def active(lo, hi, c_lo):
    return (hi - lo > 1) & (c_lo != k)

  def body(carry):
    lo, hi, c_lo = carry
    mid = lo + (hi - lo) // 2
    c = count(mid)
    go = active(lo, hi, c_lo)
    up = go & (c >= k)
    return (jnp.where(up, mid, lo), jnp.where(go & ~up, mid, hi), jnp.where(up, c, c_lo))

  lo, _, _ = jax.lax.while_loop(lambda c: jnp.any(active(*c)), body, (lo, hi, c_lo))
  return lo


def _nucleus(z, w, tok, top_p, keys, block: int) -> jax.Array:
  """Exact top-p draw from weights ``w [R, V]`` (top-k masked) by pivot rejection,
  starting from the proposal ``tok [R]`` (a draw from the law of ``w``)."""
  total = jnp.sum(w, axis=-1)  # [R]
  zb, wb = _blocks(z, block, -jnp.inf), _blocks(w, block, 0.0)  # [R, nb, block]

  def propose(pivot, round_):
    keep = zb > pivot[:, None, None]
    mass = jnp.sum(jnp.where(keep, wb, 0.0), axis=-1)  # [R, nb]
    inner = lambda b: jnp.where(_gather_block(zb, b) > pivot[:, None], _gather_block(wb, b), 0.0)
    u = _uniforms(jax.vmap(jax.random.fold_in, (0, None))(keys, round_))
    return _draw(jnp.cumsum(mass, axis=-1), inner, u)

  def accept(tok):
    zt = jnp.take_along_axis(z, tok[:, None], axis=-1)  # [R, 1]
    above = jnp.sum(jnp.where(z > zt, w, 0.0), axis=-1)  # mass strictly above tok
    return (above < top_p * total) | (above == 0), zt[:, 0]

  def body(carry):
    tok, ok, pivot, round_ = carry
    cand = propose(pivot, round_)
    good, zc = accept(cand)
    return (jnp.where(ok, tok, cand), ok | good, jnp.where(ok | good, pivot, zc), round_ + 1)

  ok, zt = accept(tok)
  pivot = jnp.where(ok, -jnp.inf, zt)
  tok, *_ = jax.lax.while_loop(lambda c: ~jnp.all(c[1]), body, (tok, ok, pivot, 1))
  return tok


def sample_logits(logits: jax.Array, keys: jax.Array, sp: SamplingParams,
                  block: int = 256) -> tuple[jax.Array, jax.Array]:
  """Draws one token per row and returns its full-softmax log-prob.

  Args:
    logits: ``[R, V]`` f32.
    keys: ``[R]`` per-row PRNG keys (see `row_keys`).
    sp: `SamplingParams` (traced scalars).
    block: vocabulary block size of the two-stage draw.

  Returns:
    tokens ``[R]`` int32 and ``log softmax(logits / tau)[token]`` ``[R]`` f32.
  """
  r, v = logits.shape
  greedy = sp.greedy | (sp.temperature <= 0)
  inv_tau = 1.0 / jnp.where(sp.temperature > 0, sp.temperature, 1.0).astype(jnp.float32)
  # z - max z = (x - max x) / tau: the scaled logits are never materialised.
  xb = _blocks(logits.astype(jnp.float32), block, -jnp.inf)  # [R, nb, block], -inf padded
  x = xb.reshape(r, -1)  # [R, Vp]
  xmax = jnp.max(x, axis=-1, keepdims=True)  # [R, 1]
  mass = jnp.sum(jnp.exp((xb - xmax[..., None]) * inv_tau), axis=-1)  # [R, nb]
  # log S from the last cumulative mass: a second reduction of the exp would materialise it.
  cum = jnp.cumsum(mass, axis=-1)  # [R, nb]
  log_s = jnp.log(cum[:, -1])  # [R]; lse = max z + log S
  top_k = jnp.clip(sp.top_k, 0, v).astype(jnp.int32)
  use_k, use_p = (top_k > 0) & (top_k < v), sp.top_p < 1.0
  u = _uniforms(keys)

  def greedy_fn():
    return jnp.min(jnp.where(x == xmax, jnp.arange(x.shape[-1]), v), axis=-1)

  def full_fn():
    return _draw(cum, lambda b: jnp.exp((_gather_block(xb, b) - xmax) * inv_tau), u)

  def filtered_fn():
    z = (x - xmax) * inv_tau  # [R, Vp] shifted scaled logits (max 0)
    thr = jax.lax.cond(use_k, lambda: _topk_threshold(z, top_k),
                       lambda: jnp.zeros((r,), jnp.uint32))
    w = jnp.where(_sortable(z) >= thr[:, None], jnp.exp(z), 0.0)  # [R, Vp]
    tok = jax.lax.cond(use_k, lambda: _draw_weights(w, u, block), full_fn)  # law of w
    return jax.lax.cond(use_p, lambda: _nucleus(z, w, tok, sp.top_p, keys, block),
                        lambda: tok)

  mode = jnp.where(greedy, 0, jnp.where(use_k | use_p, 2, 1))
  tok = jax.lax.switch(mode, [greedy_fn, full_fn, filtered_fn]).astype(jnp.int32)
  tok = jnp.minimum(tok, v - 1)
  logp = (jnp.take_along_axis(x, tok[:, None], axis=-1) - xmax)[:, 0] * inv_tau - log_s
  return tok, logp


# ------------------------------------------------------------ prefill / decode


def _is_eos(tok: jax.Array, eos_ids: jax.Array) -> jax.Array:
  return jnp.any(tok[..., None] == eos_ids[:, None, :], axis=-1)  # [B, M]


def _decode_layers(params: Params, layers: Sequence[Params], cfg: ModelConfig, tok: jax.Array,
                   pos: jax.Array, cache: dict, w: jax.Array, prefix: dict):
  """One new token per sample through every block (the math of `transformer._block`).

  Own keys are stored transposed, per layer ``k: [B, M, K, Dh, T]``, ``v: [B, M, K, T, Dh]``,
  so both attention products are multiply-reduces reading the cache in place (on CPU
  batched ``[H/K, Dh] x [Dh, T]`` dots and layer slices of stacked arrays cost copies).
  Prefix and own slots ``s <= w`` share one softmax, in fp32::

      o = (sum_p e_p v_p + sum_s e_s v_s) / (sum_p e_p + sum_s e_s),  e = exp(q.k/sqrt(Dh) - max)

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
    q = jnp.einsum("bmd,dhe->bmhe", n, lp["wq"])  # [B, M, H, Dh]
    k = jnp.einsum("bmd,dke->bmke", n, lp["wk"])  # [B, M, K, Dh]
    v = jnp.einsum("bmd,dke->bmke", n, lp["wv"])
    if cfg.qkv_bias:
      q, k, v = q + lp["bq"], k + lp["bk"], v + lp["bv"]
    q = tfm.apply_rope(q[:, :, None], pos[:, :, None], inv_freq)[:, :, 0]
    k = tfm.apply_rope(k[:, :, None], pos[:, :, None], inv_freq)[:, :, 0]
    q = q.reshape(b, m, kh, r, dh).astype(f32) * dh ** -0.5  # [B, M, K, R, Dh]
    ck = jax.lax.dynamic_update_slice(cache["k"][i], k[..., None].astype(cache["k"][i].dtype),
                                      (0, 0, 0, 0, w))  # [B, M, K, Dh, T]
    cv = jax.lax.dynamic_update_slice(cache["v"][i], v[:, :, :, None].astype(cache["v"][i].dtype),
                                      (0, 0, 0, w, 0))  # [B, M, K, T, Dh]
    s_own = jnp.sum(q[..., None] * ck[:, :, :, None].astype(f32), axis=-2)  # [B, M, K, R, T]
    s_own = jnp.where(own_ok, s_own, -jnp.inf)
    s_pre = jnp.einsum("bmkrd,bkpd->bmkrp", q, prefix["k"][i],
                       preferred_element_type=f32)  # [B, M, K, R, P]
    s_pre = jnp.where(pre_ok, s_pre, -jnp.inf)
    top = jnp.maximum(jnp.max(s_own, axis=-1), jnp.max(s_pre, axis=-1))[..., None]
    e_own, e_pre = jnp.exp(s_own - top), jnp.exp(s_pre - top)
    den = jnp.sum(e_own, axis=-1) + jnp.sum(e_pre, axis=-1)  # [B, M, K, R]
    o = (jnp.sum(e_own[..., None] * cv[:, :, :, None].astype(f32), axis=-2) +
         jnp.einsum("bmkrp,bkpd->bmkrd", e_pre, prefix["v"][i], preferred_element_type=f32))
    o = (o / den[..., None]).astype(x.dtype).reshape(b, m, kh * r, dh)  # [B, M, H, Dh]
    o = jnp.einsum("bmhe,hed->bmd", o, lp["wo"])
    x = x + (o + lp["bo"] if cfg.o_bias else o)
    n = tfm.rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    gate = jnp.einsum("bmd,df->bmf", n, lp["w_gate"])
    up = jnp.einsum("bmd,df->bmf", n, lp["w_up"])
    if cfg.mlp_bias:
      gate, up = gate + lp["b_gate"], up + lp["b_up"]
    down = jnp.einsum("bmf,fd->bmd", jax.nn.silu(gate) * up, lp["w_down"])
    x = x + (down + lp["b_down"] if cfg.mlp_bias else down)
    new_k.append(ck)
    new_v.append(cv)
  return tfm.rms_norm(x, params["final_norm"], cfg.rms_norm_eps), {"k": new_k, "v": new_v}


def _layer_params(params: Params, cfg: ModelConfig) -> list[Params]:
  return [jax.tree.map(lambda a: a[i], params["layers"]) for i in range(cfg.num_layers)]


def default_cache_dtype(param_dtype) -> jnp.dtype:
  """The KV-cache dtype: the params' dtype, except float32 for bf16 on CPU, where XLA
  upcasts every bf16 dynamic-update-slice to f32 and so rewrites the whole cache each
  step (bf16 values are stored exactly in f32)."""
  if jnp.dtype(param_dtype) == jnp.bfloat16 and jax.default_backend() == "cpu":
    return jnp.dtype(jnp.float32)
  return jnp.dtype(param_dtype)


@functools.partial(jax.jit, static_argnames=("cfg", "num_samples", "max_len", "unroll", "block",
                                             "cache_dtype"))
def prefill(params: Params, cfg: ModelConfig, prompt_tokens: jax.Array, prompt_mask: jax.Array,
            key: jax.Array, sampling: SamplingParams, eos_ids: jax.Array, pad_id: jax.Array,
            max_new_tokens: jax.Array, *, num_samples: int, max_len: int,
            unroll: int | bool = True, block: int = 256, cache_dtype=None) -> DecodeState:
  """Prefills each prompt once and draws the first token of its ``M`` samples.

  Args:
    params, cfg: the model.
    prompt_tokens, prompt_mask: ``[B, P]`` left-padded int32 prompts and their 0/1 mask.
    key: PRNG key.
    sampling: `SamplingParams`.
    eos_ids: ``[B, E]`` int32 stop ids per row (-1 = unused slot), see `eos_table`.
    pad_id: ``[]`` int32 written after a sample ends.
    max_new_tokens: ``[]`` int32 length limit, ``1 <= max_new_tokens <= max_len``.
    num_samples, max_len: M and T (static; T is a bucket).
    unroll: layer-scan unroll of the prefill forward.
    block: vocabulary block of the two-stage draw (see `sample_logits`).
    cache_dtype: KV-cache dtype (default `default_cache_dtype` of the params).

  Returns:
    The initial `DecodeState` (step 1), to be passed to `decode`.
  """
  b, p = prompt_tokens.shape
  m, t = num_samples, max_len
  mask = prompt_mask.astype(bool)  # [B, P]
  positions = tfm.positions_from_mask(mask)  # [B, P]
  hidden, kv = tfm.forward(params, cfg, prompt_tokens[:, None], positions[:, None],
                           key_mask=mask[:, None], return_kv=True, unroll=unroll)
  kh, dh = cfg.num_kv_heads, cfg.head_dim
  dt = jnp.dtype(cache_dtype or default_cache_dtype(kv["k"].dtype))
  pre_axes = ("batch", "kv_heads", "seq", "head_dim")
  to_prefix = lambda a: [sharding.constrain(jnp.swapaxes(a[i, :, 0], 1, 2).astype(dt), pre_axes)
                         for i in range(cfg.num_layers)]  # [B, K, P, Dh] per layer
  prefix = {"k": to_prefix(kv["k"]), "v": to_prefix(kv["v"]), "mask": mask}
  logits = tfm.logits_from_hidden(params, cfg, hidden[:, 0, -1])  # [B, V]
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
  cache = {"k": [sharding.constrain(jnp.zeros((b, m, kh, dh, t), dt), k_axes)
                 for _ in range(cfg.num_layers)],  # [B, M, K, Dh, T] per layer
           "v": [sharding.constrain(jnp.zeros((b, m, kh, t, dh), dt), v_axes)
                 for _ in range(cfg.num_layers)]}  # [B, M, K, T, Dh] per layer
  return DecodeState(
      tokens=sharding.constrain(tokens, seq_axes),
      logprobs=sharding.constrain(logprobs, seq_axes),
      lengths=jnp.ones((b, m), jnp.int32), done=_is_eos(tok, eos_ids),
      step=jnp.int32(1), limit=jnp.clip(max_new_tokens, 1, t).astype(jnp.int32),
      cache=cache, prefix=prefix,
      prompt_len=jnp.sum(mask, axis=-1, dtype=jnp.int32), eos_ids=eos_ids.astype(jnp.int32),
      key=key, sampling=sampling, pad_id=jnp.asarray(pad_id, jnp.int32))


@functools.partial(jax.jit, static_argnames=("cfg", "unstack_layers", "block"),
                   donate_argnames=("state",))
def decode(params: Params, cfg: ModelConfig, state: DecodeState, *,
           unstack_layers: bool = True, block: int = 256) -> DecodeState:
  """Runs the decode `lax.while_loop` until every sample is done or the limit is hit.

  Iteration ``t`` (``1 <= t < limit``) feeds token ``t-1`` of every sample at position
  ``prompt_len + t - 1``, writes its k/v into cache slot ``t-1`` and draws token ``t``.
  ``state`` is donated: the cache and token buffers are updated in place.

  Args:
    unstack_layers: slice the stacked layer weights once before the loop (fast on CPU,
      one extra copy of the layer weights while decoding) instead of once per step.

  Returns:
    The final `DecodeState`; ``step - 1`` is the number of iterations run.
  """
  b, m, _ = state.tokens.shape
  rows = jnp.arange(b * m, dtype=jnp.uint32)
  head = tfm.lm_head_weight(params, cfg)  # [D, V]
  outer = _layer_params(params, cfg) if unstack_layers else None

  def cond(s: DecodeState):
    return (s.step < s.limit) & ~jnp.all(s.done)

  def body(s: DecodeState):
    w = s.step - 1
    last = jax.lax.dynamic_index_in_dim(s.tokens, w, axis=2, keepdims=False)  # [B, M]
    pos = jnp.broadcast_to(s.prompt_len[:, None] + w, last.shape)
    layers = outer if unstack_layers else _layer_params(params, cfg)
    hidden, cache = _decode_layers(params, layers, cfg, last, pos, s.cache, w, s.prefix)
    logits = jnp.einsum("bmd,dv->bmv", hidden, head,
                        preferred_element_type=jnp.float32).reshape(b * m, -1)  # [B*M, V]
    logits = sharding.constrain(logits, ("batch", None))
    tok, logp = sample_logits(logits, row_keys(s.key, rows, s.step), s.sampling, block)
    tok = jnp.where(s.done, s.pad_id, tok.reshape(b, m))  # [B, M]
    logp = jnp.where(s.done, 0.0, logp.reshape(b, m))
    return s._replace(
        tokens=jax.lax.dynamic_update_slice_in_dim(s.tokens, tok[..., None], s.step, axis=2),
        logprobs=jax.lax.dynamic_update_slice_in_dim(s.logprobs, logp[..., None], s.step, 2),
        lengths=s.lengths + (~s.done).astype(jnp.int32),
        done=s.done | _is_eos(tok, s.eos_ids), step=s.step + 1, cache=cache)

  return jax.lax.while_loop(cond, body, state)


def sample(params: Params, cfg: ModelConfig, prompt_tokens, prompt_mask, key: jax.Array, *,
           num_samples: int, max_new_tokens: int, sampling: SamplingParams | None = None,
           eos_ids: Sequence = (), pad_id: int = 0, max_len: int | None = None,
           prompt_len: int | None = None, unstack_layers: bool = True,
           block: int = 256, cache_dtype=None) -> Rollout:
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
    max_len: T; default ``bucket(max_new_tokens)``.
    prompt_len: pad P up to this (default ``bucket(P, minimum=32)``); P if P is larger.
    unstack_layers: see `decode`.
    block: vocabulary block size of the exact two-stage draw.
    cache_dtype: KV-cache dtype (default: `default_cache_dtype`).

  Returns:
    A `Rollout` with ``[B, M, T]`` tokens / log-probs and ``[B, M]`` lengths.
  """
  b, p = prompt_tokens.shape
  if num_samples < 1 or max_new_tokens < 1:
    raise ValueError(f"need num_samples >= 1 and max_new_tokens >= 1, got {num_samples}, "
                     f"{max_new_tokens}")
  t = max_len or bucket(max_new_tokens)
  if max_new_tokens > t:
    raise ValueError(f"max_new_tokens={max_new_tokens} exceeds max_len={t}")
  if not isinstance(prompt_mask, jax.core.Tracer) and not np.all(np.asarray(prompt_mask[:, -1])):
    raise ValueError("prompts must be left-padded: the last column of prompt_mask must be 1")
  width = max(p, prompt_len or bucket(p, minimum=32))
  if width != p:
    prompt_tokens, prompt_mask = pad_prompts(prompt_tokens, prompt_mask, width, pad_id)
  sampling = sampling_params() if sampling is None else sampling
  state = prefill(params, cfg, prompt_tokens, prompt_mask, key, sampling, eos_table(eos_ids, b),
                  np.int32(pad_id), np.int32(max_new_tokens), num_samples=num_samples,
                  max_len=t, block=block, cache_dtype=cache_dtype)
  state = decode(params, cfg, state, unstack_layers=unstack_layers, block=block)
  return Rollout(state.tokens, state.logprobs, state.lengths, state.step - 1)
