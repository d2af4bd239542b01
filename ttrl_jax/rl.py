"""RL algorithms as pure JAX functions: advantages, PPO-clip loss, KL, loss aggregation.

Shapes: ``B`` prompts, ``N`` trained samples per prompt (one *group*), ``T`` response
tokens. Rewards are outcome rewards ``r[b, i]`` (float32 ``[B, N]``) that sit on each
sample's own last response token. With outcome rewards and no discount every token's
return equals ``r``, so a per-sample advantage ``[B, N]`` is broadcast to the sample's
tokens (`broadcast_advantages`). ``valid`` ``[B, N]`` marks real samples, ``mask``
``[..., T]`` real response tokens; masked entries are 0 in every output.

Losses return ``(numerator, denominator)`` pairs instead of means, so a trainer that
splits a mini-batch into micro-batches accumulates exactly::

    loss = sum_k num_k / sum_k den_k        grad = sum_k grad(num_k) / sum_k den_k

(the denominators are counts and do not depend on the parameters).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

GRPO_EPS = 1e-6  # added to the group std (TTRL / verl value)
WHITEN_EPS = 1e-8  # added to the batch variance before rsqrt (REINFORCE++)
KL_CLAMP = 10.0  # per-token KL estimates are clamped to [-10, 10]
LOG_RATIO_CLAMP = 20.0  # |log ratio| bound before exp(), keeps values and grads finite


def _f32(x: Array) -> Array:
    return jnp.asarray(x, jnp.float32)


def _valid(rewards: Array, valid: Array | None) -> Array:
    return jnp.ones_like(_f32(rewards)) if valid is None else _f32(valid)


def _group_sums(r: Array, v: Array) -> tuple[Array, Array, Array]:
    """Per-group valid count ``n``, sum ``s`` and mean, each ``[B, 1]``."""
    n = v.sum(-1, keepdims=True)  # [B, 1]
    s = (r * v).sum(-1, keepdims=True)  # [B, 1]
    return n, s, s / jnp.maximum(n, 1.0)


# ---------------------------------------------------------------------- advantages


def all_equal_groups(
    rewards: Array, valid: Array | None = None, atol: float = 0.0
) -> tuple[Array, Array]:
    """Flags groups whose rewards carry no learning signal.

    A group is flagged when ``max_i r_i - min_i r_i <= atol`` over its valid samples, or
    when it has fewer than 2 valid samples (common in TTRL: a unanimous vote).

    Args:
        rewards: ``[B, N]`` rewards.
        valid: optional ``[B, N]`` sample mask.
        atol: spread at or below which rewards count as equal.

    Returns:
        ``(flags [B] bool, fraction)`` with ``fraction = mean_b flags_b``. To drop these
        groups, a trainer multiplies its token mask by ``~flags[:, None, None]``.
    """
    r, v = _f32(rewards), _valid(rewards, valid)  # [B, N]
    hi = jnp.max(jnp.where(v > 0, r, -jnp.inf), axis=-1)  # [B]
    lo = jnp.min(jnp.where(v > 0, r, jnp.inf), axis=-1)  # [B]
    flags = (v.sum(-1) < 2) | (hi - lo <= atol)  # [B]
    return flags, flags.astype(jnp.float32).mean()


def grpo_advantages(rewards: Array, valid: Array | None = None, eps: float = GRPO_EPS) -> Array:
    """GRPO: ``A_i = (r_i - mean_g r) / (std_g r + eps)``, unbiased std (ddof = 1).

    Mean and std run over the ``n`` valid samples of the group. Groups with ``n < 2`` or
    no spread get exactly 0 (verl returns ``r_i`` for singleton groups; for no-spread
    groups ``(r_i - mean) / eps`` would blow float rounding of the mean up by 1e6).

    Args:
        rewards: ``[B, N]``. valid: optional ``[B, N]``. eps: std epsilon.

    Returns:
        ``[B, N]`` advantages, 0 at invalid samples.
    """
    r, v = _f32(rewards), _valid(rewards, valid)
    n, _, mean = _group_sums(r, v)  # [B, 1]
    var = (jnp.square(r - mean) * v).sum(-1, keepdims=True) / jnp.maximum(n - 1.0, 1.0)
    adv = (r - mean) / (jnp.sqrt(var) + eps)  # [B, N]
    flat, _ = all_equal_groups(r, v)  # [B]
    return jnp.where(flat[:, None], 0.0, adv) * v


def dr_grpo_advantages(rewards: Array, valid: Array | None = None) -> Array:
    """Dr.GRPO (arXiv 2503.20783): ``A_i = r_i - mean_g r``, no std. ``[B, N]``."""
    r, v = _f32(rewards), _valid(rewards, valid)
    _, _, mean = _group_sums(r, v)
    return (r - mean) * v


def rloo_advantages(rewards: Array, valid: Array | None = None) -> Array:
    """RLOO (arXiv 2402.14740): ``A_i = r_i - sum_{j != i} r_j / (n - 1)``. ``[B, N]``.

    Equals ``n / (n - 1) * (r_i - mean_g r)``. Groups with fewer than 2 valid samples
    have no leave-one-out baseline and get 0.
    """
    r, v = _f32(rewards), _valid(rewards, valid)
    n, s, _ = _group_sums(r, v)  # [B, 1]
    baseline = (s - r * v) / jnp.maximum(n - 1.0, 1.0)  # [B, N]
    return jnp.where(n >= 2, r - baseline, 0.0) * v


def whiten(x: Array, mask: Array, eps: float = WHITEN_EPS) -> Array:
    """Global masked whitening: ``(x - mu) / sqrt(sigma^2 + eps)``, 0 where masked.

    ``mu`` and ``sigma^2`` (population variance, ddof = 0, as OpenRLHF) run over every
    entry of the whole array with ``mask = 1``, i.e. the global batch.
    """
    x, m = _f32(x), _f32(mask)
    cnt = jnp.maximum(m.sum(), 1.0)
    mu = (x * m).sum() / cnt
    var = (jnp.square(x - mu) * m).sum() / cnt
    return (x - mu) * jax.lax.rsqrt(var + eps) * m


def reinforce_pp_advantages(rewards: Array, valid: Array | None = None) -> Array:
    """REINFORCE++ (arXiv 2501.03262): no per-group baseline, global batch whitening.

    ``A_i = (r_i - mu_batch) / sqrt(sigma^2_batch + 1e-8)`` over the valid samples of the
    whole batch. The paper whitens per-token returns ``G_t = r - beta sum_{s>=t} KL_s``;
    without KL in the reward all tokens of a sample share ``r``, and we whiten over
    samples (each weighted once) where OpenRLHF / verl whiten over tokens (weighted by
    length). The per-token form: `kl_in_reward_advantages` with ``reward_to_go=True``.
    """
    v = _valid(rewards, valid)
    return whiten(_f32(rewards) * v, v)


def reinforce_pp_baseline_advantages(rewards: Array, valid: Array | None = None) -> Array:
    """REINFORCE++-baseline (OpenRLHF ``reinforce_baseline``): ``whiten(r_i - mean_g r)``.

    Group-mean subtraction (no std), then global whitening over the batch's valid
    samples as in `reinforce_pp_advantages`. ``[B, N]``.
    """
    v = _valid(rewards, valid)
    return whiten(dr_grpo_advantages(rewards, v), v)


ADVANTAGE_ESTIMATORS: dict[str, Callable[..., Array]] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}
# The per-group step that precedes the global whitening of the batch-whitened estimators.
_PRE_WHITEN: dict[str, Callable[..., Array]] = {
    "reinforce_pp": lambda r, v: _f32(r) * v,
    "reinforce_pp_baseline": dr_grpo_advantages,
}


def _estimator(name: str) -> Callable[..., Array]:
    if name not in ADVANTAGE_ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return ADVANTAGE_ESTIMATORS[name]


def compute_advantages(name: str, rewards: Array, valid: Array | None = None) -> Array:
    """Applies ``ADVANTAGE_ESTIMATORS[name]`` to ``rewards [B, N]``; returns ``[B, N]``."""
    return _estimator(name)(rewards, valid)


def broadcast_advantages(advantages: Array, mask: Array) -> Array:
    """``[B, N]`` per-sample advantages -> ``[B, N, T]``: ``A[b, i] * mask[b, i, t]``."""
    return _f32(advantages)[..., None] * _f32(mask)


# ------------------------------------------------------------------------------ KL


def kl_estimate(
    logprobs: Array, ref_logprobs: Array, kl_type: str = "k3", clamp: float = KL_CLAMP
) -> Array:
    """Per-token estimate of ``KL(pi || pi_ref)`` from sampled-token log-probs.

    With ``d = log pi(a_t) - log pi_ref(a_t)`` (Schulman, "Approximating KL divergence"):

    * ``k1``: ``d`` (unbiased, may be negative);
    * ``k2``: ``d^2 / 2``;
    * ``k3`` / ``low_var_kl``: ``exp(-d) + d - 1 = exp(ref - logp) - (ref - logp) - 1``
      (unbiased, >= 0, low variance).

    Every estimate is clamped to ``[-clamp, clamp]`` (verl clamps ``low_var_kl`` to
    +-10; we clamp all three). Returns float32 with the shape of ``logprobs``.
    """
    d = _f32(logprobs) - _f32(ref_logprobs)
    if kl_type == "k1":
        kl = d
    elif kl_type == "k2":
        kl = 0.5 * jnp.square(d)
    elif kl_type in ("k3", "low_var_kl"):
        # Bounding d changes no clamped value (k3(+-20) > 10) but keeps exp() finite,
        # so the clamped branch has a zero gradient instead of 0 * inf = NaN.
        d = jnp.clip(d, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP)
        kl = jnp.exp(-d) + d - 1.0
    else:
        raise ValueError(f"unknown kl_type {kl_type!r}; choose k1, k2, k3 or low_var_kl")
    return jnp.clip(kl, -clamp, clamp)


def kl_penalized_token_rewards(
    outcome_rewards: Array, kl: Array, mask: Array, beta: float
) -> Array:
    """Token rewards with KL in the reward: ``rho_t = r [t = last valid] - beta KL_t``.

    Args:
        outcome_rewards: ``[B, N]`` (already group-shaped where the estimator does so).
        kl: ``[B, N, T]`` per-token KL estimates (`kl_estimate`), constants.
        mask: ``[B, N, T]``; a sample without valid tokens gets no reward.
        beta: KL coefficient.

    Returns:
        ``[B, N, T]`` float32 token rewards, 0 at padding.
    """
    m = _f32(mask)
    t = jnp.arange(m.shape[-1])  # [T]
    last = jnp.max(jnp.where(m > 0, t, -1), axis=-1, keepdims=True)  # [B, N, 1]
    at_last = (t == last).astype(jnp.float32)  # [B, N, T]
    return (_f32(outcome_rewards)[..., None] * at_last - beta * _f32(kl)) * m


def returns_to_go(token_rewards: Array, mask: Array) -> Array:
    """Undiscounted sum-to-go ``G_t = sum_{s >= t} m_s rho_s``, 0 at padding. ``[B, N, T]``."""
    x = _f32(token_rewards) * _f32(mask)
    return jnp.flip(jnp.cumsum(jnp.flip(x, -1), -1), -1) * _f32(mask)


def sequence_returns(outcome_rewards: Array, kl: Array, mask: Array, beta: float) -> Array:
    """Sequence return with KL in the reward: ``R = r - beta sum_t m_t KL_t``. ``[B, N]``."""
    return _f32(outcome_rewards) - beta * (_f32(kl) * _f32(mask)).sum(-1)


def kl_in_reward_advantages(
    name: str,
    outcome_rewards: Array,
    kl: Array,
    mask: Array,
    beta: float,
    valid: Array | None = None,
    reward_to_go: bool = False,
) -> Array:
    """Per-token advantages ``[B, N, T]`` when the KL penalty is part of the reward.

    ``kl`` ``[B, N, T]`` is computed once per rollout from the sampling policy's and the
    reference's log-probs (e.g. ``kl_estimate(old_logprobs, ref_logprobs, "k3")``).

    ``reward_to_go=False`` (default; what SRT runs: verl ``use_kl_in_reward`` with
    ``adv_estimator=rloo``, ``low_var_kl``, beta = 0.001): the estimator sees the
    sequence return ``R_i = r_i - beta sum_t KL_{i,t}`` (`sequence_returns`) as its
    reward and ``A_i = estimator(R)_i`` is broadcast to every token of sample ``i``.

    ``reward_to_go=True`` (OpenRLHF, REINFORCE++ paper): the per-group step runs on the
    outcome rewards first, ``r'_i = f(r)_i`` (the RLOO / GRPO / Dr.GRPO advantage;
    identity or group-mean subtraction for ``reinforce_pp[_baseline]``), then
    ``rho_t = r' [t = last] - beta KL_t`` (`kl_penalized_token_rewards`) and
    ``A_t = G_t = sum_{s >= t} rho_s`` (`returns_to_go`); the ``reinforce_pp`` variants
    finally whiten ``A_t`` over all valid tokens of the batch (`whiten`).
    """
    estimator = _estimator(name)
    v = _valid(outcome_rewards, valid)  # [B, N]
    m = _f32(mask) * v[..., None]  # [B, N, T]
    if not reward_to_go:
        seq_ret = sequence_returns(outcome_rewards, kl, m, beta)  # [B, N]
        return broadcast_advantages(estimator(seq_ret, v), m)
    shaped = _PRE_WHITEN.get(name, estimator)(outcome_rewards, v)  # [B, N]
    adv = returns_to_go(kl_penalized_token_rewards(shaped, kl, m, beta), m)  # [B, N, T]
    return whiten(adv, m) if name in _PRE_WHITEN else adv


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
        dual clip binds), ``approx_kl = (logp - logp_old)^2 / 2`` (k2 estimate of the KL
        between old and current policy, >= 0), ``ratio = rho``.
    """
    eps_high = clip_eps_low if clip_eps_high is None else clip_eps_high
    m = _f32(mask)
    log_ratio = _f32(logprobs) - _f32(old_logprobs)  # [..., T]
    ratio = jnp.exp(jnp.clip(log_ratio, -LOG_RATIO_CLAMP, LOG_RATIO_CLAMP))
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
        "approx_kl": 0.5 * jnp.square(log_ratio) * m,
        "ratio": ratio * m,
    }
    return loss * m, stats


# --------------------------------------------------------------------- aggregation

AGG_MODES = ("token-mean", "seq-mean-token-mean", "seq-mean-token-sum")


def aggregate(
    per_token: Array, mask: Array, mode: str = "token-mean", max_len: int | None = None
) -> tuple[Array, Array]:
    """Reduces a per-token quantity ``[..., T]`` to a ``(numerator, denominator)`` pair.

    The loss is ``sum_k num_k / sum_k den_k`` over micro-batches (`safe_div`), equal to
    the loss of the whole mini-batch at once. With ``l`` the values, ``m`` the mask and
    ``S`` the sequences (leading indices) having at least one valid token:

    * ``token-mean``:          ``num = sum_{s,t} m l``,                ``den = sum_{s,t} m``
    * ``seq-mean-token-mean``: ``num = sum_s (sum_t m l / sum_t m)``,   ``den = |S|``
    * ``seq-mean-token-sum``:  ``num = sum_s sum_t m l / max_len``,     ``den = |S|``
      (Dr.GRPO: a constant ``max_len``, default ``T``, replaces each sequence's length).
    """
    x, m = _f32(per_token), _f32(mask)
    tok_sum = (x * m).sum(-1)  # [...]
    tok_cnt = m.sum(-1)  # [...]
    n_seq = (tok_cnt > 0).astype(jnp.float32).sum()
    if mode == "token-mean":
        return tok_sum.sum(), tok_cnt.sum()
    if mode == "seq-mean-token-mean":
        return (tok_sum / jnp.maximum(tok_cnt, 1.0)).sum(), n_seq
    if mode == "seq-mean-token-sum":
        length = float(x.shape[-1] if max_len is None else max_len)
        return tok_sum.sum() / length, n_seq
    raise ValueError(f"unknown loss aggregation {mode!r}; choose one of {AGG_MODES}")


def safe_div(numerator: Array, denominator: Array) -> Array:
    """``numerator / denominator``, or 0 where the denominator is 0 (nothing to train)."""
    return jnp.where(denominator > 0, numerator / jnp.maximum(denominator, 1e-12), 0.0)


def masked_sum_count(x: Array, mask: Array) -> tuple[Array, Array]:
    """``(sum m x, sum m)`` over all entries: an accumulable token-mean statistic."""
    m = _f32(mask)
    return (_f32(x) * m).sum(), m.sum()


def aggregate_weights(mask: Array, mode: str = "token-mean", max_len: int | None = None) -> Array:
    """Per-token weights ``w [..., T]`` with ``aggregate(l, mask, mode, max_len)[0] == sum w l``.

    `aggregate`'s numerator is linear in the per-token values, so ``w`` is its gradient
    (``m``, ``m / sum_t m`` or ``m / max_len``); it depends on the mask only.
    """
    zeros = jnp.zeros(jnp.shape(mask), jnp.float32)
    return jax.grad(lambda x: aggregate(x, mask, mode, max_len)[0])(zeros)


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
    kl_type: str = "k3",
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
    Arguments as in `policy_objective`.
    """
    pg, pg_stats = ppo_clip_loss(
        logprobs, old_logprobs, advantages, mask, clip_eps_low, clip_eps_high, dual_clip_c
    )  # [..., T]
    total = pg
    stats = {"pg_loss": masked_sum_count(pg, mask)}
    stats.update({k: masked_sum_count(v, mask) for k, v in pg_stats.items()})
    if ref_logprobs is not None:
        kl = kl_estimate(logprobs, ref_logprobs, kl_type)  # [..., T]
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
    clip_eps_low: float = 0.2,
    clip_eps_high: float | None = None,
    dual_clip_c: float | None = 3.0,
    kl_coef: float = 0.0,
    kl_type: str = "k3",
    entropy_coef: float = 0.0,
    agg_mode: str = "token-mean",
    max_len: int | None = None,
) -> tuple[Array, Array, dict[str, tuple[Array, Array]]]:
    """The actor objective of one (micro-)batch, as an accumulable ratio.

    ``(num, den) = aggregate(l, mask, agg_mode, max_len)`` of the per-token loss ``l``
    of `token_losses`; the loss to minimise is ``sum num / sum den`` over micro-batches.
    Static under ``jax.jit``: ``kl_type``, ``agg_mode``, ``max_len`` and whether
    ``dual_clip_c`` / ``ref_logprobs`` / ``entropies`` are None; ``kl_coef`` and
    ``entropy_coef`` may be traced.

    Args:
        logprobs, old_logprobs, mask: ``[..., T]``.
        advantages: broadcastable to ``[..., T]`` (see `broadcast_advantages`).
        ref_logprobs, entropies: ``[..., T]`` or None.

    Returns:
        ``(numerator, denominator, stats)``; each stat is a token-mean ``(sum, count)``
        pair whatever ``agg_mode``: ``pg_loss``, ``clipfrac``, ``dual_clipfrac``,
        ``approx_kl``, ``ratio``, plus ``kl`` and ``entropy`` when given.
    """
    total, stats = token_losses(
        logprobs,
        old_logprobs,
        advantages,
        mask,
        ref_logprobs,
        entropies,
        clip_eps_low=clip_eps_low,
        clip_eps_high=clip_eps_high,
        dual_clip_c=dual_clip_c,
        kl_coef=kl_coef,
        kl_type=kl_type,
        entropy_coef=entropy_coef,
    )
    num, den = aggregate(total, mask, agg_mode, max_len)
    return num, den, stats
