"""The evaluation protocols: what an evaluation set may share with the training set.

TTRL trains on the unlabeled test set itself and reports accuracy on it: the
*transductive* protocol. Whether that gain carries to problems the policy never
trained on is the *inductive* question: train on one unlabeled set, evaluate on a
disjoint labelled one. `check_protocol` makes the choice explicit and checks it by
problem text, so a held-out claim cannot rest on an accidental overlap:

* ``transductive``: every evaluation problem is a training problem (a labelled copy
  of the training set, or a subset of it);
* ``inductive``: no evaluation problem is a training problem;
* ``both``: the training set is evaluated (transductive) and the evaluation sets,
  disjoint from it, are evaluated as held-out (inductive).

Problems are compared by `problem_hash`: SHA-256 of the text after Unicode NFKC
normalisation, case folding and collapsing runs of whitespace, so a copy that differs
only in spacing or case still counts as the same problem.
"""

from __future__ import annotations

import hashlib
import unicodedata
from collections.abc import Sequence

PROTOCOLS = ("transductive", "inductive", "both")


def problem_hash(text: str) -> str:
    """SHA-256 hex digest of the normalised problem text (see the module docstring)."""
    norm = " ".join(unicodedata.normalize("NFKC", text).casefold().split())
    return hashlib.sha256(norm.encode("utf-8")).hexdigest()


def _preview(text: str, n: int = 60) -> str:
    one = " ".join(text.split())
    return one if len(one) <= n else one[: n - 3] + "..."


def check_protocol(
    protocol: str,
    train: Sequence[dict],
    train_name: str,
    eval_sets: Sequence[tuple[str, Sequence[dict]]],
) -> None:
    """Raises ``ValueError`` naming both sets and the first offending problem when
    ``eval_sets`` (``(name, records)`` pairs) break ``protocol`` against ``train``
    (records with a ``"problem"`` text, named ``train_name``)."""
    if protocol not in PROTOCOLS:
        raise ValueError(f"eval.protocol: {protocol!r} is not one of {PROTOCOLS}")
    seen = {problem_hash(r["problem"]) for r in train}
    for name, records in eval_sets:
        inside = [r for r in records if problem_hash(r["problem"]) in seen]
        if protocol == "transductive" and len(inside) < len(records):
            outside = next(r for r in records if problem_hash(r["problem"]) not in seen)
            raise ValueError(
                f"eval.datasets: {name} has {len(records) - len(inside)} of {len(records)} "
                f"problems that are not in data.dataset {train_name} (first: "
                f"{_preview(outside['problem'])!r}); the transductive protocol evaluates the "
                "training problems; use eval.protocol=inductive for a held-out set"
            )
        if protocol != "transductive" and inside:
            raise ValueError(
                f"eval.datasets: {name} shares {len(inside)} of {len(records)} problems with "
                f"data.dataset {train_name} (first: {_preview(inside[0]['problem'])!r}); "
                f"the {protocol} protocol needs a disjoint held-out set"
            )
