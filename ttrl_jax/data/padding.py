"""Left padding of token-id lists into fixed, bucketed shapes.

Prompts are left-padded so every row's last prompt token sits in the same
column and decoding starts at one position for the whole batch. The padded
length ``P`` is rounded up to a bucket so the jitted sampler sees few distinct
shapes (one compiled program per bucket).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

import numpy as np

BucketRule = Literal["multiple", "pow2", "exact"]


def bucket_length(
    length: int,
    *,
    rule: BucketRule = "multiple",
    multiple: int = 32,
    max_length: int | None = None,
) -> int:
    """Rounds a length up to its bucket.

    Args:
        length: The length to round (>= 1).
        rule: ``"multiple"``: the next multiple of ``multiple``;
            ``"pow2"``: the next power of two, at least ``multiple``;
            ``"exact"``: ``length`` itself.
        multiple: The bucket step (``"multiple"``) or smallest bucket (``"pow2"``).
        max_length: A cap: a bucket above it becomes ``max_length`` (so a
            budget like ``max_prompt_tokens`` is never exceeded).

    Returns:
        The bucket, ``>= length``.

    Raises:
        ValueError: ``length < 1``, ``multiple < 1``, an unknown rule, or
            ``length > max_length``.
    """
    if length < 1 or multiple < 1:
        raise ValueError(f"length and multiple must be >= 1, got {length} and {multiple}")
    if max_length is not None and length > max_length:
        raise ValueError(f"length {length} exceeds max_length {max_length}")
    if rule == "multiple":
        bucket = -(-length // multiple) * multiple
    elif rule == "pow2":
        bucket = max(multiple, 1 << (length - 1).bit_length())
    elif rule == "exact":
        bucket = length
    else:
        raise ValueError(f"unknown bucket rule {rule!r} (known: multiple, pow2, exact)")
    return bucket if max_length is None else min(bucket, max_length)


def left_pad(
    token_ids: Sequence[Sequence[int]],
    pad_id: int,
    *,
    rule: BucketRule = "multiple",
    multiple: int = 32,
    max_length: int | None = None,
    length: int | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """Left-pads token-id lists into one int32 array and its mask.

    Args:
        token_ids: ``B`` non-empty lists of token ids.
        pad_id: The id written into padding positions.
        rule: The bucket rule for ``P`` (see ``bucket_length``).
        multiple: The bucket step / smallest bucket.
        max_length: Cap on ``P`` (see ``bucket_length``).
        length: A fixed ``P`` instead of a bucket; must fit the longest list.

    Returns:
        ``tokens`` int32 ``[B, P]`` and ``mask`` int32 ``[B, P]`` (1 on real
        tokens, 0 on padding), with real tokens right-aligned.

    Raises:
        ValueError: No lists, an empty list, or lists longer than ``length`` /
            ``max_length``.
    """
    if not token_ids:
        raise ValueError("left_pad needs at least one token list")
    lengths = [len(ids) for ids in token_ids]
    if min(lengths) == 0:
        raise ValueError(f"token list {lengths.index(0)} is empty")
    longest = max(lengths)
    if length is None:
        length = bucket_length(longest, rule=rule, multiple=multiple, max_length=max_length)
    elif longest > length:
        raise ValueError(f"longest token list has {longest} ids > length {length}")
    tokens = np.full((len(token_ids), length), pad_id, dtype=np.int32)  # [B, P]
    mask = np.zeros((len(token_ids), length), dtype=np.int32)  # [B, P]
    for row, ids in enumerate(token_ids):
        tokens[row, length - len(ids) :] = ids
        mask[row, length - len(ids) :] = 1
    return tokens, mask


def pad_left_to(tokens, mask, length: int, pad_id: int):
    """Left-pads already padded ``[B, P]`` tokens and mask to ``[B, length]`` (numpy or
    jax arrays; padding columns get ``pad_id`` and mask 0)."""
    p = tokens.shape[1]
    if length < p:
        raise ValueError(f"cannot pad {p} prompt columns down to {length}")
    widths = ((0, 0), (length - p, 0))
    if isinstance(tokens, np.ndarray):
        return np.pad(tokens, widths, constant_values=pad_id), np.pad(mask, widths)
    import jax.numpy as jnp  # only for device arrays: the data package stays numpy-only

    return jnp.pad(tokens, widths, constant_values=pad_id), jnp.pad(mask, widths)
