"""Prompt construction with a real (tiny, local) tokenizer, and left padding."""

import logging

import numpy as np
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import AutoTokenizer, PreTrainedTokenizerFast

from ttrl_jax.data import SRT_SUFFIX, DataError, bucket_length, build_prompts, left_pad

WORDS = [
    "<pad>",
    "<eos>",
    "<unk>",
    "<|system|>",
    "<|user|>",
    "<|assistant|>",
    "what",
    "is",
    "1",
    "+",
    "2",
    "?",
    "be",
    "brief",
]
TEMPLATE = (
    "{% for m in messages %}<|{{ m['role'] }}|> {{ m['content'] }} <eos> {% endfor %}"
    "{% if add_generation_prompt %}<|assistant|>{% endif %}"
)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory):
    """A word-level tokenizer with a chat template, saved and loaded like a real one."""
    model = Tokenizer(models.WordLevel({w: i for i, w in enumerate(WORDS)}, unk_token="<unk>"))
    model.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=model, pad_token="<pad>", eos_token="<eos>", unk_token="<unk>"
    )
    fast.chat_template = TEMPLATE
    path = tmp_path_factory.mktemp("tokenizer")
    fast.save_pretrained(path)
    return AutoTokenizer.from_pretrained(path)


def ids(text):
    return [WORDS.index(w) if w in WORDS else WORDS.index("<unk>") for w in text.split()]


def records(*problems):
    return [
        {"problem": p, "answer": "3", "id": f"r{i}", "source": "t"} for i, p in enumerate(problems)
    ]


def test_chat_template_suffix_and_system(tokenizer):
    out = build_prompts(records("what is 1 + 2 ?"), tokenizer, max_prompt_tokens=64)
    assert out.texts == ["<|user|> what is 1 + 2 ? <eos> <|assistant|>"]
    assert out.token_ids == [[4, 6, 7, 8, 9, 10, 11, 1, 5]]
    assert out.num_filtered == 0 and out.records[0]["id"] == "r0"

    out = build_prompts(
        records("what is 1 + 2 ?"),
        tokenizer,
        max_prompt_tokens=64,
        suffix=SRT_SUFFIX,
        system_prompt="be brief",
    )
    expected = (
        f"<|system|> be brief <eos> <|user|> what is 1 + 2 ? {SRT_SUFFIX} <eos> <|assistant|>"
    )
    assert out.texts == [expected]
    assert out.token_ids == [ids(expected)]
    assert SRT_SUFFIX == "Let's think step by step and output the final answer within \\boxed{}."


def test_too_long_filtered_with_count(tokenizer, caplog):
    rs = records("1", "1 + 2 + 2 + 2", "2", "1 + 2 + 2 + 2 + 2")  # 4, 10, 4, 12 tokens.
    with caplog.at_level(logging.WARNING, logger="ttrl_jax.data.prompts"):
        out = build_prompts(rs, tokenizer, max_prompt_tokens=10)
    assert [r["id"] for r in out.records] == ["r0", "r1", "r2"]
    assert [len(t) for t in out.token_ids] == [4, 10, 4]
    assert out.too_long_ids == ["r3"] and out.num_filtered == 1
    assert "1 of 4 prompts exceed max_prompt_tokens=10" in caplog.text and "r3" in caplog.text


def test_too_long_error_names_the_record(tokenizer):
    rs = records("1", "1 + 2 + 2 + 2 + 2", "1 + 2 + 2 + 2 + 2 + 2")
    with pytest.raises(DataError, match=r"^record id 'r1': prompt has 12 tokens \(2 of 3 prompts"):
        build_prompts(rs, tokenizer, max_prompt_tokens=10, on_too_long="error")
    with pytest.raises(DataError, match=r"every prompt is too long"):
        build_prompts(rs[1:], tokenizer, max_prompt_tokens=10)
    with pytest.raises(ValueError, match="on_too_long"):
        build_prompts(rs, tokenizer, max_prompt_tokens=10, on_too_long="drop")


def test_tokenizer_without_chat_template(tokenizer):
    bare = PreTrainedTokenizerFast(tokenizer_object=tokenizer.backend_tokenizer, pad_token="<pad>")
    with pytest.raises(DataError, match="no chat template"):
        build_prompts(records("1"), bare, max_prompt_tokens=10)


def test_bucket_rules():
    assert [bucket_length(n) for n in (1, 32, 33, 64, 65)] == [32, 32, 64, 64, 96]
    assert [bucket_length(n, rule="pow2", multiple=16) for n in (1, 16, 17, 33, 200)] == [
        16,
        16,
        32,
        64,
        256,
    ]
    assert bucket_length(33, rule="exact") == 33
    assert bucket_length(90, max_length=100) == 96 and bucket_length(97, max_length=100) == 100
    with pytest.raises(ValueError, match="exceeds max_length"):
        bucket_length(101, max_length=100)
    with pytest.raises(ValueError, match="unknown bucket rule"):
        bucket_length(3, rule="fib")


def test_left_pad():
    tokens, mask = left_pad([[5, 6, 7], [8]], pad_id=0, multiple=4)
    assert tokens.dtype == np.int32 and mask.dtype == np.int32
    np.testing.assert_array_equal(tokens, [[0, 5, 6, 7], [0, 0, 0, 8]])
    np.testing.assert_array_equal(mask, [[0, 1, 1, 1], [0, 0, 0, 1]])
    tokens, mask = left_pad([[1] * 33], pad_id=9, rule="pow2", multiple=8)
    assert tokens.shape == (1, 64) and mask.sum() == 33 and (tokens[0, :31] == 9).all()
    tokens, _ = left_pad([[1, 2]], pad_id=0, length=5)
    np.testing.assert_array_equal(tokens, [[0, 0, 0, 1, 2]])
    with pytest.raises(ValueError, match="3 ids > length 2"):
        left_pad([[1, 2, 3]], pad_id=0, length=2)
    with pytest.raises(ValueError, match="token list 1 is empty"):
        left_pad([[1], []], pad_id=0)


def test_prompts_to_padded_batch(tokenizer):
    out = build_prompts(records("1", "1 + 2 ?"), tokenizer, max_prompt_tokens=40)
    tokens, mask = left_pad(out.token_ids, tokenizer.pad_token_id, multiple=8, max_length=40)
    assert tokens.shape == (2, 8)
    for row, text in enumerate(out.texts):
        kept = tokens[row][mask[row] == 1].tolist()
        assert tokenizer.decode(kept) == text
        assert (tokens[row][mask[row] == 0] == tokenizer.pad_token_id).all()
