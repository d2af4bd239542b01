"""The benchmark TFDS builders, against the shared copies of the TTRL files."""

import collections
import functools
import http.server
import json
import re
import subprocess
import sys
import textwrap
import threading
from pathlib import Path

import pytest
import tensorflow_datasets as tfds

from ttrl_jax.data import SPECS, DataError, gpqa_options, load_benchmark

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data" / "benchmarks"
COUNTS = {"aime24": 30, "amc23": 83, "math500": 500, "gpqa_diamond": 198}


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """All four benchmarks, built once from the shared folder."""
    data_dir = tmp_path_factory.mktemp("tfds")
    records = {name: load_benchmark(name, data_dir, source_dir=SHARED) for name in COUNTS}
    return data_dir, records


def _source_rows(name):
    return json.loads((SHARED / SPECS[name].folder / "test.json").read_text(encoding="utf-8"))


@pytest.mark.parametrize("name", sorted(COUNTS))
def test_builder_keeps_every_row_exactly(built, name):
    _, records = built
    rows = _source_rows(name)
    assert len(records[name]) == COUNTS[name] == len(rows)
    for record, row in zip(records[name], rows):  # Same order, same strings.
        assert (record["problem"], record["answer"], record["source"], record["id"]) == (
            row["prompt"],
            row["answer"],
            row["source"],
            row["id"],
        )
        assert all(type(record[k]) is str for k in ("problem", "answer", "source", "id"))


def test_known_records(built):
    _, r = built
    assert r["aime24"][0]["problem"].startswith("Every morning Aya goes for a $9$-kilometer")
    assert (r["aime24"][0]["answer"], r["aime24"][1]["answer"]) == ("204", "025")
    assert r["amc23"][0]["answer"] == "142.0" and "Irreducible fraction" in r["amc23"][0]["problem"]
    math0 = r["math500"][0]
    assert math0["id"] == "test/precalculus/807.json"
    assert math0["answer"] == r"\left( 3, \frac{\pi}{2} \right)"
    assert math0["subject"] == "precalculus"
    subjects = collections.Counter(x["subject"] for x in r["math500"])
    assert subjects["algebra"] == 124 and subjects["counting_and_probability"] == 38
    assert len(subjects) == 7
    gpqa0 = r["gpqa_diamond"][0]
    assert gpqa0["answer"] == "D" and gpqa0["source"] == "gpqa_diamond"
    assert gpqa0["options"] == ["d", "a", "b", "c"]
    assert all(len(x["options"]) == 4 and all(x["options"]) for x in r["gpqa_diamond"])
    assert {x["answer"] for x in r["gpqa_diamond"]} == set("ABCD")
    assert "options" not in r["aime24"][0] and "subject" not in r["amc23"][0]


def test_tfds_reads_the_array_record_files_back(built):
    data_dir, records = built
    version_dir = data_dir / "aime24" / "1.0.0"
    assert sorted(p.name for p in version_dir.glob("*.array_record*")) == [
        "aime24-test.array_record-00000-of-00001"
    ]
    source = tfds.data_source("aime24", split="test", data_dir=data_dir, download=False)
    assert len(source) == 30 and source[1]["answer"] == b"025"
    # Readable without our code registered, straight from the directory.
    builder = tfds.builder_from_directory(data_dir / "gpqa_diamond" / "1.0.0")
    gpqa = builder.as_data_source(split="test")
    assert gpqa[0]["options"] == [b"d", b"a", b"b", b"c"]
    # A second load reuses the prepared files (no source needed any more).
    assert load_benchmark("amc23", data_dir) == records["amc23"]


def test_tfds_data_source_builds_from_manual_dir_or_builder_kwargs(tmp_path):
    config = tfds.download.DownloadConfig(manual_dir=str(SHARED))
    aime = tfds.data_source(
        "aime24",
        split="test",
        data_dir=tmp_path,
        download_and_prepare_kwargs={"download_config": config},
    )
    assert len(aime) == 30 and aime[1]["answer"] == b"025"
    amc = tfds.data_source(
        "amc23", split="test", data_dir=tmp_path, builder_kwargs={"source_dir": SHARED}
    )
    assert len(amc) == 83 and amc[0]["answer"] == b"142.0"


def test_no_tensorflow_imported(tmp_path):
    """A fresh interpreter builds and reads a benchmark without importing TensorFlow."""
    script = textwrap.dedent(
        f"""
        import sys
        from ttrl_jax.data import load_benchmark
        records = load_benchmark("aime24", {str(tmp_path)!r}, source_dir={str(SHARED)!r})
        assert len(records) == 30 and records[1]["answer"] == "025"
        print(sorted(m for m in sys.modules if m.split(".")[0] == "tensorflow"))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().splitlines()[-1] == "[]"


def _write_source(root, name, rows):
    folder = root / SPECS[name].folder
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "test.json").write_text(json.dumps(rows), encoding="utf-8")
    return folder / "test.json"


def test_wrong_count_names_the_file(tmp_path):
    path = _write_source(tmp_path / "src", "aime24", _source_rows("aime24")[:29])
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}: expected 30 aime24 records, found 29$"
    ):
        load_benchmark("aime24", tmp_path / "tfds", source_dir=tmp_path / "src")


def test_malformed_benchmark_row_names_file_and_row(tmp_path):
    rows = _source_rows("amc23")
    rows[4]["answer"] = 13.0  # A float where the file must hold "13.0".
    path = _write_source(tmp_path / "src", "amc23", rows)
    with pytest.raises(DataError, match=rf"^{re.escape(str(path))}:5: field 'answer' is a float"):
        load_benchmark("amc23", tmp_path / "tfds", source_dir=tmp_path / "src")
    rows = _source_rows("gpqa_diamond")
    rows[2]["prompt"] = rows[2]["prompt"].replace("\nC. ", "\nC) ")
    path = _write_source(tmp_path / "src", "gpqa_diamond", rows)
    with pytest.raises(
        DataError, match=rf"^{re.escape(str(path))}:3: prompt does not end with choices"
    ):
        load_benchmark("gpqa_diamond", tmp_path / "tfds", source_dir=tmp_path / "src")


def test_missing_source_and_unknown_name(tmp_path):
    with pytest.raises(DataError, match=r"MATH-TTT/test.json: no such file"):
        load_benchmark("math500", tmp_path / "tfds", source_dir=tmp_path)
    with pytest.raises(DataError, match=r"unknown benchmark 'aime25'"):
        load_benchmark("aime25", tmp_path / "tfds")


def test_gpqa_options_span_lines():
    prompt = "Q?\n\nA. one\nB. two\nlines\nC. 1. x\n2. y\nD. four\n"
    assert gpqa_options(prompt) == ["one", "two\nlines", "1. x\n2. y", "four"]
    assert gpqa_options("Q?\n\nA. one\nB. two") is None


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def local_server(monkeypatch):
    """Serves the shared folder over HTTP on localhost, like the GitHub raw files."""
    for var in ("HTTP_PROXY", "HTTPS_PROXY", "http_proxy", "https_proxy", "ALL_PROXY", "all_proxy"):
        monkeypatch.delenv(var, raising=False)
    handler = functools.partial(_QuietHandler, directory=str(SHARED))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_download_path(tmp_path, local_server):
    records = load_benchmark("amc23", tmp_path / "tfds", base_url=local_server)
    assert len(records) == 83 and records[0]["answer"] == "142.0"
    with pytest.raises(DataError, match=r"/GPQA-TTT/test.json: download failed .*source_dir="):
        load_benchmark("gpqa_diamond", tmp_path / "tfds", base_url=local_server + "/missing")
