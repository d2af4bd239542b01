"""Tests for ttrl_jax.rollout.sampling: parity with transformers, exact sampling laws, log-probs,
early exit, sharding independence and compile-once behaviour (tiny random models)."""

import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
import tiny_models
from scipy import stats

from ttrl_jax import models, sharding
from ttrl_jax.models import transformer as tfm
from ttrl_jax.rollout import engine, sampling

B, M, T = 4, 4, 16  # one compiled (prefill, decode) pair serves most tests
LENGTHS = [5, 11, 8, 3]
BLOCK = 32  # several vocabulary blocks for the 96-token test vocabulary


@pytest.fixture(scope="module")
def qwen(tmp_path_factory):
    """Tiny Qwen2 with spread-out logits (init std 0.3) and no EOS in its config."""
    path = tiny_models.make_qwen2(
        tmp_path_factory.mktemp("qwen2"), eos_token_id=None, initializer_range=0.3
    )
    return path, models.load_hf(path, dtype="float32")


@pytest.fixture(scope="module")
def prompts():
    return tiny_models.left_padded_batch(np.random.RandomState(0), LENGTHS, 96)


def run0(*args, **kw):
    """`run` with the static decoder (``decode_slots=0``)."""
    return run(*args, decode_slots=0, **kw)


def run(model, tokens, mask, key=0, m=M, **kw):
    kw.setdefault("block", BLOCK)
    out = sampling.sample(
        model.params(),
        model.config,
        tokens,
        mask,
        jax.random.key(key),
        num_samples=m,
        max_new_tokens=kw.pop("max_new_tokens", T),
        **kw,
    )
    return jax.tree.map(np.asarray, out)


# ---------------------------------------------------------------- host helpers


def test_bucket_pad_and_eos_table():
    from ttrl_jax.data.padding import bucket_length, pad_left_to

    pow2 = [bucket_length(n, rule="pow2", multiple=16) for n in (1, 16, 17, 100)]
    assert pow2 == [16, 16, 32, 128]
    assert bucket_length(33, multiple=32) == 64
    for xp in (np, jnp):
        ones = xp.ones((2, 3), np.int32)
        tok, mask = pad_left_to(ones, ones, 5, 9)
        np.testing.assert_array_equal(tok[0], [9, 9, 1, 1, 1])
        np.testing.assert_array_equal(mask[0], [0, 0, 1, 1, 1])
    with pytest.raises(ValueError, match="down to 2"):
        pad_left_to(np.ones((2, 3)), np.ones((2, 3)), 2, 0)
    table = sampling.eos_table([[1], [2, 3]], 2)
    assert table.shape == (2, 8) and table[1, :3].tolist() == [2, 3, -1]
    assert sampling.eos_table((), 3).shape == (3, 8)
    with pytest.raises(ValueError, match="top_p"):
        sampling.sampling_params(top_p=0.0)


def test_rejects_right_padding(qwen, prompts):
    _, model = qwen
    tokens, mask = prompts
    with pytest.raises(ValueError, match="left-padded"):
        run(model, tokens[:, ::-1], mask[:, ::-1])


# --------------------------------------------------------------------- parity


def _qwen3(tmp_path):
    path = tiny_models.make_qwen3(tmp_path / "qwen3", eos_token_id=None, initializer_range=0.3)
    return path, models.load_hf(path, dtype="float32")  # q/k norms, Dh = 2 D / H, untied


# the static decoder; the engine with 5 of 16 slots, with its XLA read and jax's Pallas
# decode kernel (interpret mode here)
@pytest.mark.parametrize(
    "arch,slots,kernel",
    [
        ("qwen2", 0, "xla"),
        ("qwen2", 5, "xla"),
        pytest.param("qwen2", 5, "pallas", marks=pytest.mark.slow),
        ("qwen3", 0, "xla"),
        ("qwen3", 5, "xla"),
    ],
)
def test_greedy_matches_transformers_generate(arch, slots, kernel, qwen, prompts, tmp_path):
    import torch
    from transformers import AutoModelForCausalLM

    path, model = qwen if arch == "qwen2" else _qwen3(tmp_path)
    tokens, mask = prompts
    greedy = sampling.sampling_params(greedy=True)
    ours = run(model, tokens, mask, sampling=greedy, decode_slots=slots, attn_kernel=kernel)
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf.generate(
            input_ids=torch.as_tensor(tokens, dtype=torch.long),
            attention_mask=torch.as_tensor(mask, dtype=torch.long),
            do_sample=False,
            max_new_tokens=T,
            pad_token_id=0,
        ).numpy()[:, tokens.shape[1] :]
    assert ref.shape == (B, T)
    for m in range(M):  # greedy: every vote equals transformers token for token
        np.testing.assert_array_equal(ours.tokens[:, m], ref)
    assert (ours.lengths == T).all()
    assert int(ours.decode_steps) == (T - 1 if not slots else -(-B * M // slots) * (T - 1))


def _completion_hidden(model, tokens, mask, out):
    """One full forward over prompt + completion: the hidden states that predict each
    completion token ``[B*M, T, D]``, the completion tokens and their live mask."""
    params, cfg = model.params(), model.config
    p = tokens.shape[1]
    comp = out.tokens.reshape(B * M, T)
    comp_mask = np.arange(T)[None] < out.lengths.reshape(B * M, 1)
    seq = np.concatenate([np.repeat(tokens, M, 0), comp], 1)  # [B*M, P+T]
    seq_mask = np.concatenate([np.repeat(mask, M, 0), comp_mask], 1).astype(bool)
    pos = tfm.positions_from_mask(jnp.asarray(seq_mask))
    hidden, _ = tfm.forward(
        params,
        cfg,
        jnp.asarray(seq)[:, None],
        pos[:, None],
        key_mask=jnp.asarray(seq_mask)[:, None],
    )
    return hidden[:, 0, p - 1 : -1], comp, comp_mask


def _model_logprobs(model, tokens, mask, out, temperature):
    """The trainer's recomputation: one full forward over prompt + completion."""
    h, comp, comp_mask = _completion_hidden(model, tokens, mask, out)
    lp = oracles.token_logprobs(
        model.params(), model.config, h, jnp.asarray(comp), temperature=temperature
    )
    return np.where(comp_mask, np.asarray(lp), 0.0).reshape(B, M, T)


@pytest.mark.parametrize(
    "arch,slots", [("qwen2", 0), ("qwen2", 5), ("llama3", 0), ("llama3", 3), ("qwen3", 5)]
)
def test_logprobs_equal_trainer_recompute(arch, slots, qwen, prompts, tmp_path):
    tokens, mask = prompts
    if arch == "qwen2":
        model = qwen[1]
    elif arch == "qwen3":
        model = _qwen3(tmp_path)[1]
    else:
        path = tiny_models.make_llama3(tmp_path / "llama", attention_bias=True, mlp_bias=True)
        model = models.load_hf(path, dtype="float32")  # untied head, llama3 rope, all biases
        assert model.config.o_bias and model.config.mlp_bias
    sp = sampling.sampling_params(temperature=0.7, top_p=0.9)
    out = run(model, tokens, mask, sampling=sp, eos_ids=(3, 7), decode_slots=slots)
    ref = _model_logprobs(model, tokens, mask, out, 0.7)
    np.testing.assert_allclose(out.logprobs, ref, atol=1e-4, rtol=0)
    assert (out.logprobs[np.arange(T) >= out.lengths[..., None]] == 0).all()


# ------------------------------------------------------------- sampling laws


def _softmax_filtered(z, temperature=1.0, top_p=1.0, top_k=0):
    """Reference HF semantics in float64: temperature, then top-k, then top-p."""
    z = np.asarray(z, np.float64) / temperature
    if top_k:
        z = np.where(z >= np.sort(z)[-top_k], z, -np.inf)
    p = np.exp(z - z.max())
    p /= p.sum()
    if top_p < 1:
        above = np.array([p[p > pi].sum() for pi in p])
        p = np.where(above < top_p, p, 0.0)
        p /= p.sum()
    return p


def _chi_square_pvalue(counts, p):
    """Pearson chi-square p-value; bins with expected count < 5 are pooled."""
    n = counts.sum()
    assert counts[p == 0].sum() == 0, "a token outside the support was drawn"
    small = (n * p < 5) & (p > 0)
    obs = np.append(counts[(p > 0) & ~small], counts[small].sum())
    exp = np.append(n * p[(p > 0) & ~small], n * p[small].sum())
    keep = exp > 0
    if keep.sum() < 2:  # a one-token support: every draw is that token (asserted above)
        return 1.0
    return stats.chisquare(obs[keep], exp[keep]).pvalue


CONFIGS = {
    "t1": {},
    "t0.6": {"temperature": 0.6},
    "top_p0.95": {"top_p": 0.95},
    "top_k5": {"top_k": 5},
    "top_k20_top_p0.8": {"top_k": 20, "top_p": 0.8},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_token_frequencies_match_softmax(name, qwen, prompts):
    """2000 votes per prompt: the first token (prefill logits) and the second token given
    the most frequent first one (decode-loop logits) against the model's softmax."""
    _, model = qwen
    tokens, mask = prompts
    cfg = CONFIGS[name]
    n = 2000
    params, mcfg = model.params(), model.config
    state = sampling.prefill(
        params,
        mcfg,
        tokens,
        mask,
        jax.random.key(1),
        sampling.sampling_params(**cfg),
        sampling.eos_table((), B),
        np.int32(0),
        np.int32(2),
        num_samples=n,
        max_len=2,
        block=BLOCK,
    )
    draws = np.asarray(sampling.decode(params, mcfg, state, block=BLOCK).tokens)  # [B, n, 2]
    logits = np.asarray(models.logits(model, tokens, mask))[:, -1]  # [B, V]
    modal = [int(np.bincount(draws[b, :, 0]).argmax()) for b in range(B)]
    ext = np.concatenate([tokens, np.array(modal, np.int32)[:, None]], 1)
    ext_mask = np.concatenate([mask, np.ones((B, 1), np.int32)], 1)
    logits2 = np.asarray(models.logits(model, ext, ext_mask))[:, -1]  # [B, V]
    for b in range(B):
        p = _softmax_filtered(logits[b], **cfg)
        counts = np.bincount(draws[b, :, 0], minlength=p.size)
        assert _chi_square_pvalue(counts, p) > 1e-3, (name, b)
        if name == "t0.6":  # the test has power: temperature 1 is rejected
            assert _chi_square_pvalue(counts, _softmax_filtered(logits[b])) < 1e-6
        second = draws[b, draws[b, :, 0] == modal[b], 1]
        p2 = _softmax_filtered(logits2[b], **cfg)
        assert _chi_square_pvalue(np.bincount(second, minlength=p2.size), p2) > 1e-3, (name, b)


@pytest.mark.parametrize("cfg", [{}, {"top_p": 0.9}, {"top_k": 50}, {"top_k": 1}])
def test_sample_logits_exact_multi_block(cfg):
    """V=1000 over blocks of 64 (a partial last block): the draws follow the law."""
    v, r = 1000, 20000
    z = np.asarray(jax.random.normal(jax.random.key(3), (v,)) * 3.0)
    keys = sampling.row_keys(jax.random.key(4), jnp.arange(r, dtype=jnp.uint32), 0)
    fn = jax.jit(sampling.sample_logits, static_argnames="block")
    tok, lp = fn(jnp.broadcast_to(z, (r, v)), keys, sampling.sampling_params(**cfg), block=64)
    p = _softmax_filtered(z, **cfg)
    assert _chi_square_pvalue(np.bincount(np.asarray(tok), minlength=v), p) > 1e-3
    ref = jax.nn.log_softmax(jnp.asarray(z))[np.asarray(tok)]
    np.testing.assert_allclose(lp, ref, atol=1e-5)


# ------------------------------------------------------------ loop behaviour


def test_early_exit_and_per_row_eos(qwen, prompts):
    """The static decoder's loop stops as soon as every row has met its own stop set or
    the length limit (the engine's loop: tests/test_engine.py)."""
    _, model = qwen
    tokens, mask = prompts
    greedy = sampling.sampling_params(greedy=True)
    free = run0(model, tokens, mask, sampling=greedy)
    # row b stops at the greedy token of column c_b: a per-row stop set
    stops = [2, 5, 3, 0]
    eos = [[int(free.tokens[b, 0, c])] for b, c in enumerate(stops)]
    out = run0(model, tokens, mask, sampling=greedy, eos_ids=eos)
    first = [int(np.argmax(free.tokens[b, 0] == e[0])) for b, e in enumerate(eos)]
    np.testing.assert_array_equal(out.lengths, np.repeat(np.add(first, 1)[:, None], M, 1))
    assert int(out.decode_steps) == max(first) < T - 1  # stopped early
    for b, n in enumerate(first):
        np.testing.assert_array_equal(out.tokens[b, :, : n + 1], free.tokens[b, :, : n + 1])
        assert (out.tokens[b, :, n + 1 :] == 0).all() and (out.logprobs[b, :, n + 1 :] == 0).all()
    # a length limit inside the bucket stops the loop too (same program)
    short = run0(model, tokens, mask, sampling=greedy, max_new_tokens=6)
    assert int(short.decode_steps) == 5 and (short.lengths == 6).all()
    np.testing.assert_array_equal(short.tokens[..., :6], free.tokens[..., :6])


def test_per_sample_length_limits_only_cut_each_sample(qwen, prompts):
    """Per-sample limits (per-prompt budgets; the length-aware engine's workload): each
    sample stops at its own limit or EOS, its tokens are the unlimited run's first ones
    (randomness is keyed by sample and token index, not by who else is still running),
    the loop ends with the longest limit, and limits all equal to the global one change
    nothing."""
    _, model = qwen
    tokens, mask = prompts
    free = run0(model, tokens, mask, key=3)  # temperature 1: every token a random draw
    limits = np.random.RandomState(4).randint(1, 12, (B, M)).astype(np.int32)
    out = run0(model, tokens, mask, key=3, row_limits=limits)
    np.testing.assert_array_equal(out.lengths, limits)  # no EOS in this model's config
    assert int(out.decode_steps) == limits.max() - 1 < T - 1
    for b, m in np.ndindex(B, M):
        n = limits[b, m]
        np.testing.assert_array_equal(out.tokens[b, m, :n], free.tokens[b, m, :n])
        np.testing.assert_array_equal(out.logprobs[b, m, :n], free.logprobs[b, m, :n])
        assert (out.tokens[b, m, n:] == 0).all() and (out.logprobs[b, m, n:] == 0).all()
    same = run0(model, tokens, mask, key=3, row_limits=np.full((B, M), T, np.int32))
    for a, c in zip(same, free):
        np.testing.assert_array_equal(a, c)
    with pytest.raises(ValueError, match="row_limits"):
        run0(model, tokens, mask, row_limits=np.zeros((B, M), np.int32))
    with pytest.raises(ValueError, match="row_limits has shape"):
        run0(model, tokens, mask, row_limits=np.ones((B, M + 1), np.int32))


def test_blocked_own_attention_matches_the_full_read(qwen, prompts):
    """Reading the own cache in live blocks only (online softmax) gives the full read's
    tokens -- sampled at temperature 1 and greedy -- and log-probs to float rounding; a
    block that does not divide T is refused; the full read stays the default."""
    _, model = qwen
    tokens, mask = prompts
    for sp in (None, sampling.sampling_params(greedy=True)):
        full = run(model, tokens, mask, key=7, sampling=sp, attn_block=0)
        for blk in (4, 16):
            got = run(model, tokens, mask, key=7, sampling=sp, attn_block=blk)
            np.testing.assert_array_equal(got.tokens, full.tokens)
            np.testing.assert_array_equal(got.lengths, full.lengths)
            np.testing.assert_allclose(got.logprobs, full.logprobs, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="does not divide"):
        run(model, tokens, mask, attn_block=5)
    assert sampling.attention_block_size(1024) == 0  # opt-in (slower on this CPU)
    assert sampling.attention_block_size(1024, 128) == 128


def test_deterministic_given_seed(qwen, prompts):
    _, model = qwen
    tokens, mask = prompts
    a, b, c = (run(model, tokens, mask, key=k) for k in (5, 5, 6))
    np.testing.assert_array_equal(a.tokens, b.tokens)
    assert (a.tokens != c.tokens).any()
    assert (a.tokens[:, 0] != a.tokens[:, 1]).any()  # votes of a prompt differ
    d = run(model, tokens, mask, key=5, unstack_layers=False)  # per-step layer slices
    np.testing.assert_array_equal(a.tokens, d.tokens)


def test_same_tokens_on_one_device_and_data4_tensor2_mesh(qwen, prompts):
    path, model = qwen
    tokens, mask = prompts
    sp = sampling.sampling_params(temperature=0.8, top_p=0.95)
    single = run(model, tokens, mask, key=7, sampling=sp, eos_ids=(3,))
    mesh = sharding.make_mesh(data=4, fsdp=1, tensor=2)
    sharded_model = models.load_hf(path, dtype="float32", mesh=mesh)
    wq = sharded_model.params()["layers"]["wq"]
    assert wq.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    tok_s, mask_s = sharding.shard_batch((tokens, mask), mesh)
    with jax.set_mesh(mesh):
        out = run(sharded_model, tok_s, mask_s, key=7, sampling=sp, eos_ids=(3,))
    np.testing.assert_array_equal(out.tokens, single.tokens)
    np.testing.assert_array_equal(out.lengths, single.lengths)
    np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-4)


def test_sampling_knobs_do_not_recompile(qwen, prompts):
    _, model = qwen
    tokens, mask = prompts
    programs = (sampling.prefill, sampling.decode, engine.start, engine.run)
    run(model, tokens, mask)
    run0(model, tokens, mask)
    sizes = [f._cache_size() for f in programs]
    for cfg in [
        {"temperature": 0.3},
        {"top_p": 0.5},
        {"top_k": 7},
        {"greedy": True},
        {"temperature": 1.3, "top_k": 3, "top_p": 0.7},
        {"temperature": 0.0},
    ]:
        for go in (run, run0):
            go(
                model,
                tokens,
                mask,
                sampling=sampling.sampling_params(**cfg),
                max_new_tokens=12,
                eos_ids=(1, 2, 3),
            )
    assert [f._cache_size() for f in programs] == sizes


def test_bfloat16_model_logprobs_close_to_trainer(qwen, prompts):
    """bf16 weights (float32 cache on CPU): log-probs agree with the bf16 recompute."""
    path, _ = qwen
    model = models.load_hf(path, dtype="bfloat16")
    tokens, mask = prompts
    out = run(model, tokens, mask, eos_ids=(3,))
    assert sampling.default_cache_dtype(jnp.bfloat16) == jnp.float32  # CPU backend
    ref = _model_logprobs(model, tokens, mask, out, 1.0)
    assert np.isfinite(out.logprobs).all()
    err = np.abs(out.logprobs - ref)  # bf16 rounding noise (measured max 0.07, mean 0.016)
    assert err.max() < 0.2 and err.mean() < 0.03


def test_bf16_head_on_fp32_model_samples_the_bf16_head_distribution(qwen, prompts):
    """head_dtype=bfloat16: the returned log-probs are those of the bf16-operand LM head
    (fp32 accumulation) -- what the trainer recomputes with the same head -- and differ
    from the exact fp32 ones only by bf16 rounding."""
    model = qwen[1]
    params, cfg = model.params(), model.config
    tokens, mask = prompts
    out = run(model, tokens, mask, eos_ids=(3,), head_dtype=jnp.bfloat16)
    h, comp, live = _completion_hidden(model, tokens, mask, out)
    head = tfm.lm_head_weight(params, cfg).astype(jnp.bfloat16)
    z = sampling.head_logits(h, head)  # [B*M, T, V]
    lp = jnp.take_along_axis(jax.nn.log_softmax(z, -1), jnp.asarray(comp)[..., None], -1)[..., 0]
    ref = np.where(live, np.asarray(lp), 0.0).reshape(B, M, T)
    np.testing.assert_allclose(out.logprobs, ref, atol=2e-3, rtol=0)
    exact = _model_logprobs(model, tokens, mask, out, 1.0)
    gap = np.abs(out.logprobs - exact)
    assert 0 < gap.max() < 0.1  # the option changes the distribution, by rounding only
