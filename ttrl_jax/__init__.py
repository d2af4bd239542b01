"""ttrl-jax: label-free reinforcement learning (TTRL, SRT) for LLM reasoners on JAX.

One package per stage of a step: ``models`` (the decoder, HF checkpoints, tokenizer),
``rollout`` (sampling), ``rewards`` (answers, grading, votes, reward modes, consensus),
``update`` (advantages, losses, the train step, the collapse guard), ``data``, ``eval``;
``planner`` (memory estimates) serves the planner CLI and benchmarks. The loop
(``trainer``, built from the typed ``settings`` of its stages), ``config``,
``sharding``, ``checkpointing`` and ``metrics`` stay at the top. Importing this package imports none of them; the old flat module names
(``ttrl_jax.sampling``, ``from ttrl_jax import rl``, ...) still resolve to the moved
modules through `ttrl_jax._compat`.
"""

from ttrl_jax import _compat

__version__ = "0.1.0"

_compat.install()


def __getattr__(name):
    if name in _compat.MOVED:
        return _compat.resolve(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
