"""The jitted policy update: exact accumulation, NaN skipping, fp32 master weights."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import oracles
import pytest

from ttrl_jax import sharding
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig
from ttrl_jax.update import lm_head, rl
from ttrl_jax.update import train_step as ts

CFG = ModelConfig(
    model_type="qwen2",
    vocab_size=64,
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    head_dim=8,
    qkv_bias=True,
    tie_word_embeddings=True,
)
P, T, S = 6, 10, 16


def rollout(seed=0, s=S):
    rng = np.random.RandomState(seed)
    tokens = rng.randint(1, CFG.vocab_size, (s, P + T)).astype(np.int32)
    plen = rng.randint(2, P + 1, s)
    rlen = rng.randint(1, T + 1, s)
    attn = np.zeros((s, P + T), np.int32)
    for i in range(s):
        attn[i, P - plen[i] : P + rlen[i]] = 1
    resp = attn[:, P:].astype(np.float32)
    adv = rl.broadcast_advantages(jnp.asarray(rng.randn(s).astype(np.float32)), resp)
    return {
        "tokens": tokens,
        "attn_mask": attn,
        "resp_mask": resp,
        "old_logprobs": (-2.0 + 0.3 * rng.randn(s, T)).astype(np.float32) * resp,
        "ref_logprobs": (-2.0 + 0.3 * rng.randn(s, T)).astype(np.float32) * resp,
        "advantages": np.array(adv),
    }


HYPER = {
    "temperature": jnp.float32(0.9),
    "kl_coef": jnp.float32(0.05),
    "entropy_coef": jnp.float32(0.01),
}


def run(loss, batch, params=None, opt_cls=ts.Plain, lr=1e-2, sgd=False):
    """One train step; ``sgd`` makes the param change proportional to the gradient."""
    params = params or tfm.init_params(CFG, jax.random.key(0))
    tx = optax.sgd(lr) if sgd else ts.make_optimizer(lambda c: lr, weight_decay=0.0, grad_clip=0.0)
    opt = opt_cls(tx)
    state = opt.init(params)
    step = ts.make_train_step(CFG, loss, opt)
    return step(params, state, jax.tree.map(jnp.asarray, batch), HYPER)


@pytest.mark.slow
@pytest.mark.parametrize("agg", rl.AGG_MODES)
def test_gradient_accumulation_is_exact(agg):
    batch = rollout(1)
    common = {"kl_as_loss": True, "use_entropy": True, "agg_mode": agg, "remat": False}
    p1, _, m1 = run(ts.LossConfig(micro_batch_size=0, **common), batch, sgd=True, lr=1.0)
    p4, _, m4 = run(ts.LossConfig(micro_batch_size=4, **common), batch, sgd=True, lr=1.0)
    np.testing.assert_allclose(m1["loss"], m4["loss"], rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(m1["grad_norm"], m4["grad_norm"], rtol=1e-5)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p4)):
        np.testing.assert_allclose(a, b, atol=1e-6)


@pytest.mark.slow
def test_loss_matches_direct_objective_and_updates_move_params():
    batch = rollout(2)
    loss = ts.LossConfig(kl_as_loss=True, use_entropy=True, num_minibatches=2, remat=True)
    params = tfm.init_params(CFG, jax.random.key(0))
    # direct: the first mini-batch's objective at the initial params
    first = jax.tree.map(lambda x: jnp.asarray(x[: S // 2]), batch)
    lp, ent = ts.sequence_logprobs(
        params, CFG, first["tokens"], first["attn_mask"], T, HYPER["temperature"], with_entropy=True
    )
    num, den, _ = rl.policy_objective(
        lp,
        first["old_logprobs"],
        first["advantages"],
        first["resp_mask"],
        first["ref_logprobs"],
        ent,
        kl_coef=0.05,
        entropy_coef=0.01,
    )
    new, _, metrics = run(loss, batch, params=jax.tree.map(jnp.copy, params))
    assert metrics["skipped"] == 0
    moved = max(
        float(jnp.abs(a - b).max()) for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params))
    )
    assert moved > 1e-4
    single = ts.LossConfig(kl_as_loss=True, use_entropy=True, num_minibatches=1, remat=False)
    _, _, m = run(
        single, jax.tree.map(lambda x: x[: S // 2], batch), params=jax.tree.map(jnp.copy, params)
    )
    np.testing.assert_allclose(m["loss"], num / den, rtol=1e-5)


@pytest.mark.slow
def test_metrics_ppo_kl_is_verl_k1_and_kl_settings_plumb_through():
    """``ppo_kl`` is verl's masked mean of old - new log-prob (before the first update);
    k2 is logged as ``approx_kl_k2``; ``kl_clamp`` and ``loss_scale_factor`` reach the loss."""
    batch = rollout(4)
    params = tfm.init_params(CFG, jax.random.key(0))
    lp = ts.sequence_logprobs(
        params,
        CFG,
        jnp.asarray(batch["tokens"]),
        jnp.asarray(batch["attn_mask"]),
        T,
        HYPER["temperature"],
    )
    m, old = batch["resp_mask"], batch["old_logprobs"]
    d = np.asarray(lp, np.float64) - old
    base = {"kl_as_loss": True, "kl_type": "k1", "remat": False}
    _, _, met = run(ts.LossConfig(**base), batch, params=jax.tree.map(jnp.copy, params))
    assert "approx_kl" not in met
    np.testing.assert_allclose(met["ppo_kl"], (-d * m).sum() / m.sum(), rtol=1e-5)
    np.testing.assert_allclose(met["approx_kl_k2"], (0.5 * d**2 * m).sum() / m.sum(), rtol=1e-5)
    # k1 against a reference 30 nats below: unclamped by default (verl), +-5 with kl_clamp
    far = dict(batch, ref_logprobs=(old - 30.0) * m)
    _, _, met = run(ts.LossConfig(**base), far, params=jax.tree.map(jnp.copy, params))
    k1 = np.asarray(lp, np.float64) - (old - 30.0)
    np.testing.assert_allclose(met["kl"], (k1 * m).sum() / m.sum(), rtol=1e-5)
    assert float(met["kl"]) > 20
    clamp = ts.LossConfig(**base, kl_clamp=5.0)
    _, _, met = run(clamp, far, params=jax.tree.map(jnp.copy, params))
    np.testing.assert_allclose(met["kl"], 5.0, rtol=1e-6)
    # seq-mean-token-sum-norm divides the summed sequence losses by loss_scale_factor (T)
    norm = {"agg_mode": "seq-mean-token-sum-norm", "remat": False}
    _, _, a = run(ts.LossConfig(**norm), batch, params=jax.tree.map(jnp.copy, params))
    _, _, b = run(
        ts.LossConfig(**norm, loss_scale_factor=2.0 * T),
        batch,
        params=jax.tree.map(jnp.copy, params),
    )
    _, _, c = run(
        ts.LossConfig(agg_mode="seq-mean-token-sum", remat=False),
        batch,
        params=jax.tree.map(jnp.copy, params),
    )
    np.testing.assert_allclose(b["loss"], a["loss"] / 2, rtol=1e-5)
    n_seq = float((m.sum(-1) > 0).sum())
    np.testing.assert_allclose(a["loss"], c["loss"] * n_seq / T, rtol=1e-5)


def test_nonfinite_update_is_skipped():
    batch = rollout(3)
    batch["advantages"][0, 0] = np.nan
    params = tfm.init_params(CFG, jax.random.key(0))
    new, _, metrics = run(
        ts.LossConfig(num_minibatches=2), batch, params=jax.tree.map(jnp.copy, params)
    )
    assert metrics["skipped"] == 1  # the first mini-batch is skipped, the second applied
    batch["advantages"][:] = np.nan
    new, _, metrics = run(
        ts.LossConfig(num_minibatches=2), batch, params=jax.tree.map(jnp.copy, params)
    )
    assert metrics["skipped"] == 2
    for a, b in zip(jax.tree.leaves(new), jax.tree.leaves(params)):
        np.testing.assert_array_equal(a, b)


def _same(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b)):
        np.testing.assert_array_equal(x, y)


def test_adam_with_b2_of_one_makes_nan_params_and_is_rejected():
    """b2 = 1 divides by 1 - b2^t = 0: finite loss and gradient, NaN params. The update
    is rejected even with the size check off."""
    params = tfm.init_params(CFG, jax.random.key(0))
    tx = ts.make_optimizer(lambda c: 1e-3, weight_decay=0.0, grad_clip=0.0, b2=1.0)
    opt = ts.Plain(tx)
    step = ts.make_train_step(CFG, ts.LossConfig(max_update_ratio=0.0, remat=False), opt)
    batch = jax.tree.map(jnp.asarray, rollout(5))
    new, _, m = step(jax.tree.map(jnp.copy, params), opt.init(params), batch, HYPER)
    assert np.isfinite(m["loss"]) and np.isfinite(m["grad_norm"])
    assert m["skipped"] == 1 and m["update_ratio"] == np.finfo(np.float32).max
    _same(new, params)


@pytest.mark.parametrize("limit", [1.0, 0.0])
def test_a_finite_but_exploding_update_is_rejected_by_its_size(limit):
    """lr 1e30: every new param is finite (|p| ~ 1e30, squares overflow float32), the
    update is ~1e30 x the params' norm: rejected at max_update_ratio=1, taken at 0."""
    params = tfm.init_params(CFG, jax.random.key(0))
    new, _, m = run(
        ts.LossConfig(max_update_ratio=limit, remat=False),
        rollout(6),
        params=jax.tree.map(jnp.copy, params),
        sgd=True,
        lr=1e30,
    )
    assert 1e20 < float(m["update_ratio"]) < np.finfo(np.float32).max
    big = max(float(jnp.max(jnp.abs(x))) for x in jax.tree.leaves(new))
    if limit:
        assert m["skipped"] == 1
        _same(new, params)
    else:
        assert m["skipped"] == 0 and np.isfinite(big) and big > 1e20


def test_bf16_params_with_fp32_master_weights():
    batch = rollout(4)
    params = tfm.init_params(CFG, jax.random.key(0), dtype=jnp.bfloat16)
    new, state, _ = run(ts.LossConfig(), batch, params=params, opt_cls=ts.MasterWeights, lr=1e-4)
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(new))
    assert all(x.dtype == jnp.float32 for x in jax.tree.leaves(state.master))
    # tiny fp32 steps accumulate in the master copy even where bf16 cannot show them
    assert any(
        float(jnp.abs(m - p.astype(jnp.float32)).max()) > 0
        for m, p in zip(jax.tree.leaves(state.master), jax.tree.leaves(new))
    )
    for m, p in zip(jax.tree.leaves(state.master), jax.tree.leaves(new)):
        np.testing.assert_array_equal(m.astype(jnp.bfloat16), p)


def test_schedule_steps_once_per_rl_step():
    f = ts.make_schedule(1.0, "cosine", total_steps=100, warmup_ratio=0.03, updates_per_step=8)
    assert float(f(0)) == 0.0 and float(f(7)) == 0.0 and float(f(8)) > 0
    assert abs(float(f(8 * 3)) - 1.0) < 1e-6  # warmup of ceil(3) steps reached
    assert float(f(8 * 100)) == pytest.approx(0.0, abs=1e-7)
    c = ts.make_schedule(1e-6, "constant", total_steps=10)
    assert float(c(0)) == float(c(79)) == pytest.approx(1e-6)


@pytest.mark.slow
def test_sharded_train_step_equals_single_device():
    batch = rollout(5)
    loss = ts.LossConfig(kl_as_loss=True, num_minibatches=2, micro_batch_size=4)
    p1, _, m1 = run(loss, batch, sgd=True, lr=1.0)
    mesh = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    params = tfm.init_params(CFG, jax.random.key(0))
    shardings = sharding.tree_shardings(params, tfm.param_logical_axes(CFG), mesh)
    params = jax.device_put(params, shardings)
    with jax.set_mesh(mesh):
        p8, _, m8 = run(loss, sharding.shard_batch(batch, mesh), params=params, sgd=True, lr=1.0)
    np.testing.assert_allclose(m1["loss"], m8["loss"], rtol=1e-5, atol=1e-7)
    for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p8)):
        np.testing.assert_allclose(a, np.asarray(b), atol=2e-6)


def _head_inputs(cfg, seed):
    """Params, hidden states ``[3, 7, D]``, targets, two cotangents and a temperature."""
    params = tfm.init_params(cfg, jax.random.key(1))
    rng = np.random.RandomState(seed)
    h = jnp.asarray(rng.randn(3, 7, cfg.hidden_size).astype(np.float32))
    y = jnp.asarray(rng.randint(0, cfg.vocab_size, (3, 7)))
    g = jnp.asarray(rng.randn(2, 3, 7).astype(np.float32))
    return params, h, y, g, jnp.float32(0.7)


@pytest.mark.parametrize("tie", [True, False])
def test_fused_head_matches_autodiff_of_token_logprobs(tie):
    """Values and gradients (hidden and head weights) of the hand-written VJP."""
    cfg = CFG if tie else dataclasses.replace(CFG, tie_word_embeddings=False)
    params, h, y, g, tau = _head_inputs(cfg, 5)

    def ref(p, h):
        lp, ent = oracles.token_logprobs(p, cfg, h, y, tau, chunk=4, with_entropy=True)
        return jnp.sum(g[0] * lp + g[1] * ent), (lp, ent)

    def fused(p, h):
        lp, ent = lm_head.fused_token_logprobs(p, cfg, h, y, tau, chunk=5)  # 21 tokens: padded
        return jnp.sum(g[0] * lp + g[1] * ent), (lp, ent)

    (v1, o1), g1 = jax.value_and_grad(ref, argnums=(0, 1), has_aux=True)(params, h)
    (v2, o2), g2 = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(params, h)
    for a, b in zip(o1 + (v1,), o2 + (v2,)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_fused_head_bf16_operands():
    """head_dtype=bfloat16: the log-probs are exactly those of bf16-rounded hidden states
    and head weights (fp32 accumulation); gradients match autodiff of that to bf16
    precision and the weight gradient stays fp32."""
    params, h, y, g, tau = _head_inputs(CFG, 6)

    def bf(x):  # rounded to bf16, held in fp32
        return x.astype(jnp.bfloat16).astype(jnp.float32)

    def ref(p, h):
        p = {**p, "embed": bf(p["embed"])}
        lp, ent = oracles.token_logprobs(p, CFG, bf(h), y, tau, chunk=4, with_entropy=True)
        return jnp.sum(g[0] * lp + g[1] * ent), (lp, ent)

    def fused(p, h, dtype):
        lp, ent = lm_head.fused_token_logprobs(p, CFG, h, y, tau, chunk=5, head_dtype=dtype)
        return jnp.sum(g[0] * lp + g[1] * ent), (lp, ent)

    (v1, o1), g1 = jax.value_and_grad(ref, argnums=(0, 1), has_aux=True)(params, h)
    (v2, o2), g2 = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(params, h, "bfloat16")
    (_, o3), _ = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(params, h, "")
    for a, b in zip(o1 + (v1,), o2 + (v2,)):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    assert float(jnp.max(jnp.abs(o2[0] - o3[0]))) > 1e-5  # the bf16 head really is used
    assert g2[0]["embed"].dtype == jnp.float32
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        np.testing.assert_allclose(a, b, rtol=3e-2, atol=3e-3 * float(jnp.max(jnp.abs(a))))


def _grouped_batch(b, g, p, t, vocab, seed=0):
    """``[b g, p + t]`` rows: each prompt (left-padded) repeated g times, then g responses
    of random lengths (the trainer's layout of a prompt's N samples)."""
    rng = np.random.RandomState(seed)
    prompt = rng.randint(0, vocab, (b, p))
    pmask = (np.arange(p)[None] >= rng.randint(0, p - 1, (b, 1))).astype(np.int32)
    resp = rng.randint(0, vocab, (b, g, t))
    rmask = (np.arange(t) < rng.randint(1, t + 1, (b, g, 1))).astype(np.int32)
    tokens = np.concatenate([np.repeat(prompt[:, None], g, 1), resp], -1).reshape(b * g, -1)
    mask = np.concatenate([np.repeat(pmask[:, None], g, 1), rmask], -1).reshape(b * g, -1)
    return jnp.asarray(tokens), jnp.asarray(mask), rmask.reshape(b * g, t) > 0


@pytest.mark.slow
@pytest.mark.parametrize("layers,remat", [(2, False), (5, True)])
def test_shared_prompt_forward_matches_per_row_forward(layers, remat):
    """prompt_group > 1 runs each prompt's blocks once for its group of responses; the
    log-probs, entropies and parameter gradients equal the per-row forward's."""
    cfg = dataclasses.replace(CFG, num_layers=layers)  # 5 > UNROLL_MAX_LAYERS: scanned
    params = tfm.init_params(cfg, jax.random.key(3), std=0.2)
    tokens, mask, live = _grouped_batch(3, 4, 6, 7, cfg.vocab_size)
    w = jnp.asarray(np.random.RandomState(1).randn(12, 7).astype(np.float32)) * live

    def f(p, group):
        lp, ent = ts.sequence_logprobs(
            p, cfg, tokens, mask, 7, 0.7, with_entropy=True, remat=remat, prompt_group=group
        )
        return jnp.sum((lp + ent) * w), (lp, ent)

    grad_f = jax.jit(jax.value_and_grad(f, has_aux=True), static_argnums=1)
    (_, (lp1, e1)), g1 = grad_f(params, 1)
    for group in (2, 4):
        (_, (lp2, e2)), g2 = grad_f(params, group)
        np.testing.assert_allclose(lp1[live], lp2[live], atol=2e-5)
        np.testing.assert_allclose(e1[live], e2[live], atol=2e-5)
        for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(a))))
    with pytest.raises(ValueError, match="prompt groups of 5"):
        grad_f(params, 5)


@pytest.mark.slow
def test_train_step_and_logprob_fn_with_prompt_groups():
    """The update and the log-prob function give the same results with the prompt shared
    per group, also when micro-batches cut a group (the group shrinks to the gcd)."""
    params = tfm.init_params(CFG, jax.random.key(2), std=0.2)
    tokens, mask, live = _grouped_batch(4, 4, 5, 6, CFG.vocab_size, seed=3)
    rng = np.random.RandomState(4)
    resp = jnp.asarray(live, jnp.float32)
    batch = {
        "tokens": tokens,
        "attn_mask": mask,
        "resp_mask": resp,
        "old_logprobs": jnp.asarray(-3.0 + 0.1 * rng.randn(16, 6), jnp.float32),
        "advantages": jnp.asarray(rng.randn(16, 6), jnp.float32) * resp,
    }
    hyper = {"temperature": jnp.float32(1.0), "kl_coef": 0.0, "entropy_coef": 0.0}
    opt = ts.Plain(optax.sgd(0.1))  # params move by the gradient itself (Adam: ~its sign)
    out = {}
    for group, micro in [(1, 0), (4, 0), (4, 2), (4, 8)]:
        loss = ts.LossConfig(num_minibatches=2, micro_batch_size=micro, prompt_group=group)
        p, _, m = ts.train_step(params, opt.init(params), batch, hyper, cfg=CFG, loss=loss, opt=opt)
        lp = ts.make_logprob_fn(CFG, 6, micro_batch=micro, prompt_group=group)(
            params, tokens, mask, jnp.float32(1.0)
        )
        out[(group, micro)] = (p, m["loss"], lp)
    p1, l1, lp1 = out[(1, 0)]
    for key, (p2, l2, lp2) in out.items():
        np.testing.assert_allclose(l1, l2, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(lp1[live], lp2[live], atol=2e-5)
        for a, b in zip(jax.tree.leaves(p1), jax.tree.leaves(p2)):
            np.testing.assert_allclose(a, b, atol=2e-5)


def _token_loss_parts():
    """Per-token loss inputs ``[3, 7]`` for `rl.token_losses` with PPO clipping, dual clip,
    k3 KL and an entropy bonus all active, and seq-mean-token-mean weights."""
    rng = np.random.RandomState(8)
    mask = jnp.asarray(np.arange(7)[None] < np.array([[7], [4], [1]]), jnp.float32)
    tok = {
        "old_logprobs": jnp.asarray(-4.0 + rng.randn(3, 7), jnp.float32),
        "advantages": jnp.asarray(rng.randn(3, 7), jnp.float32),
        "ref_logprobs": jnp.asarray(-4.0 + rng.randn(3, 7), jnp.float32),
        "mask": mask,
        "weight": rl.aggregate_weights(mask, "seq-mean-token-mean"),
    }
    return tok, {"kl_coef": jnp.float32(0.3), "entropy_coef": jnp.float32(0.02)}


@pytest.mark.parametrize("tie,dtype", [(True, ""), (False, ""), (True, "bfloat16")])
def test_fused_head_loss_matches_autodiff_of_the_token_loss(tie, dtype):
    """`fused_head_loss` (gradient taken in the forward pass) equals autodiff of the same
    weighted per-token loss on `fused_token_logprobs`: value, log-probs, entropies and
    the gradients of the hidden states and head weights; its lp/ent outputs carry none."""
    cfg = CFG if tie else dataclasses.replace(CFG, tie_word_embeddings=False)
    params, h, y, _, tau = _head_inputs(cfg, 9)
    tok, coefs = _token_loss_parts()
    loss_cfg = ts.LossConfig(kl_as_loss=True, use_entropy=True)
    token_loss = functools.partial(ts._weighted_token_loss, loss=loss_cfg)

    def autodiff(p, h):
        lp, ent = lm_head.fused_token_logprobs(p, cfg, h, y, tau, chunk=5, head_dtype=dtype)
        return jnp.sum(token_loss(lp, ent, (tok, coefs))), (lp, ent)

    def fused(p, h):
        v, lp, ent = lm_head.fused_head_loss(p, cfg, h, y, tau, 5, dtype, token_loss, tok, coefs)
        return v + 0.0 * jnp.sum(lp + ent), (lp, ent)  # lp, ent: no gradient flows back

    (v1, o1), g1 = jax.value_and_grad(autodiff, argnums=(0, 1), has_aux=True)(params, h)
    (v2, o2), g2 = jax.value_and_grad(fused, argnums=(0, 1), has_aux=True)(params, h)
    stats = rl.token_losses(
        o1[0], tok["old_logprobs"], tok["advantages"], tok["mask"], tok["ref_logprobs"]
    )[1]
    assert 0 < float(stats["clipfrac"][0]) < float(stats["clipfrac"][1])  # clip binds somewhere
    np.testing.assert_allclose(v1, v2, rtol=1e-5, atol=1e-6)
    for a, b in zip(o1, o2):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for a, b in zip(jax.tree.leaves(g1), jax.tree.leaves(g2)):
        assert a.dtype == b.dtype
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6 * float(jnp.max(jnp.abs(a))))
    assert float(jnp.max(jnp.abs(g2[1]))) > 1e-3  # a real gradient was compared


@pytest.mark.slow
@pytest.mark.parametrize("agg", rl.AGG_MODES)
def test_train_step_grad_in_forward_equals_the_autodiff_path(agg):
    """The default update (head gradient in the forward pass) moves the params exactly as
    the log-prob VJP path does, with KL, entropy bonus, mini- and micro-batches and shared
    prompts; every metric agrees."""
    params = tfm.init_params(CFG, jax.random.key(2), std=0.2)
    tokens, mask, live = _grouped_batch(4, 4, 5, 6, CFG.vocab_size, seed=5)
    rng = np.random.RandomState(6)
    resp = jnp.asarray(live, jnp.float32)
    batch = {
        "tokens": tokens,
        "attn_mask": mask,
        "resp_mask": resp,
        "old_logprobs": jnp.asarray(-4.2 + 0.5 * rng.randn(16, 6), jnp.float32) * resp,
        "ref_logprobs": jnp.asarray(-4.2 + 0.5 * rng.randn(16, 6), jnp.float32) * resp,
        "advantages": jnp.asarray(rng.randn(16, 1), jnp.float32) * resp,
    }
    opt = ts.Plain(optax.sgd(1.0))
    out = []
    loss = ts.LossConfig(
        kl_as_loss=True,
        use_entropy=True,
        agg_mode=agg,
        num_minibatches=2,
        micro_batch_size=4,
        prompt_group=4,
    )
    for objective in (oracles.autodiff_objective, ts.fused_objective):
        p0 = jax.tree.map(jnp.copy, params)  # donated
        step = ts.make_train_step(CFG, loss, opt, objective=objective)
        out.append(step(p0, opt.init(p0), batch, HYPER))
    (p1, _, m1), (p2, _, m2) = out
    assert 0 < float(m1["clipfrac"]) < 1 and float(m1["entropy"]) > 0
    assert m1.keys() == m2.keys()
    for k in m1:
        np.testing.assert_allclose(m1[k], m2[k], rtol=1e-5, atol=1e-6, err_msg=k)
    for a, b, p0 in zip(*map(jax.tree.leaves, (p1, p2, params))):
        step = float(jnp.max(jnp.abs(a - p0)))  # SGD, lr 1: the step is the gradient
        assert step > 1e-4
        np.testing.assert_allclose(a - p0, b - p0, rtol=1e-3, atol=1e-4 * step)
