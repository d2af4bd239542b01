"""The engine's own-cache read through JAX's Pallas GPU decode-attention kernel.

The kernel (`jax.experimental.pallas.ops.gpu.decode_attention.gqa`, shipped with jax)
is a split-k flash-decoding kernel with a length per row: for row ``n`` it reads only
the blocks below ``kv_seq_len[n]`` (a ragged read, to within one ``block_k``), so a slot
of the decode engine costs its own sample's length, not T. It returns the unnormalised
sums, which `engine.cache_attention` merges with the shared prompt prefix in one
softmax::

    o_own = sum_s e^(q.k_s - m) v_s,  l = sum_s e^(q.k_s - m),  m = max_s q.k_s,
    s < kv_seq_len[n].

It needs the own keys as ``[N, K, T, Dh]`` (the XLA CPU path stores them transposed,
``[N, K, Dh, T]``; `engine.empty_cache` picks the layout by kernel).

Where it runs: on a GPU it lowers through Triton; on any other backend the same kernel
runs in Pallas interpret mode (slow: it exists so that the CPU tests check this path
against the XLA one). ``attn_kernel="auto"`` takes it on GPUs when this jax provides
the kernel and a probe compile of the run's head shape succeeds; otherwise the XLA
read is the fallback. Under a mesh each device runs the kernel on its own slots
(``shard_map``). TPU keeps the XLA read (its ragged paged-attention kernel wants a
paged cache layout, not wired). Not run on a GPU in this project's sessions so far.
"""

from __future__ import annotations

import functools
import logging

import jax
import jax.numpy as jnp
from jax.sharding import PartitionSpec

from ttrl_jax import sharding

KERNELS = ("auto", "xla", "pallas")


def _module():
    """jax's Pallas GPU decode-attention module, or None where this jax lacks it."""
    try:
        from jax.experimental.pallas.ops.gpu import decode_attention
    except ImportError:
        return None
    return decode_attention if hasattr(decode_attention, "gqa") else None


def available() -> bool:
    """Whether the installed jax provides the kernel."""
    return _module() is not None


def split_plan(max_len: int) -> tuple[int, int] | None:
    """``(k_splits, block_k)`` for a cache of ``max_len`` slots: the most splits (up to
    16, each at least 16 slots) whose length a block of 128 / 64 / 32 / 16 divides;
    None when no plan fits (T not a multiple of 16)."""
    for splits in (16, 8, 4, 2, 1):
        if max_len % splits or max_len // splits < 16:
            continue
        seg = max_len // splits
        for blk in (128, 64, 32, 16):
            if seg % blk == 0:
                return splits, blk
    return None


def own_attention(q, ck, cv, w, *, interpret: bool | None = None):
    """The unnormalised attention of each row over its own cache slots ``<= w``.

    Rows and kv heads are independent, so under a mesh (``jax.set_mesh``) each device
    runs the kernel on its own shard: rows split like the logical ``batch`` axis, kv
    heads like ``kv_heads`` (`sharding.DEFAULT_RULES`; an axis they do not divide stays
    whole), with ``shard_map``.

    Args:
      q: ``[N, K, R, Dh]`` fp32 queries, already scaled by ``1/sqrt(Dh)``.
      ck, cv: ``[N, K, T, Dh]`` own keys and values.
      w: ``[N]`` int32, the last own slot each row may see (its length is ``w + 1``).
      interpret: run the kernel in Pallas interpret mode (None: off only on a GPU).

    Returns:
      ``o [N, K, R, Dh]`` (``sum_s e^(s_s - m) v_s``), ``l, m [N, K, R]``, all fp32. With
      a bf16 cache the queries enter the kernel in bf16 (its dots take one dtype).
    """
    local = functools.partial(_own_attention_local, interpret=interpret)
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty or mesh.size == 1:
        return local(q, ck, cv, w)
    lead = tuple(sharding.spec_for(q.shape[:2], ("batch", "kv_heads"), mesh))
    lead += (None,) * (2 - len(lead))  # [N, K] over (batch, kv_heads)
    rows4, rows3 = PartitionSpec(*lead, None, None), PartitionSpec(*lead, None)
    return jax.shard_map(
        local,
        in_specs=(rows4, rows4, rows4, PartitionSpec(lead[0])),
        out_specs=(rows4, rows3, rows3),
        check_vma=False,  # the kernel's outputs vary along the same axes as its inputs
    )(q, ck, cv, w)


def _own_attention_local(q, ck, cv, w, *, interpret: bool | None):
    """`own_attention` on one device's rows."""
    n, kh, r, dh = q.shape
    t = ck.shape[2]
    plan = split_plan(t)
    if plan is None:
        raise ValueError(f"the Pallas decode kernel needs T a multiple of 16, got {t}")
    if interpret is None:
        interpret = jax.default_backend() != "gpu"
    splits, blk = plan
    o, (l, m) = _module().gqa(
        q.reshape(n, kh * r, dh).astype(ck.dtype),
        jnp.swapaxes(ck, 1, 2),  # [N, T, K, Dh], as the kernel takes it
        jnp.swapaxes(cv, 1, 2),
        kv_seq_len=w.astype(jnp.int32) + 1,
        sm_scale=1.0,
        block_k=blk,
        k_splits=splits,
        interpret=interpret,
        return_residuals=True,
        normalize_output=False,
    )
    shape = (n, kh, r)
    return o.astype(jnp.float32).reshape(shape + (dh,)), l.reshape(shape), m.reshape(shape)


@functools.lru_cache(maxsize=None)
def compiles_here(kv_heads: int, rep: int, head_dim: int, max_len: int, dtype: str) -> bool:
    """Whether the kernel compiles and runs on the default device for one row of this
    head shape and T (a probe before a whole decode loop depends on it; cached)."""
    try:
        q = jnp.zeros((1, kv_heads, rep, head_dim), jnp.float32)
        kv = jnp.zeros((1, kv_heads, max_len, head_dim), jnp.dtype(dtype))
        w = jnp.zeros((1,), jnp.int32)
        jax.block_until_ready(own_attention(q, kv, kv, w))  # gqa is jitted itself
        return True
    except Exception as e:  # noqa: BLE001 -- any lowering / compile failure: fall back
        logging.warning("Pallas decode attention unusable here (%s); using the XLA read", e)
        return False


def resolve(
    kernel: str,
    *,
    max_len: int,
    kv_heads: int,
    rep: int,
    head_dim: int,
    cache_dtype,
    backend: str | None = None,
) -> str:
    """The engine's own-cache read, ``"xla"`` or ``"pallas"``, for ``kernel`` (one of
    `KERNELS`).

    ``"auto"`` is ``"pallas"`` on GPUs where the kernel exists, T suits it
    (`split_plan`) and it compiles for this head shape on one of them (`compiles_here`),
    else ``"xla"``. An explicit ``"pallas"`` is an error where the kernel is missing or
    T does not suit it; off a GPU it runs in interpret mode. On a mesh each device reads
    its own rows (`own_attention`).
    """
    if kernel not in KERNELS:
        raise ValueError(f"attn_kernel must be one of {KERNELS}, got {kernel!r}")
    backend = backend or jax.default_backend()
    if kernel == "xla":
        return "xla"
    fits = available() and split_plan(max_len) is not None
    if kernel == "pallas":
        if not fits:
            raise ValueError(
                "attn_kernel=pallas needs jax's Pallas GPU decode-attention kernel and T a "
                f"multiple of 16 (T={max_len}, kernel "
                f"{'present' if available() else 'missing'})"
            )
        return "pallas"
    if backend != "gpu" or not fits:
        return "xla"
    dt = jnp.dtype(cache_dtype).name
    return "pallas" if compiles_here(kv_heads, rep, head_dim, max_len, dt) else "xla"
