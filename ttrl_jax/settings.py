"""Typed, frozen settings of the trainer's stages, read from a run config in one place.

`ttrl_jax.config` holds what a user sets (an ``ml_collections.ConfigDict``, validated
there); `TrainerSettings.from_config` turns the part each stage of one RL step reads
into small frozen dataclasses, so a stage's code names the values it depends on
(``self.s.rollout.temperature``) and a config typo or later mutation cannot reach it
mid-run. Derived values are decided here once: e.g. SRT trains on all M votes, so its
``n_train`` is ``n_votes`` whatever ``rollout.n_train`` says.
"""

from __future__ import annotations

import dataclasses

import ml_collections

from ttrl_jax.rewards.modes import SCORE_MODES
from ttrl_jax.update.train_step import LossConfig


def sampler_head_dtype(c: ml_collections.ConfigDict) -> str | None:
    """The sampler's LM-head dtype: ``rollout.head_dtype``, else the model's (None: the
    params' own)."""
    return (c.rollout.head_dtype or c.model.head_dtype) or None


def _from(cls, section: ml_collections.ConfigDict, **derived):
    """``cls`` with each field read from the config key of the same name in ``section``,
    except those given in ``derived``."""
    names = [f.name for f in dataclasses.fields(cls) if f.name not in derived]
    return cls(**{n: section[n] for n in names}, **derived)


@dataclasses.dataclass(frozen=True)
class RolloutSettings:
    """Stage 1: B prompts (left-padded to a multiple of ``prompt_bucket``) x M samples."""

    prompts_per_step: int  # B
    prompt_bucket: int
    n_votes: int  # M, samples per prompt (all of them vote)
    n_train: int  # N <= M, samples per prompt in the update
    temperature: float
    top_p: float
    top_k: int
    max_new_tokens: int  # T
    head_dtype: str | None  # the sampler's LM-head dtype (None: the model's)
    decode_slots: int | None  # S of the decode engine (None: the default rule; 0: static)
    attn_kernel: str  # the engine's own-cache read: auto | xla | pallas


@dataclasses.dataclass(frozen=True)
class ScoreSettings:
    """Stage 2: how completions become rewards (`ttrl_jax.rewards.consensus.score`)."""

    mode: str  # ttrl | srt | offline | ground_truth | ...
    task: str
    clustering: str
    threshold: float  # majority ratio below which a prompt gets no label (0: off)
    soft: bool
    keep_fraction: float
    below_threshold: str  # "drop" the unlabelled prompts, or "keep" them with reward 0
    # r = mode_weight r_mode + sum_k <k>_weight r_k (rewards.modes.add_terms)
    mode_weight: float
    self_certainty_weight: float
    neg_entropy_weight: float
    semantic_entropy_weight: float

    @property
    def weights(self) -> dict[str, float]:
        """The weights of the label-free terms added to the mode's reward, by
        `rewards.modes.SCORE_MODES` name."""
        return {k: getattr(self, f"{k}_weight") for k in SCORE_MODES}


@dataclasses.dataclass(frozen=True)
class UpdateSettings:
    """Stages 3-5: batch building, log-prob recomputation, advantages and the update."""

    advantage: str  # verl's advantage estimator name (grpo, rloo, ...)
    old_logprobs: str  # "recompute" (trainer's forward) or the sampler's
    kl_coef: float
    kl_in_reward: bool
    kl_reward_to_go: bool  # OpenRLHF's returns-to-go instead of verl's use_kl_in_reward
    kl_type: str  # verl's KL estimator name (k1, k2, k3, ...)
    kl_clamp: float | None
    entropy_coef: float
    updates_per_step: int
    drop_uniform_groups: bool
    log_step_kl: bool  # measure KL(pi_old || pi_new) per step even with the guard off

    @property
    def need_ref(self) -> bool:
        """A KL term (in the loss or in the reward) needs the reference policy."""
        return self.kl_coef > 0


@dataclasses.dataclass(frozen=True)
class LoopSettings:
    """The loop around the step: keys, evaluation, checkpoints, early stopping."""

    seed: int
    eval_every: int
    save_every: int
    best_metric: str
    early_stop_patience: int
    early_stop_min_delta: float
    max_bad_steps: int
    progress: bool


@dataclasses.dataclass(frozen=True)
class TrainerSettings:
    rollout: RolloutSettings
    score: ScoreSettings
    update: UpdateSettings
    loop: LoopSettings
    loss: LossConfig  # the jitted update's static settings (`train_step.LossConfig`)
    trust_region: dict | None  # `guard.TrustRegion` kwargs; None: the guard is off

    @classmethod
    def from_config(cls, c: ml_collections.ConfigDict) -> TrainerSettings:
        """The stages' settings of a validated run config."""
        r, w, a, t = c.rollout, c.reward, c.algo, c.train
        n_train = r.n_train or r.n_votes
        if w.mode == "srt":
            n_train = r.n_votes  # SRT trains on its votes
        g = c.guard
        return cls(
            loss=LossConfig(
                clip_eps_low=a.clip_eps_low,
                clip_eps_high=a.clip_eps_high,
                dual_clip_c=a.dual_clip or None,
                kl_as_loss=a.kl_coef > 0 and not a.kl_in_reward,
                kl_type=a.kl_type,
                kl_clamp=a.kl_clamp or None,
                agg_mode=a.loss_agg,
                loss_scale_factor=a.loss_scale_factor or None,
                use_entropy=a.entropy_coef > 0,
                num_minibatches=a.updates_per_step,
                micro_batch_size=a.micro_batch_size,
                remat=c.model.remat,
                head_dtype=c.model.head_dtype,
                # the training batch holds each prompt's N samples as consecutive rows
                prompt_group=n_train if c.model.shared_prompt_forward else 1,
                max_update_ratio=g.max_update_ratio,
            ),
            trust_region=(
                {
                    "target": g.step_kl_target,
                    "max_factor": g.max_factor,
                    "max_backtracks": g.max_backtracks,
                }
                if g.step_kl_target > 0
                else None
            ),
            rollout=_from(
                RolloutSettings,
                r,
                prompts_per_step=c.data.prompts_per_step,
                prompt_bucket=c.data.prompt_bucket,
                n_train=n_train,
                head_dtype=sampler_head_dtype(c),
                decode_slots=None if r.decode_slots < 0 else r.decode_slots,
            ),
            score=_from(ScoreSettings, w),
            update=_from(UpdateSettings, a, kl_clamp=a.kl_clamp or None, log_step_kl=g.log_step_kl),
            loop=_from(LoopSettings, t, seed=c.seed),
        )
