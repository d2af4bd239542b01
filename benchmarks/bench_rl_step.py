"""One full label-free RL step: ttrl-jax's `Trainer` vs TRL's `GRPOTrainer` (PyTorch CPU).

Both sides run in one invocation on identical weights and an identical workload:

* model: a random Qwen2 written once by `transformers.save_pretrained` (`common.TINY_QWEN2`:
  hidden 256, 4 layers, 4 heads, 2 kv heads, intermediate 704, vocab 32000, tied
  embeddings, ~11M params), fp32, with a real byte-level BPE tokenizer of the same
  vocabulary (`common.write_tokenizer`) and a Qwen-style chat template;
* step: 8 prompts x 8 samples x 128 new tokens (EOS blocked: no stop ids for ours,
  ``min_new_tokens=128`` for TRL, so every sample is exactly 128 tokens), temperature 1,
  full vocabulary; answers extracted from every completion, majority vote over the 8
  samples of a prompt, reward 1 for agreeing with it; group-normalised (GRPO)
  advantages; one AdamW update on all 64 samples with a k3 KL penalty to a frozen
  reference model, beta = kl_coef = 0.04:

      KL_k3 = exp(lp_ref - lp) - (lp_ref - lp) - 1   per token.

Ours drives the library's real path: `ttrl_jax.trainer.Trainer.train_one_step`
(`sampling.sample` -> `consensus.score` with the grading pool -> reference log-probs ->
jitted, donated `train_step`). TRL's reward is written the way a TRL user would: a
regex answer extractor and a `collections.Counter` majority per prompt group.

Ours runs three times: fp32 throughout; with the mixed-precision LM head
(``model.head_dtype=bfloat16``: bf16 operands, fp32 accumulation, softmax and weight
gradient, in the sampler, the reference log-probs and the update alike, so the
sampler's log-probs stay the trainer's); and with bf16 params (``model.dtype=bfloat16``,
the library's default: fp32 master weights and optimizer state). TRL runs fp32.

Each side runs in its own subprocess (so its peak RSS is its own): 1 untimed warm-up
step (compilation for ours) and ``--steps`` timed steps; the median of each phase is
reported. Phases: generation (sampling), grading (answer extraction + voting +
rewards), update (everything else: reference / old log-probs, advantages, forward,
backward and the optimizer step).

Run: ``python benchmarks/bench_rl_step.py`` (``--smoke``: `common.SMOKE_QWEN2`, 16 new
tokens, 1 timed step, ~15 s with TRL).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import common

PROBLEMS = [
    (f"What is {a} + {b}? Put the answer in \\boxed{{}}.", str(a + b))
    for a, b in [(12, 7), (3, 5), (40, 2), (9, 9), (15, 27), (6, 1), (100, 23), (8, 13)]
]


def write_workload(root: str, dims: dict) -> tuple[str, str]:
    """Model + tokenizer directory and a JSONL dataset of 8 problems under ``root``."""
    model_dir = os.path.join(root, "model")
    common.write_qwen2(model_dir, **dims)
    common.write_tokenizer(model_dir, dims["vocab"])
    data = os.path.join(root, "data.jsonl")
    with open(data, "w", encoding="utf-8") as f:
        f.writelines(
            json.dumps({"id": str(i), "problem": p, "answer": a}) + "\n"
            for i, (p, a) in enumerate(PROBLEMS)
        )
    return model_dir, data


def _median(xs):
    xs = sorted(xs)
    n = len(xs)
    return xs[n // 2] if n % 2 else 0.5 * (xs[n // 2 - 1] + xs[n // 2])


# ---------------------------------------------------------------------------- ours
def ours_config(model_dir: str, data: str, out: str, a):
    from ttrl_jax.config import default_config

    c = default_config()
    c.output_dir = out
    c.model.path, c.model.dtype, c.model.remat = model_dir, a.model_dtype, a.remat
    c.mesh.data = 1
    c.data.dataset, c.data.id_key = data, "id"
    c.data.prompts_per_step, c.data.prompt_bucket, c.data.shuffle = a.prompts, 16, False
    c.rollout.n_votes, c.rollout.n_train = a.samples, 0
    c.rollout.temperature, c.rollout.max_new_tokens = 1.0, a.new_tokens
    c.reward.mode, c.reward.grading_workers = "ttrl", 1
    c.algo.advantage, c.algo.kl_coef, c.algo.kl_type = "grpo", 0.04, "k3"
    c.algo.updates_per_step, c.algo.micro_batch_size = 1, 0
    c.optim.lr, c.optim.schedule, c.optim.warmup_ratio = 1e-6, "constant", 0.0
    c.model.head_dtype = a.head_dtype  # "" (fp32) or bfloat16: sampler, ref and update
    c.train.steps, c.train.tensorboard, c.train.progress = 1000, False, False
    return c


def run_ours(model_dir: str, data: str, out: str, a) -> dict:
    import jax

    from ttrl_jax.trainer import Trainer

    t0 = time.perf_counter()
    trainer = Trainer(ours_config(model_dir, data, out, a))
    trainer.tok.eos_ids = ()  # EOS blocked: every sample is max_new_tokens long
    setup = time.perf_counter() - t0
    rows = []
    try:
        with jax.set_mesh(trainer.mesh):
            for _ in range(1 + a.steps):
                m = trainer.train_one_step()
                rows.append(
                    {
                        "step": m["time/step"],
                        "generation": m["time/rollout"],
                        "grading": m["time/grading"],
                        "update": m["time/prepare"] + m["time/update"],
                        "tokens": m["response_length/mean"] * a.prompts * a.samples,
                    }
                )
    finally:
        trainer.close()
    return {"setup": setup, "warmup": rows[0], "steps": rows[1:]}


# ---------------------------------------------------------------------------- TRL
ANSWER_RE = r"\\boxed\{([^{}]*)\}|(-?\d+(?:\.\d+)?)"


def majority_reward(prompts, completions, **kwargs):
    """TTRL's reward as a TRL reward function: 1.0 if a completion's answer is the
    majority answer of the completions of the same prompt, else 0.0."""
    import re
    from collections import Counter, defaultdict

    def answer(text):
        found = re.findall(ANSWER_RE, text)
        if not found:
            return None
        boxed = [b for b, _ in found if b]
        return boxed[-1].strip() if boxed else found[-1][1]

    texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
    answers = [answer(t) for t in texts]
    groups = defaultdict(list)  # the same prompt appears once per generation
    for i, p in enumerate(prompts):
        groups[json.dumps(p)].append(i)
    rewards = [0.0] * len(texts)
    for idx in groups.values():
        votes = Counter(answers[i] for i in idx if answers[i] is not None)
        if votes:
            major = votes.most_common(1)[0][0]
            for i in idx:
                rewards[i] = float(answers[i] == major)
    return rewards


def run_trl(model_dir: str, data: str, out: str, a) -> dict:
    import torch
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    torch.manual_seed(0)
    t0 = time.perf_counter()
    with open(data, encoding="utf-8") as f:
        rows = [json.loads(line) for line in f]
    ds = Dataset.from_list([{"prompt": [{"role": "user", "content": r["problem"]}]} for r in rows])
    tok = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    cfg = GRPOConfig(
        output_dir=out,
        per_device_train_batch_size=a.prompts * a.samples,
        gradient_accumulation_steps=1,
        num_generations=a.samples,
        num_iterations=1,
        max_completion_length=a.new_tokens,
        generation_kwargs={"min_new_tokens": a.new_tokens},
        temperature=1.0,
        top_p=1.0,
        beta=0.04,
        learning_rate=1e-6,
        lr_scheduler_type="constant",
        max_steps=1 + a.steps,
        use_cpu=True,
        bf16=False,
        fp16=False,
        logging_steps=1,
        save_strategy="no",
        report_to="none",
        disable_tqdm=True,
        seed=0,
        gradient_checkpointing=False,
        shuffle_dataset=False,
    )
    trainer = GRPOTrainer(
        model=model, reward_funcs=majority_reward, args=cfg, train_dataset=ds, processing_class=tok
    )
    setup = time.perf_counter() - t0
    phases = {"generation": 0.0, "grading": 0.0}

    def timed_method(name, phase):
        fn = getattr(trainer, name)

        def wrapper(*args, **kw):
            t = time.perf_counter()
            try:
                return fn(*args, **kw)
            finally:
                phases[phase] += time.perf_counter() - t

        setattr(trainer, name, wrapper)

    timed_method("_generate", "generation")
    timed_method("_calculate_rewards", "grading")
    steps, lengths = [], []

    class StepTimer(TrainerCallback):
        def on_step_begin(self, args, state, control, **kw):
            phases.update(generation=0.0, grading=0.0, t0=time.perf_counter())

        def on_step_end(self, args, state, control, **kw):
            total = time.perf_counter() - phases["t0"]
            gen, grade = phases["generation"], phases["grading"]
            steps.append(
                {"step": total, "generation": gen, "grading": grade, "update": total - gen - grade}
            )

        def on_log(self, args, state, control, logs=None, **kw):
            if logs and "completions/mean_length" in logs:
                lengths.append(logs["completions/mean_length"])

    trainer.add_callback(StepTimer())
    trainer.train()
    for s, n in zip(steps, lengths):
        s["tokens"] = n * a.prompts * a.samples
    return {"setup": setup, "warmup": steps[0], "steps": steps[1:]}


# ---------------------------------------------------------------------------- driver
def worker(a) -> None:
    fn = run_ours if a.worker == "ours" else run_trl
    res = fn(a.model_dir, a.data, os.path.join(a.root, a.worker), a)
    res["peak_rss_gib"] = common.peak_rss_gib()
    print("RESULT " + json.dumps(res), flush=True)


# side -> (table label, worker, extra worker args)
SIDES = {
    "ours": ("ttrl-jax", "ours", []),
    "ours-bf16head": ("ttrl-jax, bf16 LM head", "ours", ["--head-dtype", "bfloat16"]),
    "ours-bf16": ("ttrl-jax, bf16 params", "ours", ["--model-dtype", "bfloat16"]),
    "trl": ("TRL 1.16 GRPOTrainer", "trl", []),
}
# The target, <= 4 s per step, was set on a machine where TRL took 36.0 s per
# step and JAX's fp32 2048^3 matmul ran at 417 GFLOP/s. Machines differ (a later VM of
# the same name measured half that peak while TRL's step stayed within 20 %), so the script
# prints the target both as a ratio to TRL and scaled by the measured matmul peak.
TARGET_S, TARGET_TRL_S, TARGET_PEAK = 4.0, 36.0, 417.0
TARGET_RATIO = TARGET_S / TARGET_TRL_S


def spawn(side: str, a, model_dir: str, data: str, root: str) -> dict:
    _, kind, extra = SIDES[side]
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", kind, "--model-dir", model_dir]
    cmd += ["--data", data, "--root", os.path.join(root, side), "--steps", str(a.steps)]
    cmd += ["--prompts", str(a.prompts), "--samples", str(a.samples)]
    cmd += ["--new-tokens", str(a.new_tokens)] + (["--remat"] if a.remat else []) + extra
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, check=False, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode or not lines:
        sys.stderr.write(proc.stdout[-4000:] + proc.stderr[-4000:])
        raise SystemExit(f"the {side} worker failed (exit {proc.returncode})")
    res = json.loads(lines[-1][len("RESULT ") :])
    res["wall"] = wall
    return res


def summary_rows(name: str, res: dict) -> list:
    st = res["steps"]
    med = {k: _median([s[k] for s in st]) for k in ("step", "generation", "grading", "update")}
    tok_s = _median([s["tokens"] / s["generation"] for s in st])
    return [
        name,
        med["step"],
        med["generation"],
        med["grading"],
        med["update"],
        tok_s,
        res["warmup"]["step"],
        res["peak_rss_gib"],
    ]


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--smoke", action="store_true", help="tiny model, 16 tokens, 1 step")
    p.add_argument("--steps", type=int, default=3, help="timed steps after 1 warm-up step")
    p.add_argument("--prompts", type=int, default=8)
    p.add_argument("--samples", type=int, default=8)
    p.add_argument("--new-tokens", type=int, default=128)
    p.add_argument("--only", nargs="+", choices=tuple(SIDES), help="run these sides only")
    p.add_argument("--remat", action="store_true", help="ours: rematerialise blocks (default off)")
    p.add_argument("--head-dtype", default="", help=argparse.SUPPRESS)
    p.add_argument("--model-dtype", default="float32", help=argparse.SUPPRESS)
    p.add_argument("--worker", choices=("ours", "trl"), help=argparse.SUPPRESS)
    p.add_argument("--model-dir", help=argparse.SUPPRESS)
    p.add_argument("--data", help=argparse.SUPPRESS)
    p.add_argument("--root", help=argparse.SUPPRESS)
    a = p.parse_args(argv)
    if a.worker:
        return worker(a)
    if a.smoke:
        a.steps, a.new_tokens = 1, 16
    dims = common.SMOKE_QWEN2 if a.smoke else common.TINY_QWEN2
    common.banner(
        f"bench_rl_step: one TTRL/GRPO step, ttrl-jax vs TRL GRPOTrainer{' (smoke)' * a.smoke}"
    )
    print(
        f"model {dims}, fp32 checkpoint; {a.prompts} prompts x {a.samples} samples x "
        f"{a.new_tokens} new tokens (EOS blocked); 1 update/step, k3 KL beta 0.04; ours remat={a.remat}; "
        f"1 warm-up + {a.steps} timed steps, medians",
        flush=True,
    )
    with tempfile.TemporaryDirectory() as root:
        model_dir, data = write_workload(root, dims)
        # smoke (CI, < 1 min for all scripts): one side of ours; the bf16 head has unit tests
        sides = a.only or (["ours", "trl"] if a.smoke else list(SIDES))
        res = {s: spawn(s, a, model_dir, data, root) for s in sides}
    rows = [summary_rows(SIDES[s][0], res[s]) for s in sides]
    common.table(
        [
            "",
            "step s",
            "generation s",
            "grading s",
            "update s",
            "gen tok/s",
            "warm-up step s",
            "peak RSS GiB",
        ],
        rows,
    )
    if "trl" in sides and len(sides) > 1:
        t = rows[sides.index("trl")]
        common.table(
            ["ratio to TRL", "step", "generation", "update", "peak RSS", "<= target 4/36"],
            [
                [o[0], o[1] / t[1], o[2] / t[2], o[4] / t[4], o[7] / t[7]]
                + ["yes" if o[1] / t[1] <= TARGET_RATIO else "no"]
                for o in rows
                if o is not t
            ],
        )
        print(
            f"target as a ratio: <= {TARGET_S:g} s where TRL took {TARGET_TRL_S:g} s, i.e. "
            f"ours / TRL <= {TARGET_RATIO:.3f} (TRL took {t[1]:.1f} s here)",
            flush=True,
        )
    if not a.smoke:  # the smoke run's driver stays free of JAX (CI time)
        peak = common.matmul_peak("float32", 2048, 5)
        print(
            f"target scaled by the fp32 matmul peak: {TARGET_S:g} s x {TARGET_PEAK:g} / "
            f"{peak:.0f} GFLOP/s measured now = {TARGET_S * TARGET_PEAK / peak:.1f} s; ours: "
            + ", ".join(f"{r[0]} {r[1]:.2f} s" for r in rows if r[0].startswith("ttrl")),
            flush=True,
        )
    print(f"load average at the end: {os.getloadavg()[0]:.2f}", flush=True)


if __name__ == "__main__":
    main()
