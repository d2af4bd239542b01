"""Model configuration: the decoder hyper-parameters read from an HF `config.json`.

One frozen dataclass covers the Qwen2 / Qwen2.5 / Qwen2.5-Math, Qwen3 (dense) and Llama-3
families.
Both transformers 4.x (`rope_theta`, `rope_scaling` at top level) and 5.x
(`rope_parameters` holding `rope_theta` and the scaling) layouts are understood.
"""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama")
ARCHITECTURES = {
    "qwen2": "Qwen2ForCausalLM",
    "qwen3": "Qwen3ForCausalLM",
    "llama": "LlamaForCausalLM",
}


class ConfigError(ValueError):
    """A model `config.json` that cannot be turned into a `ModelConfig`."""


@dataclasses.dataclass(frozen=True)
class ModelConfig:
    """Decoder hyper-parameters.

    Attributes:
      model_type: "qwen2", "qwen3" or "llama" (HF `model_type`).
      vocab_size: V.
      hidden_size: D.
      intermediate_size: F, the SwiGLU width.
      num_layers: number of decoder blocks.
      num_heads: query heads H.
      num_kv_heads: key/value heads K (H % K == 0, grouped-query attention).
      head_dim: Dh (defaults to D / H; Qwen3 sets it apart, e.g. 128 with D / H = 64).
      rms_norm_eps: epsilon inside RMSNorm.
      rope_theta: RoPE base.
      rope_scaling: None, or a sorted tuple of (key, value) pairs of the HF rope
        parameters with `rope_type` "llama3" (factor, low_freq_factor,
        high_freq_factor, original_max_position_embeddings).
      tie_word_embeddings: whether the LM head reuses the embedding matrix.
      qkv_bias: biases on the q/k/v projections (always for Qwen2; `attention_bias`
        for Qwen3 and Llama).
      o_bias: bias on the output projection (`attention_bias` for Qwen3 and Llama).
      qk_norm: RMSNorm over Dh of every query and key head before RoPE, one gain of
        size Dh shared by the heads (Qwen3).
      mlp_bias: biases in the MLP (Llama `mlp_bias`).
      max_position_embeddings: context length the checkpoint was trained for.
      hf_config: the raw `config.json` dict, kept for export (not compared).
    """

    model_type: str
    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    rms_norm_eps: float = 1e-6
    rope_theta: float = 10000.0
    rope_scaling: tuple[tuple[str, Any], ...] | None = None
    tie_word_embeddings: bool = False
    qkv_bias: bool = False
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    max_position_embeddings: int = 32768
    hf_config: dict[str, Any] | None = dataclasses.field(
        default=None, compare=False, hash=False, repr=False
    )

    def __post_init__(self):
        if self.model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(
                f"unsupported model_type {self.model_type!r}; supported: "
                f"{', '.join(SUPPORTED_MODEL_TYPES)}"
            )
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_layers",
            "num_heads",
            "num_kv_heads",
            "head_dim",
        ):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
                raise ConfigError(f"{name} must be a positive integer, got {value!r}")
        if self.num_heads % self.num_kv_heads:
            raise ConfigError(
                f"num_attention_heads ({self.num_heads}) is not a multiple "
                f"of num_key_value_heads ({self.num_kv_heads})"
            )

    @property
    def rope_scaling_dict(self) -> dict[str, Any] | None:
        return dict(self.rope_scaling) if self.rope_scaling else None

    def num_params(self) -> int:
        """Number of parameters (embedding counted once when tied)."""
        d, f, h, k, dh = (
            self.hidden_size,
            self.intermediate_size,
            self.num_heads,
            self.num_kv_heads,
            self.head_dim,
        )
        attn = d * h * dh * 2 + d * k * dh * 2
        if self.qkv_bias:
            attn += h * dh + 2 * k * dh
        if self.o_bias:
            attn += d
        if self.qk_norm:
            attn += 2 * dh
        mlp = 3 * d * f + ((2 * f + d) if self.mlp_bias else 0)
        per_layer = attn + mlp + 2 * d
        head = 0 if self.tie_word_embeddings else d * self.vocab_size
        return self.vocab_size * d + self.num_layers * per_layer + d + head


def _require(cfg: dict[str, Any], key: str, where: str):
    if key not in cfg:
        raise ConfigError(f"{where}: missing key {key!r}")
    return cfg[key]


def _rope_from_hf(cfg: dict[str, Any], where: str) -> tuple[float, tuple | None]:
    """Returns (rope_theta, rope_scaling) from a 4.x or 5.x config dict."""
    params = cfg.get("rope_parameters")
    if params is None:  # transformers 4.x layout
        theta = cfg.get("rope_theta", 10000.0)
        scaling = cfg.get("rope_scaling")
    else:  # transformers 5.x layout
        if not isinstance(params, dict):
            raise ConfigError(f"{where}: 'rope_parameters' must be an object")
        theta = params.get("rope_theta", cfg.get("rope_theta", 10000.0))
        scaling = params if params.get("rope_type", "default") != "default" else None
    if scaling is None:
        return float(theta), None
    if not isinstance(scaling, dict):
        raise ConfigError(f"{where}: rope scaling must be an object, got {scaling!r}")
    rope_type = scaling.get("rope_type", scaling.get("type", "default"))
    if rope_type == "default":
        return float(theta), None
    if rope_type != "llama3":
        raise ConfigError(
            f"{where}: unsupported rope_type {rope_type!r} (supported: default, llama3)"
        )
    keys = ("factor", "low_freq_factor", "high_freq_factor", "original_max_position_embeddings")
    missing = [k for k in keys if k not in scaling]
    if missing:
        raise ConfigError(f"{where}: llama3 rope scaling lacks {', '.join(missing)}")
    items = tuple(sorted((k, float(scaling[k])) for k in keys))
    return float(theta), (("rope_type", "llama3"),) + items


def config_from_hf(cfg: dict[str, Any], where: str = "config.json") -> ModelConfig:
    """Builds a `ModelConfig` from an HF config dict.

    Args:
      cfg: the parsed `config.json`.
      where: a name for error messages (usually the file path).

    Raises:
      ConfigError: unsupported `model_type`, a missing key or an unsupported feature.
    """
    if not isinstance(cfg, dict):
        raise ConfigError(f"{where}: expected a JSON object")
    model_type = cfg.get("model_type")
    if model_type not in SUPPORTED_MODEL_TYPES:
        raise ConfigError(
            f"{where}: unsupported model_type {model_type!r}; supported: "
            f"{', '.join(SUPPORTED_MODEL_TYPES)}"
        )
    if cfg.get("use_sliding_window") or any(
        t != "full_attention" for t in cfg.get("layer_types") or ()
    ):
        raise ConfigError(
            f"{where}: sliding-window attention (use_sliding_window / layer_types) is not supported"
        )
    act = cfg.get("hidden_act", "silu")
    if act != "silu":
        raise ConfigError(f"{where}: unsupported hidden_act {act!r} (only silu)")
    hidden = _require(cfg, "hidden_size", where)
    heads = _require(cfg, "num_attention_heads", where)
    head_dim = cfg.get("head_dim") or (
        hidden // heads if isinstance(hidden, int) and isinstance(heads, int) and heads else 0
    )
    theta, scaling = _rope_from_hf(cfg, where)
    try:
        return ModelConfig(
            model_type=model_type,
            vocab_size=_require(cfg, "vocab_size", where),
            hidden_size=hidden,
            intermediate_size=_require(cfg, "intermediate_size", where),
            num_layers=_require(cfg, "num_hidden_layers", where),
            num_heads=heads,
            num_kv_heads=cfg.get("num_key_value_heads") or heads,
            head_dim=head_dim,
            rms_norm_eps=float(cfg.get("rms_norm_eps", 1e-6)),
            rope_theta=theta,
            rope_scaling=scaling,
            tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)),
            qkv_bias=True if model_type == "qwen2" else bool(cfg.get("attention_bias", False)),
            o_bias=False if model_type == "qwen2" else bool(cfg.get("attention_bias", False)),
            mlp_bias=bool(cfg.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            max_position_embeddings=int(cfg.get("max_position_embeddings", 32768)),
            hf_config=dict(cfg),
        )
    except ConfigError as e:
        raise ConfigError(f"{where}: {e}") from None


def read_hf_config(path: str | os.PathLike) -> ModelConfig:
    """Reads `<path>/config.json` into a `ModelConfig` (clear error on any problem)."""
    file = os.path.join(os.fspath(path), "config.json")
    if not os.path.isdir(path):
        raise FileNotFoundError(f"model directory not found: {path}")
    if not os.path.isfile(file):
        raise FileNotFoundError(f"{file}: no config.json in the model directory")
    try:
        with open(file, encoding="utf-8") as f:
            raw = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{file}: malformed JSON ({e})") from None
    return config_from_hf(raw, where=file)


def config_to_hf(cfg: ModelConfig, dtype: str = "float32") -> dict[str, Any]:
    """An HF `config.json` dict (transformers 5.x layout) describing `cfg`."""
    out = dict(cfg.hf_config or {})
    arch = ARCHITECTURES[cfg.model_type]
    rope = {"rope_theta": cfg.rope_theta, "rope_type": "default"}
    if cfg.rope_scaling:
        rope.update(cfg.rope_scaling_dict)
    out.pop("rope_theta", None)
    out.pop("rope_scaling", None)
    out.update(
        {
            "architectures": [arch],
            "model_type": cfg.model_type,
            "vocab_size": cfg.vocab_size,
            "hidden_size": cfg.hidden_size,
            "intermediate_size": cfg.intermediate_size,
            "num_hidden_layers": cfg.num_layers,
            "num_attention_heads": cfg.num_heads,
            "num_key_value_heads": cfg.num_kv_heads,
            "head_dim": cfg.head_dim,
            "hidden_act": "silu",
            "rms_norm_eps": cfg.rms_norm_eps,
            "rope_parameters": rope,
            "tie_word_embeddings": cfg.tie_word_embeddings,
            "max_position_embeddings": cfg.max_position_embeddings,
            "dtype": dtype,
        }
    )
    if cfg.model_type != "qwen2":
        out["attention_bias"] = cfg.o_bias or cfg.qkv_bias
    if cfg.model_type == "llama":
        out["mlp_bias"] = cfg.mlp_bias
    return out
