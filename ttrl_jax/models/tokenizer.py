"""Tokenizers: `transformers.AutoTokenizer` from a local directory, chat templates, stop ids.

Nothing here touches the network: `local_files_only=True` always.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

# the files that hold a vocabulary (any one suffices; a BPE vocab.json needs merges.txt)
VOCAB_FILES = ("tokenizer.json", "tokenizer.model", "vocab.json", "vocab.txt", "spiece.model")


@dataclasses.dataclass
class TokenizerInfo:
    """A loaded tokenizer and the ids the sampler needs.

    Attributes:
      tokenizer: the HF tokenizer.
      eos_ids: every id that ends a completion (tokenizer EOS, generation-config EOS
        ids, the chat template's end-of-turn token when it has one).
      pad_id: id used for padding (the tokenizer's pad token, else the first EOS id).
    """

    tokenizer: object
    eos_ids: tuple[int, ...]
    pad_id: int

    def chat_prompt(
        self, user: str, system: str | None = None, enable_thinking: bool = True
    ) -> str:
        """The prompt text for one user turn, exactly as the HF chat template renders it
        (``enable_thinking``: the template's thinking switch, as in Qwen3's)."""
        messages = ([{"role": "system", "content": system}] if system else []) + [
            {"role": "user", "content": user}
        ]
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template(
                messages,
                tokenize=False,
                add_generation_prompt=True,
                enable_thinking=enable_thinking,
            )
        return (system + "\n\n" if system else "") + user

    def encode(self, texts: Sequence[str]) -> list[list[int]]:
        """Token ids of each text (no special tokens added beyond the text itself)."""
        return [self.tokenizer.encode(t, add_special_tokens=False) for t in texts]

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return self.tokenizer.decode([int(i) for i in ids], skip_special_tokens=skip_special_tokens)


def _generation_eos(path: str) -> list[int]:
    file = os.path.join(path, "generation_config.json")
    if not os.path.isfile(file):
        return []
    try:
        with open(file, encoding="utf-8") as f:
            eos = json.load(f).get("eos_token_id")
    except json.JSONDecodeError as e:
        raise ValueError(f"{file}: malformed JSON ({e})") from None
    if eos is None:
        return []
    return [int(e) for e in (eos if isinstance(eos, list) else [eos])]


def load_tokenizer(path: str | os.PathLike) -> TokenizerInfo:
    """Loads the tokenizer of a local HF directory and resolves its EOS / pad ids."""
    from transformers import AutoTokenizer  # heavy import, kept local

    path = os.fspath(path)
    if not os.path.isdir(path):
        raise FileNotFoundError(f"tokenizer directory not found: {path}")
    present = [f for f in VOCAB_FILES if os.path.isfile(os.path.join(path, f))]
    if not present:
        raise ValueError(
            f"{path}: no tokenizer files (none of {', '.join(VOCAB_FILES)}); copy the "
            "base model's tokenizer files into this directory"
        )
    if present == ["vocab.json"] and not os.path.isfile(os.path.join(path, "merges.txt")):
        raise ValueError(f"{path}: tokenizer file merges.txt is missing (vocab.json needs it)")
    try:
        tok = AutoTokenizer.from_pretrained(path, local_files_only=True)
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: cannot load a tokenizer ({str(e).splitlines()[0]})") from None
    if len(tok) < 2:
        raise ValueError(
            f"{path}: the tokenizer has {len(tok)} token(s); its files "
            f"({', '.join(present)}) are incomplete"
        )
    eos: list[int] = []
    if tok.eos_token_id is not None:
        eos.append(int(tok.eos_token_id))
    eos += _generation_eos(path)
    for special in ("<|im_end|>", "<|eot_id|>", "<|endoftext|>"):
        tid = tok.convert_tokens_to_ids(special) if special in tok.get_vocab() else None
        if tid is not None and special in (getattr(tok, "chat_template", None) or ""):
            eos.append(int(tid))
    eos = list(dict.fromkeys(eos))
    if not eos:
        raise ValueError(f"{path}: the tokenizer defines no EOS token")
    pad = tok.pad_token_id if tok.pad_token_id is not None else eos[0]
    return TokenizerInfo(tokenizer=tok, eos_ids=tuple(eos), pad_id=int(pad))
