"""The generic loader: every malformed row fails as `file:row: message`."""

import json
import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from ttrl_jax.data import DataError, load_records

GOOD = [
    {"question": "1+1?", "label": "2", "uid": "a"},
    {"question": "2+2?", "label": 4, "uid": 7},
    {"question": "3+3?", "label": "06", "uid": "c"},
]


def write(tmp_path, rows, fmt):
    """Writes rows as JSON (array), JSONL (one per line) or parquet."""
    path = tmp_path / f"data.{fmt}"
    if fmt == "json":
        path.write_text(json.dumps(rows, indent=2), encoding="utf-8")
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    else:
        pq.write_table(pa.Table.from_pylist(rows), path)
    return path


def load(path, **kwargs):
    return load_records(path, problem_key="question", answer_key="label", id_key="uid", **kwargs)


def expect(path, row, message):
    return pytest.raises(DataError, match="^" + re.escape(f"{path}:{row}: {message}"))


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
def test_good_file_with_custom_keys(tmp_path, fmt):
    records = load(write(tmp_path, GOOD, fmt), source="mine")
    assert records == [
        {"problem": "1+1?", "answer": "2", "id": "a", "source": "mine"},
        {"problem": "2+2?", "answer": "4", "id": "7", "source": "mine"},
        {"problem": "3+3?", "answer": "06", "id": "c", "source": "mine"},
    ]


def test_parquet_defaults_and_unlabeled(tmp_path):
    rows = [{"problem": "x?", "answer": "1"}, {"problem": "y?", "answer": "2"}]
    path = write(tmp_path, rows, "parquet")
    records = load_records(path)
    assert [r["id"] for r in records] == ["0", "1"]
    assert [r["answer"] for r in records] == ["1", "2"]
    assert {r["source"] for r in records} == {"data"}  # The file's stem.
    assert [r["answer"] for r in load_records(path, answer_key=None)] == [None, None]


# (row to break, change, expected message). Rows count from 1.
CASES = [
    (2, lambda r: r.pop("question"), "missing field 'question' (fields: label, uid)"),
    (3, lambda r: r.update(question="  \n"), "field 'question' is empty"),
    (1, lambda r: r.update(question=12), "field 'question' must be a string, got int"),
    (2, lambda r: r.update(label=None), "field 'label' must be a string, got null"),
    (3, lambda r: r.update(label=["6"]), "field 'label' must be a string, got list"),
    (2, lambda r: r.update(label=4.0), "field 'label' is a float (4.0)"),
    (3, lambda r: r.update(uid="a"), "duplicate id 'a' (first at "),
]


@pytest.mark.parametrize("fmt", ["json", "jsonl"])
@pytest.mark.parametrize("row, change, message", CASES)
def test_malformed_row_names_file_and_row(tmp_path, fmt, row, change, message):
    rows = [dict(r) for r in GOOD]
    change(rows[row - 1])
    path = write(tmp_path, rows, fmt)
    with expect(path, row, message):
        load(path)


def columns(**cols):
    """Rows from columns (a parquet column holds one type); ``None`` drops one."""
    base = {"question": ["a?", "b?", "c?"], "label": ["1", "2", "3"], "uid": ["x", "y", "z"]}
    base.update(cols)
    base = {k: v for k, v in base.items() if v is not None}
    return [dict(zip(base, values)) for values in zip(*base.values())]


PARQUET_CASES = [
    (columns(question=None), 1, "missing field 'question' (fields: label, uid)"),
    (columns(question=["a?", "", "c?"]), 2, "field 'question' is empty"),
    (columns(question=[1.5, 2.5, 3.5]), 1, "field 'question' must be a string, got float"),
    (columns(label=["1", None, "3"]), 2, "field 'label' must be a string, got null"),
    (columns(label=[["1"], ["2"], ["3"]]), 1, "field 'label' must be a string, got list"),
    (columns(label=[1.0, 2.0, 3.0]), 1, "field 'label' is a float (1.0)"),
    (columns(uid=["x", "y", "x"]), 3, "duplicate id 'x' (first at "),
]


@pytest.mark.parametrize("rows, row, message", PARQUET_CASES)
def test_malformed_parquet_row(tmp_path, rows, row, message):
    path = write(tmp_path, rows, "parquet")
    with expect(path, row, message):
        load(path)


def test_parquet_integer_columns_are_exact(tmp_path):
    path = write(tmp_path, columns(label=[1, 25, 3], uid=[10, 11, 12]), "parquet")
    records = load(path)
    assert [(r["answer"], r["id"]) for r in records] == [("1", "10"), ("25", "11"), ("3", "12")]


def test_jsonl_reports_line_numbers_and_bad_json(tmp_path):
    path = tmp_path / "d.jsonl"
    lines = [json.dumps(GOOD[0]), "", json.dumps(GOOD[1]), '{"question": "x", "label": "1",}']
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with expect(path, 4, "invalid JSON at column"):
        load(path)
    lines[3] = json.dumps({"label": "1", "uid": "z"})
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with expect(path, 4, "missing field 'question'"):
        load(path)
    lines[3] = "[1, 2]"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    with expect(path, 4, "expected an object, got list"):
        load(path)


def test_file_level_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope.json: no such file$"):
        load_records(tmp_path / "nope.json")
    (tmp_path / "d.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"d.csv: unknown file type '.csv'"):
        load_records(tmp_path / "d.csv")
    (tmp_path / "obj.json").write_text('{"problem": "x"}')
    with pytest.raises(DataError, match=r"obj.json: expected a JSON array of objects, got dict"):
        load_records(tmp_path / "obj.json")
    (tmp_path / "lines.json").write_text('{"problem": "x"}\n{"problem": "y"}\n')
    with pytest.raises(DataError, match=r"lines.json:2: invalid JSON: Extra data .*format='jsonl'"):
        load_records(tmp_path / "lines.json")
    (tmp_path / "empty.jsonl").write_text("\n\n")
    with pytest.raises(DataError, match=r"empty.jsonl: no records$"):
        load_records(tmp_path / "empty.jsonl")
    (tmp_path / "bad.parquet").write_bytes(b"not parquet")
    with pytest.raises(DataError, match=r"bad.parquet: cannot read parquet: "):
        load_records(tmp_path / "bad.parquet")
