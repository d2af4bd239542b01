"""Answer equivalence decided from the strings alone (no sympy, no worker process).

Identical canonical strings; two plain numbers (integers, decimals, ``\\frac{p}{q}``,
``p/q``) compared exactly as rationals (decisive when equal, or when both are
integers/fractions; a decimal against a fraction that differs goes to math-verify,
which rounds decimals); two plain words compared case-insensitively (math-verify would
read ``Evelyn`` as the product of its letters). Only regular expressions and
:class:`fractions.Fraction` on validated digit strings run here.
"""

from __future__ import annotations

import fractions
import functools
import re

__all__ = ["fast_equivalent"]

# ---------------------------------------------------------------------------------

_INT_RE = re.compile(r"-?\d{1,64}")
_DEC_RE = re.compile(r"-?\d{0,64}\.\d{1,64}")
_FRAC_RE = re.compile(r"(-?)\\frac\{(-?\d{1,64})\}\{(\d{1,64})\}|(-?\d{1,64})/(\d{1,64})")
_WORDS_RE = re.compile(r"[A-Za-z]{2,}(?: [A-Za-z]+)*")


def _as_rational(s: str) -> tuple[fractions.Fraction, bool] | None:
    """(value, exact) for a plain number; ``exact`` is False for decimals."""
    return _parse_rational(s) if len(s) <= 140 else None


@functools.lru_cache(maxsize=1 << 14)
def _parse_rational(s: str) -> tuple[fractions.Fraction, bool] | None:
    if _INT_RE.fullmatch(s):
        return fractions.Fraction(int(s)), True
    if _DEC_RE.fullmatch(s):
        return fractions.Fraction(s), False
    m = _FRAC_RE.fullmatch(s)
    if m:
        if m.group(2) is not None:
            num, den = int(m.group(2)), int(m.group(3))
            num = -num if m.group(1) else num
        else:
            num, den = int(m.group(4)), int(m.group(5))
        if den == 0:
            return None
        return fractions.Fraction(num, den), True
    return None


def fast_equivalent(a: str, b: str) -> bool | None:
    """Decides equivalence of two canonical answers without sympy, or returns None.

    Args:
        a: canonical answer (see :func:`answers.normalize_math`).
        b: canonical answer.

    Returns:
        True/False when decidable from the strings alone, None when math-verify is needed.
    """
    if a == b:
        return True
    ra, rb = _as_rational(a), _as_rational(b)
    if ra is not None and rb is not None:
        if ra[0] == rb[0]:
            return True
        if ra[1] and rb[1]:
            return False
        return None
    wa, wb = _WORDS_RE.fullmatch(a), _WORDS_RE.fullmatch(b)
    if wa and wb:
        return a.lower() == b.lower()
    if (wa and rb is not None) or (wb and ra is not None):
        return False
    return None
