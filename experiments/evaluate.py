"""Evaluate checkpoints on a benchmark (mean@n, pass@k, maj@n, greedy pass@1).

  python -m experiments.evaluate --checkpoint=runs/ttrl_aime --step=best \
      --dataset=aime24 --source_dir=../shared/data/benchmarks --n_samples=16 \
      --temperature=0.6 --top_p=0.95 --max_new_tokens=3072 --out=runs/ttrl_aime/eval

  # several checkpoints side by side (name=path[@step]):
  python -m experiments.evaluate --compare=base=models/Qwen2.5-Math-1.5B \
      --compare=best=runs/ttrl@best --compare=last=runs/ttrl@latest --dataset=aime24 ...

  # a plot of metrics vs step from a run's metrics file:
  python -m experiments.evaluate --plot=runs/ttrl/metrics.jsonl --plot_keys=eval/mean@16
"""

import json
import os

from absl import flags

from experiments.cli import check_step, run_main

flags.DEFINE_string("checkpoint", None, "HF directory, orbax run directory or checkpoints dir.")
flags.DEFINE_string("step", "latest", "Orbax step: a number, 'latest' or 'best'.")
flags.DEFINE_multi_string("compare", [], "name=path[@step], repeatable.")
flags.DEFINE_string("dataset", "aime24", "Benchmark name or a JSON/JSONL/parquet file.")
flags.DEFINE_string("source_dir", "", "Local folder with the benchmark JSON files.")
flags.DEFINE_string("model_path", "", "HF directory for an orbax run's architecture/tokenizer.")
flags.DEFINE_integer("n_samples", 16, "Samples per problem.")
flags.DEFINE_float("temperature", 0.6, "Sampling temperature.")
flags.DEFINE_float("top_p", 0.95, "Nucleus mass.")
flags.DEFINE_integer("max_new_tokens", 3072, "Response length limit.")
flags.DEFINE_integer("max_prompt_tokens", 1024, "Prompt length limit.")
flags.DEFINE_integer("prompts_per_batch", 8, "Prompts per sampler call.")
flags.DEFINE_integer("max_problems", 0, "Evaluate only the first N problems (0: all).")
flags.DEFINE_bool("greedy", True, "Also greedy pass@1.")
flags.DEFINE_string("system_prompt", "", "System prompt (Qwen2.5-Math: 'Please reason ...').")
flags.DEFINE_string("suffix", "", "Instruction appended to each problem.")
flags.DEFINE_bool("enable_thinking", True, "The chat template's thinking switch (Qwen3).")
flags.DEFINE_string("task", "math", "Answer task: math, multiple_choice or module:function.")
flags.DEFINE_string("out", "eval_out", "Output directory.")
flags.DEFINE_string("plot", "", "A metrics.jsonl to plot instead of evaluating.")
flags.DEFINE_list(
    "plot_keys", ["eval/mean@16", "label_accuracy", "majority_ratio"], "Metrics to plot."
)
FLAGS = flags.FLAGS


def _targets():
    if FLAGS.compare:
        out = []
        for spec in FLAGS.compare:
            name, _, rest = spec.partition("=")
            path, _, step = rest.partition("@")
            if not name or not path:
                raise ValueError(f"--compare={spec!r}: expected name=path[@step]")
            out.append((name, path, check_step(step or "latest")))
        return out
    if not FLAGS.checkpoint:
        raise ValueError("pass --checkpoint, --compare or --plot")
    step = check_step(FLAGS.step)
    return [(os.path.basename(os.path.normpath(FLAGS.checkpoint)), FLAGS.checkpoint, step)]


def main(argv):
    del argv
    from ttrl_jax.data import load_benchmark, load_records
    from ttrl_jax.eval import evaluation

    if FLAGS.plot:
        os.makedirs(FLAGS.out, exist_ok=True)
        png = evaluation.plot_metrics(
            FLAGS.plot, FLAGS.plot_keys, os.path.join(FLAGS.out, "metrics.png")
        )
        print(f"wrote {png}")
        return 0
    targets = _targets()
    if FLAGS.dataset in ("aime24", "amc23", "math500", "gpqa_diamond"):
        records = load_benchmark(
            FLAGS.dataset,
            data_dir=os.path.join(FLAGS.out, "tfds"),
            source_dir=FLAGS.source_dir or None,
        )
    else:
        records = load_records(FLAGS.dataset)
    records = records[: FLAGS.max_problems or None]
    settings = evaluation.EvalSettings(
        n_samples=FLAGS.n_samples,
        temperature=FLAGS.temperature,
        top_p=FLAGS.top_p,
        max_new_tokens=FLAGS.max_new_tokens,
        greedy=FLAGS.greedy,
        prompts_per_batch=FLAGS.prompts_per_batch,
        max_prompt_tokens=FLAGS.max_prompt_tokens,
        system_prompt=FLAGS.system_prompt,
        enable_thinking=FLAGS.enable_thinking,
        suffix=FLAGS.suffix,
        task=FLAGS.task,
    )
    summaries = {}
    for name, path, step in targets:
        model, tok, info = evaluation.load_policy(path, step, model_path=FLAGS.model_path or None)
        summary = evaluation.evaluate(model, tok, records, settings, out_dir=FLAGS.out, name=name)
        summary["step"] = info["step"]
        summaries[name] = summary
        print(
            f"{name} ({info['source']}, step {info['step']}): "
            + json.dumps({k: v for k, v in summary.items() if k != "by_subject"})
        )
    table = evaluation.markdown_table(summaries)
    with open(os.path.join(FLAGS.out, "compare.md"), "w", encoding="utf-8") as f:
        f.write(table + "\n")
    print(table)
    return 0


def run():
    """Entry point: one error line and exit status 2 on a bad path or value."""
    run_main(main, (OSError, ValueError))


if __name__ == "__main__":
    run()
