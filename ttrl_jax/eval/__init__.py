"""Eval: score a policy the way the papers report it, from a saved checkpoint.

This package owns evaluation outside the training step's own metrics:
:mod:`~ttrl_jax.eval.evaluation` loads a policy from an orbax or HF checkpoint, samples
a benchmark (n samples at temperature tau / top-p, or greedy), grades and votes, and
writes generations, a summary and a Markdown table (also the majority ratios that SRT's
curriculum ranks prompts by); :mod:`~ttrl_jax.eval.metrics` holds the pure-numpy
metrics on per-sample correctness (mean@n, unbiased pass@k, maj@n). It reads
checkpoints rather than reaching into the trainer. Submodules load on first use.
"""

import importlib

__all__ = ["evaluation", "metrics"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
