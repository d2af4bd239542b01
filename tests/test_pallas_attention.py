"""Tests for ttrl_jax.rollout.pallas_attention: the engine's own-cache read through jax's
Pallas GPU decode-attention kernel, run here in Pallas interpret mode (no GPU): it
equals a float64 softmax for ragged lengths with stale entries past each row's length,
each device of a mesh reads its own rows, and "auto" falls back to XLA off a GPU, for an
unsuited T, without the kernel and when it fails to compile. The engine's samples with
this read are checked in `test_engine.test_matches_static_decoder_at_scale`."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_engine import _dense_reference

from ttrl_jax import sharding
from ttrl_jax.rollout import engine, pallas_attention


def test_pallas_read_equals_dense_with_stale_slots_past_each_length():
    """Own lengths 0 (prefix only), 1, ragged and T; slots past ``w`` hold 1e30 (an
    earlier sample's entries); keys in the kernel's ``[.., K, T, Dh]`` layout."""
    rng = np.random.RandomState(2)
    b, g, kh, r, dh, p, t = 2, 4, 2, 3, 8, 5, 64
    q = rng.randn(b, g, kh, r, dh).astype(np.float32) / np.sqrt(dh)
    ck = rng.randn(b, g, kh, dh, t).astype(np.float32)  # the XLA layout, for the reference
    cv = rng.randn(b, g, kh, t, dh).astype(np.float32)
    pk, pv = (rng.randn(b, kh, p, dh).astype(np.float32) for _ in range(2))
    pmask = np.array([[0, 1, 1, 1, 1], [0, 0, 0, 0, 1]], bool)
    w = np.array([[-1, 0, 13, 63], [31, 7, 16, 40]], np.int32)
    ref = _dense_reference(q, ck, cv, w, pk, pv, pmask)
    past = np.arange(t) > w[:, :, None, None]  # [b, g, 1, T]
    ck_pallas = np.where(past[..., None], np.float32(1e30), np.swapaxes(ck, -1, -2))
    cv_stale = np.where(past[..., None], np.float32(1e30), cv)
    got = engine.cache_attention(
        q, ck_pallas, cv_stale, jnp.asarray(w), pk, pv, pmask, kernel="pallas"
    )
    np.testing.assert_allclose(np.asarray(got), ref, atol=1e-5, rtol=0)


def test_write_cache_and_empty_cache_use_the_kernels_key_layout():
    cfg = types.SimpleNamespace(num_kv_heads=2, head_dim=4, num_layers=1)
    xla = engine.empty_cache(cfg, (3, 1), 16, jnp.float32, ("batch", None))
    pal = engine.empty_cache(cfg, (3, 1), 16, jnp.float32, ("batch", None), "pallas")
    assert xla["k"][0].shape == (3, 1, 2, 4, 16) and pal["k"][0].shape == (3, 1, 2, 16, 4)
    assert pal["v"][0].shape == xla["v"][0].shape == (3, 1, 2, 16, 4)
    k = jnp.arange(3 * 2 * 4, dtype=jnp.float32).reshape(3, 1, 2, 4)
    w = jnp.array([[0], [5], [15]], jnp.int32)
    ck_x, _ = engine.write_cache(xla["k"][0], xla["v"][0], k, k, w)
    ck_p, _ = engine.write_cache(pal["k"][0], pal["v"][0], k, k, w, "pallas")
    np.testing.assert_array_equal(np.swapaxes(np.asarray(ck_x), -1, -2), np.asarray(ck_p))


@pytest.mark.parametrize("mesh_shape", [(8, 1, 1), (4, 1, 2), (2, 2, 2)])
def test_each_device_of_a_mesh_reads_its_own_rows(mesh_shape):
    """Under ``jax.set_mesh`` the kernel runs per shard (rows over data x fsdp, kv heads
    over tensor; 12 rows do not split 8 ways and stay whole) and gives the one-device
    result."""
    rng = np.random.RandomState(3)
    n, kh, r, dh, t = 12, 2, 3, 8, 32
    q = jnp.asarray(rng.randn(n, kh, r, dh).astype(np.float32))
    ck, cv = (jnp.asarray(rng.randn(n, kh, t, dh).astype(np.float32)) for _ in range(2))
    w = jnp.asarray(rng.randint(0, t, n).astype(np.int32))
    want = pallas_attention.own_attention(q, ck, cv, w)
    mesh = sharding.make_mesh(*mesh_shape)
    with jax.set_mesh(mesh):
        got = jax.jit(pallas_attention.own_attention)(q, ck, cv, w)
    for a, b in zip(got, want):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=1e-5, rtol=1e-6)


def test_split_plan():
    assert pallas_attention.split_plan(1024) == (16, 64)
    assert pallas_attention.split_plan(3072) == (16, 64)  # 192-slot splits
    assert pallas_attention.split_plan(64) == (4, 16)
    assert pallas_attention.split_plan(16) == (1, 16)
    assert pallas_attention.split_plan(40) is None and pallas_attention.split_plan(8) is None


def _resolve(kernel, **kw):
    shape = dict(max_len=1024, kv_heads=2, rep=6, head_dim=8, cache_dtype=jnp.float32)
    return pallas_attention.resolve(kernel, **{**shape, **kw})


def test_auto_takes_the_kernel_on_a_gpu_and_falls_back_to_xla(monkeypatch):
    assert _resolve("auto", backend="cpu") == "xla"
    assert _resolve("auto", backend="tpu") == "xla"
    assert _resolve("auto", backend="gpu", max_len=40) == "xla"
    assert _resolve("xla", backend="gpu") == "xla"
    # on a GPU: the probe compile decides (here it runs in interpret mode and works)
    pallas_attention.compiles_here.cache_clear()
    assert _resolve("auto", backend="gpu", max_len=64) == "pallas"
    # a kernel that fails to lower: XLA, and the failure is not retried
    calls = []

    def broken(*args, **kw):
        calls.append(1)
        raise RuntimeError("triton lowering failed")

    monkeypatch.setattr(pallas_attention, "_module", lambda: types.SimpleNamespace(gqa=broken))
    pallas_attention.compiles_here.cache_clear()
    assert _resolve("auto", backend="gpu", max_len=64) == "xla"
    assert _resolve("auto", backend="gpu", max_len=64) == "xla" and len(calls) == 1
    pallas_attention.compiles_here.cache_clear()
    # a jax without the kernel
    monkeypatch.setattr(pallas_attention, "_module", lambda: None)
    assert _resolve("auto", backend="gpu") == "xla"
    with pytest.raises(ValueError, match="kernel missing"):
        _resolve("pallas", backend="gpu")


def test_explicit_pallas_and_bad_names_are_checked():
    assert _resolve("pallas", backend="cpu") == "pallas"  # interpret mode
    with pytest.raises(ValueError, match="T a multiple of 16"):
        _resolve("pallas", backend="gpu", max_len=40)
    with pytest.raises(ValueError, match="attn_kernel must be one of"):
        _resolve("triton", backend="gpu")
