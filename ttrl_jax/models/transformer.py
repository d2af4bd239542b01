"""Decoder-only transformer (Qwen2 / Qwen2.5 / Llama-3 family) as pure JAX functions.

The math, per block ``l`` with input ``x`` (``[..., D]``)::

    h   = x + Attn(RMSNorm(x; g_attn))
    out = h + W_down (silu(W_gate n) * (W_up n)),   n = RMSNorm(h; g_mlp)
    RMSNorm(x; g) = g * x / sqrt(mean(x^2) + eps)        (statistics in fp32)

Attention is grouped-query: H query heads share K key/value heads (R = H / K each),
with rotary position embeddings on q and k::

    RoPE(x)_i = x_i cos(p w_j) - x_{i+Dh/2} sin(p w_j)  (first half, i < Dh/2, j = i)
    w_j = theta^(-2j/Dh)      (optionally rescaled per Llama-3 "llama3" rules)
    Attn = softmax(q k^T / sqrt(Dh) + mask) v           (scores and softmax in fp32)

Params are a nested dict of arrays; per-layer weights are stacked on a leading
``layers`` axis and the blocks run under `lax.scan`. `param_logical_axes` names every
axis for sharding. Positions are per row (``cumsum(mask) - 1`` for left padding).

One block function (`_block`) serves every call, with the attention passed in:

* full sequence (training, log-probs, logits; `forward`): tokens ``[B, G, L]`` (G a
  sample-group axis) with a causal key mask;
* prefill (`forward` with ``return_kv=True``): the same, also returning the per-layer k/v;
* prompt shared by G responses (`forward_shared_prompt`): the responses attend to their
  prompt's k/v as a *shared prefix*, without copies;
* decode (`rollout.engine`): one new token per slot against its KV cache and its
  prompt's prefix.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax import sharding
from ttrl_jax.models import cpu_kernels
from ttrl_jax.models.config import ModelConfig

Params = dict[str, Any]
_NEG = float(np.finfo(np.float32).min)


def param_logical_axes(cfg: ModelConfig) -> Params:
    """Logical axis names of every parameter (same tree structure as the params)."""
    layers = {
        "attn_norm": ("layers", "norm"),
        "wq": ("layers", "embed", "heads", "head_dim"),
        "wk": ("layers", "embed", "kv_heads", "head_dim"),
        "wv": ("layers", "embed", "kv_heads", "head_dim"),
        "wo": ("layers", "heads", "head_dim", "embed"),
        "mlp_norm": ("layers", "norm"),
        "w_gate": ("layers", "embed", "mlp"),
        "w_up": ("layers", "embed", "mlp"),
        "w_down": ("layers", "mlp", "embed"),
    }
    if cfg.qkv_bias:
        layers.update(
            bq=("layers", "heads", "head_dim"),
            bk=("layers", "kv_heads", "head_dim"),
            bv=("layers", "kv_heads", "head_dim"),
        )
    if cfg.o_bias:
        layers["bo"] = ("layers", "norm")
    if cfg.qk_norm:
        layers.update(q_norm=("layers", "head_dim"), k_norm=("layers", "head_dim"))
    if cfg.mlp_bias:
        layers.update(b_gate=("layers", "mlp"), b_up=("layers", "mlp"), b_down=("layers", "norm"))
    out = {"embed": ("vocab", "embed"), "layers": layers, "final_norm": ("norm",)}
    if not cfg.tie_word_embeddings:
        out["lm_head"] = ("embed", "vocab")
    return out


def param_shapes(cfg: ModelConfig) -> Params:
    """Shapes of every parameter (same tree structure as the params)."""
    nl, d, f, v = cfg.num_layers, cfg.hidden_size, cfg.intermediate_size, cfg.vocab_size
    h, k, dh = cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    layers = {
        "attn_norm": (nl, d),
        "wq": (nl, d, h, dh),
        "wk": (nl, d, k, dh),
        "wv": (nl, d, k, dh),
        "wo": (nl, h, dh, d),
        "mlp_norm": (nl, d),
        "w_gate": (nl, d, f),
        "w_up": (nl, d, f),
        "w_down": (nl, f, d),
    }
    if cfg.qkv_bias:
        layers.update(bq=(nl, h, dh), bk=(nl, k, dh), bv=(nl, k, dh))
    if cfg.o_bias:
        layers["bo"] = (nl, d)
    if cfg.qk_norm:
        layers.update(q_norm=(nl, dh), k_norm=(nl, dh))
    if cfg.mlp_bias:
        layers.update(b_gate=(nl, f), b_up=(nl, f), b_down=(nl, d))
    out = {"embed": (v, d), "layers": layers, "final_norm": (d,)}
    if not cfg.tie_word_embeddings:
        out["lm_head"] = (d, v)
    return out


def init_params(cfg: ModelConfig, key: jax.Array, dtype=jnp.float32, std: float = 0.02) -> Params:
    """Random parameters: N(0, std^2) weights, zero biases, unit norm gains."""
    shapes = param_shapes(cfg)
    flat, treedef = jax.tree.flatten_with_path(shapes, is_leaf=lambda x: isinstance(x, tuple))
    keys = jax.random.split(key, len(flat))
    leaves = []
    for (path, shape), k in zip(flat, keys):
        name = path[-1].key
        if "norm" in name:
            leaves.append(jnp.ones(shape, dtype))
        elif name.startswith("b"):
            leaves.append(jnp.zeros(shape, dtype))
        else:
            leaves.append((std * jax.random.normal(k, shape, jnp.float32)).astype(dtype))
    return jax.tree.unflatten(treedef, leaves)


def mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` accumulated in fp32, returned in ``a``'s dtype."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


def _swiglu(n, w_gate, w_up, w_down):
    """``(silu(n W_g) * (n W_u)) W_d`` for row-major tokens ``n [N, D]`` -> ``[N, D]``."""
    return mm(
        "nf,fd->nd", jax.nn.silu(mm("nd,df->nf", n, w_gate)) * mm("nd,df->nf", n, w_up), w_down
    )


# the block's operations as plain math; `ops_for` swaps in XLA CPU kernels where they pay
PLAIN = cpu_kernels.Ops(
    bias_add=lambda x, b: x + b, gain_mul=lambda x, g: g * x, project=mm, swiglu=_swiglu
)


def ops_for(dtype) -> cpu_kernels.Ops:
    """The operations for activations of ``dtype`` (`cpu_kernels.select`, the one place
    that chooses between the plain math and the CPU kernels)."""
    return cpu_kernels.select(dtype, PLAIN)


def rms_norm(x: jax.Array, gain: jax.Array, eps: float) -> jax.Array:
    """gain * x / sqrt(mean(x^2) + eps), statistics in fp32, result in x.dtype."""
    x32 = x.astype(jnp.float32)
    normed = x32 * jax.lax.rsqrt(jnp.mean(x32 * x32, axis=-1, keepdims=True) + eps)
    return ops_for(x.dtype).gain_mul(normed.astype(x.dtype), gain)


def rope_inv_freq(cfg: ModelConfig) -> np.ndarray:
    """Inverse frequencies w_j = theta^(-2j/Dh), j < Dh/2, with Llama-3 scaling if set.

    Llama-3 scaling (factor s, low/high frequency factors a/b, original context C):
    wavelength lambda_j = 2 pi / w_j; if lambda_j > C/a: w_j /= s; if lambda_j < C/b: keep;
    else interpolate: w_j = (1 - m) w_j / s + m w_j with m = (C/lambda_j - a) / (b - a).
    """
    dh = cfg.head_dim
    inv = 1.0 / (
        np.float32(cfg.rope_theta)
        ** (np.arange(0, dh, 2, dtype=np.int64).astype(np.float32) / np.float32(dh))
    )
    inv = inv.astype(np.float32)
    rs = cfg.rope_scaling_dict
    if rs:
        s, a, b = rs["factor"], rs["low_freq_factor"], rs["high_freq_factor"]
        ctx = rs["original_max_position_embeddings"]
        wavelen = (2 * np.pi / inv).astype(np.float32)
        scaled = np.where(wavelen > ctx / a, inv / s, inv).astype(np.float32)
        smooth = ((ctx / wavelen - a) / (b - a)).astype(np.float32)
        smoothed = ((1 - smooth) * scaled / s + smooth * scaled).astype(np.float32)
        medium = ~(wavelen < ctx / b) & ~(wavelen > ctx / a)
        inv = np.where(medium, smoothed, scaled).astype(np.float32)
    return inv


def apply_rope(x: jax.Array, positions: jax.Array, inv_freq: jax.Array) -> jax.Array:
    """Rotates x ``[..., L, H, Dh]`` by positions ``[..., L]`` (half-split convention)."""
    freqs = positions.astype(jnp.float32)[..., None] * inv_freq  # [..., L, Dh/2]
    emb = jnp.concatenate([freqs, freqs], axis=-1)[..., None, :]  # [..., L, 1, Dh]
    cos, sin = jnp.cos(emb).astype(x.dtype), jnp.sin(emb).astype(x.dtype)
    half = x.shape[-1] // 2
    rotated = jnp.concatenate([-x[..., half:], x[..., :half]], axis=-1)
    return x * cos + rotated * sin


def _attend(q, k, v, mask, prefix_k=None, prefix_v=None, prefix_mask=None):
    """Grouped-query attention over the group's own keys and an optional shared prefix.

    Args:
      q: ``[B, G, L, K, R, Dh]`` queries (already rotated).
      k, v: ``[B, G, S, K, Dh]`` the group's own keys / values.
      mask: ``[B|1, G|1, L, S]`` bool, which own keys each query may see.
      prefix_k, prefix_v: ``[B, P, K, Dh]`` keys / values shared by all G samples.
      prefix_mask: ``[B, P]`` bool.

    Returns:
      ``[B, G, L, K, R, Dh]`` attention output in v.dtype.
    """
    scale = q.shape[-1] ** -0.5
    s_own = (
        jnp.einsum("bglkrd,bgskd->bgkrls", q, k, preferred_element_type=jnp.float32) * scale
    )  # [B, G, K, R, L, S]
    s_own = jnp.where(mask[:, :, None, None], s_own, _NEG)
    if prefix_k is None:
        probs = jax.nn.softmax(s_own, axis=-1).astype(v.dtype)
        return mm("bgkrls,bgskd->bglkrd", probs, v)
    s_pre = (
        jnp.einsum("bglkrd,bpkd->bgkrlp", q, prefix_k, preferred_element_type=jnp.float32) * scale
    )  # [B, G, K, R, L, P]
    s_pre = jnp.where(prefix_mask[:, None, None, None, None, :], s_pre, _NEG)
    p = prefix_k.shape[1]
    probs = jax.nn.softmax(jnp.concatenate([s_pre, s_own], axis=-1), axis=-1).astype(v.dtype)
    return mm("bgkrlp,bpkd->bglkrd", probs[..., :p], prefix_v) + mm(
        "bgkrls,bgskd->bglkrd", probs[..., p:], v
    )


def _block(cfg: ModelConfig, lp: Params, x, positions, inv_freq, attend):
    """One decoder block, shared by prefill, decode and the training forward::

        x += W_o attend(rope(W_q n), rope(W_k n), W_v n),  n = rms_norm(x)
        x += W_down (silu(W_gate n) * W_up n),             n = rms_norm(x)

    (Qwen3: each query and key head is RMS-normed over Dh before RoPE.)

    Only the attention differs between the three: ``attend(q, k, v) -> (o, aux)`` gets
    the rotated queries ``[B, G, L, K, R, Dh]`` and this block's new keys / values
    ``[B, G, L, K, Dh]`` and returns the output ``[B, G, L, K, R, Dh]`` and whatever
    the caller keeps (k/v for a prefill, the updated cache for a decode step).
    """
    b, g, l, _ = x.shape
    kh, r, dh = cfg.num_kv_heads, cfg.num_heads // cfg.num_kv_heads, cfg.head_dim
    ops = ops_for(x.dtype)
    project, bias_add = ops.project, ops.bias_add
    n = rms_norm(x, lp["attn_norm"], cfg.rms_norm_eps)
    q = project("bgld,dhe->bglhe", n, lp["wq"])  # [B, G, L, H, Dh]
    k = project("bgld,dke->bglke", n, lp["wk"])  # [B, G, L, K, Dh]
    v = project("bgld,dke->bglke", n, lp["wv"])
    if cfg.qkv_bias:
        q, k, v = bias_add(q, lp["bq"]), bias_add(k, lp["bk"]), bias_add(v, lp["bv"])
    if cfg.qk_norm:
        q = rms_norm(q, lp["q_norm"], cfg.rms_norm_eps)
        k = rms_norm(k, lp["k_norm"], cfg.rms_norm_eps)
    q = apply_rope(q, positions, inv_freq)
    k = apply_rope(k, positions, inv_freq)
    o, aux = attend(q.reshape(b, g, l, kh, r, dh), k, v)
    o = project("bglhe,hed->bgld", o.reshape(b, g, l, kh * r, dh), lp["wo"])
    if cfg.o_bias:
        o = bias_add(o, lp["bo"])
    x = x + o
    n = rms_norm(x, lp["mlp_norm"], cfg.rms_norm_eps)
    if cfg.mlp_bias:
        gate = bias_add(project("bgld,df->bglf", n, lp["w_gate"]), lp["b_gate"])
        up = bias_add(project("bgld,df->bglf", n, lp["w_up"]), lp["b_up"])
        down = bias_add(
            project("bglf,fd->bgld", jax.nn.silu(gate) * up, lp["w_down"]), lp["b_down"]
        )
    else:
        rows = n.reshape(-1, n.shape[-1])  # [N = B G L, D]
        down = ops.swiglu(rows, lp["w_gate"], lp["w_up"], lp["w_down"]).reshape(x.shape)
    return x + down, aux


def causal_mask(key_mask: jax.Array) -> jax.Array:
    """``[B, G, L, L]`` bool: query i sees key j iff j <= i and key j is real
    (``key_mask [B, G, L]``)."""
    n = key_mask.shape[-1]
    return jnp.tril(jnp.ones((n, n), bool))[None, None] & key_mask[:, :, None, :]


def forward(
    params: Params,
    cfg: ModelConfig,
    tokens: jax.Array,
    positions: jax.Array,
    *,
    key_mask: jax.Array | None = None,
    return_kv: bool = False,
    unroll: int | bool = 1,
    remat: bool = False,
):
    """Runs the decoder over whole sequences and returns final-normed hidden states.

    (Decoding one token at a time against a KV cache is `rollout.engine`'s: it runs the
    same `_block` with a cache-reading ``attend``.)

    Args:
      params: the parameter tree.
      cfg: model config.
      tokens: ``[B, G, L]`` int32.
      positions: ``[B, G, L]`` int32 rotary positions.
      key_mask: ``[B, G, L]`` bool; which of the L tokens are real. Keys are visible to a
        query if real and not in its future.
      return_kv: also return the per-layer k/v ``[layers, B, G, L, K, Dh]`` (prefill).
      unroll: `lax.scan` unroll factor over layers.
      remat: rematerialise each block in the backward pass, so training stores one
        activation per layer instead of all intermediates.

    Returns:
      ``(hidden [B, G, L, D], kv)`` with kv the stacked k/v (``return_kv``) or None.
    """
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    x = jnp.take(params["embed"], tokens, axis=0)  # [B, G, L, D]
    x = sharding.constrain(x, ("batch", None, None, None))
    if key_mask is None:
        key_mask = jnp.ones(tokens.shape, bool)
    mask = causal_mask(key_mask)  # [B, G, L, L]

    def body(x, lp):
        fn = lambda q, k, v: (_attend(q, k, v, mask), (k, v) if return_kv else None)
        return _block(cfg, lp, x, positions, inv_freq, fn)

    if remat:
        body = jax.checkpoint(body)
    x, kv = jax.lax.scan(body, x, params["layers"], unroll=unroll)
    aux = {"k": kv[0], "v": kv[1]} if return_kv else None
    return rms_norm(x, params["final_norm"], cfg.rms_norm_eps), aux


def forward_shared_prompt(
    params: Params,
    cfg: ModelConfig,
    prompt: jax.Array,
    prompt_mask: jax.Array,
    resp: jax.Array,
    resp_mask: jax.Array,
    *,
    unroll: int | bool = 1,
    remat: bool = False,
):
    """Full-sequence forward of G responses per prompt that share one pass over the prompt.

    Equivalent to `forward` on the B G rows ``prompt[b] ++ resp[b, g]`` (up to float
    summation order), but each block runs on the B prompts once instead of B G times:
    the responses attend to their prompt's k/v as a shared prefix (as in decoding), and
    gradients reach the prompt's blocks through those k/v. For a row of P prompt and T
    response tokens this saves a fraction (G - 1) P / (G (P + T)) of the blocks' work.

    Args:
      prompt: ``[B, P]`` int32, left-padded; prompt_mask ``[B, P]`` 1 for real tokens.
      resp: ``[B, G, T]`` int32; resp_mask ``[B, G, T]`` 1 for real tokens.
      unroll, remat: as in `forward`.

    Returns:
      ``(prompt_hidden [B, P, D], resp_hidden [B, G, T, D])``, final-normed.
    """
    inv_freq = jnp.asarray(rope_inv_freq(cfg))
    pmask = prompt_mask.astype(bool)
    rmask = resp_mask.astype(bool)
    pos_p = positions_from_mask(prompt_mask)[:, None]  # [B, 1, P]
    n_prompt = jnp.sum(prompt_mask.astype(jnp.int32), axis=-1)  # [B]
    # positions of the concatenated row: cumsum over prompt ++ response, minus 1
    pos_r = jnp.maximum(
        n_prompt[:, None, None] + jnp.cumsum(resp_mask.astype(jnp.int32), axis=-1) - 1, 0
    )  # [B, G, T]
    mask_p = causal_mask(pmask[:, None])  # [B, 1, P, P]
    mask_r = causal_mask(rmask)  # [B, G, T, T]
    xp = jnp.take(params["embed"], prompt, axis=0)[:, None]  # [B, 1, P, D]
    xr = jnp.take(params["embed"], resp, axis=0)  # [B, G, T, D]
    xp = sharding.constrain(xp, ("batch", None, None, None))
    xr = sharding.constrain(xr, ("batch", None, None, None))

    def body(carry, lp):
        xp, xr = carry
        xp, (kp, vp) = _block(
            cfg, lp, xp, pos_p, inv_freq, lambda q, k, v: (_attend(q, k, v, mask_p), (k, v))
        )
        prefix = (kp[:, 0], vp[:, 0], pmask)  # [B, P, K, Dh] x2, [B, P]
        xr, _ = _block(
            cfg, lp, xr, pos_r, inv_freq, lambda q, k, v: (_attend(q, k, v, mask_r, *prefix), None)
        )
        return (xp, xr), None

    if remat:
        body = jax.checkpoint(body)
    (xp, xr), _ = jax.lax.scan(body, (xp, xr), params["layers"], unroll=unroll)
    eps = cfg.rms_norm_eps
    return rms_norm(xp[:, 0], params["final_norm"], eps), rms_norm(xr, params["final_norm"], eps)


def lm_head_weight(params: Params, cfg: ModelConfig) -> jax.Array:
    """``[D, V]`` output projection (the embedding transposed when tied)."""
    return params["embed"].T if cfg.tie_word_embeddings else params["lm_head"]


def head_logits(
    hidden: jax.Array, w: jax.Array, dtype=None, vocab_major: bool = False
) -> jax.Array:
    """The LM head, in one place: fp32 logits ``[..., V]`` = hidden ``[..., D]`` @ W.

    ``w`` is the head weight as ``[D, V]`` (`lm_head_weight`), or as ``[V, D]`` with
    ``vocab_major`` (the fused LM-head pass keeps that layout: its backward accumulates
    dW^T). ``dtype`` casts ``hidden`` (None: as it is; ``w`` is passed in the dtype it
    should be used in); products are accumulated in fp32. The two layouts are two XLA
    dot layouts, not one transposed into the other, so each caller's numerics stay
    bit-for-bit what they were.
    """
    if dtype is not None:
        hidden = hidden.astype(dtype)
    spec = "...d,vd->...v" if vocab_major else "...d,dv->...v"
    return jnp.einsum(spec, hidden, w, preferred_element_type=jnp.float32)


def positions_from_mask(mask: jax.Array) -> jax.Array:
    """Rotary positions ``cumsum(mask) - 1`` (clipped at 0 for left padding)."""
    return jnp.maximum(jnp.cumsum(mask.astype(jnp.int32), axis=-1) - 1, 0)
