"""Runs every benchmark script, one subprocess each, and tees its output to a file.

``make bench`` runs the full set (tens of minutes on a 2-core CPU); ``make bench-smoke``
passes ``--smoke`` to each script (tiny configs; CI checks only that they all run). The
output of ``benchmarks/<name>.py`` goes to ``<out>/<name>.txt`` (default
``benchmarks/results/`` or ``benchmarks/results/smoke/``, git-ignored) as it is printed.
Full runs go one script at a time (timings must not share the machine); ``--smoke`` runs
three at a time by default on the 2 cores (compiles and imports are mostly
single-threaded and wait on disk: 57 s against 62 s two at a time, 2026-11-29), with
XLA's backend optimisation off (`SMOKE_XLA_FLAGS`: 51 s against 68 s). The exit
status is non-zero if any script fails; a listed script that does not exist
(yet) is reported as MISSING in the output and the summary, and is an error only with
``--strict``.

Run: ``python -m benchmarks.run_all [--smoke] [--only NAME ...] [--out DIR]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import common

# Fixed order: the side-by-side comparisons first, then the scaling / cost tables.
SCRIPTS = (
    "bench_rollout",
    "bench_lengths",
    "bench_rl_step",
    "bench_sampling_methods",
    "bench_cpu_kernels",
    "bench_grading",
    "bench_scaling",
    "bench_mfu",
    "project_costs",
)

# measured --smoke wall times on the 2-core CI machine (s), to schedule the longest first
SMOKE_SECONDS = {
    "bench_rl_step": 51,
    "bench_rollout": 23,
    "bench_lengths": 10,
    "bench_scaling": 28,
    "bench_grading": 23,
    "bench_mfu": 11,
    "bench_sampling_methods": 10,
    "bench_cpu_kernels": 8,
    "project_costs": 3,
}

_PRINT = threading.Lock()


# --smoke children compile with XLA's backend (LLVM) optimisation off: ~25 % less CPU on
# a smoke run, whose timings nobody reads (bench_scaling --smoke: 25.0 -> 18.5 CPU-s)
SMOKE_XLA_FLAGS = "--xla_backend_optimization_level=0"


def run_one(name: str, smoke: bool, out_dir: str, stream: bool = True) -> tuple[str, float]:
    """Runs ``benchmarks/<name>.py``, writing its stdout + stderr to ``<out_dir>/<name>.txt``
    and, with ``stream``, to this process's stdout as it comes (else all of it at the end);
    returns (status, seconds)."""
    path = os.path.join(HERE, f"{name}.py")
    if not os.path.exists(path):
        print(f"\n!! MISSING: benchmarks/{name}.py does not exist (yet); not run", flush=True)
        return "MISSING", 0.0
    cmd = [sys.executable, path] + (["--smoke"] if smoke else [])
    if stream:
        print(f"\n>> {' '.join(cmd)}", flush=True)
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    if smoke:  # smoke runs only check that the scripts run: spend less CPU compiling
        env["XLA_FLAGS"] = f"{env.get('XLA_FLAGS', '')} {SMOKE_XLA_FLAGS}".strip()
    start = time.perf_counter()
    log_path = os.path.join(out_dir, f"{name}.txt")
    with open(log_path, "w", encoding="utf-8") as log:
        proc = subprocess.Popen(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            env=env,
            cwd=os.path.dirname(HERE),
        )
        for line in proc.stdout:
            if stream:
                sys.stdout.write(line)
            log.write(line)
        rc = proc.wait()
    seconds = time.perf_counter() - start
    if not stream:
        with open(log_path, encoding="utf-8") as log, _PRINT:
            print(f"\n>> {' '.join(cmd)}  ({seconds:.0f} s)\n{log.read()}", end="", flush=True)
    return ("ok" if rc == 0 else f"failed (exit {rc})"), seconds


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--smoke", action="store_true", help="pass --smoke to every script")
    ap.add_argument("--only", nargs="+", choices=SCRIPTS, help="run these scripts only")
    ap.add_argument(
        "--jobs",
        type=int,
        default=0,
        help="scripts run at once (default: 3 with --smoke, else 1 so timings do not mix)",
    )
    ap.add_argument("--out", help="output folder (default benchmarks/results[/smoke])")
    ap.add_argument("--strict", action="store_true", help="a listed script that is absent fails")
    args = ap.parse_args(argv)
    out_dir = args.out or os.path.join(HERE, "results", *(["smoke"] if args.smoke else []))
    os.makedirs(out_dir, exist_ok=True)
    common.banner(f"benchmarks/run_all{' --smoke' if args.smoke else ''}")
    start = time.perf_counter()
    names = args.only or SCRIPTS
    jobs = args.jobs or (3 if args.smoke else 1)
    if jobs > 1:  # longest first, so the workers finish together
        names = sorted(names, key=lambda n: -SMOKE_SECONDS.get(n, 0))
    if jobs == 1:
        results = [(name, *run_one(name, args.smoke, out_dir)) for name in names]
    else:  # outputs printed whole, one script at a time, as each finishes
        with ThreadPoolExecutor(jobs) as pool:
            done = pool.map(lambda n: (n, *run_one(n, args.smoke, out_dir, False)), names)
            results = list(done)
    print(f"\n== summary (outputs in {os.path.relpath(out_dir)}/) ==")
    common.table(["script", "status", "seconds"], [(n, s, round(t, 1)) for n, s, t in results])
    print(f"total {time.perf_counter() - start:.0f} s; load average {os.getloadavg()[0]:.2f}")
    bad = [n for n, s, _ in results if s != "ok" and not (s == "MISSING" and not args.strict)]
    if bad:
        print(f"FAILED: {', '.join(bad)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
