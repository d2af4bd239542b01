"""The problem record schema shared by every dataset, and its validation.

A record is a plain ``dict`` with at least these keys:

* ``problem`` (``str``): the question shown to the model, never empty;
* ``answer`` (``str`` or ``None``): the reference answer, kept exactly as written
  in the source file (AIME's ``"025"`` stays ``"025"``, AMC's ``"142.0"`` stays
  ``"142.0"``), or ``None`` for unlabeled data (test-time RL needs no labels);
* ``id`` (``str``): unique within a dataset;
* ``source`` (``str``): where the record comes from (``"aime"``, a file name...).

Benchmarks may add ``options`` (GPQA: the four choices, in letter order A-D) and
``subject`` (MATH-500).

Records built by `make_record` are `Record` dicts: they compare, copy into JSON and
pickle as plain dicts, and carry their provenance ``where`` (``"file:row"``, rows
counted from 1) as an attribute, so later errors (a prompt too long) can name the
file and line rather than an id.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

PROBLEM = "problem"
ANSWER = "answer"
ID = "id"
SOURCE = "source"
REQUIRED_FIELDS = (PROBLEM, ANSWER, ID, SOURCE)


class Record(dict):
    """A record dict that knows where it comes from (``where``: ``"file:row"``)."""

    __slots__ = ("where",)

    def __init__(self, *args, where: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.where = where


def where_of(record: Mapping[str, Any]) -> str | None:
    """A record's ``"file:row"`` provenance, or None (a plain dict)."""
    return getattr(record, "where", None)


class DataError(ValueError):
    """A dataset file or one of its records is malformed or missing.

    The message is one line that names the culprit, e.g.
    ``data/train.jsonl:7: missing field 'question' (fields: answer, prompt)``.
    """


def _type_name(value: Any) -> str:
    return "null" if value is None else type(value).__name__


def _field(row: Mapping[str, Any], key: str, where: str) -> Any:
    if key not in row:
        fields = ", ".join(sorted(map(str, row))) or "none"
        raise DataError(f"{where}: missing field {key!r} (fields: {fields})")
    return row[key]


def _text(row: Mapping[str, Any], key: str, where: str) -> str:
    value = _field(row, key, where)
    if not isinstance(value, str):
        raise DataError(f"{where}: field {key!r} must be a string, got {_type_name(value)}")
    if not value.strip():
        raise DataError(f"{where}: field {key!r} is empty")
    return value


def _int_or_text(row: Mapping[str, Any], key: str, where: str) -> str:
    """Integers are exact, so they are accepted and written with ``str``."""
    value = _field(row, key, where)
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        raise DataError(
            f"{where}: field {key!r} is a float ({value!r}); store it as a "
            "string so its exact form is kept (e.g. '142.0' or '142')"
        )
    return _text(row, key, where)


def make_record(
    row: Any,
    *,
    where: str,
    default_id: str,
    default_source: str,
    problem_key: str = PROBLEM,
    answer_key: str | None = ANSWER,
    id_key: str | None = None,
    source_key: str | None = None,
) -> dict[str, Any]:
    """Validates one raw row and returns it as a record.

    Args:
        row: The decoded row; must be a mapping.
        where: ``"file:row"``, the prefix of any error message.
        default_id: The id used when ``id_key`` is ``None``.
        default_source: The source used when ``source_key`` is ``None``.
        problem_key: The row's field holding the problem text.
        answer_key: The row's field holding the reference answer (``str``, or
            ``int`` written with ``str``); ``None`` for unlabeled data, whose
            records then carry ``answer=None``.
        id_key: The row's field holding the id (``str`` or ``int``).
        source_key: The row's field holding the source name.

    Returns:
        A `Record` ``{"problem", "answer", "id", "source"}`` whose ``where`` is ``where``.

    Raises:
        DataError: A field is missing, null, empty or of the wrong type.
    """
    if not isinstance(row, Mapping):
        raise DataError(f"{where}: expected an object, got {_type_name(row)}")
    answer = None if answer_key is None else _int_or_text(row, answer_key, where)
    return Record(
        {
            PROBLEM: _text(row, problem_key, where),
            ANSWER: answer,
            ID: default_id if id_key is None else _int_or_text(row, id_key, where),
            SOURCE: default_source if source_key is None else _text(row, source_key, where),
        },
        where=where,
    )


def check_unique_ids(records: Sequence[Mapping[str, Any]], wheres: Sequence[str]) -> None:
    """Raises ``DataError`` at the first row that repeats an earlier row's id.

    Args:
        records: Records, each with an ``id``.
        wheres: The ``"file:row"`` of each record, for the message.
    """
    first_seen: dict[str, str] = {}
    for record, where in zip(records, wheres):
        previous = first_seen.setdefault(record[ID], where)
        if previous != where:
            raise DataError(f"{where}: duplicate id {record[ID]!r} (first at {previous})")
