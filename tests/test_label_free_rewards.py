"""Label-free rewards beyond voting: self-certainty and token entropy from the fused
LM-head pass, semantic entropy of the vote clusters, their weighted sum with a vote
reward; each against a numpy reference on hand-made logits and clusters, then through
the trainer."""

import collections
import functools
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttrl_jax.config import ConfigValueError, validate
from ttrl_jax.rewards import consensus, modes
from ttrl_jax.update import lm_head

NO_TIE = types.SimpleNamespace(tie_word_embeddings=False)


def _np_stats(h, w, y, tau):
    """Per token: log p_y, H(p) and KL(U || p) in float64, p = softmax(h W / tau)."""
    z = np.einsum("std,dv->stv", h.astype(np.float64), w.astype(np.float64)) / tau
    z = z - z.max(-1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(-1, keepdims=True))  # [S, T, V]
    p = np.exp(logp)
    v = z.shape[-1]
    lp = np.take_along_axis(logp, y[..., None], -1)[..., 0]
    ent = -(p * logp).sum(-1)
    cert = (-(np.log(v) + logp)).mean(-1)  # (1/V) sum_v log((1/V) / p_v)
    return lp, ent, cert


@pytest.mark.parametrize("tau", [1.0, 0.6])
def test_fused_token_stats_match_numpy(tau):
    rng = np.random.default_rng(3)
    s, t, d, v = 3, 7, 6, 11  # 21 tokens in chunks of 5: a zero-padded last chunk
    h = rng.normal(size=(s, t, d)).astype(np.float32)
    w = (2.0 * rng.normal(size=(d, v))).astype(np.float32)
    y = rng.integers(0, v, size=(s, t))
    params = {"lm_head": jnp.asarray(w)}
    lp, ent, cert = lm_head.fused_token_stats(
        params, NO_TIE, jnp.asarray(h), jnp.asarray(y), tau, 5
    )
    ref = _np_stats(h, w, y, tau)
    for got, want in zip((lp, ent, cert), ref):
        assert got.shape == (s, t)
        np.testing.assert_allclose(np.asarray(got), want, rtol=1e-5, atol=1e-5)
    assert (np.asarray(cert) > 0).all()  # KL >= 0, and > 0 off the uniform
    # the same lp and ent as the differentiable head
    lp2, ent2 = lm_head.fused_token_logprobs(params, NO_TIE, jnp.asarray(h), jnp.asarray(y), tau, 5)
    np.testing.assert_allclose(np.asarray(lp), np.asarray(lp2), atol=1e-6)
    np.testing.assert_allclose(np.asarray(ent), np.asarray(ent2), atol=1e-6)


def test_uniform_head_has_zero_certainty_and_maximal_entropy():
    params = {"lm_head": jnp.zeros((4, 9))}
    h, y = jnp.ones((2, 3, 4)), jnp.zeros((2, 3), jnp.int32)
    lp, ent, cert = lm_head.fused_token_stats(params, NO_TIE, h, y, 1.0, 4)
    np.testing.assert_allclose(np.asarray(cert), 0.0, atol=1e-6)
    np.testing.assert_allclose(np.asarray(ent), np.log(9), rtol=1e-6)
    np.testing.assert_allclose(np.asarray(lp), -np.log(9), rtol=1e-6)


# hand-made clusters: -1 = no answer (a singleton class of its own)
IDS = np.array(
    [
        [0, 0, 0, 0, 0, 0],  # all agree: SE = 0
        [0, 1, 2, 3, 4, 5],  # all differ: SE = log 6
        [0, 0, 1, -1, 1, 0],  # 3 / 2 / 1 (no answer)
        [-1, -1, -1, -1, -1, -1],  # nobody answered: six singletons, SE = log 6
        [7, 3, 3, 7, 7, 2],
    ],
    np.int32,
)


def _np_semantic_entropy(ids):
    out = []
    for row in ids:
        sizes = list(collections.Counter(int(i) for i in row if i >= 0).values())
        sizes += [1] * int((row < 0).sum())
        p = np.array(sizes, np.float64) / len(row)
        out.append(float(-(p * np.log(p)).sum()))
    return np.array(out)


def _votes(rng):
    b, m = IDS.shape
    return modes.Votes(
        ids=jnp.asarray(IDS),
        self_certainty=jnp.asarray(rng.uniform(0, 3, (b, m)), jnp.float32),
        token_entropy=jnp.asarray(rng.uniform(0, 2, (b, m)), jnp.float32),
    )


def test_semantic_entropy_of_the_clusters_matches_numpy():
    want = _np_semantic_entropy(IDS)
    np.testing.assert_allclose(want[[0, 1, 3]], [0.0, np.log(6), np.log(6)], atol=1e-12)
    got = np.asarray(modes.semantic_entropy_of(jnp.asarray(IDS)))
    np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("n", [None, 4])
def test_each_score_mode_matches_numpy(n):
    votes = _votes(np.random.default_rng(0))
    key = jax.random.key(1)
    cert, ent = np.asarray(votes.self_certainty), np.asarray(votes.token_entropy)
    se = _np_semantic_entropy(IDS)
    majority = np.asarray(modes.majority(votes.ids)[0])
    for name, full in [
        ("self_certainty", cert),
        ("neg_entropy", -ent),
        ("semantic_entropy", np.broadcast_to(-se[:, None], IDS.shape)),
    ]:
        out = modes.REWARD_MODES[name](votes, key, n=n)
        idx = np.asarray(out.indices)
        assert idx.shape == (IDS.shape[0], n or IDS.shape[1])
        want = np.take_along_axis(full, idx, 1)
        np.testing.assert_allclose(np.asarray(out.rewards), want, rtol=1e-6, atol=1e-6)
        assert np.asarray(out.label_mask).all() and np.asarray(out.keep).all()
        np.testing.assert_array_equal(np.asarray(out.label_ids), majority)  # monitoring


def test_weighted_sum_with_the_vote_reward_matches_numpy():
    votes = _votes(np.random.default_rng(1))
    key = jax.random.key(2)
    base = modes.ttrl(votes, key, n=4)
    weights = {"self_certainty": 0.3, "neg_entropy": 0.0, "semantic_entropy": -2.0}
    out = modes.add_terms(votes, base, 0.5, weights)
    idx = np.asarray(base.indices)
    se = _np_semantic_entropy(IDS)
    want = 0.5 * np.asarray(base.rewards)
    want += 0.3 * np.take_along_axis(np.asarray(votes.self_certainty), idx, 1)
    want += -2.0 * -se[:, None]
    np.testing.assert_allclose(np.asarray(out.rewards), want, rtol=1e-6, atol=1e-6)
    np.testing.assert_array_equal(np.asarray(out.indices), idx)  # the mode's samples
    # zero weights add nothing, to the bit
    same = modes.add_terms(votes, base, 1.0, dict.fromkeys(weights, 0.0))
    assert np.array_equal(np.asarray(same.rewards), np.asarray(base.rewards))


def test_score_refuses_unknown_terms_and_missing_token_scores():
    texts = [["\\boxed{1}", "\\boxed{2}"]]
    key = jax.random.key(0)
    with pytest.raises(ValueError, match="unknown reward terms"):
        consensus.score(texts, key, mode="ttrl", weights={"confidence": 1.0})
    with pytest.raises(ValueError, match="need token_scores"):
        consensus.score(texts, key, mode="self_certainty")
    with pytest.raises(ValueError, match="need token_scores"):
        consensus.score(texts, key, mode="ttrl", weights={"neg_entropy": 0.1})
    rw, m, _ = consensus.score(
        texts,
        key,
        mode="ttrl",
        clustering="exact",
        weights={"semantic_entropy": 1.0},
    )
    # two answers, one vote each: ttrl reward 1 for the first (the tie's winner), SE log 2
    np.testing.assert_allclose(rw.rewards[0], [1 - np.log(2), -np.log(2)], rtol=1e-6)
    assert m["semantic_entropy"] == pytest.approx(np.log(2))


def _make_config(tmp_path, **reward):
    from experiments.configs import tiny_cpu

    c = tiny_cpu.get_config()
    c.model.path, c.data.dataset = str(tmp_path), "aime24"  # checked, not read
    for k, v in reward.items():
        section, key = k.split("__")
        c[section][key] = v
    return c


def test_config_refuses_rewards_that_cannot_learn(tmp_path):
    _config = functools.partial(_make_config, tmp_path)
    validate(_config(reward__mode="self_certainty"))
    validate(_config(reward__semantic_entropy_weight=0.2))  # added to the vote reward
    with pytest.raises(ConfigValueError, match="algo.advantage"):
        validate(_config(reward__mode="semantic_entropy"))
    validate(_config(reward__mode="semantic_entropy", algo__advantage="reinforce_plus_plus"))
    with pytest.raises(ConfigValueError, match="reward.mode_weight"):
        validate(_config(reward__mode_weight=0.0))
    with pytest.raises(ConfigValueError, match="reward.neg_entropy_weight"):
        validate(_config(reward__neg_entropy_weight=float("nan")))


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    import json

    import tiny_models

    base = tmp_path_factory.mktemp("label_free")
    model = str(base / "model")
    _, vocab = tiny_models.make_tokenizer(model)
    tiny_models.make_qwen2(model, vocab_size=vocab, hidden_size=32, layers=2, eos_token_id=3)
    rows = [{"problem": f"What is {a} + {b} ?", "answer": str(a + b)} for a, b in [(1, 2), (3, 4)]]
    data = base / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return model, str(data)


def _trainer(tiny_run, out, **overrides):
    from ttrl_jax import trainer as trainer_lib

    c = _make_config(out)
    c.model.path, c.data.dataset, c.output_dir = tiny_run[0], tiny_run[1], str(out / "run")
    c.train.eval_every = 0
    for k, v in overrides.items():
        section, key = k.split("__")
        c[section][key] = v
    return trainer_lib.Trainer(c)


def test_trainer_scores_samples_by_their_own_certainty(tiny_run, tmp_path):
    from ttrl_jax import trainer as trainer_lib

    tr = _trainer(tiny_run, tmp_path, reward__self_certainty_weight=0.5)
    try:
        idx = np.arange(2)
        prompts, out = tr._rollout_stage(idx, jax.random.key(5))
        stats = tr._token_scores(prompts, out)
        b, m, t = out.tokens.shape
        # its log-probs (the step's old log-probs) are the trainer's own recomputation
        seq, attn, live = trainer_lib._sequences(*prompts, out.tokens, out.lengths)
        lp = np.asarray(tr._logprobs(tr.params, seq, attn, tr._hyper()["temperature"]))
        np.testing.assert_allclose(
            stats["logprobs"].reshape(b * m, t)[live.reshape(b * m, t)],
            lp[live.reshape(b * m, t)],
            atol=1e-5,
        )
        assert stats["self_certainty"].shape == (b, m) and (stats["self_certainty"] > 0).all()
        metrics = tr.train_one_step()
    finally:
        tr.close()
    for key in ("self_certainty", "token_entropy", "semantic_entropy", "reward_mean"):
        assert np.isfinite(metrics[key]), key
    assert metrics["self_certainty"] > 0 and metrics["token_entropy"] > 0
    # r = vote + 0.5 cert on the N trained samples (a random model's certainty is
    # nearly the same for every sample, so the trained subset's mean is all M's)
    want = metrics["post_majority_voting_reward"] + 0.5 * metrics["self_certainty"]
    assert metrics["reward_mean"] == pytest.approx(want, abs=0.05 * metrics["self_certainty"])


@pytest.mark.parametrize(
    "overrides",
    [
        {"reward__mode": "neg_entropy"},
        {"reward__mode": "semantic_entropy", "algo__advantage": "reinforce_pp"},
    ],
)
def test_trainer_steps_on_each_label_free_mode(tiny_run, tmp_path, overrides):
    tr = _trainer(tiny_run, tmp_path, **overrides)
    try:
        before = jax.tree.map(np.asarray, tr.params)
        metrics = tr.train_one_step()
        moved = max(
            float(np.abs(np.asarray(a) - b).max())
            for a, b in zip(jax.tree.leaves(tr.params), jax.tree.leaves(before))
        )
    finally:
        tr.close()
    assert np.isfinite(metrics["actor/loss"]) and moved > 0
    if overrides["reward__mode"] == "neg_entropy":
        assert metrics["reward_mean"] == pytest.approx(-metrics["token_entropy"], rel=1e-4)
    else:
        assert metrics["reward_mean"] == pytest.approx(-metrics["semantic_entropy"], rel=1e-4)


def _run(base, final, met, held=(0.4, 0.8), label=(0.7, 0.9)):
    return {
        "base": {"pass@1": base},
        "ttrl_last": {"pass@1": final, "greedy": final},
        "heldout": {"base": {"pass@1": held[0]}, "ttrl_last": {"pass@1": held[1]}},
        "verdict": {"met": met, "label_acc_first": label[0], "label_acc_last": label[1]},
    }


def test_reward_table_reports_collapse_as_collapse():
    from experiments import demo_rewards

    good = demo_rewards.reward_row("ttrl", [_run(0.4, 0.85, True), _run(0.45, 0.8, True)])
    assert good["verdict"] == "improves (criterion met in every run)"
    assert good["final"] == pytest.approx(0.825) and good["held_final"] == pytest.approx(0.8)
    bad = demo_rewards.reward_row("x", [_run(0.4, 0.9, True), _run(0.45, 0.2, False)])
    assert bad["verdict"] == "collapses (1 of 2 runs below base)" and bad["collapsed"] == 1
    unmeasured = dict(_run(0.45, 0.44, False), heldout=None)  # no step-0 held-out eval
    flat = demo_rewards.reward_row("y", [_run(0.4, 0.42, False), unmeasured])
    assert flat["verdict"] == "no gain" and flat["held_final"] == pytest.approx(0.8)
    table = demo_rewards.rewards_table([good, bad, flat])
    assert table.count("\n") == 4 and "| x | 0.425 -> 0.550 |" in table
