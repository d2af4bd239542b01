"""Voting (answers -> class ids) and the pure-JAX reward modes and label metrics."""

import functools
import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from ttrl_jax.rewards import answers, grading, modes, voting


@pytest.fixture(scope="module")
def pool():
    with grading.GradingPool(num_workers=2, timeout=10.0) as p:
        yield p.wait_ready()


def _canon(rows):
    return [[answers.normalize_math(a) if a is not None else None for a in row] for row in rows]


# --- clustering ----------------------------------------------------------------------

EXAMPLE = ["\\frac12", "0.5", "1/2", "3", "3"]


def test_voting_example_semantic(pool):
    clusters = voting.cluster_answers(_canon([EXAMPLE]), pool=pool)
    assert clusters.ids.tolist() == [[0, 0, 0, 1, 1]]
    assert clusters.label(0) == "\\frac{1}{2}"
    assert clusters.votes == [[3, 2]]
    out = modes.ttrl(modes.Votes(jnp.asarray(clusters.ids)))
    assert out.rewards.tolist() == [[1, 1, 1, 0, 0]]


def test_voting_example_exact(pool):
    """Exact mode votes on canonical strings: ``\\frac12`` and ``1/2`` both read
    ``\\frac{1}{2}``, ``0.5`` stays apart. ``\\frac{1}{2}`` (2 votes) ties with ``3``
    (2 votes) and wins the tie because its earliest sample (0) comes before 3's (3).
    """
    clusters = voting.cluster_answers(_canon([EXAMPLE]), mode="exact", pool=pool)
    assert clusters.ids.tolist() == [[0, 2, 0, 1, 1]]
    assert clusters.representatives == [["\\frac{1}{2}", "3", "0.5"]]
    out = modes.ttrl(modes.Votes(jnp.asarray(clusters.ids)))
    assert out.rewards.tolist() == [[1, 0, 1, 0, 0]]
    # On raw, unnormalised strings (the TTRL reference's Counter) "3" would win 2-1-1-1.
    raw = voting.cluster_answers([EXAMPLE], mode="exact", pool=pool)
    assert raw.ids.tolist() == [[1, 2, 3, 0, 0]] and raw.label(0) == "3"


def test_semantic_mode_merges_what_exact_mode_splits(pool):
    rows = _canon(
        [
            ["3", "3.0", "x=3", "\\sqrt{9}", "4", "4", "4", None],
            ["(1,2)", "\\left(1, 2\\right)", "(2,1)", "(2,1)", "(2,1)", None, None, None],
            [None] * 8,
            ["a", "b", "c", "d", "e", "f", "g", "h"],
        ]
    )
    sem = voting.cluster_answers(rows, pool=pool)
    exact = voting.cluster_answers(rows, mode="exact", pool=pool)
    assert sem.ids.tolist() == [
        [0, 0, 0, 0, 1, 1, 1, -1],  # 3 == 3.0 == x=3 == sqrt(9): 4 votes beat three 4s
        [1, 1, 0, 0, 0, -1, -1, -1],  # ordered pairs: (1,2) != (2,1)
        [-1] * 8,
        [0, 1, 2, 3, 4, 5, 6, 7],  # all tied: ids follow first appearance
    ]
    assert sem.label(2) is None and sem.representatives[2] == []
    # "3", "3.0" and "x=3" normalise to "3": exact mode keeps only sqrt(9) apart.
    assert exact.ids[0].tolist() == [0, 0, 0, 2, 1, 1, 1, -1]


def test_max_leaders_bounds_the_comparisons(pool):
    rows = [["z", "z", "y+1", "1+y"]]
    assert voting.cluster_answers(rows, pool=pool).ids.tolist() == [[0, 0, 1, 1]]
    # "1+y" may only be compared with the first class's leader ("z"): it stays apart.
    capped = voting.cluster_answers(rows, pool=pool, max_leaders=1)
    assert capped.ids.tolist() == [[0, 0, 1, 2]]


def test_clustering_is_deterministic_and_permutation_consistent(pool):
    rng = np.random.default_rng(0)
    pool_of_answers = ["\\frac{1}{2}", "0.5", "2", "\\sqrt{4}", "7", "x+1", "1+x", None]
    rows = [[pool_of_answers[k] for k in rng.integers(0, 8, size=16)] for _ in range(6)]
    a = voting.cluster_answers(rows, pool=pool)
    b = voting.cluster_answers(rows, pool=pool)
    assert np.array_equal(a.ids, b.ids)
    for row, ids in zip(rows, a.ids):
        sets = {}
        for ans, i in zip(row, ids):
            if ans is None:
                assert i == -1
            else:
                key = {"0.5": "\\frac{1}{2}", "\\sqrt{4}": "2", "1+x": "x+1"}.get(ans, ans)
                sets.setdefault(key, set()).add(int(i))
        assert all(len(s) == 1 for s in sets.values())  # equivalent -> same id
        assert len({next(iter(s)) for s in sets.values()}) == len(sets)  # else different
        counts = np.bincount(ids[ids >= 0])
        assert list(counts) == sorted(counts, reverse=True)  # id 0 = majority


def test_non_math_tasks_cluster_exactly(pool):
    letters = [["A", "B", "B", None], ["C", "C", "D", "D"]]
    c = voting.cluster_answers(letters, task="multiple_choice", pool=pool)
    assert c.ids.tolist() == [[1, 0, 0, -1], [0, 0, 1, 1]]
    fold = answers.Task("casefold", str.strip, str.strip, lambda g, p: g.lower() == p.lower())
    c = voting.cluster_answers([["Yes", "yes", "no", "YES"]], task=fold)
    assert c.ids.tolist() == [[0, 0, 1, 0]]
    with pytest.raises(ValueError, match="same number of answers"):
        voting.cluster_answers([["1"], ["1", "2"]], pool=pool)
    with pytest.raises(ValueError, match="mode must be"):
        voting.cluster_answers([["1"]], mode="fuzzy", pool=pool)


def test_build_votes_matches_labels(pool):
    rows = _canon([EXAMPLE, ["2", "3", "2", None, "2"], ["1", "1", "1", "1", "1"]])
    votes, _ = voting.build_votes(
        rows, golds=["0.5", "\\sqrt{9}", None], offline_labels=[None, "2", "1"], pool=pool
    )
    assert votes.correct.tolist() == [
        [True, True, True, False, False],
        [False, True, False, False, False],
        [False] * 5,
    ]
    assert votes.has_gold.tolist() == [True, True, False]
    assert votes.offline_match.tolist()[1:] == [[True, False, True, False, True], [True] * 5]
    assert votes.has_offline.tolist() == [False, True, True]
    # Exact clustering still grades semantically against the gold.
    votes, _ = voting.build_votes(rows, golds=["0.5", "3", None], mode="exact", pool=pool)
    assert votes.correct[0].tolist() == [True, True, True, False, False]


# --- reward modes against a plain numpy reference ------------------------------------


def np_majority(row):
    """Class with most votes; ties -> the class of the earliest sample; -1 if none."""
    counts = {}
    for x in row:
        if x >= 0:
            counts[x] = counts.get(x, 0) + 1
    if not counts:
        return -1, 0
    best = max(counts.values())
    for x in row:
        if x >= 0 and counts[x] == best:
            return int(x), best


def np_rewards(mode, ids, correct, has_gold, off, has_off, tau=0.0, soft=False):
    b, m = ids.shape
    r = np.zeros((b, m), np.float32)
    labelled = np.zeros(b, bool)
    for i in range(b):
        label, count = np_majority(ids[i])
        if mode == "ttrl" or (mode == "hybrid" and not has_gold[i]):
            r[i] = (ids[i] == label) & (label >= 0)
            labelled[i] = label >= 0
        elif mode == "srt":
            labelled[i] = label >= 0 and count / m >= tau
            if labelled[i]:
                if soft:
                    r[i] = [(ids[i] == x).sum() / m if x >= 0 else 0.0 for x in ids[i]]
                else:
                    r[i] = ids[i] == label
        elif mode in ("ground_truth", "hybrid"):
            r[i] = correct[i] & has_gold[i]
            labelled[i] = has_gold[i]
        elif mode == "offline":
            r[i] = off[i] & has_off[i]
            labelled[i] = has_off[i]
    return r, labelled


def random_votes(seed, b=16, m=12, k=4):
    rng = np.random.default_rng(seed)
    ids = rng.integers(-1, k, size=(b, m)).astype(np.int32)  # [B, M]
    ids[0] = -1  # a prompt where nobody answered
    ids[1] = np.array([0, 1] * (m // 2))  # an exact tie
    true_class = rng.integers(-1, k, size=b)  # the class that is correct, -1: none
    correct = (ids == true_class[:, None]) & (ids >= 0)
    has_gold = rng.random(b) < 0.8
    off_class = rng.integers(0, k, size=b)
    offline_match = (ids == off_class[:, None]) & (ids >= 0)
    has_off = rng.random(b) < 0.7
    return modes.Votes(
        *(
            jnp.asarray(x)
            for x in (
                ids,
                correct & has_gold[:, None],
                has_gold,
                offline_match & has_off[:, None],
                has_off,
            )
        )
    )


@pytest.mark.parametrize("mode", ["ttrl", "offline", "ground_truth", "hybrid"])
def test_modes_match_numpy_reference(mode):
    fn = jax.jit(functools.partial(modes.REWARD_MODES[mode], n=5))  # compiled once
    for seed in range(8):
        votes = random_votes(seed)
        ref, labelled = np_rewards(mode, *[np.asarray(x) for x in votes[:5]])
        out = fn(votes, jax.random.key(seed))
        b, m = votes.ids.shape
        idx = np.asarray(out.indices)
        assert idx.shape == (b, 5) and out.rewards.shape == (b, 5)
        assert all(len(set(row)) == 5 and list(row) == sorted(row) for row in idx)
        assert idx.min() >= 0 and idx.max() < m
        np.testing.assert_array_equal(np.asarray(out.rewards), np.take_along_axis(ref, idx, 1))
        np.testing.assert_array_equal(np.asarray(out.label_mask), labelled)
    full = modes.REWARD_MODES[mode](votes, None)  # n=None: all M samples, no key needed
    np.testing.assert_array_equal(np.asarray(full.rewards), ref)
    np.testing.assert_array_equal(np.asarray(full.indices), np.tile(np.arange(m), (b, 1)))


@pytest.mark.parametrize("tau, soft", [(0.0, False), (0.4, False), (0.0, True), (0.34, True)])
def test_srt_matches_numpy_reference(tau, soft):
    fn = jax.jit(functools.partial(modes.srt, tau=tau, soft=soft))
    for seed in range(8):
        votes = random_votes(seed)
        ref, labelled = np_rewards("srt", *[np.asarray(x) for x in votes[:5]], tau=tau, soft=soft)
        out = fn(votes, None)
        np.testing.assert_allclose(np.asarray(out.rewards), ref, rtol=1e-6)
        np.testing.assert_array_equal(np.asarray(out.label_mask), labelled)
        assert bool(out.keep.all())


def test_majority_label_and_tie_rule():
    ids = jnp.array(
        [[2, 1, 1, 2, -1], [-1, -1, -1, -1, -1], [5, 5, 0, 0, 0], [3, 7, 7, 3, 9]], jnp.int32
    )
    label, count = modes.majority(ids)
    assert label.tolist() == [2, -1, 0, 3] and count.tolist() == [2, 0, 3, 2]
    for row, lab in zip(np.asarray(ids), label.tolist()):
        assert np_majority(row)[0] == lab
    assert modes.vote_counts(ids)[0].tolist() == [2, 2, 2, 2, 0]


def test_srt_keep_fraction_selects_most_consistent_prompts():
    ids = jnp.array(
        [[0, 1, 2, 3], [0, 0, 0, 1], [0, 0, 1, 1], [0, 0, 0, 0], [0, 0, 1, 1], [-1] * 4],
        jnp.int32,
    )  # majority ratios 1/4, 3/4, 1/2, 1, 1/2, 0
    out = modes.srt(modes.Votes(ids), keep_fraction=0.5)  # ceil(0.5 * 6) = 3 prompts
    assert out.keep.tolist() == [False, True, True, True, False, False]  # tie: lower index
    assert modes.srt(modes.Votes(ids), keep_fraction=0.01).keep.tolist() == [
        False,
        False,
        False,
        True,
        False,
        False,
    ]
    out = modes.srt(modes.Votes(ids), tau=0.6)
    assert out.label_mask.tolist() == [False, True, False, True, False, False]
    assert out.rewards[0].tolist() == [0, 0, 0, 0] and out.rewards[1].tolist() == [1, 1, 1, 0]


def test_choose_subset_is_uniform():
    b, m, n = 4000, 8, 3
    idx = np.asarray(modes.choose_subset(jax.random.key(0), b, m, n))
    freq = np.bincount(idx.ravel(), minlength=m)
    expected = b * n / m
    sigma = math.sqrt(b * (n / m) * (1 - n / m))
    assert np.all(np.abs(freq - expected) < 5 * sigma), freq
    # every one of the C(8,3) = 56 subsets shows up about equally often
    subsets = np.unique(idx, axis=0, return_counts=True)[1]
    assert len(subsets) == 56 and subsets.min() > 0.5 * b / 56
    other = np.asarray(modes.choose_subset(jax.random.key(1), b, m, n))
    assert not np.array_equal(idx, other)
    with pytest.raises(ValueError, match="0 < n <= M"):
        modes.choose_subset(jax.random.key(0), 2, 4, 5)
    with pytest.raises(ValueError, match="needs a PRNG key"):
        modes.ttrl(modes.Votes(jnp.zeros((2, 4), jnp.int32)), None, n=2)
    with pytest.raises(ValueError, match="needs Votes fields"):
        modes.ground_truth(modes.Votes(jnp.zeros((2, 4), jnp.int32)))


# --- label metrics ---------------------------------------------------------------------


def np_metrics(ids, correct, has_gold, label, label_mask, rewards, idx):
    b, m = ids.shape
    n = idx.shape[1]
    g = has_gold.astype(float)
    ng = max(g.sum(), 1.0)
    in_label = (ids == label[:, None]) & (label[:, None] >= 0)
    pseudo = in_label & label_mask[:, None]
    label_correct = np.array([(in_label[i] & correct[i]).any() for i in range(b)])
    pick = lambda x: np.take_along_axis(x, idx, 1)
    best = np.array([np_majority(r)[1] for r in ids])
    return {
        "majority_ratio": (best / m).mean(),
        "majority_voting_reward": pseudo.mean(),
        "labelled_fraction": label_mask.mean(),
        "reward_mean": rewards.mean(),
        "post_majority_ratio": pick(in_label).mean(),
        "post_majority_voting_reward": pick(pseudo).mean(),
        "label_accuracy": (label_correct * g).sum() / ng,
        "reward_accuracy": ((pseudo == correct).mean(1) * g).sum() / ng,
        "ground_truth_ratio": (correct.mean(1) * g).sum() / ng,
        f"pass@{m}": (correct.any(1) * g).sum() / ng,
        "correctly_labelled_fraction": ((label_mask & label_correct) * g).sum() / ng,
        "post_reward_accuracy": ((pick(pseudo) == pick(correct)).mean(1) * g).sum() / ng,
        "post_ground_truth_ratio": (pick(correct).mean(1) * g).sum() / ng,
        f"post_pass@{n}": (pick(correct).any(1) * g).sum() / ng,
    }


@pytest.mark.parametrize("mode", ["ttrl", "srt", "hybrid"])
def test_label_metrics_match_numpy_reference(mode):
    params = {"srt": {"tau": 0.3}}.get(mode, {"n": 6})
    reward_fn = jax.jit(functools.partial(modes.REWARD_MODES[mode], **params))
    metrics_fn = jax.jit(modes.label_metrics)
    for seed in range(5):
        votes = random_votes(seed)
        out = reward_fn(votes, jax.random.key(seed))
        got = metrics_fn(votes, out)
        ids, correct, has_gold = (np.asarray(x) for x in votes[:3])
        want = np_metrics(
            ids,
            correct,
            has_gold,
            *(np.asarray(x) for x in (out.label_ids, out.label_mask, out.rewards, out.indices)),
        )
        assert set(got) == set(want)
        for key in want:
            assert float(got[key]) == pytest.approx(want[key], abs=1e-6), key


def test_label_metrics_on_the_voting_example(pool):
    votes, _ = voting.build_votes(
        _canon([EXAMPLE, ["4", "4", "5", "6", "7"]]), golds=["\\frac{1}{2}", "5"], pool=pool
    )
    out = modes.ttrl(jax.tree.map(jnp.asarray, votes))
    m = {k: float(v) for k, v in modes.label_metrics(votes, out).items()}
    assert m["label_accuracy"] == 0.5  # 1/2 right, 4 wrong
    assert m["reward_accuracy"] == pytest.approx(
        (1.0 + 2 / 5) / 2
    )  # 4,4 rewarded wrongly; 5 missed
    assert m["majority_ratio"] == pytest.approx((3 / 5 + 2 / 5) / 2)
    assert m["ground_truth_ratio"] == pytest.approx((3 / 5 + 1 / 5) / 2)
    assert m["pass@5"] == 1.0
    no_gold = modes.label_metrics(modes.Votes(votes.ids), out)
    assert "label_accuracy" not in no_gold and "majority_ratio" in no_gold
