"""From sampled tokens to consensus rewards: decode, extract, vote, reward, label metrics.

Host side of one RL step (the reward math itself is the pure JAX of `rewards.modes`):

1. decode each of the B x M completions (up to its length) to text;
2. extract and normalise an answer per completion with the task;
3. cluster the M answers of each prompt into equivalence classes -> ids ``[B, M]``;
4. match ground-truth labels (monitoring, or the ``ground_truth`` / ``hybrid`` modes)
   and offline pseudo-labels (``offline`` mode) to those classes;
5. apply the reward mode -> rewards ``[B, N]`` of the N trained samples, plus any
   weighted label-free scores (`modes.add_terms`: self-certainty and token entropy
   from the policy's log-prob pass, semantic entropy from the clusters), and the
   TTRL / SRT label metrics (ground truth is never used for reward in label-free modes).
"""

from __future__ import annotations

import functools
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from ttrl_jax.rewards import answers as answers_lib
from ttrl_jax.rewards import modes, voting

LABEL_FREE_MODES = ("ttrl", "srt", "offline", *modes.SCORE_MODES)
# the scores that need the policy's per-token distributions (`Votes.self_certainty`,
# `Votes.token_entropy`, from the trainer's forward-only LM-head pass)
TOKEN_SCORES = ("self_certainty", "neg_entropy")


def needs_token_stats(mode: str, weights: dict) -> bool:
    """Whether a reward needs the per-sample `Votes.self_certainty` / ``token_entropy``."""
    return mode in TOKEN_SCORES or any(w and k in TOKEN_SCORES for k, w in weights.items())


def decode_completions(tokenizer, tokens: np.ndarray, lengths: np.ndarray) -> list[list[str]]:
    """Texts of ``tokens [B, M, T]`` cut at ``lengths [B, M]`` (special tokens dropped)."""
    b, m, _ = tokens.shape
    flat = [tokens[i, j, : lengths[i, j]].tolist() for i in range(b) for j in range(m)]
    texts = tokenizer.batch_decode(flat, skip_special_tokens=True)
    return [texts[i * m : (i + 1) * m] for i in range(b)]


def mode_params(mode: str, n_train: int, threshold: float, soft: bool, keep_fraction: float):
    """Static keyword arguments of a reward mode."""
    if mode == "srt":
        return {"tau": threshold, "soft": soft, "keep_fraction": keep_fraction}
    return {"n": n_train or None}


@functools.partial(jax.jit, static_argnames=("mode", "params", "mode_weight", "weights"))
def _reward_and_metrics(
    votes: modes.Votes, key, mode: str, params: tuple, mode_weight: float, weights: tuple
):
    out = modes.REWARD_MODES[mode](votes, key, **dict(params))
    out = modes.add_terms(votes, out, mode_weight, dict(weights))  # labels, masks unchanged
    metrics = modes.label_metrics(votes, out)  # reward_mean: of the summed reward
    metrics["semantic_entropy"] = modes.semantic_entropy_of(votes.ids).mean()
    for name in ("self_certainty", "token_entropy"):
        if getattr(votes, name) is not None:
            metrics[name] = getattr(votes, name).mean()
    return out, metrics


def score(
    texts: Sequence[Sequence[str]],
    key: jax.Array,
    *,
    mode: str,
    task="math",
    clustering: str = "semantic",
    golds: Sequence[str | None] | None = None,
    offline_labels: Sequence[str | None] | None = None,
    n_train: int = 0,
    threshold: float = 0.0,
    soft: bool = False,
    keep_fraction: float = 1.0,
    pool=None,
    token_scores: dict | None = None,
    mode_weight: float = 1.0,
    weights: dict | None = None,
):
    """Rewards for ``texts [B][M]``.

    Args:
      texts: decoded completions, M per prompt.
      key: PRNG key for choosing the N trained samples (TTRL mode).
      mode: a `rewards.modes.REWARD_MODES` name.
      golds: ground-truth answers per prompt (None where unknown); used for the reward
        only by the ``ground_truth`` / ``hybrid`` modes, otherwise for metrics.
      offline_labels: frozen-model pseudo-labels per prompt (``offline`` mode).
      n_train: N (0: all M).
      token_scores: per-sample means over the response tokens, ``[B, M]`` each:
        ``self_certainty`` and ``token_entropy`` (needed by the modes and weights of
        `TOKEN_SCORES`).
      mode_weight, weights: ``r = mode_weight r_mode + sum_k weights[k] r_k`` with k in
        `modes.SCORE_MODES` (`modes.add_terms`).

    Returns:
      (rewards `modes.Rewards` as numpy, metrics dict of floats, answers [B][M]).
    """
    if mode in ("ground_truth", "hybrid") and golds is None:
        raise ValueError(f"reward mode {mode!r} needs ground-truth answers")
    weights = {k: float(w) for k, w in (weights or {}).items() if w}
    unknown = sorted(set(weights) - set(modes.SCORE_MODES))
    if unknown:
        raise ValueError(f"unknown reward terms {unknown}; choose from {sorted(modes.SCORE_MODES)}")
    if needs_token_stats(mode, weights) and not token_scores:
        raise ValueError(f"reward mode {mode!r} / terms {sorted(weights)} need token_scores")
    answers = answers_lib.extract_answers(texts, task, pool=pool)
    votes, clusters = voting.build_votes(
        answers, golds=golds, offline_labels=offline_labels, mode=clustering, task=task, pool=pool
    )
    votes = modes.Votes(*(None if v is None else jnp.asarray(v) for v in votes))
    if token_scores:
        votes = votes._replace(
            **{k: jnp.asarray(v, jnp.float32) for k, v in token_scores.items() if v is not None}
        )
    params = tuple(sorted(mode_params(mode, n_train, threshold, soft, keep_fraction).items()))
    out, metrics = _reward_and_metrics(
        votes, key, mode, params, float(mode_weight), tuple(sorted(weights.items()))
    )
    out = modes.Rewards(*(np.asarray(x) for x in out))
    metrics = {k: float(v) for k, v in metrics.items()}
    answered = np.asarray(votes.ids) >= 0
    metrics["answered_fraction"] = float(answered.mean())
    metrics["num_classes_mean"] = float(np.mean([len(v) for v in clusters.votes]))
    return out, metrics, answers
