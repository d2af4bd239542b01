"""The trainer's typed settings: one reading of the config, derived values decided once,
and every stage setting reaching the code that uses it."""

import dataclasses

import jax
import numpy as np
import pytest
from test_trainer import config, setup  # noqa: F401  (the module fixture)

from ttrl_jax import trainer as trainer_lib
from ttrl_jax.config import ConfigValueError, default_config, validate
from ttrl_jax.settings import TrainerSettings
from ttrl_jax.update import rl


def test_settings_decide_derived_values_once():
    c = default_config()
    c.rollout.n_votes, c.rollout.n_train = 8, 4
    c.model.head_dtype, c.rollout.head_dtype = "bfloat16", ""
    s = TrainerSettings.from_config(c)
    assert (s.rollout.n_votes, s.rollout.n_train) == (8, 4)
    assert s.rollout.head_dtype == "bfloat16"  # the sampler falls back to the model's head
    assert s.trust_region is None and s.update.need_ref == (c.algo.kl_coef > 0)
    c.reward.mode = "srt"  # SRT trains on all its votes
    c.guard.step_kl_target = 0.004
    c.model.shared_prompt_forward = True
    s = TrainerSettings.from_config(c)
    assert s.rollout.n_train == 8 and s.loss.prompt_group == 8
    assert s.trust_region["target"] == 0.004
    with pytest.raises(dataclasses.FrozenInstanceError):
        s.rollout.temperature = 0.5  # a stage cannot change what another reads


def test_reward_to_go_needs_kl_in_reward(setup, tmp_path):  # noqa: F811
    c = config(setup, tmp_path / "run", **{"algo.kl_reward_to_go": True})
    with pytest.raises(ConfigValueError, match="algo.kl_reward_to_go"):
        validate(c)
    c.algo.kl_in_reward = True
    validate(c)


@pytest.mark.parametrize("to_go", [False, True])
@pytest.mark.slow
def test_kl_in_reward_shape_reaches_the_advantages(setup, tmp_path, monkeypatch, to_go):  # noqa: F811
    """Two steps with the KL in the reward: the trainer's advantages are exactly
    `rl.kl_in_reward_advantages` with the configured ``reward_to_go``, and once the
    KL is non-zero the two shapes give different advantages on the same batch."""
    seen = []
    real = rl.kl_in_reward_advantages

    def spy(*args, **kwargs):
        out = real(*args, **kwargs)
        other = real(*args, **{**kwargs, "reward_to_go": not kwargs["reward_to_go"]})
        seen.append((kwargs["reward_to_go"], np.asarray(out), np.asarray(other)))
        return out

    monkeypatch.setattr(trainer_lib.rl, "kl_in_reward_advantages", spy)
    c = config(
        setup,
        tmp_path / "run",
        **{
            "mesh.data": 1,
            "train.steps": 2,
            "algo.kl_in_reward": True,
            "algo.kl_coef": 0.5,
            "algo.kl_reward_to_go": to_go,
        },
    )
    tr = trainer_lib.Trainer(c)
    try:
        tr.run()
    finally:
        tr.close()
    assert [s[0] for s in seen] == [to_go, to_go]
    _, got, other = seen[1]  # step 2: the policy has left the reference, so KL != 0
    assert np.isfinite(got).all() and not np.array_equal(got, other)


def test_decode_slots_reach_the_trainer_and_evaluation(setup, tmp_path, monkeypatch):  # noqa: F811
    """rollout.decode_slots is a sampling setting: it reaches the trainer's rollouts and
    every evaluation batch alike (-1: the default rule, as None in the RolloutSpec)."""
    from ttrl_jax.eval import evaluation
    from ttrl_jax.rollout import generate

    specs = []

    def fake_rollout(params, cfg, tokens, mask, key, spec, **kw):
        specs.append(spec)
        raise StopIteration  # the spec is all this test needs

    monkeypatch.setattr(generate, "rollout", fake_rollout)
    model = type("M", (), {"params": lambda self: None, "config": None})()
    tok = type("T", (), {"pad_id": 0, "eos_ids": (1,)})()
    key = jax.random.key(0)
    for value, want in ((-1, None), (0, 0), (24, 24)):
        c = config(setup, tmp_path / "run", **{"rollout.decode_slots": value})
        validate(c)
        assert TrainerSettings.from_config(c).rollout.decode_slots == want
        with pytest.raises(StopIteration):
            evaluation._generate(model, tok, [[5, 6]], 2, trainer_lib.eval_settings(c), 1.0, key)
        assert specs[-1].decode_slots == want
    with pytest.raises(ConfigValueError, match="rollout.decode_slots"):
        validate(config(setup, tmp_path / "run", **{"rollout.decode_slots": -2}))
