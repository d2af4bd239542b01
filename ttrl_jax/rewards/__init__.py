"""Consensus rewards: answer extraction, safe grading, majority voting, reward modes.

Submodules (imported lazily, so that grading worker processes never import JAX):

* :mod:`~ttrl_jax.rewards.answers` -- extraction and canonical strings; task registry.
* :mod:`~ttrl_jax.rewards.grading` -- math equivalence in a sandboxed worker pool.
* :mod:`~ttrl_jax.rewards.grading_worker` -- the worker process itself (math-verify).
* :mod:`~ttrl_jax.rewards.voting` -- answers ``[B][M]`` -> class ids ``[B, M]``.
* :mod:`~ttrl_jax.rewards.modes` -- pure-JAX reward modes and label metrics.
* :mod:`~ttrl_jax.rewards.consensus` -- one step's host side: decoded tokens -> answers
  -> votes -> rewards ``[B, N]`` and label metrics.

Typical step::

    from ttrl_jax import rewards
    answers = rewards.answers.extract_answers(completions, task="math")  # [B][M]
    votes, clusters = rewards.voting.build_votes(answers, golds=golds)
    out = rewards.modes.REWARD_MODES["ttrl"](votes, key, n=32)
    metrics = rewards.modes.label_metrics(votes, out)
"""

import importlib

__all__ = ["answers", "consensus", "grading", "grading_worker", "modes", "voting"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
