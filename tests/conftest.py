"""Test set-up: 8 fake CPU devices for sharding tests, no network, one XLA compilation
cache per test run."""

import os
import shutil
import tempfile

os.environ.setdefault("XLA_FLAGS", "--xla_force_host_platform_device_count=8")
os.environ.setdefault("JAX_PLATFORMS", "cpu")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

# Most of a test's time is XLA compiling (test_train_step.py: 201 s cold, 37 s with every
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
