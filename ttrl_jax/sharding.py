"""Device mesh, logical-to-physical sharding rules and batch placement.

The mesh has three named axes:

* ``data``   pure data parallelism (params replicated along it),
* ``fsdp``   data parallelism with params / optimizer state sharded along it (ZeRO-3),
* ``tensor`` tensor (model) parallelism over heads, MLP width and vocabulary.

Arrays are described with *logical* axis names (``batch``, ``embed``, ``heads``, ...);
`DEFAULT_RULES` maps each logical name to mesh axes. A logical axis whose size is not
divisible by the product of its mesh axes is replicated instead, so a tiny test model
runs on any mesh.

Meshes are built with `AxisType.Auto` on every axis on purpose: jax >= 0.10 defaults
`jax.make_mesh` to Explicit axes, which make sharding part of every array's type and
require explicit resharding in user code. With Auto axes GSPMD propagates shardings from
the jit inputs and the few `constrain` calls below, which is what this code base uses.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import jax
import numpy as np
from jax.sharding import AxisType, Mesh, NamedSharding, PartitionSpec

MESH_AXES = ("data", "fsdp", "tensor")

# logical axis -> mesh axes (tuple) or None (replicated)
DEFAULT_RULES: dict[str, tuple[str, ...] | None] = {
    "batch": ("data", "fsdp"),
    "vocab": ("tensor",),
    "embed": ("fsdp",),
    "heads": ("tensor",),
    "kv_heads": ("tensor",),
    "mlp": ("tensor",),
    "head_dim": None,
    "layers": None,
    "norm": None,
    "seq": None,
    "cache_seq": None,
    "samples": None,
}


def make_mesh(
    data: int = -1, fsdp: int = 1, tensor: int = 1, devices: Sequence[jax.Device] | None = None
) -> Mesh:
    """Builds a ``(data, fsdp, tensor)`` mesh over ``devices`` (default: all devices).

    Args:
      data: size of the data axis; -1 takes whatever the other two leave.
      fsdp: size of the fsdp axis.
      tensor: size of the tensor axis.
      devices: devices to use (default `jax.devices()`, i.e. all processes' devices).

    A single process may ask for fewer devices than it has (the first ones are used);
    a multi-process run must use every device.

    Raises:
      ValueError: if the sizes do not fit the device count.
    """
    devices = list(jax.devices() if devices is None else devices)
    n = len(devices)
    if data == -1:
        if fsdp <= 0 or tensor <= 0 or n % (fsdp * tensor):
            raise ValueError(f"mesh fsdp={fsdp} x tensor={tensor} does not divide {n} devices")
        data = n // (fsdp * tensor)
    want = data * fsdp * tensor
    if want < n and jax.process_count() == 1 and want >= 1:
        devices = devices[:want]  # a single process may use a subset of its devices
    elif want != n:
        raise ValueError(f"mesh data={data} x fsdp={fsdp} x tensor={tensor} != {n} devices")
    return jax.make_mesh(
        (data, fsdp, tensor), MESH_AXES, axis_types=(AxisType.Auto,) * 3, devices=devices
    )


def spec_for(
    shape: Sequence[int],
    logical_axes: Sequence[str | None],
    mesh: Mesh,
    rules: Mapping[str, tuple[str, ...] | None] = DEFAULT_RULES,
) -> PartitionSpec:
    """The PartitionSpec for an array of ``shape`` with the given logical axes.

    Mesh axes of size 1, axes already used by an earlier dimension and axes that do not
    divide the dimension are dropped (that dimension is then replicated along them).
    """
    if len(shape) != len(logical_axes):
        raise ValueError(
            f"shape {tuple(shape)} and logical axes {tuple(logical_axes)} differ in rank"
        )
    used: set[str] = set()
    out = []
    for size, name in zip(shape, logical_axes):
        if name is not None and name not in rules:
            raise KeyError(f"no sharding rule for logical axis {name!r}")
        axes = [
            a
            for a in (rules.get(name) or ())
            if a in mesh.shape and mesh.shape[a] > 1 and a not in used
        ]
        chosen: list[str] = []
        for a in axes:
            if size % (math.prod(mesh.shape[c] for c in chosen) * mesh.shape[a]) == 0:
                chosen.append(a)
        used.update(chosen)
        out.append(None if not chosen else chosen[0] if len(chosen) == 1 else tuple(chosen))
    while out and out[-1] is None:
        out.pop()
    return PartitionSpec(*out)


def named_sharding(shape, logical_axes, mesh: Mesh, rules=DEFAULT_RULES) -> NamedSharding:
    return NamedSharding(mesh, spec_for(shape, logical_axes, mesh, rules))


def tree_shardings(shapes: Any, logical: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Maps a tree of shapes (or arrays) and a matching tree of logical axes to shardings."""
    is_axes = lambda x: isinstance(x, tuple) and all(isinstance(a, (str, type(None))) for a in x)
    return jax.tree.map(
        lambda axes, x: named_sharding(getattr(x, "shape", x), axes, mesh, rules),
        logical,
        shapes,
        is_leaf=is_axes,
    )


def like_shardings(tree: Any, reference: Any, mesh: Mesh) -> Any:
    """Shardings for ``tree`` (arrays or ShapeDtypeStructs) borrowed from ``reference``.

    Each leaf takes the sharding of a ``reference`` array of the same shape (the
    optimizer moments mirror the params), else is replicated. Params of equal shape share
    logical axes here, so matching by shape is unambiguous.
    """
    by_shape = {tuple(x.shape): x.sharding for x in jax.tree.leaves(reference)}
    return jax.tree.map(lambda x: by_shape.get(tuple(x.shape), replicated(mesh)), tree)


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, PartitionSpec())


def constrain(x: jax.Array, logical_axes: Sequence[str | None], rules=DEFAULT_RULES) -> jax.Array:
    """`with_sharding_constraint` by logical axes under the current mesh; no-op without one."""
    mesh = jax.sharding.get_abstract_mesh()
    if mesh.empty:
        return x
    return jax.lax.with_sharding_constraint(x, spec_for(x.shape, logical_axes, mesh, rules))


def batch_axis_size(mesh: Mesh, rules=DEFAULT_RULES) -> int:
    """How many ways the ``batch`` logical axis is split on ``mesh``."""
    return math.prod(mesh.shape[a] for a in (rules["batch"] or ()) if a in mesh.shape)


def shard_batch(batch: Any, mesh: Mesh, rules=DEFAULT_RULES) -> Any:
    """Places a tree of host arrays whose leading axis is the batch on ``mesh``.

    Every process passes the same *global* batch (the data iterator is deterministic and
    identical on all hosts); each process materialises only the shards its own devices
    hold (`jax.make_array_from_callback`), so on several hosts each feeds its slice.
    Leading dimensions not divisible by the batch axes are replicated.
    """

    def put(x):
        x = np.asarray(x)
        axes = ("batch",) + (None,) * (x.ndim - 1)
        sh = named_sharding(x.shape, axes, mesh, rules)
        return jax.make_array_from_callback(x.shape, sh, lambda idx: x[idx])

    return jax.tree.map(put, batch)


def to_host(tree: Any) -> Any:
    """Numpy copies of a tree of (possibly multi-host sharded) arrays, whole on every host."""

    def get(x):
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            from jax.experimental import multihost_utils

            return np.asarray(multihost_utils.process_allgather(x, tiled=True))
        return np.asarray(x)

    return jax.tree.map(get, tree)


def initialize_distributed(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    auto: bool = False,
) -> bool:
    """Starts `jax.distributed` for a multi-host run; returns whether it did.

    With a coordinator address (and process count / id) it connects explicitly; with
    ``auto`` (the launcher's ``--distributed``, which `tpu_setup/launch.sh` passes) or
    when ``TPU_WORKER_HOSTNAMES`` lists several workers (GKE) it lets JAX auto-detect
    everything from the Cloud TPU metadata; otherwise (one host) it does nothing. CPU runs use
    gloo collectives across processes.
    """
    if coordinator_address:
        if num_processes is None or process_id is None:
            raise ValueError("coordinator_address needs num_processes and process_id")
        jax.config.update("jax_cpu_collectives_implementation", "gloo")
        jax.distributed.initialize(
            coordinator_address, num_processes=num_processes, process_id=process_id
        )
        return True
    hosts = os.environ.get("TPU_WORKER_HOSTNAMES", "")
    if auto or len([h for h in hosts.split(",") if h]) > 1:
        jax.distributed.initialize()
        return True
    return False
