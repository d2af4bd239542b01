"""Policy models: the decoder, HF checkpoint I/O and tokenizers.

Public entry points::

  model = load_hf(path, dtype="bfloat16", mesh=None)   # HF dir -> Transformer
  z = logits(model, tokens, attention_mask)            # [B, L] ints -> [B, L, V] fp32
  save_hf(model, path)                                 # Transformer -> HF dir
"""

from __future__ import annotations

import os

import jax
import jax.numpy as jnp

from ttrl_jax.models.checkpoint_hf import CheckpointError, load_params, save_params
from ttrl_jax.models.config import ConfigError, ModelConfig, config_from_hf, read_hf_config
from ttrl_jax.models.model import Transformer

_DTYPES = {
    "bfloat16": jnp.bfloat16,
    "float32": jnp.float32,
    "bf16": jnp.bfloat16,
    "fp32": jnp.float32,
}


def resolve_dtype(dtype) -> jnp.dtype:
    """'bfloat16' / 'float32' (or a jnp dtype) -> jnp dtype; clear error otherwise."""
    if isinstance(dtype, str):
        if dtype not in _DTYPES:
            raise ValueError(f"unsupported dtype {dtype!r}; use 'bfloat16' or 'float32'")
        return jnp.dtype(_DTYPES[dtype])
    return jnp.dtype(dtype)


def load_hf(path: str | os.PathLike, dtype="bfloat16", mesh=None) -> Transformer:
    """Loads a local HF checkpoint directory (Qwen2 / Llama) into a `Transformer`.

    Args:
      path: directory with `config.json` and `*.safetensors` (optionally with an index).
      dtype: "bfloat16" or "float32" parameter dtype.
      mesh: optional `jax.sharding.Mesh`; params are placed on their logical shardings.
    """
    path = os.fspath(path)
    cfg, params = load_params(path, dtype=resolve_dtype(dtype), mesh=mesh)
    return Transformer(cfg, params, source_path=path)


def logits(model: Transformer, tokens, attention_mask=None) -> jax.Array:
    """fp32 logits ``[B, L, V]``; positions are ``cumsum(attention_mask) - 1``."""
    return model(tokens, attention_mask)


def save_hf(model: Transformer, path: str | os.PathLike, dtype=None, **kwargs) -> None:
    """Exports a `Transformer` as an HF directory that `transformers` loads."""
    save_params(
        model.params(),
        model.config,
        os.fspath(path),
        dtype=None if dtype is None else resolve_dtype(dtype),
        source_dir=model.source_path,
        **kwargs,
    )


__all__ = [
    "CheckpointError",
    "ConfigError",
    "ModelConfig",
    "Transformer",
    "config_from_hf",
    "load_hf",
    "logits",
    "read_hf_config",
    "resolve_dtype",
    "save_hf",
]
