"""Tests for ttrl_jax.update.rl against independent plain-numpy (float64, loop) references."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttrl_jax.update import rl

RTOL, ATOL = 1e-5, 1e-5


# ------------------------------------------------------------ numpy references


def np_group_adv(name, r, v):
    """Loops over groups; only the valid samples of a group take part."""
    r, v = np.asarray(r, np.float64), np.asarray(v, bool)
    out = np.zeros_like(r)
    for b in range(r.shape[0]):
        idx = np.flatnonzero(v[b])
        g = r[b, idx]
        n = len(g)
        if name == "dr_grpo":
            out[b, idx] = g - g.mean() if n else 0.0
        elif name == "grpo":
            if n >= 2 and g.max() > g.min():
                out[b, idx] = (g - g.mean()) / (np.std(g, ddof=1) + 1e-6)
        elif name == "rloo" and n >= 2:
            for k, i in enumerate(idx):
                out[b, i] = g[k] - np.mean(np.delete(g, k))
    return out


def np_masked_whiten(x, m, shift_mean=True):
    """verl masked_whiten: masked mean, unbiased masked variance (Bessel n / (n - 1))."""
    x, m = np.asarray(x, np.float64), np.asarray(m, np.float64)
    n = m.sum()
    mu = (x * m).sum() / n
    var = (((x - mu) ** 2) * m).sum() / n * (n / (n - 1))
    out = (x - mu) / np.sqrt(var + 1e-8)
    return out + mu if not shift_mean else out


def np_returns(rho, m):
    """verl reinforce_plus_plus loop, gamma = 1: reset the running return after EOS."""
    rho, m = np.asarray(rho, np.float64), np.asarray(m, np.float64)
    out, running = np.zeros_like(rho), np.zeros(rho.shape[:-1])
    for t in reversed(range(rho.shape[-1])):
        running = rho[..., t] + running
        out[..., t] = running
        running = running * m[..., t]
    return out


def np_token_rewards(r, m, kl=None, beta=0.0):
    """verl: score on the last valid token, minus beta * KL * mask on every token."""
    r, m = np.asarray(r, np.float64), np.asarray(m, np.float64)
    rho = np.zeros(m.shape)
    for idx in np.ndindex(m.shape[:-1]):
        L = int(m[idx].sum())
        if L:
            rho[idx + (L - 1,)] = r[idx]
    return rho if kl is None else rho - beta * np.asarray(kl, np.float64) * m


def np_token_adv(name, r, v, m, kl=None, beta=0.0):
    """verl's token-level advantages [B, N, T]; groups of one: 0 (our convention)."""
    v = np.asarray(v, bool)
    m = np.asarray(m, np.float64) * v[..., None]
    if name == "reinforce_pp":
        return np_masked_whiten(np_returns(np_token_rewards(r, m, kl, beta), m), m) * m
    R = np.asarray(r, np.float64)
    if kl is not None:
        R = R - beta * (np.asarray(kl, np.float64) * m).sum(-1)
    if name == "reinforce_pp_baseline":
        tiled = np_group_adv("dr_grpo", R, v)[..., None] * m
        return np_masked_whiten(tiled, m) * m
    return np_group_adv(name, R, v)[..., None] * m


def np_kl(lp, ref, kind, clamp=None):
    """verl kl_penalty_forward; clamp None: only low_var_kl at +-10."""
    d = np.asarray(lp, np.float64) - np.asarray(ref, np.float64)
    base = kind.removesuffix("+")
    if base in ("kl", "k1"):
        kl = d
    elif base == "abs":
        kl = np.abs(d)
    elif base in ("mse", "k2"):
        kl = 0.5 * d**2
    else:
        x = np.clip(-d, -20, 20)
        kl = np.clip(np.exp(x) - x - 1, -10, 10)
    return kl if clamp is None else np.clip(kl, -clamp, clamp)


def np_ppo(lp, old, adv, eps_lo=0.2, eps_hi=None, c=3.0):
    """Element-wise scalar reference: returns (loss, clipped, dual) arrays."""
    eps_hi = eps_lo if eps_hi is None else eps_hi
    loss, clip, dual = (np.zeros(np.shape(lp)) for _ in range(3))
    for i in np.ndindex(np.shape(lp)):
        ratio = np.exp(lp[i] - old[i])
        a = adv[i]
        unclipped = -a * ratio
        clipped = -a * min(max(ratio, 1 - eps_lo), 1 + eps_hi)
        val = max(unclipped, clipped)
        clip[i] = clipped > unclipped
        if c is not None and a < 0 and val > -c * a:
            val, dual[i] = -c * a, 1.0
        loss[i] = val
    return loss, clip, dual


def np_aggregate(x, m, mode, scale=None):
    """verl agg_loss as (numerator, denominator); loops over sequences."""
    x, m = (
        np.asarray(x, np.float64).reshape(-1, x.shape[-1]),
        np.asarray(m).reshape(-1, x.shape[-1]),
    )
    scale = x.shape[-1] if scale is None else scale
    if mode == "token-mean":
        return (x * m).sum(), m.sum()
    seqs = [row for row in range(x.shape[0]) if m[row].sum() > 0]
    sums = [(x[s] * m[s]).sum() for s in seqs]
    if mode == "seq-mean-token-mean":
        return sum(t / m[s].sum() for t, s in zip(sums, seqs)), len(seqs)
    if mode == "seq-mean-token-sum":
        return sum(sums), len(seqs)
    if mode == "seq-mean-token-sum-norm":
        return sum(sums) / scale, 1.0
    assert mode == "seq-mean-token-norm"
    return sum(sums) / scale, len(seqs)


def random_mask(rng, shape, min_len=0):
    """Right-padded response masks with random lengths in [min_len, T]."""
    T = shape[-1]
    lengths = rng.integers(min_len, T + 1, size=shape[:-1])
    return (np.arange(T) < lengths[..., None]).astype(np.float32)


# ------------------------------------------------------------------ advantages


def _reward_cases():
    rng = np.random.default_rng(0)
    B, N = 6, 5
    r = rng.normal(size=(B, N)).astype(np.float32)
    r[1] = (rng.random(N) < 0.5).astype(np.float32)  # binary rewards
    r[2] = 0.9  # all equal; the float32 mean of three 0.9 is not 0.9
    v = rng.random((B, N)) < 0.8
    v[0] = True
    v[2] = [True, False, True, False, True]
    v[3] = [True, False, False, False, False]  # single valid sample
    v[4] = False  # empty group
    yield "random", r, v
    r2 = rng.normal(size=(4, 2)).astype(np.float32)  # N = 2
    r2[3] = [1.0, 1.0]
    yield "n2", r2, np.ones((4, 2), bool)
    yield "binary_novalid", (rng.random((3, 8)) < 0.5).astype(np.float32), None


@pytest.mark.parametrize("name", sorted(rl.SAMPLE_ESTIMATORS))
@pytest.mark.parametrize("case", list(_reward_cases()), ids=lambda c: c[0])
def test_estimators_match_numpy(name, case):
    _, r, v = case
    got = jax.jit(functools.partial(rl.compute_advantages, name))(r, v)
    want = np_group_adv(name, r, np.ones(r.shape, bool) if v is None else v)
    assert got.shape == r.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


@pytest.mark.parametrize("name", sorted(rl.ADVANTAGE_ESTIMATORS))
@pytest.mark.parametrize("case", list(_reward_cases()), ids=lambda c: c[0])
def test_token_advantages_match_verl_numpy(name, case):
    """Every estimator (verl's names too) at the token level, samples of varying length."""
    _, r, v = case
    rng = np.random.default_rng(10)
    m = random_mask(rng, r.shape + (7,), min_len=1)
    v = np.ones(r.shape, bool) if v is None else v
    got = jax.jit(functools.partial(rl.token_advantages, name))(r, m, v)
    want = np_token_adv(rl.ESTIMATOR_ALIASES.get(name, name), r, v, m)
    assert got.shape == m.shape and got.dtype == jnp.float32
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


def test_estimator_hand_values():
    r = jnp.array([[1.0, 0.0, 0.0, 1.0], [1.0, 1.0, 1.0, 0.0]])
    # GRPO: mean 0.5, unbiased std sqrt(1/3); RLOO: 1 - 1/3 and 0 - 2/3.
    s = np.sqrt(1 / 3) + 1e-6
    np.testing.assert_allclose(
        jax.jit(rl.grpo_advantages)(r)[0], [0.5 / s, -0.5 / s, -0.5 / s, 0.5 / s], rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(rl.rloo_advantages)(r)[0], [2 / 3, -2 / 3, -2 / 3, 2 / 3], rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(rl.rloo_advantages)(r)[1], [1 / 3, 1 / 3, 1 / 3, -1.0], rtol=1e-6
    )
    np.testing.assert_allclose(
        jax.jit(rl.dr_grpo_advantages)(r)[1], [0.25, 0.25, 0.25, -0.75], rtol=1e-6
    )
    # N = 2: RLOO is the plain difference.
    np.testing.assert_allclose(rl.rloo_advantages(jnp.array([[3.0, 1.0]])), [[2.0, -2.0]])


def _lengths_mask(lengths, T):
    return (np.arange(T) < np.asarray(lengths)[..., None]).astype(np.float32)


def test_reinforce_pp_whitens_over_tokens_unbiased():
    """verl: tokens [1, 1, 1 | 0] -> mean 3/4, unbiased var (3/16 + 9/16) / 3 = 1/4."""
    m = _lengths_mask([[3, 1]], 4)
    a = rl.reinforce_pp_advantages(jnp.array([[1.0, 0.0]]), m)
    want = np.array([[[0.5, 0.5, 0.5, 0.0], [-1.5, 0.0, 0.0, 0.0]]]) / np.sqrt(1 + 4e-8)
    np.testing.assert_allclose(a, want, rtol=1e-6, atol=1e-7)
    # Per sample with the population variance this case would give +-1: a longer
    # sample weighs more, and a unanimous group keeps a signal (no group baseline).
    a2 = rl.reinforce_pp_advantages(
        jnp.array([[1.0, 1.0], [0.0, 1.0]]), _lengths_mask([[1, 1], [1, 1]], 2)
    )
    np.testing.assert_allclose(a2[..., 0], [[0.5, 0.5], [-1.5, 0.5]], rtol=1e-6)
    # verl's name, the same estimator
    b = rl.token_advantages("reinforce_plus_plus", jnp.array([[1.0, 0.0]]), m)
    np.testing.assert_array_equal(a, b)


def test_reinforce_pp_baseline_hand_values():
    """Group means subtracted, copied to the tokens, whitened over all 8 valid tokens."""
    r = jnp.array([[1.0, 0.0], [1.0, 1.0]])
    m = _lengths_mask([[1, 3], [2, 2]], 3)
    a = rl.reinforce_pp_baseline_advantages(r, m)
    # token values 0.5 x1, -0.5 x3, 0 x4: mean -1/8, unbiased var (7/8) / 7 = 1/8
    sd = np.sqrt(1 / 8 + 1e-8)
    want = np.array([[[0.625, 0, 0], [-0.375] * 3], [[0.125, 0.125, 0], [0.125, 0.125, 0]]]) / sd
    np.testing.assert_allclose(a, want * m, rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(a, rl.token_advantages("reinforce_plus_plus_baseline", r, m))


def test_whiten_shift_mean_and_single_token():
    x = jnp.array([[1.0, 2.0, 3.0, 100.0]])
    m = jnp.array([[1.0, 1.0, 1.0, 0.0]])  # mean 2, unbiased var 1
    np.testing.assert_allclose(rl.whiten(x, m), [[-1, 0, 1, 0]], atol=1e-6)
    np.testing.assert_allclose(rl.whiten(x, m, shift_mean=False), [[1, 2, 3, 0]], atol=1e-6)
    np.testing.assert_allclose(
        rl.whiten(x, m, shift_mean=False), np_masked_whiten(x, m, False) * m, atol=1e-6
    )
    # one valid token: verl raises (n - 1 = 0); here the variance is 0 and the output 0
    assert float(jnp.abs(rl.whiten(x, jnp.array([[0.0, 1.0, 0.0, 0.0]]))).max()) == 0.0


def test_groups_of_one_have_no_baseline():
    """A group of one gets 0 (verl: r or r / (1 + eps)); REINFORCE++ keeps it."""
    r = jnp.array([[2.0, 0.0], [1.0, 0.0], [3.0, 0.0]])
    v = jnp.array([[True, False], [True, True], [True, False]])
    m = _lengths_mask([[2, 2], [2, 2], [2, 2]], 2)
    for name in ("grpo", "dr_grpo", "rloo"):
        a = np.asarray(rl.token_advantages(name, r, m, v))
        assert np.all(a[[0, 2]] == 0.0) and np.all(np.abs(a[1]) > 0.1), name
    base = np.asarray(rl.token_advantages("reinforce_pp_baseline", r, m, v))
    np.testing.assert_allclose(base[0], base[2], atol=1e-7)  # both 0 before whitening
    pp = np.asarray(rl.token_advantages("reinforce_pp", r, m, v))
    assert pp[2, 0, 0] > pp[0, 0, 0] > 0  # r = 3 and 2 above the batch mean


def test_returns_to_go_resets_like_verl():
    """A hole in the mask resets the running return (verl's loop), as at the padding."""
    rho = np.array([[1.0, 2.0, 3.0, 4.0, 5.0]], np.float32)
    m = np.array([[1.0, 1.0, 0.0, 1.0, 0.0]], np.float32)
    got = rl.returns_to_go(rho, m)
    np.testing.assert_allclose(got, np_returns(rho * m, m) * m, atol=1e-6)
    np.testing.assert_allclose(got, [[3.0, 2.0, 0.0, 4.0, 0.0]], atol=1e-6)


def test_all_equal_groups():
    r = jnp.array([[0.9, 0.9, 0.9], [1.0, 0.0, 1.0], [0.3, 0.9, 0.3], [2.0, 2.0, 2.0]])
    v = jnp.array([[1, 1, 1], [1, 1, 1], [1, 0, 1], [1, 1, 0]], bool)
    flags, frac = rl.all_equal_groups(r, v)
    np.testing.assert_array_equal(flags, [True, False, True, True])
    assert float(frac) == 0.75
    # Flagged groups give (near) zero advantage for every group-baselined estimator;
    # in float32 mean(0.9, 0.9, 0.9) != 0.9, and GRPO must not blow that rounding up
    # by 1 / eps = 1e6 (it would give ~0.06), so it returns exactly 0 there.
    for name, tol in (("grpo", 0.0), ("dr_grpo", 1e-7), ("rloo", 1e-7)):
        adv = np.asarray(rl.compute_advantages(name, r, v))
        assert np.all(np.abs(adv[np.asarray(flags)]) <= tol), name
        assert np.all(np.abs(adv[1]) > 0.1), name
    flags2, _ = rl.all_equal_groups(jnp.array([[0.0, 0.01], [0.0, 1.0]]), atol=0.05)
    np.testing.assert_array_equal(flags2, [True, False])


def test_unknown_names_raise():
    with pytest.raises(ValueError, match="advantage estimator"):
        rl.compute_advantages("ppo", jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="token_advantages"):
        rl.compute_advantages("reinforce_pp", jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match="kl_type"):
        rl.kl_estimate(jnp.zeros(3), jnp.zeros(3), "k3++")
    with pytest.raises(ValueError, match="kl_type"):
        rl.kl_estimate(jnp.zeros(3), jnp.zeros(3), "k4")
    with pytest.raises(ValueError, match="aggregation"):
        rl.aggregate(jnp.zeros((2, 3)), jnp.ones((2, 3)), "sum")


# ----------------------------------------------------------------- KL in reward


def _kl_case(seed=1, B=3, N=4, T=7):
    rng = np.random.default_rng(seed)
    r = (rng.random((B, N)) < 0.5).astype(np.float32)
    kl = np.abs(rng.normal(size=(B, N, T))).astype(np.float32)
    m = random_mask(rng, (B, N, T))
    m[0, 0] = 0.0  # a sample with no tokens at all
    return r, kl, m


def test_token_rewards_and_returns_to_go():
    r, kl, m = _kl_case()
    beta = 0.3
    rho = rl.kl_penalized_token_rewards(r, kl, m, beta)
    G = rl.returns_to_go(rho, m)
    B, N, T = m.shape
    want_rho, want_G = np.zeros((B, N, T)), np.zeros((B, N, T))
    for b, i in np.ndindex(B, N):
        L = int(m[b, i].sum())
        for t in range(L):
            want_rho[b, i, t] = -beta * kl[b, i, t] + (r[b, i] if t == L - 1 else 0.0)
        for t in range(L):
            want_G[b, i, t] = want_rho[b, i, t:L].sum()
    np.testing.assert_allclose(rho, want_rho, rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(G, want_G, rtol=RTOL, atol=ATOL)
    # Without KL the return of every valid token is the outcome reward (broadcasting).
    G0 = rl.returns_to_go(rl.kl_penalized_token_rewards(r, kl, m, 0.0), m)
    np.testing.assert_allclose(G0, rl.broadcast_advantages(r, m), atol=1e-7)


@pytest.mark.parametrize("name", sorted(rl.ADVANTAGE_ESTIMATORS))
def test_kl_in_reward_verl(name):
    """verl use_kl_in_reward: reinforce_pp whitens token returns r - beta sum_{s>=t} KL_s;
    the others run on R = r - beta * sum_t KL_t (baseline: whitened over tokens)."""
    r, kl, m = _kl_case(seed=2)
    v = np.ones(r.shape, bool)
    v[2, 1] = False
    beta = 0.05
    got = jax.jit(functools.partial(rl.kl_in_reward_advantages, name))(r, kl, m, beta, v)
    want = np_token_adv(rl.ESTIMATOR_ALIASES.get(name, name), r, v, m, kl, beta)
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)
    same = rl.token_advantages(name, r, m, v, kl, beta)
    np.testing.assert_allclose(got, same, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(rl.ADVANTAGE_ESTIMATORS))
def test_kl_in_reward_to_go(name):
    """OpenRLHF / REINFORCE++: shape outcome rewards, add -beta KL per token, sum to go."""
    r, kl, m = _kl_case(seed=3)
    v = np.ones(r.shape, bool)
    v[1, 2] = False
    beta = 0.05
    f = functools.partial(rl.kl_in_reward_advantages, name, reward_to_go=True)
    got = jax.jit(f)(r, kl, m, beta, v)
    mv = m * v[..., None]
    name = rl.ESTIMATOR_ALIASES.get(name, name)
    if name == "reinforce_pp":
        shaped = np.where(v, r, 0.0)
    elif name == "reinforce_pp_baseline":
        shaped = np_group_adv("dr_grpo", r, v)
    else:
        shaped = np_group_adv(name, r, v)
    B, N, T = m.shape
    G = np.zeros((B, N, T))
    for b, i in np.ndindex(B, N):
        L = int(mv[b, i].sum())
        for t in range(L):
            G[b, i, t] = shaped[b, i] - beta * kl[b, i, t:L].sum()
    want = np_masked_whiten(G, mv) * mv if name.startswith("reinforce_pp") else G
    np.testing.assert_allclose(got, want, rtol=RTOL, atol=ATOL)


# ------------------------------------------------------------------ KL, policy


@pytest.mark.parametrize("kind", rl.KL_TYPES)
def test_kl_estimators(kind):
    rng = np.random.default_rng(4)
    lp = rng.normal(-2, 1.5, size=(5, 9)).astype(np.float32)
    ref = rng.normal(-2, 1.5, size=(5, 9)).astype(np.float32)
    lp[0, :3] = [-1.0, -30.0, -1.0]  # large |d|: low_var_kl's +-10 clamp binds
    ref[0, :3] = [-30.0, -1.0, -1.0]
    got = rl.kl_estimate(lp, ref, kind)
    np.testing.assert_allclose(got, np_kl(lp, ref, kind), rtol=RTOL, atol=ATOL)
    # Gradients stay finite even where the estimate is clamped.
    g = jax.grad(lambda x: rl.kl_estimate(x, ref, kind).sum())(jnp.asarray(lp))
    assert np.all(np.isfinite(g))
    if kind.endswith("+"):  # straight through: the gradient of k2, d = lp - ref
        np.testing.assert_allclose(g, lp - ref, rtol=1e-6, atol=1e-6)
    assert rl.kl_estimate(jnp.zeros(2), jnp.zeros(2), kind).tolist() == [0.0, 0.0]


def test_kl_hand_values_and_clamp():
    lp, ref = jnp.array([15.0, -15.0, 0.5]), jnp.zeros(3)
    # verl's default: only low_var_kl is clamped (at 10); k1 / abs / k2 are not
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k1"), [15.0, -15.0, 0.5])
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "kl"), [15.0, -15.0, 0.5])
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "abs"), [15.0, 15.0, 0.5])
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "mse"), [112.5, 112.5, 0.125])
    k3_half = np.exp(-0.5) + 0.5 - 1
    # exp(-15) + 15 - 1 = 14.0000003 and exp(15) - 16 are both clamped at 10
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k3"), [10.0, 10.0, k3_half], rtol=1e-6)
    np.testing.assert_allclose(
        rl.kl_estimate(lp, ref, "low_var_kl+"), [10.0, 10.0, k3_half], rtol=1e-6
    )
    # a configured clamp c bounds every estimator at +-c
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k1", 5.0), [5.0, -5.0, 0.5])
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k2", 5.0), [5.0, 5.0, 0.125])
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k3", 5.0), [5.0, 5.0, k3_half], rtol=1e-6)
    np.testing.assert_allclose(rl.kl_estimate(lp, ref, "k3+", 5.0), [5.0, 5.0, k3_half], rtol=1e-6)


HAND = [  # (ratio, advantage, eps_high, expected loss, clipped, dual-clipped)
    (1.5, 1.0, None, -1.2, 1, 0),  # positive A, ratio above 1 + eps: clipped
    (0.5, 1.0, None, -0.5, 0, 0),  # positive A, ratio below: pessimistic unclipped
    (1.5, -1.0, None, 1.5, 0, 0),  # negative A, ratio above: unclipped
    (0.5, -1.0, None, 0.8, 1, 0),  # negative A, ratio below 1 - eps: clipped
    (5.0, -1.0, None, 3.0, 0, 1),  # negative A, huge ratio: dual clip caps at c |A|
    (5.0, 2.0, None, -2.4, 1, 0),  # positive A: no dual clip
    (1.25, 1.0, 0.28, -1.25, 0, 0),  # clip-higher: inside [0.8, 1.28]
    (1.5, 1.0, 0.28, -1.28, 1, 0),  # clip-higher: clipped at 1.28
    (0.7, 1.0, 0.28, -0.7, 0, 0),
]


@pytest.mark.parametrize("eps_high", [None, 0.28])
def test_ppo_hand_cases(eps_high):
    ratio, adv, _, loss, clip, dual = (
        np.array(c) for c in zip(*[h for h in HAND if h[2] == eps_high])
    )
    lp = jnp.asarray(np.log(ratio), jnp.float32)
    old, a, m = jnp.zeros_like(lp), jnp.asarray(adv, jnp.float32), jnp.ones_like(lp)
    out, st = rl.ppo_clip_loss(lp, old, a, m, 0.2, eps_high, 3.0)
    np.testing.assert_allclose(out, loss, rtol=1e-5)
    np.testing.assert_array_equal(st["clipfrac"], clip)
    np.testing.assert_array_equal(st["dual_clipfrac"], dual)
    # Gradient w.r.t. logp: -A * ratio when unclipped, 0 when any clip binds.
    g = jax.grad(lambda x: rl.ppo_clip_loss(x, old, a, m, 0.2, eps_high, 3.0)[0].sum())(lp)
    want = np.where(clip + dual > 0, 0.0, -adv * ratio)
    np.testing.assert_allclose(g, want, rtol=1e-5, atol=1e-7)


def test_ppo_without_dual_clip():
    lp, old, a, m = jnp.log(jnp.array([5.0])), jnp.zeros(1), -jnp.ones(1), jnp.ones(1)
    out, st = rl.ppo_clip_loss(lp, old, a, m, dual_clip_c=None)
    np.testing.assert_allclose(out, [5.0], rtol=1e-5)
    assert float(st["dual_clipfrac"][0]) == 0.0


@pytest.mark.parametrize("eps_high,c", [(None, 3.0), (0.28, 3.0), (0.3, None)])
def test_ppo_matches_numpy(eps_high, c):
    rng = np.random.default_rng(5)
    shape = (4, 3, 11)
    old = rng.normal(-1.5, 0.5, size=shape).astype(np.float32)
    lp = (old + rng.normal(0, 0.6, size=shape)).astype(np.float32)
    adv = rng.normal(size=shape).astype(np.float32)
    m = random_mask(rng, shape)
    loss, st = rl.ppo_clip_loss(lp, old, adv, m, 0.2, eps_high, c)
    want, clip, dual = np_ppo(lp, old, adv, 0.2, eps_high, c)
    np.testing.assert_allclose(loss, want * m, rtol=RTOL, atol=ATOL)
    np.testing.assert_array_equal(st["clipfrac"], clip * m)
    np.testing.assert_array_equal(st["dual_clipfrac"], dual * m)
    np.testing.assert_allclose(st["approx_kl_k2"], 0.5 * (lp - old) ** 2 * m, rtol=RTOL, atol=1e-7)
    np.testing.assert_allclose(st["ppo_kl"], (old - lp) * m, rtol=RTOL, atol=1e-6)
    assert 0 < clip[m > 0].mean() < 1  # the case exercises both branches
    if c is not None:
        assert dual[m > 0].sum() > 0


# ----------------------------------------------------------------- aggregation


@pytest.mark.parametrize("mode", rl.AGG_MODES)
@pytest.mark.parametrize("scale", [None, 16.0])
def test_aggregate_matches_numpy(mode, scale):
    rng = np.random.default_rng(6)
    x = rng.normal(size=(3, 4, 9)).astype(np.float32)
    m = random_mask(rng, (3, 4, 9))
    m[1, 1] = 0.0  # empty sequence: not counted
    num, den = rl.aggregate(x, m, mode, scale)
    wn, wd = np_aggregate(x, m, mode, scale)
    np.testing.assert_allclose([num, den], [wn, wd], rtol=RTOL, atol=ATOL)
    w = rl.aggregate_weights(m, mode, scale)
    np.testing.assert_allclose((w * x).sum(), wn, rtol=RTOL, atol=ATOL)
    assert float(rl.safe_div(jnp.float32(1.0), jnp.float32(0.0))) == 0.0


def test_aggregate_hand_values():
    """verl agg_loss on two sequences of T = 4: token sums 6 (3 tokens) and 4 (1 token)."""
    x = jnp.array([[1.0, 2.0, 3.0, 9.0], [4.0, 9.0, 9.0, 9.0]])
    m = jnp.array([[1.0, 1.0, 1.0, 0.0], [1.0, 0.0, 0.0, 0.0]])

    def loss(mode, scale=None):
        num, den = rl.aggregate(x, m, mode, scale)
        return float(num / den)

    assert loss("token-mean") == pytest.approx(10 / 4)
    assert loss("seq-mean-token-mean") == pytest.approx((2 + 4) / 2)
    assert loss("seq-mean-token-sum") == pytest.approx((6 + 4) / 2)  # no division by T
    assert loss("seq-mean-token-sum-norm") == pytest.approx((6 + 4) / 4)  # sum / T
    assert loss("seq-mean-token-sum-norm", 2.0) == pytest.approx((6 + 4) / 2)
    assert loss("seq-mean-token-norm") == pytest.approx((6 + 4) / 4 / 2)  # ours
    assert loss("seq-mean-token-norm", 5.0) == pytest.approx((6 + 4) / 5 / 2)


def test_policy_objective_matches_numpy():
    rng = np.random.default_rng(7)
    shape = (2, 4, 10)
    old = rng.normal(-1.5, 0.5, size=shape).astype(np.float32)
    lp = (old + rng.normal(0, 0.4, size=shape)).astype(np.float32)
    ref = (old + rng.normal(0, 0.4, size=shape)).astype(np.float32)
    ent = rng.random(shape).astype(np.float32)
    m = random_mask(rng, shape, min_len=1)
    adv = rl.broadcast_advantages(rl.grpo_advantages(rng.normal(size=shape[:2])), m)
    kw = {
        "clip_eps_low": 0.2,
        "clip_eps_high": 0.28,
        "dual_clip_c": 3.0,
        "kl_coef": 0.1,
        "kl_type": "k3",
        "entropy_coef": 0.01,
    }
    for mode in rl.AGG_MODES:
        num, den, stats = rl.policy_objective(lp, old, adv, m, ref, ent, agg_mode=mode, **kw)
        pg, clip, dual = np_ppo(lp, old, np.asarray(adv), 0.2, 0.28, 3.0)
        per_tok = pg + 0.1 * np_kl(lp, ref, "k3") - 0.01 * ent
        np.testing.assert_allclose([num, den], np_aggregate(per_tok, m, mode), rtol=RTOL, atol=ATOL)
    np.testing.assert_allclose(stats["pg_loss"], [(pg * m).sum(), m.sum()], rtol=RTOL)
    np.testing.assert_allclose(stats["kl"], [(np_kl(lp, ref, "k3") * m).sum(), m.sum()], rtol=RTOL)
    np.testing.assert_allclose(stats["entropy"], [(ent * m).sum(), m.sum()], rtol=RTOL)
    np.testing.assert_allclose(stats["dual_clipfrac"][0], (dual * m).sum())
    np.testing.assert_allclose(stats["clipfrac"][0], (clip * m).sum())
    # Without ref / entropies those terms and stats vanish.
    num2, _, stats2 = rl.policy_objective(lp, old, adv, m, **kw)
    np.testing.assert_allclose(num2, (pg * m).sum(), rtol=RTOL)
    assert "kl" not in stats2 and "entropy" not in stats2


# ----------------------------------------------------- gradient accumulation


def _toy_batch(S=64, T=12, D=5, V=7, seed=8):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(S, T, D)).astype(np.float32)
    tokens = rng.integers(0, V, size=(S, T))
    lengths = np.sort(rng.integers(1, T + 1, size=S))  # sorted: micro-batches differ a lot
    m = (np.arange(T) < lengths[:, None]).astype(np.float32)
    adv = rng.normal(size=(S, 1)).astype(np.float32)
    old = rng.normal(-2.0, 0.3, size=(S, T)).astype(np.float32)
    ref = rng.normal(-2.0, 0.3, size=(S, T)).astype(np.float32)
    W = rng.normal(scale=0.5, size=(D, V)).astype(np.float32)
    return W, (x, tokens, m, adv, old, ref)


def _toy_num_den(W, batch, mode):
    """A linear 'policy': logits = x @ W; per-token logp of the tokens and entropies."""
    x, tokens, m, adv, old, ref = batch
    logp_all = jax.nn.log_softmax(x @ W, axis=-1)  # [S, T, V]
    logp = jnp.take_along_axis(logp_all, tokens[..., None], -1)[..., 0]  # [S, T]
    ent = -(jnp.exp(logp_all) * logp_all).sum(-1)  # [S, T]
    num, den, _ = rl.policy_objective(
        logp, old, adv, m, ref, ent, kl_coef=0.05, entropy_coef=0.01, agg_mode=mode
    )
    return num, den


@pytest.mark.parametrize("mode", rl.AGG_MODES)
def test_gradient_accumulation_is_exact(mode):
    W, batch = _toy_batch()
    grad_num = jax.jit(jax.grad(lambda W, b: _toy_num_den(W, b, mode)[0]))
    den_of = jax.jit(lambda W, b: _toy_num_den(W, b, mode)[1])

    def full_loss(W):
        num, den = _toy_num_den(W, batch, mode)
        return num / den

    g_full = jax.jit(jax.grad(full_loss))(W)
    g_sum, den_sum, naive = 0.0, 0.0, 0.0
    for k in range(4):
        micro = tuple(a[16 * k : 16 * (k + 1)] for a in batch)
        g, d = grad_num(W, micro), den_of(W, micro)
        g_sum, den_sum, naive = g_sum + g, den_sum + d, naive + g / d / 4
    # the whole batch's denominator: the micro-batches' sum, except for the plain sum
    den_all = den_of(W, batch)
    if mode != "seq-mean-token-sum-norm":
        np.testing.assert_allclose(den_sum, den_all, rtol=1e-6)
    g_acc = g_sum / den_all
    np.testing.assert_allclose(g_acc, g_full, rtol=1e-5, atol=1e-6)
    if mode == "token-mean":  # uneven token counts: averaging micro-batch means is wrong
        assert np.abs(np.asarray(naive - g_full)).max() > 1e-3


# -------------------------------------------------------------------------- jit


def test_jit_matches_eager():
    """Estimators and KL-in-reward run under jit in the tests above; here the objective."""
    rng = np.random.default_rng(9)
    r, _, m = _kl_case(seed=9)
    v = jnp.asarray(rng.random(r.shape) < 0.9)
    np.testing.assert_array_equal(
        jax.jit(rl.all_equal_groups)(r, v)[0], rl.all_equal_groups(r, v)[0]
    )
    lp = jnp.asarray(rng.normal(-1, 0.3, size=m.shape), jnp.float32)
    old = lp + 0.1
    ent = jnp.asarray(rng.random(m.shape), jnp.float32)
    adv = rl.broadcast_advantages(r, m)
    obj = jax.jit(
        rl.policy_objective,
        static_argnames=("kl_type", "kl_clamp", "agg_mode", "loss_scale_factor"),
    )
    for mode in rl.AGG_MODES:
        out = obj(
            lp,
            old,
            adv,
            m,
            lp - 0.2,
            ent,
            kl_coef=0.1,
            entropy_coef=0.01,
            agg_mode=mode,
            kl_type="k1",
        )
        ref = rl.policy_objective(
            lp,
            old,
            adv,
            m,
            lp - 0.2,
            ent,
            kl_coef=0.1,
            entropy_coef=0.01,
            agg_mode=mode,
            kl_type="k1",
        )
        jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-6), out, ref)
