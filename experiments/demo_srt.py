"""`make demo-srt`: SRT's failure mode (reward hacking) and its mitigations.

Self-rewarding training (SRT, arXiv 2505.21444) trains on the self-consistency reward
r = 1[answer = majority of the M votes] with RLOO, KL in the reward and an entropy bonus.
Nothing ties that reward to correctness: a policy that answers *consistently* earns the
full reward whether or not it is right, and under aggressive or long training it
collapses onto confident wrong answers -- the training reward rises while true accuracy
falls. On the demo task the careless "left" order with dropped carries is the token-level
mode of the base model, so the collapse has an easy target.

Runs, on the same base model and unlabeled test set as `make demo` (the gold answers are
read only for reporting), each with the same aggressive constant learning rate:

* ``SRT``: the plain self-consistency reward -> collapse;
* ``SRT + offline labels``: pseudo-labels voted once by the frozen base model (its
  maj@16 answers), so the policy cannot move its own target;
* ``SRT + early stopping``: evaluates on a small *labelled validation set* (disjoint from
  the test set) every few steps, keeps the best checkpoint and stops after ``patience``
  evaluations without a gain; the best checkpoint is reported;
* ``SRT + threshold`` (``--threshold``): rewards only prompts whose majority ratio is
  at least tau (the others stay in the batch with reward 0 and no KL, as SRT's code
  does), and trains only on the most self-consistent fraction of them;
* ``SRT + curriculum`` (``--curriculum``): trains only on the third of the test
  prompts that the frozen base model answers most consistently (one voting pass,
  ``data.curriculum_fraction``);
* ``SRT + collapse guard`` (``--guard``): the library's label-free trust region
  (`ttrl_jax.update.guard`, ``guard.step_kl_target`` as in ``make demo``): each
  step's KL(pi_old || pi_new) is held near the target, a step above it is undone and
  retried at half the lr scale;
* ``RL with labels`` (``--labels_baseline``): ground-truth reward at the same learning
  rate, to show the lr alone does not cause the collapse.

Prints a table (test pass@1 / maj@16 / greedy of each run's final -- or early-stopped --
model) and writes ``srt_demo.png``: per run, the training reward and the true accuracy of
the training rollouts vs step.

  python -m experiments.demo_srt [--out=demo_out] [--steps=40] [--lr=4e-4]
      [--seeds=0,1,2] [--set=guard.step_kl_target=0.004]  # overrides for every run
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
    flags.DEFINE_string("out", "demo_out", "Output directory (the base model is cached here).")
    flags.DEFINE_integer("seed", 0, "Seed of the base model, the data and the RL runs.")
    flags.DEFINE_integer("steps", 0, "RL steps per run (0: the preset's default).")
    flags.DEFINE_float("lr", 0.0, "Constant learning rate of every run (0: the preset's).")
    flags.DEFINE_bool(
        "threshold", True, "Also run SRT with a consistency threshold + keep-fraction."
    )
    flags.DEFINE_bool("curriculum", True, "Also run SRT on the base model's most consistent third.")
    flags.DEFINE_bool("guard", True, "Also run SRT under the collapse guard's trust region.")
    flags.DEFINE_bool("labels_baseline", False, "Also run RL with ground-truth labels.")
    flags.DEFINE_list(
        "seeds", [], "Rates instead: the whole demo on the bases of these pretraining seeds."
    )
    flags.DEFINE_bool("report", False, "With --seeds: only rebuild the rates from finished runs.")
    flags.DEFINE_list(
        "set", [], "Run-config overrides key=value for every run (e.g. guard.step_kl_target=0.004)."
    )


SETTINGS = dict(
    preset="demo",
    num_test=256,
    num_val=64,
    steps=40,
    # the smallest of 2e-4 / 3e-4 / 4e-4 at which plain SRT collapses within 40 steps on
    # all three AVX2-VM bases of the README (3e-4: 2 of 3; 2e-4: not on seed 0)
    lr=4e-4,
    prompts=16,
    votes=16,
    val_every=2,
    patience=3,
    tau=0.5,
    keep_fraction=0.5,
    curriculum_fraction=1 / 3,
)


def srt_config(
    model_dir: str, data: str, out: str, mode: str, s: dict, seed: int, overrides=None
):
    """SRT's recipe on the demo model: RLOO, KL in the reward, entropy bonus, constant lr;
    ``overrides`` (``key=value`` strings) are applied last."""
    from experiments import demo

    c = demo.rl_config(model_dir, data, out, mode, dict(s, eval_every=s["steps"]), seed)
    c.name = f"demo_srt_{mode}"
    c.algo.advantage = "rloo"
    c.algo.kl_in_reward, c.algo.kl_coef, c.algo.kl_type = True, 0.001, "k3"
    c.algo.entropy_coef = 0.001
    c.reward.below_threshold = "keep"  # SRT's code: below-threshold prompts stay, reward 0
    c.optim.lr, c.optim.schedule = s["lr"], "constant"
    c.train.eval_every, c.train.best_metric = 0, ""
    c.train.save_every = s["steps"]
    demo.apply_overrides(c, overrides or [])
    return c


def validation_set(test: list[dict], num: int, seed: int, spec) -> list[dict]:
    """``num`` labelled problems disjoint from ``test`` (ids ``sum-val-*``)."""
    from ttrl_jax.data import synthetic

    seen = {r["problem"] for r in test}
    pool = synthetic.make_test_set(num + len(test), seed, spec)
    val = [dict(r) for r in pool if r["problem"] not in seen][:num]
    for i, r in enumerate(val):
        r["id"] = f"sum-val-{i:05d}"
    return val


def score_on_test(model, tok, records, s: dict, out_dir: str, name: str) -> dict:
    """Test-set pass@1 (mean@k at T = 1), maj@k and greedy accuracy of a policy."""
    from ttrl_jax.eval import evaluation

    k = s["votes"]
    summary = evaluation.evaluate(
        model,
        tok,
        records,
        evaluation.EvalSettings(
            n_samples=k,
            temperature=1.0,
            top_p=1.0,
            greedy=True,
            max_new_tokens=64,
            prompts_per_batch=s["prompts"],
            max_prompt_tokens=64,
            prompt_bucket=32,
        ),
        out_dir=out_dir,
        name=name,
    )
    return {
        "pass@1": summary[f"mean@{k}"],
        "maj": summary[f"maj@{k}"],
        "greedy": summary["greedy_pass@1"],
    }


def run_one(config, eval_fn=None) -> dict:
    """Trains one run; returns its metric rows, final params and best step."""
    from ttrl_jax import trainer as trainer_lib
    from ttrl_jax.metrics import read_jsonl

    tr = trainer_lib.Trainer(config, eval_fn=eval_fn)
    try:
        tr.run()
        model, tok, best = tr.model.with_params(tr.params), tr.tok, tr.ckpt.best_step()
        steps = tr.step
    finally:
        tr.close()
    rows = read_jsonl(os.path.join(config.output_dir, "metrics.jsonl"))
    return {"rows": rows, "model": model, "tok": tok, "best_step": best, "steps": steps}


def _series(rows, key):
    pts = [(r["step"], r[key]) for r in rows if r.get(key) is not None]
    return [p[0] for p in pts], [p[1] for p in pts]


def _smooth(y, w=3):
    out = []
    for i in range(len(y)):
        part = y[max(0, i - w + 1) : i + 1]
        out.append(sum(part) / len(part))
    return out


def plot(runs: dict[str, dict], base: dict, png: str, k: int, steps: int) -> None:
    """One panel per run: training reward and true accuracy (3-step means) vs step."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(4.2 * len(runs), 4.2), sharey=True)
    axes = [axes] if len(runs) == 1 else list(axes)
    for ax, (name, run) in zip(axes, runs.items()):
        rows = run["rows"]
        x, y = _series(rows, "reward_mean")
        ax.plot(x, _smooth(y), color="tab:orange", label="training reward")
        x, y = _series(rows, "ground_truth_ratio")
        ax.plot(x, _smooth(y), color="tab:blue", label="true accuracy (rollouts)")
        x, y = _series(rows, f"eval/mean@{k}")
        if x:
            ax.plot(x, y, "s--", color="tab:green", ms=4, label="validation pass@1")
        if run.get("best_step") is not None:
            ax.axvline(run["best_step"], color="gray", ls=":", label="kept checkpoint")
        ax.axhline(base["pass@1"], color="black", lw=0.8, alpha=0.5, label="base pass@1 (test)")
        ax.set_title(name, fontsize=10)
        ax.set_xlabel("RL step")
        ax.set_ylim(0, 1.02)
        ax.set_xlim(0, steps + 1)
        ax.grid(alpha=0.3)
    handles = {}
    for ax in axes:
        for h, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, h)
    fig.legend(handles.values(), handles.keys(), loc="lower center", ncol=5, fontsize=8)
    fig.suptitle("SRT reward hacking and mitigations (demo task, 3-step means)", fontsize=11)
    fig.tight_layout(rect=(0, 0.07, 1, 1))
    fig.savefig(png, dpi=120)
    plt.close(fig)


def run_demo_srt(
    out: str,
    seed: int = 0,
    steps: int = 0,
    lr: float = 0.0,
    threshold: bool = True,
    labels_baseline: bool = False,
    settings: dict | None = None,
    base_dir: str = "",
    curriculum: bool = True,
    guard: bool = True,
    overrides: list[str] | None = None,
) -> dict:
    """The whole SRT demo; returns the numbers it printed (base models cached in
    ``base_dir``, default ``out``). ``overrides`` (``key=value``) apply to every run,
    before each arm's own settings."""
    from experiments import demo, pretrain_tiny
    from ttrl_jax.data import synthetic
    from ttrl_jax.eval import evaluation
    from ttrl_jax.models import load_hf
    from ttrl_jax.models.tokenizer import load_tokenizer

    t0 = time.time()
    s = dict(settings or SETTINGS)
    s["steps"], s["lr"] = steps or s["steps"], lr or s["lr"]
    k = s["votes"]
    os.makedirs(out, exist_ok=True)
    model_dir = os.path.join(base_dir or out, f"base_{s['preset']}_seed{seed}")
    print(f"[1/4] base model in {model_dir} (built once, then cached)", flush=True)
    info = pretrain_tiny.load_or_build(model_dir, s["preset"], seed=seed, log_every=0)
    spec = info["preset_obj"].task
    test = synthetic.make_test_set(s["num_test"], info["test_seed"], spec)
    val = validation_set(test, s["num_val"], info["test_seed"] + 7919, spec)
    srt_dir = os.path.join(out, "srt")
    os.makedirs(srt_dir, exist_ok=True)
    data = demo.write_jsonl(os.path.join(srt_dir, "test_set.jsonl"), test)
    val_file = demo.write_jsonl(os.path.join(srt_dir, "validation_set.jsonl"), val)

    print(f"[2/4] base model on {len(test)} test problems; offline labels from its votes")
    base = score_on_test(
        load_hf(model_dir, dtype="float32"),
        load_tokenizer(model_dir),
        test,
        s,
        os.path.join(srt_dir, "eval"),
        "base",
    )
    labels = evaluation.labels_from_generations(
        os.path.join(srt_dir, "eval", "base.generations.jsonl")
    )
    labels_file = os.path.join(srt_dir, "offline_labels.json")
    with open(labels_file, "w", encoding="utf-8") as f:
        json.dump(labels, f)
    golds = {r["id"]: r["answer"] for r in test}
    label_acc = sum(labels[i] == golds[i] for i in golds) / len(golds)
    print(
        f"      pass@1 {base['pass@1']:.3f}, maj@{k} {base['maj']:.3f}, greedy "
        f"{base['greedy']:.3f}; offline label accuracy {label_acc:.3f}"
    )

    plans = {"SRT": ("srt", {})}
    plans["SRT + offline labels"] = ("offline", {"reward.offline_labels": labels_file})
    plans["SRT + early stopping"] = (
        "srt",
        {
            "eval.datasets": val_file,
            "eval.protocol": "inductive",  # disjoint from the test set (checked)
            "train.eval_every": s["val_every"],
            "train.save_every": s["val_every"],
            "train.best_metric": f"eval/mean@{k}",
            "train.early_stop_patience": s["patience"],
            "eval.greedy": False,
        },
    )
    if threshold:
        plans["SRT + threshold"] = (
            "srt",
            {"reward.threshold": s["tau"], "reward.keep_fraction": s["keep_fraction"]},
        )
    if curriculum:
        plans["SRT + curriculum"] = (
            "srt",
            {"data.curriculum_fraction": s["curriculum_fraction"]},
        )
    if guard:
        target = demo.SETTINGS["demo"]["guard_kl"]  # make demo's trust region
        plans["SRT + collapse guard"] = ("srt", {"guard.step_kl_target": target})
    if labels_baseline:
        plans["RL with labels"] = ("ground_truth", {})
    print(
        f"[3/4] {len(plans)} runs of {s['steps']} steps, constant lr {s['lr']:g}, "
        f"{s['prompts']} prompts x {k} votes"
        + (f" (every run: {', '.join(overrides)})" if overrides else ""),
        flush=True,
    )
    runs = {}
    for i, (name, (mode, arm_keys)) in enumerate(plans.items()):
        slug = name.lower().replace(" + ", "_").replace(" ", "_")
        c = srt_config(model_dir, data, os.path.join(srt_dir, slug), mode, s, seed, overrides)
        c.update_from_flattened_dict(arm_keys)  # locked: a misspelt key is an error
        print(f"      run {i + 1}/{len(plans)}: {name}", flush=True)
        run = run_one(c)
        model, tok, tag = run["model"], run["tok"], f"last (step {run['steps']})"
        if run["best_step"] is not None:
            model, tok, _ = evaluation.load_policy(c.output_dir, "best")
            tag = f"best on validation (step {run['best_step']} of {run['steps']})"
        run["test"] = score_on_test(model, tok, test, s, os.path.join(srt_dir, "eval"), slug)
        run["tag"] = tag
        runs[name] = run

    png = os.path.join(out, "srt_demo.png")
    plot(runs, base, png, k, s["steps"])
    lines = [
        (
            f"| run | model | test pass@1 | maj@{k} | greedy | training reward (last 3) "
            "| true accuracy: peak -> last 3 |"
        ),
        "|---|---|---|---|---|---|---|",
        f"| base | | {base['pass@1']:.3f} | {base['maj']:.3f} | {base['greedy']:.3f} | | |",
    ]
    result = {"base": base, "offline_label_accuracy": label_acc, "runs": {}}
    for name, run in runs.items():
        rows = run["rows"][-3:]
        rew = sum(r["reward_mean"] for r in rows) / len(rows)
        acc = sum(r["ground_truth_ratio"] for r in rows) / len(rows)
        peak = max(_smooth(_series(run["rows"], "ground_truth_ratio")[1]))
        t = run["test"]
        lines.append(
            f"| {name} | {run['tag']} | {t['pass@1']:.3f} | {t['maj']:.3f} | {t['greedy']:.3f} "
            f"| {rew:.3f} | {peak:.3f} -> {acc:.3f} |"
        )
        result["runs"][name] = dict(
            t, train_reward=rew, train_accuracy=acc, train_accuracy_peak=peak, steps=run["steps"]
        )
    table = "\n".join(lines)
    print("[4/4] results (test set; gold answers used only here)\n" + table)
    print(f"plot: {png}; runs: {srt_dir}/*; total {time.time() - t0:.0f} s")
    result.update(table=table, seconds=time.time() - t0)
    with open(os.path.join(out, "srt_demo_result.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


MIN_GAIN = 0.15  # a mitigation holds when its test pass@1 beats the base's by this much
COLLAPSE_DROP = 0.2  # plain SRT collapses when true accuracy falls this far from its peak


def judge(results: dict) -> tuple[dict, str]:
    """Rates and a markdown table over seeds from ``{seed: run_demo_srt result}``:

    * plain SRT *collapses* when the true accuracy of its training rollouts (3-step
      means) falls by at least `COLLAPSE_DROP` from its peak while it trains on the
      self-consistency reward (reward hacking); ``SRT ends below base`` counts the seeds
      whose final test pass@1 is below the base's;
    * a mitigation *holds* when its test pass@1 is >= the base's + `MIN_GAIN`, and is
      *not below base* when its test pass@1 is >= the base's (the floor the issue sets for
      early stopping: a run that only gets worse returns the base, never a worse model).

    ``rates[name]`` is ``(count, seeds)`` for the first rule; ``rates[name + " not below
    base"]`` for the second.
    """
    seeds = list(results)
    names = list(results[seeds[0]]["runs"])
    lines = [
        "| run | judged by | rate | not below base | "
        + " | ".join(f"seed {s}" for s in seeds)
        + " |",
        "|---|---|---|---|" + "---|" * len(seeds),
        "| base | test pass@1 | | | "
        + " | ".join(f"{results[s]['base']['pass@1']:.3f}" for s in seeds)
        + " |",
    ]
    rates = {}
    for name in names:
        runs = [(results[s]["runs"][name], results[s]["base"]["pass@1"]) for s in seeds]
        floor = [run["pass@1"] >= base for run, base in runs]
        if name == "SRT":
            drops = [run["train_accuracy_peak"] - run["train_accuracy"] for run, _ in runs]
            ok = [d >= COLLAPSE_DROP for d in drops]
            rule = f"collapses (true accuracy peak - last >= {COLLAPSE_DROP})"
            cells = [
                f"{run['train_accuracy_peak']:.2f} -> {run['train_accuracy']:.2f}; "
                f"test {run['pass@1']:.3f}"
                for run, _ in runs
            ]
            rates["SRT ends below base"] = (len(runs) - sum(floor), len(runs))
        else:
            ok = [run["pass@1"] >= base + MIN_GAIN for run, base in runs]
            rule = f"holds (test pass@1 >= base + {MIN_GAIN})"
            cells = [f"{run['pass@1']:.3f}" for run, _ in runs]
        rates[name] = (sum(ok), len(ok))
        rates[f"{name} not below base"] = (sum(floor), len(floor))
        lines.append(
            f"| {name} | {rule} | {sum(ok)} of {len(ok)} | {sum(floor)} of {len(floor)} | "
            + " | ".join(cells)
            + " |"
        )
    return rates, "\n".join(lines)


def srt_rates(out: str, seeds: list[int], report_only: bool = False, **kwargs) -> dict:
    """The SRT demo on the bases of several pretraining seeds, judged per run by `judge`.

    Each seed's runs go to ``out/srt_seeds/seed<S>`` (``report_only``: read from there
    instead of running); base models are shared with ``make demo`` (cached in ``out``).
    """
    t0 = time.time()
    results = {}
    for seed in seeds:
        seed_out = os.path.join(out, "srt_seeds", f"seed{seed}")
        if report_only:
            with open(os.path.join(seed_out, "srt_demo_result.json"), encoding="utf-8") as f:
                results[seed] = json.load(f)
        else:
            results[seed] = run_demo_srt(seed_out, seed, base_dir=out, **kwargs)
    rates, table = judge(results)
    below, total = rates["SRT ends below base"]
    print("SRT demo over seeds (test pass@1 of each run's final or early-stopped model)")
    print(table)
    print(f"plain SRT's final test pass@1 is below the base's in {below} of {total} seeds")
    print(f"total {time.time() - t0:.0f} s", flush=True)
    summary = {"seeds": seeds, "rates": rates, "table": table, "per_seed": results}
    with open(os.path.join(out, "srt_rates.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)  # progress bars and tables, not orbax's INFO
    srt_config("", "", "", "srt", SETTINGS, 0, FLAGS.set)  # a bad --set fails before any run
    if FLAGS.seeds:
        srt_rates(
            FLAGS.out,
            [int(x) for x in FLAGS.seeds],
            report_only=FLAGS.report,
            steps=FLAGS.steps,
            lr=FLAGS.lr,
            threshold=FLAGS.threshold,
            labels_baseline=FLAGS.labels_baseline,
            curriculum=FLAGS.curriculum,
            guard=FLAGS.guard,
            overrides=FLAGS.set,
        )
        return 0
    run_demo_srt(
        FLAGS.out,
        FLAGS.seed,
        FLAGS.steps,
        FLAGS.lr,
        FLAGS.threshold,
        FLAGS.labels_baseline,
        curriculum=FLAGS.curriculum,
        guard=FLAGS.guard,
        overrides=FLAGS.set,
    )
    return 0


if __name__ == "__main__":
    from experiments import cli

    define_flags()
    cli.run_main(main, (ValueError, OSError))
