"""Environments for the processes tests launch: the suite's compile flags for tests of
the library's logic, a user's flags for tests of a learning claim; and what Linux's
/proc says of a process."""

from __future__ import annotations

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# The children's import path: the checkout, then `core_install/sitecustomize.py`, which
# hides torch from them as the core install (`make demo`) does.
CHILD_PATH = os.pathsep.join((ROOT, os.path.join(ROOT, "tests", "core_install")))

# The suite's programs are tiny: compiling them costs far more than running them. XLA's
# CPU backend compiles them ~3x faster with LLVM's optimisation off and the classic
# (pre-MLIR) fusion emitters; they compute the same functions (`tests/conftest.py`).
TEST_XLA_FLAGS = (
    "--xla_backend_optimization_level=0 --xla_llvm_disable_expensive_passes=true "
    "--xla_cpu_use_fusion_emitters=false"
)


def child_env(devices: int = 1, **extra: str) -> dict[str, str]:
    """A child JAX process on the CPU with ``devices`` fake devices and the suite's
    compile flags, without torch (`CHILD_PATH`); it inherits the run's compilation cache
    (`conftest`)."""
    flags = TEST_XLA_FLAGS
    if devices > 1:
        flags = f"--xla_force_host_platform_device_count={devices} {flags}"
    env = {"JAX_PLATFORMS": "cpu", "XLA_FLAGS": flags, "PYTHONPATH": CHILD_PATH}
    return {**os.environ, **env, **extra}


def user_env(**extra: str) -> dict[str, str]:
    """A child process as a user runs it: one CPU device, XLA's default flags, the core
    install (no torch)."""
    env = {**os.environ, "JAX_PLATFORMS": "cpu", "PYTHONPATH": CHILD_PATH, **extra}
    env.pop("XLA_FLAGS", None)
    return env


def proc_stat(pid: int) -> list[str]:
    """The fields of ``/proc/<pid>/stat`` after the command name: state, ppid, ..."""
    with open(f"/proc/{pid}/stat") as f:
        return f.read().rsplit(")", 1)[1].split()


def alive(pid: int) -> bool:
    """Running (a zombie waiting for its reaper counts as stopped)."""
    try:
        return proc_stat(pid)[0] != "Z"
    except (FileNotFoundError, ProcessLookupError):  # reaped (before or while reading)
        return False
