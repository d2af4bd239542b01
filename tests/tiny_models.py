"""Tiny random HF checkpoints and a real tokenizer, written to disk for tests.

Everything is built locally with `transformers` / `tokenizers` and `save_pretrained`, so
tests exercise the real loading code. Nothing is downloaded.
"""

from __future__ import annotations

import os

import numpy as np

CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
    "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
# Qwen3's switch, as its template renders it: thinking off opens the answer with an empty
# think block; on (or not given) leaves the answer open
THINKING_TEMPLATE = CHAT_TEMPLATE.replace(
    "{% endif %}",
    "{% if enable_thinking is defined and enable_thinking is false %}"
    "<think>\n\n</think>\n\n{% endif %}{% endif %}",
)
SPECIAL = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def _randomize(model, seed: int):
    """Non-zero biases and non-unit norm weights, so parity tests see every term."""
    import torch

    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.copy_(0.1 * torch.randn(p.shape, generator=g))
            elif "norm" in name:
                p.copy_(1.0 + 0.2 * torch.randn(p.shape, generator=g))


def _write_random(path, arch: str, seed: int, dtype: str = "float32", **config) -> str:
    """transformers' ``<arch>ForCausalLM`` of ``<arch>Config(**config)`` (pad id 0, no
    BOS) with seeded random weights (`_randomize`), saved at ``path``."""
    import torch
    import transformers

    torch.manual_seed(seed)
    cfg = getattr(transformers, f"{arch}Config")(pad_token_id=0, bos_token_id=None, **config)
    model = getattr(transformers, f"{arch}ForCausalLM")(cfg).eval()
    _randomize(model, seed)
    model.to(getattr(torch, dtype)).save_pretrained(path)
    return os.fspath(path)


def make_qwen2(
    path,
    *,
    vocab_size=96,
    hidden_size=32,
    layers=2,
    heads=4,
    kv_heads=2,
    intermediate_size=64,
    tie=True,
    seed=0,
    eos_token_id=3,
    dtype="float32",
    **extra,
):
    """A random Qwen2 checkpoint (q/k/v biases, tied embeddings by default)."""
    return _write_random(
        path,
        "Qwen2",
        seed,
        dtype,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=tie,
        eos_token_id=eos_token_id,
        max_position_embeddings=512,
        **extra,
    )


def make_qwen3(
    path,
    *,
    vocab_size=96,
    hidden_size=32,
    layers=2,
    heads=4,
    kv_heads=2,
    head_dim=16,
    intermediate_size=64,
    tie=False,
    seed=2,
    eos_token_id=3,
    **extra,
):
    """A random Qwen3 checkpoint: q/k RMSNorm per head, no q/k/v bias, a head_dim apart
    from hidden / heads (16 vs 8), untied embeddings by default."""
    return _write_random(
        path,
        "Qwen3",
        seed,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        head_dim=head_dim,
        tie_word_embeddings=tie,
        max_position_embeddings=512,
        eos_token_id=eos_token_id,
        **extra,
    )


def make_llama3(
    path,
    *,
    vocab_size=96,
    hidden_size=32,
    layers=2,
    heads=4,
    kv_heads=2,
    intermediate_size=64,
    tie=False,
    seed=1,
    **extra,
):
    """A random Llama checkpoint with llama3 rope scaling and untied embeddings."""
    return _write_random(
        path,
        "Llama",
        seed,
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=intermediate_size,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=tie,
        max_position_embeddings=2048,
        rope_scaling={
            "rope_type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
        rope_theta=500000.0,
        eos_token_id=3,
        **extra,
    )


def make_tokenizer(path, corpus=None, chat_template=CHAT_TEMPLATE):
    """A small real BPE tokenizer (byte-level) with a Qwen-style chat template."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    corpus = (
        corpus
        or [
            "What is 12 + 7 ? The answer is \\boxed{19} .",
            "Please reason step by step , and put your final answer within \\boxed{}.",
            "0 1 2 3 4 5 6 7 8 9 + - * / = ( ) { }",
        ]
        * 4
    )
    tok = Tokenizer(models.BPE(unk_token=None))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300, special_tokens=SPECIAL, initial_alphabet=pre_tokenizers.ByteLevel.alphabet()
    )
    tok.train_from_iterator(corpus, trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    fast.chat_template = chat_template
    fast.save_pretrained(path)
    return os.fspath(path), len(fast)


def left_padded_batch(rng: np.random.RandomState, lengths, vocab_size, width=None, low=4):
    """Random token rows of the given lengths, left-padded with 0, and their masks."""
    width = width or max(lengths)
    tokens = np.zeros((len(lengths), width), np.int32)
    mask = np.zeros((len(lengths), width), np.int32)
    for i, n in enumerate(lengths):
        tokens[i, width - n :] = rng.randint(low, vocab_size, n)
        mask[i, width - n :] = 1
    return tokens, mask
