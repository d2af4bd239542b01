# make test  -- create/reuse .venv, install the pinned set, run the test suite
# make test-fast -- the suite without the tests marked slow (a quick change-test loop)
# make demo  -- run the built-in TTRL demo on the CPU
# make demo-robustness -- TTRL on 5 pretraining seeds x 3 perturbed numerics: the rate
# make demo-guard -- a collapsing TTRL config (lr 4.5e-4) without and with the guard
# make demo-srt -- SRT's reward hacking on the same task, and five mitigations
# make demo-rewards -- TTRL vs self-certainty, entropy, semantic entropy (3 seeds)
# make bench -- run every benchmark (benchmarks/run_all.py; outputs in benchmarks/results/)
# make bench-smoke -- every benchmark on a tiny config (CI: checks only that they run)
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CORE_STAMP := $(VENV)/.installed-core
TEST_STAMP := $(VENV)/.installed-test
BENCH_STAMP := $(VENV)/.installed-bench
TEST_WORKERS ?= 2
PYTEST_ARGS ?=
# pip byte-compiles every installed file on one core (torch alone has thousands), most
# of which no process ever imports; so pip writes no .pyc and Python writes one for each
# module when it is first imported. That needs bytecode writing on, which some machines
# turn off (PYTHONDONTWRITEBYTECODE=1: every process would then compile its imports
# again), so make's recipes run without that variable. Measured on 2 cores: compiling
# the whole venv took 27 s of the install; the imports of the test suite compile in ~8 s.
PIP := $(PY) -m pip install -q --no-compile
# The pinned set installs with uv where it can (it resolves, downloads and unpacks in
# parallel: on 2 cores the runtime set took 5 s against pip's 37 s, the test extra 2 s
# against 9 s, the same versions); pip takes over if uv cannot be installed or fails
# (uv reads no pip configuration, so a pip-only mirror still works). uv writes no
# bytecode either. torch always comes from pip: see the test stamp.
UV_VERSION := 0.13.10
UV := $(VENV)/bin/uv
FAST_PIP = { test -x $(UV) || $(PIP) uv==$(UV_VERSION); } && $(UV) pip install -q --python $(PY)
PINNED := -c requirements/constraints.txt -e
# $(call pinned,TARGET): TARGET with the pinned versions, by uv, else by pip
pinned = $(FAST_PIP) $(PINNED) $(1) || $(PIP) $(PINNED) $(1)
unexport PYTHONDONTWRITEBYTECODE

.PHONY: test test-fast demo demo-robustness demo-guard demo-srt demo-rewards install bench bench-smoke clean-venv

# the library and the demos: no torch or trl (a user who only runs the demo does
# not download them; on most machines PyPI's torch is the multi-GB CUDA build)
$(CORE_STAMP): pyproject.toml requirements/constraints.txt
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(call pinned,.)
	touch $(CORE_STAMP)

# tests add the test extra, benchmarks the bench extra, each with its own stamp: torch
# is only a test/bench dependency (parity checks); 2.13.0 is the CPU build on this image
$(TEST_STAMP): $(CORE_STAMP)
	$(PIP) torch==2.13.0
	$(call pinned,".[test]")
	touch $(TEST_STAMP)

$(BENCH_STAMP): $(CORE_STAMP)
	$(PIP) torch==2.13.0
	$(call pinned,".[bench]")
	touch $(BENCH_STAMP)

install: $(TEST_STAMP) $(BENCH_STAMP)

# two xdist workers, a test file at a time (module fixtures build once), the longest
# files first (tests/conftest.py orders them; xdist would reorder by test count)
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
test: $(TEST_STAMP)
	$(PY) -m pytest -q $(XDIST) --durations=15 $(PYTEST_ARGS) tests

# the fast tier for a change-test loop: everything but the tests marked slow
test-fast: $(TEST_STAMP)
	$(PY) -m pytest -q $(XDIST) -m "not slow" $(PYTEST_ARGS) tests

demo: $(CORE_STAMP)
	$(PY) -m experiments.demo

demo-robustness: $(CORE_STAMP)
	$(PY) -m experiments.demo_robustness

demo-guard: $(CORE_STAMP)
	$(PY) -m experiments.demo_guard

demo-srt: $(CORE_STAMP)
	$(PY) -m experiments.demo_srt

demo-rewards: $(CORE_STAMP)
	$(PY) -m experiments.demo_rewards

bench: $(BENCH_STAMP)
	$(PY) -m benchmarks.run_all

bench-smoke: $(BENCH_STAMP)
	$(PY) -m benchmarks.run_all --smoke

clean-venv:
	rm -rf $(VENV)
