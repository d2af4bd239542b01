"""The run configuration schema (an `ml_collections.ConfigDict`) and its validation.

`default_config()` lists every key with its default; presets in `experiments/configs/`
start from it and override values. The dict is locked, so a misspelt key (in a preset
or on the command line: ``--config.optim.lr=...``) is an error, and `validate` checks
values with one clear message naming the key.
"""

from __future__ import annotations

import math
import os

import ml_collections

from ttrl_jax.data.heldout import PROTOCOLS
from ttrl_jax.rewards.modes import REWARD_MODES, SCORE_MODES
from ttrl_jax.update import rl


class ConfigValueError(ValueError):
    """A config value that is out of range or inconsistent; the message names the key."""


def default_config() -> ml_collections.ConfigDict:
    """Every configurable key of a run, with defaults (a TTRL-like recipe)."""
    c = ml_collections.ConfigDict()
    c.name = "ttrl"
    c.output_dir = "runs/ttrl"
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.path = ""  # local HF directory (config.json + safetensors + tokenizer)
    c.model.dtype = "bfloat16"  # parameter dtype: bfloat16 | float32
    c.model.fp32_master_weights = True  # with bf16 params: fp32 optimizer state + master copy
    c.model.remat = True  # rematerialise blocks in the backward pass
    # LM-head matmul operands in the update, the log-prob recomputations and (unless
    # rollout.head_dtype says otherwise) the sampler: "" = the params' dtype; "bfloat16"
    # with fp32 params = bf16 operands, fp32 accumulation, softmax and weight gradient
    c.model.head_dtype = ""
    # the update and log-prob passes run each prompt's blocks once for its N samples
    # (the samples attend to its k/v as a shared prefix) instead of once per sample
    c.model.shared_prompt_forward = True
    c.model.system_prompt = ""  # e.g. Qwen2.5-Math's "Please reason step by step, ..."
    # the chat template's thinking switch (Qwen3: False opens the answer with an empty
    # <think></think> block); templates without the switch ignore it
    c.model.enable_thinking = True

    c.mesh = ml_collections.ConfigDict()
    c.mesh.data = -1  # -1: all devices not used by fsdp x tensor
    c.mesh.fsdp = 1
    c.mesh.tensor = 1

    c.data = ml_collections.ConfigDict()
    c.data.dataset = "aime24"  # a benchmark name or a .json/.jsonl/.parquet path
    c.data.source_dir = ""  # local folder with <NAME>/test.json for the benchmarks
    c.data.data_dir = ""  # where TFDS builds its files (default: <output_dir>/tfds)
    c.data.problem_key = "problem"
    c.data.answer_key = "answer"  # "" for unlabeled files
    c.data.id_key = ""
    c.data.suffix = ""  # appended to each problem (SRT: "Let's think step by step ...")
    c.data.max_prompt_tokens = 1024
    c.data.on_too_long = "filter"  # filter | error
    c.data.prompts_per_step = 8  # B
    c.data.shuffle = True
    # SRT's curriculum: train only on this fraction of the prompts, those whose majority
    # ratio under one voting pass of the base model is highest (SRT: 1/3); 1.0 = off.
    # The pass is cached in <output_dir>/curriculum.json
    c.data.curriculum_fraction = 1.0
    c.data.prompt_bucket = 64  # prompt length P is rounded up to a multiple of this

    c.rollout = ml_collections.ConfigDict()
    c.rollout.n_votes = 64  # M samples per prompt
    c.rollout.n_train = 32  # N of them trained on (0: all M)
    c.rollout.temperature = 1.0
    c.rollout.top_p = 1.0
    c.rollout.top_k = 0  # 0: full vocabulary
    c.rollout.max_new_tokens = 3072  # T
    # LM-head operand dtype of the sampler: "" = model.head_dtype; one that differs from
    # the trainer's head (e.g. bfloat16 while training an fp32 head) samples from another
    # distribution than the trainer's, so it needs algo.old_logprobs=recompute
    c.rollout.head_dtype = ""
    # slots S of the length-aware decode engine (rollout.engine): S samples decode at a
    # time and a finished one hands its slot to the next; -1 = the default rule
    # (rollout.sampling.slots_for), 0 = the static decoder (all B*M samples in one batch)
    c.rollout.decode_slots = -1
    # the engine's own-cache read: "auto" = jax's Pallas GPU decode-attention kernel on
    # GPUs where it compiles, else XLA; "xla"; "pallas" (off a GPU: interpret mode)
    c.rollout.attn_kernel = "auto"

    c.reward = ml_collections.ConfigDict()
    c.reward.mode = "ttrl"  # one of rewards.modes.REWARD_MODES
    c.reward.task = "math"  # a registered task or "module:function"
    c.reward.clustering = "semantic"  # semantic | exact
    c.reward.threshold = 0.0  # SRT consistency threshold tau
    c.reward.soft = False  # SRT soft reward: fraction of agreeing votes
    c.reward.keep_fraction = 1.0  # SRT: train on the most self-consistent fraction
    # prompts without a (pseudo-)label, e.g. below reward.threshold: "drop" leaves them
    # out of the update; "keep" (SRT's code) keeps their samples in the batch with reward
    # 0 and no KL penalty in their reward (algo.kl_in_reward), so they count in the loss
    # denominators (a KL *loss*, algo.kl_in_reward=False, still applies to them)
    c.reward.below_threshold = "drop"
    # label-free terms added to the mode's reward: r = mode_weight * r_mode + sum_k
    # <k>_weight * r_k (rewards.modes.add_terms; e.g. mode=ttrl with
    # self_certainty_weight=0.1 is voting plus certainty). self_certainty and
    # neg_entropy are per-sample means over the response tokens (from the policy's
    # log-prob pass), semantic_entropy is per prompt (from the vote clusters)
    c.reward.mode_weight = 1.0
    c.reward.self_certainty_weight = 0.0
    c.reward.neg_entropy_weight = 0.0
    c.reward.semantic_entropy_weight = 0.0
    c.reward.offline_labels = ""  # JSON {id: label} for the "offline" mode
    c.reward.grading_workers = 2
    c.reward.grading_timeout = 1.0  # seconds per comparison (hard deadline)

    c.algo = ml_collections.ConfigDict()
    c.algo.advantage = "grpo"  # one of rl.ADVANTAGE_ESTIMATORS (verl's names accepted)
    c.algo.clip_eps_low = 0.2
    c.algo.clip_eps_high = 0.2
    c.algo.dual_clip = 3.0  # 0 disables the dual clip
    c.algo.kl_coef = 0.001
    # verl's kl_penalty names, one of rl.KL_TYPES: kl/k1 | abs | mse/k2 | low_var_kl/k3,
    # each with a "+" straight-through variant (the value, the gradient of k2)
    c.algo.kl_type = "k3"
    # |KL estimate| bound: 0 is verl's rule (only low_var_kl/k3, at 10); c > 0 clamps
    # every estimator to [-c, c]
    c.algo.kl_clamp = 0.0
    c.algo.kl_in_reward = False  # SRT: KL penalty in the reward instead of the loss
    # with kl_in_reward: False is verl's use_kl_in_reward (the estimator on r - beta KL);
    # True is OpenRLHF's reward-to-go (shape the outcome rewards per group, then
    # A_t = r' [t = last] - beta sum_{s >= t} KL_s); rl.kl_in_reward_advantages
    c.algo.kl_reward_to_go = False
    c.algo.entropy_coef = 0.0
    c.algo.loss_agg = "token-mean"  # one of rl.AGG_MODES (verl's loss_agg_mode names)
    # the constant C of the *-norm loss_agg modes (verl's loss_scale_factor); 0: the
    # response length T (rollout.max_new_tokens), verl's default
    c.algo.loss_scale_factor = 0.0
    c.algo.updates_per_step = 8  # mini-batches (optimizer updates) per RL step
    c.algo.micro_batch_size = 0  # gradient accumulation micro-batch (0: whole mini-batch)
    c.algo.drop_uniform_groups = False  # skip prompts whose N rewards are all equal
    c.algo.old_logprobs = "sampler"  # sampler | recompute

    c.optim = ml_collections.ConfigDict()
    c.optim.lr = 5e-7
    c.optim.schedule = "cosine"  # cosine | constant
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.01
    c.optim.grad_clip = 1.0
    c.optim.b1 = 0.9
    c.optim.b2 = 0.999

    # label-free collapse guard (ttrl_jax.update.guard): a trust region on KL(pi_old || pi_new)
    # per RL step, measured on the step's trained tokens; 0 = off
    c.guard = ml_collections.ConfigDict()
    c.guard.step_kl_target = 0.0
    c.guard.max_factor = 2.0  # reject (restore, halve the lr scale, retry) above this x target
    c.guard.max_backtracks = 4  # retries of one step before it is skipped
    c.guard.log_step_kl = False  # measure and log guard/step_kl even with the guard off
    # divergence check: an optimizer update that makes the params non-finite (always) or
    # moves them by more than this x their norm, ||p' - p|| > r ||p|| (0: no size check),
    # is rejected (params unchanged); a step with every update rejected is not checkpointed
    c.guard.max_update_ratio = 1.0

    c.train = ml_collections.ConfigDict()
    c.train.epochs = 0  # if > 0, total steps = epochs * ceil(prompts / prompts_per_step)
    c.train.steps = 10
    c.train.save_every = 5
    c.train.keep_last = 3
    c.train.eval_every = 0  # 0: no periodic evaluation
    c.train.best_metric = ""  # an eval metric, e.g. "eval/mean@16"; "" = keep last only
    # early stopping on best_metric (SRT's mitigation, with eval.datasets a small labelled
    # validation set and eval.protocol=inductive): stop after this many evaluations
    # without a gain > min_delta; 0: off
    c.train.early_stop_patience = 0
    c.train.early_stop_min_delta = 0.0
    c.train.max_bad_steps = 3  # abort after this many non-finite updates in a row
    c.train.tensorboard = True
    c.train.wandb_project = ""
    c.train.progress = True

    c.eval = ml_collections.ConfigDict()
    # the evaluation protocol (ttrl_jax.data.heldout), checked by problem-text hash:
    # transductive (TTRL's): evaluate the training problems (eval.datasets empty: the
    # training set with its labels; else sets made only of training problems);
    # inductive: evaluate eval.datasets, disjoint from data.dataset; both: the training
    # set as eval/* and the disjoint eval.datasets as eval_heldout/*
    c.eval.protocol = "transductive"
    c.eval.datasets = ""  # comma-separated benchmark names or files, evaluated as one set
    c.eval.n_samples = 16
    c.eval.temperature = 0.6
    c.eval.top_p = 0.95
    c.eval.max_new_tokens = 3072
    c.eval.greedy = True  # also greedy pass@1
    c.eval.max_prompts = 0  # 0: all
    c.lock()
    return c


def _check(cond: bool, key: str, msg: str) -> None:
    if not cond:
        raise ConfigValueError(f"config.{key}: {msg}")


def validate(c: ml_collections.ConfigDict) -> None:
    """Checks values; raises `ConfigValueError` naming the first bad key."""
    _check(bool(c.model.path), "model.path", "is required (a local HF model directory)")
    _check(os.path.isdir(c.model.path), "model.path", f"directory not found: {c.model.path}")
    _check(c.model.dtype in ("bfloat16", "float32"), "model.dtype", "must be bfloat16 or float32")
    for k in ("fsdp", "tensor"):
        _check(c.mesh[k] >= 1, f"mesh.{k}", "must be >= 1")
    _check(c.mesh.data == -1 or c.mesh.data >= 1, "mesh.data", "must be -1 or >= 1")
    _check(c.data.prompts_per_step >= 1, "data.prompts_per_step", "must be >= 1")
    _check(c.data.on_too_long in ("filter", "error"), "data.on_too_long", "filter | error")
    _check(c.data.max_prompt_tokens >= 1, "data.max_prompt_tokens", "must be >= 1")
    _check(c.rollout.n_votes >= 1, "rollout.n_votes", "must be >= 1")
    _check(
        0 <= c.rollout.n_train <= c.rollout.n_votes,
        "rollout.n_train",
        f"must be in [0, n_votes={c.rollout.n_votes}]",
    )
    _check(c.rollout.temperature >= 0, "rollout.temperature", "must be >= 0")
    _check(0 < c.rollout.top_p <= 1, "rollout.top_p", "must be in (0, 1]")
    _check(c.rollout.top_k >= 0, "rollout.top_k", "must be >= 0")
    _check(c.rollout.max_new_tokens >= 1, "rollout.max_new_tokens", "must be >= 1")
    _check(c.rollout.decode_slots >= -1, "rollout.decode_slots", "must be >= -1")
    _check(
        c.rollout.attn_kernel in ("auto", "xla", "pallas"),
        "rollout.attn_kernel",
        "must be auto, xla or pallas",
    )
    for section in ("model", "rollout"):
        _check(
            c[section].head_dtype in ("", "bfloat16", "float32"),
            f"{section}.head_dtype",
            '"" (the default), bfloat16 or float32',
        )
    train_head = c.model.head_dtype or c.model.dtype
    _check(
        (c.rollout.head_dtype or train_head) == train_head or c.algo.old_logprobs == "recompute",
        "rollout.head_dtype",
        f"differs from the trainer's LM-head dtype ({train_head}), so the sampler's "
        "log-probs are not the trainer's: set algo.old_logprobs=recompute",
    )
    _check(c.reward.mode in REWARD_MODES, "reward.mode", f"one of {sorted(REWARD_MODES)}")
    _check(c.reward.clustering in ("semantic", "exact"), "reward.clustering", "semantic | exact")
    _check(0 <= c.reward.threshold <= 1, "reward.threshold", "must be in [0, 1]")
    _check(0 < c.reward.keep_fraction <= 1, "reward.keep_fraction", "must be in (0, 1]")
    _check(c.reward.below_threshold in ("drop", "keep"), "reward.below_threshold", "drop | keep")
    _check(0 < c.data.curriculum_fraction <= 1, "data.curriculum_fraction", "must be in (0, 1]")
    _check(
        c.reward.mode != "offline" or bool(c.reward.offline_labels),
        "reward.offline_labels",
        "is required by reward.mode=offline",
    )
    w = c.reward
    for name in ("mode_weight", *(f"{k}_weight" for k in SCORE_MODES)):
        _check(math.isfinite(w[name]), f"reward.{name}", "must be finite")
    terms = [(w.mode, w.mode_weight)] + [(k, w[f"{k}_weight"]) for k in SCORE_MODES]
    _check(
        any(v for _, v in terms),
        "reward.mode_weight",
        "is 0 and no reward.<term>_weight is set: every reward would be 0",
    )
    per_sample = any(v for k, v in terms if k != "semantic_entropy")
    _check(
        per_sample
        or rl.ESTIMATOR_ALIASES.get(c.algo.advantage, c.algo.advantage) == "reinforce_pp",
        "algo.advantage",
        "semantic entropy alone is one reward per prompt, so a per-group baseline gives "
        "zero advantages: use reinforce_pp (a batch baseline)",
    )
    _check(c.reward.grading_timeout > 0, "reward.grading_timeout", "must be > 0")
    _check(c.reward.grading_workers >= 1, "reward.grading_workers", "must be >= 1")
    _check(
        c.algo.advantage in rl.ADVANTAGE_ESTIMATORS,
        "algo.advantage",
        f"one of {sorted(rl.ADVANTAGE_ESTIMATORS)}",
    )
    _check(c.algo.kl_type in rl.KL_TYPES, "algo.kl_type", f"one of {rl.KL_TYPES}")
    _check(
        c.algo.kl_in_reward or not c.algo.kl_reward_to_go,
        "algo.kl_reward_to_go",
        "needs algo.kl_in_reward=True",
    )
    _check(c.algo.kl_clamp >= 0, "algo.kl_clamp", "must be >= 0 (0: verl's, low_var_kl at 10)")
    _check(c.algo.loss_agg in rl.AGG_MODES, "algo.loss_agg", f"one of {rl.AGG_MODES}")
    _check(c.algo.loss_scale_factor >= 0, "algo.loss_scale_factor", "must be >= 0 (0: T)")
    _check(
        c.algo.old_logprobs in ("sampler", "recompute"), "algo.old_logprobs", "sampler | recompute"
    )
    _check(c.algo.updates_per_step >= 1, "algo.updates_per_step", "must be >= 1")
    _check(
        c.algo.kl_coef >= 0 and c.algo.entropy_coef >= 0,
        "algo.kl_coef",
        "coefficients must be >= 0",
    )
    _check(c.optim.schedule in ("cosine", "constant"), "optim.schedule", "cosine | constant")
    _check(c.optim.lr >= 0, "optim.lr", "must be >= 0")
    _check(0 <= c.optim.warmup_ratio < 1, "optim.warmup_ratio", "must be in [0, 1)")
    _check(c.optim.weight_decay >= 0, "optim.weight_decay", "must be >= 0")
    for k in ("b1", "b2"):  # Adam's moment decays; b2 = 1 never updates the second moment
        _check(0 <= c.optim[k] < 1, f"optim.{k}", "must be in [0, 1)")
    _check(c.guard.step_kl_target >= 0, "guard.step_kl_target", "must be >= 0 (0: off)")
    _check(c.guard.max_factor >= 1, "guard.max_factor", "must be >= 1")
    _check(c.guard.max_backtracks >= 0, "guard.max_backtracks", "must be >= 0")
    _check(c.guard.max_update_ratio >= 0, "guard.max_update_ratio", "must be >= 0 (0: off)")
    _check(c.train.steps >= 1 or c.train.epochs >= 1, "train.steps", "steps or epochs >= 1")
    _check(c.train.save_every >= 1, "train.save_every", "must be >= 1")
    _check(c.train.keep_last >= 1, "train.keep_last", "must be >= 1")
    _check(c.eval.n_samples >= 1, "eval.n_samples", "must be >= 1")
    _check(c.eval.protocol in PROTOCOLS, "eval.protocol", " | ".join(PROTOCOLS))
    _check(
        c.eval.protocol == "transductive" or bool(c.eval.datasets.strip()),
        "eval.datasets",
        f"is required by eval.protocol={c.eval.protocol} (a labelled held-out set)",
    )
    _check(c.train.early_stop_patience >= 0, "train.early_stop_patience", "must be >= 0")
    _check(
        c.train.early_stop_patience == 0 or (bool(c.train.best_metric) and c.train.eval_every > 0),
        "train.early_stop_patience",
        "needs train.best_metric and train.eval_every > 0",
    )
    n_train = c.rollout.n_train or c.rollout.n_votes
    seqs = c.data.prompts_per_step * n_train
    _check(
        seqs % c.algo.updates_per_step == 0,
        "algo.updates_per_step",
        f"must divide prompts_per_step x n_train = {seqs}",
    )
    mb = seqs // c.algo.updates_per_step
    _check(
        c.algo.micro_batch_size == 0 or mb % c.algo.micro_batch_size == 0,
        "algo.micro_batch_size",
        f"must divide the mini-batch of {mb} sequences",
    )
