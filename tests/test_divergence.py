"""Divergence loses nothing: an update that blows the params up is rejected, a step with
only rejected updates is not checkpointed, and a run stopped by divergence leaves (and
names) its last good checkpoint."""

import json

import jax
import numpy as np
import pytest
import tiny_models

from ttrl_jax import checkpointing
from ttrl_jax import trainer as trainer_lib
from ttrl_jax.config import ConfigValueError, validate


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("diverge")
    model = str(base / "model")
    _, vocab = tiny_models.make_tokenizer(model)
    tiny_models.make_qwen2(model, vocab_size=vocab, hidden_size=32, layers=2, eos_token_id=3)
    rows = [
        {"problem": f"What is {a} + {b} ?", "answer": str(a + b), "id": f"p{i}"}
        for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8)])
    ]
    data = base / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return model, str(data)


def _config(setup, out, **overrides):
    from experiments.configs import tiny_cpu

    model, data = setup
    c = tiny_cpu.get_config()
    c.model.path, c.data.dataset, c.data.id_key, c.output_dir = model, data, "id", str(out)
    c.mesh.data = 1
    c.train.keep_last = 3
    c.update_from_flattened_dict(overrides)
    return c


def _max_abs(tree) -> float:
    return max(float(np.max(np.abs(np.asarray(x)))) for x in jax.tree.leaves(tree))


def _saved_params(out, step):
    ck = checkpointing.Checkpointer(str(out / "checkpoints"), read_only=True)
    try:
        return ck.restore(step, with_opt_state=False)[1]
    finally:
        ck.close()


@pytest.mark.slow
def test_lr_1e30_keeps_the_good_checkpoints_and_names_the_last(setup, tmp_path):
    out = tmp_path / "run"
    tr = trainer_lib.Trainer(_config(setup, out, **{"train.steps": 3}))
    tr.run()
    tr.close()
    good = jax.tree.map(np.asarray, _saved_params(out, 3))

    tr = trainer_lib.Trainer(_config(setup, out, **{"train.steps": 10, "optim.lr": 1e30}))
    assert tr.step == 3
    with pytest.raises(trainer_lib.TrainingError, match=r"last good checkpoint: step 3 in "):
        tr.run()
    tr.close()
    assert tr.step == 3 + tr.c.train.max_bad_steps
    # every update was rejected: the params never moved, nothing new was saved, and
    # keep-last deleted none of the good steps
    assert _max_abs(tr.params) == _max_abs(good)
    ck = checkpointing.Checkpointer(str(out / "checkpoints"), read_only=True)
    assert ck.all_steps() == [1, 2, 3]
    ck.close()
    restored = _saved_params(out, 3)
    for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(good)):
        np.testing.assert_array_equal(np.asarray(a), b)
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    diverged = [r for r in rows if r["step"] > 3]
    assert diverged and all(r["actor/skipped"] == tr.c.algo.updates_per_step for r in diverged)
    assert all(r["actor/update_ratio"] > 1e20 for r in diverged)


@pytest.mark.slow
def test_without_the_check_lr_1e30_explodes_the_params(setup, tmp_path):
    """The test above can fail: with guard.max_update_ratio=0 the same update is finite
    and accepted, and the params blow up (max |p| ~ 1e29)."""
    c = _config(setup, tmp_path / "off", **{"train.steps": 1, "optim.lr": 1e30})
    c.guard.max_update_ratio = 0.0
    tr = trainer_lib.Trainer(c)
    tr.run()
    tr.close()
    assert _max_abs(tr.params) > 1e20


def test_healthy_updates_pass_the_check_and_log_their_ratio(setup, tmp_path):
    out = tmp_path / "ok"
    tr = trainer_lib.Trainer(_config(setup, out, **{"train.steps": 2}))
    tr.run()
    tr.close()
    rows = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["actor/skipped"] == 0.0
        assert 0.0 < r["actor/update_ratio"] < 0.1


def test_b2_of_one_and_a_negative_ratio_are_refused_up_front(setup, tmp_path):
    with pytest.raises(ConfigValueError, match="optim.b2"):
        validate(_config(setup, tmp_path, **{"optim.b2": 1.0}))
    with pytest.raises(ConfigValueError, match="guard.max_update_ratio"):
        validate(_config(setup, tmp_path, **{"guard.max_update_ratio": -1.0}))
