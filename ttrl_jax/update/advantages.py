"""Advantage estimators as pure JAX functions, verl's conventions under verl's names.

Shapes: ``B`` prompts, ``N`` trained samples per prompt (one *group*), ``T`` response
tokens. Rewards are outcome rewards ``r[b, i]`` (float32 ``[B, N]``) that sit on each
sample's own last response token. ``valid`` ``[B, N]`` marks real samples, ``mask``
``[B, N, T]`` real response tokens (a prefix of each row: right padding); masked entries
are 0 in every output. `ttrl_jax.update.rl` re-exports every name here.

Two kinds of estimator (verl ``verl/trainer/ppo/core_algos.py``):

* per-sample (``SAMPLE_ESTIMATORS``: grpo, dr_grpo, rloo): an advantage ``[B, N]`` per
  sample that `broadcast_advantages` copies to the sample's tokens;
* per-token (``TOKEN_ESTIMATORS``: reinforce_pp, reinforce_pp_baseline): verl whitens
  token values over *all valid tokens of the batch* (a long sample weighs more), so
  they take the token mask and return ``[B, N, T]``.

`token_advantages` runs either kind and returns ``[B, N, T]``; it is what a trainer calls.

One deliberate difference from verl: a group with a single (valid) sample has no
baseline and gets advantage 0 from grpo / dr_grpo / rloo and a group-mean-subtracted
value of 0 before whitening in reinforce_pp_baseline, where verl uses a mean of 0 and a
std of 1 (advantage ``r`` or ``r / (1 + eps)``).
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp

Array = jax.Array

GRPO_EPS = 1e-6  # added to the group std (TTRL / verl value)
WHITEN_EPS = 1e-8  # added to the batch variance before rsqrt (verl masked_whiten)


def _f32(x: Array) -> Array:
    return jnp.asarray(x, jnp.float32)


def _valid(rewards: Array, valid: Array | None) -> Array:
    return jnp.ones_like(_f32(rewards)) if valid is None else _f32(valid)


def _group_sums(r: Array, v: Array) -> tuple[Array, Array, Array]:
    """Per-group valid count ``n``, sum ``s`` and mean, each ``[B, 1]``."""
    n = v.sum(-1, keepdims=True)  # [B, 1]
    s = (r * v).sum(-1, keepdims=True)  # [B, 1]
    return n, s, s / jnp.maximum(n, 1.0)


# ------------------------------------------------------------------ per sample


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

    Mean and std run over the ``n`` valid samples of the group (verl
    ``compute_grpo_outcome_advantage``). Groups with ``n < 2`` (no baseline; verl returns
    ``r_i / (1 + eps)``) or no spread get exactly 0: for no-spread groups
    ``(r_i - mean) / eps`` would blow float rounding of the mean up by 1e6.

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
    """Dr.GRPO (arXiv 2503.20783; verl grpo with ``norm_adv_by_std_in_grpo=False``):
    ``A_i = r_i - mean_g r``, no std. A group of one has no baseline: 0. ``[B, N]``."""
    r, v = _f32(rewards), _valid(rewards, valid)
    _, _, mean = _group_sums(r, v)
    return (r - mean) * v


def rloo_advantages(rewards: Array, valid: Array | None = None) -> Array:
    """RLOO (arXiv 2402.14740): ``A_i = r_i - sum_{j != i} r_j / (n - 1)``. ``[B, N]``.

    Equals ``n / (n - 1) * (r_i - mean_g r)`` (verl ``compute_rloo_outcome_advantage``).
    Groups with fewer than 2 valid samples have no leave-one-out baseline and get 0
    (verl: ``r_i``).
    """
    r, v = _f32(rewards), _valid(rewards, valid)
    n, s, _ = _group_sums(r, v)  # [B, 1]
    baseline = (s - r * v) / jnp.maximum(n - 1.0, 1.0)  # [B, N]
    return jnp.where(n >= 2, r - baseline, 0.0) * v


def broadcast_advantages(advantages: Array, mask: Array) -> Array:
    """``[B, N]`` per-sample advantages -> ``[B, N, T]``: ``A[b, i] * mask[b, i, t]``."""
    return _f32(advantages)[..., None] * _f32(mask)


# ------------------------------------------------------------------- per token


def whiten(x: Array, mask: Array, shift_mean: bool = True, eps: float = WHITEN_EPS) -> Array:
    """verl's ``masked_whiten`` over every entry of the array with ``mask = 1``.

    ``mu = sum m x / n`` and ``var = n / (n - 1) * sum m (x - mu)^2 / n`` (unbiased, as
    ``masked_var``; ``n = sum m``; for ``n = 1`` the variance is 0 where verl raises), then
    ``(x - mu) * rsqrt(var + eps)``, plus ``mu`` again when ``shift_mean=False``. The
    result is 0 where masked (verl's estimators multiply by the mask afterwards).
    """
    x, m = _f32(x), _f32(mask)
    n = m.sum()
    mu = (x * m).sum() / jnp.maximum(n, 1.0)
    var = (jnp.square(x - mu) * m).sum() / jnp.maximum(n - 1.0, 1.0)
    out = (x - mu) * jax.lax.rsqrt(var + eps)
    if not shift_mean:
        out = out + mu
    return out * m


def returns_to_go(token_rewards: Array, mask: Array) -> Array:
    """Undiscounted returns ``G_t = rho_t + m_{t+1} G_{t+1}``, 0 at padding. ``[..., T]``.

    verl's ``reinforce_plus_plus`` recursion with ``gamma = 1`` (the running return is
    reset after each masked position); for a right-padded mask it is the sum to go
    ``sum_{s >= t} m_s rho_s`` over the valid tokens.
    """
    x, m = _f32(token_rewards) * _f32(mask), _f32(mask)
    xs, ms = jnp.moveaxis(x, -1, 0), jnp.moveaxis(m, -1, 0)  # [T, ...]

    def step(running, inp):
        rho, mt = inp
        g = rho + running
        return g * mt, g

    _, g = jax.lax.scan(step, jnp.zeros_like(xs[0]), (xs, ms), reverse=True)
    return jnp.moveaxis(g, 0, -1) * m


def last_token_rewards(outcome_rewards: Array, mask: Array) -> Array:
    """``[B, N]`` outcome rewards placed on each sample's last valid token. ``[B, N, T]``."""
    m = _f32(mask)
    t = jnp.arange(m.shape[-1])  # [T]
    last = jnp.max(jnp.where(m > 0, t, -1), axis=-1, keepdims=True)  # [B, N, 1]
    return _f32(outcome_rewards)[..., None] * (t == last).astype(jnp.float32)


def kl_penalized_token_rewards(
    outcome_rewards: Array, kl: Array, mask: Array, beta: float
) -> Array:
    """Token rewards with KL in the reward: ``rho_t = r [t = last valid] - beta KL_t``.

    verl ``apply_kl_penalty``: ``token_level_rewards = token_level_scores - beta * kl * m``.

    Args:
        outcome_rewards: ``[B, N]`` (already group-shaped where the estimator does so).
        kl: ``[B, N, T]`` per-token KL estimates (`rl.kl_estimate`), constants.
        mask: ``[B, N, T]``; a sample without valid tokens gets no reward.
        beta: KL coefficient.

    Returns:
        ``[B, N, T]`` float32 token rewards, 0 at padding.
    """
    m = _f32(mask)
    return (last_token_rewards(outcome_rewards, m) - beta * _f32(kl)) * m


def sequence_returns(outcome_rewards: Array, kl: Array, mask: Array, beta: float) -> Array:
    """Sequence return with KL in the reward: ``R = r - beta sum_t m_t KL_t``. ``[B, N]``
    (verl's per-sample ``scores = token_level_rewards.sum(-1)``)."""
    return _f32(outcome_rewards) - beta * (_f32(kl) * _f32(mask)).sum(-1)


def reinforce_pp_token_advantages(token_rewards: Array, mask: Array) -> Array:
    """verl ``compute_reinforce_plus_plus_outcome_advantage`` with ``gamma = 1``:
    ``whiten(returns_to_go(rho), m) * m`` over all valid tokens. Any leading shape
    (``[S, T]`` or ``[B, N, T]``); ``token_rewards`` as `kl_penalized_token_rewards`."""
    m = _f32(mask)
    return whiten(returns_to_go(token_rewards, m), m)


def reinforce_pp_advantages(
    rewards: Array,
    mask: Array,
    valid: Array | None = None,
    kl: Array | None = None,
    beta: float = 0.0,
) -> Array:
    """REINFORCE++ (arXiv 2501.03262) as verl: no per-group baseline, global whitening.

    Token returns ``G_t = r - beta sum_{s >= t} KL_s`` (``G_t = r`` without KL) are
    whitened over every valid token of the batch with verl's unbiased ``masked_whiten``,
    so each sample counts once per token. Returns ``[B, N, T]``.
    """
    v = _valid(rewards, valid)
    m = _f32(mask) * v[..., None]  # [B, N, T]
    k = jnp.zeros_like(m) if kl is None else _f32(kl)
    return reinforce_pp_token_advantages(kl_penalized_token_rewards(rewards, k, m, beta), m)


def reinforce_pp_baseline_advantages(
    rewards: Array,
    mask: Array,
    valid: Array | None = None,
    kl: Array | None = None,
    beta: float = 0.0,
) -> Array:
    """REINFORCE++-baseline as verl (``compute_reinforce_plus_plus_baseline_outcome_
    advantage``): ``whiten(R_i - mean_g R, m)`` with the sample value copied to each of
    its tokens and whitened (``shift_mean=True``, unbiased) over all valid tokens.

    ``R = r - beta sum_t KL_t`` (`sequence_returns`; ``R = r`` without KL). A group of
    one has no baseline: its value before whitening is 0 (verl: ``R_i``). ``[B, N, T]``.
    """
    v = _valid(rewards, valid)
    m = _f32(mask) * v[..., None]  # [B, N, T]
    ret = _f32(rewards) if kl is None else sequence_returns(rewards, kl, m, beta)
    return whiten(broadcast_advantages(dr_grpo_advantages(ret, v), m), m)


SAMPLE_ESTIMATORS: dict[str, Callable[..., Array]] = {
    "grpo": grpo_advantages,
    "dr_grpo": dr_grpo_advantages,
    "rloo": rloo_advantages,
}
TOKEN_ESTIMATORS: dict[str, Callable[..., Array]] = {
    "reinforce_pp": reinforce_pp_advantages,
    "reinforce_pp_baseline": reinforce_pp_baseline_advantages,
}
# verl's names for ours
ESTIMATOR_ALIASES = {
    "reinforce_plus_plus": "reinforce_pp",
    "reinforce_plus_plus_baseline": "reinforce_pp_baseline",
}
ADVANTAGE_ESTIMATORS: tuple[str, ...] = (
    *SAMPLE_ESTIMATORS,
    *TOKEN_ESTIMATORS,
    *ESTIMATOR_ALIASES,
)


def _canonical(name: str) -> str:
    name = ESTIMATOR_ALIASES.get(name, name)
    if name not in SAMPLE_ESTIMATORS and name not in TOKEN_ESTIMATORS:
        raise ValueError(
            f"unknown advantage estimator {name!r}; choose one of {sorted(ADVANTAGE_ESTIMATORS)}"
        )
    return name


def compute_advantages(name: str, rewards: Array, valid: Array | None = None) -> Array:
    """Per-sample advantages ``[B, N]`` of a ``SAMPLE_ESTIMATORS`` estimator.

    The per-token estimators (reinforce_pp*) have no per-sample form: `token_advantages`.
    """
    name = _canonical(name)
    if name in TOKEN_ESTIMATORS:
        raise ValueError(f"{name!r} whitens over tokens: use token_advantages(name, r, mask)")
    return SAMPLE_ESTIMATORS[name](rewards, valid)


def token_advantages(
    name: str,
    rewards: Array,
    mask: Array,
    valid: Array | None = None,
    kl: Array | None = None,
    beta: float = 0.0,
) -> Array:
    """Per-token advantages ``[B, N, T]`` of any estimator, as verl computes them.

    Without ``kl`` (KL in the loss, or none) the estimator sees the outcome rewards.
    With ``kl`` ``[B, N, T]`` (verl ``use_kl_in_reward``; the KL of the sampling policy
    to the reference, constants) the token rewards are ``rho_t = r [t = last] - beta KL_t``
    and, as in verl: reinforce_pp whitens their returns to go; every other estimator sums
    them to the sequence return ``R_i = r_i - beta sum_t KL_{i,t}`` and runs on ``R``
    (per-sample ones then broadcast ``A_i`` to the tokens of sample ``i``).

    Args:
        name: one of ``ADVANTAGE_ESTIMATORS`` (verl's names are accepted).
        rewards: ``[B, N]`` outcome rewards. mask: ``[B, N, T]`` response tokens.
        valid: optional ``[B, N]`` real samples. kl: optional ``[B, N, T]``. beta: KL coef.
    """
    name = _canonical(name)
    v = _valid(rewards, valid)
    m = _f32(mask) * v[..., None]
    if name in TOKEN_ESTIMATORS:
        return TOKEN_ESTIMATORS[name](rewards, m, v, kl, beta)
    ret = _f32(rewards) if kl is None else sequence_returns(rewards, kl, m, beta)
    return broadcast_advantages(SAMPLE_ESTIMATORS[name](ret, v), m)


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
    reference's log-probs (e.g. ``kl_estimate(old_logprobs, ref_logprobs, "low_var_kl")``).

    ``reward_to_go=False`` (default): verl's ``use_kl_in_reward``, `token_advantages`
    with ``kl`` (SRT runs it with rloo, low_var_kl, beta = 0.001).

    ``reward_to_go=True`` (OpenRLHF): the per-group step runs on the outcome rewards
    first, ``r'_i = f(r)_i`` (the RLOO / GRPO / Dr.GRPO advantage; identity or group-mean
    subtraction for ``reinforce_pp[_baseline]``), then ``rho_t = r' [t = last] - beta
    KL_t`` and ``A_t = G_t`` (`returns_to_go`); the ``reinforce_pp`` variants finally
    whiten ``A_t`` over all valid tokens of the batch (`whiten`). For ``reinforce_pp``
    both settings agree.
    """
    if not reward_to_go:
        return token_advantages(name, outcome_rewards, mask, valid, kl, beta)
    name = _canonical(name)
    v = _valid(outcome_rewards, valid)  # [B, N]
    m = _f32(mask) * v[..., None]  # [B, N, T]
    if name == "reinforce_pp":
        shaped = _f32(outcome_rewards) * v
    elif name == "reinforce_pp_baseline":
        shaped = dr_grpo_advantages(outcome_rewards, v)
    else:
        shaped = SAMPLE_ESTIMATORS[name](outcome_rewards, v)  # [B, N]
    adv = returns_to_go(kl_penalized_token_rewards(shaped, kl, m, beta), m)  # [B, N, T]
    return whiten(adv, m) if name in TOKEN_ESTIMATORS else adv
