"""Problem data: benchmarks as TFDS datasets, user files, prompts, batching.

* ``load_benchmark(name, data_dir, source_dir)``: AIME 2024, AMC 2023,
  MATH-500, GPQA-Diamond, built as TFDS ``array_record`` datasets (no
  TensorFlow needed).
* ``load_records(path, problem_key=..., answer_key=..., id_key=...)``: the
  user's JSON / JSONL / parquet file; a malformed row fails as ``file:row: ...``.
* ``build_prompts`` (chat template, suffix, length limit) and ``left_pad``
  (bucketed int32 ``[B, P]`` + mask).
* ``PromptIterator``: deterministic, resumable batches of indices.
* ``heldout``: the evaluation protocols (transductive / inductive), checked by
  problem-text hash.
* ``curriculum``: SRT's curriculum (most self-consistent prompts of the base model).
* ``synthetic``: the demo's digit-sum task (noisy training traces, unlabeled test set).
"""

from ttrl_jax.data import curriculum, heldout, synthetic
from ttrl_jax.data.benchmarks import (
    BUILDERS,
    SPECS,
    benchmark_builder,
    gpqa_options,
    load_benchmark,
    read_benchmark_file,
)
from ttrl_jax.data.iterator import PromptIterator
from ttrl_jax.data.loaders import load_records
from ttrl_jax.data.padding import bucket_length, left_pad
from ttrl_jax.data.prompts import SRT_SUFFIX, Prompts, build_prompts, make_messages
from ttrl_jax.data.records import DataError

__all__ = [
    "BUILDERS",
    "SPECS",
    "SRT_SUFFIX",
    "DataError",
    "PromptIterator",
    "Prompts",
    "benchmark_builder",
    "bucket_length",
    "build_prompts",
    "gpqa_options",
    "heldout",
    "left_pad",
    "load_benchmark",
    "load_records",
    "make_messages",
    "read_benchmark_file",
    "synthetic",
]
