"""Rollout: turn prompts into sampled completions, reward-agnostic and loop-free.

This package owns the generation half of a step: :mod:`~ttrl_jax.rollout.sampling`
prefills each left-padded prompt once and runs the jitted decode loop that draws the
``M`` votes of every prompt from that shared prefix (no copies per sample), returning
tokens ``[B, M, T]``, their log-probs and lengths; :mod:`~ttrl_jax.rollout.token_sampling`
draws one token per row of logits exactly (full vocabulary, top-k, top-p, greedy) with
its temperature-scaled log-probability; :mod:`~ttrl_jax.rollout.generate` is the one
rollout call (prompts onto the mesh, then `sampling.sample` under a `RolloutSpec`) that
the trainer and evaluation share. It knows nothing of answers, rewards or the update.
Submodules load on first use.
"""

import importlib

__all__ = ["generate", "sampling", "token_sampling"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
