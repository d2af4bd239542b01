"""Memory planner: consistent estimates, exact parameter bytes, XLA's own numbers agree."""

import dataclasses
import os
import subprocess
import sys

import pytest

from ttrl_jax.models.config import ModelConfig
from ttrl_jax.planner import memory as mm

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
QWEN_7B = mm.PRESETS["qwen2.5-math-7b"]
PLAN = mm.Plan(
    fsdp=4,
    tensor=2,
    prompts=8,
    votes=64,
    trained=32,
    prompt_len=512,
    response_len=3072,
    minibatches=8,
    micro_batch=8,
)


def test_presets_match_published_sizes():
    assert mm.PRESETS["qwen2.5-math-1.5b"].num_params() == 1_543_714_304
    assert QWEN_7B.num_params() == 7_615_616_512
    for cfg in mm.PRESETS.values():  # the planner's shapes are the model's shapes
        assert mm.param_elements(cfg, mm.Plan()) == cfg.num_params()


@pytest.mark.parametrize("dtype,nbytes", [("bfloat16", 2), ("float32", 4)])
def test_param_bytes_are_num_params_times_dtype_over_shards(dtype, nbytes):
    one = mm.estimate(QWEN_7B, dataclasses.replace(PLAN, fsdp=1, tensor=1, param_dtype=dtype))
    assert one.term("params") == QWEN_7B.num_params() * nbytes
    # no biases: only the norm gains are replicated, everything else splits 8 ways
    cfg = ModelConfig(
        model_type="llama",
        vocab_size=1024,
        hidden_size=256,
        intermediate_size=512,
        num_layers=3,
        num_heads=8,
        num_kv_heads=4,
        head_dim=32,
    )
    plan = mm.Plan(
        data=2, fsdp=2, tensor=2, param_dtype=dtype, prompts=4, votes=4, trained=2, minibatches=1
    )
    norms = (2 * cfg.num_layers + 1) * cfg.hidden_size
    want = (cfg.num_params() - norms) * nbytes // (plan.fsdp * plan.tensor) + norms * nbytes
    assert mm.estimate(cfg, plan).term("params") == want


def test_doubling_votes_doubles_only_the_response_cache():
    a = mm.estimate(QWEN_7B, PLAN)
    b = mm.estimate(QWEN_7B, dataclasses.replace(PLAN, votes=2 * PLAN.votes))
    assert b.term("response KV cache") == 2 * a.term("response KV cache")
    assert b.term("prompt KV cache") == a.term("prompt KV cache")  # B x P, shared by M
    grows_with_m = {"response KV cache", "token + log-prob buffers", "sampler logits"}
    for ta, tb in zip(a.terms, b.terms):
        assert ta.name == tb.name
        if ta.name not in grows_with_m:
            assert ta.nbytes == tb.nbytes, ta.name
    assert b.phase("resident") == a.phase("resident")
    assert b.phase("training") == a.phase("training")


def test_decode_slots_scale_only_the_response_cache():
    """The engine's S slots hold S x T of response cache instead of B x M x T (the slot
    axis split over the batch axes); every other term stays."""
    static = mm.estimate(QWEN_7B, PLAN)
    n = PLAN.prompts * PLAN.votes
    for s in (n // 4, n // 2, n):
        eng = mm.estimate(QWEN_7B, dataclasses.replace(PLAN, decode_slots=s))
        want = static.term("response KV cache") * s // n
        assert eng.term("response KV cache") == want
        for a, b in zip(static.terms, eng.terms):
            if a.name != "response KV cache":
                assert a.nbytes == b.nbytes, a.name
    with pytest.raises(ValueError, match="decode_slots"):
        mm.Plan(prompts=2, votes=4, trained=2, minibatches=1, decode_slots=9)
    # the searches over M keep the slots' share of B x M: S = B x M plans like static
    quarter = mm.with_votes(dataclasses.replace(PLAN, decode_slots=n // 4), 32, 32)
    assert quarter.decode_slots == PLAN.prompts * 32 // 4
    budget = 40 * mm.GIB
    everything = dataclasses.replace(PLAN, decode_slots=n)
    assert mm.max_votes(QWEN_7B, everything, budget) == mm.max_votes(QWEN_7B, PLAN, budget)
    assert mm.max_votes(QWEN_7B, quarter, budget) > mm.max_votes(QWEN_7B, PLAN, budget)


def test_kv_cache_formulas():
    est = mm.estimate(QWEN_7B, PLAN)
    layers, k, dh = QWEN_7B.num_layers, QWEN_7B.num_kv_heads, QWEN_7B.head_dim
    shards = PLAN.data * PLAN.fsdp * PLAN.tensor  # B over data x fsdp, K over tensor
    p, t, b, m = PLAN.prompt_len, PLAN.response_len, PLAN.prompts, PLAN.votes
    assert est.term("prompt KV cache") == 2 * layers * b * p * k * dh * 2 // shards
    assert est.term("response KV cache") == 2 * layers * b * m * t * k * dh * 2 // shards
    # a kv-head count the tensor axis does not divide is replicated, as in sharding.spec_for
    odd = mm.estimate(QWEN_7B, dataclasses.replace(PLAN, fsdp=1, tensor=8))
    assert odd.term("prompt KV cache") == 2 * layers * b * p * k * dh * 2


def test_what_fits_is_consistent():
    est = mm.estimate(QWEN_7B, PLAN)
    budget = est.peak
    assert mm.max_votes(QWEN_7B, PLAN, budget) >= PLAN.votes
    assert mm.max_votes(QWEN_7B, PLAN, budget - 1) < PLAN.votes
    assert mm.max_response_len(QWEN_7B, PLAN, budget) >= PLAN.response_len
    mt = mm.max_votes_times_tokens(QWEN_7B, PLAN, budget)
    assert mt >= PLAN.votes * PLAN.response_len
    more = dataclasses.replace(PLAN, response_len=mt // PLAN.votes)
    bigger = mm.estimate(QWEN_7B, more)
    assert bigger.phase("resident") + bigger.phase("sampling") <= budget
    assert mm.max_votes_times_tokens(QWEN_7B, PLAN, est.phase("resident")) == 0
    assert "peak" in est.table() and "response KV cache" in est.table()


def test_bad_plans_are_rejected():
    with pytest.raises(ValueError, match="trained"):
        mm.Plan(votes=4, trained=8)
    with pytest.raises(ValueError, match="micro_batch"):
        mm.Plan(prompts=8, votes=8, trained=4, minibatches=2, micro_batch=3)
    with pytest.raises(ValueError, match="param_dtype"):
        mm.Plan(param_dtype="int8")


@pytest.mark.slow
def test_compiled_memory_agrees_with_the_estimate():
    cfg = ModelConfig(
        model_type="qwen2",
        vocab_size=256,
        hidden_size=32,
        intermediate_size=128,
        num_layers=1,
        num_heads=4,
        num_kv_heads=2,
        head_dim=8,
        qkv_bias=True,
        tie_word_embeddings=True,
    )
    plan = mm.Plan(
        param_dtype="float32",
        prompts=2,
        votes=4,
        trained=2,
        prompt_len=32,
        response_len=96,
        minibatches=1,
        micro_batch=2,
    )
    rows = mm.compare(cfg, plan, programs=("decode", "train_step"))
    engine = dataclasses.replace(plan, decode_slots=3, response_len=512)
    rows += mm.compare(cfg, engine, programs=("prefill", "decode"))
    if not all(measured for _, measured, _ in rows):
        pytest.skip("this backend has no memory_analysis")
    for name, measured, estimated in rows:
        assert 0.5 < measured / estimated < 2.0, (name, measured, estimated)


def _cli(*args):
    return subprocess.run(
        [sys.executable, "-m", "experiments.plan_memory", *args],
        check=False,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_prints_the_plan_and_rejects_bad_values():
    out = _cli(
        "--preset=qwen2.5-math-7b", "--fsdp=1", "--tensor=4", "--accelerator=v5p", "--micro_batch=1"
    )
    assert out.returncode == 0, out.stderr
    for text in (
        "response KV cache",
        "prompt KV cache",
        "95 GiB per device: fits",
        "largest M x T per prompt",
        "decode engine, S=512 slots",  # the default rule of the accelerator, not this CPU's
    ):
        assert text in out.stdout
    bad = _cli("--preset=qwen2.5-math-1.5b", "--micro_batch=5")
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines() == [
        "error: micro_batch=5 must divide the mini-batch of 32 sequences"
    ]
