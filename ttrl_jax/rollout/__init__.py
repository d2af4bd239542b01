"""Rollout: turn prompts into sampled completions, reward-agnostic and loop-free.

This package owns the generation half of a step: :mod:`~ttrl_jax.rollout.sampling` is the
public call (`sample`): it prefills each left-padded prompt once and draws the ``M``
votes of every prompt from that shared prefix (no copies per sample), returning tokens
``[B, M, T]``, their log-probs and lengths; :mod:`~ttrl_jax.rollout.engine` is its
default decode loop, ``S`` slots over the queue of the step's samples, refilled as
samples end, so the work follows the samples' real lengths (the static decoder, all
samples in one batch until the longest is done, stays in `sampling`);
:mod:`~ttrl_jax.rollout.token_sampling` draws one token per row of logits exactly (full
vocabulary, top-k, top-p, greedy) with its temperature-scaled log-probability;
:mod:`~ttrl_jax.rollout.generate` is the one rollout call (prompts onto the mesh, then
`sampling.sample` under a `RolloutSpec`) that the trainer and evaluation share;
:mod:`~ttrl_jax.rollout.pallas_attention` wires jax's Pallas GPU decode-attention kernel
in as the engine's own-cache read on a GPU (the XLA read is the fallback). It knows
nothing of answers, rewards or the update. Submodules load on first use.
"""

import importlib

__all__ = ["engine", "generate", "pallas_attention", "sampling", "token_sampling"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
