"""SRT as its code runs: the base-model curriculum and below-threshold prompts kept in
the batch with reward 0 and no KL (issue: fidelity, part 3)."""

import json
import math

import numpy as np
import pytest
import tiny_models

from ttrl_jax import trainer as trainer_lib
from ttrl_jax.config import ConfigValueError, validate
from ttrl_jax.data import curriculum
from ttrl_jax.eval import evaluation
from ttrl_jax.rewards import modes
from ttrl_jax.rollout import sampling


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    base = tmp_path_factory.mktemp("srt_curriculum")
    model = str(base / "model")
    _, vocab = tiny_models.make_tokenizer(model)
    tiny_models.make_qwen2(model, vocab_size=vocab, hidden_size=32, layers=2, eos_token_id=3)
    rows = [
        {"problem": f"What is {a} + {b} ?", "answer": str(a + b), "id": f"p{i}"}
        for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1), (4, 4)])
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
    for key, value in overrides.items():
        node = c
        *parents, leaf = key.split(".")
        for p in parents:
            node = node[p]
        node[leaf] = value
    return c


# ----------------------------------------------------------------- selection rule


@pytest.mark.parametrize(
    "ratios, fraction, expected",
    [
        ([0.5, 0.9, 0.9, 0.1, 0.7, 0.3], 1 / 3, [1, 2]),
        ([0.5, 0.9, 0.9, 0.1, 0.7, 0.3], 0.5, [1, 2, 4]),
        ([0.5, 0.9, 0.9, 0.1, 0.7, 0.3], 1.0, [0, 1, 2, 3, 4, 5]),
        ([0.25, 0.25, 0.25], 1 / 3, [0]),  # ties: the lower index first
        ([0.0, 0.125, 1.0, 0.125], 0.5, [1, 2]),
        ([0.3] * 10, 0.7, list(range(7))),  # 0.7 * 10 is 7.000000000000001: still 7
        ([0.2, 0.8], 0.01, [1]),  # at least one prompt
    ],
)
def test_select_most_consistent_matches_hand_values(ratios, fraction, expected):
    got = curriculum.select_most_consistent(np.array(ratios), fraction)
    assert got.tolist() == expected


def test_select_most_consistent_rejects_bad_input():
    with pytest.raises(ValueError, match="fraction"):
        curriculum.select_most_consistent(np.array([0.5]), 0.0)
    with pytest.raises(ValueError, match="non-empty"):
        curriculum.select_most_consistent(np.zeros((0,)), 0.5)


def test_selection_size_is_ceil_of_fraction_on_random_inputs():
    rng = np.random.default_rng(3)
    for _ in range(50):
        n = int(rng.integers(1, 40))
        ratios = rng.integers(0, 9, n) / 8
        f = float(rng.uniform(0.01, 1.0))
        got = curriculum.select_most_consistent(ratios, f)
        k = max(1, math.ceil(f * n - 1e-9))
        assert len(got) == k and np.all(np.diff(got) > 0)
        # every kept ratio >= every dropped ratio
        dropped = np.setdiff1d(np.arange(n), got)
        if dropped.size:
            assert ratios[got].min() >= ratios[dropped].max()


# ----------------------------------------------------------------- cache


def test_cache_round_trip_and_mismatches_name_the_key(tmp_path):
    path = str(tmp_path / "run" / "curriculum.json")
    fp = {"rollout.n_votes": 8, "model.path": "m"}
    ids = ["a", "b", "c"]
    assert curriculum.load_ratios(path, fp, ids) is None
    curriculum.save_ratios(path, fp, ids, np.array([0.25, 1.0, 0.5]))
    assert curriculum.load_ratios(path, fp, ids).tolist() == [0.25, 1.0, 0.5]
    assert curriculum.load_ratios(path, fp, ["c", "a", "b"]).tolist() == [0.5, 0.25, 1.0]
    with pytest.raises(ValueError, match=r"rollout.n_votes=8.*rollout.n_votes=16"):
        curriculum.load_ratios(path, dict(fp, **{"rollout.n_votes": 16}), ids)
    with pytest.raises(ValueError, match="first missing id: 'd'"):
        curriculum.load_ratios(path, fp, ["a", "b", "d"])
    with open(path, "w") as f:
        f.write("{not json")
    with pytest.raises(ValueError, match="curriculum.json: not a curriculum cache"):
        curriculum.load_ratios(path, fp, ids)


def test_majority_ratios_counts_the_largest_answer_class(monkeypatch):
    texts = [
        ["\\boxed{1}", "\\boxed{1}", "\\boxed{2}", "no answer here"],
        ["no", "answer", "at", "all"],
        ["\\boxed{3}", "\\boxed{3}", "\\boxed{3}", "\\boxed{3}"],
        ["\\boxed{0.5}", "\\boxed{\\frac{1}{2}}", "\\boxed{7}", "\\boxed{8}"],
    ]
    monkeypatch.setattr(evaluation, "_generate", lambda *a, **k: texts)
    settings = evaluation.EvalSettings(n_samples=4)
    got = evaluation.majority_ratios(None, None, [[1]] * 4, settings, key=None)
    assert got.tolist() == [0.5, 0.0, 1.0, 0.5]


def test_config_validates_the_new_keys(setup, tmp_path):
    with pytest.raises(ConfigValueError, match="data.curriculum_fraction"):
        validate(_config(setup, tmp_path, **{"data.curriculum_fraction": 0.0}))
    with pytest.raises(ConfigValueError, match="reward.below_threshold"):
        validate(_config(setup, tmp_path, **{"reward.below_threshold": "zero"}))


# ----------------------------------------------------------------- trainer


@pytest.mark.slow
def test_trainer_curriculum_votes_once_caches_and_resumes(setup, tmp_path, monkeypatch):
    out = tmp_path / "run"
    c = _config(setup, out, **{"data.curriculum_fraction": 0.5, "train.steps": 1})
    calls = []
    real = evaluation.majority_ratios

    def counting(*a, **k):
        calls.append(1)
        return real(*a, **k)

    monkeypatch.setattr(evaluation, "majority_ratios", counting)
    tr = trainer_lib.Trainer(c)
    assert len(calls) == 1
    with open(out / "curriculum.json") as f:
        cached = json.load(f)
    ratios = np.array([cached["ratios"][f"p{i}"] for i in range(7)])
    m = c.rollout.n_votes
    assert np.allclose(ratios * m, np.round(ratios * m))  # k / M
    keep = curriculum.select_most_consistent(ratios, 0.5)
    assert len(keep) == 4
    assert [r["id"] for r in tr.prompts.records] == [f"p{i}" for i in keep]
    assert tr.curriculum["prompts"] == 4 and tr.curriculum["of"] == 7
    tr.run()
    tr.close()

    # a resumed run reads the cache: no second voting pass, the same prompts
    tr2 = trainer_lib.Trainer(_config(setup, out, **{"data.curriculum_fraction": 0.5}))
    assert len(calls) == 1 and tr2.step == 1
    assert [r["id"] for r in tr2.prompts.records] == [f"p{i}" for i in keep]
    tr2.close()

    # another fraction reuses the ratios; other sampling settings are refused by name
    other = tmp_path / "other"
    other.mkdir()
    (other / "curriculum.json").write_text((out / "curriculum.json").read_text())
    tr3 = trainer_lib.Trainer(_config(setup, other, **{"data.curriculum_fraction": 1 / 3}))
    assert len(calls) == 1 and len(tr3.prompts.records) == 3
    tr3.close()
    c4 = _config(setup, out, **{"data.curriculum_fraction": 0.5, "rollout.temperature": 0.7})
    with pytest.raises(ValueError, match="rollout.temperature=1.0"):
        trainer_lib.Trainer(c4)


def _fake_batch(tr, rewards_b, label_mask):
    """A rollout of B=2 prompts x M samples with fixed lengths, and SRT-shaped rewards."""
    c = tr.c
    b, m, t = 2, c.rollout.n_votes, c.rollout.max_new_tokens
    prompt_tokens, prompt_mask = tr._prompt_batch(np.arange(b))
    rng = np.random.default_rng(0)
    tokens = rng.integers(5, 30, (b, m, t)).astype(np.int32)
    lengths = np.tile(np.array([4, 9, 16, 2, 7, 16, 5, 11])[:m], (b, 1)).astype(np.int32)
    logprobs = -rng.uniform(0.5, 3.0, (b, m, t)).astype(np.float32)
    logprobs *= np.arange(t)[None, None] < lengths[..., None]
    out = sampling.Rollout(tokens, logprobs, lengths, np.int32(t - 1))
    rw = modes.Rewards(
        np.asarray(rewards_b, np.float32),
        np.tile(np.arange(m, dtype=np.int32), (b, 1)),
        np.array([0, -1], np.int32),
        np.asarray(label_mask),
        np.ones((b,), bool),
    )
    # the trainer's build-batch, log-prob and advantage stages, as train_one_step runs them
    batch = tr._build_batch((prompt_tokens, prompt_mask), out, rw)
    arrays = tr._advantages(batch, *tr._recompute_logprobs(batch))
    return (arrays, batch.metrics), lengths


@pytest.mark.parametrize("below", ["keep", "drop"])
def test_below_threshold_prompts_keep_zero_reward_and_no_kl(setup, tmp_path, below):
    """Prompt 0 has a label, prompt 1 is below the threshold (reward 0). With "keep" its
    samples stay in the loss mask (the token-mean denominator) with advantage exactly 0
    although their KL-in-reward would not be; with "drop" they leave the mask."""
    over = {
        "reward.mode": "srt",
        "reward.threshold": 0.9,
        "reward.below_threshold": below,
        "algo.advantage": "rloo",
        "algo.kl_in_reward": True,
        "algo.kl_coef": 0.5,
    }
    tr = trainer_lib.Trainer(_config(setup, tmp_path / below, **over))
    m = tr.c.rollout.n_votes
    r = np.zeros((2, m), np.float32)
    r[0, :3] = 1.0
    (batch, extra), lengths = _fake_batch(tr, r, [True, False])
    tr.close()
    t = tr.c.rollout.max_new_tokens
    mask = np.asarray(batch["resp_mask"]).reshape(2, m, t)
    adv = np.asarray(batch["advantages"]).reshape(2, m, t)
    live = np.arange(t)[None] < lengths[0][:, None]  # [M, T]
    np.testing.assert_array_equal(mask[0], live)
    assert np.abs(adv[0][live]).max() > 0
    if below == "keep":
        np.testing.assert_array_equal(mask[1], live)  # counted in the denominator
        assert extra["trained_sequence_fraction"] == 1.0
    else:
        assert mask[1].sum() == 0
        assert extra["trained_sequence_fraction"] == 0.5
    assert np.all(adv[1] == 0.0)  # reward 0 and no KL penalty: no gradient
    assert extra["unlabelled_prompt_fraction"] == 0.5


def test_srt_presets_default_to_srt_behaviour():
    from experiments.configs import srt_qwen2p5_math_7b

    assert srt_qwen2p5_math_7b.get_config().reward.below_threshold == "keep"
    from ttrl_jax.config import default_config

    assert default_config().reward.below_threshold == "drop"
    assert default_config().data.curriculum_fraction == 1.0


def test_unmasked_kl_in_reward_would_move_the_below_threshold_prompt(setup, tmp_path):
    """The check above can fail: without the mask, KL in the reward gives prompt 1 a
    non-zero RLOO advantage (its samples differ in length and log-probs)."""
    over = {
        "reward.mode": "srt",
        "reward.below_threshold": "keep",
        "algo.advantage": "rloo",
        "algo.kl_in_reward": True,
        "algo.kl_coef": 0.5,
    }
    tr = trainer_lib.Trainer(_config(setup, tmp_path / "unmasked", **over))
    m = tr.c.rollout.n_votes
    r = np.zeros((2, m), np.float32)
    r[0, :3] = 1.0
    (batch, _), _ = _fake_batch(tr, r, [True, True])  # both "labelled": KL applies
    tr.close()
    adv = np.asarray(batch["advantages"]).reshape(2, m, -1)
    assert np.abs(adv[1]).max() > 0


# ----------------------------------------------------------------- demo-srt's judging


def test_demo_srt_judges_collapse_gain_and_the_base_floor():
    """Plain SRT collapses on a fall of >= 0.2 from its peak; a mitigation holds at
    base + 0.15 and is "not below base" at >= base (early stopping returning step 0)."""
    from experiments import demo_srt

    def seed(base, srt, peak, acc, **arms):
        runs = {"SRT": {"pass@1": srt, "train_accuracy_peak": peak, "train_accuracy": acc}}
        runs.update({name: {"pass@1": v} for name, v in arms.items()})
        return {"base": {"pass@1": base}, "runs": runs}

    results = {
        0: seed(0.35, 0.09, 0.38, 0.04, stop=0.35, cur=0.51, thr=0.34),
        1: seed(0.40, 0.45, 0.83, 0.64, stop=0.549, cur=0.56, thr=0.60),
        2: seed(0.30, 0.31, 0.50, 0.31, stop=0.46, cur=0.20, thr=0.29),
    }
    rates, table = demo_srt.judge(results)
    assert rates["SRT"] == (1, 3)  # drops 0.34, 0.19 (under 0.2), 0.19
    assert rates["SRT ends below base"] == (1, 3)
    assert rates["stop"] == (1, 3) and rates["stop not below base"] == (3, 3)
    assert rates["cur"] == (2, 3) and rates["cur not below base"] == (2, 3)
    assert rates["thr"] == (1, 3) and rates["thr not below base"] == (1, 3)
    assert "| stop | holds (test pass@1 >= base + 0.15) | 1 of 3 | 3 of 3 | 0.350 |" in table
    assert table.count("\n") == 2 + 4


def test_demo_srt_config_applies_overrides_to_every_run(tmp_path):
    """`demo_srt --set` lands on SRT's recipe; a misspelt key is an error naming it."""
    from experiments import demo_srt

    s = demo_srt.SETTINGS
    args = (str(tmp_path / "m"), str(tmp_path / "d.jsonl"), str(tmp_path / "o"), "srt", s, 0)
    plain = demo_srt.srt_config(*args)
    assert plain.guard.step_kl_target == 0.0 and plain.algo.advantage == "rloo"
    c = demo_srt.srt_config(*args, ["guard.step_kl_target=0.004", "optim.lr=3e-4"])
    assert c.guard.step_kl_target == 0.004 and c.optim.lr == 3e-4
    assert c.algo.kl_in_reward and c.optim.schedule == "constant"  # the recipe is kept
    with pytest.raises(ValueError, match="no such config key 'guard.step_kl_targt'"):
        demo_srt.srt_config(*args, ["guard.step_kl_targt=0.004"])
    with pytest.raises(ValueError, match="'fast' is not a float"):
        demo_srt.srt_config(*args, ["optim.lr=fast"])


@pytest.mark.parametrize("module", ["demo", "demo_srt"])
def test_a_bad_set_is_one_line_and_exit_2_before_any_work(tmp_path, module):
    import subprocess
    import sys

    import procs

    cmd = [sys.executable, "-m", f"experiments.{module}", f"--out={tmp_path}"]
    proc = subprocess.run(
        cmd + ["--set=guard.step_kl_targt=0.004"],
        cwd=procs.ROOT,
        env=procs.user_env(),
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr[-2000:]
    lines = proc.stderr.strip().splitlines()
    assert lines[-1] == (
        "error: --set 'guard.step_kl_targt=0.004': no such config key 'guard.step_kl_targt'"
    ), proc.stderr[-2000:]
    assert "Traceback" not in proc.stderr
    assert not any(tmp_path.iterdir())  # nothing was built or written
