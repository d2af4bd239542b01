"""Test set-up: 8 fake CPU devices for sharding tests, XLA's backend optimisation off, no
network, one XLA compilation cache per test run, the longest test files scheduled first."""

import os
import shutil
import tempfile

import procs

# Most of a test's time is XLA compiling tiny programs that then run for milliseconds, so
# the suite compiles with `procs.TEST_XLA_FLAGS`: LLVM's optimisation off and XLA CPU's
# classic fusion emitters (with the file order below, on 2 cores, the suite's summed test
# time fell from 1544 s to 791 s and its wall time from 911 s to 413 s). They compute the
# same functions: every test compares paths against each other or against a float64 /
# torch oracle, never against numbers recorded under another build. The test of the
# user's numerics (the demo's learning claim) runs with `procs.user_env()`.
os.environ.setdefault(
    "XLA_FLAGS", f"--xla_force_host_platform_device_count=8 {procs.TEST_XLA_FLAGS}"
)
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Compiles dominate the rest (test_train_step.py: 201 s cold, 37 s with every
# program cached), and test files compile many of the same programs (the tiny trainer's
# step in several files). One persistent cache per run compiles each program once: the
# first process to load this file (the xdist controller, or the only one) makes it, and
# the workers and the processes tests launch inherit it through the environment.
if "JAX_COMPILATION_CACHE_DIR" not in os.environ:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="ttrl-jax-test-xla-")
    os.environ["TTRL_TEST_CACHE_OWNER"] = str(os.getpid())
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")


def pytest_unconfigure(config):
    """The process that made the run's cache removes it at the end."""
    if os.environ.get("TTRL_TEST_CACHE_OWNER") == str(os.getpid()):
        shutil.rmtree(os.environ["JAX_COMPILATION_CACHE_DIR"], ignore_errors=True)


# Files by their measured test time, longest first (2 cores, `--durations=0` summed per
# file, 2026-12-07): with `--dist loadfile --no-loadscope-reorder` the two workers take
# files in this order, so the long ones start early and the short ones fill the end: a
# 15 s file collected last left one core idle for its whole run. The rest (each under
# ~3 s) follow as collected.
LONGEST_FIRST = (
    "test_demo.py",  # ~295 s
    "test_train_step.py",  # ~100 s
    "test_trainer.py",
    "test_nothing_lost.py",
    "test_sampling.py",
    "test_engine.py",
    "test_multihost.py",
    "test_grading.py",  # ~35 s
    "test_rl.py",
    "test_label_free_rewards.py",
    "test_cpu_kernels.py",
    "test_divergence.py",  # ~12 s
    "test_voting.py",
    "test_memory.py",
    "test_guard.py",
    "test_settings.py",
    "test_srt_curriculum.py",
    "test_models.py",  # ~6 s
    "test_compile_cache.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable
