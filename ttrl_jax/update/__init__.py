"""Update: the policy-gradient step that turns rewarded rollouts into new parameters.

This package owns everything between rewards ``[B, N]`` and the next params, as pure
functions of arrays: :mod:`~ttrl_jax.update.advantages` (GRPO, Dr.GRPO, RLOO,
REINFORCE++ under verl's names), :mod:`~ttrl_jax.update.rl` (PPO dual-clip policy loss,
KL estimators, loss aggregation; re-exports the advantages),
:mod:`~ttrl_jax.update.lm_head` (the fused LM head: log-probs and losses without an
``[S*T, V]`` logits block), :mod:`~ttrl_jax.update.train_step` (the jitted, donated
update with mini-batches, exact gradient accumulation and rejection of non-finite or
exploding updates) and :mod:`~ttrl_jax.update.guard` (the label-free collapse guard, a
per-step trust region on KL(pi_old || pi_new)). It takes rewards as arrays and never
imports the sampler or the reward code. Submodules load on first use.
"""

import importlib

__all__ = ["advantages", "guard", "lm_head", "rl", "train_step"]


def __getattr__(name):
    if name in __all__:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
