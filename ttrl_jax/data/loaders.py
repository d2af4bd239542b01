"""Loading the user's own problem files: JSON, JSON Lines and parquet.

Every row becomes a record (see ``records.py``) or the load fails with one
``DataError`` line ``path:row: message``; no row is ever skipped. ``row`` counts
from 1: it is the line number in a JSON Lines file (blank lines are not rows but
are counted, so the number matches an editor's), and the position in the array
(JSON) or table (parquet) otherwise.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ttrl_jax.data.records import ANSWER, PROBLEM, DataError, check_unique_ids, make_record

FORMATS = {".json": "json", ".jsonl": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet"}


def _first_line(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0] if text else type(error).__name__


def _json_rows(path: Path) -> Iterator[tuple[int, Any]]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as e:
        hint = " (one object per line? use format='jsonl')" if e.msg == "Extra data" else ""
        raise DataError(f"{path}:{e.lineno}: invalid JSON: {e.msg}{hint}") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: expected a JSON array of objects, got {type(data).__name__}")
    yield from enumerate(data, start=1)


def _jsonl_rows(path: Path) -> Iterator[tuple[int, Any]]:
    with path.open(encoding="utf-8") as f:
        for line_no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                yield line_no, json.loads(line)
            except json.JSONDecodeError as e:
                raise DataError(
                    f"{path}:{line_no}: invalid JSON at column {e.colno}: {e.msg}"
                ) from None


def _parquet_rows(path: Path) -> Iterator[tuple[int, Any]]:
    import pyarrow as pa  # Only needed for parquet files.
    import pyarrow.parquet as pq

    try:
        rows = pq.read_table(path).to_pylist()
    except (pa.ArrowException, OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read parquet: {_first_line(e)}") from None
    yield from enumerate(rows, start=1)


_READERS = {"json": _json_rows, "jsonl": _jsonl_rows, "parquet": _parquet_rows}


def load_records(
    path: str | os.PathLike[str],
    *,
    problem_key: str = PROBLEM,
    answer_key: str | None = ANSWER,
    id_key: str | None = None,
    source_key: str | None = None,
    source: str | None = None,
    format: str | None = None,  # pylint: disable=redefined-builtin
) -> list[dict[str, Any]]:
    """Reads a user's problem file into validated records.

    Args:
        path: A ``.json`` file (an array of objects), a ``.jsonl`` / ``.ndjson``
            file (one object per line) or a ``.parquet`` file.
        problem_key: The field holding the problem text (a non-empty string).
        answer_key: The field holding the reference answer (a string, or an
            integer, written with ``str``; floats are refused because their
            exact form is lost). ``None`` for unlabeled data: every record's
            answer is then ``None``.
        id_key: The field holding a unique id (string or integer). ``None``
            numbers the records ``"0", "1", ...`` in file order.
        source_key: The field holding the record's source name. ``None`` uses
            ``source``.
        source: The source name when ``source_key`` is ``None``; defaults to
            the file's stem.
        format: ``"json"``, ``"jsonl"`` or ``"parquet"``; ``None`` picks it
            from the file's suffix.

    Returns:
        One record ``{"problem", "answer", "id", "source"}`` per row, in file
        order.

    Raises:
        DataError: ``path:row: message`` for the first malformed row (missing
            field, null, empty problem, wrong type, duplicate id); or
            ``path: message`` for a missing, unreadable or empty file.
    """
    path = Path(path)
    if format is None:
        format = FORMATS.get(path.suffix.lower())
        if format is None:
            known = ", ".join(FORMATS)
            raise DataError(f"{path}: unknown file type {path.suffix!r} (known: {known})")
    if format not in _READERS:
        raise DataError(f"{path}: unknown format {format!r} (known: {', '.join(_READERS)})")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    records, wheres = [], []
    for row_no, row in _READERS[format](path):
        where = f"{path}:{row_no}"
        records.append(
            make_record(
                row,
                where=where,
                default_id=str(len(records)),
                default_source=path.stem if source is None else source,
                problem_key=problem_key,
                answer_key=answer_key,
                id_key=id_key,
                source_key=source_key,
            )
        )
        wheres.append(where)
    if not records:
        raise DataError(f"{path}: no records")
    check_unique_ids(records, wheres)
    return records
