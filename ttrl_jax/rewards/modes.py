"""Reward modes and label metrics on vote ids, in pure JAX (jittable, no host code).

Inputs are the integer answer-class ids of :mod:`ttrl_jax.rewards.voting`: ``ids[b, m]``
is the class of sample ``m`` of prompt ``b``, ``-1`` when it gave no answer. Ids only
need to be equal for equivalent answers; their values carry no meaning.

Majority vote. With :math:`c_{bm} = |\\{j : ids_{bj} = ids_{bm} \\ge 0\\}|` the votes of
sample m's class, the label of prompt b is the class of sample
:math:`m^* = \\arg\\max_m c_{bm}` (the **first** maximiser: among tied classes the one
whose earliest sample comes first wins), or -1 when no sample answered. The majority
ratio is :math:`c_{bm^*} / M` (no-answer samples count in M).

Every mode has the signature ``fn(votes, key, **params) -> Rewards`` and is listed in
:data:`REWARD_MODES`; static params (``n``, ``tau``, ``soft``, ``keep_fraction``) must be
Python values (bind them with ``functools.partial`` before ``jax.jit``).

Besides the vote-based modes (ttrl, srt, offline; ground_truth and hybrid use labels)
there are three label-free modes that need no answer agreement at all
(:data:`SCORE_MODES`): ``self_certainty`` and ``neg_entropy`` score a sample by the
policy's own per-token distributions (``Votes.self_certainty`` / ``Votes.token_entropy``,
from the fused LM-head pass), ``semantic_entropy`` scores a prompt by the spread of its
vote clusters. Any of them can be added to a mode's reward with a weight
(`add_terms`): ``r = w_mode r_mode + sum_k w_k r_k`` on the mode's trained samples.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

__all__ = [
    "REWARD_MODES",
    "Rewards",
    "SCORE_MODES",
    "add_terms",
    "neg_entropy",
    "self_certainty",
    "semantic_entropy",
    "semantic_entropy_of",
    "Votes",
    "choose_subset",
    "ground_truth",
    "hybrid",
    "label_metrics",
    "majority",
    "offline",
    "srt",
    "ttrl",
    "vote_counts",
]


class Votes(NamedTuple):
    """Per-sample vote data of one step (a pytree; optional fields may be None).

    Attributes:
        ids: ``[B, M]`` int32 answer-class ids, -1 = no answer.
        correct: ``[B, M]`` bool, sample's answer matches the ground truth.
        has_gold: ``[B]`` bool, the prompt has a ground-truth label.
        offline_match: ``[B, M]`` bool, sample's answer matches the offline pseudo-label.
        has_offline: ``[B]`` bool, the prompt has an offline pseudo-label.
        self_certainty: ``[B, M]`` f32, mean over the sample's response tokens of
            KL(U || p_t) (`update.lm_head.fused_token_stats`).
        token_entropy: ``[B, M]`` f32, mean over its response tokens of H(p_t).
    """

    ids: jax.Array
    correct: jax.Array | None = None
    has_gold: jax.Array | None = None
    offline_match: jax.Array | None = None
    has_offline: jax.Array | None = None
    self_certainty: jax.Array | None = None
    token_entropy: jax.Array | None = None


class Rewards(NamedTuple):
    """Output of a reward mode.

    Attributes:
        rewards: ``[B, N]`` float32 reward of each trained sample.
        indices: ``[B, N]`` int32, which of the M samples are trained (ascending).
        label_ids: ``[B]`` int32 class id of the (pseudo-)label, -1 if no sample has it.
        label_mask: ``[B]`` bool, the prompt has a label (False: zero reward, no KL).
        keep: ``[B]`` bool, the prompt is selected for training (SRT keep-fraction).
    """

    rewards: jax.Array
    indices: jax.Array
    label_ids: jax.Array
    label_mask: jax.Array
    keep: jax.Array


def vote_counts(ids: jax.Array) -> jax.Array:
    """``c[b, m]`` = number of samples of prompt b in sample m's class (0 if no answer)."""
    valid = ids >= 0  # [B, M]
    same = (ids[:, :, None] == ids[:, None, :]) & valid[:, :, None]  # [B, M, M]
    return same.sum(axis=-1).astype(jnp.int32)  # [B, M]


def majority(ids: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Majority class id ``[B]`` (-1 if none) and its vote count ``[B]``."""
    counts = vote_counts(ids)  # [B, M]
    first = jnp.argmax(counts, axis=1)  # [B], first maximiser
    best = jnp.take_along_axis(counts, first[:, None], axis=1)[:, 0]  # [B]
    label = jnp.take_along_axis(ids, first[:, None], axis=1)[:, 0]  # [B]
    return jnp.where(best > 0, label, -1).astype(jnp.int32), best


def _first_class(ids: jax.Array, mask: jax.Array) -> jax.Array:
    """Class id of the first sample with ``mask`` set, -1 if none. ``[B]``."""
    first = jnp.argmax(mask, axis=1)  # [B]
    label = jnp.take_along_axis(ids, first[:, None], axis=1)[:, 0]  # [B]
    return jnp.where(mask.any(axis=1), label, -1).astype(jnp.int32)


def choose_subset(key: jax.Array, batch: int, m: int, n: int) -> jax.Array:
    """``[B, n]`` indices: per prompt n of m samples uniformly without replacement.

    Ranks i.i.d. uniform noise (a uniformly random permutation) and keeps the first n,
    sorted ascending.
    """
    if not 0 < n <= m:
        raise ValueError(f"need 0 < n <= M, got n={n}, M={m}")
    noise = jax.random.uniform(key, (batch, m))  # [B, M]
    return jnp.sort(jnp.argsort(noise, axis=1)[:, :n], axis=1).astype(jnp.int32)  # [B, n]


def _indices(key: jax.Array | None, batch: int, m: int, n: int | None) -> jax.Array:
    if n is None or n == m:
        return jnp.broadcast_to(jnp.arange(m, dtype=jnp.int32), (batch, m))
    if key is None:
        raise ValueError("choosing n < M training samples needs a PRNG key")
    return choose_subset(key, batch, m, n)


def _gather(x: jax.Array, idx: jax.Array) -> jax.Array:
    return jnp.take_along_axis(x, idx, axis=1)


def _require(votes: Votes, *fields: str) -> None:
    missing = [f for f in fields if getattr(votes, f) is None]
    if missing:
        raise ValueError(f"this reward mode needs Votes fields {missing}")


def ttrl(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """TTRL: label = majority of all M votes; r = 1[class = label]; train N of M.

    The N trained samples are chosen uniformly at random with ``key`` (the reference's
    "first N" is biased by its length-balancing reorder); ``n=None`` trains all M.
    """
    ids = votes.ids  # [B, M]
    b, m = ids.shape
    label, _ = majority(ids)  # [B]
    agree = ((ids == label[:, None]) & (label[:, None] >= 0)).astype(jnp.float32)  # [B, M]
    idx = _indices(key, b, m, n)  # [B, N]
    return Rewards(_gather(agree, idx), idx, label, label >= 0, jnp.ones((b,), bool))


def srt(
    votes: Votes,
    key: jax.Array | None = None,
    *,
    tau: float = 0.0,
    soft: bool = False,
    keep_fraction: float = 1.0,
) -> Rewards:
    """SRT: the M training samples are the votes.

    label_mask = (label exists) and :math:`c_{bm^*}/M \\ge \\tau`; unlabelled prompts get
    zero reward (and no KL). Reward is :math:`1[ids_{bm} = label_b]`, or with ``soft``
    :math:`c_{bm}/M` (fraction of votes agreeing with the sample). ``keep_fraction`` φ
    marks the :math:`\\lceil φB \\rceil` prompts with the highest majority ratio in
    ``keep`` (ties: lower prompt index first).
    """
    del key
    ids = votes.ids  # [B, M]
    b, m = ids.shape
    label, best = majority(ids)  # [B]
    ratio = best.astype(jnp.float32) / m  # [B]
    label_mask = (label >= 0) & (ratio >= tau)  # [B]
    if soft:
        r = vote_counts(ids).astype(jnp.float32) / m  # [B, M]
    else:
        r = ((ids == label[:, None]) & (label[:, None] >= 0)).astype(jnp.float32)  # [B, M]
    r = r * label_mask[:, None]
    if keep_fraction >= 1.0:
        keep = jnp.ones((b,), bool)
    else:
        k = min(b, max(1, math.ceil(keep_fraction * b)))
        order = jnp.argsort(-ratio, stable=True)  # [B]
        keep = jnp.zeros((b,), bool).at[order[:k]].set(True)
    return Rewards(r, _indices(None, b, m, None), label, label_mask, keep)


def _indicator(ids, hit, has, key, n) -> Rewards:
    """r = 1[hit] on the prompts that ``has`` their reference (else 0), for the N trained
    of M (``ids``, ``hit [B, M]``); the label is the first class that hits."""
    b, m = ids.shape
    hit = hit & has[:, None]  # [B, M]
    idx = _indices(key, b, m, n)  # [B, N]
    r = _gather(hit.astype(jnp.float32), idx)
    return Rewards(r, idx, _first_class(ids, hit), has, jnp.ones((b,), bool))


def offline(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """Offline pseudo-labels (precomputed once by a frozen model): r = 1[matches it]."""
    _require(votes, "offline_match", "has_offline")
    return _indicator(votes.ids, votes.offline_match, votes.has_offline, key, n)


def ground_truth(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """RL with labels (upper bound): r = 1[sample is correct]; no label → zero reward."""
    _require(votes, "correct", "has_gold")
    return _indicator(votes.ids, votes.correct, votes.has_gold, key, n)


def hybrid(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """Ground truth where the prompt has it, else the TTRL majority reward."""
    _require(votes, "correct", "has_gold")
    ids = votes.ids  # [B, M]
    b, m = ids.shape
    maj, _ = majority(ids)  # [B]
    gold = votes.has_gold  # [B]
    agree = (ids == maj[:, None]) & (maj[:, None] >= 0)  # [B, M]
    hit = jnp.where(gold[:, None], votes.correct, agree)  # [B, M]
    label = jnp.where(gold, _first_class(ids, votes.correct & gold[:, None]), maj)  # [B]
    idx = _indices(key, b, m, n)  # [B, N]
    r = _gather(hit.astype(jnp.float32), idx)
    return Rewards(r, idx, label, gold | (maj >= 0), jnp.ones((b,), bool))


def semantic_entropy_of(ids: jax.Array) -> jax.Array:
    """Discrete semantic entropy ``[B]`` of each prompt's vote clusters, in nats.

    With :math:`p_c = |c| / M` the share of the M samples in answer class c (Kuhn et
    al., arXiv 2302.09664; Farquhar et al., Nature 2024, the discrete variant), and
    every sample without an answer its own singleton class (so not answering never
    looks consistent): :math:`SE_b = -\sum_c p_c \log p_c`, 0 when all M agree,
    :math:`\log M` when all differ. Computed per sample as
    :math:`-\frac{1}{M} \sum_m \log(c_{bm} / M)` (a class of size c has c members each
    contributing :math:`\log(c/M)/M`), with :math:`c_{bm} = 1` for no-answer samples.
    """
    m = ids.shape[1]
    counts = jnp.maximum(vote_counts(ids), 1).astype(jnp.float32)  # [B, M]
    return -jnp.mean(jnp.log(counts / m), axis=1)  # [B]


def _score_rewards(votes: Votes, per_sample: jax.Array, key, n: int | None) -> Rewards:
    """A label-free score ``[B, M]`` as the reward of every prompt (label_mask and keep
    all True); the label is still the majority vote, for monitoring only."""
    b, m = per_sample.shape
    label, _ = majority(votes.ids)  # [B]
    idx = _indices(key, b, m, n)  # [B, N]
    ones = jnp.ones((b,), bool)
    return Rewards(_gather(per_sample.astype(jnp.float32), idx), idx, label, ones, ones)


def _self_certainty_score(votes: Votes) -> jax.Array:
    _require(votes, "self_certainty")
    return votes.self_certainty  # [B, M]


def _neg_entropy_score(votes: Votes) -> jax.Array:
    _require(votes, "token_entropy")
    return -votes.token_entropy  # [B, M]


def _semantic_entropy_score(votes: Votes) -> jax.Array:
    se = semantic_entropy_of(votes.ids)  # [B]
    return jnp.broadcast_to(-se[:, None], votes.ids.shape)  # [B, M]


def self_certainty(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """Self-certainty (Intuitor, "Learning to Reason without External Rewards", Zhao et
    al., arXiv 2505.19590): :math:`r_{bm} = \frac{1}{|o|} \sum_{t} KL(U \| p_\theta(\cdot
    | q, o_{<t}))` over the sample's response tokens, U uniform over the vocabulary
    (``Votes.self_certainty``). Train N of M as in `ttrl`."""
    return _score_rewards(votes, _self_certainty_score(votes), key, n)


def neg_entropy(votes: Votes, key: jax.Array | None = None, *, n: int | None = None) -> Rewards:
    """Negative token entropy (entropy minimisation, Agarwal et al., "The Unreasonable
    Effectiveness of Entropy Minimization in LLM Reasoning", arXiv 2505.15134):
    :math:`r_{bm} = -\frac{1}{|o|} \sum_t H(p_\theta(\cdot | q, o_{<t}))` over the sample's
    response tokens (``Votes.token_entropy``). Train N of M as in `ttrl`."""
    return _score_rewards(votes, _neg_entropy_score(votes), key, n)


def semantic_entropy(
    votes: Votes, key: jax.Array | None = None, *, n: int | None = None
) -> Rewards:
    """Negative semantic entropy of the prompt's vote clusters, shared by its samples
    (`semantic_entropy_of`; the uncertainty signal of EMPO, arXiv 2504.05812, and
    SEED-GRPO, arXiv 2505.12346): :math:`r_{bm} = -SE_b`.

    A reward constant within a prompt's group has zero advantage under a per-group
    baseline (grpo, rloo, dr_grpo, reinforce_pp_baseline): alone it needs a batch-level
    one (``algo.advantage=reinforce_pp``); added to a vote reward it then weights prompts.
    """
    return _score_rewards(votes, _semantic_entropy_score(votes), key, n)


# the label-free scores that can be added to any mode's reward (`add_terms`)
SCORE_MODES: dict[str, Callable[[Votes], jax.Array]] = {
    "self_certainty": _self_certainty_score,
    "neg_entropy": _neg_entropy_score,
    "semantic_entropy": _semantic_entropy_score,
}


def add_terms(votes: Votes, out: Rewards, mode_weight: float, weights: dict) -> Rewards:
    """``r = mode_weight r_mode + sum_k weights[k] r_k`` on the mode's trained samples
    (``out.indices``), each :math:`r_k` a `SCORE_MODES` score; labels, masks and the
    choice of samples stay the mode's. Static weights (Python floats); zero ones are
    skipped, so the default adds nothing and changes no bit."""
    r = out.rewards if mode_weight == 1.0 else mode_weight * out.rewards  # [B, N]
    for name, w in sorted(weights.items()):
        if w:
            r = r + w * _gather(SCORE_MODES[name](votes).astype(jnp.float32), out.indices)
    return out._replace(rewards=r)


REWARD_MODES: dict[str, Callable[..., Rewards]] = {
    "ttrl": ttrl,
    "srt": srt,
    "offline": offline,
    "ground_truth": ground_truth,
    "hybrid": hybrid,
    "self_certainty": self_certainty,
    "neg_entropy": neg_entropy,
    "semantic_entropy": semantic_entropy,
}


def label_metrics(votes: Votes, out: Rewards) -> dict[str, jax.Array]:
    """TTRL/SRT monitoring metrics (scalars). Gold is never used for reward here.

    With :math:`L_b` the label of ``out``, :math:`\\hat r_{bm} = 1[ids_{bm} = L_b]` the
    binary pseudo-reward (0 for unlabelled prompts), :math:`r^*_{bm}` = ``correct`` and
    averages over prompts with gold (``has_gold``):

    * ``label_accuracy`` = mean_b 1[label class is correct]
    * ``reward_accuracy`` = mean_b mean_m 1[:math:`\\hat r_{bm} = r^*_{bm}`]
    * ``ground_truth_ratio`` = mean_b mean_m :math:`r^*_{bm}` (true accuracy of rollouts)
    * ``pass@M`` = mean_b max_m :math:`r^*_{bm}`
    * ``correctly_labelled_fraction`` = mean_b label_mask · label correct (SRT)

    and over all prompts: ``majority_ratio`` = mean_b :math:`c_{bm^*}/M`;
    ``majority_voting_reward`` = mean :math:`\\hat r`; ``labelled_fraction`` = mean
    label_mask; ``reward_mean`` = mean of ``out.rewards``. ``post_*`` are the same on
    the N trained samples (``out.indices``), with the label still voted by all M.
    """
    ids = votes.ids  # [B, M]
    b, m = ids.shape
    n = out.indices.shape[1]
    f32 = jnp.float32
    _, best = majority(ids)  # [B]
    label = out.label_ids  # [B]
    in_label = (ids == label[:, None]) & (label[:, None] >= 0)  # [B, M]
    pseudo = in_label & out.label_mask[:, None]  # [B, M]
    pseudo_n = _gather(pseudo, out.indices)  # [B, N]
    metrics = {
        "majority_ratio": (best / m).astype(f32).mean(),
        "majority_voting_reward": pseudo.astype(f32).mean(),
        "labelled_fraction": out.label_mask.astype(f32).mean(),
        "reward_mean": out.rewards.astype(f32).mean(),
        "post_majority_ratio": _gather(in_label, out.indices).astype(f32).mean(),
        "post_majority_voting_reward": pseudo_n.astype(f32).mean(),
    }
    if votes.correct is None:
        return metrics
    gold = (votes.has_gold if votes.has_gold is not None else jnp.ones((b,), bool)).astype(f32)
    n_gold = jnp.maximum(gold.sum(), 1.0)

    def over_gold(per_prompt: jax.Array) -> jax.Array:  # [B] -> scalar
        return (per_prompt.astype(f32) * gold).sum() / n_gold

    correct = votes.correct  # [B, M]
    correct_n = _gather(correct, out.indices)  # [B, N]
    label_correct = (in_label & correct).any(axis=1)  # [B]
    metrics.update(
        {
            "label_accuracy": over_gold(label_correct),
            "reward_accuracy": over_gold((pseudo == correct).astype(f32).mean(axis=1)),
            "ground_truth_ratio": over_gold(correct.astype(f32).mean(axis=1)),
            f"pass@{m}": over_gold(correct.any(axis=1)),
            "correctly_labelled_fraction": over_gold(out.label_mask & label_correct),
            "post_reward_accuracy": over_gold((pseudo_n == correct_n).astype(f32).mean(axis=1)),
            "post_ground_truth_ratio": over_gold(correct_n.astype(f32).mean(axis=1)),
            f"post_pass@{n}": over_gold(correct_n.any(axis=1)),
        }
    )
    return metrics
