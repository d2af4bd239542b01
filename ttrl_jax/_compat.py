"""The old flat module names of ``ttrl_jax``, kept importable after the move to packages.

The library's modules used to sit at the top of ``ttrl_jax`` (``ttrl_jax.sampling``,
``ttrl_jax.rl``, ...); they now live in one package per stage of a step. `MOVED` maps
each old name to its new home, and this module is the one place that keeps the old
names working:

* `install` puts `_AliasFinder` at the front of ``sys.meta_path``. It answers for exactly
  the old names: ``import ttrl_jax.sampling`` imports ``ttrl_jax.rollout.sampling`` and
  binds the *same module object* under the old name too, so an attribute read or
  patched through either name is one attribute of one module;
* `resolve` backs the module-level ``__getattr__`` of ``ttrl_jax`` (``ttrl_jax.rl`` or
  ``from ttrl_jax import rl`` after a bare ``import ttrl_jax``) through the same finder.

It is lazy: nothing is imported until an old name is used, and this module needs only
the standard library, so ``import ttrl_jax`` stays free of JAX and sympy. New code
should use the new names.
"""

from __future__ import annotations

import importlib
import importlib.abc
import importlib.machinery
import sys
import types

# old name under ttrl_jax -> the module's dotted name now
MOVED: dict[str, str] = {
    "sampling": "ttrl_jax.rollout.sampling",
    "token_sampling": "ttrl_jax.rollout.token_sampling",
    "consensus": "ttrl_jax.rewards.consensus",
    "rl": "ttrl_jax.update.rl",
    "advantages": "ttrl_jax.update.advantages",
    "train_step": "ttrl_jax.update.train_step",
    "lm_head": "ttrl_jax.update.lm_head",
    "guard": "ttrl_jax.update.guard",
    "evaluation": "ttrl_jax.eval.evaluation",
    "eval_metrics": "ttrl_jax.eval.metrics",
    "memory": "ttrl_jax.planner.memory",
}

_PACKAGE = "ttrl_jax"


class _AliasFinder(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """Finds ``ttrl_jax.<old name>`` and loads it as the module at its new name."""

    def find_spec(self, fullname, path=None, target=None):
        package, _, old = fullname.rpartition(".")
        if package != _PACKAGE or old not in MOVED:
            return None
        return importlib.machinery.ModuleSpec(fullname, self, origin=MOVED[old])

    def create_module(self, spec):
        module = importlib.import_module(spec.origin)  # the very same module object
        spec.loader_state = module.__spec__
        return module

    def exec_module(self, module):
        # Nothing to run: the module was executed under its new name. The import system
        # has just stamped the alias spec on it; give the module its own spec back, so it
        # still names (and reloads from) its real file.
        module.__spec__ = module.__spec__.loader_state


_FINDER = _AliasFinder()


def install() -> None:
    """Puts the alias finder first on ``sys.meta_path`` (once; idempotent)."""
    if _FINDER not in sys.meta_path:
        # First, so that no other finder (e.g. an editable install's) sees an old name.
        sys.meta_path.insert(0, _FINDER)


def resolve(old: str) -> types.ModuleType:
    """Returns the module that ``ttrl_jax.<old>`` names, importing it on first use."""
    return importlib.import_module(f"{_PACKAGE}.{old}")
