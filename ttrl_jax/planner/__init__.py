"""Planner: per-device memory estimates for choosing a mesh and batch before a run.

This package serves ``experiments/plan_memory.py``, the benchmarks' cost projections
and the tests, not the training loop: nothing in ``trainer`` or the stage packages
imports it. :mod:`~ttrl_jax.planner.memory` adds up the buffers one RL step keeps alive
on each device (params, optimizer state, KV caches, activations of the update) from the
model's shapes and the sharding rules, finds the largest votes x length that fit, and
can compare the estimate with XLA's compiled ``memory_analysis()``. Submodules load on
first use.
"""

import importlib

__all__ = ["memory"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
