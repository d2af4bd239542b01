"""Orbax checkpoints: keep-last-K plus keep-best, exact restore, clear errors."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from ttrl_jax.checkpointing import Checkpointer


def test_keep_last_and_best_and_exact_restore(tmp_path):
    params = {"w": jnp.arange(6.0).reshape(2, 3), "b": {"c": jnp.ones(3, jnp.bfloat16)}}
    opt = optax.adamw(1e-3).init(params)
    ck = Checkpointer(tmp_path / "ck", keep_last=2, best_metric="acc", best_mode="max")
    accs = {1: 0.5, 2: 0.9, 3: 0.4, 4: None, 5: 0.3}
    for step, acc in accs.items():
        p = jax.tree.map(lambda x, s=step: x + s, params)
        ck.save(step, p, opt, {"step": step, "iterator": {"epoch": 0, "position": step}},
                metrics=None if acc is None else {"acc": acc})
    ck.wait()
    assert ck.all_steps() == [2, 4, 5]  # best (2) + last two (4, 5)
    assert ck.best_step() == 2 and ck.latest_step() == 5
    step, p, o, meta = ck.restore("best", params_like=params, opt_state_like=opt)
    assert step == 2 and meta["iterator"]["position"] == 2 and meta["metrics"] == {"acc": 0.9}
    np.testing.assert_array_equal(p["w"], params["w"] + 2)
    assert p["b"]["c"].dtype == jnp.bfloat16
    assert jax.tree.structure(o) == jax.tree.structure(opt)
    ck.close()
    ro = Checkpointer(tmp_path / "ck", read_only=True, best_metric="acc")
    assert ro.resolve("best") == 2 and ro.resolve("latest") == 5
    with pytest.raises(FileNotFoundError, match="no checkpoint for step 3"):
        ro.resolve(3)
    with pytest.raises(FileNotFoundError, match="checkpoint directory not found"):
        Checkpointer(tmp_path / "missing", read_only=True)


def test_min_mode_keeps_lowest(tmp_path):
    params = {"w": jnp.zeros(2)}
    opt = optax.sgd(0.1).init(params)
    ck = Checkpointer(tmp_path / "ck", keep_last=1, best_metric="loss", best_mode="min",
                      async_save=False)
    for step, loss in [(1, 3.0), (2, 1.0), (3, 2.0)]:
        ck.save(step, params, opt, {"step": step}, metrics={"loss": loss})
    assert ck.all_steps() == [2, 3] and ck.best_step() == 2
    ck.close()
