"""The persistent compilation cache the demos turn on: keyed by the host, written on the
first run, read (not recompiled) on the second."""

import os
import subprocess
import sys

import procs
import pytest

CODE = """
import sys, jax, jax.numpy as jnp
from jax._src import monitoring
from experiments import compile_cache
hits = []
monitoring.register_event_listener(
    lambda name, **kw: hits.append(name) if name == "/jax/compilation_cache/cache_hits" else None
)
path = compile_cache.enable(sys.argv[1])
print(path)
print(float(jax.jit(lambda x: jnp.tanh(x) @ x.T)(jnp.ones((8, 8))).sum()))
print(len(hits))
"""


def _run(root, cores=None):
    preexec = None
    if cores:
        allowed = sorted(os.sched_getaffinity(0))[:cores]

        def preexec():
            os.sched_setaffinity(0, allowed)

    env = procs.user_env()
    env.pop("JAX_COMPILATION_CACHE_DIR", None)  # not the suite's cache
    out = subprocess.run(
        [sys.executable, "-c", CODE, str(root)],
        env=env,
        cwd=procs.ROOT,
        preexec_fn=preexec,
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    path, value, hits = out.stdout.split()
    return path, float(value), int(hits)


def test_second_run_loads_the_cached_executable(tmp_path):
    path, value, hits = _run(tmp_path)
    assert os.path.dirname(path) == str(tmp_path) and hits == 0
    assert os.listdir(path)  # the executable was written
    path2, value2, hits2 = _run(tmp_path)
    assert (path2, value2) == (path, value) and hits2 >= 1


def test_cache_directory_depends_on_the_usable_cores(tmp_path):
    if len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one usable core: no second core count to compare")
    assert _run(tmp_path, cores=1)[0] != _run(tmp_path)[0]
