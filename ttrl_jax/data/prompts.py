"""Prompt construction through the tokenizer's chat template.

Each record's problem (plus an optional instruction suffix) becomes one user
message, optionally after a system message; the tokenizer's chat template turns
it into text ending with the assistant turn's opening
(``add_generation_prompt=True``), which is then tokenized without adding
special tokens again (the template already holds them).
"""

from __future__ import annotations

import dataclasses
import logging
from collections.abc import Sequence
from typing import Any, Literal

from ttrl_jax.data.records import ID, PROBLEM, DataError, where_of

# SRT (arXiv 2505.21444) appends this to every problem.
SRT_SUFFIX = "Let's think step by step and output the final answer within \\boxed{}."

_log = logging.getLogger(__name__)


def make_messages(
    problem: str,
    *,
    suffix: str | None = None,
    system_prompt: str | None = None,
    suffix_separator: str = " ",
) -> list[dict[str, str]]:
    """Returns the chat messages for one problem.

    Args:
        problem: The problem text.
        suffix: An instruction appended to the problem (e.g. ``SRT_SUFFIX``).
        system_prompt: An optional system message placed first.
        suffix_separator: What goes between problem and suffix.

    Returns:
        ``[{"role": "system", ...}?, {"role": "user", "content": ...}]``.
    """
    content = problem if suffix is None else f"{problem}{suffix_separator}{suffix}"
    messages = [] if system_prompt is None else [{"role": "system", "content": system_prompt}]
    messages.append({"role": "user", "content": content})
    return messages


@dataclasses.dataclass(frozen=True)
class Prompts:
    """Tokenized prompts and the records they come from.

    Attributes:
        token_ids: One list of token ids per kept record.
        texts: The chat-templated text of each kept record.
        records: The kept records, in input order.
        too_long_ids: Ids of the records left out for being too long.
    """

    token_ids: list[list[int]]
    texts: list[str]
    records: list[dict[str, Any]]
    too_long_ids: list[str]

    @property
    def num_filtered(self) -> int:
        """How many records were left out for being too long."""
        return len(self.too_long_ids)


def build_prompts(
    records: Sequence[dict[str, Any]],
    tokenizer: Any,
    *,
    max_prompt_tokens: int,
    suffix: str | None = None,
    system_prompt: str | None = None,
    on_too_long: Literal["filter", "error"] = "filter",
    suffix_separator: str = " ",
    enable_thinking: bool = True,
) -> Prompts:
    """Chat-templates and tokenizes the records' problems.

    Args:
        records: Records with ``problem`` and ``id``.
        tokenizer: A ``transformers`` tokenizer with a chat template.
        max_prompt_tokens: The longest prompt allowed, in tokens.
        suffix: An instruction appended to each problem (``SRT_SUFFIX`` for SRT).
        system_prompt: An optional system message.
        on_too_long: ``"filter"`` leaves longer prompts out and logs their
            count (also in ``Prompts.too_long_ids``); ``"error"`` raises.
        suffix_separator: What goes between problem and suffix.
        enable_thinking: The template's thinking switch, passed as ``enable_thinking``
            (Qwen3's template opens the answer with an empty think block when False;
            a template that does not read it renders the same either way).

    Returns:
        The kept prompts, with their records.

    Raises:
        DataError: ``on_too_long="error"`` and a prompt is too long (the message
            names the first such record's file and 1-based row, ``file:row``, when the
            record carries it, else its id); every prompt is too long; or the
            tokenizer has no chat template.
        ValueError: Bad ``max_prompt_tokens`` or ``on_too_long``.
    """
    if on_too_long not in ("filter", "error"):
        raise ValueError(f"on_too_long must be 'filter' or 'error', got {on_too_long!r}")
    if max_prompt_tokens < 1:
        raise ValueError(f"max_prompt_tokens must be >= 1, got {max_prompt_tokens}")
    if not getattr(tokenizer, "chat_template", None):
        name = getattr(tokenizer, "name_or_path", "") or type(tokenizer).__name__
        raise DataError(f"tokenizer {name}: no chat template to build prompts with")
    kept_ids, kept_texts, kept_records, too_long = [], [], [], []
    first_too_long = None
    for record in records:
        messages = make_messages(
            record[PROBLEM],
            suffix=suffix,
            system_prompt=system_prompt,
            suffix_separator=suffix_separator,
        )
        text = tokenizer.apply_chat_template(
            messages, tokenize=False, add_generation_prompt=True, enable_thinking=enable_thinking
        )
        ids = list(tokenizer.encode(text, add_special_tokens=False))
        if len(ids) > max_prompt_tokens:
            too_long.append(str(record[ID]))
            first_too_long = first_too_long or (record, len(ids))
            continue
        kept_ids.append(ids)
        kept_texts.append(text)
        kept_records.append(record)
    if too_long:
        counts = f"{len(too_long)} of {len(records)} prompts exceed max_prompt_tokens={max_prompt_tokens}"
        if on_too_long == "error":
            record, length = first_too_long
            where = where_of(record) or f"record id {record[ID]!r}"
            raise DataError(f"{where}: prompt has {length} tokens ({counts})")
        if not kept_ids:
            raise DataError(f"every prompt is too long ({counts})")
        shown = ", ".join(too_long[:5]) + (", ..." if len(too_long) > 5 else "")
        _log.warning("filtered out %s (ids: %s)", counts, shown)
    return Prompts(kept_ids, kept_texts, kept_records, too_long)
