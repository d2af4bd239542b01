"""The label-free collapse guard: the step-KL estimate, the trust region's decisions on
synthetic KL streams, and the guard inside the trainer (undo, retry, resume)."""

import jax
import numpy as np
import pytest
from test_trainer import config, setup  # noqa: F401  (the module's tiny model and data)

from ttrl_jax import trainer as trainer_lib
from ttrl_jax.update import guard


def test_step_kl_is_the_k3_estimate_of_kl_old_new():
    rng = np.random.default_rng(0)
    p_old = rng.dirichlet(np.ones(6))
    p_new = p_old * np.exp(0.5 * rng.standard_normal(6))  # a small step: r = new / old
    p_new /= p_new.sum()  # stays near 1, so the estimate's variance is small
    exact = float(np.sum(p_old * np.log(p_old / p_new)))
    ys = rng.choice(6, size=(400, 500), p=p_old)  # tokens sampled from pi_old
    mask = (rng.random(ys.shape) < 0.8).astype(np.float32)
    est = guard.step_kl(np.log(p_new)[ys], np.log(p_old)[ys], mask)
    assert est == pytest.approx(exact, rel=0.02)
    # by hand on three tokens, one masked out
    d = np.array([[0.1, -0.2, 5.0]])
    hand = ((np.exp(0.1) - 1 - 0.1) + (np.exp(-0.2) - 1 + 0.2)) / 2
    assert guard.step_kl(d, np.zeros_like(d), np.array([[1, 1, 0]])) == pytest.approx(hand)
    assert guard.step_kl(d, d, np.ones_like(d)) == 0.0


def _judge(tr: guard.TrustRegion, stream):
    return [(tr.accept(kl), tr.scale) for kl in stream]


def test_trust_region_is_quiet_on_a_healthy_stream():
    """KLs around the target: every step kept, the lr scale stays at 1."""
    tr = guard.TrustRegion(target=0.004)
    stream = [0.009 * 0.8, 0.003, 0.002, 0.004, 0.001, 0.006, 0.0005, 0.003] * 3
    assert all(ok for ok, _ in _judge(tr, stream))
    assert tr.scale == 1.0


def test_trust_region_rejects_a_collapse_spike_then_recovers():
    """A step 15x over target (the collapse pattern: one sign-like Adam step) is undone
    and retried at half the scale until it fits; small steps grow the scale back to 1."""
    tr = guard.TrustRegion(target=0.004, max_factor=2.0, grow=1.5, shrink=2.0)
    decisions = _judge(tr, [0.06, 0.03, 0.015, 0.0075])
    assert [ok for ok, _ in decisions] == [False, False, False, True]
    assert [s for _, s in decisions] == [0.5, 0.25, 0.125, 0.125]
    assert not tr.accept(float("nan")) and tr.scale == 0.0625
    scales = [s for _, s in _judge(tr, [0.001] * 8)]
    assert scales[-1] == 1.0 and scales == sorted(scales)
    assert tr.accept(0.005) and tr.scale == 1.0  # in the band: no change
    with pytest.raises(ValueError):
        guard.TrustRegion(target=0.0)


def test_trust_region_scale_floor_and_state_round_trip():
    tr = guard.TrustRegion(target=1e-3, min_scale=0.01)
    for _ in range(20):
        tr.accept(1.0)
    assert tr.scale == 0.01
    other = guard.TrustRegion(target=1e-3)
    other.restore(tr.state())
    assert other.scale == 0.01


def _params(tr):
    return jax.tree.map(np.asarray, tr.params)


@pytest.mark.slow
def test_guard_with_a_loose_target_changes_nothing(setup, tmp_path):  # noqa: F811
    """A guard that never binds gives the unguarded run's params (to the last bits that
    XLA's fusion of the traced lr scale may move)."""
    over = {"mesh.data": 1, "train.steps": 2, "train.save_every": 2}
    plain = trainer_lib.Trainer(config(setup, tmp_path / "plain", **over))
    plain.run()
    plain.close()
    loose = trainer_lib.Trainer(
        config(setup, tmp_path / "loose", **over, **{"guard.step_kl_target": 1e6})
    )
    last = loose.run()
    loose.close()
    assert last["guard/rejected"] == 0.0 and last["guard/lr_scale"] == 1.0
    assert last["guard/step_kl"] > 0
    jax.tree.map(
        lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-8),
        _params(plain),
        _params(loose),
    )


@pytest.mark.slow
def test_guard_undoes_steps_that_overshoot_and_resumes_its_scale(setup, tmp_path):  # noqa: F811
    """A target no update can meet: every attempt is undone (params unchanged), each
    retry halves the scale, and the scale is restored on resume."""
    over = {
        "mesh.data": 1,
        "train.steps": 1,
        "train.save_every": 1,
        "guard.step_kl_target": 1e-12,
        "guard.max_backtracks": 2,
    }
    tr = trainer_lib.Trainer(config(setup, tmp_path / "run", **over))
    before = _params(tr)
    last = tr.run()
    tr.close()
    assert last["guard/rejected"] == 3.0  # the first try and 2 retries
    assert last["guard/lr_scale"] == 0.25  # the scale of the last (third) try
    jax.tree.map(np.testing.assert_array_equal, before, _params(tr))
    assert tr.trust.scale == 0.125
    again = trainer_lib.Trainer(config(setup, tmp_path / "run", **{**over, "train.steps": 2}))
    assert again.trust.scale == 0.125 and again.step == 1
    again.close()
