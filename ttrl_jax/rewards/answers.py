"""Answer extraction and normalisation to canonical strings; the task registry.

Everything here is plain string processing (regular expressions that run in linear
time and explicit brace counting); no model text is ever parsed as code. The
canonical strings are what voting groups exactly and what the grading pool compares
semantically.

In-process extraction for the ``math`` task (:func:`extract_math_answer`,
``Task.extract``), in order of priority; grading and :func:`extract_answers` put
math-verify's own extraction (run in a grading worker) between 1 and 2, see
:mod:`ttrl_jax.rewards.extraction`:

1. the content of the **last** ``\\boxed{...}`` / ``\\fbox{...}`` (brace-matched, escaped
   braces ``\\{`` ``\\}`` ignored), or the token after ``\\boxed 5``. When the last box is
   never closed (a truncated completion) there is no answer.
2. the text after the last "answer is" / "answer:" (up to the end of the line or
   sentence; the content of ``$...$`` if it starts with one).
3. the last number in the text (``-3``, ``1,000``, ``2.5``, ``3/4``) that stands on its
   own, between spaces, sentence marks, ``=``, ``$``, ``*`` or parentheses: digits glued
   to letters, ``_``, ``/``, ``-`` or brackets (identifiers, paths such as
   ``pytest-0/run0``, code such as ``a[0]``) are not numbers.

Multiple choice (``multiple_choice``): only **upper-case** letters are options. The
English article "a" and GPQA's lower-case sub-item labels (``a)``, ``b)``) are never
read as option A/B (the TTRL reference upper-cases the whole response first and does).
"""

from __future__ import annotations

import dataclasses
import functools
import importlib
import re
from collections.abc import Callable, Sequence

__all__ = [
    "TASKS",
    "Task",
    "clean_text",
    "extract_answers",
    "extract_boxed",
    "extract_choice",
    "extract_math_answer",
    "get_task",
    "has_box",
    "normalize_choice",
    "normalize_math",
    "register_task",
]

# ---------------------------------------------------------------------------------
# Cleaning
# ---------------------------------------------------------------------------------

_CONTROL_RE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")


def clean_text(text: str | bytes | None) -> str:
    """Makes untrusted text safe to process: valid UTF-8, no NUL/control characters.

    Bytes are decoded as UTF-8 with replacement; lone surrogates (from
    ``surrogateescape`` decoding of invalid UTF-8) become ``?``.
    """
    if text is None:
        return ""
    if isinstance(text, (bytes, bytearray)):
        text = bytes(text).decode("utf-8", "replace")
    elif not isinstance(text, str):
        text = str(text)
    if not text.isascii():
        text = text.encode("utf-8", "replace").decode("utf-8")
    return _CONTROL_RE.sub("", text)


# ---------------------------------------------------------------------------------
# Extraction (math)
# ---------------------------------------------------------------------------------

_BOX_RE = re.compile(r"\\(?:boxed|fbox)(?![A-Za-z])")
_BRACE_RE = re.compile(r"\\.|[{}]", re.DOTALL)
_ANSWER_IS_RE = re.compile(r"(?i)answer\s*+(?:is|:)\s*+:?\s*+")
# a number that stands on its own: after the start, a space or one of = : $ * ( ~ ' " and
# before the end, a space, a sentence mark or one of ) $ * ' " % °; so never digits glued
# to letters, "_", "/", "-", brackets or other code ("pytest-0/run0", "x_1", "a[0]")
_NUMBER_RE = re.compile(
    r"(?<![^\s=:$*(~'\"])-?\d+(?:,\d{3})*(?:\.\d+)?(?:/\d+)?"
    r"(?=$|[\s,;:!?)$*'\"%\u00b0]|\.(?!\d))"
)
_TOKEN_RE = re.compile(r"[^\s$]*")
_MAX_TAIL = 1000


def _match_brace(text: str, open_pos: int) -> int:
    """Index of the ``}`` closing the ``{`` at ``open_pos``, or -1 (linear time)."""
    depth = 0
    for m in _BRACE_RE.finditer(text, open_pos):
        tok = m.group()
        if tok == "{":
            depth += 1
        elif tok == "}":
            depth -= 1
            if depth == 0:
                return m.start()
    return -1


def has_box(text: str) -> bool:
    """Whether ``text`` contains a ``\\boxed`` / ``\\fbox`` command."""
    return _BOX_RE.search(text) is not None


def extract_boxed(text: str) -> str | None:
    """Content of the last ``\\boxed{...}`` / ``\\fbox{...}`` / ``\\boxed 5``, else None."""
    last = None
    for last in _BOX_RE.finditer(text):
        pass
    if last is None:
        return None
    i, n = last.end(), len(text)
    j = i
    while j < n and text[j] in " \t":
        j += 1
    if j < n and text[j] == "{":
        end = _match_brace(text, j)
        return None if end < 0 else text[j + 1 : end].strip()
    if j == i:  # "\boxed5" is not a box
        return None
    return _TOKEN_RE.match(text, j).group().rstrip(".,;") or None


def _answer_is(text: str) -> str | None:
    last = None
    for last in _ANSWER_IS_RE.finditer(text):
        pass
    if last is None:
        return None
    tail = text[last.end() : last.end() + _MAX_TAIL]
    for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
        if tail.startswith(open_):
            end = tail.find(close, len(open_))
            if end > 0:
                return tail[len(open_) : end].strip() or None
    tail = tail.split("\n", 1)[0]
    tail = re.split(r"\.(?:\s|$)", tail, maxsplit=1)[0]
    tail = tail.strip().rstrip(".").strip().strip("*").strip()
    return tail or None


def extract_math_answer(completion: str | bytes | None) -> str | None:
    """Raw answer text of a completion: last box, else "answer is", else last number."""
    text = clean_text(completion)
    if not text:
        return None
    if _BOX_RE.search(text):
        return extract_boxed(text)
    found = _answer_is(text)
    if found is not None:
        boxed = extract_boxed(found)
        return boxed if boxed is not None else found
    last = None
    for last in _NUMBER_RE.finditer(text):
        pass
    return None if last is None else last.group()


# ---------------------------------------------------------------------------------
# Normalisation (math)
# ---------------------------------------------------------------------------------

_UNIT_WORDS = (
    "units?|square|sq|cubic|cm|mm|km|centimeters?|millimeters?|kilometers?|meters?|"
    "inch(?:es)?|feet|foot|ft|yards?|miles?|mph|seconds?|sec|minutes?|mins?|hours?|"
    "hrs?|days?|weeks?|months?|years?|degrees?|dollars?|cents?|pounds?|lbs?|ounces?|"
    "oz|grams?|kg|kilograms?|liters?|litres?|ml|gallons?|calories|points?|percent|"
    "people|persons?|students?|cookies|marbles|apples|coins?|ways?|times"
)
_TRAILING_UNIT_RE = re.compile(rf"(?<=[\d}}])\s*+(?:{_UNIT_WORDS})(?:\^\{{?[23]\}}?)?\s*+$")
_TEXT_RE = re.compile(r"\\(?:text|textbf|textrm|textit|textnormal|mbox|mathrm)\s*\{([^{}]*)\}")
_UNIT_TEXT_RE = re.compile(r"[A-Za-z][A-Za-z ./^0-9]*")
_LEFT_RIGHT_RE = re.compile(
    r"\\(?:left|right)(?:\.|(?![A-Za-z]))|\\(?:big|Big|bigg|Bigg)[lr]?(?![A-Za-z])"
)
_SPACING_RE = re.compile(r"\\\\|\\[,;:! ]|\\q?quad(?![A-Za-z])|\\displaystyle(?![A-Za-z])|~")
_DEGREE_RE = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|\\circ(?![A-Za-z])|°|\\degree(?![A-Za-z])")
_PERCENT_RE = re.compile(r"\\?%")
_FRAC_CMD_RE = re.compile(r"\\[dt]frac(?![A-Za-z])")
_VARNOTHING_RE = re.compile(r"\\varnothing(?![A-Za-z])")
_BINOM_CMD_RE = re.compile(r"\\[dt]binom(?![A-Za-z])")
_FRAC_DIGITS_RE = re.compile(r"\\frac\s*(\d)\s*(\d)")
_FRAC_DIGIT_BRACE_RE = re.compile(r"\\frac\s*(\d)\s*\{")
_FRAC_BRACE_DIGIT_RE = re.compile(r"\\frac\s*\{([^{}]*)\}\s*(\d)")
_SQRT_DIGIT_RE = re.compile(r"\\sqrt\s*(\d)")
_VAR_PREFIX_RE = re.compile(r"^[A-Za-z](?:_\{?[A-Za-z0-9]+\}?)?\s*=\s*(?=\S)")
_THOUSANDS_RE = re.compile(r"-?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_NUM_TOKEN_RE = re.compile(r"(-?)(\d*)(?:\.(\d*))?")
_SLASH_FRAC_RE = re.compile(r"(-?)(\d+)/(\d+)")
_SPACE_RE = re.compile(r"\s+")


def _canon_number(tok: str) -> str | None:
    """``025``→``25``, ``142.0``→``142``, ``.5``→``0.5``, ``-0``→``0``; None if not a number."""
    m = _NUM_TOKEN_RE.fullmatch(tok)
    if m is None or not (m.group(2) or m.group(3)):
        return None
    sign, whole, frac = m.group(1), m.group(2).lstrip("0") or "0", (m.group(3) or "").rstrip("0")
    out = whole + ("." + frac if frac else "")
    return out if out == "0" else sign + out


def _strip_outer_braces(s: str) -> str:
    for _ in range(3):  # bounded: a 10^4-deep tower of braces stays linear time
        if len(s) >= 2 and s[0] == "{" and _match_brace(s, 0) == len(s) - 1:
            s = s[1:-1].strip()
        else:
            break
    return s


def _unwrap_text(s: str) -> str:
    """Unwraps ``\\text{...}``; drops it when it is a trailing unit after a quantity."""

    def repl(m: re.Match) -> str:
        content = m.group(1).strip()
        before = s[: m.start()].strip()
        after = s[m.end() :].strip()
        unit = len(content) > 1 and _UNIT_TEXT_RE.fullmatch(content)
        if unit and not after and re.search(r"[\d}]\s*$", before):
            return ""
        return content

    return _TEXT_RE.sub(repl, s)


def _squash_spaces(s: str) -> str:
    """Removes whitespace except a single space between two letters (``\\pi r``)."""

    def repl(m: re.Match) -> str:
        a = s[m.start() - 1] if m.start() > 0 else ""
        b = s[m.end()] if m.end() < len(s) else ""
        return " " if a.isalpha() and b.isalpha() else ""

    return _SPACE_RE.sub(repl, s)


def normalize_math(answer: str | bytes | None) -> str | None:
    """Canonical string of a math answer, for exact voting and as grading input.

    Rewrites (each a linear-time pass): math delimiters ``$ \\( \\)`` removed;
    ``\\dfrac``/``\\tfrac``→``\\frac``; ``\\varnothing``→``\\emptyset``;
    ``\\frac12``→``\\frac{1}{2}``; ``\\sqrt2``→``\\sqrt{2}``;
    ``\\left``/``\\right`` and spacing commands removed; ``^\\circ`` and ``\\%`` removed;
    ``\\text{...}`` unwrapped, or dropped when it is a trailing unit (``5\\text{ cm}``→``5``);
    trailing unit words after a number dropped (never single letters, so ``(a,b)`` stays);
    a leading ``x=`` dropped; thousands separators removed (``1,000``, ``1{,}000``); numbers
    canonical (``025``→``25``, ``142.0``→``142``) also inside comma lists;
    ``1/2``→``\\frac{1}{2}``; whitespace removed except between two letters.

    Returns:
        The canonical string, or None for an empty answer.
    """
    if answer is None:
        return None
    s = clean_text(answer).strip()
    for _ in range(2):
        for open_, close in (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]")):
            if s.startswith(open_) and s.endswith(close) and len(s) >= len(open_) + len(close):
                s = s[len(open_) : len(s) - len(close)].strip()
    if s.startswith(("\\boxed{", "\\fbox{")) and _match_brace(s, 6) == len(s) - 1:
        s = s[7:-1].strip()
    s = s.replace("\\$", "").replace("$", "")
    s = _FRAC_CMD_RE.sub(r"\\frac", s)
    s = _VARNOTHING_RE.sub(r"\\emptyset", s)
    s = _BINOM_CMD_RE.sub(r"\\binom", s)
    s = _LEFT_RIGHT_RE.sub("", s)
    s = s.replace("{,}", "")
    s = _SPACING_RE.sub(lambda m: m.group() if m.group() == "\\\\" else " ", s)
    s = _DEGREE_RE.sub("", s)
    s = _PERCENT_RE.sub("", s)
    s = _unwrap_text(s).strip()
    s = _TRAILING_UNIT_RE.sub("", s).strip()
    s = _VAR_PREFIX_RE.sub("", s) if s.count("=") == 1 else s
    s = _FRAC_DIGITS_RE.sub(r"\\frac{\1}{\2}", s)
    s = _FRAC_DIGIT_BRACE_RE.sub(r"\\frac{\1}{", s)
    s = _FRAC_BRACE_DIGIT_RE.sub(r"\\frac{\1}{\2}", s)
    s = _SQRT_DIGIT_RE.sub(r"\\sqrt{\1}", s)
    s = _squash_spaces(s)
    s = _strip_outer_braces(s)
    s = s.rstrip(".")
    if _THOUSANDS_RE.fullmatch(s):
        s = s.replace(",", "")
    parts = s.split(",")
    canon = [_canon_number(p) for p in parts]
    if all(c is not None for c in canon):
        s = ",".join(canon)
    m = _SLASH_FRAC_RE.fullmatch(s)
    if m:
        s = f"{m.group(1)}\\frac{{{m.group(2)}}}{{{m.group(3)}}}"
    return s or None


# ---------------------------------------------------------------------------------
# Multiple choice
# ---------------------------------------------------------------------------------


@functools.lru_cache(maxsize=16)
def _choice_patterns(letters: str) -> tuple[re.Pattern, re.Pattern, re.Pattern]:
    cls = "[" + re.escape(letters) + "]"
    anchored = re.compile(
        r"(?i:answer|choice|option)\s*+(?i:is|:)?\s*+:?\s*+(?i:option|choice)?\s*+"
        r"[(\[*{]*+\s*+(" + cls + r")(?![\w'])"
    )
    paren = re.compile(r"\((" + cls + r")\)")
    bare = re.compile(r"(?<![\w\\])(" + cls + r")(?![\w'])(?!\s++[a-z])")
    return anchored, paren, bare


def normalize_choice(answer: str | bytes | None, letters: str = "ABCD") -> str | None:
    """``"(C)"``, ``"C."``, ``"\\text{C}"``, ``"Option C"`` → ``"C"``; None if not a letter."""
    if answer is None:
        return None
    s = _unwrap_text(clean_text(answer)).strip().strip("$").strip()
    s = re.sub(r"^(?i:option|choice)\s*", "", s).strip("()[]{}*. :").strip()
    return s if len(s) == 1 and s in letters else None


def extract_choice(completion: str | bytes | None, letters: str = "ABCD") -> str | None:
    """Option letter of a multiple-choice completion, or None.

    Priority: last ``\\boxed{}`` holding a letter; last "answer is X" / "answer: (X)";
    last ``(X)``; last bare capital letter that is not followed by a lower-case word
    (so the capitalised article in "A planet ..." is skipped). Lower-case letters are
    never options.
    """
    text = clean_text(completion)
    if not text:
        return None
    boxed = extract_boxed(text) if _BOX_RE.search(text) else None
    if boxed is not None:
        letter = normalize_choice(boxed, letters)
        if letter is not None:
            return letter
    for pattern in _choice_patterns(letters):
        last = None
        for last in pattern.finditer(text):
            pass
        if last is not None:
            return last.group(1)
    return None


# ---------------------------------------------------------------------------------
# Task registry
# ---------------------------------------------------------------------------------

Equivalence = str | Callable[[str, str], bool]


@dataclasses.dataclass(frozen=True)
class Task:
    """How to read answers of one kind of problem.

    Attributes:
        name: registry name.
        extract: completion text -> canonical answer string, or None (no answer).
        normalize: gold label -> canonical answer string.
        equivalence: ``"math"`` (semantic, graded by the worker pool), ``"exact"``
            (canonical strings equal), or a trusted callable ``(gold, pred) -> bool``
            run in the calling process.
    """

    name: str
    extract: Callable[[str], str | None]
    normalize: Callable[[str], str | None]
    equivalence: Equivalence = "exact"


def _extract_math(completion: str) -> str | None:
    return normalize_math(extract_math_answer(completion))


def _normalize_label(label) -> str | None:
    s = clean_text(label).strip()
    return s or None


TASKS: dict[str, Task] = {
    "math": Task("math", _extract_math, normalize_math, "math"),
    "multiple_choice": Task("multiple_choice", extract_choice, normalize_choice, "exact"),
}


def register_task(task: Task, *, overwrite: bool = False) -> Task:
    """Adds ``task`` to the registry under ``task.name``."""
    if task.name in TASKS and not overwrite:
        raise ValueError(f"task {task.name!r} is already registered")
    TASKS[task.name] = task
    return task


def get_task(spec: str | Task) -> Task:
    """Resolves a task name, a ``"module:attr"`` string, or a Task.

    ``module:attr`` may name a :class:`Task`, or a plain callable ``completion ->
    answer | None`` (then answers are compared exactly after stripping whitespace),
    e.g. ``"my_pkg.labels:extract_sentiment"`` for a classification label set.
    """
    if isinstance(spec, Task):
        return spec
    if not isinstance(spec, str):
        raise TypeError(f"task must be a name, 'module:function' or Task, got {spec!r}")
    if spec in TASKS:
        return TASKS[spec]
    if ":" not in spec:
        raise ValueError(
            f"unknown task {spec!r}; known tasks: {sorted(TASKS)}, "
            "or give your own as 'package.module:function'"
        )
    module_name, _, attr = spec.partition(":")
    try:
        obj = getattr(importlib.import_module(module_name), attr)
    except (ImportError, AttributeError) as e:
        raise ValueError(f"cannot load task {spec!r}: {e}") from e
    if isinstance(obj, Task):
        return obj
    if callable(obj):

        def extract(completion, _fn=obj):
            return _normalize_label(_fn(clean_text(completion)))

        return Task(spec, extract, _normalize_label, "exact")
    raise ValueError(f"task {spec!r} is neither a Task nor a callable: {obj!r}")


def extract_answers(
    completions: Sequence[Sequence[str | bytes | None]],
    task: str | Task = "math",
    *,
    pool=None,
) -> list[list[str | None]]:
    """Canonical answers of ``[B][M]`` completions (None = no answer).

    For the built-in ``math`` task the answers are the ones grading uses
    (:meth:`grading.GradingPool.extract_many`: completions without a box go through
    math-verify's extraction on the grading workers, ``pool`` or the default pool), so
    a sample's vote and its grade agree. ``Task.extract`` alone is the in-process
    approximation (box, "answer is", last number).
    """
    t = get_task(task)
    if t is TASKS["math"]:
        from ttrl_jax.rewards import grading  # lazy: grading imports this module

        flat = [c for row in completions for c in row]
        if not flat:
            return [[] for _ in completions]
        got = (pool or grading.default_pool()).extract_many(flat)
        out, k = [], 0
        for row in completions:
            out.append(got[k : k + len(row)])
            k += len(row)
        return out
    return [[t.extract(c) if c is not None else None for c in row] for row in completions]
