"""A label-free collapse guard: a trust region on how far one RL step moves the policy.

Self-consistency rewards (TTRL, SRT) pay for *agreement*, and the cheapest way to
agree is to sharpen: put more mass on whatever the policy already prefers token by
token. A small step follows the vote's answer-level signal; a large step mostly
sharpens, and a policy whose token mode is a consistent wrong answer then falls
into it within a step or two, after which its own votes confirm it (pseudo-label
accuracy collapses while the majority ratio climbs). The step size that separates
the two regimes is not an lr one can pick once: Adam's first updates are nearly
sign-gradient steps of size lr in every coordinate, and how far such a step moves
the *distribution* depends on the model, its last bits and the batch.

So the guard bounds the distance itself. After each RL step it measures the KL
between the policy that sampled the rollout and the updated one on the step's own
trained tokens (no labels, one extra log-prob pass)::

    step_kl = sum_t m_t [ r_t - 1 - log r_t ] / sum_t m_t,   r_t = pi_new(y_t) / pi_old(y_t)

(the k3 estimator of KL(pi_old || pi_new), unbiased and non-negative for tokens
sampled from pi_old). With a target ``delta``:

* ``step_kl > max_factor * delta``: the step is **rejected** (params and optimizer
  state restored) and retried on the same batch at half the lr scale, up to
  ``max_backtracks`` times (a backtracking line search, as in TRPO); a step that
  still overshoots is skipped.
* ``step_kl < delta / 2``: the lr scale grows by ``grow`` for the next step (never
  above 1: the guard only ever slows the configured schedule down).

The lr scale multiplies the whole AdamW update (``train_step``'s ``hyper["lr_scale"]``),
and is checkpointed, so resume continues the same trajectory.
"""

from __future__ import annotations

import dataclasses

import numpy as np


def step_kl(new_logprobs: np.ndarray, old_logprobs: np.ndarray, mask: np.ndarray) -> float:
    """k3 estimate of KL(pi_old || pi_new) per trained token.

    Args:
      new_logprobs, old_logprobs: ``[S, T]`` log-probs of the sampled tokens under the
        updated and the sampling policy.
      mask: ``[S, T]`` 1 on trained response tokens.

    Returns:
      ``sum m (exp(d) - 1 - d) / sum m`` with ``d = new - old`` (0 when nothing is masked in).
    """
    d = np.asarray(new_logprobs, np.float64) - np.asarray(old_logprobs, np.float64)
    m = np.asarray(mask, np.float64)
    k3 = np.expm1(np.clip(d, -20.0, 20.0)) - np.clip(d, -20.0, 20.0)
    return float((k3 * m).sum() / max(m.sum(), 1.0))


@dataclasses.dataclass
class TrustRegion:
    """The guard's state and its decision rule (host-side, pure Python).

    Attributes:
      target: delta, the per-step KL(pi_old || pi_new) aimed for (> 0).
      max_factor: a step whose KL exceeds ``max_factor * target`` is rejected.
      grow: lr-scale growth after a step below ``target / 2``.
      shrink: lr-scale division on each rejection.
      max_backtracks: retries of one step before it is skipped.
      min_scale: the lr scale never goes below this.
      scale: the current lr scale in (0, 1].
    """

    target: float
    max_factor: float = 2.0
    grow: float = 1.5
    shrink: float = 2.0
    max_backtracks: int = 4
    min_scale: float = 1e-3
    scale: float = 1.0

    def __post_init__(self):
        if not self.target > 0:
            raise ValueError(f"trust-region target must be > 0, got {self.target}")
        if self.max_factor < 1 or self.grow < 1 or self.shrink <= 1:
            raise ValueError("need max_factor >= 1, grow >= 1, shrink > 1")

    def accept(self, kl: float) -> bool:
        """Judges one attempted step of KL ``kl``; updates the scale for the next try.

        Returns:
          True: keep the step (the scale may grow for the next one). False: restore
          the state before it; the scale has been divided by ``shrink``.
        """
        if not np.isfinite(kl) or kl > self.max_factor * self.target:
            self.scale = max(self.scale / self.shrink, self.min_scale)
            return False
        if kl < 0.5 * self.target:
            self.scale = min(self.scale * self.grow, 1.0)
        return True

    def state(self) -> dict:
        return {"scale": self.scale}

    def restore(self, state: dict | None) -> None:
        if state:
            self.scale = float(state["scale"])
