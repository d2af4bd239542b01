"""Cheap checks of the benchmark tooling: the runner, the linear fit and the cost formulas."""

import importlib
import os
import sys

import numpy as np
import pytest

BENCH = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks")
sys.path.insert(0, BENCH)

run_all = importlib.import_module("run_all")
bench_scaling = importlib.import_module("bench_scaling")
project_costs = importlib.import_module("project_costs")


def _script(folder, name, body):
    (folder / f"{name}.py").write_text(body, encoding="utf-8")


def test_runner_tees_output_and_fails_on_a_failing_script(tmp_path, monkeypatch, capsys):
    _script(tmp_path, "good", "import sys; print('table row', sys.argv[1:])")
    _script(tmp_path, "bad", "raise SystemExit(3)")
    monkeypatch.setattr(run_all, "HERE", str(tmp_path))
    monkeypatch.setattr(run_all, "SCRIPTS", ("good", "absent"))
    out = tmp_path / "out"
    assert run_all.main(["--smoke", "--out", str(out)]) == 0  # missing: reported, tolerated
    assert (out / "good.txt").read_text() == "table row ['--smoke']\n"
    printed = capsys.readouterr().out
    assert "MISSING: benchmarks/absent.py" in printed and "| absent | MISSING |" in printed
    assert run_all.main(["--out", str(out), "--strict"]) == 1
    monkeypatch.setattr(run_all, "SCRIPTS", ("good", "bad"))
    assert run_all.main(["--out", str(out)]) == 1
    assert "| bad | failed (exit 3) |" in capsys.readouterr().out


def test_linear_fit():
    x = np.array([1.0, 2.0, 4.0, 8.0])
    a, b, r2 = bench_scaling.fit(x, 0.5 + 2.0 * x)
    assert (a, b, r2) == pytest.approx((0.5, 2.0, 1.0))
    assert bench_scaling.fit(x, [1.0, 0.0, 1.0, 0.0])[2] < 0.5
    # rollout time = a + b n + c n T is recovered exactly from points that follow it
    pts = [{"rollout_tokens": n, "T": t} for n, t in ((64, 8), (128, 8), (128, 16), (512, 32))]
    for p in pts:
        p["rollout_s"] = 0.1 + 2e-3 * p["rollout_tokens"] + 1e-5 * p["rollout_tokens"] * p["T"]
    a, b, c, r2 = bench_scaling.fit_quadratic_attention(pts)
    assert (a, b, c, r2) == pytest.approx((0.1, 2e-3, 1e-5, 1.0), rel=1e-6)


def test_cost_formulas_on_the_7b_shapes():
    cfg = project_costs.memory.PRESETS["qwen2.5-math-7b"]
    # Qwen2.5-Math-7B has 7.62B parameters (model card); the blocks hold 6.53B of them.
    assert project_costs.all_params(cfg) == pytest.approx(7.62e9, rel=0.01)
    f1 = project_costs.forward_flops(cfg, 1, 1000, 1)
    f2 = project_costs.forward_flops(cfg, 2, 1000, 1)
    assert f2 == pytest.approx(2 * f1)  # linear in sequences
    w = project_costs.Workload(response_len=16)
    chip = project_costs.CHIPS[0]
    secs, flops, _, bound = project_costs.decode_costs(cfg, w, 1, 1, chip, 0.4, 0.6)
    assert secs > 0 and 0 <= bound <= 1
    # every one of the 512 rows costs at least 2 FLOPs per matmul parameter per step
    assert flops > 16 * 512 * 2 * project_costs.block_params(cfg)
    n, _, peak = project_costs.smallest_mesh(cfg, project_costs.Workload(), chip)
    assert n >= 2 and peak <= project_costs.memory.HBM_GIB["h100"]
