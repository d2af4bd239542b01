"""TFDS builders for the four evaluation sets TTRL and SRT report on.

| TFDS name      | items | folder in the TTRL repository | extra fields |
|----------------|-------|-------------------------------|--------------|
| ``aime24``       | 30    | ``verl/data/AIME-TTT``          |              |
| ``amc23``        | 83    | ``verl/data/AMC-TTT``           |              |
| ``math500``      | 500   | ``verl/data/MATH-TTT``          | ``subject``    |
| ``gpqa_diamond`` | 198   | ``verl/data/GPQA-TTT``          | ``options``    |

Each folder holds ``test.json``, an array of ``{"prompt", "answer", "source",
"id"}``. The builders read it from, in order: the ``source_dir`` builder
argument (``<source_dir>/<FOLDER>/test.json``), TFDS's manual directory
(``DownloadConfig(manual_dir=...)``, same layout), or the public GitHub raw
file. They check every row and the count, and write ``array_record`` files,
which TFDS writes and reads without TensorFlow. Answers stay the strings of the
file (``"025"``, ``"142.0"``). Importing this module registers the builders, so
``tfds.data_source("aime24", data_dir=...)`` works after it::

    records = load_benchmark("aime24", source_dir="../shared/data/benchmarks")
"""

from __future__ import annotations

import dataclasses
import os
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import tensorflow_datasets as tfds
from etils import epath

from ttrl_jax.data.loaders import load_records
from ttrl_jax.data.records import DataError

BASE_URL = "https://raw.githubusercontent.com/PRIME-RL/TTRL/main/verl/data"
HOMEPAGE = "https://github.com/PRIME-RL/TTRL"
CITATION = """@article{zuo2025ttrl,
  title={TTRL: Test-Time Reinforcement Learning},
  author={Zuo, Yuxin and Zhang, Kaiyan and others},
  journal={arXiv preprint arXiv:2504.16084},
  year={2025}
}"""
CHOICE_LETTERS = "ABCD"


def gpqa_options(prompt: str) -> list[str] | None:
    """Splits the four choices off a GPQA prompt.

    The prompt ends with ``"\\n\\nA. ...\\nB. ...\\nC. ...\\nD. ..."``; a choice may
    span several lines.

    Args:
        prompt: The full GPQA prompt.

    Returns:
        The choices in letter order, stripped, or ``None`` if the prompt does not
        end with the four lettered choices.
    """
    start = prompt.rfind("\n\nA. ")
    if start < 0:
        return None
    starts = [start + 2]
    for letter in CHOICE_LETTERS[1:]:
        found = prompt.find(f"\n{letter}. ", starts[-1])
        if found < 0:
            return None
        starts.append(found + 1)
    ends = [s - 1 for s in starts[1:]] + [len(prompt)]
    return [prompt[s + 3 : e].strip() for s, e in zip(starts, ends)]


def _gpqa_extras(record: dict[str, Any], where: str) -> dict[str, Any]:
    options = gpqa_options(record["problem"])
    if options is None:
        raise DataError(f"{where}: prompt does not end with choices 'A. ' to 'D. '")
    if record["answer"] not in CHOICE_LETTERS:
        raise DataError(f"{where}: answer {record['answer']!r} is not one of A, B, C, D")
    return {"options": options}


def _math_extras(record: dict[str, Any], where: str) -> dict[str, Any]:
    parts = record["id"].split("/")  # "test/<subject>/<number>.json"
    if len(parts) != 3 or not parts[1]:
        raise DataError(f"{where}: id {record['id']!r} is not 'test/<subject>/<n>.json'")
    return {"subject": parts[1]}


def fetch(url: str, dest: Path, timeout: float = 60.0) -> Path:
    """Downloads ``url`` to ``dest`` (kept as a cache) and returns ``dest``.

    A plain ``urllib`` fetch: TFDS's download manager retries a refused
    connection with backoff for about 200 s, too long to learn one is offline.

    Raises:
        DataError: The download failed; the message names the URL.
    """
    if dest.is_file():
        return dest
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            data = response.read()
    except (OSError, ValueError) as e:  # URLError and HTTPError are OSErrors.
        reason = getattr(e, "reason", None) or e
        raise DataError(
            f"{url}: download failed ({reason}); pass source_dir=<dir holding "
            f"{'/'.join(dest.parts[-2:])}>"
        ) from e
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".partial")
    partial.write_bytes(data)
    partial.replace(dest)
    return dest


@dataclasses.dataclass(frozen=True)
class BenchmarkSpec:
    """What one benchmark file must hold.

    Attributes:
        name: The TFDS (and ``load_benchmark``) name.
        folder: The folder holding ``test.json``, locally and in the TTRL repo.
        num_examples: The exact number of records.
        extra_features: Feature name -> TFDS feature, beyond the four base ones.
        extras: ``(record, where) -> dict`` of the extra fields of one record;
            raises ``DataError`` if they cannot be derived.
    """

    name: str
    folder: str
    num_examples: int
    extra_features: dict[str, Any] = dataclasses.field(default_factory=dict)
    extras: Callable[[dict[str, Any], str], dict[str, Any]] | None = None


SPECS: dict[str, BenchmarkSpec] = {
    "aime24": BenchmarkSpec("aime24", "AIME-TTT", 30),
    "amc23": BenchmarkSpec("amc23", "AMC-TTT", 83),
    "math500": BenchmarkSpec(
        "math500", "MATH-TTT", 500, {"subject": tfds.features.Text()}, _math_extras
    ),
    "gpqa_diamond": BenchmarkSpec(
        "gpqa_diamond",
        "GPQA-TTT",
        198,
        {"options": tfds.features.Sequence(tfds.features.Text(), length=4)},
        _gpqa_extras,
    ),
}


def read_benchmark_file(path: str | os.PathLike[str], spec: BenchmarkSpec) -> list[dict[str, Any]]:
    """Reads and checks one benchmark ``test.json``.

    Args:
        path: The file.
        spec: What it must hold.

    Returns:
        The records, in file order, with the spec's extra fields.

    Raises:
        DataError: A malformed row (``file:row: ...``) or a wrong count.
    """
    path = Path(path)
    records = load_records(
        path,
        problem_key="prompt",
        answer_key="answer",
        id_key="id",
        source_key="source",
        format="json",
    )
    if len(records) != spec.num_examples:
        raise DataError(
            f"{path}: expected {spec.num_examples} {spec.name} records, found {len(records)}"
        )
    if spec.extras is not None:
        for row, record in enumerate(records, start=1):
            record.update(spec.extras(record, f"{path}:{row}"))
    return records


class _BenchmarkBuilder(tfds.core.GeneratorBasedBuilder, skip_registration=True):
    """Shared builder: one ``test`` split read from ``<FOLDER>/test.json``."""

    VERSION = tfds.core.Version("1.0.0")
    RELEASE_NOTES: ClassVar[dict[str, str]] = {"1.0.0": "The TTRL repository's test.json."}
    SPEC: ClassVar[BenchmarkSpec]
    MANUAL_DOWNLOAD_INSTRUCTIONS = (
        "Optional. Put <FOLDER>/test.json from "
        "https://github.com/PRIME-RL/TTRL/tree/main/verl/data in the manual directory "
        "(AIME-TTT, AMC-TTT, MATH-TTT or GPQA-TTT); otherwise it is downloaded."
    )

    def __init__(
        self,
        *,
        source_dir: str | os.PathLike[str] | None = None,
        base_url: str = BASE_URL,
        file_format: str | None = None,
        **kwargs: Any,
    ):
        """Creates the builder.

        Args:
            source_dir: A directory holding ``<FOLDER>/test.json``; when given it
                is the only source used.
            base_url: Where ``<FOLDER>/test.json`` is downloaded from otherwise.
            file_format: Only ``"array_record"`` (the default) is supported.
            **kwargs: Passed to ``tfds.core.GeneratorBasedBuilder`` (``data_dir``...).
        """
        if file_format not in (None, "array_record", tfds.core.FileFormat.ARRAY_RECORD):
            raise ValueError(f"{self.name}: only file_format='array_record' is supported")
        self._source_dir = None if source_dir is None else Path(source_dir)
        self._base_url = base_url.rstrip("/")
        super().__init__(file_format="array_record", **kwargs)

    @tfds.core.utils.classproperty
    @classmethod
    def code_path(cls) -> epath.Path:
        """This file. TFDS 4.9.10's own lookup needs ``importlib_resources``,
        which it does not install on Python >= 3.9; the path is only used to
        look for a ``checksums.tsv`` beside the code (there is none)."""
        return epath.Path(__file__)

    def _info(self) -> tfds.core.DatasetInfo:
        features = {
            "problem": tfds.features.Text(),
            "answer": tfds.features.Text(),
            "source": tfds.features.Text(),
            "id": tfds.features.Text(),
            **self.SPEC.extra_features,
        }
        return tfds.core.DatasetInfo(
            builder=self,
            description=self.__doc__,
            features=tfds.features.FeaturesDict(features),
            homepage=HOMEPAGE,
            citation=CITATION,
            disable_shuffling=True,  # Keep the file's order.
        )

    def _source_path(self, dl_manager: tfds.download.DownloadManager) -> Path:
        relative = Path(self.SPEC.folder) / "test.json"
        if self._source_dir is not None:
            path = self._source_dir / relative
            if not path.is_file():
                raise DataError(f"{path}: no such file (source_dir must hold {relative})")
            return path
        try:
            manual = Path(os.fspath(dl_manager.manual_dir)) / relative
        except (AssertionError, ValueError):  # No manual directory, or it is empty.
            manual = None
        if manual is not None and manual.is_file():
            return manual
        url = f"{self._base_url}/{relative.as_posix()}"
        return fetch(url, Path(os.fspath(dl_manager.download_dir)) / "ttrl" / relative)

    def _split_generators(self, dl_manager: tfds.download.DownloadManager):
        records = read_benchmark_file(self._source_path(dl_manager), self.SPEC)
        return {"test": self._generate_examples(records)}

    def _generate_examples(self, records: list[dict[str, Any]]):
        yield from enumerate(records)  # Keys are row positions.


class Aime24(_BenchmarkBuilder):
    """AIME 2024: 30 problems with integer answers (as strings, e.g. "025")."""

    SPEC = SPECS["aime24"]


class Amc23(_BenchmarkBuilder):
    """AMC 2023: 83 problems with numeric answers written as floats (e.g. "142.0")."""

    SPEC = SPECS["amc23"]


class Math500(_BenchmarkBuilder):
    """MATH-500: 500 MATH test problems with LaTeX answers, and their subject."""

    SPEC = SPECS["math500"]


class GpqaDiamond(_BenchmarkBuilder):
    """GPQA-Diamond: 198 multiple-choice questions; the answer is a letter A-D."""

    SPEC = SPECS["gpqa_diamond"]


BUILDERS: dict[str, type[_BenchmarkBuilder]] = {
    cls.SPEC.name: cls for cls in (Aime24, Amc23, Math500, GpqaDiamond)
}


def _to_python(value: Any) -> Any:
    """TFDS gives text as bytes and sequences as lists or arrays: make them str."""
    if isinstance(value, bytes):
        return value.decode("utf-8")
    if isinstance(value, (list, tuple, np.ndarray)):
        return [_to_python(v) for v in value]
    return value


def benchmark_builder(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> _BenchmarkBuilder:
    """Returns the TFDS builder of benchmark ``name`` (not yet prepared).

    Args:
        name: One of ``"aime24"``, ``"amc23"``, ``"math500"``, ``"gpqa_diamond"``.
        data_dir: TFDS data directory (TFDS's default when ``None``).
        source_dir: A directory holding ``<FOLDER>/test.json`` to build from.
        **kwargs: More builder arguments (``base_url``...).

    Raises:
        DataError: Unknown name.
    """
    if name not in BUILDERS:
        raise DataError(f"unknown benchmark {name!r} (known: {', '.join(BUILDERS)})")
    return BUILDERS[name](data_dir=data_dir, source_dir=source_dir, **kwargs)


def load_benchmark(
    name: str,
    data_dir: str | os.PathLike[str] | None = None,
    source_dir: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> list[dict[str, Any]]:
    """Builds benchmark ``name`` if needed and returns its records.

    Args:
        name: One of ``"aime24"``, ``"amc23"``, ``"math500"``, ``"gpqa_diamond"``.
        data_dir: TFDS data directory (TFDS's default when ``None``).
        source_dir: A directory holding ``<FOLDER>/test.json``; without it the
            file is taken from TFDS's manual directory or downloaded.
        **kwargs: More builder arguments (``base_url``...).

    Returns:
        The records in file order: ``problem``, ``answer``, ``source``, ``id``
        (all ``str``), plus ``subject`` (MATH-500) or ``options`` (GPQA).

    Raises:
        DataError: Unknown name, missing or malformed source file, wrong count.
    """
    builder = benchmark_builder(name, data_dir=data_dir, source_dir=source_dir, **kwargs)
    builder.download_and_prepare()
    source = builder.as_data_source(split="test")
    expected = BUILDERS[name].SPEC.num_examples
    if len(source) != expected:
        raise DataError(
            f"{builder.data_dir}: expected {expected} {name} records, found {len(source)}"
        )
    return [
        {key: _to_python(value) for key, value in source[i].items()} for i in range(len(source))
    ]
