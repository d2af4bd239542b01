"""A persistent XLA compilation cache for repeated runs on one machine.

A TTRL run compiles the same programs (rollout, log-prob pass, update) every time it
starts: on the CPU that is most of a short run's first step. `enable` points JAX's
persistent cache at a directory, so a second run with the same shapes loads the
executables instead of compiling them (the demo's 3-seed check: ~45 s less per seed
after the first). A loaded executable is the same program as a compiled one, so results
do not change.

JAX keys its cache by program, compile options, XLA flags, platform and device kind,
but on the CPU not by the host's instruction set or core count. An executable built for
AVX-512 would crash on an AVX2 machine sharing the directory (a network home), and one
compiled under another thread count would hide a numerics difference the demo's
robustness check is after. So the cache lives in a subdirectory named by a fingerprint
of the host CPU, the usable core count and the jax/jaxlib versions.
"""

from __future__ import annotations

import hashlib
import os
import platform


def host_fingerprint() -> str:
    """A short hex digest of what a CPU executable depends on beyond JAX's own key:
    the CPU model and feature flags, the cores this process may use, jax/jaxlib."""
    import jax
    import jaxlib

    parts = [platform.machine(), platform.processor(), jax.__version__, jaxlib.__version__]
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith(("model name", "flags", "Features")):
                    parts.append(line.split(":", 1)[1].strip())
                if not line.strip():  # the first processor describes the host
                    break
    except OSError:
        pass
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    parts.append(f"cores={cores}")
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def enable(root: str) -> str:
    """Turns on JAX's persistent compilation cache under ``root/<host_fingerprint()>``
    for every program (no minimum compile time or size) and returns that directory.
    Call it before the first compilation."""
    import jax

    path = os.path.join(root, host_fingerprint())
    os.makedirs(path, exist_ok=True)
    jax.config.update("jax_compilation_cache_dir", path)
    jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
    jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)
    return path
