"""Issue #21, "nothing lost": kills during checkpoint deletion, exports that would
overwrite files, missing tokenizers, one-line errors, metrics after resume."""

import logging
import os
import random
import signal
import subprocess
import sys
import textwrap
import time

import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ttrl_jax import checkpointing
from ttrl_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    UnreadableCheckpointError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = {**os.environ, "JAX_PLATFORMS": "cpu", "XLA_FLAGS": "", "PYTHONPATH": ROOT}


def _params(scale=1.0, width=8):
    return {
        "w": jnp.full((width, 4), scale),
        "layers": {"a": jnp.arange(12.0).reshape(3, 4) * scale, "b": jnp.ones(5) * scale},
    }


def _save_steps(directory, steps, keep_last=3, width=8):
    ck = Checkpointer(directory, keep_last=keep_last, async_save=False)
    for s in steps:
        p = _params(s, width)
        ck.save(s, p, optax.adam(1e-3).init(p), {"step": s})
    ck.close()


# ---------------------------------------------------------------- point 3: deletion

_SAVER = textwrap.dedent(
    """
    import os, sys, time
    import jax.numpy as jnp, optax
    from ttrl_jax.checkpointing import Checkpointer

    # slow every file removal down, so that a kill at a random time often lands
    # while keep-last is deleting an old step (the window the issue is about)
    for name in ("remove", "unlink"):
        real = getattr(os, name)
        def slow(path, *a, _real=real, **k):
            time.sleep(0.003)
            return _real(path, *a, **k)
        setattr(os, name, slow)

    directory, start, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ck = Checkpointer(directory, keep_last=1, async_save=True)
    params = {f"p{i}": jnp.full((32, 32), float(i)) for i in range(24)}
    opt = optax.adam(1e-3).init(params)
    step = start
    while True:
        p = {k: v + step for k, v in params.items()}
        ck.save(step, p, opt, {"step": step})
        with open(progress, "a") as f:
            f.write(f"{step}\\n")
        step += 1
    """
)


def test_kill_during_keep_last_deletion_never_lists_a_broken_step(tmp_path):
    """Real SIGKILLs at random times while a run saves with keep_last=1: afterwards
    every listed step restores, and "latest" restores, each time."""
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    directory = tmp_path / "ck"
    rng = random.Random(0)
    start = 1
    for _ in range(8):
        progress = tmp_path / f"progress-{start}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(directory), str(start), str(progress)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and len(progress.read_text().split()) >= 2:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        ck = Checkpointer(directory, read_only=True)
        steps = ck.all_steps()
        assert steps, os.listdir(directory)
        for s in steps:  # every listed step restores, params and optimizer state
            got, p, _, meta = ck.restore(s)
            assert got == s and meta["step"] == s
            np.testing.assert_array_equal(np.asarray(p["p3"]), 3.0 + s)
        assert ck.restore("latest")[0] == max(steps)
        start = max(steps) + 1  # resume after the newest step, as the trainer does


def _break(directory, step):
    """A step as an older version's interrupted deletion left it: listed, with
    some of its array files gone."""
    d = os.path.join(directory, str(step), "params")
    victims = [
        os.path.join(root, f)
        for root, _, files in os.walk(d)
        for f in files
        if os.sep + "d" + os.sep in os.path.join(root, f) + os.sep
    ]
    assert victims
    for v in victims:
        os.remove(v)


def test_unreadable_latest_falls_back_with_one_warning_and_is_set_aside(tmp_path, caplog):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1, 2, 3])
    _break(directory, 3)
    like = _params()
    ro = Checkpointer(directory, read_only=True)
    assert ro.all_steps() == [1, 2, 3]  # it looks complete on disk
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        step, p, _, meta = ro.restore("latest", params_like=like)
    assert step == 2 and meta["step"] == 2
    np.testing.assert_array_equal(np.asarray(p["w"]), 2.0)
    warnings = [r for r in caplog.records if r.name == checkpointing.__name__]
    assert len(warnings) == 1 and "step 3" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert ro.all_steps() == [1, 2]  # no longer listed as restorable
    assert os.path.isdir(os.path.join(directory, "3"))  # read-only: nothing moved
    # an explicit request for the broken step: one line, no fallback
    with pytest.raises(UnreadableCheckpointError, match="step 3 cannot be restored") as e:
        Checkpointer(directory, read_only=True).restore(3, params_like=like)
    assert "\n" not in str(e.value)
    # a writer (the trainer resuming) repairs: the step is moved aside, not deleted,
    # and saving that step again works
    rw = Checkpointer(directory, keep_last=3, async_save=False)
    p = _params()
    assert rw.restore("latest", params_like=p, opt_state_like=optax.adam(1e-3).init(p))[0] == 2
    assert rw.all_steps() == [1, 2]
    aside = os.listdir(os.path.join(directory, checkpointing.UNREADABLE))
    assert len(aside) == 1 and aside[0].startswith("3-")
    rw.save(3, _params(3), optax.adam(1e-3).init(p), {"step": 3})
    assert rw.restore("latest", params_like=p)[0] == 3
    rw.close()


def test_unreadable_everywhere_raises_one_line_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1])
    _break(directory, 1)
    rw = Checkpointer(directory, keep_last=3)
    with pytest.raises(UnreadableCheckpointError, match="step 1 cannot be restored"):
        rw.restore("latest", params_like=_params())
    assert os.path.isdir(os.path.join(directory, "1"))
    rw.close()


def test_resume_with_another_model_shape_names_the_param_and_both_shapes(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1], width=8)
    with pytest.raises(CheckpointMismatchError) as e:
        Checkpointer(directory, read_only=True).restore("latest", params_like=_params(width=16))
    msg = str(e.value)
    assert "'w'" in msg and "(8, 4)" in msg and "(16, 4)" in msg and "\n" not in msg
    # nothing was set aside: the checkpoint is fine, the run is not
    assert Checkpointer(directory, read_only=True).all_steps() == [1]


def test_step_that_is_not_a_number_is_one_line(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1])
    with pytest.raises(ValueError, match="'foo'"):
        Checkpointer(directory, read_only=True).resolve("foo")
