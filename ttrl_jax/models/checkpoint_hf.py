"""HF-format checkpoints: `config.json` + ``*.safetensors`` <-> the params tree.

Loading streams one tensor at a time from memory-mapped files, converts it to the
target dtype, stacks the per-layer weights and places each array directly on its
target sharding (`jax.make_array_from_callback` only touches the local shards).
Exporting writes transformers-loadable safetensors (sharded with an index file when
large) plus `config.json`, `generation_config.json` and tokenizer files.
"""

from __future__ import annotations

import glob
import json
import os
import shutil
from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np
from jax.sharding import Mesh

from ttrl_jax import sharding as shd
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig, config_to_hf, read_hf_config
from ttrl_jax.models.safetensors_io import SafetensorsFile, read_header, write_file

INDEX_FILE = "model.safetensors.index.json"
_AUX_FILES = (
    "generation_config.json",
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
    "added_tokens.json",
    "chat_template.jinja",
    "tokenizer.model",
)


class CheckpointError(ValueError):
    """An HF checkpoint directory that cannot be loaded."""


def _mapping(cfg: ModelConfig) -> dict[str, tuple[str, Callable, Callable]]:
    """Our param name -> (HF name template, hf->ours transform, ours->hf transform)."""
    d, h, k, dh = cfg.hidden_size, cfg.num_heads, cfg.num_kv_heads, cfg.head_dim
    pre = "model.layers.{i}."
    ident = (lambda w: w, lambda w: w)
    m = {
        "attn_norm": (pre + "input_layernorm.weight",) + ident,
        "mlp_norm": (pre + "post_attention_layernorm.weight",) + ident,
        "wq": (
            pre + "self_attn.q_proj.weight",
            lambda w: w.T.reshape(d, h, dh),
            lambda w: w.reshape(d, h * dh).T,
        ),
        "wk": (
            pre + "self_attn.k_proj.weight",
            lambda w: w.T.reshape(d, k, dh),
            lambda w: w.reshape(d, k * dh).T,
        ),
        "wv": (
            pre + "self_attn.v_proj.weight",
            lambda w: w.T.reshape(d, k, dh),
            lambda w: w.reshape(d, k * dh).T,
        ),
        "wo": (
            pre + "self_attn.o_proj.weight",
            lambda w: w.T.reshape(h, dh, d),
            lambda w: w.reshape(h * dh, d).T,
        ),
        "bq": (pre + "self_attn.q_proj.bias", lambda w: w.reshape(h, dh), lambda w: w.reshape(-1)),
        "bk": (pre + "self_attn.k_proj.bias", lambda w: w.reshape(k, dh), lambda w: w.reshape(-1)),
        "bv": (pre + "self_attn.v_proj.bias", lambda w: w.reshape(k, dh), lambda w: w.reshape(-1)),
        "bo": (pre + "self_attn.o_proj.bias",) + ident,
        "q_norm": (pre + "self_attn.q_norm.weight",) + ident,
        "k_norm": (pre + "self_attn.k_norm.weight",) + ident,
        "w_gate": (pre + "mlp.gate_proj.weight", lambda w: w.T, lambda w: w.T),
        "w_up": (pre + "mlp.up_proj.weight", lambda w: w.T, lambda w: w.T),
        "w_down": (pre + "mlp.down_proj.weight", lambda w: w.T, lambda w: w.T),
        "b_gate": (pre + "mlp.gate_proj.bias",) + ident,
        "b_up": (pre + "mlp.up_proj.bias",) + ident,
        "b_down": (pre + "mlp.down_proj.bias",) + ident,
        "embed": ("model.embed_tokens.weight",) + ident,
        "final_norm": ("model.norm.weight",) + ident,
        "lm_head": ("lm_head.weight", lambda w: w.T, lambda w: w.T),
    }
    return m


class _TensorIndex:
    """Where each HF tensor name lives in a checkpoint directory."""

    def __init__(self, path: str):
        self.path = path
        index = os.path.join(path, INDEX_FILE)
        if os.path.isfile(index):
            try:
                with open(index, encoding="utf-8") as f:
                    weight_map = json.load(f)["weight_map"]
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise CheckpointError(f"{index}: malformed index file ({e!r})") from None
            files = sorted(set(weight_map.values()))
            for name in files:
                if not os.path.isfile(os.path.join(path, name)):
                    raise CheckpointError(f"{index}: lists {name}, which is not in {path}")
        else:
            files = sorted(
                os.path.basename(p) for p in glob.glob(os.path.join(path, "*.safetensors"))
            )
            if not files:
                raise CheckpointError(f"{path}: no *.safetensors files (and no {INDEX_FILE})")
            weight_map = {}
            for name in files:
                header, _ = read_header(os.path.join(path, name))
                weight_map.update({t: name for t in header})
        self.files = files
        self.weight_map = weight_map
        self._open: dict[str, SafetensorsFile] = {}

    def __contains__(self, name: str) -> bool:
        return name in self.weight_map

    def get(self, name: str) -> np.ndarray:
        if name not in self.weight_map:
            raise CheckpointError(
                f"{self.path}: missing tensor {name!r} (looked in: {', '.join(self.files)})"
            )
        fname = self.weight_map[name]
        if fname not in self._open:
            self._open[fname] = SafetensorsFile(os.path.join(self.path, fname))
        f = self._open[fname]
        if name not in f.header:
            raise CheckpointError(f"{f.path}: missing tensor {name!r} (listed in the index)")
        return f.get(name)


def load_params(
    path: str,
    cfg: ModelConfig | None = None,
    dtype=jnp.bfloat16,
    mesh: Mesh | None = None,
    rules=shd.DEFAULT_RULES,
):
    """Streams an HF checkpoint directory into the params tree.

    Args:
      path: directory with `config.json` and safetensors file(s).
      cfg: model config (read from `config.json` if None).
      dtype: parameter dtype.
      mesh: if given, each array is placed on its logical sharding on this mesh;
        otherwise on the default device.
      rules: logical-to-mesh rules.

    Returns:
      (cfg, params).

    Raises:
      FileNotFoundError / ConfigError / CheckpointError naming the directory, file or tensor.
    """
    path = os.fspath(path)
    cfg = cfg or read_hf_config(path)
    index = _TensorIndex(path)
    mapping = _mapping(cfg)
    shapes = tfm.param_shapes(cfg)
    axes = tfm.param_logical_axes(cfg)
    np_dtype = np.dtype(jnp.dtype(dtype))

    def fetch(name: str, layer: int | None) -> np.ndarray:
        template, to_ours, _ = mapping[name]
        hf_name = template.format(i=layer)
        arr = to_ours(index.get(hf_name))
        return arr

    def place(arr: np.ndarray, logical) -> jax.Array:
        if mesh is None:
            return jax.device_put(arr)
        sh = shd.named_sharding(arr.shape, logical, mesh, rules)
        return jax.make_array_from_callback(arr.shape, sh, lambda idx: arr[idx])

    def load_one(name: str, shape: tuple, logical, stacked: bool) -> jax.Array:
        if stacked:
            out = np.empty(shape, np_dtype)
            for i in range(cfg.num_layers):
                arr = fetch(name, i)
                if arr.shape != shape[1:]:
                    raise CheckpointError(
                        f"{path}: tensor {mapping[name][0].format(i=i)!r} has shape "
                        f"{arr.shape} after transform, expected {shape[1:]}"
                    )
                out[i] = arr.astype(np_dtype)
        else:
            arr = fetch(name, None)
            if arr.shape != shape:
                raise CheckpointError(
                    f"{path}: tensor {mapping[name][0]!r} has shape {arr.shape}, expected {shape}"
                )
            out = arr.astype(np_dtype)
        return place(out, logical)

    params = {"layers": {}}
    for name, shape in shapes["layers"].items():
        params["layers"][name] = load_one(name, shape, axes["layers"][name], True)
    for name in ("embed", "final_norm", "lm_head"):
        if name in shapes:
            params[name] = load_one(name, shapes[name], axes[name], False)
    return cfg, params


def _to_host(x: jax.Array) -> np.ndarray:
    if not getattr(x, "is_fully_addressable", True):
        from jax.experimental import multihost_utils

        x = multihost_utils.process_allgather(x, tiled=True)
    return np.asarray(jax.device_get(x))


MANIFEST_FILE = "ttrl_export.json"  # the files the last export wrote (and may replace)


def _is_weight_file(name: str) -> bool:
    return name.endswith(".safetensors") or name == INDEX_FILE


def save_params(
    params,
    cfg: ModelConfig,
    path: str,
    *,
    dtype=None,
    max_shard_bytes: int = 4 << 30,
    source_dir: str | None = None,
) -> list[str]:
    """Writes params as an HF checkpoint directory that `transformers` loads.

    Nothing that this function did not write is ever deleted or replaced, except the
    files it writes again: every file is written to a temporary directory beside
    ``path`` first, then moved in. A manifest (``ttrl_export.json``) lists what was
    written, so a later export into the same directory removes its stale shards. A
    directory holding weight files that no export of ours wrote (a base model, say)
    is refused rather than mixed with new weights.

    Args:
      params: the params tree.
      cfg: model config.
      path: output directory (created).
      dtype: dtype of the saved tensors (default: the params' dtype).
      max_shard_bytes: split into several files plus an index above this size.
      source_dir: a directory whose generation config / tokenizer files are copied.

    Returns:
      The names of the files written.

    Raises:
      CheckpointError: ``path`` is a file, or holds weight files not from an export.
    """
    path = os.path.abspath(os.fspath(path))
    if os.path.exists(path) and not os.path.isdir(path):
        raise CheckpointError(f"{path}: is a file, not a directory")
    mapping = _mapping(cfg)
    tensors: list[tuple[str, np.ndarray]] = []
    for name, arr in params["layers"].items():
        template, _, to_hf = mapping[name]
        host = _to_host(arr)
        for i in range(cfg.num_layers):
            tensors.append((template.format(i=i), to_hf(host[i])))
    for name in ("embed", "final_norm", "lm_head"):
        if name in params:
            tensors.append((mapping[name][0], mapping[name][2](_to_host(params[name]))))
    if dtype is not None:
        np_dtype = np.dtype(jnp.dtype(dtype))
        tensors = [(n, a.astype(np_dtype)) for n, a in tensors]
    saved_dtype = str(jnp.dtype(tensors[0][1].dtype))

    shards: list[list[tuple[str, np.ndarray]]] = [[]]
    size = 0
    for item in tensors:
        if shards[-1] and size + item[1].nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(item)
        size += item[1].nbytes
    if len(shards) == 1:
        weight_files = {"model.safetensors": shards[0]}
    else:
        weight_files = {
            f"model-{j + 1:05d}-of-{len(shards):05d}.safetensors": shard
            for j, shard in enumerate(shards)
        }
    aux = []
    if source_dir and os.path.abspath(source_dir) != path:
        aux = [n for n in _AUX_FILES if os.path.isfile(os.path.join(source_dir, n))]
    names = [*weight_files, *([INDEX_FILE] if len(shards) > 1 else []), "config.json", *aux]

    existing = set(os.listdir(path)) if os.path.isdir(path) else set()
    previous = set(_read_manifest(path)) & existing
    foreign = sorted(
        n for n in existing if _is_weight_file(n) and n not in names and n not in previous
    )
    if foreign:
        raise CheckpointError(
            f"{path}: holds weight files that no export wrote ({', '.join(foreign)}); "
            "export to another directory"
        )

    parent = os.path.dirname(path)
    os.makedirs(parent, exist_ok=True)
    tmp = os.path.join(parent, f".{os.path.basename(path)}.export-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for fname, shard in weight_files.items():
            write_file(os.path.join(tmp, fname), shard)
        if len(shards) > 1:
            weight_map = {n: f for f, shard in weight_files.items() for n, _ in shard}
            total = sum(a.nbytes for _, a in tensors)
            with open(os.path.join(tmp, INDEX_FILE), "w", encoding="utf-8") as f:
                json.dump(
                    {"metadata": {"total_size": total}, "weight_map": weight_map}, f, indent=2
                )
        with open(os.path.join(tmp, "config.json"), "w", encoding="utf-8") as f:
            json.dump(config_to_hf(cfg, saved_dtype), f, indent=2)
        for name in aux:
            shutil.copyfile(os.path.join(source_dir, name), os.path.join(tmp, name))
        if not existing:  # a new or empty directory: one rename
            if os.path.isdir(path):
                os.rmdir(path)
            _write_manifest(tmp, names)
            os.rename(tmp, path)
            return names
        # a previous export: list old and new files first, so that an interrupted
        # export is cleaned up by the next one; then move the new files in
        _write_manifest(path, sorted(previous | set(names)))
        for name in names:
            os.replace(os.path.join(tmp, name), os.path.join(path, name))
        for name in sorted(previous - set(names)):
            os.remove(os.path.join(path, name))
        _write_manifest(path, names)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return names


def _read_manifest(path: str) -> list[str]:
    file = os.path.join(path, MANIFEST_FILE)
    if not os.path.isfile(file):
        return []
    try:
        with open(file, encoding="utf-8") as f:
            files = json.load(f)["files"]
    except (json.JSONDecodeError, KeyError, TypeError):
        return []
    # only plain names in the directory itself, never a path elsewhere
    return [
        n
        for n in files
        if isinstance(n, str) and n == os.path.basename(n) and n not in ("", ".", "..")
    ]


def _write_manifest(path: str, names: list[str]) -> None:
    tmp = os.path.join(path, MANIFEST_FILE + ".tmp")
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump({"files": sorted(names)}, f, indent=2)
    os.replace(tmp, os.path.join(path, MANIFEST_FILE))
