"""Cluster the M answers of each prompt into equivalence classes (host side).

``cluster_answers`` turns canonical answer strings ``[B][M]`` (None = no answer) into
int ids ``[B, M]`` (-1 = no answer) for the pure-JAX reward modes of
:mod:`ttrl_jax.rewards.modes`.

Algorithm, per prompt (deterministic):

1. Identical canonical strings form *groups*, ordered by (more votes first, then the
   earliest sample first).
2. ``exact`` mode: every group is a class (the TTRL reference's behaviour: ``0.5`` and
   ``\\frac{1}{2}`` split their votes). ``semantic`` mode (default): groups are visited
   in that order; a group joins the first existing class (in creation order) whose
   *leader* (the class's first group) is equivalent to it, else it founds a class.
   Comparing to leaders only keeps classes from chaining through near-misses; only
   the first ``max_leaders`` classes are tried, which bounds the cost when answers
   scatter.
3. Classes are numbered by (more votes first, then earliest sample first), so id 0 is
   the majority class, and ties go to the class whose earliest sample comes first --
   the same rule :func:`modes.majority` applies to any id array.

Semantic comparisons are batched across prompts: one
:meth:`GradingPool.equivalent_many` call per round (round r compares every prompt's
r-th group to its current leaders), and most pairs never leave this process thanks to
the grading fast path.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np

from ttrl_jax.rewards import answers as answers_lib
from ttrl_jax.rewards import grading
from ttrl_jax.rewards.modes import Votes

__all__ = ["Clusters", "build_votes", "cluster_answers", "match_labels"]

Answers = Sequence[Sequence[str | None]]


@dataclasses.dataclass(frozen=True)
class Clusters:
    """Answer classes of a batch.

    Attributes:
        ids: ``[B, M]`` int32 class id per sample, -1 = no answer; id 0 = majority.
        representatives: ``representatives[b][k]`` is the canonical answer string of
            class k of prompt b (its most-voted string).
        votes: ``votes[b][k]`` is the number of samples in class k of prompt b.
    """

    ids: np.ndarray
    representatives: list[list[str]]
    votes: list[list[int]]

    def label(self, b: int) -> str | None:
        """Majority answer of prompt b, or None when no sample answered."""
        return self.representatives[b][0] if self.representatives[b] else None


def _groups(row: Sequence[str | None]) -> list[tuple[str, list[int]]]:
    """Identical strings -> (string, sample indices), by (-count, first index)."""
    members: dict[str, list[int]] = {}
    for m, a in enumerate(row):
        if a is not None:
            members.setdefault(a, []).append(m)
    return sorted(members.items(), key=lambda kv: (-len(kv[1]), kv[1][0]))


def _equivalent_many(task, pairs, pool) -> list[bool]:
    if not pairs:
        return []
    if task.equivalence == "math":
        return (pool or grading.default_pool()).equivalent_many(pairs, normalize=False)
    return [grading.compare_in_process(task, a, b) for a, b in pairs]


def cluster_answers(
    answers: Answers,
    *,
    mode: str = "semantic",
    task: str | answers_lib.Task = "math",
    pool: grading.GradingPool | None = None,
    max_leaders: int = 8,
) -> Clusters:
    """Clusters canonical answers ``[B][M]`` into class ids ``[B, M]``.

    Args:
        answers: per prompt, the M canonical answers (from ``Task.extract``), None
            where a sample gave no answer. Rows must have equal length.
        mode: ``"semantic"`` (equivalent answers share a class) or ``"exact"``
            (identical canonical strings only).
        task: task name / ``module:function`` / Task; its ``equivalence`` decides how
            semantic mode compares (``"exact"`` tasks cluster exactly either way).
        pool: grading pool for math equivalence (default: the process-wide pool).
        max_leaders: a group is compared with the leaders of at most this many classes
            (the first created, i.e. the most voted), bounding the comparisons per
            prompt to ``max_leaders * M`` when answers scatter; a group that matches
            none of them starts its own class.

    Returns:
        :class:`Clusters`.
    """
    if mode not in ("semantic", "exact"):
        raise ValueError(f"mode must be 'semantic' or 'exact', got {mode!r}")
    t = answers_lib.get_task(task)
    b = len(answers)
    m = len(answers[0]) if b else 0
    if any(len(row) != m for row in answers):
        raise ValueError("every prompt needs the same number of answers M")
    groups = [_groups(row) for row in answers]
    # classes[b] = list of lists of group indices; the first group is the leader.
    classes: list[list[list[int]]] = [[] for _ in range(b)]
    if mode == "exact" or t.equivalence == "exact":
        for i in range(b):
            classes[i] = [[g] for g in range(len(groups[i]))]
    else:
        for r in range(max((len(g) for g in groups), default=0)):
            pairs, owners, candidates = [], [], []
            for i in range(b):
                if r >= len(groups[i]):
                    continue
                if not classes[i]:  # the most-voted group founds class 0
                    classes[i].append([r])
                    continue
                candidates.append(i)
                for k, cls in enumerate(classes[i][:max_leaders]):  # in creation order
                    pairs.append((groups[i][cls[0]][0], groups[i][r][0]))
                    owners.append((i, k))
            joined: dict[int, int] = {}
            for (i, k), hit in zip(owners, _equivalent_many(t, pairs, pool)):
                if hit and i not in joined:
                    joined[i] = k
            for i in candidates:
                if i in joined:
                    classes[i][joined[i]].append(r)
                else:
                    classes[i].append([r])
    ids = np.full((b, m), -1, dtype=np.int32)
    reps: list[list[str]] = []
    votes: list[list[int]] = []
    for i in range(b):
        members = [[s for g in cls for s in groups[i][g][1]] for cls in classes[i]]
        order = sorted(range(len(members)), key=lambda k: (-len(members[k]), min(members[k])))
        reps.append([groups[i][classes[i][k][0]][0] for k in order])
        votes.append([len(members[k]) for k in order])
        for new_id, k in enumerate(order):
            ids[i, members[k]] = new_id
    return Clusters(ids, reps, votes)


def match_labels(
    clusters: Clusters,
    labels: Sequence[str | None],
    *,
    task: str | answers_lib.Task = "math",
    pool: grading.GradingPool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Which samples match a per-prompt label (ground truth or offline pseudo-label).

    Each label is normalised with ``task.normalize`` and compared (label on the gold
    side) to each class representative; a sample matches when its class does.

    Returns:
        ``match`` ``[B, M]`` bool and ``has_label`` ``[B]`` bool.
    """
    t = answers_lib.get_task(task)
    ids = clusters.ids  # [B, M]
    b = ids.shape[0]
    if len(labels) != b:
        raise ValueError(f"{len(labels)} labels for {b} prompts")
    canon = [t.normalize(l) if l is not None else None for l in labels]
    has_label = np.array([c is not None for c in canon], dtype=bool)  # [B]
    pairs, owners = [], []
    for i in range(b):
        if canon[i] is not None:
            for k, rep in enumerate(clusters.representatives[i]):
                pairs.append((canon[i], rep))
                owners.append((i, k))
    hits = _equivalent_many(t, pairs, pool)
    class_hit = [np.zeros(len(r) + 1, dtype=bool) for r in clusters.representatives]
    for (i, k), hit in zip(owners, hits):
        class_hit[i][k] = hit
    match = np.zeros(ids.shape, dtype=bool)  # [B, M]
    for i in range(b):
        match[i] = class_hit[i][ids[i]]  # id -1 reads the trailing False
    return match, has_label


def build_votes(
    answers: Answers,
    *,
    golds: Sequence[str | None] | None = None,
    offline_labels: Sequence[str | None] | None = None,
    mode: str = "semantic",
    task: str | answers_lib.Task = "math",
    pool: grading.GradingPool | None = None,
) -> tuple[Votes, Clusters]:
    """Clusters answers and matches labels: the numpy :class:`Votes` of one step.

    ``golds`` (for monitoring and the ``ground_truth``/``hybrid`` modes) and
    ``offline_labels`` (for the ``offline`` mode) are optional, None per prompt where
    unknown.
    """
    clusters = cluster_answers(answers, mode=mode, task=task, pool=pool)
    correct = has_gold = offline_match = has_offline = None
    if golds is not None:
        correct, has_gold = match_labels(clusters, golds, task=task, pool=pool)
    if offline_labels is not None:
        offline_match, has_offline = match_labels(clusters, offline_labels, task=task, pool=pool)
    return Votes(clusters.ids, correct, has_gold, offline_match, has_offline), clusters
