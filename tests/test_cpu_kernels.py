"""`ttrl_jax.models.cpu_kernels`: each kernel's value and VJP against autodiff of the
plain math, the whole model's gradient with and without them, and the one place that
chooses them (`select`: backend, CPU capability, dtype, ``TTRL_CPU_KERNELS``)."""

import dataclasses
import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from test_train_step import CFG

from ttrl_jax.models import cpu_kernels
from ttrl_jax.models import transformer as tfm
from ttrl_jax.update import train_step as ts


@pytest.fixture
def fresh_detection():
    cpu_kernels.native_bf16_dots.cache_clear()
    yield
    cpu_kernels.native_bf16_dots.cache_clear()


def _kernels_in(ops):
    return {k for k, v in ops._asdict().items() if v is not getattr(tfm.PLAIN, k)}


def test_select_on_cpu_by_capability_and_dtype(monkeypatch):
    monkeypatch.delenv("TTRL_CPU_KERNELS", raising=False)
    monkeypatch.setattr(jax, "default_backend", lambda: "cpu")
    monkeypatch.setattr(cpu_kernels, "native_bf16_dots", lambda: True)
    # fp32 keeps only the MLP's VJP (the demo's numerics); bf16 takes every kernel
    assert _kernels_in(tfm.ops_for(jnp.float32)) == {"swiglu"}
    assert _kernels_in(tfm.ops_for(jnp.bfloat16)) == {"bias_add", "gain_mul", "project", "swiglu"}
    # a CPU without native bf16 dots (AVX2 only): the bf16 kernels would cost time
    monkeypatch.setattr(cpu_kernels, "native_bf16_dots", lambda: False)
    assert _kernels_in(tfm.ops_for(jnp.bfloat16)) == {"swiglu"}
    monkeypatch.setenv("TTRL_CPU_KERNELS", "on")
    assert _kernels_in(tfm.ops_for(jnp.bfloat16)) == {"bias_add", "gain_mul", "project", "swiglu"}
    monkeypatch.setenv("TTRL_CPU_KERNELS", "off")
    assert tfm.ops_for(jnp.float32) == tfm.ops_for(jnp.bfloat16) == tfm.PLAIN
    monkeypatch.setenv("TTRL_CPU_KERNELS", "sometimes")
    with pytest.raises(ValueError, match="TTRL_CPU_KERNELS"):
        tfm.ops_for(jnp.float32)


def test_accelerators_run_the_plain_math(monkeypatch):
    monkeypatch.delenv("TTRL_CPU_KERNELS", raising=False)
    monkeypatch.setattr(cpu_kernels, "native_bf16_dots", lambda: True)
    for backend in ("gpu", "tpu"):
        monkeypatch.setattr(jax, "default_backend", lambda b=backend: b)
        assert tfm.ops_for(jnp.float32) == tfm.ops_for(jnp.bfloat16) == tfm.PLAIN
        assert not cpu_kernels._bf16_kernels(jnp.bfloat16)  # weight_grad keeps the plain dot


@pytest.mark.parametrize(
    "flags, xla_flags, native",
    [
        ({"avx2", "avx512f", "avx512_bf16"}, "", True),
        ({"avx2", "amx_bf16"}, "--xla_force_host_platform_device_count=8", True),
        ({"avx2", "avx512f"}, "", False),  # AVX-512 without its bf16 extension
        ({"avx2", "avx512_bf16"}, "--xla_cpu_max_isa=AVX2", False),  # ISA capped
        ({"avx2", "avx512_bf16"}, "--xla_cpu_max_isa=AVX512_CORE", True),
        (set(), "", False),  # flags unreadable (not Linux)
    ],
)
def test_native_bf16_detection(monkeypatch, fresh_detection, flags, xla_flags, native):
    monkeypatch.setattr(cpu_kernels, "_cpu_flags", lambda: set(flags))
    monkeypatch.setenv("XLA_FLAGS", xla_flags)
    assert cpu_kernels.native_bf16_dots() is native


def _plain_swiglu(n, w_gate, w_up, w_down):
    return jnp.dot(jax.nn.silu(jnp.dot(n, w_gate)) * jnp.dot(n, w_up), w_down)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 3e-2)])
def test_swiglu_vjp_matches_autodiff(dtype, tol):
    rng = np.random.RandomState(7)
    n, wg, wu, wd, dy = (
        jnp.asarray(rng.randn(*shape), dtype)
        for shape in [(37, 16), (16, 24), (16, 24), (24, 16), (37, 16)]
    )
    y1, vjp1 = jax.vjp(cpu_kernels.swiglu, n, wg, wu, wd)
    y2, vjp2 = jax.vjp(_plain_swiglu, n, wg, wu, wd)
    np.testing.assert_allclose(np.float32(y1), np.float32(y2), rtol=tol, atol=tol)
    for a, b in zip(vjp1(dy), vjp2(dy)):
        assert a.dtype == b.dtype
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol * scale)


def _plain_dense(x, w):
    return tfm.mm("nd,df->nf", x, w)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 1e-2)])
def test_dense_vjp_matches_autodiff(dtype, tol):
    """`dense` (its weight gradient from a materialised x^T for bf16 on the CPU) has the
    value and VJP of the plain fp32-accumulated matmul, jitted as in training."""
    rng = np.random.RandomState(3)
    x, w, dy = (jnp.asarray(rng.randn(*s), dtype) for s in [(37, 16), (16, 24), (37, 24)])

    @jax.jit
    def both(x, w, dy):
        y1, vjp1 = jax.vjp(cpu_kernels.dense, x, w)
        y2, vjp2 = jax.vjp(_plain_dense, x, w)
        return (y1, y2), vjp1(dy), vjp2(dy)

    (y1, y2), g1, g2 = both(x, w, dy)
    np.testing.assert_array_equal(np.float32(y1), np.float32(y2))
    for a, b in zip(g1, g2):
        assert a.dtype == b.dtype == dtype
        scale = float(jnp.max(jnp.abs(b.astype(jnp.float32))))
        np.testing.assert_allclose(np.float32(a), np.float32(b), rtol=tol, atol=tol * scale)
    # the weight gradient itself, before the cast: fp32 sums of exact bf16 products
    exact = np.float32(x).T @ np.float32(dy)
    np.testing.assert_allclose(jax.jit(cpu_kernels.weight_grad)(x, dy), exact, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype,tol", [(jnp.float32, 1e-5), (jnp.bfloat16, 8e-3)])
def test_bias_and_gain_vjps_match_autodiff(dtype, tol):
    """`bias_add` and `gain_mul` (parameter gradients summed over the tokens in fp32)
    have autodiff's values and gradients, for a bias over 1 and over 2 trailing axes."""
    rng = np.random.RandomState(5)
    x = jnp.asarray(rng.randn(3, 5, 7, 4, 6), dtype)
    dy = jnp.asarray(rng.randn(3, 5, 7, 4, 6), dtype)
    for fn, plain in [
        (cpu_kernels.bias_add, lambda x, b: x + b),
        (cpu_kernels.gain_mul, lambda x, g: g * x),
    ]:
        for shape in [(6,), (4, 6)]:
            b = jnp.asarray(rng.randn(*shape), dtype)
            y1, vjp1 = jax.jit(functools.partial(jax.vjp, fn))(x, b)
            y2, vjp2 = jax.vjp(plain, x, b)
            np.testing.assert_array_equal(np.float32(y1), np.float32(y2))
            exact = np.float32(dy) * (1.0 if fn is cpu_kernels.bias_add else np.float32(x))
            exact = exact.sum(axis=tuple(range(5 - len(shape))))
            (dx1, db1), (dx2, db2) = vjp1(dy), vjp2(dy)
            np.testing.assert_array_equal(np.float32(dx1), np.float32(dx2))
            assert db1.dtype == db2.dtype == dtype and db1.shape == db2.shape == shape
            # fp32 accumulation: within one final rounding of the exact sum (autodiff's
            # bf16 sum is not: it is off by up to ~20 % here, so it is compared in fp32 only)
            np.testing.assert_allclose(np.float32(db1), exact, rtol=tol)
            if dtype == jnp.float32:
                np.testing.assert_allclose(db1, db2, rtol=tol, atol=tol)


@pytest.mark.slow
@pytest.mark.parametrize("remat", [False, True])
def test_model_gradients_with_kernels_match_the_plain_math(remat, monkeypatch):
    """The whole model's gradient (left padding, scan or unrolled layers, remat) with the
    CPU kernels on (the MLP's VJP, the projections' `dense`, the biases' and norm gains'
    fp32 sums) matches the plain math under autodiff -- the path GPUs, TPUs and
    ``TTRL_CPU_KERNELS=off`` take: in fp32 to float rounding; in bf16 both are held
    against the fp32 gradient."""
    cfg = dataclasses.replace(CFG, num_layers=5)  # > UNROLL_MAX_LAYERS: scanned
    for c in (CFG, cfg):
        params = tfm.init_params(c, jax.random.key(3), std=0.2)
        tokens = jax.random.randint(jax.random.key(4), (4, 12), 0, c.vocab_size)
        mask = (jnp.arange(12)[None] >= jnp.array([0, 2, 5, 1])[:, None]).astype(jnp.int32)
        w = jnp.linspace(-1.0, 2.0, 8)

        def loss(p, c=c, tokens=tokens, mask=mask, w=w):
            lp = ts.sequence_logprobs(p, c, tokens, mask, 8, 0.7, remat=remat)
            return jnp.sum(lp * w)

        bf = jax.tree.map(lambda a: a.astype(jnp.bfloat16), params)
        grads = {}
        for mode in ("on", "off"):
            with monkeypatch.context() as m:
                m.setenv("TTRL_CPU_KERNELS", mode)
                assert (tfm.ops_for(jnp.bfloat16) == tfm.PLAIN) == (mode == "off")
                grads[mode] = jax.jit(jax.grad(loss))(params), jax.jit(jax.grad(loss))(bf)
        (g_on, h_on), (g_off, h_off) = grads["on"], grads["off"]
        for a, b in zip(jax.tree.leaves(g_on), jax.tree.leaves(g_off)):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5 * float(jnp.max(jnp.abs(b))))
        for ref, a, b in zip(*map(jax.tree.leaves, (g_off, h_on, h_off))):
            ref, a, b = np.float32(ref), np.float32(a), np.float32(b)
            scale = np.max(np.abs(ref))
            # bf16 activations through up to 5 blocks: 1-6 % of the leaf's largest entry on
            # either path (measured); the kernels' own sums are held exactly elsewhere
            assert np.max(np.abs(a - ref)) <= 0.1 * scale  # the kernels
            assert np.max(np.abs(b - ref)) <= 0.1 * scale  # the fallback
