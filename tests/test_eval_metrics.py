"""Evaluation metrics: unbiased pass@k, mean@n, maj@n with semantic vs exact voting."""

import math

import numpy as np
import pytest

from ttrl_jax.eval import metrics as em
from ttrl_jax.rewards import voting


@pytest.mark.parametrize(
    "n,c,k", [(16, 0, 1), (16, 3, 1), (16, 3, 4), (16, 15, 2), (16, 16, 8), (64, 7, 16), (5, 2, 5)]
)
def test_pass_at_k_equals_closed_form(n, c, k):
    closed = 1.0 - math.comb(n - c, k) / math.comb(n, k)
    assert em.pass_at_k(n, c, k) == pytest.approx(closed, abs=1e-12)


def test_pass_at_k_on_synthetic_correctness_arrays():
    rng = np.random.RandomState(0)
    correct = rng.rand(50, 16) < rng.rand(50, 1)
    for k in (1, 2, 8, 16):
        ref = np.mean([1 - math.comb(16 - c, k) / math.comb(16, k) for c in correct.sum(1)])
        assert em.pass_at_k_mean(correct, k) == pytest.approx(ref, abs=1e-12)
    assert em.pass_at_k_mean(correct, 1) == pytest.approx(em.mean_at_n(correct))
    assert em.pass_at_k_mean(correct, 16) == pytest.approx(correct.any(1).mean())
    with pytest.raises(ValueError):
        em.pass_at_k(4, 5, 1)


def test_maj_at_n_semantic_vs_exact_voting():
    # gold is 1/2: three equivalent spellings vs two votes for 3 (exact voting splits them)
    answers = [["3", "\\frac{1}{2}", "0.5", "3", "3", "\\frac{1}{2}", "0.5", "1/2"]]
    gold = ["\\frac{1}{2}"]
    out = {}
    for mode in ("semantic", "exact"):
        clusters = voting.cluster_answers(answers, mode=mode, task="math")
        correct, _ = voting.match_labels(clusters, gold, task="math")
        out[mode] = em.summarize(correct, clusters.ids, ks=(1, 4))
    assert out["semantic"]["maj@8"] == 1.0  # 5 votes for 1/2 beat 3 votes for 3
    # exact: "3" and "\frac{1}{2}" (with "1/2") tie at 3 votes; the earliest sample wins
    assert out["exact"]["maj@8"] == 0.0
    assert out["semantic"]["mean@8"] == out["exact"]["mean@8"] == pytest.approx(5 / 8)


def test_offline_labels_from_generations_vote_semantically(tmp_path):
    """SRT offline labels: the frozen model's majority answer per problem, with
    equivalent answers voting together (0.5 and 1/2 beat three distinct others)."""
    import json

    from ttrl_jax.eval.evaluation import labels_from_generations

    samples = {"a": ["0.5", "3", "\\frac{1}{2}", "4"], "b": [None, "7", "7", "8"], "c": [None] * 4}
    rows = [
        {"id": i, "mode": "sampled", "sample": j, "answer": a}
        for i, answers in samples.items()
        for j, a in enumerate(answers)
    ]
    rows.append({"id": "a", "mode": "greedy", "sample": 0, "answer": "3"})  # ignored
    path = tmp_path / "base.generations.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    labels = labels_from_generations(str(path))
    assert labels["b"] == "7" and labels["c"] is None
    assert labels["a"] in ("0.5", "\\frac{1}{2}")
    path.write_text('{"id": "a", "mode": "sampled"}\n')
    with pytest.raises(ValueError, match=r"base.generations.jsonl:1"):
        labels_from_generations(str(path))


def test_srt_demo_validation_set_is_labelled_and_disjoint_from_the_test_set():
    from experiments.demo_srt import validation_set
    from ttrl_jax.data import synthetic

    spec = synthetic.TaskSpec(num_digits=3)
    test = synthetic.make_test_set(200, 0, spec)
    val = validation_set(test, 50, 1, spec)
    assert len(val) == 50 and len({r["id"] for r in val}) == 50
    assert not {r["problem"] for r in val} & {r["problem"] for r in test}
    assert all(r["answer"] == str(synthetic.gold_answer(synthetic.parse_problem(r["problem"])))
               for r in val)
