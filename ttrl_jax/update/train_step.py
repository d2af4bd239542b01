"""The jitted policy update: PPO-clip mini-batches with exact gradient accumulation.

One RL step hands `train_step` a rollout of S = B * N sequences (prompt left-padded to
P, response of T slots). The S sequences are cut into ``num_minibatches`` mini-batches
(one optimizer update each, as TTRL does: 8), each mini-batch into micro-batches of
``micro_batch_size`` for gradient accumulation. For a mini-batch with micro-batches k::

    loss = sum_k num_k / D,     grad = sum_k grad(num_k) / D,     D = sum_k den_k

where num is the micro-batch's aggregated loss (`fused_objective`: the per-token
`rl.token_losses` weighted by `rl.aggregate_weights`) and D is `rl.aggregate`'s denominator of the
whole mini-batch's mask; D depends only on the masks, so it is computed first and the
accumulated gradient equals the whole mini-batch's gradient.

A non-finite loss or gradient, non-finite new params, or (with
``max_update_ratio`` r > 0) an update with ||p' - p|| > r ||p|| skips that
update (params and optimizer state unchanged) and is counted in the metrics; the trainer
does not checkpoint a step whose updates were all skipped and aborts after several in a
row. ``update_ratio`` logs the largest ||p' - p|| / ||p|| of the step.

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

from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig
from ttrl_jax.update import rl
from ttrl_jax.update.lm_head import (
    HEAD_CHUNK_TOKENS,
    fused_head_loss,
    fused_token_logprobs,
    fused_token_stats,
)

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
    kl_type: str = "low_var_kl"  # one of rl.KL_TYPES (verl's kl_penalty names)
    kl_clamp: float | None = None  # None: verl's (low_var_kl only, at +-10); c: all at +-c
    agg_mode: str = "token-mean"  # one of rl.AGG_MODES (verl's loss_agg_mode names)
    loss_scale_factor: float | None = None  # the *-norm modes' constant; None: T
    use_entropy: bool = False  # entropy bonus in the loss (entropy is always logged)
    num_minibatches: int = 1
    micro_batch_size: int = 0  # 0: the whole mini-batch at once
    logprob_chunk: int = 128
    remat: bool = True
    head_dtype: str = ""  # LM-head matmul operands: "" (the params' dtype) | bfloat16 | float32
    # reject an update with ||p_new - p|| > this x ||p|| (divergence; 0: no such check)
    max_update_ratio: float = 0.0
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

    def step(self, grads, state: MasterState, params, scale=1.0):
        grads = jax.tree.map(lambda g: g.astype(jnp.float32), grads)
        updates, inner = self.tx.update(grads, state.inner, state.master)
        master = optax.apply_updates(state.master, _scaled(updates, scale))
        new_params = jax.tree.map(lambda m, p: m.astype(p.dtype), master, params)
        return new_params, MasterState(master, inner)


class Plain:
    """The optimizer applied directly to the params (optimizer state in their dtype)."""

    def __init__(self, tx: optax.GradientTransformation):
        self.tx = tx

    def init(self, params):
        return self.tx.init(params)

    def step(self, grads, state, params, scale=1.0):
        updates, state = self.tx.update(grads, state, params)
        return optax.apply_updates(params, _scaled(updates, scale)), state


def _scaled(updates, scale):
    """``scale * update`` (AdamW's update is proportional to its lr, weight decay
    included, so this is the update at lr x scale). A Python 1.0 (no guard) leaves the
    program untouched; a traced scale may let XLA fuse the product differently, which
    moves last bits even at 1."""
    if isinstance(scale, (int, float)) and scale == 1:
        return updates
    return jax.tree.map(lambda u: (u * scale).astype(u.dtype), updates)


def response_hidden(
    params,
    cfg: ModelConfig,
    tokens: jax.Array,
    attn_mask: jax.Array,
    resp_len: int,
    *,
    remat: bool = False,
    prompt_group: int = 1,
) -> jax.Array:
    """Final hidden states ``[S, T, D]`` that predict the last ``resp_len`` tokens of each row
    (the state before each response token); arguments as in `sequence_logprobs`."""
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
        return jnp.concatenate([first, hr[:, :, : resp_len - 1]], axis=2).reshape(s, resp_len, -1)
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
    return hidden[:, 0, length - resp_len - 1 : length - 1]  # [S, T, D]


def head_chunk_tokens(chunk: int, seqs: int) -> int:
    """Tokens per fused-head chunk: ``chunk`` time steps of all rows, at most
    `HEAD_CHUNK_TOKENS` (never more memory)."""
    return min(chunk * seqs, HEAD_CHUNK_TOKENS)


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
    stats: bool = False,
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
      stats: return (logprobs, entropies, self-certainties) ``[S, T]`` from the forward-only
        `fused_token_stats` instead (for label-free rewards; not differentiable).

    Returns:
      logprobs ``[S, T]`` (and entropies ``[S, T]``).
    """
    h = response_hidden(
        params, cfg, tokens, attn_mask, resp_len, remat=remat, prompt_group=prompt_group
    )
    targets = tokens[:, tokens.shape[1] - resp_len :]  # [S, T]
    c = head_chunk_tokens(chunk, tokens.shape[0])
    if stats:
        return fused_token_stats(params, cfg, h, targets, temperature, c, head_dtype)
    lp, ent = fused_token_logprobs(params, cfg, h, targets, temperature, c, head_dtype)
    return (lp, ent) if with_entropy else lp


def _split(x: jax.Array, n_mb: int, n_micro: int) -> jax.Array:
    """``[S, ...] -> [n_mb, n_micro, S / (n_mb n_micro), ...]``."""
    return x.reshape((n_mb, n_micro, -1) + x.shape[1:])


def _diff(a: jax.Array, b: jax.Array) -> jax.Array:
    return a.astype(jnp.float32) - b.astype(jnp.float32)


def _scaled_norm(tree) -> jax.Array:
    """sqrt(sum x^2) over all leaves computed as m sqrt(sum (x/m)^2), m = max |x|, so that
    finite values up to the float32 maximum do not overflow (inf or NaN entries give a
    non-finite result)."""
    leaves = [x.astype(jnp.float32) for x in jax.tree.leaves(tree)]
    m = functools.reduce(jnp.maximum, [jnp.max(jnp.abs(x)) for x in leaves])
    scale = jnp.where(m > 0, m, 1.0)
    return scale * jnp.sqrt(sum(jnp.sum(jnp.square(x / scale)) for x in leaves))


def _global_norm(tree) -> jax.Array:
    return jnp.sqrt(sum(jnp.sum(jnp.square(x.astype(jnp.float32))) for x in jax.tree.leaves(tree)))


def _loss_kwargs(loss: LossConfig) -> dict:
    """The static arguments of `rl.token_losses` in ``loss``."""
    return {
        "clip_eps_low": loss.clip_eps_low,
        "clip_eps_high": loss.clip_eps_high,
        "dual_clip_c": loss.dual_clip_c,
        "kl_type": loss.kl_type,
        "kl_clamp": loss.kl_clamp,
    }


def _weighted_token_loss(lp, ent, aux, *, loss: LossConfig):
    """``w_t l_t`` ``[n]``: `rl.token_losses` weighted by `rl.aggregate_weights` (the
    per-token loss `fused_head_loss` differentiates in the LM head's forward pass)."""
    tok, coefs = aux
    total, _ = rl.token_losses(
        lp,
        tok["old_logprobs"],
        tok["advantages"],
        tok["mask"],
        tok.get("ref_logprobs"),
        ent if loss.use_entropy else None,
        **_loss_kwargs(loss),
        **coefs,
    )
    return tok["weight"] * total


def fused_objective(
    p, m: dict, hyper: dict, *, cfg: ModelConfig, loss: LossConfig, resp_len: int, micro: int
):
    """One micro-batch's loss numerator and metric sums, ``(num, stats)``.

    The LM head's gradient is taken in its forward pass from the per-token loss
    (`fused_head_loss`: 3 head matmuls per token instead of the 4 of log-probs and then
    their VJP); the blocks below it are differentiated by autodiff. ``m`` holds the
    micro-batch's ``tokens [micro, L]``, ``attn_mask``, ``resp_mask [micro, T]``,
    ``old_logprobs``, ``advantages`` (and ``ref_logprobs`` for a KL loss).
    """
    t = resp_len
    scale = t if loss.loss_scale_factor is None else loss.loss_scale_factor
    ref = m.get("ref_logprobs") if loss.kl_as_loss else None
    coefs = {
        "kl_coef": hyper["kl_coef"] if loss.kl_as_loss else 0.0,
        "entropy_coef": hyper["entropy_coef"] if loss.use_entropy else 0.0,
    }
    group = math.gcd(loss.prompt_group, micro)
    h = response_hidden(
        p, cfg, m["tokens"], m["attn_mask"], t, remat=loss.remat, prompt_group=group
    )  # [micro, T, D]
    tok = {
        "old_logprobs": m["old_logprobs"],
        "advantages": m["advantages"],
        "mask": m["resp_mask"],
        "weight": rl.aggregate_weights(m["resp_mask"], loss.agg_mode, scale),
    }
    if ref is not None:
        tok["ref_logprobs"] = ref
    num, lp, ent = fused_head_loss(
        p,
        cfg,
        h,
        m["tokens"][:, -t:],
        hyper["temperature"],
        head_chunk_tokens(loss.logprob_chunk, micro),
        loss.head_dtype,
        functools.partial(_weighted_token_loss, loss=loss),
        tok,
        coefs,
    )
    _, stats = rl.token_losses(
        lp,
        m["old_logprobs"],
        m["advantages"],
        m["resp_mask"],
        ref,
        ent,
        **_loss_kwargs(loss),
        **coefs,
    )
    return num, stats


def train_step(
    params,
    opt_state,
    batch: dict,
    hyper: dict,
    *,
    cfg: ModelConfig,
    loss: LossConfig,
    opt,
    objective=fused_objective,
):
    """One RL step's policy update (pure; jit it with `make_train_step`).

    Args:
      params, opt_state: model params and optimizer state (donated).
      batch: ``tokens [S, L]`` int32, ``attn_mask [S, L]``, ``resp_mask [S, T]``,
        ``old_logprobs [S, T]``, ``advantages [S, T]`` (already broadcast) and, when
        ``loss.kl_as_loss``, ``ref_logprobs [S, T]``.
      hyper: traced scalars ``temperature``, ``kl_coef``, ``entropy_coef`` and, optionally,
        ``lr_scale`` (every update is applied at lr x lr_scale; the guard's trust region).
      cfg, loss, opt: static model config, loss settings and optimizer wrapper.
      objective: ``(params, micro_batch, hyper, *, cfg, loss, resp_len, micro) -> (num,
        stats)``, the micro-batch loss numerator to differentiate (`fused_objective`;
        a research loss can be dropped in here).

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
    scale = t if loss.loss_scale_factor is None else loss.loss_scale_factor
    data = jax.tree.map(lambda x: _split(x, n_mb, n_micro), batch)

    def micro_objective(p, m):
        return objective(p, m, hyper, cfg=cfg, loss=loss, resp_len=t, micro=micro)

    def minibatch(carry, mbatch):
        p, o = carry
        # the denominator depends only on the masks: computed before the gradients, once
        # for the whole mini-batch (`rl.aggregate`)
        mb_mask = mbatch["resp_mask"].reshape(-1, t)
        den = jnp.maximum(rl.aggregate(mb_mask, mb_mask, loss.agg_mode, scale)[1], 1e-12)

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
        new_p, new_o = opt.step(grads, o, p, hyper.get("lr_scale", 1.0))
        # relative size of the update, ||p_new - p|| / ||p||: inf or NaN when the new
        # params are not finite (or overflow), huge when the step diverged
        step_norm = _scaled_norm(jax.tree.map(_diff, new_p, p))
        ratio = step_norm / jnp.maximum(_scaled_norm(p), 1e-30)
        ok = jnp.isfinite(loss_val) & jnp.isfinite(gnorm) & jnp.isfinite(step_norm)
        if loss.max_update_ratio > 0:
            ok = ok & (ratio <= loss.max_update_ratio)
        p = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_p, p)
        o = jax.tree.map(lambda a, b: jnp.where(ok, a, b), new_o, o)
        metrics = {
            "loss": loss_val,
            "grad_norm": gnorm,
            # non-finite shows as float32 max, so the metrics file stays valid JSON
            "update_ratio": jnp.where(jnp.isfinite(ratio), ratio, jnp.finfo(jnp.float32).max),
            "skipped": 1.0 - ok.astype(jnp.float32),
        }
        return (p, o), (metrics, stats)

    (params, opt_state), (per_mb, stats) = jax.lax.scan(minibatch, (params, opt_state), data)
    metrics = {k: jnp.mean(v) for k, v in per_mb.items()}
    metrics["update_ratio"] = jnp.max(per_mb["update_ratio"])
    metrics["skipped"] = jnp.sum(per_mb["skipped"])
    # token statistics pooled over the mini-batches (sum of numerators / sum of counts),
    # so a mini-batch without trained tokens does not pull the means towards 0
    metrics.update({k: rl.safe_div(jnp.sum(v[0]), jnp.sum(v[1])) for k, v in stats.items()})
    return params, opt_state, metrics


def make_train_step(cfg: ModelConfig, loss: LossConfig, opt, objective=fused_objective):
    """`train_step` jitted with params and optimizer state donated."""
    fn = functools.partial(train_step, cfg=cfg, loss=loss, opt=opt, objective=objective)
    return jax.jit(fn, donate_argnums=(0, 1))


def make_logprob_fn(
    cfg: ModelConfig,
    resp_len: int,
    chunk: int = 128,
    micro_batch: int = 0,
    head_dtype: str = "",
    prompt_group: int = 1,
    stats: bool = False,
):
    """Jitted ``(params, tokens [S, L], attn_mask [S, L], temperature) -> [S, T]`` log-probs,
    computed ``micro_batch`` sequences at a time (0: all at once), the LM head's matmuls
    in ``head_dtype`` ("": the params' dtype), rows sharing their prompt in groups of
    ``prompt_group`` (see `sequence_logprobs`). With ``stats``: a tuple (log-probs,
    entropies, self-certainties) ``[S, T]`` each."""

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
            stats=stats,
        )
        out = jax.lax.map(
            one, (tokens.reshape(s // mb, mb, -1), attn_mask.reshape(s // mb, mb, -1))
        )
        return jax.tree.map(lambda x: x.reshape(s, resp_len), out)

    return jax.jit(fn)
