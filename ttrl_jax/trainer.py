"""The TTRL / SRT training loop: sample -> grade -> vote -> reward -> advantage -> update.

One `Trainer` owns one model on one mesh: the same params serve the sampler and the
update (no second inference engine, no weight synchronisation). One RL step
(`Trainer.train_one_step`) runs five stages, after the resumable iterator yields B
prompts (left-padded to a length bucket):

1. rollout (`_rollout_stage`): M completions per prompt, each prompt prefilled once;
2. score (`_score_stage`): completions decoded, answers extracted and clustered,
   rewards computed by the configured mode (`consensus.score`), N of M chosen; the
   label-free self-certainty / entropy rewards first run the policy's log-prob pass
   over all M samples (`_token_scores`), whose log-probs then serve as the old ones;
3. build batch (`_build_batch`): the N trained samples as ``[B N, ...]`` rows with
   their masks; then `_recompute_logprobs`: the current and reference policies'
   log-probs of those tokens (sharded forward passes);
4. advantages (`_advantages`): GRPO / RLOO / ...; KL in the loss or in the reward;
5. update (`_update`): the jitted, donated `train_step` (several mini-batch updates),
   under the guard's trust region when it is on.

`run` adds metrics (JSONL, TensorBoard), orbax checkpoints and periodic evaluation.

Resuming from the latest checkpoint continues the exact trajectory: per-step PRNG keys
are ``fold_in(key(seed), step)`` and the data-iterator position is checkpointed.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import time
from collections.abc import Callable

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from ttrl_jax import checkpointing, metrics, sharding
from ttrl_jax.config import ConfigValueError, validate
from ttrl_jax.data import (
    PromptIterator,
    build_prompts,
    curriculum,
    heldout,
    left_pad,
    load_benchmark,
    load_records,
)
from ttrl_jax.eval import evaluation
from ttrl_jax.models import load_hf
from ttrl_jax.models.tokenizer import load_tokenizer
from ttrl_jax.rewards import answers as answers_lib
from ttrl_jax.rewards import consensus, grading
from ttrl_jax.rollout import generate, sampling
from ttrl_jax.rollout.generate import RolloutSpec
from ttrl_jax.settings import TrainerSettings, sampler_head_dtype
from ttrl_jax.update import guard, rl
from ttrl_jax.update import train_step as ts

log = logging.getLogger(__name__)
BENCHMARKS = ("aime24", "amc23", "math500", "gpqa_diamond")
_CURRICULUM_STREAM = 0x43555252  # PRNG stream of the curriculum voting pass ("CURR")


@dataclasses.dataclass
class TrainBatch:
    """The N trained samples of each prompt as S = B N rows (host numpy)."""

    tokens: np.ndarray  # int32 [S, P + T] prompt then response
    attn_mask: np.ndarray  # int32 [S, P + T]
    resp_mask: np.ndarray  # f32 [B, N, T] trained response tokens
    sampler_logprobs: np.ndarray  # f32 [S, T] the sampler's log-probs
    rewards: np.ndarray  # f32 [B, N]
    valid: np.ndarray  # bool [B, N] sequences in the loss
    labelled: np.ndarray  # bool [B] prompts with a (pseudo-)label
    metrics: dict
    policy_logprobs: np.ndarray | None = None  # f32 [S, T] current policy's, if known

    @property
    def flat_mask(self) -> np.ndarray:  # f32 [S, T]
        return self.resp_mask.reshape(-1, self.resp_mask.shape[-1])

    @property
    def n_tokens(self) -> float:
        return max(float(self.resp_mask.sum()), 1.0)


def _sequences(prompt_tokens, prompt_mask, resp_tokens, lengths):
    """Rows of prompt then response for ``resp_tokens [B, n, T]`` with ``lengths [B, n]``
    after the left-padded prompts ``[B, P]``: ``(tokens, attn_mask) [B n, P + T]`` int32
    and the live response positions ``[B, n, T]`` bool."""
    b, n, t = resp_tokens.shape
    p = prompt_tokens.shape[1]
    live = np.arange(t)[None, None] < lengths[..., None]  # [B, n, T]
    seq = np.concatenate([np.repeat(prompt_tokens[:, None], n, 1), resp_tokens], -1)
    attn = np.concatenate([np.repeat(prompt_mask[:, None], n, 1), live.astype(np.int32)], -1)
    return seq.reshape(b * n, p + t), attn.reshape(b * n, p + t), live


class _StageClock:
    """``with clock("name"):`` adds the block's wall time to ``clock.seconds[name]``."""

    def __init__(self):
        self.seconds: dict[str, float] = {}

    def __call__(self, name: str):
        return _Timed(self.seconds, name)


class _Timed:
    def __init__(self, seconds: dict, name: str):
        self.seconds, self.name = seconds, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        elapsed = time.perf_counter() - self.start
        self.seconds[self.name] = self.seconds.get(self.name, 0.0) + elapsed
        return False


class TrainingError(RuntimeError):
    """A run that cannot continue (e.g. too many non-finite updates in a row)."""


def load_dataset(c: ml_collections.ConfigDict, dataset: str) -> list[dict]:
    """Records of a benchmark name or a user file, per the data config."""
    if dataset in BENCHMARKS:
        data_dir = c.data.data_dir or os.path.join(c.output_dir, "tfds")
        return load_benchmark(dataset, data_dir=data_dir, source_dir=c.data.source_dir or None)
    if not os.path.isfile(dataset):
        raise FileNotFoundError(f"dataset not found: {dataset} (a benchmark name: {BENCHMARKS})")
    return load_records(
        dataset,
        problem_key=c.data.problem_key,
        answer_key=c.data.answer_key or None,
        id_key=c.data.id_key or None,
    )


def _load_offline_labels(path: str) -> dict[str, str]:
    try:
        with open(path, encoding="utf-8") as f:
            labels = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: cannot read offline labels ({e})") from None
    if not isinstance(labels, dict):
        raise ValueError(f"{path}: offline labels must be a JSON object {{id: label}}")
    return {str(k): (None if v is None else str(v)) for k, v in labels.items()}


def eval_settings(c: ml_collections.ConfigDict) -> evaluation.EvalSettings:
    """The evaluation protocol of a run config."""
    return evaluation.EvalSettings(
        n_samples=c.eval.n_samples,
        temperature=c.eval.temperature,
        top_p=c.eval.top_p,
        max_new_tokens=c.eval.max_new_tokens,
        greedy=c.eval.greedy,
        prompts_per_batch=c.data.prompts_per_step,
        max_prompt_tokens=c.data.max_prompt_tokens,
        prompt_bucket=c.data.prompt_bucket,
        system_prompt=c.model.system_prompt,
        enable_thinking=c.model.enable_thinking,
        suffix=c.data.suffix,
        task=c.reward.task,
        clustering=c.reward.clustering,
        seed=c.seed,
        head_dtype=sampler_head_dtype(c) or "",  # the sampler's, as in training
        decode_slots=c.rollout.decode_slots,  # likewise
        attn_kernel=c.rollout.attn_kernel,
    )


def eval_sets(c: ml_collections.ConfigDict, train: list[dict]) -> list[tuple[str, list[dict]]]:
    """The run's evaluation sets as ``(metric prefix, labelled records)``, after checking
    ``eval.datasets`` against the training records ``train`` under ``eval.protocol``
    (`data.heldout.check_protocol`; a ValueError names the sets and a problem)."""
    names = [n.strip() for n in c.eval.datasets.split(",") if n.strip()]
    given = [(n, load_dataset(c, n)) for n in names]
    heldout.check_protocol(c.eval.protocol, train, c.data.dataset, given)

    def labelled(sets: list[list[dict]]) -> list[dict]:
        records = [r for recs in sets for r in recs if r.get("answer") is not None]
        return records[: c.eval.max_prompts or None]

    given_records = [recs for _, recs in given]
    if c.eval.protocol == "both":
        return [("eval", labelled([train])), ("eval_heldout", labelled(given_records))]
    return [("eval", labelled(given_records or [train]))]


def default_eval(trainer: Trainer, step: int) -> dict:
    """Periodic evaluation of each of the run's `eval_sets` (transductive: the training
    set with its labels, by default); metrics are prefixed ``eval/`` (``eval_heldout/``
    for the held-out set of ``eval.protocol=both``) and the generations written under
    ``<output_dir>/eval``."""
    c = trainer.c
    out = {}
    for prefix, records in trainer.eval_sets:
        summary = evaluation.evaluate(
            trainer.model.with_params(trainer.params),
            trainer.tok,
            records,
            eval_settings(c),
            mesh=trainer.mesh,
            out_dir=os.path.join(c.output_dir, "eval"),
            name=f"step{step}" + ("" if prefix == "eval" else f"_{prefix}"),
            pool=trainer.pool,
        )
        out.update({f"{prefix}/{k}": v for k, v in summary.items() if isinstance(v, (int, float))})
    return out


class Trainer:
    """Builds everything a run needs from a validated config and runs the loop.

    Args:
      config: a `ttrl_jax.config.default_config()`-shaped ConfigDict.
      eval_fn: optional ``(trainer, step) -> dict`` called every ``train.eval_every``
        steps; its metrics are logged and feed the best-checkpoint policy.
      probe_fn: optional ``(problems [B], texts [B][M]) -> dict`` called on every step's
        decoded rollout (diagnostics such as a task's solution-path shares); its
        metrics are logged with the prefix ``probe/`` and never touch the reward.
    """

    def __init__(
        self,
        config: ml_collections.ConfigDict,
        eval_fn: Callable | None = None,
        probe_fn: Callable | None = None,
    ):
        validate(config)
        try:
            answers_lib.get_task(config.reward.task)
        except (ValueError, ImportError, AttributeError, TypeError) as e:
            raise ConfigValueError(f"config.reward.task: {e}") from None
        self.pool = self.ckpt = self.writer = None
        try:
            self._setup(config, eval_fn, probe_fn)
        except BaseException:
            self.close()  # no grading workers or checkpoint threads left behind
            raise

    def _setup(
        self,
        config: ml_collections.ConfigDict,
        eval_fn: Callable | None,
        probe_fn: Callable | None,
    ) -> None:
        self.c = c = config
        # what the step's stages read, typed and frozen; the rest of c wires the parts
        self.s = s = TrainerSettings.from_config(c)
        self.eval_fn = eval_fn or (default_eval if c.train.eval_every else None)
        self.probe_fn = probe_fn
        # the cheap checks first (tokenizer, dataset, prompts), then the model's weights
        self.tok = load_tokenizer(c.model.path)
        records = load_dataset(c, c.data.dataset)
        self.eval_sets = eval_sets(c, records)  # the protocol checked before anything runs
        self.prompts = build_prompts(
            records,
            self.tok.tokenizer,
            max_prompt_tokens=c.data.max_prompt_tokens,
            suffix=c.data.suffix or None,
            system_prompt=c.model.system_prompt or None,
            on_too_long=c.data.on_too_long,
            enable_thinking=c.model.enable_thinking,
        )
        self.mesh = sharding.make_mesh(c.mesh.data, c.mesh.fsdp, c.mesh.tensor)
        self.model = load_hf(c.model.path, dtype=c.model.dtype, mesh=self.mesh)
        self.cfg = self.model.config
        self.pool = grading.GradingPool(
            num_workers=c.reward.grading_workers, timeout=c.reward.grading_timeout
        )
        if c.data.curriculum_fraction < 1.0:
            self._apply_curriculum()
        n = len(self.prompts.records)
        if n < c.data.prompts_per_step:
            raise ValueError(
                f"{c.data.dataset}: {n} usable prompts < data.prompts_per_step="
                f"{c.data.prompts_per_step}"
            )
        self.golds = [r.get("answer") for r in self.prompts.records]
        self.offline = None
        if c.reward.mode == "offline":
            labels = _load_offline_labels(c.reward.offline_labels)
            self.offline = [labels.get(str(r["id"])) for r in self.prompts.records]
        self.iterator = PromptIterator(n, c.data.prompts_per_step, c.seed, shuffle=c.data.shuffle)
        steps_per_epoch = n // c.data.prompts_per_step
        self.total_steps = c.train.epochs * steps_per_epoch if c.train.epochs else c.train.steps
        lr = ts.make_schedule(
            c.optim.lr,
            c.optim.schedule,
            self.total_steps,
            c.optim.warmup_ratio,
            c.algo.updates_per_step,
        )
        tx = ts.make_optimizer(lr, c.optim.weight_decay, c.optim.grad_clip, c.optim.b1, c.optim.b2)
        low_precision = c.model.dtype != "float32"
        self.opt = (
            ts.MasterWeights(tx) if low_precision and c.model.fp32_master_weights else ts.Plain(tx)
        )
        self.lr_fn = lr
        params = self.model.params()
        self.ref_params = jax.tree.map(jnp.copy, params) if s.update.need_ref else None
        self.params = params
        # optimizer moments take their params' shardings (jit alone would replicate them)
        opt_shapes = jax.eval_shape(self.opt.init, params)
        self.opt_state = jax.jit(
            self.opt.init, out_shardings=sharding.like_shardings(opt_shapes, params, self.mesh)
        )(params)
        self._train_step = ts.make_train_step(self.cfg, s.loss, self.opt)
        self._logprobs = ts.make_logprob_fn(
            self.cfg,
            s.rollout.max_new_tokens,
            micro_batch=s.loss.micro_batch_size,
            head_dtype=s.loss.head_dtype,
            prompt_group=s.loss.prompt_group,
        )
        self._stats_fn = None
        if consensus.needs_token_stats(s.score.mode, s.score.weights):
            m = s.rollout.n_votes  # the B M rows of all votes, M consecutive per prompt
            mb = s.loss.micro_batch_size
            self._stats_fn = ts.make_logprob_fn(
                self.cfg,
                s.rollout.max_new_tokens,
                micro_batch=mb if mb and (s.rollout.prompts_per_step * m) % mb == 0 else 0,
                head_dtype=s.loss.head_dtype,
                prompt_group=math.gcd(s.loss.prompt_group, m),
                stats=True,
            )
        self.trust = None
        if s.trust_region is not None:
            self.trust = guard.TrustRegion(**s.trust_region)
        self.step = 0
        # early stopping on train.best_metric: best value so far, evaluations since it
        self.early = {"best": None, "since": 0, "stopped": False}
        self.ckpt = checkpointing.Checkpointer(
            os.path.join(c.output_dir, "checkpoints"),
            keep_last=c.train.keep_last,
            best_metric=c.train.best_metric or None,
        )
        self._maybe_resume()
        # opened after the resume: rows an interrupted run wrote past its last checkpoint
        # are cut off (they are about to be written again), so every step appears once
        resumed = self.ckpt.latest_step() is not None
        self.writer = metrics.MetricWriter(
            c.output_dir,
            tensorboard=c.train.tensorboard,
            wandb_project=c.train.wandb_project or None,
            config=c.to_dict(),
            resume_step=self.step if resumed else -1,
        )

    # ------------------------------------------------------------------ state
    def _apply_curriculum(self) -> None:
        """Keeps the ``data.curriculum_fraction`` of the prompts that the base model
        answers most consistently (SRT's curriculum, `ttrl_jax.data.curriculum`).

        The ratios come from ``<output_dir>/curriculum.json`` when it exists, else from one
        voting pass of ``self.model`` -- the base weights, loaded before any checkpoint
        is restored -- with the rollout's sampling settings, then cached.
        """
        c = self.c
        ids = [str(r["id"]) for r in self.prompts.records]
        fingerprint = {
            "model.path": c.model.path,
            "data.dataset": c.data.dataset,
            "data.suffix": c.data.suffix,
            "model.system_prompt": c.model.system_prompt,
            "model.enable_thinking": c.model.enable_thinking,
            "rollout.n_votes": c.rollout.n_votes,
            "rollout.temperature": c.rollout.temperature,
            "rollout.top_p": c.rollout.top_p,
            "rollout.top_k": c.rollout.top_k,
            "rollout.max_new_tokens": c.rollout.max_new_tokens,
            "reward.task": c.reward.task,
            "reward.clustering": c.reward.clustering,
            "seed": c.seed,
        }
        path = curriculum.cache_path(c.output_dir)
        ratios = curriculum.load_ratios(path, fingerprint, ids)  # [n] or None
        if ratios is None:
            settings = dataclasses.replace(
                eval_settings(c),
                n_samples=c.rollout.n_votes,
                temperature=c.rollout.temperature,
                top_p=c.rollout.top_p,
                top_k=c.rollout.top_k,
                max_new_tokens=c.rollout.max_new_tokens,
                greedy=False,
            )
            t0 = time.perf_counter()
            ratios = evaluation.majority_ratios(
                self.model,
                self.tok,
                self.prompts.token_ids,
                settings,
                key=jax.random.fold_in(jax.random.key(c.seed), _CURRICULUM_STREAM),
                mesh=self.mesh,
                pool=self.pool,
            )
            if jax.process_index() == 0:
                curriculum.save_ratios(path, fingerprint, ids, ratios)
            log.info(
                "curriculum voting pass: %d prompts in %.1fs", len(ids), time.perf_counter() - t0
            )
        keep = curriculum.select_most_consistent(ratios, c.data.curriculum_fraction)  # [k]
        p = self.prompts
        self.prompts = dataclasses.replace(
            p,
            token_ids=[p.token_ids[i] for i in keep],
            texts=[p.texts[i] for i in keep],
            records=[p.records[i] for i in keep],
        )
        self.curriculum = {
            "prompts": len(keep),
            "of": len(ids),
            "ratio_kept_mean": float(ratios[keep].mean()),
            "ratio_all_mean": float(ratios.mean()),
        }
        log.info("curriculum: %s", self.curriculum)

    def _maybe_resume(self) -> None:
        if self.ckpt.latest_step() is None:
            return
        step, params, opt_state, meta = self.ckpt.restore(
            "latest", params_like=self.params, opt_state_like=self.opt_state
        )
        self.params, self.opt_state = params, opt_state
        self.iterator.restore(meta["iterator"])
        self.step = int(meta["step"])
        self.early = meta.get("early_stop", self.early)
        if self.trust is not None:
            self.trust.restore(meta.get("guard"))
        log.info("resumed from %s at step %d", self.ckpt.directory, step)

    def save(self, eval_metrics: dict | None = None, force: bool = False) -> None:
        meta = {
            "step": self.step,
            "iterator": self.iterator.state(),
            "seed": self.c.seed,
            "config": self.c.to_dict(),
            "early_stop": self.early,
            "guard": None if self.trust is None else self.trust.state(),
        }
        self.ckpt.save(
            self.step, self.params, self.opt_state, meta, metrics=eval_metrics, force=force
        )

    # ------------------------------------------------------------------ one step
    def _prompt_batch(self, idx: np.ndarray):
        ids = [self.prompts.token_ids[i] for i in idx]
        return left_pad(ids, self.tok.pad_id, multiple=self.s.rollout.prompt_bucket)  # [B, P] x2

    def rollout(
        self, tokens: np.ndarray, mask: np.ndarray, key: jax.Array, params=None
    ) -> sampling.Rollout:
        """M samples per prompt with the current (or given) params: ``[B, M, T]``."""
        r = self.s.rollout
        spec = RolloutSpec(
            r.n_votes,
            r.max_new_tokens,
            r.temperature,
            r.top_p,
            r.top_k,
            r.head_dtype,
            r.decode_slots,
            r.attn_kernel,
        )
        return generate.rollout(
            self.params if params is None else params,
            self.cfg,
            tokens,
            mask,
            key,
            spec,
            eos_ids=self.tok.eos_ids,
            pad_id=self.tok.pad_id,
            mesh=self.mesh,
            prompt_len=tokens.shape[1],  # already bucketed by data.prompt_bucket
        )

    def train_one_step(self) -> dict:
        """One RL step, five stages, each timed (``time/<stage>``): rollout -> score ->
        build batch (N of M, masks; then the old / reference log-prob recomputation) ->
        advantages -> update. Returns the step's metrics."""
        clock = _StageClock()
        idx = next(self.iterator)
        key = jax.random.fold_in(jax.random.key(self.s.loop.seed), self.step)
        k_sample, k_choose = jax.random.split(key)
        with clock("rollout"):
            prompts, out = self._rollout_stage(idx, k_sample)
        with clock("grading"):
            stats = self._token_scores(prompts, out)
            rw, m = self._score_stage(idx, out, k_choose, stats)
        with clock("prepare"):
            batch = self._build_batch(prompts, out, rw, stats)
            old, ref = self._recompute_logprobs(batch)
            arrays = self._advantages(batch, old, ref)
        with clock("update"):
            upd = self._update(arrays, self._hyper(), m)
        m.update(batch.metrics)
        m.update({f"actor/{k}": v for k, v in upd.items()})
        m.update(self._step_metrics(out, clock))
        self.step += 1
        return m

    # ------------------------------------------------------------------ stages
    def _rollout_stage(self, idx: np.ndarray, key: jax.Array):
        """B prompts -> ``((prompt tokens [B, P], mask [B, P]), Rollout [B, M, T])`` on host."""
        prompts = self._prompt_batch(idx)
        out = self.rollout(*prompts, key)
        # every process gathers the whole rollout, so no host votes on a partial group
        return prompts, sampling.Rollout(*sharding.to_host(tuple(out)))

    def _token_scores(self, prompts, out: sampling.Rollout) -> dict | None:
        """The policy's log-prob pass over all B M samples, for the label-free rewards
        that score a sample by its own distributions (None when no reward needs it):
        per-sample means over the response tokens of the self-certainty and entropy
        ``[B, M]``, and the per-token log-probs ``[B, M, T]`` (the old log-probs)."""
        if self._stats_fn is None:
            return None
        b, m, t = out.tokens.shape
        seq, attn, live = _sequences(*prompts, out.tokens, out.lengths)
        seq_d, attn_d = sharding.shard_batch((seq, attn), self.mesh)
        lp, ent, cert = sharding.to_host(
            self._stats_fn(self.params, seq_d, attn_d, self._hyper()["temperature"])
        )
        live = live.astype(np.float32)  # [B, M, T]
        n_tok = np.maximum(live.sum(-1), 1.0)  # [B, M]

        def mean(x):  # [B M, T] -> [B, M]
            return (x.reshape(b, m, t) * live).sum(-1) / n_tok

        return {
            "self_certainty": mean(cert),
            "token_entropy": mean(ent),
            "logprobs": lp.reshape(b, m, t),
        }

    def _score_stage(
        self, idx: np.ndarray, out: sampling.Rollout, key: jax.Array, stats: dict | None = None
    ):
        """Decodes, extracts, votes and rewards (`consensus.score`): ``(rewards, metrics)``."""
        w = self.s.score
        texts = consensus.decode_completions(self.tok.tokenizer, out.tokens, out.lengths)
        rw, m, _ = consensus.score(
            texts,
            key,
            mode=w.mode,
            task=w.task,
            clustering=w.clustering,
            golds=[self.golds[i] for i in idx] if any(self.golds[i] for i in idx) else None,
            offline_labels=None if self.offline is None else [self.offline[i] for i in idx],
            n_train=self.s.rollout.n_train,
            threshold=w.threshold,
            soft=w.soft,
            keep_fraction=w.keep_fraction,
            pool=self.pool,
            token_scores=None
            if stats is None
            else {k: stats[k] for k in ("self_certainty", "token_entropy")},
            mode_weight=w.mode_weight,
            weights=w.weights,
        )
        if self.probe_fn is not None:
            problems = [self.prompts.records[i]["problem"] for i in idx]
            m.update({f"probe/{k}": float(v) for k, v in self.probe_fn(problems, texts).items()})
        return rw, m

    def _hyper(self) -> dict:
        s = self.s
        return {
            "temperature": jnp.float32(max(s.rollout.temperature, 1e-6)),
            "kl_coef": jnp.float32(s.update.kl_coef),
            "entropy_coef": jnp.float32(s.update.entropy_coef),
        }

    def _step_metrics(self, out: sampling.Rollout, clock: _StageClock) -> dict:
        """Lengths, entropy, lr, stage times and throughput of one step."""
        resp = out.lengths.astype(np.float64)
        t = clock.seconds
        return {
            "lr": float(self.lr_fn(self.step * self.s.update.updates_per_step)),
            "response_length/mean": float(resp.mean()),
            "response_length/max": float(resp.max()),
            "response_length/clip_ratio": float(np.mean(self._clipped(out.tokens, out.lengths))),
            # mean -log pi(token) of the sampled tokens: a Monte Carlo estimate of
            # the sampling policy's per-token entropy (exact in expectation at any T)
            "rollout/token_entropy": float(-out.logprobs.sum() / max(resp.sum(), 1.0)),
            **{f"time/{k}": v for k, v in t.items()},
            "time/step": sum(t.values()),
            "throughput/rollout_tokens_per_s": float(resp.sum()) / max(t["rollout"], 1e-9),
            "epoch": float(self.iterator.state()["epoch"]),
        }

    def _update(self, batch: dict, hyper: dict, m: dict) -> dict:
        """The jitted update, under the guard's trust region when it is on.

        With ``guard.step_kl_target > 0`` each attempt is judged by its KL(pi_old ||
        pi_new) on the trained tokens (`guard.TrustRegion`); a rejected attempt is
        undone (params and optimizer state from copies taken before it, since the
        update donates its inputs) and retried at a smaller lr scale.
        """
        tr, measure = self.trust, self.trust is not None or self.s.update.log_step_kl
        if not measure:
            upd = self._train_step(self.params, self.opt_state, batch, hyper)
            self.params, self.opt_state = upd[0], upd[1]
            return {k: float(v) for k, v in upd[2].items()}
        old = sharding.to_host(batch["old_logprobs"])
        mask = sharding.to_host(batch["resp_mask"])
        rejected = 0
        while True:
            keep = None
            if tr is not None:
                keep = jax.tree.map(jnp.copy, (self.params, self.opt_state))
                hyper = {**hyper, "lr_scale": jnp.float32(tr.scale)}
            scale = 1.0 if tr is None else tr.scale
            params, opt_state, upd = self._train_step(self.params, self.opt_state, batch, hyper)
            new = sharding.to_host(
                self._logprobs(params, batch["tokens"], batch["attn_mask"], hyper["temperature"])
            )
            kl = guard.step_kl(new, old, mask)
            if tr is None or tr.accept(kl):
                self.params, self.opt_state = params, opt_state
                break
            self.params, self.opt_state = keep
            rejected += 1
            if rejected > tr.max_backtracks:
                log.warning("step %d: update skipped by the trust region (KL %.3g)", self.step, kl)
                break
        m["guard/step_kl"] = kl
        m["guard/lr_scale"] = scale
        m["guard/rejected"] = float(rejected)
        return {k: float(v) for k, v in upd.items()}

    def _clipped(self, tokens: np.ndarray, lengths: np.ndarray) -> np.ndarray:
        """``[B, M]`` bool: the sample hit the length limit without an EOS."""
        last = np.take_along_axis(tokens, np.maximum(lengths - 1, 0)[..., None], -1)[..., 0]
        return (lengths >= tokens.shape[-1]) & ~np.isin(last, self.tok.eos_ids)

    def _build_batch(self, prompts, out: sampling.Rollout, rw, stats=None) -> TrainBatch:
        """Keeps the N trained samples of each prompt and builds their masks (host numpy,
        identical on every process)."""
        u = self.s.update
        prompt_tokens, prompt_mask = prompts  # [B, P] x2
        idx = np.asarray(rw.indices)  # [B, N]
        resp_tokens = np.take_along_axis(out.tokens, idx[..., None], axis=1)  # [B, N, T]
        lengths = np.take_along_axis(out.lengths, idx, axis=1)  # [B, N]
        b, n, t = resp_tokens.shape
        if self.s.loss.prompt_group > 1 and n != self.s.loss.prompt_group:
            raise RuntimeError(f"{n} trained samples per prompt, expected {self.s.rollout.n_train}")
        # a prompt without a (pseudo-)label has reward 0 on every sample; "keep" (SRT)
        # leaves it in the batch (its tokens count in the loss denominators), "drop" not
        labelled = np.asarray(rw.label_mask)  # [B]
        in_batch = rw.keep & (labelled | (self.s.score.below_threshold == "keep"))  # [B]
        valid = np.broadcast_to(np.asarray(in_batch)[:, None], (b, n))  # [B, N]
        rewards = np.asarray(rw.rewards, np.float32)  # [B, N]
        extra = {}
        if u.drop_uniform_groups:
            flat, frac = rl.all_equal_groups(jnp.asarray(rewards), jnp.asarray(valid))
            valid = valid & ~np.asarray(flat)[:, None]
            extra["dropped_uniform_group_fraction"] = float(frac)
        seq, attn, live = _sequences(prompt_tokens, prompt_mask, resp_tokens, lengths)
        extra["trained_sequence_fraction"] = float(valid.mean())
        extra["unlabelled_prompt_fraction"] = float(1.0 - labelled.mean())
        policy_lp = None
        if stats is not None:
            policy_lp = np.take_along_axis(stats["logprobs"], idx[..., None], 1).reshape(b * n, t)
        return TrainBatch(
            tokens=seq,
            attn_mask=attn,
            resp_mask=(live & valid[..., None]).astype(np.float32),
            sampler_logprobs=np.take_along_axis(out.logprobs, idx[..., None], 1).reshape(b * n, t),
            rewards=rewards,
            valid=valid,
            labelled=labelled,
            metrics=extra,
            policy_logprobs=policy_lp,
        )

    def _recompute_logprobs(self, batch: TrainBatch):
        """``(old [S, T], ref [S, T] | None)``: the current policy's log-probs of the
        trained tokens (``algo.old_logprobs=recompute``; else the sampler's) and the
        reference model's when a KL term needs them. Runs sharded on the mesh."""
        temp = self._hyper()["temperature"]
        seq_d, attn_d = sharding.shard_batch((batch.tokens, batch.attn_mask), self.mesh)
        flat_mask = batch.flat_mask
        old = batch.sampler_logprobs
        if self.s.update.old_logprobs == "recompute":
            old = batch.policy_logprobs  # from the score stage's pass, when it ran
            if old is None:
                old = sharding.to_host(self._logprobs(self.params, seq_d, attn_d, temp))
            batch.metrics["logprob_gap/sampler_vs_trainer"] = float(
                (np.abs(old - batch.sampler_logprobs) * flat_mask).sum() / batch.n_tokens
            )
        ref = None
        if self.s.update.need_ref:
            ref = sharding.to_host(self._logprobs(self.ref_params, seq_d, attn_d, temp))
        return old, ref

    def _advantages(self, batch: TrainBatch, old: np.ndarray, ref: np.ndarray | None) -> dict:
        """Token advantages (``algo.advantage``; the KL folded into the reward when
        ``algo.kl_in_reward``) -> the update's sharded input arrays, ``[S, ...]``."""
        u = self.s.update
        b, n, t = batch.resp_mask.shape
        arrays = {
            "tokens": batch.tokens,
            "attn_mask": batch.attn_mask,
            "resp_mask": batch.flat_mask,
            "old_logprobs": old,
        }
        mask3 = jnp.asarray(batch.resp_mask)
        v, r = jnp.asarray(batch.valid), jnp.asarray(batch.rewards)
        if ref is not None and not self.s.loss.kl_as_loss:
            kl = rl.kl_estimate(
                jnp.asarray(old).reshape(b, n, t),
                jnp.asarray(ref).reshape(b, n, t),
                u.kl_type,
                u.kl_clamp,
            )
            batch.metrics["kl_in_reward"] = float((kl * mask3).sum() / batch.n_tokens)
            kl = kl * jnp.asarray(batch.labelled, kl.dtype)[:, None, None]  # unlabelled: no KL
            adv = rl.kl_in_reward_advantages(
                u.advantage, r, kl, mask3, u.kl_coef, v, reward_to_go=u.kl_reward_to_go
            )
        else:
            if ref is not None:
                arrays["ref_logprobs"] = ref
            adv = rl.token_advantages(u.advantage, r, mask3, v)
        adv = np.asarray(adv)
        arrays["advantages"] = adv.reshape(b * n, t)
        batch.metrics["advantage/abs_mean"] = float(np.abs(adv).sum() / batch.n_tokens)
        return sharding.shard_batch(arrays, self.mesh)

    # ------------------------------------------------------------------ loop
    def _early_stop(self, eval_metrics: dict) -> bool:
        """Updates the early-stopping state with one evaluation; True: stop now.

        Stops after ``train.early_stop_patience`` evaluations in a row whose
        ``train.best_metric`` did not beat the best so far by more than ``min_delta``;
        the best checkpoint (kept by the checkpointer) is then the early-stopped model.
        """
        t = self.s.loop
        if not t.early_stop_patience:
            return False
        value = float(eval_metrics[t.best_metric])
        e = self.early
        if e["best"] is None or value > e["best"] + t.early_stop_min_delta:
            e["best"], e["since"] = value, 0
        else:
            e["since"] += 1
        e["stopped"] = e["since"] >= t.early_stop_patience
        return e["stopped"]

    def _evaluate_start(self) -> None:
        """With a best-checkpoint metric, the starting model is a candidate too: a fresh
        run evaluates and saves step 0, so a run that only gets worse keeps (and early
        stopping returns) the model it started from, never one below it."""
        t = self.s.loop
        if not (self.eval_fn and t.eval_every and t.best_metric):
            return
        if self.step or self.ckpt.latest_step() is not None:
            return
        eval_metrics = self.eval_fn(self, 0)
        self._early_stop(eval_metrics)
        self.writer.write(0, eval_metrics)
        self.save(eval_metrics, force=True)

    def run(self) -> dict:
        """Trains until ``total_steps``; returns the last step's metrics."""
        from tqdm import tqdm

        t, u = self.s.loop, self.s.update
        last: dict = {}
        bad = 0
        bar = tqdm(
            total=self.total_steps,
            initial=self.step,
            disable=not t.progress or jax.process_index() != 0,
            desc="ttrl",
            dynamic_ncols=True,
        )
        try:
            with jax.set_mesh(self.mesh):
                self._evaluate_start()
                while self.step < self.total_steps and not self.early["stopped"]:
                    m = self.train_one_step()
                    skipped = m.get("actor/skipped", 0.0)
                    # every update rejected: the params did not move, and the step is not
                    # checkpointed, so keep-last never drops a good checkpoint for it
                    all_skipped = skipped >= u.updates_per_step
                    bad = bad + 1 if all_skipped else 0
                    if skipped:
                        log.warning(
                            "step %d: %d update(s) rejected (non-finite or diverging: update "
                            "ratio %.3g)",
                            self.step,
                            skipped,
                            m.get("actor/update_ratio", float("nan")),
                        )
                    eval_metrics = None
                    if self.eval_fn and t.eval_every and self.step % t.eval_every == 0:
                        eval_metrics = self.eval_fn(self, self.step)
                        m.update(eval_metrics)
                        if self._early_stop(eval_metrics):
                            m["early_stopped"] = 1.0
                            log.info(
                                "step %d: %s has not improved on %.4f for %d evaluations; "
                                "stopping early",
                                self.step,
                                t.best_metric,
                                self.early["best"],
                                self.early["since"],
                            )
                    self.writer.write(self.step, m)
                    last = m
                    if bad >= t.max_bad_steps:
                        self.ckpt.wait()
                        raise TrainingError(
                            f"{bad} RL steps in a row had only rejected (non-finite or "
                            "diverging) updates; stopping (last good checkpoint: "
                            f"{self._last_good()})"
                        )
                    if not all_skipped and (
                        self.step % t.save_every == 0
                        or self.step == self.total_steps
                        or self.early["stopped"]
                    ):
                        self.save(eval_metrics)
                    bar.update(1)
                    bar.set_postfix(
                        {
                            k: round(m[k], 3)
                            for k in ("reward_mean", "majority_ratio", "label_accuracy")
                            if k in m
                        }
                    )
        finally:
            bar.close()
            self.ckpt.wait()
        return last

    def _last_good(self) -> str:
        step = self.ckpt.latest_step()
        where = os.path.join(self.c.output_dir, "checkpoints")
        return "none" if step is None else f"step {step} in {where}"

    def close(self) -> None:
        for part in (self.ckpt, self.writer, self.pool):
            if part is not None:
                part.close()
