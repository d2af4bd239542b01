"""The fused LM head: per-token log-probs and entropies of sampled tokens, and losses on them.

For hidden states ``h [S, T, D]``, targets ``y [S, T]``, head ``W [V, D]`` and
temperature ``tau`` the head computes, ``chunk`` tokens at a time (never an
``[S*T, V]`` logits block)::

    z = W h / tau,   lp = z_y - logsumexp(z),   ent = logsumexp(z) - E,   E = sum_v p_v z_v

`fused_token_logprobs` returns (lp, ent) with a hand-written VJP (the backward pass
recomputes each chunk's logits); `fused_head_loss` returns a per-token loss's sum and
takes the head's gradient in the forward pass (no recompute); `fused_token_stats` adds
the self-certainty ``cert = KL(U || p) = logsumexp(z) - mean_v z_v - log V`` in the same
pass (forward only: a reward, never differentiated). Matmul operands may be
bf16 (``head_dtype``) with fp32 accumulation, softmax and weight gradient.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp

from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig

# Tokens per chunk of the fused LM-head log-prob: a [chunk, V] logits block stays small
# enough to be produced, reduced and consumed while cached (measured best at 256-1024 on
# CPU; a whole [S*T, V] block is ~2.5x slower per FLOP).
HEAD_CHUNK_TOKENS = 512


def _head_logits(x, w, dtype):
    """Raw logits r = x W^T ``[n, V]`` in fp32, from ``dtype`` operands (fp32 accumulation).

    The temperature is applied inside the softmax passes (``z = r / tau``), never as a
    pass of its own over the ``[n, V]`` block."""
    return tfm.head_logits(x, w, dtype, vocab_major=True)


def _softmax_stats(r, y, inv):
    """Per row of raw logits ``r [n, V]`` at inverse temperature ``inv``: ``e = exp(z - max z)``
    ``[n, V]`` (z = r inv), its sum ``s``, ``Er = sum_v p_v r_v``, ``lse = logsumexp(z)``
    and ``lp = z_y - lse`` (``[n, 1]`` / ``[n]``). Two reductions over the block (the max,
    then the sums of e and e r), no materialised z or p."""
    m = jnp.max(r, axis=-1, keepdims=True)
    e = jnp.exp((r - m) * inv)
    s = jnp.sum(e, axis=-1, keepdims=True)
    er = jnp.sum(e * r, axis=-1, keepdims=True) / s
    lse = (m * inv + jnp.log(s))[:, 0]
    lp = jnp.take_along_axis(r, y[:, None], axis=-1)[:, 0] * inv - lse
    return e, s, er, lse, lp


def _head_chunk_fwd(x, y, w, tau, dtype):
    """One chunk: lp, lse and ``E = sum_v p_v z_v`` ``[n]`` (z = x W^T / tau, fp32)."""
    inv = 1.0 / tau
    _, _, er, lse, lp = _softmax_stats(_head_logits(x, w, dtype), y, inv)
    return lp, lse, er[:, 0] * inv


def _transposed(xs, dtype):
    """``[C, n, D] -> [C, D, n]`` in ``dtype``: each chunk's hidden states transposed once,
    outside the chunk loop, so ``dW^T += x^T dz`` is a row-major ``[D, n] x [n, V]``
    matmul (XLA CPU folds an in-loop transpose into the dot as a contraction over the
    leading axis, which it runs as an fp32 dot even for bf16 operands: 110 vs 181
    GFLOP/s bf16, 144 vs 166 fp32, measured on the bench head)."""
    return jnp.swapaxes(xs, 1, 2).astype(dtype)


def _zeros_dwt(w):
    """The fp32 accumulator of ``dW^T`` ``[D, V]``."""
    return jnp.zeros(w.shape[::-1], jnp.float32)


def _dlogits(r, e, s, er, y, g_lp, g_ent, inv, dtype):
    """Gradient w.r.t. the raw logits ``r = x W^T`` ``[n, V]`` in ``dtype``::

        dz = g_lp (onehot(y) - p) - g_ent p (z - E),   dr = dz / tau,   z = r / tau

    from ``e``, ``s`` with ``p = e / s``, ``er = E tau`` ``[n, 1]`` and the cotangents
    ``[n]``; per element ``dr = (onehot g_lp - e (a + b r)) / tau`` with per-row
    ``a = (g_lp - g_ent er / tau) / s`` and ``b = g_ent / (tau s)``."""
    hit = jnp.arange(r.shape[-1])[None, :] == y[:, None]
    gl, ge = g_lp[:, None], g_ent[:, None]
    a = (gl - ge * er * inv) / s
    b = ge * inv / s
    dr = jnp.where(hit, gl, 0.0) - e * (a + b * r)
    return (dr * inv).astype(dtype)


def _head_grads(dwt, dz, xt, wc, x_dtype):
    """One chunk's ``dW^T += x^T dz`` ``[D, V]`` (fp32) and ``dx = dz W`` ``[n, D]``."""
    dwt = dwt + jnp.einsum("dn,nv->dv", xt, dz, preferred_element_type=jnp.float32)
    dx = jnp.einsum("nv,vd->nd", dz, wc, preferred_element_type=jnp.float32)
    return dwt, dx.astype(x_dtype)


@functools.partial(jax.custom_vjp, nondiff_argnums=(4,))
def _fused_head(xs, ys, w, tau, dtype):
    """``xs [C, n, D]``, ``ys [C, n]``, ``w [V, D]`` -> (log-probs, entropies) ``[C, n]``;
    the head's matmuls take ``dtype`` operands."""
    return _fused_head_fwd(xs, ys, w, tau, dtype)[0]


def _fused_head_fwd(xs, ys, w, tau, dtype):
    wc = w.astype(dtype)
    lp, lse, mean_z = jax.lax.map(lambda a: _head_chunk_fwd(a[0], a[1], wc, tau, dtype), (xs, ys))
    return (lp, lse - mean_z), (xs, ys, w, tau, lse, mean_z)


def _fused_head_bwd(dtype, res, cot):
    """dz = g_lp (onehot(y) - p) - g_ent p (z - E);  dx = dz W / tau,  dW = dz^T x / tau."""
    xs, ys, w, tau, lse, mean_z = res
    g_lp, g_ent = cot  # [C, n] each
    wc = w.astype(dtype)
    inv = 1.0 / tau

    def chunk(dwt, a):
        x, xt, y, l, mz, gl, ge = a
        r = _head_logits(x, wc, dtype)
        p = jnp.exp(r * inv - l[:, None])  # e / s with s = 1
        dz = _dlogits(r, p, 1.0, mz[:, None] * tau, y, gl, ge, inv, dtype)
        return _head_grads(dwt, dz, xt, wc, x.dtype)

    dwt, dxs = jax.lax.scan(
        chunk, _zeros_dwt(w), (xs, _transposed(xs, dtype), ys, lse, mean_z, g_lp, g_ent)
    )
    return dxs, None, dwt.T.astype(w.dtype), jnp.zeros_like(tau)


_fused_head.defvjp(_fused_head_fwd, _fused_head_bwd)


@functools.partial(jax.custom_vjp, nondiff_argnums=(5, 6))
def _fused_head_loss(xs, ys, w, tau, aux, dtype, token_loss):
    """``sum_t token_loss(lp, ent, aux)_t`` and (lp, ent) ``[C, n]`` (not differentiable)."""
    lp, ent = _fused_head(xs, ys, w, tau, dtype)
    return jnp.sum(token_loss(lp, ent, aux)), lp, ent


def _fused_head_loss_fwd(xs, ys, w, tau, aux, dtype, token_loss):
    """Forward and gradient at once: per chunk, ``(g_lp, g_ent) = d token_loss / d(lp, ent)``
    (elementwise per token), then dz, dx = dz W / tau and dW += dz^T x / tau."""
    wc = w.astype(dtype)
    tok_aux, scalars = aux
    inv = 1.0 / tau

    def chunk(dwt, a):
        x, xt, y, ta = a
        r = _head_logits(x, wc, dtype)
        e, s, er, lse, lp = _softmax_stats(r, y, inv)
        ent = lse - er[:, 0] * inv
        val, vjp = jax.vjp(lambda lp_, ent_: token_loss(lp_, ent_, (ta, scalars)), lp, ent)
        gl, ge = vjp(jnp.ones_like(val))  # [n] each
        dz = _dlogits(r, e, s, er, y, gl, ge, inv, dtype)
        dwt, dx = _head_grads(dwt, dz, xt, wc, x.dtype)
        return dwt, (jnp.sum(val), lp, ent, dx)

    dwt, (vals, lp, ent, dxs) = jax.lax.scan(
        chunk, _zeros_dwt(w), (xs, _transposed(xs, dtype), ys, tok_aux)
    )
    return (jnp.sum(vals), lp, ent), (dxs, dwt.T.astype(w.dtype), aux, tau)


def _fused_head_loss_bwd(dtype, token_loss, res, cot):
    """The loss's cotangent scales the gradients taken in the forward pass; lp and ent
    leave `fused_head_loss` through ``stop_gradient``, so their cotangents are zero."""
    dxs, dw, aux, tau = res
    g = cot[0]
    zeros = jax.tree.map(jnp.zeros_like, aux)
    return (g * dxs).astype(dxs.dtype), None, (g * dw).astype(dw.dtype), jnp.zeros_like(tau), zeros


_fused_head_loss.defvjp(_fused_head_loss_fwd, _fused_head_loss_bwd)


def _chunks(x: jax.Array, chunk: int) -> jax.Array:
    """``[S, T, ...] -> [C, c, ...]``: the S*T tokens in chunks of ``c = min(chunk, S*T)``,
    the last one zero-padded."""
    n = x.shape[0] * x.shape[1]
    c = max(1, min(chunk, n))
    flat = x.reshape((n,) + x.shape[2:])
    flat = jnp.pad(flat, [(0, (-n) % c)] + [(0, 0)] * (x.ndim - 2))
    return flat.reshape((-1, c) + x.shape[2:])


def _unchunk(x: jax.Array, s: int, t: int) -> jax.Array:
    """``[C, c] -> [S, T]`` (drops the padding of `_chunks`)."""
    return x.reshape(-1)[: s * t].reshape(s, t)


def fused_token_logprobs(
    params,
    cfg: ModelConfig,
    hidden: jax.Array,
    targets: jax.Array,
    temperature,
    chunk: int,
    head_dtype: str = "",
):
    """Per-token log-probs and entropies through the LM head, fused, with a hand-written VJP.

    For each token with hidden state h and target y (tau the temperature, W ``[V, D]``)::

        z = W h / tau,  lp = z_y - logsumexp(z),  ent = logsumexp(z) - E,  E = sum_v p_v z_v
        d lp / dz = onehot(y) - p,           d ent / dz = -p (z - E)

    The S*T tokens are processed ``chunk`` at a time; the backward pass recomputes each
    chunk's logits once and turns them straight into ``dh`` and ``dW`` (no max/sum passes,
    no scatter of the target one-hot, no ``[S*T, V]`` block). Peak extra memory is a few
    ``[chunk, V]`` fp32 blocks; only ``lse`` and ``E`` ``[S*T]`` are saved for backward.

    Args:
      hidden: ``[S, T, D]`` hidden states whose next token is ``targets`` ``[S, T]``.
      chunk: tokens per chunk.
      head_dtype: dtype of the head's matmul operands ("" : the weight's own). bfloat16
        with fp32 params is the mixed-precision head: bf16 operands, fp32 accumulation and
        softmax, dW accumulated and returned in fp32 (the sampler's ``head_dtype`` twin).

    Returns:
      logprobs, entropies ``[S, T]`` fp32.
    """
    s, t, _ = hidden.shape
    w = tfm.lm_head_weight(params, cfg).T  # [V, D]
    xs, ys = _chunks(hidden, chunk), _chunks(targets, chunk)
    tau = jnp.asarray(temperature, jnp.float32)
    lp, ent = _fused_head(xs, ys, w, tau, jnp.dtype(head_dtype or w.dtype))
    return _unchunk(lp, s, t), _unchunk(ent, s, t)


def _head_chunk_stats(x, y, w, tau, dtype):
    """One chunk's lp, ent and self-certainty ``[n]`` (see `fused_token_stats`)."""
    inv = 1.0 / tau
    r = _head_logits(x, w, dtype)  # [n, V] fp32
    _, _, er, lse, lp = _softmax_stats(r, y, inv)
    mean_z = jnp.mean(r, axis=-1) * inv  # [n]
    return lp, lse - er[:, 0] * inv, lse - mean_z - jnp.log(jnp.float32(r.shape[-1]))


def fused_token_stats(
    params,
    cfg: ModelConfig,
    hidden: jax.Array,
    targets: jax.Array,
    temperature,
    chunk: int,
    head_dtype: str = "",
):
    """Per-token log-prob, entropy and self-certainty through the LM head (forward only).

    With ``z = W h / tau`` over the V vocabulary entries and ``p = softmax(z)``::

        lp   = z_y - logsumexp(z)
        ent  = -sum_v p_v log p_v = logsumexp(z) - sum_v p_v z_v
        cert = KL(U || p) = -(1/V) sum_v log(V p_v) = logsumexp(z) - mean_v z_v - log V

    ``cert`` is the self-certainty of Zhao et al., "Learning to Reason without External
    Rewards" (arXiv 2505.19590): 0 for the uniform distribution, large when p is peaked.
    One extra reduction over each ``[chunk, V]`` logits block, as the entropy already has.

    Args, as `fused_token_logprobs`. Returns (lp, ent, cert) ``[S, T]`` fp32, under
    ``stop_gradient``.
    """
    s, t, _ = hidden.shape
    w = tfm.lm_head_weight(params, cfg).T  # [V, D]
    dtype = jnp.dtype(head_dtype or w.dtype)
    wc = w.astype(dtype)
    tau = jnp.asarray(temperature, jnp.float32)
    xs, ys = _chunks(hidden, chunk), _chunks(targets, chunk)
    out = jax.lax.map(lambda a: _head_chunk_stats(a[0], a[1], wc, tau, dtype), (xs, ys))
    return tuple(_unchunk(jax.lax.stop_gradient(o), s, t) for o in out)


def fused_head_loss(
    params,
    cfg: ModelConfig,
    hidden: jax.Array,
    targets: jax.Array,
    temperature,
    chunk: int,
    head_dtype: str,
    token_loss,
    token_aux: dict,
    scalars: dict,
):
    """``sum_t token_loss(lp, ent)_t`` through the LM head, its gradient taken in the forward.

    When the loss is a sum of per-token terms, each a function of that token's log-prob
    and entropy only (`rl.token_losses` times `rl.aggregate_weights`), the head needs no
    backward pass of its own: each chunk's logits give lp and ent, then at once
    ``(g_lp, g_ent) = d l_t / d(lp_t, ent_t)`` and (as in `fused_token_logprobs`)::

        dz = g_lp (onehot(y) - p) - g_ent p (z - E),   dh = dz W / tau,   dW += dz^T h / tau

    Three ``[chunk, V] x D`` matmuls per chunk instead of four (no logits recompute in the
    backward pass); the saved ``dh`` ``[S, T, D]`` and ``dW`` are scaled by the loss's
    cotangent in the backward pass.

    Args:
      hidden, targets, temperature, chunk, head_dtype: as in `fused_token_logprobs`.
      token_loss: ``(lp [n], ent [n], (aux, scalars)) -> [n]`` elementwise per token (the
        weighted per-token loss; static, it is traced once per chunk).
      token_aux: per-token inputs ``[S, T]`` of ``token_loss`` (padded chunks get zeros:
        the weight must make their terms vanish).
      scalars: scalar inputs of ``token_loss`` (e.g. traced coefficients).

    Returns:
      (loss, logprobs ``[S, T]``, entropies ``[S, T]``); only the loss is differentiable.
    """
    s, t, _ = hidden.shape
    w = tfm.lm_head_weight(params, cfg).T  # [V, D]
    aux = (jax.tree.map(lambda a: _chunks(jnp.broadcast_to(a, (s, t)), chunk), token_aux), scalars)
    tau = jnp.asarray(temperature, jnp.float32)
    dtype = jnp.dtype(head_dtype or w.dtype)
    loss, lp, ent = _fused_head_loss(
        _chunks(hidden, chunk), _chunks(targets, chunk), w, tau, aux, dtype, token_loss
    )
    lp, ent = jax.lax.stop_gradient((lp, ent))
    return loss, _unchunk(lp, s, t), _unchunk(ent, s, t)
