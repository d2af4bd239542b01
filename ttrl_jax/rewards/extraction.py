"""Final answers of math completions: what the trainer process decides, what it asks.

The ``math`` task reads a completion's final answer in this order:

1. the last ``\\boxed{...}`` / ``\\fbox{...}`` (:func:`answers.extract_boxed`, in this
   process; an unclosed last box means no answer);
2. math-verify's own extraction, in a grading worker
   (:mod:`~ttrl_jax.rewards.grading_worker`, operation ``"ext"``): LaTeX in ``$...$``,
   ``$$...$$``, ``\\(...\\)``, ``\\[...\\]`` and bare ``\\frac{p}{q}``, "final answer
   is" / "answer:" anchors first, then plain numbers (``1 000``, ``1,000``, ``.4``,
   ``50%``) and expressions (``10/9``), rightmost first;
3. when math-verify finds nothing: the text after the last "answer is" / "answer:",
   else the last number standing on its own (:func:`answers.extract_math_answer`; never
   digits glued to letters, ``_``, ``/`` or ``-`` as in ``x2``, ``run_3/out``, ``abc-5``).

Step 2 parses model text with sympy, so it never runs here: this module only decides
which completions need it (:func:`plan`) and finishes the answer from the worker's
reply (:func:`finish`). A completion that is a plain number, or one short formula
without prose and without delimiters (``6-5i``, ``(x+1)^2``), is its own answer,
decided here.

Gold answers written with math delimiters (``$...$``, ``\\(...\\)``, ``\\[...\\]``) go
through the same math-verify extraction, as math-verify parses a gold string; other
gold strings are read whole (:func:`answers.normalize_math`), as before.

Percentages: math-verify takes ``50\\%`` to equal both ``50`` and ``0.5``;
:func:`percent_alternative` gives the second reading for the fast path.
"""

from __future__ import annotations

import fractions
import re

from ttrl_jax.rewards import answers as answers_lib

__all__ = ["MAX_WORKER_CHARS", "finish", "gold_plan", "percent_alternative", "plan"]

# The worker reads at most the last MAX_WORKER_CHARS characters of a completion (from a
# line start, so that no ``$...$`` pair is cut): final answers sit at the end.
MAX_WORKER_CHARS = 4000
_PLAIN_NUMBER_RE = re.compile(r"-?\d{1,64}(?:\.\d{1,64})?")
_DELIMITERS = ("$", "\\(", "\\[")
_MAX_BARE_CHARS = 200
# a word of two or more letters that is not a LaTeX command's name
_FORMULA_MARK_RE = re.compile(r"[0-9\\]")  # a digit or a LaTeX command: not just "x"
_ENVIRONMENT_RE = re.compile(r"\\(?:begin|end)\{[A-Za-z*]{1,20}\}")
_WORD_RE = re.compile(r"(?<![\\A-Za-z])[A-Za-z]{2,}")
_PERCENT_RE = re.compile(r"(?:\\?%|\\text\{\s*\\?%\s*\}|\s*percent)\s*$")


def _tail(text: str) -> str:
    if len(text) <= MAX_WORKER_CHARS:
        return text
    tail = text[-MAX_WORKER_CHARS:]
    cut = tail.find("\n")
    return tail[cut + 1 :] if 0 <= cut < len(tail) - 1 else tail


def plan(completion: str | bytes | None) -> tuple[str | None, str | None]:
    """Splits extraction between this process and a worker.

    Returns:
        ``(answer, None)`` when decided here (``answer`` is the raw answer text or
        None), or ``(None, text)`` when ``text`` must go through math-verify's
        extraction in a worker (then call :func:`finish`).
    """
    text = answers_lib.clean_text(completion)
    if not text.strip():
        return None, None
    if answers_lib.has_box(text):
        return answers_lib.extract_boxed(text), None
    stripped = text.strip()
    if _PLAIN_NUMBER_RE.fullmatch(stripped) or _is_bare_expression(stripped):
        return stripped, None
    return None, _tail(text)


def _is_bare_expression(text: str) -> bool:
    """A short completion that is one formula (with a digit or a LaTeX command) and no
    prose, e.g. ``6-5i``, ``(x+1)^2``, ``\\begin{pmatrix}1\\\\2\\end{pmatrix}``: the
    whole of it is the answer (math-verify would only see a number or a ``\\frac``)."""
    return (
        len(text) <= _MAX_BARE_CHARS
        and "\n" not in text
        and not any(d in text for d in _DELIMITERS)
        and _FORMULA_MARK_RE.search(text) is not None
        and _WORD_RE.search(_ENVIRONMENT_RE.sub("", text)) is None
    )


def finish(completion: str | bytes | None, extracted: str | None) -> str | None:
    """Raw answer of a completion that :func:`plan` sent to a worker.

    Args:
        completion: the completion.
        extracted: the worker's math-verify extraction (None: nothing parsed, or the
            worker ran out of time).
    """
    if extracted:
        return extracted
    return answers_lib.extract_math_answer(completion)


def gold_plan(gold: str | bytes | None) -> tuple[str | None, str | None]:
    """Like :func:`plan` for a gold answer: ``(None, text)`` when math-verify must read
    it (it is written with math delimiters), else ``(gold, None)``."""
    g = answers_lib.clean_text(gold).strip()
    if not g:
        return None, None
    if any(d in g for d in _DELIMITERS) and not answers_lib.has_box(g):
        return None, g[:MAX_WORKER_CHARS]
    return g, None


def percent_alternative(raw: str | None) -> str | None:
    """For ``50%`` / ``50\\%`` / ``$50\\%$``: the canonical ``0.5`` reading, else None."""
    if not raw or "%" not in raw and "percent" not in raw:
        return None
    s = raw.strip().strip("$").strip()
    m = _PERCENT_RE.search(s)
    if m is None:
        return None
    number = answers_lib.normalize_math(s[: m.start()])
    if number is None or not _PLAIN_NUMBER_RE.fullmatch(number):
        return None
    value = fractions.Fraction(number) / 100
    if value.denominator == 1:
        return str(value.numerator)
    sign = "-" if value < 0 else ""
    return f"{sign}\\frac{{{abs(value.numerator)}}}{{{value.denominator}}}"
