"""Evaluation metrics on per-sample correctness (pure numpy, no model).

For one problem with n samples of which c are correct:

* mean@n  = c / n                    (TTRL's "pass@1 (avg@16)", SRT's mean@32)
* pass@k  = 1 - C(n - c, k) / C(n, k) (the unbiased estimator of Chen et al. 2021),
            computed as 1 - prod_{i = n - c + 1}^{n} (1 - k / i) for stability
* maj@n   = 1[the majority answer class of the n samples is correct]

and every metric is averaged over problems.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem with ``c`` correct of ``n`` samples."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1)))


def mean_at_n(correct: np.ndarray) -> float:
    """Mean accuracy over problems and samples; ``correct`` is ``[B, n]`` bool."""
    return float(np.asarray(correct, np.float64).mean()) if np.size(correct) else 0.0


def pass_at_k_mean(correct: np.ndarray, k: int) -> float:
    """Unbiased pass@k averaged over problems; ``correct`` is ``[B, n]`` bool."""
    correct = np.asarray(correct, bool)
    n = correct.shape[1]
    return float(np.mean([pass_at_k(n, int(c), k) for c in correct.sum(axis=1)]))


def majority_correct(ids: np.ndarray, correct: np.ndarray) -> np.ndarray:
    """``[B]`` bool: is each problem's majority class correct?

    ``ids`` ``[B, n]`` are answer-class ids (-1 = no answer) numbered so that id 0 is the
    majority class (as `rewards.voting.cluster_answers` returns them), ``correct`` the
    per-sample correctness. A problem with no answer at all counts as wrong.
    """
    ids, correct = np.asarray(ids), np.asarray(correct, bool)
    return np.array([bool(correct[b][ids[b] == 0].any()) for b in range(ids.shape[0])])


def summarize(
    correct: np.ndarray,
    ids: np.ndarray | None = None,
    ks: Sequence[int] = (1,),
    prefix: str = "",
) -> dict[str, float]:
    """mean@n, unbiased pass@k for ``ks`` (k <= n) and maj@n (if ``ids`` given)."""
    correct = np.asarray(correct, bool)
    n = correct.shape[1]
    out = {f"{prefix}mean@{n}": mean_at_n(correct)}
    for k in ks:
        if k <= n:
            out[f"{prefix}pass@{k}"] = pass_at_k_mean(correct, k)
    if ids is not None:
        out[f"{prefix}maj@{n}"] = float(majority_correct(ids, correct).mean())
    return out
