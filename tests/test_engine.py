"""Tests for ttrl_jax.rollout.engine, the slot-refill decode engine: every sample produced
once, lengths at EOS, results independent of the slot count and of the mesh, equal to
the static decoder, blocked and ragged attention equal to dense attention, and one
compile."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import tiny_models

from ttrl_jax import models, sharding
from ttrl_jax.rollout import engine, sampling

B, M, T = 3, 5, 32  # N = 15 samples
EOS = (3, 7, 11)


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    path = tiny_models.make_qwen2(
        tmp_path_factory.mktemp("qwen2"), eos_token_id=None, initializer_range=0.3
    )
    return models.load_hf(path, dtype="float32")


@pytest.fixture(scope="module")
def prompts():
    return tiny_models.left_padded_batch(np.random.RandomState(1), [6, 9, 4], 96)


def run(model, prompts, slots, key=0, **kw):
    tokens, mask = prompts
    out = sampling.sample(
        model.params(),
        model.config,
        tokens,
        mask,
        jax.random.key(key),
        num_samples=kw.pop("m", M),
        max_new_tokens=kw.pop("max_new_tokens", T),
        eos_ids=kw.pop("eos_ids", EOS),
        decode_slots=slots,
        block=32,
        **kw,
    )
    return jax.tree.map(np.asarray, out)


def check_ends(out, eos=EOS, pad=0):
    """Each sample ends at its first stop id (or its limit): no stop id before its
    length, pad tokens and zero log-probs after it."""
    for tok, lp, n in zip(
        out.tokens.reshape(-1, out.tokens.shape[-1]),
        out.logprobs.reshape(-1, out.tokens.shape[-1]),
        out.lengths.ravel(),
    ):
        assert 1 <= n <= tok.shape[0]
        assert not np.isin(tok[: n - 1], eos).any()
        assert (tok[n:] == pad).all() and (lp[n:] == 0).all() and (lp[:n] < 0).all()


@pytest.mark.parametrize("key", [0, 1])
@pytest.mark.slow
def test_independent_of_slot_count_and_equal_to_static(model, prompts, key):
    """S = 1, 3 and B*M give the same samples (keyed by sample and token index, not by
    slot or refill order) and these equal the static decoder's; lengths end at EOS."""
    limits = np.random.RandomState(key).randint(1, T + 1, (B, M)).astype(np.int32)
    static = run(model, prompts, 0, key, row_limits=limits)
    assert (static.lengths < limits).any() and (static.lengths == limits).any()  # EOS and limit
    check_ends(static)
    for s in (1, 3, B * M, 4 * B * M):
        out = run(model, prompts, s, key, row_limits=limits)
        np.testing.assert_array_equal(out.tokens, static.tokens)
        np.testing.assert_array_equal(out.lengths, static.lengths)
        np.testing.assert_allclose(out.logprobs, static.logprobs, atol=1e-5, rtol=0)


@pytest.mark.slow
def test_every_sample_produced_once(model, prompts):
    """With one slot, the loop runs exactly one iteration per generated token after the
    first (drawn at the prefill): no sample is skipped or decoded twice; with S slots it
    runs at least that work over S."""
    out1 = run(model, prompts, 1, key=2)
    work = int(out1.lengths.sum()) - B * M
    assert int(out1.decode_steps) == work
    out4 = run(model, prompts, 4, key=2)
    assert -(-work // 4) <= int(out4.decode_steps) < work
    np.testing.assert_array_equal(out4.tokens, out1.tokens)
    # a sample that ends at token 0 never takes a slot; limits of 1 end all of them
    ones = run(model, prompts, 2, key=2, row_limits=np.ones((B, M), np.int32))
    assert int(ones.decode_steps) == 0 and (ones.lengths == 1).all()
    np.testing.assert_array_equal(ones.tokens[..., 0], out1.tokens[..., 0])


@pytest.mark.slow
def test_tail_phases_halve_the_slots_without_changing_samples(model, prompts):
    """Once the queue is empty, `decode_all` moves the live slots to half as many: the
    samples stay the static decoder's, the work (slot-steps) drops below one phase's."""
    tokens, mask = prompts
    params, cfg = model.params(), model.config
    limits = np.random.RandomState(6).randint(1, T + 1, (B, M)).astype(np.int32)
    static = run(model, prompts, 0, 6, row_limits=limits)
    args = (params, cfg, tokens, mask, jax.random.key(6), sampling.sampling_params())
    args += (sampling.eos_table(EOS, B), np.int32(0), np.int32(T), limits)
    outs = []
    for min_slots in (B * M, 1):  # one phase; phases 15 -> 7 -> 3 -> 1
        st = engine.start(*args, num_samples=M, max_len=T, slots=B * M, block=32)
        outs.append(
            engine.decode_all(params, cfg, st, num_samples=M, min_slots=min_slots, block=32)
        )
    one, phased = outs
    for st in outs:
        np.testing.assert_array_equal(np.asarray(st.tokens).reshape(B, M, T), static.tokens)
        np.testing.assert_array_equal(np.asarray(st.lengths).reshape(B, M), static.lengths)
    assert int(one.slot_steps) == int(one.steps) * B * M
    assert int(phased.steps) == int(one.steps)  # the same iterations, fewer rows each
    assert int(phased.slot_steps) < int(one.slot_steps)
    assert int(phased.slot_steps) >= int(static.lengths.sum()) - B * M


@pytest.mark.slow
def test_greedy_equals_static_and_blocked_reads(model, prompts):
    greedy = sampling.sampling_params(greedy=True)
    static = run(model, prompts, 0, sampling=greedy, eos_ids=())
    for s, blk in ((3, 0), (3, 8), (B * M, 16)):
        out = run(model, prompts, s, sampling=greedy, eos_ids=(), attn_block=blk)
        np.testing.assert_array_equal(out.tokens, static.tokens)
    assert (static.lengths == T).all()


@pytest.mark.slow
def test_matches_static_decoder_at_scale(model, prompts):
    """fp32, temperature 1, EOS on, 3 x 32 samples of up to 64 tokens: at least 99 % of
    the engine's samples equal the static decoder's token for token, with each read:
    XLA's of all T slots, its ragged reads, and jax's Pallas decode kernel (here in
    interpret mode), whose log-probs also match the XLA read's within 1e-4."""
    kw = {"m": 32, "max_new_tokens": 64, "eos_ids": (3, 7)}
    static = run(model, prompts, 0, key=5, **kw)
    assert 1 < static.lengths.mean() < 60  # mixed lengths: slots are refilled
    outs = []
    for blk, kernel in ((0, "xla"), (16, "xla"), (0, "pallas")):
        out = run(model, prompts, 24, key=5, attn_block=blk, attn_kernel=kernel, **kw)
        same = np.all(out.tokens == static.tokens, axis=-1)
        assert same.mean() >= 0.99, (blk, kernel, same.mean())
        check_ends(out, eos=(3, 7))
        outs.append(out)
    xla, pallas = outs[0], outs[2]
    both = np.all(pallas.tokens == xla.tokens, axis=-1)[..., None] & (
        np.arange(64) < xla.lengths[..., None]
    )
    np.testing.assert_allclose(pallas.logprobs[both], xla.logprobs[both], atol=1e-4, rtol=0)


def _dense_reference(q, ck, cv, w, pk, pv, pmask):
    """numpy float64: softmax over the prefix and the own slots <= w, per row."""
    q, ck, cv, pk, pv = (np.asarray(a, np.float64) for a in (q, ck, cv, pk, pv))
    b, g, kh, r, _ = q.shape
    out = np.zeros(q.shape)
    for i, j, k, h in np.ndindex(b, g, kh, r):
        keys = np.concatenate([pk[i, k][pmask[i]], ck[i, j, k].T[: w[i, j] + 1]])
        vals = np.concatenate([pv[i, k][pmask[i]], cv[i, j, k][: w[i, j] + 1]])
        s = keys @ q[i, j, k, h]
        e = np.exp(s - s.max())
        out[i, j, k, h] = e @ vals / e.sum()
    return out


def test_blocked_attention_equals_dense_for_ragged_lengths():
    """Per-row own lengths 0 (w = -1: prefix only), 1, ragged, and T (w = T - 1): the
    blocked read (live blocks only) and the full read equal a float64 dense softmax."""
    rng = np.random.RandomState(0)
    b, g, kh, r, dh, p, t = 2, 3, 2, 2, 8, 5, 32
    q = rng.randn(b, g, kh, r, dh).astype(np.float32) / np.sqrt(dh)
    ck = rng.randn(b, g, kh, dh, t).astype(np.float32)
    cv = rng.randn(b, g, kh, t, dh).astype(np.float32)
    pk, pv = (rng.randn(b, kh, p, dh).astype(np.float32) for _ in range(2))
    pmask = np.array([[0, 1, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
    w = np.array([[-1, 0, 13], [31, 7, 16]], np.int32)
    ref = _dense_reference(q, ck, cv, w, pk, pv, pmask)
    full = engine.cache_attention(q, ck, cv, jnp.asarray(w), pk, pv, jnp.asarray(pmask))
    np.testing.assert_allclose(np.asarray(full), ref, atol=1e-5, rtol=0)
    for blk in (4, 8, 32):
        n_blocks = int(w.max()) // blk + 1
        got = engine.cache_attention(
            q, ck, cv, jnp.asarray(w), pk, pv, jnp.asarray(pmask), blk, n_blocks
        )
        np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)
    # ragged reads: the 6 rows ranked by length in groups of 1, 4 (uneven: 4 + 2) and 6,
    # each group reading only its own live blocks
    for blk, group in ((4, 1), (8, 4), (16, 6), (32, 4)):
        got = engine.cache_attention(
            q, ck, cv, jnp.asarray(w), pk, pv, jnp.asarray(pmask), blk, ragged=group
        )
        np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)
    only_prefix = np.full((b, g), -1, np.int32)  # no own slot: zero blocks read
    ref0 = _dense_reference(q, ck, cv, only_prefix, pk, pv, pmask)
    for n_blocks, group in ((0, 0), (None, 2)):
        got = engine.cache_attention(q, ck, cv, only_prefix, pk, pv, pmask, 8, n_blocks, group)
        np.testing.assert_allclose(np.asarray(got), ref0, atol=1e-5, rtol=0)


def test_ragged_reads_never_read_past_a_rows_length():
    """Cache slots past each row's ``w`` hold 1e30 (stale entries of an earlier sample):
    the ragged read masks them inside a partly filled block and skips the blocks past
    the group's longest row, so the result stays the dense softmax over slots <= w."""
    rng = np.random.RandomState(1)
    n, kh, r, dh, p, t = 8, 2, 2, 8, 3, 64
    q = rng.randn(n, 1, kh, r, dh).astype(np.float32) / np.sqrt(dh)
    ck = rng.randn(n, 1, kh, dh, t).astype(np.float32)
    cv = rng.randn(n, 1, kh, t, dh).astype(np.float32)
    w = np.array([[0], [63], [5], [17], [40], [9], [31], [2]], np.int32)
    past = np.arange(t) > w[:, :, None, None]  # [n, 1, 1, T]
    ck_stale = np.where(past[:, :, :, None, :], np.float32(1e30), ck)
    cv_stale = np.where(past[..., None], np.float32(1e30), cv)
    pk, pv = (rng.randn(n, kh, p, dh).astype(np.float32) for _ in range(2))
    pmask = np.ones((n, p), bool)
    ref = _dense_reference(q, ck, cv, w, pk, pv, pmask)
    for blk, group in ((8, 1), (16, 3), (8, 8)):
        got = engine.cache_attention(
            q, ck_stale, cv_stale, jnp.asarray(w), pk, pv, pmask, blk, ragged=group
        )
        np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)


def test_no_recompile_across_length_mixes(model, prompts):
    """Different per-sample limits, stop sets and length limits within one bucket reuse
    the compiled programs (one `start`, one `run`)."""
    rng = np.random.RandomState(3)
    run(model, prompts, 4, row_limits=rng.randint(1, T + 1, (B, M)).astype(np.int32))
    sizes = engine.start._cache_size(), engine.run._cache_size()
    for i, eos in enumerate([(3,), (5, 9, 13), (), (1, 2, 3, 4, 5, 6, 7, 8)]):
        lim = rng.randint(1, T - i + 1, (B, M)).astype(np.int32)
        out = run(model, prompts, 4, key=i, row_limits=lim, eos_ids=eos, max_new_tokens=T - i)
        assert (out.lengths <= lim).all()
    assert (engine.start._cache_size(), engine.run._cache_size()) == sizes


@pytest.mark.slow
def test_same_samples_on_one_and_eight_devices(model, prompts, tmp_path):
    """The slot axis split over 8 data shards (S = 8, 16) gives the single-device
    samples."""
    single = run(model, prompts, 8, key=4)
    mesh = sharding.make_mesh(data=8, fsdp=1, tensor=1)
    path = tiny_models.make_qwen2(tmp_path / "m", eos_token_id=None, initializer_range=0.3)
    sharded = models.load_hf(path, dtype="float32", mesh=mesh)
    tok_s, mask_s = sharding.shard_batch(prompts, mesh)
    for s in (8, 16):
        with jax.set_mesh(mesh):
            out = sampling.sample(
                sharded.params(),
                sharded.config,
                tok_s,
                mask_s,
                jax.random.key(4),
                num_samples=M,
                max_new_tokens=T,
                eos_ids=EOS,
                decode_slots=s,
                block=32,
            )
        out = jax.tree.map(np.asarray, out)
        np.testing.assert_array_equal(out.tokens, single.tokens)
        np.testing.assert_array_equal(out.lengths, single.lengths)
        np.testing.assert_allclose(out.logprobs, single.logprobs, atol=1e-4)


def test_slot_count_rules():
    assert sampling.slots_for(128, 0, 1024) == 0  # the static decoder
    assert sampling.slots_for(128, 500, 64) == 128
    assert sampling.slots_for(10, 4, 16) == 4
    # the default: S = B M / 2 in multiples of 8 from T = 256, the static decoder below
    assert sampling.slots_for(128, None, 1024) == 64
    assert sampling.slots_for(100, None, 256) == 56
    assert sampling.slots_for(4, None, 3072) == 4
    assert sampling.slots_for(512, None, 255) == 0
    assert sampling.slots_for(512, None, 3072, backend="gpu") == 512  # weights-bound steps
    assert sampling.slots_for(512, None, 255, backend="tpu") == 0
    with pytest.raises(ValueError, match="decode_slots"):
        sampling.slots_for(10, -1, 16)
    # the engine's default read: ragged in blocks of 128 on the CPU where 128 divides T
    assert sampling.engine_attn_block(1024, backend="cpu", devices=1) == 128
    assert sampling.engine_attn_block(320, backend="cpu", devices=1) == 0
    assert sampling.engine_attn_block(1024, backend="cpu", devices=8) == 0  # a mesh
    assert sampling.engine_attn_block(1024, backend="gpu") == 0
