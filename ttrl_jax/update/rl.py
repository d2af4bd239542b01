"""RL algorithms as pure JAX functions: advantages, PPO-clip loss, KL, loss aggregation.

verl's names mean verl's values (``verl/trainer/ppo/core_algos.py``): advantage
estimators (`ttrl_jax.update.advantages`, re-exported here), ``kl_penalty`` estimators,
``agg_loss`` modes and the ``ppo_kl`` metric. Shapes: ``B`` prompts, ``N`` trained
samples per prompt, ``T`` response tokens; ``mask`` ``[..., T]`` marks real response
tokens and masked entries are 0 in every per-token output.

Losses return ``(numerator, denominator)`` pairs instead of means, so a trainer that
splits a mini-batch into micro-batches accumulates exactly::

    loss = sum_k num_k / D        grad = sum_k grad(num_k) / D

with ``D`` the denominator of the whole mini-batch (`aggregate` on its mask: a count
for the mean modes, the sum of the micro-batches' denominators). It depends only on the
masks, not on the parameters.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from ttrl_jax.update.advantages import (
    ADVANTAGE_ESTIMATORS,
    ESTIMATOR_ALIASES,
    GRPO_EPS,
    SAMPLE_ESTIMATORS,
    TOKEN_ESTIMATORS,
    WHITEN_EPS,
    all_equal_groups,
    broadcast_advantages,
    compute_advantages,
    dr_grpo_advantages,
    grpo_advantages,
    kl_in_reward_advantages,
    kl_penalized_token_rewards,
    last_token_rewards,
    reinforce_pp_advantages,
    reinforce_pp_baseline_advantages,
    reinforce_pp_token_advantages,
    returns_to_go,
    rloo_advantages,
    sequence_returns,
    token_advantages,
    whiten,
)

__all__ = [
    "ADVANTAGE_ESTIMATORS",
    "AGG_MODES",
    "ESTIMATOR_ALIASES",
    "GRPO_EPS",
    "KL_TYPES",
    "LOG_RATIO_CLAMP",
    "LOW_VAR_KL_CLAMP",
    "SAMPLE_ESTIMATORS",
    "TOKEN_ESTIMATORS",
    "WHITEN_EPS",
    "aggregate",
    "aggregate_weights",
    "all_equal_groups",
    "broadcast_advantages",
    "compute_advantages",
    "dr_grpo_advantages",
    "grpo_advantages",
    "kl_estimate",
    "kl_in_reward_advantages",
    "kl_penalized_token_rewards",
    "last_token_rewards",
    "masked_sum_count",
    "policy_objective",
    "ppo_clip_loss",
    "reinforce_pp_advantages",
    "reinforce_pp_baseline_advantages",
    "reinforce_pp_token_advantages",
    "returns_to_go",
    "rloo_advantages",
    "safe_div",
    "sequence_returns",
    "token_advantages",
    "token_losses",
    "whiten",
]

Array = jax.Array

LOW_VAR_KL_CLAMP = 10.0  # verl clamps low_var_kl (k3), and only it, to [-10, 10]
LOG_RATIO_CLAMP = 20.0  # |log ratio| bound before exp(), keeps values and grads finite


def _f32(x: Array) -> Array:
    return jnp.asarray(x, jnp.float32)


# ------------------------------------------------------------------------------ KL

# verl kl_penalty names: each base name, and with "+" its straight-through variant
_KL_BASE = {"kl": "k1", "k1": "k1", "abs": "abs", "mse": "k2", "k2": "k2"}
_KL_BASE.update({"low_var_kl": "k3", "k3": "k3"})
KL_TYPES: tuple[str, ...] = (*_KL_BASE, *(f"{k}+" for k in _KL_BASE))


def kl_estimate(
    logprobs: Array,
    ref_logprobs: Array,
    kl_type: str = "low_var_kl",
    clamp: float | None = None,
) -> Array:
    """Per-token estimate of ``KL(pi || pi_ref)`` from sampled-token log-probs (verl
    ``kl_penalty``; Schulman, "Approximating KL divergence").

    With ``d = log pi(a_t) - log pi_ref(a_t)``:

    * ``kl`` / ``k1``: ``d`` (unbiased, may be negative);
    * ``abs``: ``|d|``;
    * ``mse`` / ``k2``: ``d^2 / 2``;
    * ``low_var_kl`` / ``k3``: ``exp(-d) + d - 1`` with ``d`` bounded to +-20 first
      (unbiased, >= 0, low variance);
    * a ``+`` suffix (``k3+``, ``low_var_kl+``, ``k1+``, ...): the value above with the
      gradient of ``k2`` (straight through: ``k2 - sg(k2) + sg(value)``), since k2's
      gradient is the unbiased gradient of the KL. ``k2+`` / ``mse+`` equal ``k2``.

    ``clamp=None`` (default) is verl's: only ``low_var_kl`` / ``k3`` is clamped, to
    ``[-10, 10]``. A number ``c > 0`` clamps every estimate to ``[-c, c]`` instead
    (``c = 10`` was this library's rule before). Returns float32 like ``logprobs``.
    """
    base = _KL_BASE.get(kl_type.removesuffix("+"))
    if base is None:
        raise ValueError(f"unknown kl_type {kl_type!r}; choose one of {KL_TYPES}")
    d = _f32(logprobs) - _f32(ref_logprobs)
    if base == "k1":
        kl = d
    elif base == "abs":
        kl = jnp.abs(d)
    elif base == "k2":
        kl = 0.5 * jnp.square(d)
    else:
        # Bounding d changes no clamped value (k3(+-20) > 10) but keeps exp() finite,
        # so the clamped branch has a zero gradient instead of 0 * inf = NaN.
        dc = jnp.clip(d, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = jnp.exp(-dc) + dc - 1.0
    if clamp is not None:
        kl = jnp.clip(kl, -clamp, clamp)
    elif base == "k3":
        kl = jnp.clip(kl, -LOW_VAR_KL_CLAMP, LOW_VAR_KL_CLAMP)
    if kl_type.endswith("+") and base != "k2":
        k2 = 0.5 * jnp.square(d)
        kl = k2 - jax.lax.stop_gradient(k2) + jax.lax.stop_gradient(kl)
    return kl


# --------------------------------------------------------------------- policy loss


def ppo_clip_loss(
    logprobs: Array,
    old_logprobs: Array,
    advantages: Array,
    mask: Array,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip_c: float | None = 3.0,
) -> tuple[Array, dict[str, Array]]:
    """Per-token PPO clipped surrogate with clip-higher and dual clip.

    With ``rho = exp(clip(logp - logp_old, -20, 20))`` and advantage ``A``::

        L1 = -A rho,    L2 = -A clip(rho, 1 - eps_low, 1 + eps_high),    L = max(L1, L2)
        if A < 0 and dual clip:    L = min(L, -c A)        (dual-clip PPO, c = 3)

    ``eps_high`` defaults to ``eps_low`` (plain PPO); DAPO's clip-higher sets it larger
    (0.28). Where a clipped branch is active the gradient w.r.t. ``logp`` is 0.

    Args:
        logprobs: ``[..., T]`` current log-probs of the sampled tokens (differentiable).
        old_logprobs: ``[..., T]`` sampling-policy log-probs (constants).
        advantages: broadcastable to ``[..., T]`` (``[..., T]`` or ``[..., 1]``).
        mask: ``[..., T]`` response-token mask.
        clip_eps_low, clip_eps_high: clip range.
        dual_clip_c: dual-clip constant (> 1), or None to disable.

    Returns:
        ``(loss [..., T], stats)``, stats per-token ``[..., T]``, 0 at padding:
        ``clipfrac`` (1 where ``L2 > L1``: the clip binds), ``dual_clipfrac`` (1 where the
        dual clip binds), ``ppo_kl = logp_old - logp`` with the log ratio bounded to
        +-20 (verl's ``ppo_kl``, the k1 estimate of KL(pi_old || pi) once averaged over
        tokens), ``approx_kl_k2 = (logp - logp_old)^2 / 2`` (the k2 estimate, >= 0),
        ``ratio = rho``.
    """
    eps_high = clip_eps_low if clip_eps_high is None else clip_eps_high
    m = _f32(mask)
    log_ratio = _f32(logprobs) - _f32(old_logprobs)  # [..., T]
    bounded = jnp.clip(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
    ratio = jnp.exp(bounded)
    adv = jnp.broadcast_to(_f32(advantages), ratio.shape)  # [..., T]
    l1 = -adv * ratio
    l2 = -adv * jnp.clip(ratio, 1.0 - clip_eps_low, 1.0 + eps_high)
    clipped = l2 > l1
    loss = jnp.where(clipped, l2, l1)
    if dual_clip_c is not None:
        l3 = -adv * dual_clip_c
        dual = (adv < 0) & (loss > l3)
        loss = jnp.where(dual, l3, loss)
    else:
        dual = jnp.zeros_like(clipped)
    stats = {
        "clipfrac": clipped.astype(jnp.float32) * m,
        "dual_clipfrac": dual.astype(jnp.float32) * m,
        "ppo_kl": -bounded * m,
        "approx_kl_k2": 0.5 * jnp.square(log_ratio) * m,
        "ratio": ratio * m,
    }
    return loss * m, stats


# --------------------------------------------------------------------- aggregation

AGG_MODES = (
    "token-mean",
    "seq-mean-token-mean",
    "seq-mean-token-sum",
    "seq-mean-token-sum-norm",
    "seq-mean-token-norm",
)


def aggregate(
    per_token: Array,
    mask: Array,
    mode: str = "token-mean",
    loss_scale_factor: float | None = None,
) -> tuple[Array, Array]:
    """Reduces a per-token quantity ``[..., T]`` to a ``(numerator, denominator)`` pair.

    verl's ``agg_loss`` modes, as ``num / den``. With ``l`` the values, ``m`` the mask,
    ``S`` the sequences (leading indices) having at least one valid token and ``C`` the
    constant ``loss_scale_factor`` (verl's; None: ``T``, the padded response length):

    * ``token-mean``:              ``num = sum_{s,t} m l``,              ``den = sum_{s,t} m``
    * ``seq-mean-token-mean``:     ``num = sum_s (sum_t m l / sum_t m)``, ``den = |S|``
    * ``seq-mean-token-sum``:      ``num = sum_s sum_t m l``,            ``den = |S|``
    * ``seq-mean-token-sum-norm``: ``num = sum_s sum_t m l / C``,        ``den = 1``
      (Dr.GRPO as verl: a sum over sequences, not a mean);
    * ``seq-mean-token-norm`` (ours, not verl's): ``num = sum_s sum_t m l / C``,
      ``den = |S|`` -- the Dr.GRPO paper's ``1/G sum_i 1/C sum_t``, which does not grow
      with the batch (what ``seq-mean-token-sum`` meant here before).

    Over micro-batches the loss is ``sum_k num_k / D`` with ``D`` this function's
    denominator for the whole mini-batch's mask: the sum of the micro-batches' ``den``
    except for ``seq-mean-token-sum-norm``, whose ``D`` is 1.
    """
    x, m = _f32(per_token), _f32(mask)
    tok_sum = (x * m).sum(-1)  # [...]
    tok_cnt = m.sum(-1)  # [...]
    n_seq = (tok_cnt > 0).astype(jnp.float32).sum()
    scale = float(x.shape[-1] if loss_scale_factor is None else loss_scale_factor)
    if mode == "token-mean":
        return tok_sum.sum(), tok_cnt.sum()
    if mode == "seq-mean-token-mean":
        return (tok_sum / jnp.maximum(tok_cnt, 1.0)).sum(), n_seq
    if mode == "seq-mean-token-sum":
        return tok_sum.sum(), n_seq
    if mode == "seq-mean-token-sum-norm":
        return tok_sum.sum() / scale, jnp.ones((), jnp.float32)
    if mode == "seq-mean-token-norm":
        return tok_sum.sum() / scale, n_seq
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGG_MODES}")


def safe_div(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, or 0 where the denominator is 0 (nothing to train)."""
    return jnp.where(denominator > 0, numerator / jnp.maximum(denominator, 1e-12), 0.0)


def masked_sum_count(x: Array, mask: Array) -> tuple[Array, Array]:
    """``(sum m x, sum m)`` over all entries: an accumulable token-mean statistic."""
    m = _f32(mask)
    return (_f32(x) * m).sum(), m.sum()


def aggregate_weights(
    mask: Array, mode: str = "token-mean", loss_scale_factor: float | None = None
) -> Array:
    """Per-token weights ``w [..., T]`` with ``aggregate(l, mask, mode, C)[0] == sum w l``.

    `aggregate`'s numerator is linear in the per-token values, so ``w`` is its gradient
    (``m``, ``m / sum_t m`` or ``m / C``); it depends on the mask only.
    """
    zeros = jnp.zeros(jnp.shape(mask), jnp.float32)
    return jax.grad(lambda x: aggregate(x, mask, mode, loss_scale_factor)[0])(zeros)


def token_losses(
    logprobs: Array,
    old_logprobs: Array,
    advantages: Array,
    mask: Array,
    ref_logprobs: Array | None = None,
    entropies: Array | None = None,
    *,
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip_c: float | None = 3.0,
    kl_coef: float = 0.0,
    kl_type: str = "low_var_kl",
    kl_clamp: float | None = None,
    entropy_coef: float = 0.0,
) -> tuple[Array, dict[str, tuple[Array, Array]]]:
    """The actor's per-token loss ``l [..., T]`` and its token-mean stats (``mask`` weighs
    the stats; `aggregate` or `aggregate_weights` applies it to ``l``).

    Per token::

        l_t = L^clip_t                           (`ppo_clip_loss`)
              + kl_coef * KL_t(pi || pi_ref)     (if ref_logprobs given; `kl_estimate`)
              - entropy_coef * H_t               (if entropies given: entropy bonus)

    Each ``l_t`` depends on its own token's log-prob and entropy only, which is what lets
    the LM head take its gradient in the forward pass (`lm_head.fused_head_loss`).

    Args:
        logprobs, old_logprobs, mask: ``[..., T]``.
        advantages: broadcastable to ``[..., T]`` (see `broadcast_advantages`).
        ref_logprobs, entropies: ``[..., T]`` or None.
        clip_eps_low, clip_eps_high, dual_clip_c: the PPO clip (`ppo_clip_loss`).
        kl_coef, kl_type, kl_clamp: the KL term (`kl_estimate`); entropy_coef: the bonus.
    """
    pg, pg_stats = ppo_clip_loss(
        logprobs, old_logprobs, advantages, mask, clip_eps_low, clip_eps_high, dual_clip_c
    )  # [..., T]
    total = pg
    stats = {"pg_loss": masked_sum_count(pg, mask)}
    stats.update({k: masked_sum_count(v, mask) for k, v in pg_stats.items()})
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, kl_type, kl_clamp)  # [..., T]
        total = total + kl_coef * kl
        stats["kl"] = masked_sum_count(kl, mask)
    if entropies is not None:
        ent = _f32(entropies)  # [..., T]
        total = total - entropy_coef * ent
        stats["entropy"] = masked_sum_count(ent, mask)
    return total, stats


def policy_objective(
    logprobs: Array,
    old_logprobs: Array,
    advantages: Array,
    mask: Array,
    ref_logprobs: Array | None = None,
    entropies: Array | None = None,
    *,
    agg_mode: str = "token-mean",
    loss_scale_factor: float | None = None,
    **loss_kwargs,
) -> tuple[Array, Array, dict[str, tuple[Array, Array]]]:
    """The actor objective of one (micro-)batch, as an accumulable ratio.

    ``(num, den) = aggregate(l, mask, agg_mode, loss_scale_factor)`` of the per-token
    loss ``l`` of `token_losses`; over micro-batches the loss to minimise is
    ``sum_k num_k / D`` (`aggregate`). Static under ``jax.jit``: ``kl_type``,
    ``kl_clamp``, ``agg_mode``, ``loss_scale_factor`` and whether ``dual_clip_c`` /
    ``ref_logprobs`` / ``entropies`` are None; ``kl_coef`` and ``entropy_coef`` may be
    traced.

    Args:
        logprobs, old_logprobs, advantages, mask, ref_logprobs, entropies: as in
            `token_losses`.
        loss_kwargs: `token_losses`' keywords (clip_eps_low, clip_eps_high,
            dual_clip_c, kl_coef, kl_type, kl_clamp, entropy_coef).

    Returns:
        ``(numerator, denominator, stats)``; each stat is a token-mean ``(sum, count)``
        pair whatever ``agg_mode``: ``pg_loss``, ``clipfrac``, ``dual_clipfrac``,
        ``ppo_kl``, ``approx_kl_k2``, ``ratio``, plus ``kl`` and ``entropy`` when given.
    """
    total, stats = token_losses(
        logprobs, old_logprobs, advantages, mask, ref_logprobs, entropies, **loss_kwargs
    )
    num, den = aggregate(total, mask, agg_mode, loss_scale_factor)
    return num, den, stats
