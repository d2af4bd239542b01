"""The one rollout call shared by the trainer and evaluation.

`rollout` takes left-padded prompts ``[B, P]``, places them on the mesh and draws ``M``
completions of each with `sampling.sample`, under one frozen `RolloutSpec` (votes,
length limit, temperature / top-p / top-k, LM-head dtype). The trainer's rollout
stage and every evaluation batch go through it, so a sampling setting reaches both or
neither.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import jax

from ttrl_jax import sharding
from ttrl_jax.rollout import sampling


@dataclasses.dataclass(frozen=True)
class RolloutSpec:
    """How to sample: ``n_samples`` (M) completions of at most ``max_new_tokens`` (T)."""

    n_samples: int
    max_new_tokens: int
    temperature: float = 1.0
    top_p: float = 1.0
    top_k: int = 0
    head_dtype: str | None = None  # LM-head operand dtype; None: the params'
    decode_slots: int | None = None  # S of the decode engine; None: the default; 0: static
    attn_kernel: str = "auto"  # the engine's own-cache read (`pallas_attention.resolve`)


def rollout(
    params,
    cfg,
    tokens,
    mask,
    key: jax.Array,
    spec: RolloutSpec,
    *,
    eos_ids: Sequence,
    pad_id: int,
    mesh=None,
    prompt_len: int | None = None,
) -> sampling.Rollout:
    """``M`` completions of each prompt: a `sampling.Rollout` with ``[B, M, T]`` tokens and
    log-probs and ``[B, M]`` lengths (sharded like the prompts when ``mesh`` is given).

    Args:
      tokens, mask: ``[B, P]`` left-padded prompts and their mask (host arrays).
      key: PRNG key; the same key gives the same tokens on any mesh.
      spec: the sampling settings.
      eos_ids, pad_id: the tokenizer's stop ids and pad id.
      mesh: shard the prompts over its batch axes first (None: as given).
      prompt_len: pad P up to this (None: `sampling.sample`'s power-of-two bucket).
    """
    if mesh is not None:
        tokens, mask = sharding.shard_batch((tokens, mask), mesh)
    return sampling.sample(
        params,
        cfg,
        tokens,
        mask,
        key,
        num_samples=spec.n_samples,
        max_new_tokens=spec.max_new_tokens,
        sampling=sampling.sampling_params(spec.temperature, spec.top_p, spec.top_k),
        eos_ids=eos_ids,
        pad_id=pad_id,
        max_len=spec.max_new_tokens,
        prompt_len=prompt_len,
        head_dtype=spec.head_dtype or None,
        decode_slots=spec.decode_slots,
        attn_kernel=spec.attn_kernel,
    )
