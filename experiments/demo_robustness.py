"""`make demo-robustness`: does the TTRL demo work on every machine, not just this one?

A base model pretrained on another CPU, with another thread count or another XLA build
differs from ours in its last bits, and RL amplifies such differences. So the demo's
claim is checked as a *rate*: TTRL runs on the bases of several pretraining seeds, each
under perturbed numerics, every run in its own process:

* ``threads1``: the process pinned to one core (XLA CPU sizes its thread pool from the
  cores it may use);
* ``isa_avx2``: ``--xla_cpu_max_isa=AVX2`` (other vector kernels than AVX-512 builds);
* ``rl_seed``: a different RL seed (other rollouts, another data order).

Each run prints base pass@1 / maj@k / greedy and TTRL pass@1 / greedy / maj@k, and is
judged by `experiments.demo.criterion`: TTRL pass@1 >= base pass@1 + 0.15, TTRL pass@1
above the base's maj@k and greedy (so the gain is not mere sharpening), and no
pseudo-label-accuracy collapse. Base models are cached under ``--out`` (shared with
``make demo``), so a rerun costs only the RL runs.

  python -m experiments.demo_robustness [--preset=demo|ci] [--seeds=0,1,2,3,4]
      [--variants=threads1,isa_avx2,rl_seed] [--out=demo_out] [--steps=0]
      [--set=optim.lr=4.5e-4,guard.step_kl_target=0] [--tag=NAME] [--report]
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

from absl import app, flags, logging

FLAGS = flags.FLAGS

# name -> (extra environment, CPU affinity (None: inherit), RL-seed offset)
VARIANTS = {
    "default": ({}, None, 0),
    "threads1": ({}, 1, 0),
    "isa_avx2": ({"XLA_FLAGS": "--xla_cpu_max_isa=AVX2"}, None, 0),
    "rl_seed": ({}, None, 1000),
}
DEFAULT_VARIANTS = ("threads1", "isa_avx2", "rl_seed")


def define_flags() -> None:
    flags.DEFINE_enum("preset", "demo", ["demo", "ci"], "Base-model preset.")
    flags.DEFINE_string("out", "demo_out", "Output directory (base models are cached here).")
    flags.DEFINE_list("seeds", ["0", "1", "2", "3", "4"], "Pretraining seeds.")
    flags.DEFINE_list("variants", list(DEFAULT_VARIANTS), f"Numerics variants: {list(VARIANTS)}")
    flags.DEFINE_integer("steps", 0, "RL steps per run (0: the preset's default).")
    flags.DEFINE_list("set", [], "Run-config overrides key=value (e.g. optim.lr=4.5e-4).")
    flags.DEFINE_string("tag", "", "Name of this set of runs (directories, summary file).")
    flags.DEFINE_bool("report", False, "Only rebuild the table from finished runs' results.")


def _env(extra: dict[str, str]) -> dict[str, str]:
    env = dict(os.environ)
    for k, v in extra.items():
        env[k] = f"{env[k]} {v}".strip() if k == "XLA_FLAGS" and env.get(k) else v
    return env


def run_variant(
    preset: str,
    out: str,
    seed: int,
    variant: str,
    steps: int = 0,
    overrides: list[str] | None = None,
    tag: str = "",
) -> dict:
    """One TTRL run on the cached base of ``seed`` in a child process under ``variant``'s
    numerics; returns its ``demo_result.json`` (run directory: `run_dir`)."""
    env, cores, seed_offset = VARIANTS[variant]
    run_dir = run_directory(out, preset, seed, variant, tag)
    cmd = [
        sys.executable,
        "-m",
        "experiments.demo",
        f"--preset={preset}",
        f"--seed={seed}",
        f"--rl_seed={seed + seed_offset}",
        f"--out={run_dir}",
        f"--base_dir={out}",
        "--labels_baseline=false",
        "--plot=false",
        f"--steps={steps}",
        "--verbose",  # a failing child leaves its traceback in its log
    ] + ([f"--set={','.join(overrides)}"] if overrides else [])  # a list flag: given once
    preexec = None
    if cores:
        allowed = sorted(os.sched_getaffinity(0))[:cores]

        def preexec():
            os.sched_setaffinity(0, allowed)

    log_path = run_dir + ".log"
    os.makedirs(os.path.dirname(log_path), exist_ok=True)
    with open(log_path, "w", encoding="utf-8") as logf:
        proc = subprocess.run(
            cmd,
            env=_env(env),
            preexec_fn=preexec,
            stdout=logf,
            stderr=subprocess.STDOUT,
            check=False,
        )
    if proc.returncode:
        raise RuntimeError(
            f"{variant} run of seed {seed} failed (exit {proc.returncode}); log: {log_path}"
        )
    return read_result(run_dir)


def read_result(run_dir: str) -> dict:
    """A finished run's ``demo_result.json``, judged again by `experiments.demo.criterion`
    (so a report always applies the current criterion)."""
    from experiments import demo

    with open(os.path.join(run_dir, "demo_result.json"), encoding="utf-8") as f:
        r = json.load(f)
    k = next(int(key.split("@")[1]) for key in r["base"] if key.startswith("maj@"))
    r["verdict"] = demo.criterion(r["base"], r["ttrl_last"], r["label_accuracy"], k)
    return r


def run_directory(out: str, preset: str, seed: int, variant: str, tag: str = "") -> str:
    """Where `run_variant` writes one run."""
    return os.path.join(
        out, "robustness" + (f"_{tag}" if tag else ""), f"{preset}_seed{seed}_{variant}"
    )


def robustness_table(results: list[tuple[int, str, dict]], k: int) -> tuple[str, int]:
    """Markdown table of the runs and the number that met the criterion."""
    header = (
        f"| seed | numerics | base pass@1 | base maj@{k} | base greedy | TTRL pass@1 "
        f"| TTRL greedy | TTRL maj@{k} | held-out pass@1 base -> TTRL "
        "| label acc. first -> last | criterion |"
    )
    lines = [header, "|---|---|---|---|---|---|---|---|---|---|---|"]
    ok = 0
    for seed, variant, r in results:
        b, t, v = r["base"], r["ttrl_last"], r["verdict"]
        ok += v["met"]
        h = r.get("heldout")  # runs recorded before the held-out set have none
        held = f"{h['base']['pass@1']:.3f} -> {h['ttrl_last']['pass@1']:.3f}" if h else "-"
        lines.append(
            f"| {seed} | {variant} | {b['pass@1']:.3f} | {b[f'maj@{k}']:.3f} | {b['greedy']:.3f} "
            f"| {t['pass@1']:.3f} | {t['greedy']:.3f} | {t[f'maj@{k}']:.3f} | {held} "
            f"| {v['label_acc_first']:.2f} -> {v['label_acc_last']:.2f} "
            f"| {'met' if v['met'] else 'not met: ' + '; '.join(v['reasons'])} |"
        )
    return "\n".join(lines), ok


def run_robustness(
    preset: str,
    out: str,
    seeds: list[int],
    variants: list[str],
    steps: int = 0,
    overrides: list[str] | None = None,
    tag: str = "",
    report_only: bool = False,
) -> dict:
    """Builds (or reuses) each seed's base, runs every variant, prints the table.

    ``tag`` names the set of runs (their directories and the summary file);
    ``report_only`` rebuilds the table from finished runs without running anything."""
    from experiments import demo, pretrain_tiny

    unknown = [v for v in variants if v not in VARIANTS]
    if unknown:
        raise ValueError(f"unknown variants {unknown}; known: {list(VARIANTS)}")
    t0 = time.time()
    print(demo.CRITERION_TEXT, flush=True)
    results = []
    for seed in seeds:
        base_dir = os.path.join(out, f"base_{preset}_seed{seed}")
        if not report_only:
            print(f"seed {seed}: base model {base_dir} (built once, then cached)", flush=True)
            pretrain_tiny.load_or_build(base_dir, preset, seed=seed, log_every=0)
        for variant in variants:
            t = time.time()
            if report_only:
                r = read_result(run_directory(out, preset, seed, variant, tag))
            else:
                r = run_variant(preset, out, seed, variant, steps, overrides, tag)
            results.append((seed, variant, r))
            print(f"  {variant:9s} {r['verdict']['line']} ({time.time() - t:.0f} s)", flush=True)
    k = demo.SETTINGS[preset]["votes"]
    table, ok = robustness_table(results, k)
    rate = f"criterion met in {ok} of {len(results)} runs"
    print(table + "\n" + rate + f"; total {time.time() - t0:.0f} s", flush=True)
    summary = {
        "preset": preset,
        "overrides": overrides or [],
        "runs": [{"seed": s, "variant": v, **r} for s, v, r in results],
        "met": ok,
        "total": len(results),
        "table": table,
    }
    name = f"robustness_{preset}" + (f"_{tag}" if tag else "") + ".json"
    with open(os.path.join(out, name), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    return summary


def main(argv):
    del argv
    logging.set_verbosity(logging.WARNING)
    from experiments import compile_cache

    compile_cache.enable(os.path.join(FLAGS.out, "jax_cache"))  # the children's cache too
    run_robustness(
        FLAGS.preset,
        FLAGS.out,
        [int(s) for s in FLAGS.seeds],
        FLAGS.variants,
        FLAGS.steps,
        FLAGS.set,
        FLAGS.tag,
        FLAGS.report,
    )
    return 0


if __name__ == "__main__":
    define_flags()
    app.run(main)
