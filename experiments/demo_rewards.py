"""`make demo-rewards`: label-free rewards beyond voting, side by side on the demo task.

Each reward runs the demo's TTRL recipe (same base models, steps, lr, guard, votes) with
only the reward changed, on the bases of several pretraining seeds, every run in its own
process (`experiments.demo_robustness`, variant ``default``):

* ``ttrl``: the majority-vote reward (TTRL);
* ``self_certainty``: the mean per-token KL(U || p) of the sample (arXiv 2505.19590);
* ``neg_entropy``: minus the mean per-token entropy (arXiv 2505.15134);
* ``semantic_entropy``: minus the semantic entropy of the prompt's vote clusters, one
  reward per prompt (with REINFORCE++'s batch baseline: a per-group one cancels it);
* ``ttrl+certainty``: the vote reward plus 0.2 x self-certainty.

Printed per reward: base and final pass@1 on the trained problems (transductive) and on
the held-out problems (inductive), the final greedy accuracy, the demo's success
criterion, and a verdict. A run *collapses* when its final pass@1 falls more than 0.05
below its base's; a reward *collapses* when any of its runs does.

  python -m experiments.demo_rewards [--preset=ci|demo] [--seeds=0,1,2] [--out=demo_out]
      [--rewards=ttrl,self_certainty,...] [--variants=default,isa_avx2] [--report]
"""

from __future__ import annotations

import json
import os
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS

# name -> run-config overrides on top of the demo's TTRL recipe
REWARDS = {
    "ttrl": [],
    "self_certainty": ["reward.mode=self_certainty"],
    "neg_entropy": ["reward.mode=neg_entropy"],
    "semantic_entropy": ["reward.mode=semantic_entropy", "algo.advantage=reinforce_pp"],
    "ttrl+certainty": ["reward.self_certainty_weight=0.2"],
}
COLLAPSE_DROP = 0.05  # final pass@1 this far below the base's: the run collapsed


def define_flags() -> None:
    flags.DEFINE_enum("preset", "ci", ["demo", "ci"], "Base-model preset.")
    flags.DEFINE_string("out", "demo_out", "Output directory (base models are cached here).")
    flags.DEFINE_list("seeds", ["0", "1", "2"], "Pretraining seeds.")
    flags.DEFINE_list("rewards", list(REWARDS), f"Rewards to compare: {list(REWARDS)}")
    flags.DEFINE_list(
        "variants", ["default"], "Numerics variants of experiments.demo_robustness per seed."
    )
    flags.DEFINE_bool("report", False, "Only rebuild the table from finished runs' results.")


def _tag(name: str) -> str:
    return "reward_" + name.replace("+", "_plus_")


def reward_row(name: str, runs: list[dict]) -> dict:
    """Means over the seeds' runs of one reward, its criterion count and its verdict."""
    n = len(runs)

    def mean(get):
        return sum(get(r) for r in runs) / n

    held = [r["heldout"] for r in runs if r.get("heldout")]  # None: not measured

    def held_mean(get):
        return sum(get(h) for h in held) / len(held) if held else float("nan")

    collapsed = sum(r["ttrl_last"]["pass@1"] < r["base"]["pass@1"] - COLLAPSE_DROP for r in runs)
    met = sum(r["verdict"]["met"] for r in runs)
    gain = mean(lambda r: r["ttrl_last"]["pass@1"] - r["base"]["pass@1"])
    if collapsed:
        verdict = f"collapses ({collapsed} of {n} runs below base)"
    elif met == n:
        verdict = "improves (criterion met in every run)"
    elif gain > COLLAPSE_DROP:
        verdict = f"improves, criterion met in {met} of {n}"
    else:
        verdict = "no gain"
    return {
        "reward": name,
        "runs": n,
        "base": mean(lambda r: r["base"]["pass@1"]),
        "final": mean(lambda r: r["ttrl_last"]["pass@1"]),
        "greedy": mean(lambda r: r["ttrl_last"]["greedy"]),
        "held_base": held_mean(lambda h: h["base"]["pass@1"]),
        "held_final": held_mean(lambda h: h["ttrl_last"]["pass@1"]),
        "label_first": mean(lambda r: r["verdict"]["label_acc_first"]),
        "label_last": mean(lambda r: r["verdict"]["label_acc_last"]),
        "met": met,
        "collapsed": collapsed,
        "verdict": verdict,
    }


def rewards_table(rows: list[dict]) -> str:
    """Markdown table of `reward_row`s."""
    lines = [
        "| reward | pass@1 base -> final | held-out pass@1 base -> final | final greedy "
        "| label acc. first -> last | criterion met | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        lines.append(
            f"| {r['reward']} | {r['base']:.3f} -> {r['final']:.3f} "
            f"| {r['held_base']:.3f} -> {r['held_final']:.3f} | {r['greedy']:.3f} "
            f"| {r['label_first']:.2f} -> {r['label_last']:.2f} | {r['met']} of {r['runs']} "
            f"| {r['verdict']} |"
        )
    return "\n".join(lines)


def run_rewards(
    preset: str,
    out: str,
    seeds: list[int],
    rewards: list[str],
    report_only: bool = False,
    variants: tuple[str, ...] = ("default",),
) -> dict:
    """Runs every reward on every seed's base under each numerics variant
    (`demo_robustness.run_robustness`, one tag per reward) and prints the means table;
    returns the summary it writes."""
    from experiments import demo_robustness

    unknown = [r for r in rewards if r not in REWARDS]
    if unknown:
        raise ValueError(f"unknown rewards {unknown}; known: {list(REWARDS)}")
    t0 = time.time()
    rows, per_run = [], {}
    for name in rewards:
        print(f"== reward {name}: overrides {REWARDS[name] or 'none'}", flush=True)
        summary = demo_robustness.run_robustness(
            preset, out, seeds, list(variants), 0, REWARDS[name], _tag(name), report_only
        )
        per_run[name] = summary["runs"]
        rows.append(reward_row(name, summary["runs"]))
    table = rewards_table(rows)
    print(
        f"means over seeds {seeds} x numerics {list(variants)} ({preset} preset, same "
        "steps, lr and guard for every "
        f"reward); a run collapses when its final pass@1 is more than {COLLAPSE_DROP} "
        f"below its base's\n{table}\ntotal {time.time() - t0:.0f} s",
        flush=True,
    )
    result = {
        "preset": preset,
        "seeds": seeds,
        "variants": list(variants),
        "rows": rows,
        "runs": per_run,
        "table": table,
    }
    with open(os.path.join(out, f"rewards_{preset}.json"), "w", encoding="utf-8") as f:
        json.dump(result, f, indent=2)
    return result


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from experiments import compile_cache

    compile_cache.enable(os.path.join(FLAGS.out, "jax_cache"))
    seeds = [int(s) for s in FLAGS.seeds]
    run_rewards(FLAGS.preset, FLAGS.out, seeds, FLAGS.rewards, FLAGS.report, FLAGS.variants)
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
