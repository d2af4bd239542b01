"""`make demo`: TTRL on a built-in synthetic task, visibly working on a laptop CPU.

Steps (everything through the same code paths a Qwen run uses: HF checkpoint on disk,
a real `tokenizers` tokenizer with a chat template, the jitted sampler, the grading
pool, the trainer, orbax checkpoints and the evaluator):

1. build (or reuse) the base model: `experiments.pretrain_tiny` (seeded);
2. write the unlabeled test set (labels kept only for reporting);
3. evaluate the base model: pass@1 and maj@16 at T = 1.0, greedy, T = 0.3;
4. TTRL on the test set (majority-vote reward, no labels) with periodic evaluation;
5. "RL with labels" (ground-truth reward, same budget) as the upper bound;
6. print a table in the shape of the paper's, write a PNG plot, TensorBoard logs and
   the final orbax checkpoints under ``--out``.

  python -m experiments.demo [--preset=demo|ci] [--out=demo_out] [--steps=30]
"""

from __future__ import annotations

import json
import os
import time

from absl import flags, logging

FLAGS = flags.FLAGS


def define_flags() -> None:
    """Command-line flags (defined only when run as a program, so that the two demo
    modules can import each other)."""
    flags.DEFINE_enum("preset", "demo", ["demo", "ci"], "Base-model preset (ci: tiny and fast).")
    flags.DEFINE_string("out", "demo_out", "Output directory (the base model is cached here).")
    flags.DEFINE_integer("seed", 0, "Seed of the base model, the data and the RL runs.")
    flags.DEFINE_integer("steps", 0, "RL steps per run (0: the preset's default).")
    flags.DEFINE_integer("num_test", 0, "Test problems (0: the preset's default).")
    flags.DEFINE_bool("labels_baseline", True, "Also run RL with ground-truth labels.")
    flags.DEFINE_integer("rl_seed", -1, "Seed of the RL runs and evaluations (-1: --seed).")
    flags.DEFINE_string("base_dir", "", "Where base models are cached (default: --out).")
    flags.DEFINE_bool("plot", True, "Write the PNG plot.")
    flags.DEFINE_list("set", [], "Run-config overrides key=value (e.g. optim.lr=4.5e-4).")
    flags.DEFINE_string(
        "compile_cache",
        "",
        "Persistent XLA compilation cache, so a rerun skips compiling (default: "
        "<base_dir>/jax_cache; 'none': off).",
    )
    flags.DEFINE_list(
        "seeds",
        [],
        "Robustness table instead: TTRL on the bases of these pretraining seeds "
        "under perturbed numerics (experiments.demo_robustness).",
    )


# preset -> test problems, RL steps, eval every, prompts per step, votes (trained per
# prompt, and the evaluation's k), pool (votes sampled per prompt for the majority vote,
# M; `votes` of them trained, N), lr, and the collapse guard's per-step KL target
# (ttrl_jax.update.guard; 0 = off). The demo votes over 32 and trains 16, TTRL's M:N of
# 2:1: with 16 votes at a base majority ratio of ~0.45 a third of the first steps'
# labels were wrong, and on an AVX2-only VM one base in five drifted, in steps the guard
# allowed, onto a consistent wrong answer (README, "On an AVX2-only VM").
SETTINGS = {
    "demo": dict(
        num_test=256,
        steps=30,
        eval_every=10,
        prompts=16,
        votes=16,
        pool=32,
        lr=3e-4,
        guard_kl=0.004,
    ),
    "ci": dict(
        num_test=64, steps=16, eval_every=16, prompts=16, votes=16, pool=16, lr=3e-4, guard_kl=0.004
    ),
}
# held-out problems (the inductive protocol): disjoint from the test set and, like it,
# never in the base model's pretraining corpus (experiments.pretrain_tiny.EXCLUDED_TEST)
HELDOUT = {"demo": 128, "ci": 64}


def write_jsonl(path: str, records: list[dict]) -> str:
    """Writes the records' problem / answer / id as JSONL (answers for reporting only)."""
    with open(path, "w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps({k: r[k] for k in ("problem", "answer", "id")}) + "\n")
    return path


def rl_config(
    model_dir: str,
    data: str,
    out: str,
    mode: str,
    s: dict,
    seed: int,
    overrides=None,
    heldout: str = "",
):
    """The TTRL (or ground-truth) run config for the demo's tiny model; ``overrides`` are
    ``key=value`` strings applied last (values parsed as the key's type). With a
    ``heldout`` file the run evaluates both protocols: the training set itself
    (transductive, ``eval/*``) and the disjoint held-out set (``eval_heldout/*``)."""
    from ttrl_jax.config import default_config

    c = default_config()
    c.name, c.output_dir, c.seed = f"demo_{mode}", out, seed
    c.model.path, c.model.dtype = model_dir, "float32"
    c.model.remat = False  # a 0.8M-parameter model: activations fit, recomputing costs time
    c.mesh.data = 1
    c.data.dataset, c.data.id_key = data, "id"
    c.data.max_prompt_tokens, c.data.prompt_bucket = 64, 32
    c.data.prompts_per_step = s["prompts"]
    c.rollout.n_votes, c.rollout.n_train = s.get("pool", s["votes"]), s["votes"]
    c.rollout.temperature, c.rollout.max_new_tokens = 1.0, 64
    c.reward.mode = mode
    c.reward.grading_workers = 1
    c.algo.advantage = "grpo"
    c.algo.kl_coef = 0.001
    c.algo.updates_per_step = 1
    c.optim.lr, c.optim.schedule, c.optim.warmup_ratio = s["lr"], "cosine", 0.0
    c.optim.weight_decay = 0.0
    # the trust region: each step's KL(pi_old || pi_new) on its trained tokens is kept
    # near guard_kl (an overshooting step is undone and retried at half the lr scale)
    c.guard.step_kl_target = s.get("guard_kl", 0.0)
    c.train.steps = s["steps"]
    c.train.eval_every = c.train.save_every = s["eval_every"]
    c.train.keep_last = 1
    c.train.best_metric = f"eval/mean@{s['votes']}"
    c.eval.n_samples, c.eval.temperature, c.eval.top_p = s["votes"], 1.0, 1.0
    c.eval.max_new_tokens, c.eval.greedy = 64, True
    if heldout:
        c.eval.protocol, c.eval.datasets = "both", heldout
    apply_overrides(c, overrides or [])
    return c


def apply_overrides(c, overrides: list[str]) -> None:
    """``["optim.lr=4.5e-4", ...]`` onto a locked config.

    Raises:
      ValueError: one line naming the item: not ``key=value``, no such key, or a value
        that does not parse as the key's type.
    """
    for item in overrides:
        key, sep, text = item.partition("=")
        if not sep:
            raise ValueError(f"--set {item!r}: expected key=value")
        try:
            current = c[key]  # ConfigDict resolves dotted keys
        except (KeyError, AttributeError):
            raise ValueError(f"--set {item!r}: no such config key {key!r}") from None
        try:
            if isinstance(current, bool):
                value = text.lower() in ("1", "true", "yes")
            elif isinstance(current, int):
                value = int(float(text))
            elif isinstance(current, float):
                value = float(text)
            else:
                value = text
        except ValueError:
            kind = type(current).__name__
            raise ValueError(f"--set {item!r}: {text!r} is not a {kind}") from None
        c.update_from_flattened_dict({key: value})


def base_metrics(model_dir: str, records, s: dict, out: str) -> dict:
    """pass@1 / maj@k at T = 1, greedy, and T = 0.3 accuracy of the base model."""
    from ttrl_jax.eval import evaluation
    from ttrl_jax.models import load_hf
    from ttrl_jax.models.tokenizer import load_tokenizer

    model, tok = load_hf(model_dir, dtype="float32"), load_tokenizer(model_dir)
    k = s["votes"]
    common = dict(
        max_new_tokens=64,
        prompts_per_batch=s["prompts"],
        max_prompt_tokens=64,
        prompt_bucket=32,
        top_p=1.0,
    )
    t1 = evaluation.evaluate(
        model,
        tok,
        records,
        evaluation.EvalSettings(n_samples=k, temperature=1.0, greedy=True, **common),
        out_dir=out,
        name="base",
    )
    t03 = evaluation.evaluate(
        model,
        tok,
        records,
        evaluation.EvalSettings(n_samples=k, temperature=0.3, greedy=False, seed=1, **common),
        out_dir=out,
        name="base_t0.3",
    )
    return {
        "pass@1": t1[f"mean@{k}"],
        "greedy": t1["greedy_pass@1"],
        "t0.3": t03[f"mean@{k}"],
        f"maj@{k}": t1[f"maj@{k}"],
    }


def train(config) -> dict:
    """Runs one RL job; returns its eval history and label metrics per step."""
    from ttrl_jax import trainer as trainer_lib
    from ttrl_jax.metrics import read_jsonl

    tr = trainer_lib.Trainer(config)
    try:
        tr.run()
        best = tr.ckpt.best_step()
    finally:
        tr.close()
    rows = read_jsonl(os.path.join(config.output_dir, "metrics.jsonl"))
    return {"rows": rows, "best_step": best}


def _eval_at(rows, step, key):
    for r in rows:
        if r["step"] == step and r.get(key) is not None:
            return r[key]
    return float("nan")


def heldout_ends(rows: list[dict], k: int) -> tuple[dict, dict] | tuple[None, None]:
    """The held-out set's pass@1 / greedy / maj@k at step 0 (the base model) and at the
    run's last evaluation; ``(None, None)`` when the run has no step-0 held-out
    evaluation (an override turned the protocol or the best-checkpoint metric off)."""
    steps = [r["step"] for r in rows if r.get(f"eval_heldout/mean@{k}") is not None]
    if 0 not in steps:
        return None, None

    def at(step):
        return {
            "pass@1": _eval_at(rows, step, f"eval_heldout/mean@{k}"),
            "greedy": _eval_at(rows, step, "eval_heldout/greedy_pass@1"),
            f"maj@{k}": _eval_at(rows, step, f"eval_heldout/maj@{k}"),
        }

    return at(min(steps)), at(max(steps))


def summary_table(base: dict, runs: dict[str, dict], k: int) -> str:
    """The paper-shaped table: base vs TTRL (last, best) vs RL with labels."""
    lines = [
        f"| model | pass@1 (mean@{k}, T=1) | greedy | maj@{k} | T=0.3 |",
        "|---|---|---|---|---|",
        f"| base | {base['pass@1']:.3f} | {base['greedy']:.3f} | {base[f'maj@{k}']:.3f} "
        f"| {base['t0.3']:.3f} |",
    ]
    for name, run in runs.items():
        rows = run["rows"]
        last = max(r["step"] for r in rows if r.get(f"eval/mean@{k}") is not None)
        picks = [("last", last)] + (
            [("best", run["best_step"])] if run["best_step"] is not None else []
        )
        for tag, step in picks:
            lines.append(
                f"| {name} ({tag}, step {step}) | {_eval_at(rows, step, f'eval/mean@{k}'):.3f} "
                f"| {_eval_at(rows, step, 'eval/greedy_pass@1'):.3f} "
                f"| {_eval_at(rows, step, f'eval/maj@{k}'):.3f} | |"
            )
    return "\n".join(lines)


def plot(base: dict, run: dict, k: int, png: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = run["rows"]
    fig, ax = plt.subplots(figsize=(7.5, 4.2))
    for key, label in (
        (f"eval/mean@{k}", "pass@1 (T=1)"),
        ("eval/greedy_pass@1", "greedy"),
        (f"eval/maj@{k}", f"maj@{k}"),
    ):
        base_key = {"eval/greedy_pass@1": "greedy", f"eval/mean@{k}": "pass@1"}.get(key, f"maj@{k}")
        pts = [(0, base[base_key])] + [
            (r["step"], r[key]) for r in rows if r["step"] and r.get(key) is not None
        ]
        ax.plot(*zip(*pts), marker="o", label=label)
    for key in ("label_accuracy", "majority_ratio"):
        pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
        ax.plot(*zip(*pts), lw=1, alpha=0.7, label=f"{key} (train batch)")
    ax.set_xlabel("RL step")
    ax.set_ylim(0, 1.02)
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(png, dpi=120)
    plt.close(fig)


CRITERION_TEXT = (
    "success criterion per run: TTRL pass@1 >= base pass@1 + 0.15; TTRL pass@1 > base "
    "maj@k and > base greedy (not mere sharpening); no pseudo-label-accuracy collapse "
    "(its mean over the last 3 steps >= its first step's, measured on the base policy)"
)
# the first step's pseudo-label accuracy is the base policy's; each step's value comes
# from 16 prompts (standard error ~0.1), so the final value is a mean over the last 3
# steps. (3-step means at both ends were tried: they misjudged healthy runs whose
# accuracy was near 0.9 from the start, since steps 2-3 are already trained.)
LABEL_WINDOW = 3


def criterion(base: dict, ttrl: dict, label_acc: list[float], k: int, min_gain=0.15) -> dict:
    """Did TTRL work on this run? The demo's success criterion (`CRITERION_TEXT`).

    Args:
      base, ttrl: ``pass@1``, ``greedy`` and ``maj@k`` of the base and the final policy.
      label_acc: pseudo-label accuracy of the training batches, one per step (the
        collapse test compares the first step's with the mean of the last `LABEL_WINDOW`).

    Returns:
      ``met`` (bool), ``reasons`` (what failed), the label-accuracy ends and a one-line
      ``line`` verdict.
    """
    b, t = base["pass@1"], ttrl["pass@1"]
    tail = label_acc[-LABEL_WINDOW:]
    first = label_acc[0] if label_acc else float("nan")
    last = sum(tail) / len(tail) if tail else float("nan")
    reasons = []
    if not t >= b + min_gain:
        reasons.append(f"gain {t - b:+.3f} < {min_gain}")
    if not t > base[f"maj@{k}"]:
        reasons.append(f"pass@1 {t:.3f} <= base maj@{k} {base[f'maj@{k}']:.3f}")
    if not t > base["greedy"]:
        reasons.append(f"pass@1 {t:.3f} <= base greedy {base['greedy']:.3f}")
    if not last >= first:
        reasons.append(f"label accuracy collapsed ({first:.2f} -> {last:.2f})")
    met = not reasons
    line = (
        f"TTRL improved pass@1 from {b:.3f} to {t:.3f} (criterion met)"
        if met
        else f"TTRL pass@1 {b:.3f} -> {t:.3f}: criterion not met ({'; '.join(reasons)})"
    )
    return {
        "met": met,
        "reasons": reasons,
        "label_acc_first": first,
        "label_acc_last": last,
        "line": line,
    }


def run_demo(
    preset: str,
    out: str,
    seed: int = 0,
    steps: int = 0,
    num_test: int = 0,
    labels_baseline: bool = True,
    rl_seed: int | None = None,
    base_dir: str = "",
    with_plot: bool = True,
    overrides: list[str] | None = None,
) -> dict:
    """The whole demo; returns the numbers it printed.

    Args:
      preset: "demo" or "ci" (`SETTINGS`, `experiments.pretrain_tiny.PRESETS`).
      out: output directory of the runs.
      seed: pretraining seed of the base model (and, by default, of the RL runs).
      rl_seed: seed of the RL runs (None: ``seed``).
      base_dir: where base models are cached (default: ``out``).
      overrides: ``key=value`` run-config overrides for both RL runs.
    """
    from experiments import pretrain_tiny
    from ttrl_jax.data import synthetic

    t0 = time.time()
    s = dict(SETTINGS[preset])
    s["steps"] = steps or s["steps"]
    s["num_test"] = num_test or s["num_test"]
    s["eval_every"] = min(s["eval_every"], s["steps"])
    k = s["votes"]
    rl_seed = seed if rl_seed is None or rl_seed < 0 else rl_seed
    os.makedirs(out, exist_ok=True)
    model_dir = os.path.join(base_dir or out, f"base_{preset}_seed{seed}")
    print(f"[1/5] base model ({preset}) in {model_dir} (built once, then cached)", flush=True)
    info = pretrain_tiny.load_or_build(model_dir, preset, seed=seed, log_every=0)
    print(f"      {info['num_params']:,} params, pretrained in {info['wall_seconds']} s")
    records, held = synthetic.make_heldout_split(
        s["num_test"], HELDOUT[preset], info["test_seed"], info["preset_obj"].task
    )
    data = write_jsonl(os.path.join(out, "test_set.jsonl"), records)
    held_file = write_jsonl(os.path.join(out, "heldout_set.jsonl"), held)
    print(f"[2/5] evaluating the base model on {len(records)} test problems", flush=True)
    base = base_metrics(model_dir, records, s, os.path.join(out, "eval"))
    print("      " + ", ".join(f"{a} {b:.3f}" for a, b in base.items()))
    print(
        f"[3/5] TTRL: {s['steps']} steps, majority-vote reward, no labels"
        + (f" (overrides: {', '.join(overrides)})" if overrides else ""),
        flush=True,
    )
    ttrl_out = os.path.join(out, "ttrl")
    runs = {
        "TTRL": train(
            rl_config(model_dir, data, ttrl_out, "ttrl", s, rl_seed, overrides, held_file)
        )
    }
    if labels_baseline:
        print("[4/5] RL with labels (ground-truth reward, same budget)", flush=True)
        runs["RL with labels"] = train(
            rl_config(
                model_dir,
                data,
                os.path.join(out, "rl_labels"),
                "ground_truth",
                s,
                rl_seed,
                overrides,
            )
        )
    table = summary_table(base, runs, k)
    ttrl_rows = runs["TTRL"]["rows"]
    lab = [r["label_accuracy"] for r in ttrl_rows if "label_accuracy" in r]
    rew = [r["reward_accuracy"] for r in ttrl_rows if "reward_accuracy" in r]
    png = os.path.join(out, "ttrl_demo.png")
    if with_plot:
        plot(base, runs["TTRL"], k, png, f"TTRL on the synthetic task ({preset} preset)")
    print("[5/5] results\n" + table)
    print(
        f"TTRL label accuracy (train batches): first {lab[0]:.3f}, mean {sum(lab) / len(lab):.3f},"
        f" last {lab[-1]:.3f}; reward accuracy: first {rew[0]:.3f}, last {rew[-1]:.3f}"
    )
    last = max(r["step"] for r in ttrl_rows if r.get(f"eval/mean@{k}") is not None)
    ttrl_last = {
        "pass@1": _eval_at(ttrl_rows, last, f"eval/mean@{k}"),
        "greedy": _eval_at(ttrl_rows, last, "eval/greedy_pass@1"),
        f"maj@{k}": _eval_at(ttrl_rows, last, f"eval/maj@{k}"),
    }
    verdict = criterion(base, ttrl_last, lab, k)
    held_base, held_last = heldout_ends(ttrl_rows, k)
    inductive = "not measured (no step-0 held-out evaluation)"
    if held_base is not None:
        inductive = (
            f"{held_base['pass@1']:.3f} -> {held_last['pass@1']:.3f} "
            f"({held_last['pass@1'] - held_base['pass@1']:+.3f})"
        )
    print(
        f"protocols: transductive (trained on the {len(records)} test problems, evaluated "
        f"on them) pass@1 {base['pass@1']:.3f} -> {ttrl_last['pass@1']:.3f} "
        f"({ttrl_last['pass@1'] - base['pass@1']:+.3f}); inductive ({len(held)} held-out "
        f"problems, never trained on) {inductive}"
    )
    if with_plot:
        print(f"plot: {png}; ", end="")
    print(f"TensorBoard: {out}/*/tensorboard; checkpoints: {out}/*/checkpoints")
    print(f"total {time.time() - t0:.0f} s")
    print(f"{CRITERION_TEXT}\nverdict: {verdict['line']}", flush=True)
    result = {
        "base": base,
        "ttrl_last": ttrl_last,
        "label_accuracy": lab,
        "heldout": None
        if held_base is None
        else {"base": held_base, "ttrl_last": held_last, "num": len(held)},
        "verdict": verdict,
        "table": table,
        "seconds": time.time() - t0,
    }
    with open(os.path.join(out, "demo_result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # progress bars and tables, not orbax's INFO
    rl_config("", "", "", "ttrl", SETTINGS[FLAGS.preset], 0, FLAGS.set)  # bad --set: fail now
    if FLAGS.compile_cache != "none":
        from experiments import compile_cache

        root = FLAGS.compile_cache or os.path.join(FLAGS.base_dir or FLAGS.out, "jax_cache")
        compile_cache.enable(root)
    if FLAGS.seeds:
        from experiments import demo_robustness

        demo_robustness.run_robustness(
            FLAGS.preset,
            FLAGS.base_dir or FLAGS.out,
            [int(x) for x in FLAGS.seeds],
            list(demo_robustness.DEFAULT_VARIANTS),
            FLAGS.steps,
            FLAGS.set,
        )
        return 0
    run_demo(
        FLAGS.preset,
        FLAGS.out,
        FLAGS.seed,
        FLAGS.steps,
        FLAGS.num_test,
        FLAGS.labels_baseline,
        rl_seed=FLAGS.rl_seed,
        base_dir=FLAGS.base_dir,
        with_plot=FLAGS.plot,
        overrides=FLAGS.set,
    )
    return 0


if __name__ == "__main__":
    from experiments import cli

    define_flags()
    cli.run_main(main, (ValueError, OSError))
