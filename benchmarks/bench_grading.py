"""Grading throughput and worst-case latency on real-looking answers.

Answers are built from the MATH-500 gold answers: the gold itself, equivalent
rewrites (``\\dfrac``, ``a/b``, decimals, ``x=``, units, spacing, ``\\left(``), wrong
answers, and a few hostile ones (power towers, huge factorials, 10^5-character and
deeply nested answers). Reported:

* ``grade_many`` on 4 completions per problem: fresh workers, warm workers with new
  answers, and repeated answers (parent cache hits),
* the voting step: ``build_votes`` on B x M = 16 x 64 sampled answers with golds,
* vote extraction, old against new, side by side with their ratio: the in-process
  ``Task.extract`` (box, "answer is", last number) against ``extract_answers`` with
  the pool (completions without a box go through math-verify's extraction on the
  workers, so a vote and its grade agree), on boxed, short box-less and long box-less
  completions, and the whole voting step (extraction + ``build_votes``) both ways,
* restarting a killed worker, a fresh interpreter (``start="spawn"``) against a fork
  of the warm zygote (``start="fork"``, the default), side by side with their ratio,
* single ``grade`` calls one at a time: p50 / p99 / max latency,
* hostile answers one at a time: max latency (the per-call deadline bound).

Usage::

    python benchmarks/bench_grading.py [--workers 2] [--timeout 0.8] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import re
import signal
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import common

from ttrl_jax.rewards import answers, grading, voting

DATA = pathlib.Path(os.environ.get("TTRL_SHARED", "/work/shared")) / "data/benchmarks"
FRAC = re.compile(r"\\frac\{(\d+)\}\{(\d+)\}")


def equivalent_forms(gold: str) -> list[str]:
    """Rewrites of ``gold`` that mean the same thing."""
    forms = [gold.replace(",", ", "), f"${gold}$"]
    if re.fullmatch(r"-?\d+", gold):
        n = int(gold)
        forms += [
            f"{n}.0",
            f"x = {n}",
            f"{n}\\text{{ units}}",
            f"{n:,}" if abs(n) >= 1000 else f"0{n}",
        ]
    m = FRAC.fullmatch(gold)
    if m:
        a, b = int(m.group(1)), int(m.group(2))
        forms += [f"\\dfrac{{{a}}}{{{b}}}", f"{a}/{b}", f"\\frac{{{2 * a}}}{{{2 * b}}}"]
        if b and 10**6 % b == 0:
            forms.append(str(a / b))
    if "(" in gold:
        forms.append(gold.replace("(", "\\left( ").replace(")", " \\right)"))
    if "\\frac" in gold and not m:
        forms.append(gold.replace("\\frac", "\\dfrac"))
    if re.fullmatch(r"[a-z0-9^+\- ]+", gold) and "+" in gold:
        forms.append(" + ".join(reversed(gold.replace(" ", "").split("+"))))
    return forms


def wrong_forms(gold: str) -> list[str]:
    if re.fullmatch(r"-?\d+", gold):
        return [str(int(gold) + 1), str(int(gold) * 2 + 3)]
    return [gold + "+1", f"2({gold})"]


HOSTILE = [
    "9^{9^{9^{9}}}",
    "2^{2^{2^{2^{2^{2}}}}}",
    "(10^{100})!",
    "1000000!",
    "10^{10^{8}}",
    "1" * 100_000,
    "x" * 100_000,
    "{" * 10_000 + "1" + "}" * 10_000,
    "\\frac{" * 2_000 + "1" + "}{2}" * 2_000,
    "1+" * 20_000 + "1",
    "\\sqrt{" * 2_000 + "2" + "}" * 2_000,
]


def completion(ans: str) -> str:
    return f"Let me work through this step by step.\nTherefore, the final answer is $\\boxed{{{ans}}}$."


def long_unboxed(ans: str) -> str:
    """A ~1500-character box-less reasoning trace with inline math, then the answer."""
    steps = "".join(
        f"Step {k}: let $a_{{{k}}} = {k * k}$, so the running total is ${k * (k + 1) // 2}$. "
        for k in range(1, 20)
    )
    return f"{steps}\nChecking the cases again gives the same value.\nSo the answer is ${ans}$."


def timed(fn, *args, **kwargs):
    start = time.perf_counter()
    out = fn(*args, **kwargs)
    return out, time.perf_counter() - start


def restart_seconds(start: str, timeout: float, rounds: int) -> float:
    """Median seconds from SIGKILL of a one-worker pool's worker until the pool has
    graded a new pair (that needs a worker) on its replacement."""
    times = []
    with grading.GradingPool(1, timeout, start=start, cache_size=0) as pool:
        pool.wait_ready()
        for k in range(rounds):
            pid = pool.worker_pids[0]
            os.kill(pid, signal.SIGKILL)
            while not grading._gone(pid):
                time.sleep(0.001)
            ok, dt = timed(pool.equivalent, f"\\sqrt{{{(k + 2) ** 2}}}", str(k + 2))
            assert ok, "the replacement worker graded wrongly"
            times.append(dt)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--timeout", type=float, default=0.8)
    parser.add_argument("--quick", "--smoke", action="store_true", help="fewer problems")
    args = parser.parse_args()
    common.banner("bench_grading: answers/s and worst-case latency of the grading pool")
    rng = random.Random(0)
    golds = [row["answer"] for row in json.loads((DATA / "MATH-TTT/test.json").read_text())]
    if args.quick:
        golds = golds[:25]
    rows: list[tuple[str, str, str]] = []
    for g in golds:
        eq, wrong = equivalent_forms(g), wrong_forms(g)
        rows += [("gold", g, g), ("equivalent", rng.choice(eq), g)]
        rows += [("equivalent", rng.choice(eq), g), ("wrong", rng.choice(wrong), g)]
    results: list[tuple[str, str, str]] = []

    pool, startup = timed(lambda: grading.GradingPool(args.workers, args.timeout).wait_ready())
    results.append(("pool start-up", f"{args.workers} workers", f"{startup:.2f} s"))
    half = len(rows) // 2
    with pool:
        for name, part in (
            ("grade_many, fresh workers", rows[:half]),
            ("grade_many, warm workers, new answers", rows[half:]),
            ("grade_many, repeated answers (cache)", rows),
        ):
            comps = [completion(a) for _, a, _ in part]
            refs = [g for _, _, g in part]
            sent = pool.stats["worker"]
            got, dt = timed(pool.grade_many, comps, refs)
            share = (pool.stats["worker"] - sent) / len(part)
            rate = f"{len(part) / dt:,.0f} answers/s ({share:.0%} to workers)"
            results.append((name, f"{len(part)} answers", rate))
            if name.startswith("grade_many, fresh"):
                by_kind: dict[str, list[bool]] = {}
                for (kind, _, _), ok in zip(part, got):
                    by_kind.setdefault(kind, []).append(ok)
                acc = ", ".join(f"{k} {sum(v) / len(v):.1%}" for k, v in by_kind.items())
                results.append(("  judged equivalent", "by kind", acc))

    # Restarting a killed worker (what every hard timeout costs), both start methods
    # side by side: a fresh interpreter per worker against a fork of the warm zygote.
    rounds = 3 if args.quick else 8
    restart = {s: restart_seconds(s, args.timeout, rounds) for s in ("spawn", "fork")}
    ratio = f"spawn {restart['spawn']:.3f} s, fork {restart['fork']:.4f} s: "
    ratio += f"{restart['spawn'] / restart['fork']:.0f}x"
    results.append(("worker restart after SIGKILL (median)", f"{rounds} kills", ratio))

    # The voting step: B x M answers per step, clustered semantically, with golds; on
    # its own fresh pool, so no result is cached from the runs above.
    b, m = 16, 64
    n_steps = 2 if args.quick else 6
    math_task = answers.get_task("math")

    def sample(g: str) -> str | None:
        u = rng.random()
        if u < 0.5:
            return g
        if u < 0.75:
            return rng.choice(equivalent_forms(g))
        return rng.choice(wrong_forms(g)) if u < 0.95 else None

    with grading.GradingPool(args.workers, args.timeout) as vp:
        vp.wait_ready()
        total, spent = 0, 0.0
        for k in range(n_steps):
            batch = golds[k * b : (k + 1) * b]
            table = [
                [math_task.extract(completion(a)) if a else None for a in map(sample, [g] * m)]
                for g in batch
            ]
            _, dt = timed(voting.build_votes, table, golds=batch, pool=vp)
            total, spent = total + b * m, spent + dt
        rate = f"{total / spent:,.0f} answers/s ({spent / n_steps * 1e3:.0f} ms/step)"
        results.append((f"voting step, B={b} x M={m}", f"{n_steps} steps", rate))

    # Vote extraction, old (in process) against new (box-less through the workers).
    styles = {
        "boxed": completion,
        "short, no box": lambda a: f"Adding the parts, the answer is ${a}$.",
        "long, no box": long_unboxed,
    }
    with grading.GradingPool(args.workers, args.timeout) as ep:
        ep.wait_ready()
        for style, make in styles.items():
            spent_old = spent_new = 0.0
            for k in range(n_steps):
                batch = golds[(k + 7) * b % len(golds) :][:b] or golds[:b]
                texts = [[make(a) if a else "" for a in map(sample, [g] * m)] for g in batch]
                old, dt_old = timed(lambda t=texts: [[math_task.extract(c) for c in r] for r in t])
                new, dt_new = timed(answers.extract_answers, texts, pool=ep)
                spent_old, spent_new = spent_old + dt_old, spent_new + dt_new
                agree = sum(x == y for ro, rn in zip(old, new) for x, y in zip(ro, rn))
            per = (
                f"old {spent_old / n_steps * 1e3:.1f} ms/step, new {spent_new / n_steps * 1e3:.1f}"
            )
            ratio = f"{per} ms/step, new/old {spent_new / max(spent_old, 1e-9):.1f}x"
            results.append((f"vote extraction, {style}", f"B={b} x M={m}", ratio))
            results.append(("  same answer old and new", "last step", f"{agree / (b * m):.1%}"))
    # The whole voting step both ways, on box-less completions; a pool for each side, so
    # that neither reads the other's cached results.
    with (
        grading.GradingPool(args.workers, args.timeout) as pool_old,
        grading.GradingPool(args.workers, args.timeout) as pool_new,
    ):
        pool_old.wait_ready()
        pool_new.wait_ready()
        spent_old = spent_new = 0.0
        for k in range(n_steps):
            batch = golds[(k + 3) * b % len(golds) :][:b] or golds[:b]
            texts = [[long_unboxed(a) if a else "" for a in map(sample, [g] * m)] for g in batch]

            def step_old(texts=texts, batch=batch):
                table = [[math_task.extract(c) for c in row] for row in texts]
                return voting.build_votes(table, golds=batch, pool=pool_old)

            def step_new(texts=texts, batch=batch):
                table = answers.extract_answers(texts, pool=pool_new)
                return voting.build_votes(table, golds=batch, pool=pool_new)

            spent_old += timed(step_old)[1]
            spent_new += timed(step_new)[1]
        ratio = (
            f"old {spent_old / n_steps * 1e3:.0f} ms/step, new {spent_new / n_steps * 1e3:.0f} "
            f"ms/step, new/old {spent_new / max(spent_old, 1e-9):.2f}x"
        )
        results.append(("voting step incl. extraction, long no box", f"B={b} x M={m}", ratio))

    # Single calls, one at a time, on fresh workers without a result cache.
    with grading.GradingPool(args.workers, args.timeout, cache_size=0) as sp:
        sp.wait_ready()
        lat = []
        for _, a, g in rows[1::2][: (100 if args.quick else 400)]:
            _, dt = timed(sp.grade, completion(a), g)
            lat.append(dt)
        lat.sort()
        p50, p99 = (lat[min(len(lat) - 1, int(q * len(lat)))] * 1e3 for q in (0.5, 0.99))
        stats = f"p50 {p50:.1f} ms, p99 {p99:.1f} ms, max {lat[-1] * 1e3:.0f} ms"
        results.append(("single grade calls", f"{len(lat)} calls", stats))

    # Hostile answers: each bounded by the deadline (default length cap lifted).
    with grading.GradingPool(args.workers, args.timeout, max_chars=None, cache_size=0) as hp:
        hp.wait_ready()
        worst = 0.0
        for h in HOSTILE:
            ok, dt = timed(hp.equivalent, h, "7")
            assert ok is False
            worst = max(worst, dt)
        still, _ = timed(hp.equivalent, "\\frac{1}{2}", "0.5")
        results.append(
            (
                "hostile answers, one at a time",
                f"{len(HOSTILE)} calls",
                f"max {worst * 1e3:.0f} ms (deadline {args.timeout * 1e3:.0f} ms)",
            )
        )
        results.append(("  hard kills", "", f"{hp.stats['timeouts']}, pool still grading: {still}"))

    print(
        f"\ngrading: {os.cpu_count()} CPUs, {args.workers} workers, deadline {args.timeout} s, "
        f"load average {os.getloadavg()[0]:.2f}"
    )
    common.table(["measurement", "size", "result"], results)


if __name__ == "__main__":
    main()
