"""SRT's curriculum: train on the prompts the frozen base model answers most consistently.

SRT (arXiv 2505.21444) ranks the training prompts by the self-consistency of the base
model, i.e. the majority ratio :math:`c_{b m^*} / M` of one voting pass of M samples per
prompt (no labels involved), and trains on the most self-consistent fraction of them
(a third in the paper): prompts the model already answers the same way are the "easy"
ones whose pseudo-labels are most often right, which delays reward hacking.

This module holds the selection rule and the cache of the voting pass; the pass itself
is :func:`ttrl_jax.eval.evaluation.majority_ratios`. The cache is one JSON file beside the
run (``<output_dir>/curriculum.json``): per prompt id, its base-model majority ratio,
plus a fingerprint of everything the ratios depend on (model, data, sampling). A
resumed run reads the cache instead of voting again (after a restart the policy is no
longer the base model, so it could not recompute the same ratios). A cache whose
fingerprint differs from the run's is an error naming the differing key, never
silently reused or overwritten.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

CACHE_NAME = "curriculum.json"
_VERSION = 1


def select_most_consistent(ratios: np.ndarray, fraction: float) -> np.ndarray:
    """Indices of the :math:`\\lceil f \\cdot n \\rceil` prompts with the highest ratio.

    Args:
        ratios: ``[n]`` majority ratio of each prompt, in [0, 1].
        fraction: f in (0, 1].

    Returns:
        ``[k]`` int64 indices in ascending (dataset) order, k = max(1, ceil(f n)); among
        equal ratios the lower index is kept first (a stable, seed-free rule).
    """
    ratios = np.asarray(ratios, np.float64)  # [n]
    if ratios.ndim != 1 or ratios.size == 0:
        raise ValueError(f"need a non-empty [n] vector of ratios, got shape {ratios.shape}")
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"curriculum fraction must be in (0, 1], got {fraction}")
    k = min(ratios.size, max(1, math.ceil(fraction * ratios.size - 1e-9)))
    order = np.argsort(-ratios, kind="stable")  # [n]
    return np.sort(order[:k])


def cache_path(output_dir: str) -> str:
    """Where a run keeps its curriculum cache."""
    return os.path.join(output_dir, CACHE_NAME)


def load_ratios(path: str, fingerprint: Mapping[str, Any], ids: Sequence[str]) -> np.ndarray | None:
    """Cached ratios ``[n]`` in the order of ``ids``, or None when there is no cache.

    Raises:
        ValueError: the file is unreadable, or was computed for another configuration
            (the message names the file and the first differing key) or other prompts.
    """
    if not os.path.exists(path):
        return None
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
        stored, by_id = data["fingerprint"], data["ratios"]
        if data.get("version") != _VERSION or not isinstance(by_id, dict):
            raise ValueError(f"unsupported version {data.get('version')!r}")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: not a curriculum cache ({e}); delete it to recompute") from None
    for key in sorted(set(stored) | set(fingerprint)):
        if stored.get(key) != fingerprint.get(key):
            raise ValueError(
                f"{path}: computed with {key}={stored.get(key)!r}, this run has "
                f"{key}={fingerprint.get(key)!r}; delete it to recompute or use another "
                "output_dir"
            )
    missing = [i for i in ids if i not in by_id]
    if missing or len(by_id) != len(ids):
        raise ValueError(
            f"{path}: holds {len(by_id)} prompts, this run has {len(ids)} (first missing id: "
            f"{missing[0] if missing else None!r}); delete it to recompute"
        )
    ratios = np.asarray([by_id[i] for i in ids], np.float64)  # [n]
    if not np.all((ratios >= 0) & (ratios <= 1)):
        raise ValueError(f"{path}: ratios must lie in [0, 1]")
    return ratios


def save_ratios(
    path: str, fingerprint: Mapping[str, Any], ids: Sequence[str], ratios: np.ndarray
) -> None:
    """Writes the cache atomically (a temporary file renamed over ``path``)."""
    ratios = np.asarray(ratios, np.float64)  # [n]
    if len(ids) != ratios.shape[0]:
        raise ValueError(f"{len(ids)} ids but {ratios.shape[0]} ratios")
    data = {
        "version": _VERSION,
        "fingerprint": dict(fingerprint),
        "ratios": {str(i): float(r) for i, r in zip(ids, ratios)},
    }
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(data, f, indent=1)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
