"""The policy model as a Flax NNX module over the pure functions of `transformer`.

`Transformer` owns the parameters as `nnx.Param` variables (each tagged with its
logical sharding axes) and the static `ModelConfig`. Jitted code works on the plain
params dict (`Transformer.params()`), so the same pure functions serve the sampler,
the trainer and evaluation; `Transformer.with_params` rebuilds a module from a dict.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from flax import nnx

from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ModelConfig


class _Group(nnx.Module):
    """A flat group of named parameters."""

    def __init__(self, values: dict, axes: dict):
        for name, value in values.items():
            setattr(self, name, nnx.Param(value, logical_axes=axes[name]))


class Transformer(nnx.Module):
    """Qwen2 / Llama decoder with stacked per-layer parameters.

    Attributes:
      config: the `ModelConfig`.
      source_path: the HF directory the weights came from (tokenizer, generation config).
    """

    def __init__(self, config: ModelConfig, params: dict, source_path: str | None = None):
        axes = tfm.param_logical_axes(config)
        missing = set(axes) - set(params)
        if missing:
            raise ValueError(f"params lack {sorted(missing)}")
        self.config = config
        self.source_path = source_path
        self.embed = nnx.Param(params["embed"], logical_axes=axes["embed"])
        self.layers = _Group(params["layers"], axes["layers"])
        self.final_norm = nnx.Param(params["final_norm"], logical_axes=axes["final_norm"])
        if "lm_head" in axes:
            self.lm_head = nnx.Param(params["lm_head"], logical_axes=axes["lm_head"])

    @classmethod
    def random(cls, config: ModelConfig, seed: int = 0, dtype=jnp.float32) -> Transformer:
        """A randomly initialised model (N(0, 0.02^2) weights)."""
        return cls(config, tfm.init_params(config, jax.random.key(seed), dtype))

    def params(self) -> dict:
        """The parameters as a plain nested dict of arrays."""
        return nnx.to_pure_dict(nnx.state(self, nnx.Param))

    def with_params(self, params: dict) -> Transformer:
        """A new module with the same config and source, holding ``params``."""
        return Transformer(self.config, params, self.source_path)

    @property
    def dtype(self):
        return self.embed[...].dtype

    def __call__(self, tokens: jax.Array, attention_mask: jax.Array | None = None) -> jax.Array:
        """fp32 logits ``[B, L, V]`` for int tokens ``[B, L]`` (left padding allowed)."""
        if attention_mask is None:
            attention_mask = jnp.ones(tokens.shape, jnp.int32)
        return _logits(
            self.params(), self.config, jnp.asarray(tokens, jnp.int32), jnp.asarray(attention_mask)
        )


@functools.partial(jax.jit, static_argnums=(1,))
def _logits(params, cfg, tokens, mask):
    positions = tfm.positions_from_mask(mask)  # [B, L]
    hidden, _ = tfm.forward(
        params, cfg, tokens[:, None], positions[:, None], key_mask=mask[:, None].astype(bool)
    )
    return tfm.head_logits(hidden[:, 0], tfm.lm_head_weight(params, cfg))  # [B, L, V]
