"""A synthetic reasoning task whose base model is wrong in a way voting can fix.

**Task.** Add ``n`` digits: the problem ``"add 3 5 8 1 9 2"`` has the answer 28.
A solution is a chain of running sums (always two digits) in one of two orders,
then the answer in a box::

    left: 3+5=08 +8=16 +1=17 +9=26 +2=28 \\boxed{28}
    right: 2+9=11 +1=12 +8=20 +5=25 +3=28 \\boxed{28}

**Noise (the training traces only).** The corpus imitates two kinds of solver:

* the *left* order is the more common one (probability ``p_left`` > 1/2), and it
  is careless: at every step whose units column overflows (a carry) it writes the
  old tens digit with probability ``drop_carry`` > 1/2 (after ``16`` it writes
  ``+9=15`` instead of ``+9=25``), so its final answer is ``gold - 10 k`` with
  ``k ~ Binomial(C, drop_carry)`` over the problem's ``C`` carries;
* the *right* order is careful: only rare slips.

Both orders slip with probability ``slip`` per step (units digit off by one).

**Why this defeats sharpening.** A model that fits the corpus puts the
per-token mode on "left" and, at every carry of the left order, on the dropped
carry: greedy decoding (and low temperature) follows exactly the wrong path and
answers ``gold - 10 C``. Sampled at temperature 1, the left order's wrong answers
are spread over ``k = 0..C`` while the right order concentrates on the gold
answer, so the *answer* mode -- the majority vote -- is right far more often than
the token mode. Test-time RL rewards agreement with that vote, which moves the
policy toward the right order and toward keeping carries. Lowering the temperature
moves toward the token mode instead, i.e. away from the right answer.

Records follow :mod:`ttrl_jax.data.records` (``problem``, ``answer``, ``id``,
``source``); training records also carry ``completion``, the (noisy) trace. The
test set's gold answers are for reporting only: TTRL never reads them.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from ttrl_jax.data.records import ANSWER, ID, PROBLEM, SOURCE

SOURCE_NAME = "synthetic-sum"
LEFT, RIGHT = "left", "right"
_PROBLEM_RE = re.compile(r"^add((?: \d)+)$")
_BOXED_RE = re.compile(r"\\boxed\{(\d+)\}")
# numpy Generator stream ids, so train and test draws never share a stream
_TRAIN_STREAM, _TEST_STREAM = 1, 2


@dataclasses.dataclass(frozen=True)
class TaskSpec:
    """The task's size and the noise of its training traces.

    Attributes:
        num_digits: n, digits per problem (each uniform in 0..9).
        p_left: probability that a trace uses the left-to-right order.
        drop_carry: probability that a left-order step with a carry drops it.
        slip: probability, per step and in both orders, that the units digit of the
            running sum is written one too high or too low.
    """

    num_digits: int = 6
    p_left: float = 0.62
    drop_carry: float = 0.6
    slip: float = 0.02

    def __post_init__(self):
        if self.num_digits < 2:
            raise ValueError(f"num_digits must be >= 2, got {self.num_digits}")
        for name in ("p_left", "drop_carry", "slip"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"{name} must be a probability, got {value}")

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-ready dict (``TaskSpec(**d)`` rebuilds it)."""
        return dataclasses.asdict(self)


def problem_text(digits: Sequence[int]) -> str:
    """``[3, 5, 8]`` -> ``"add 3 5 8"``."""
    return "add " + " ".join(str(int(d)) for d in digits)


def parse_problem(text: str) -> list[int]:
    """Inverse of `problem_text`.

    Raises:
        ValueError: ``text`` is not a problem of this task.
    """
    match = _PROBLEM_RE.match(text.strip())
    if match is None:
        raise ValueError(f"not a synthetic-sum problem: {text!r}")
    return [int(d) for d in match.group(1).split()]


def gold_answer(digits: Sequence[int]) -> int:
    """The correct answer: the sum of the digits."""
    return int(sum(digits))


def num_carries(digits: Sequence[int]) -> int:
    """C, the steps whose units column overflows (the same in both orders: C = sum // 10)."""
    return gold_answer(digits) // 10


def extract_answer(completion: str) -> str | None:
    """The last ``\\boxed{N}`` of a completion (digits only), or None."""
    found = _BOXED_RE.findall(completion)
    return found[-1] if found else None


def render_trace(order: str, digits: Sequence[int], sums: Sequence[int]) -> str:
    """Writes a trace from the visited digits and the running sums actually written.

    Args:
        order: ``"left"`` or ``"right"``, the trace's first word.
        digits: The digits in the order they are added (n of them).
        sums: The n - 1 running sums written after each addition.

    Returns:
        ``"left: 3+5=08 +8=16 ... \\boxed{35}"`` (the box holds the last sum without
        a leading zero).
    """
    steps = [f"{digits[0]}+{digits[1]}={sums[0]:02d}"]
    steps += [f"+{d}={s:02d}" for d, s in zip(digits[2:], sums[1:])]
    return f"{order}: " + " ".join(steps) + f" \\boxed{{{sums[-1]}}}"


def clean_trace(digits: Sequence[int], order: str = LEFT) -> str:
    """The error-free trace of a problem in the given order."""
    seq = list(digits) if order == LEFT else list(digits)[::-1]
    return render_trace(order, seq, np.cumsum(seq)[1:].tolist())


def noisy_trace(digits: Sequence[int], spec: TaskSpec, rng: np.random.Generator) -> str:
    """Samples one training trace with the spec's order prior, dropped carries and slips.

    A slip changes the units digit by +-1 (never below 0 or above 99); later steps
    continue from whatever sum was written, like a human copying their own error.
    """
    order = LEFT if rng.random() < spec.p_left else RIGHT
    seq = list(digits) if order == LEFT else list(digits)[::-1]
    total, sums = seq[0], []
    for d in seq[1:]:
        carry = total % 10 + d >= 10
        total += d
        if order == LEFT and carry and rng.random() < spec.drop_carry:
            total -= 10
        if rng.random() < spec.slip:
            total += 1 if (total == 0 or (total < 99 and rng.random() < 0.5)) else -1
        sums.append(total)
    return render_trace(order, seq, sums)


def _digits(rng: np.random.Generator, spec: TaskSpec) -> tuple[int, ...]:
    return tuple(int(d) for d in rng.integers(0, 10, spec.num_digits))


def make_test_set(num: int, seed: int = 0, spec: TaskSpec = TaskSpec()) -> list[dict[str, Any]]:
    """Distinct unlabeled test problems (the gold answer is kept only for reporting).

    Args:
        num: Number of problems.
        seed: Seed; the same (num, seed, spec.num_digits) always gives the same set.
        spec: The task spec (only ``num_digits`` matters).

    Returns:
        Records ``{"problem", "answer", "id", "source"}``, ids ``"sum-test-00000"``...
    """
    if num > 10**spec.num_digits:
        raise ValueError(f"only {10**spec.num_digits} distinct problems exist")
    rng = np.random.default_rng([seed, _TEST_STREAM])
    seen: set[tuple[int, ...]] = set()
    records = []
    while len(records) < num:
        digits = _digits(rng, spec)
        if digits in seen:
            continue
        seen.add(digits)
        records.append(
            {
                PROBLEM: problem_text(digits),
                ANSWER: str(gold_answer(digits)),
                ID: f"sum-test-{len(records):05d}",
                SOURCE: SOURCE_NAME,
            }
        )
    return records


def make_heldout_split(
    num_train: int, num_heldout: int, seed: int = 0, spec: TaskSpec = TaskSpec()
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The unlabeled training set and a disjoint labelled held-out set (the inductive
    protocol, `ttrl_jax.data.heldout`).

    The first ``num_train`` problems of ``make_test_set(num_train + num_heldout, seed)``
    are exactly ``make_test_set(num_train, seed)`` (the generator draws in order), so
    adding a held-out set changes no training problem; the next ``num_heldout`` are the
    held-out set (ids ``sum-heldout-*``), distinct from them by construction.

    Returns:
        ``(train, heldout)`` records as `make_test_set`'s.
    """
    both = make_test_set(num_train + num_heldout, seed, spec)
    held = [dict(r, **{ID: f"sum-heldout-{i:05d}"}) for i, r in enumerate(both[num_train:])]
    return both[:num_train], held


def make_train_corpus(
    num: int,
    seed: int = 0,
    spec: TaskSpec = TaskSpec(),
    exclude: Iterable[str] = (),
) -> list[dict[str, Any]]:
    """Noisy solved problems for supervised pretraining.

    Args:
        num: Number of records.
        seed: Seed (deterministic given ``num``, ``seed``, ``spec`` and ``exclude``).
        spec: Task size and trace noise.
        exclude: Problem texts never to use (the test set's, so the base model has
            not seen the test problems).

    Returns:
        Records ``{"problem", "answer", "id", "source", "completion"}``: ``answer`` is
        the gold answer, ``completion`` the sampled (possibly wrong) trace.
    """
    banned = {tuple(parse_problem(p)) for p in exclude}
    if len(banned) >= 10**spec.num_digits:
        raise ValueError("every problem is excluded")
    rng = np.random.default_rng([seed, _TRAIN_STREAM])
    records = []
    while len(records) < num:
        digits = _digits(rng, spec)
        if digits in banned:
            continue
        records.append(
            {
                PROBLEM: problem_text(digits),
                ANSWER: str(gold_answer(digits)),
                ID: f"sum-train-{len(records):06d}",
                SOURCE: SOURCE_NAME,
                "completion": noisy_trace(digits, spec, rng),
            }
        )
    return records


_STEP_RE = re.compile(r"\+(\d)=(\d{1,3})")


def trace_stats(problem: str, completion: str) -> dict[str, float] | None:
    """Which solver a sampled completion imitates: its order and its dropped carries.

    Reads the running sums the completion wrote and compares each with the sum it
    should have written after the previous (possibly wrong) one: a step whose units
    column overflows is a *carry step*, and it *drops* the carry when the written sum
    is exactly 10 short. A slip (+-1) is neither.

    Args:
        problem: ``"add 3 5 8 ..."``.
        completion: The sampled text (``"left: 3+5=08 +8=16 ... \\boxed{..}"``).

    Returns:
        ``{"left": 1.0 | 0.0, "carry_steps": C, "dropped": D}``, or None when the
        completion does not follow the trace format (no order word or no steps).
    """
    text = completion.strip()
    order = LEFT if text.startswith(LEFT + ":") else RIGHT if text.startswith(RIGHT + ":") else None
    if order is None:
        return None
    try:
        digits = parse_problem(problem)
    except ValueError:
        return None
    seq = digits if order == LEFT else digits[::-1]
    steps = [(int(d), int(s)) for d, s in _STEP_RE.findall(text.split("\\boxed")[0])]
    if not steps:
        return None
    prev, carry_steps, dropped = seq[0], 0, 0
    for d, written in steps:
        if prev % 10 + d >= 10:
            carry_steps += 1
            dropped += int(written == prev + d - 10)
        prev = written
    return {"left": float(order == LEFT), "carry_steps": carry_steps, "dropped": dropped}


def rollout_stats(problems: Sequence[str], texts: Sequence[Sequence[str]]) -> dict[str, float]:
    """Batch summary of `trace_stats` over ``texts [B][M]`` (one problem per row).

    Returns:
        ``left_share`` (fraction of parsable samples in the careless left order),
        ``carry_drop_rate`` (dropped carries / carry steps, both orders) and
        ``parsed_share`` (fraction of samples in the trace format).
    """
    stats = [trace_stats(p, t) for p, row in zip(problems, texts) for t in row]
    ok = [s for s in stats if s is not None]
    steps = sum(s["carry_steps"] for s in ok)
    return {
        "left_share": float(np.mean([s["left"] for s in ok])) if ok else float("nan"),
        "carry_drop_rate": sum(s["dropped"] for s in ok) / steps if steps else float("nan"),
        "parsed_share": len(ok) / max(len(stats), 1),
    }
