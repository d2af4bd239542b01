"""The jitted policy update: PPO-clip mini-batches with exact gradient accumulation.

One RL step hands `train_step` a rollout of S = B * N sequences (prompt left-padded to
P, response of T slots). The S sequences are cut into ``num_minibatches`` mini-batches
(one optimizer update each, as TTRL does: 8), each mini-batch into micro-batches of
``micro_batch_size`` for gradient accumulation. For a mini-batch with micro-batches k::

    loss = sum_k num_k / D,     grad = sum_k grad(num_k) / D,     D = sum_k den_k

where (num, den) come from `rl.policy_objective`; D depends only on the masks, so it is
computed first and the accumulated gradient equals the whole mini-batch's gradient.

A non-finite loss or gradient skips that update (params and optimizer state unchanged)
and is counted in the metrics; the trainer aborts after several in a row.

Optionally parameters are bf16 while the optimizer keeps fp32 master weights
(`MasterWeights`): updates are applied to the fp32 copy, the bf16 params are its cast.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import optax

from ttrl_jax import rl
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig

# Models this shallow run their layers unrolled (faster on CPU, cheap to compile);
# deeper ones scan over the stacked layers (one compiled block, fast compiles).
UNROLL_MAX_LAYERS = 4


@dataclasses.dataclass(frozen=True)
class LossConfig:
    """Static settings of the policy loss (changing them recompiles)."""

    clip_eps_low: float = 0.2
    clip_eps_high: float | None = None
    dual_clip_c: float | None = 3.0
    kl_as_loss: bool = False  # add kl_coef * KL(pi || pi_ref) to the loss
    kl_type: str = "k3"
    agg_mode: str = "token-mean"
    use_entropy: bool = False  # entropy bonus in the loss (entropy is always logged)
    num_minibatches: int = 1
    micro_batch_size: int = 0  # 0: the whole mini-batch at once
    logprob_chunk: int = 128
    remat: bool = True
    head_dtype: str = ""  # LM-head matmul operands: "" (the params' dtype) | bfloat16 | float32
    # rows come in groups of this many consecutive sequences sharing their prompt part
    # (the N trained samples of a prompt): the prompt runs through the blocks once per
    # group (`transformer.forward_shared_prompt`); 1: every row on its own
    prompt_group: int = 1


def make_schedule(
    lr: float,
    schedule: str,
    total_steps: int,
    warmup_ratio: float = 0.0,
    updates_per_step: int = 1,
    end_lr: float = 0.0,
):
    """Learning rate as a function of the optimizer update count.

    The schedule advances once per RL step: ``lr(count) = f(count // updates_per_step)``
    with ``f`` linear warmup over ``ceil(warmup_ratio * total_steps)`` steps followed by
    cosine decay to ``end_lr`` at ``total_steps`` ("cosine"), or constant after warmup.
    """
    warmup = int(-(-warmup_ratio * total_steps // 1)) if warmup_ratio > 0 else 0
    if schedule == "cosine":
        f = optax.warmup_cosine_decay_schedule(
            0.0 if warmup else lr, lr, max(warmup, 0), max(total_steps, warmup + 1), end_lr
        )
    elif schedule == "constant":
        f = (
            optax.join_schedules(
                [optax.linear_schedule(0.0, lr, warmup), optax.constant_schedule(lr)], [warmup]
            )
            if warmup
            else optax.constant_schedule(lr)
        )
    else:
        raise ValueError(f"unknown lr schedule {schedule!r} (cosine, constant)")
    return lambda count: f(count // updates_per_step)


def make_optimizer(
    lr_schedule, weight_decay: float = 0.01, grad_clip: float = 1.0, b1=0.9, b2=0.999, eps=1e-8
) -> optax.GradientTransformation:
    """AdamW after global-norm clipping (clip <= 0 disables clipping)."""
    parts = [optax.clip_by_global_norm(grad_clip)] if grad_clip and grad_clip > 0 else []
    parts.append(optax.adamw(lr_schedule, b1=b1, b2=b2, eps=eps, weight_decay=weight_decay))
    return optax.chain(*parts)


class MasterState(NamedTuple):
    master: Any  # fp32 copy of the params
    inner: Any  # the wrapped optimizer's state (fp32)


class MasterWeights:
    """Keeps fp32 master params and optimizer state for low-precision params."""

    def __init__(self, tx: optax.GradientTransformation):
        self.tx = tx

    def init(self, params):
        master = jax.tree.map(lambda p: p.astype(jnp.float32), params)
        return MasterState(master, self.tx.init(master))

    def step(self, grads, state: MasterState, params):
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        updates, inner = self.tx.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, updates)
        new_params = jax.tree.map(lambda m, p: m.astype(p.dtype), master, params)
        return new_params, MasterState(master, inner)


class Plain:
    """The optimizer applied directly to the params (optimizer state in their dtype)."""

    def __init__(self, tx: optax.GradientTransformation):
        self.tx = tx

    def init(self, params):
        return self.tx.init(params)

    def step(self, grads, state, params):
        updates, state = self.tx.update(grads, state, params)
        return optax.apply_updates(params, updates), state


# Tokens per chunk of the fused LM-head log-prob: a [chunk, V] logits block stays small
# enough to be produced, reduced and consumed while cached (measured best at 256-1024 on
# CPU; a whole [S*T, V] block is ~2.5x slower per FLOP).
HEAD_CHUNK_TOKENS = 512


def _head_logits(x, w, tau, dtype):
    """z = x W^T / tau ``[n, V]`` in fp32, from ``dtype`` operands (fp32 accumulation)."""
    z = jnp.einsum("nd,vd->nv", x.astype(dtype), w, preferred_element_type=jnp.float32)
    return z / tau


def _head_chunk_fwd(x, y, w, tau, dtype):
    """One chunk: z = x W^T / tau ``[n, V]`` (fp32) -> lp, lse, E = sum_v p_v z_v ``[n]``."""
    z = _head_logits(x, w, tau, dtype)
    m = jnp.max(z, axis=-1, keepdims=True)
    e = jnp.exp(z - m)
    s = jnp.sum(e, axis=-1)
    lse = m[:, 0] + jnp.log(s)
    mean_z = jnp.sum(e * z, axis=-1) / s
    lp = jnp.take_along_axis(z, y[:, None], axis=-1)[:, 0] - lse
    return lp, lse, mean_z


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

    def chunk(dw, a):
        x, y, l, mz, gl, ge = a
        z = _head_logits(x, wc, tau, dtype)
        p = jnp.exp(z - l[:, None])
        hit = jnp.arange(z.shape[-1])[None, :] == y[:, None]
        dz = jnp.where(hit, gl[:, None], 0.0) - p * (gl[:, None] + ge[:, None] * (z - mz[:, None]))
        dz = (dz / tau).astype(dtype)  # [n, V]
        dx = jnp.einsum("nv,vd->nd", dz, wc, preferred_element_type=jnp.float32)
        dw = dw + jnp.einsum("nv,nd->vd", dz, x.astype(dtype), preferred_element_type=jnp.float32)
        return dw, dx.astype(x.dtype)

    dw0 = jnp.zeros(w.shape, jnp.float32)  # accumulated in fp32, returned in w's dtype
    dw, dxs = jax.lax.scan(chunk, dw0, (xs, ys, lse, mean_z, g_lp, g_ent))
    return dxs, None, dw.astype(w.dtype), jnp.zeros_like(tau)


_fused_head.defvjp(_fused_head_fwd, _fused_head_bwd)


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
    s, t, d = hidden.shape
    w = params["embed"] if cfg.tie_word_embeddings else params["lm_head"].T  # [V, D]
    n = s * t
    c = max(1, min(chunk, n))
    pad = (-n) % c
    xs = jnp.pad(hidden.reshape(n, d), ((0, pad), (0, 0))).reshape(-1, c, d)  # [C, c, D]
    ys = jnp.pad(targets.reshape(n), (0, pad)).reshape(-1, c)  # [C, c]
    tau = jnp.asarray(temperature, jnp.float32)
    lp, ent = _fused_head(xs, ys, w, tau, jnp.dtype(head_dtype or w.dtype))
    return lp.reshape(-1)[:n].reshape(s, t), ent.reshape(-1)[:n].reshape(s, t)


def sequence_logprobs(
    params,
    cfg: ModelConfig,
    tokens: jax.Array,
    attn_mask: jax.Array,
    resp_len: int,
    temperature,
    *,
    chunk: int = 128,
    with_entropy: bool = False,
    remat: bool = False,
    head_dtype: str = "",
    prompt_group: int = 1,
):
    """Log-probs (and entropies) of the last ``resp_len`` tokens of each sequence.

    Args:
      tokens: ``[S, L]`` prompt (left-padded) + response.
      attn_mask: ``[S, L]`` 1 for real tokens.
      resp_len: T, the response slots at the end of each row.
      temperature: the sampling temperature tau (logits are divided by it).
      chunk: time steps per LM-head chunk; the fused head takes
        ``min(chunk * S, HEAD_CHUNK_TOKENS)`` tokens at a time (never more memory).
      head_dtype: LM-head matmul operand dtype (see `fused_token_logprobs`).
      prompt_group: the S rows are S / prompt_group groups of consecutive rows whose first
        L - T tokens (and mask) are identical; each group's prompt then runs through the
        blocks once (1: no sharing). The caller guarantees the grouping.

    Returns:
      logprobs ``[S, T]`` (and entropies ``[S, T]``).
    """
    s, length = tokens.shape
    unroll = cfg.num_layers if cfg.num_layers <= UNROLL_MAX_LAYERS else 1
    if prompt_group > 1:
        if s % prompt_group:
            raise ValueError(f"{s} sequences do not split into prompt groups of {prompt_group}")
        b, p = s // prompt_group, length - resp_len
        tok = tokens.reshape(b, prompt_group, length)
        am = attn_mask.reshape(b, prompt_group, length)
        hp, hr = tfm.forward_shared_prompt(
            params,
            cfg,
            tok[:, 0, :p],
            am[:, 0, :p],
            tok[:, :, p:],
            am[:, :, p:],
            remat=remat,
            unroll=unroll,
        )  # [B, P, D], [B, G, T, D]
        # response token t is predicted by the hidden state before it: the prompt's last
        # for t = 0 (shared by the group), the response's own t - 1 after that
        first = jnp.broadcast_to(hp[:, None, p - 1 : p], (b, prompt_group, 1, hp.shape[-1]))
        h = jnp.concatenate([first, hr[:, :, : resp_len - 1]], axis=2).reshape(s, resp_len, -1)
    else:
        positions = tfm.positions_from_mask(attn_mask)  # [S, L]
        hidden, _ = tfm.forward(
            params,
            cfg,
            tokens[:, None],
            positions[:, None],
            key_mask=attn_mask[:, None].astype(bool),
            remat=remat,
            unroll=unroll,
        )
        h = hidden[:, 0, length - resp_len - 1 : length - 1]  # [S, T, D]
    targets = tokens[:, length - resp_len :]  # [S, T]
    chunk_tokens = min(chunk * tokens.shape[0], HEAD_CHUNK_TOKENS)
    lp, ent = fused_token_logprobs(params, cfg, h, targets, temperature, chunk_tokens, head_dtype)
    return (lp, ent) if with_entropy else lp


def _split(x: jax.Array, n_mb: int, n_micro: int) -> jax.Array:
    """``[S, ...] -> [n_mb, n_micro, S / (n_mb n_micro), ...]``."""
    return x.reshape((n_mb, n_micro, -1) + x.shape[1:])


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def train_step(
    params, opt_state, batch: dict, hyper: dict, *, cfg: ModelConfig, loss: LossConfig, opt
):
    """One RL step's policy update (pure; jit it with `make_train_step`).

    Args:
      params, opt_state: model params and optimizer state (donated).
      batch: ``tokens [S, L]`` int32, ``attn_mask [S, L]``, ``resp_mask [S, T]``,
        ``old_logprobs [S, T]``, ``advantages [S, T]`` (already broadcast) and, when
        ``loss.kl_as_loss``, ``ref_logprobs [S, T]``.
      hyper: traced scalars ``temperature``, ``kl_coef``, ``entropy_coef``.
      cfg, loss, opt: static model config, loss settings and optimizer wrapper.

    Returns:
      (params, opt_state, metrics) with metrics averaged over the mini-batches.
    """
    s, t = batch["resp_mask"].shape
    n_mb = loss.num_minibatches
    mb = s // n_mb
    micro = loss.micro_batch_size or mb
    if s % n_mb or mb % micro:
        raise ValueError(
            f"{s} sequences do not split into {n_mb} mini-batches of micro-batches of {micro}"
        )
    n_micro = mb // micro
    data = jax.tree.map(lambda x: _split(x, n_mb, n_micro), batch)

    def micro_objective(p, m):
        lp, ent = sequence_logprobs(
            p,
            cfg,
            m["tokens"],
            m["attn_mask"],
            t,
            hyper["temperature"],
            chunk=loss.logprob_chunk,
            with_entropy=True,
            remat=loss.remat,
            head_dtype=loss.head_dtype,
            prompt_group=math.gcd(loss.prompt_group, micro),
        )
        num, _, stats = rl.policy_objective(
            lp,
            m["old_logprobs"],
            m["advantages"],
            m["resp_mask"],
            ref_logprobs=m.get("ref_logprobs") if loss.kl_as_loss else None,
            entropies=ent,
            clip_eps_low=loss.clip_eps_low,
            clip_eps_high=loss.clip_eps_high,
            dual_clip_c=loss.dual_clip_c,
            kl_coef=hyper["kl_coef"] if loss.kl_as_loss else 0.0,
            kl_type=loss.kl_type,
            entropy_coef=hyper["entropy_coef"] if loss.use_entropy else 0.0,
            agg_mode=loss.agg_mode,
            max_len=t,
        )
        return num, stats

    def minibatch(carry, mbatch):
        p, o = carry
        # the denominator depends only on the masks: computed before the gradients
        dens = jax.vmap(lambda m: rl.aggregate(m, m, loss.agg_mode, t)[1])(mbatch["resp_mask"])
        den = jnp.maximum(jnp.sum(dens), 1e-12)

        def scaled(p_, m):
            num, stats = micro_objective(p_, m)
            return num / den, stats

        def accumulate(acc, m):
            (value, stats), g = jax.value_and_grad(scaled, has_aux=True)(p, m)
            g_acc, v_acc, st_acc = acc
            g_acc = jax.tree.map(lambda a, b: a + b.astype(jnp.float32), g_acc, g)
            return (g_acc, v_acc + value, jax.tree.map(jnp.add, st_acc, stats)), None

        first = jax.tree.map(lambda x: x[0], mbatch)
        stats_shape = jax.eval_shape(scaled, p, first)[1]
        init = (
            jax.tree.map(lambda x: jnp.zeros(x.shape, jnp.float32), p),
            jnp.zeros((), jnp.float32),
            jax.tree.map(lambda x: jnp.zeros(x.shape, x.dtype), stats_shape),
        )
        (grads, loss_val, stats), _ = jax.lax.scan(accumulate, init, mbatch)  # fp32 grads
        gnorm = _global_norm(grads)
        ok = jnp.isfinite(loss_val) & jnp.isfinite(gnorm)
        new_p, new_o = opt.step(grads, o, p)
        p = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_p, p)
        o = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_o, o)
        means = {k: rl.safe_div(v[0], v[1]) for k, v in stats.items()}
        metrics = {
            "loss": loss_val,
            "grad_norm": gnorm,
            "skipped": 1.0 - ok.astype(jnp.float32),
            **means,
        }
        return (p, o), metrics

    (params, opt_state), per_mb = jax.lax.scan(minibatch, (params, opt_state), data)
    metrics = {k: jnp.mean(v) for k, v in per_mb.items()}
    metrics["skipped"] = jnp.sum(per_mb["skipped"])
    return params, opt_state, metrics


def make_train_step(cfg: ModelConfig, loss: LossConfig, opt):
    """`train_step` jitted with params and optimizer state donated."""
    fn = functools.partial(train_step, cfg=cfg, loss=loss, opt=opt)
    return jax.jit(fn, donate_argnums=(0, 1))


def make_logprob_fn(
    cfg: ModelConfig,
    resp_len: int,
    chunk: int = 128,
    micro_batch: int = 0,
    head_dtype: str = "",
    prompt_group: int = 1,
):
    """Jitted ``(params, tokens [S, L], attn_mask [S, L], temperature) -> [S, T]`` log-probs,
    computed ``micro_batch`` sequences at a time (0: all at once), the LM head's matmuls
    in ``head_dtype`` ("": the params' dtype), rows sharing their prompt in groups of
    ``prompt_group`` (see `sequence_logprobs`)."""

    def fn(params, tokens, attn_mask, temperature):
        s = tokens.shape[0]
        mb = micro_batch or s
        if s % mb:
            raise ValueError(f"{s} sequences are not a multiple of {mb}")
        one = lambda xs: sequence_logprobs(
            params,
            cfg,
            xs[0],
            xs[1],
            resp_len,
            temperature,
            chunk=chunk,
            head_dtype=head_dtype,
            prompt_group=math.gcd(prompt_group, mb),
        )
        out = jax.lax.map(
            one, (tokens.reshape(s // mb, mb, -1), attn_mask.reshape(s // mb, mb, -1))
        )
        return out.reshape(s, resp_len)

    return jax.jit(fn)
