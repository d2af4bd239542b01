"""XLA CPU kernels for the decoder blocks, apart from the model's math.

`ttrl_jax.models.transformer` states the model as plain einsums, ``+`` and ``*``. On an
XLA CPU some of those plain forms run far below the machine's peak, so this module
holds drop-in replacements with the same values and (up to the rounding of fp32
sums) the same gradients:

* `swiglu`: the SwiGLU MLP with its VJP written out so every gradient is a row-major
  2-D matmul operand (autodiff of the batched form leaves XLA CPU writing d(gate) and
  d(up) transposed and strided);
* `project` / `dense` / `weight_grad`: a projection run as one 2-D matmul whose weight
  gradient ``x^T dy`` reads a materialised ``x^T`` (`_opaque_transpose`), so that bf16
  operands reach XLA CPU's native bf16 dot kernels instead of an fp32 dot;
* `bias_add` / `gain_mul`: parameter gradients summed over the tokens in fp32 (autodiff
  sums a bf16 cotangent in bf16, which XLA CPU rewrites into a slow strided reduction).

**Which ones run is decided in one place, `select`**, by the backend and by what the
CPU can do:

* `swiglu` on every XLA CPU, whatever the dtype (fp32 training included: the demo's
  numerics are these);
* the bf16 kernels (`project`, `bias_add`, `gain_mul`) only for low-precision
  activations on a CPU with native bf16 dot instructions (AVX512_BF16 or AMX; not
  when ``XLA_FLAGS`` caps the ISA below AVX-512). On an AVX2-only CPU they cost time
  (bf16 there is emulated through fp32), so the plain forms run;
* GPUs and TPUs run the plain forms under autodiff.

``TTRL_CPU_KERNELS=on|off`` overrides the choice (default ``auto``). The measurements
behind each kernel are in ``BENCHMARKS.md`` ("CPU kernels").
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np


class Ops(NamedTuple):
    """The block's elementwise and matmul operations (plain or CPU kernels)."""

    bias_add: Callable  # (x [..., *S], b [*S]) -> x + b
    gain_mul: Callable  # (x [..., *S], g [*S]) -> g * x
    project: Callable  # (spec, x, w) -> einsum(spec, x, w), fp32-accumulated, x.dtype
    swiglu: Callable  # (n [N, D], W_g [D, F], W_u [D, F], W_d [F, D]) -> [N, D]


_NATIVE_BF16_FLAGS = ("avx512_bf16", "amx_bf16")
_CAPPED_ISA = re.compile(r"--xla_cpu_max_isa=(\S+)")


def _cpu_flags() -> set[str]:
    """The CPU's feature flags (Linux ``/proc/cpuinfo``; empty where unreadable)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("flags"):
                    return set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return set()


@functools.cache
def native_bf16_dots() -> bool:
    """True when XLA CPU can run bf16 x bf16 dots natively here: the CPU has AVX512_BF16
    or AMX-BF16 and ``XLA_FLAGS`` does not cap the ISA below AVX-512."""
    cap = _CAPPED_ISA.search(os.environ.get("XLA_FLAGS", ""))
    if cap and not cap.group(1).upper().startswith(("AVX512", "AMX")):
        return False
    return bool(_cpu_flags() & set(_NATIVE_BF16_FLAGS))


def _mode() -> str:
    mode = os.environ.get("TTRL_CPU_KERNELS", "auto").lower()
    if mode not in ("auto", "on", "off"):
        raise ValueError(f"TTRL_CPU_KERNELS must be auto, on or off, got {mode!r}")
    return mode


def _kernels_on() -> bool:
    """Whether any CPU kernel may run: an XLA CPU backend (or ``TTRL_CPU_KERNELS=on``)."""
    mode = _mode()
    return mode == "on" or (mode == "auto" and jax.default_backend() == "cpu")


def _bf16_kernels(dtype) -> bool:
    """Whether the low-precision kernels run for activations of ``dtype``: low precision,
    kernels on, and native bf16 dots here (or ``TTRL_CPU_KERNELS=on``)."""
    if jnp.dtype(dtype).itemsize >= 4 or not _kernels_on():
        return False
    return _mode() == "on" or native_bf16_dots()


def select(dtype, plain: Ops) -> Ops:
    """The operations a block with activations of ``dtype`` runs: ``plain`` (the model's
    own math) with the CPU kernels swapped in where they pay (see the module doc)."""
    if not _kernels_on():
        return plain
    bf16 = _bf16_kernels(dtype)
    return Ops(
        bias_add=bias_add if bf16 else plain.bias_add,
        gain_mul=gain_mul if bf16 else plain.gain_mul,
        project=project if bf16 else plain.project,
        swiglu=swiglu,
    )


def _mm(spec: str, a: jax.Array, b: jax.Array) -> jax.Array:
    """``einsum(spec, a, b)`` accumulated in fp32, returned in ``a``'s dtype."""
    return jnp.einsum(spec, a, b, preferred_element_type=jnp.float32).astype(a.dtype)


# ------------------------------------------------------------ parameter gradients in fp32


def _sum_leading(t: jax.Array, shape: tuple) -> jax.Array:
    """``t`` summed over its leading axes down to its trailing ``shape``, in fp32."""
    return jnp.sum(t.astype(jnp.float32), axis=tuple(range(t.ndim - len(shape))))


@jax.custom_vjp
def bias_add(x: jax.Array, b: jax.Array) -> jax.Array:
    """``x + b``, ``b`` broadcast over the leading axes of ``x``; VJP ``dx = dy``,
    ``db = sum(dy)`` over the leading axes in fp32."""
    return x + b


bias_add.defvjp(
    lambda x, b: (x + b, b),
    lambda b, dy: (dy, _sum_leading(dy, b.shape).astype(b.dtype)),
)


@jax.custom_vjp
def gain_mul(x: jax.Array, g: jax.Array) -> jax.Array:
    """``g * x``, ``g`` broadcast over the leading axes of ``x``; VJP ``dx = dy g``,
    ``dg = sum(dy x)`` over the leading axes in fp32."""
    return g * x


def _gain_mul_bwd(res, dy):
    x, g = res
    dg = _sum_leading(dy.astype(jnp.float32) * x.astype(jnp.float32), g.shape)
    return (dy * g).astype(x.dtype), dg.astype(g.dtype)


gain_mul.defvjp(lambda x, g: (g * x, (x, g)), _gain_mul_bwd)


# ------------------------------------------------------------ projections


def _opaque_transpose(x: jax.Array) -> jax.Array:
    """``x.T`` ``[D, N]`` of a 2-D ``x``, materialised inside a while loop (trip count 1
    behind an optimisation barrier) that XLA's simplifier cannot see through."""
    one = jax.lax.optimization_barrier(jnp.int32(1))
    return jax.lax.fori_loop(0, one, lambda _, t: x.T, jnp.zeros(x.shape[::-1], x.dtype))


def weight_grad(x: jax.Array, dy: jax.Array) -> jax.Array:
    """``dW = x^T dy`` ``[D, F]`` in fp32 for row-major tokens ``x [N, D]``, ``dy [N, F]``.

    Same numbers as ``x.T @ dy``. XLA CPU runs a contraction over the lhs's leading axis
    as an fp32 dot even for bf16 operands, and folds a plain transpose back into that
    form; so with the bf16 kernels on, x^T is materialised first (`_opaque_transpose`)
    and the dot runs in the native bf16 kernels. fp32 keeps the plain dot.
    """
    if _bf16_kernels(x.dtype):
        return jnp.dot(_opaque_transpose(x), dy, preferred_element_type=jnp.float32)
    return jnp.dot(x.T, dy, preferred_element_type=jnp.float32)


@jax.custom_vjp
def dense(x: jax.Array, w: jax.Array) -> jax.Array:
    """``y = x W`` ``[N, F]`` for row-major tokens ``x [N, D]`` and ``W [D, F]``.

    VJP: ``dx = dy W^T`` and ``dW = x^T dy`` (`weight_grad`), both accumulated in fp32.
    """
    return _mm("nd,df->nf", x, w)


def _dense_fwd(x, w):
    return dense(x, w), (x, w)


def _dense_bwd(res, dy):
    x, w = res
    dx = jnp.einsum("nf,df->nd", dy, w, preferred_element_type=jnp.float32)
    return dx.astype(x.dtype), weight_grad(x, dy.astype(x.dtype)).astype(w.dtype)


dense.defvjp(_dense_fwd, _dense_bwd)


def project(spec: str, x: jax.Array, w: jax.Array) -> jax.Array:
    """``einsum(spec, x, w)`` (fp32-accumulated, in ``x``'s dtype) for a projection that
    contracts the last k axes of ``x [..., I1..Ik]`` with the first k of
    ``w [I1..Ik, O...]`` -> ``[..., O...]``, run as one `dense` on the flattened tokens."""
    ins, out = spec.split("->")
    xs, ws = ins.split(",")
    k = sum(c in ws and c not in out for c in xs)
    lead, inner = x.shape[: x.ndim - k], x.shape[x.ndim - k :]
    n_in = int(np.prod(inner))
    y = dense(x.reshape(-1, n_in), w.reshape(n_in, -1))
    return y.reshape(lead + w.shape[k:])


# ------------------------------------------------------------ SwiGLU


def _swiglu_fwd(n, w_gate, w_up, w_down):
    gate = _mm("nd,df->nf", n, w_gate)  # [N, F]
    up = _mm("nd,df->nf", n, w_up)  # [N, F]
    y = _mm("nf,fd->nd", jax.nn.silu(gate) * up, w_down)  # [N, D]
    return y, (n, gate, up, w_gate, w_up, w_down)


@jax.custom_vjp
def swiglu(n, w_gate, w_up, w_down):
    """SwiGLU MLP on row-major tokens: ``y = (silu(n W_g) * (n W_u)) W_d``.

    ``n [N, D]``, ``W_g, W_u [D, F]``, ``W_d [F, D]`` -> ``y [N, D]``. With ``g = n W_g``,
    ``u = n W_u``, ``s = sigmoid(g)``, ``a = g s = silu(g)`` and the cotangent ``dy``::

        dh = dy W_d^T,                  dW_d = (a u)^T dy
        dg = dh u s (1 + g (1 - s)),    du = dh a          (silu'(g) = s (1 + g (1 - s)))
        dn = dg W_g^T + du W_u^T,       dW_g = n^T dg,     dW_u = n^T du

    The elementwise part runs in fp32; ``n``, ``g`` and ``u`` are the saved residuals.
    """
    return _swiglu_fwd(n, w_gate, w_up, w_down)[0]


def _swiglu_bwd(res, dy):
    n, gate, up, w_gate, w_up, w_down = res
    g, u = gate.astype(jnp.float32), up.astype(jnp.float32)
    s = jax.nn.sigmoid(g)
    a = g * s
    dh = jnp.einsum("nd,fd->nf", dy, w_down, preferred_element_type=jnp.float32)  # [N, F]
    d_down = weight_grad((a * u).astype(dy.dtype), dy)
    dg = (dh * u * s * (1.0 + g * (1.0 - s))).astype(n.dtype)  # [N, F]
    du = (dh * a).astype(n.dtype)
    dn = jnp.einsum("nf,df->nd", dg, w_gate, preferred_element_type=jnp.float32) + jnp.einsum(
        "nf,df->nd", du, w_up, preferred_element_type=jnp.float32
    )  # [N, D]
    d_gate = weight_grad(n, dg)  # [D, F]
    d_up = weight_grad(n, du)
    return (
        dn.astype(n.dtype),
        d_gate.astype(w_gate.dtype),
        d_up.astype(w_up.dtype),
        d_down.astype(w_down.dtype),
    )


swiglu.defvjp(_swiglu_fwd, _swiglu_bwd)
