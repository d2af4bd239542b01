"""The synthetic task, the demo tokenizer and a few-step pretraining run."""

import dataclasses
import json
import os

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from experiments import pretrain_tiny as pt
from ttrl_jax import models
from ttrl_jax.data import left_pad
from ttrl_jax.data import synthetic as syn
from ttrl_jax.data.records import make_record
from ttrl_jax.models.tokenizer import load_tokenizer
from ttrl_jax.rewards.answers import extract_math_answer

SPEC = syn.TaskSpec(num_digits=6, p_left=0.62, drop_carry=0.6, slip=0.02)
TINY = dataclasses.replace(
    pt.PRESETS["ci"],
    hidden_size=32,
    intermediate_size=64,
    num_layers=2,
    num_heads=4,
    num_kv_heads=2,
    steps=3,
    batch_size=8,
    warmup_steps=1,
)


def test_generators_are_deterministic_and_disjoint():
    assert syn.make_test_set(50, 3, SPEC) == syn.make_test_set(50, 3, SPEC)
    assert syn.make_test_set(50, 3, SPEC) != syn.make_test_set(50, 4, SPEC)
    assert syn.make_test_set(20, 3, SPEC) == syn.make_test_set(50, 3, SPEC)[:20]
    test = syn.make_test_set(200, 0, SPEC)
    corpus = syn.make_train_corpus(300, 1, SPEC, exclude=[r["problem"] for r in test])
    assert corpus == syn.make_train_corpus(300, 1, SPEC, exclude=[r["problem"] for r in test])
    assert not {r["problem"] for r in test} & {r["problem"] for r in corpus}
    assert len({r["problem"] for r in test}) == 200
    for records in (test, corpus):
        assert len({r["id"] for r in records}) == len(records)
        for i, r in enumerate(records):
            rec = make_record(r, where=f"synthetic:{i}", default_id="", default_source="",
                              id_key="id", source_key="source")  # fmt: skip
            assert rec["answer"] == r["answer"] == str(sum(syn.parse_problem(r["problem"])))


def test_clean_traces_box_the_gold_answer():
    for r in syn.make_test_set(100, 0, SPEC):
        digits = syn.parse_problem(r["problem"])
        assert syn.problem_text(digits) == r["problem"]
        for order in (syn.LEFT, syn.RIGHT):
            trace = syn.clean_trace(digits, order)
            assert trace.startswith(order + ": ")
            assert syn.extract_answer(trace) == extract_math_answer(trace) == r["answer"]
    assert syn.clean_trace([3, 5, 8], syn.LEFT) == "left: 3+5=08 +8=16 \\boxed{16}"
    assert syn.clean_trace([3, 5, 8], syn.RIGHT) == "right: 8+5=13 +3=16 \\boxed{16}"


def test_noise_is_where_the_spec_puts_it():
    clean = syn.TaskSpec(num_digits=6, p_left=0.5, drop_carry=0.0, slip=0.0)
    for r in syn.make_train_corpus(200, 0, clean):
        assert syn.extract_answer(r["completion"]) == r["answer"]
    careless = syn.TaskSpec(num_digits=6, p_left=1.0, drop_carry=1.0, slip=0.0)
    for r in syn.make_train_corpus(200, 0, careless):
        digits = syn.parse_problem(r["problem"])
        assert r["completion"].startswith("left")
        want = syn.gold_answer(digits) - 10 * syn.num_carries(digits)
        assert int(syn.extract_answer(r["completion"])) == want
    corpus = syn.make_train_corpus(2000, 0, SPEC)
    left = [r for r in corpus if r["completion"].startswith("left")]
    assert abs(len(left) / len(corpus) - SPEC.p_left) < 0.04
    right_ok = np.mean([syn.extract_answer(r["completion"]) == r["answer"]
                        for r in corpus if r not in left])  # fmt: skip
    left_ok = np.mean([syn.extract_answer(r["completion"]) == r["answer"] for r in left])
    assert right_ok > 0.8 and left_ok < 0.3


def test_tokenizer_round_trips_and_matches_its_chat_template(tmp_path):
    tok = pt.build_tokenizer()
    assert tok.backend_tokenizer.to_str() == pt.build_tokenizer().backend_tokenizer.to_str()
    messages = [{"role": "user", "content": "add 3 5 8"}]
    text = tok.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == "<|im_start|>user\nadd 3 5 8<|im_end|>\n<|im_start|>assistant\n"
    assert pt.chat_prompt(tok, "add 3 5 8") == text
    full = tok.apply_chat_template(
        messages + [{"role": "assistant", "content": "x"}], tokenize=False
    )
    assert full == text[: -len("<|im_start|>assistant\n")] + "<|im_start|>assistant\nx<|im_end|>\n"
    sample = text + syn.clean_trace([3, 5, 8]) + "<|im_end|>"
    ids = tok.encode(sample, add_special_tokens=False)
    assert tok.decode(ids) == sample
    assert tok.convert_ids_to_tokens(ids[:3]) == ["<|im_start|>", "user", "\u010a"]
    odd = "Let's think step by step, \\boxed{} 12345 \u00e9\u4e2d!"
    assert tok.decode(tok.encode(odd, add_special_tokens=False)) == odd
    # Saved next to a qwen2 config.json, AutoTokenizer (which then builds a
    # Qwen2Tokenizer from tokenizer.json) must give the same ids and template.
    pt.save_tokenizer(tok, tmp_path)
    cfg = pt.model_config(TINY, tok)
    with open(tmp_path / "config.json", "w") as f:
        json.dump(cfg.hf_config, f)
    loaded = AutoTokenizer.from_pretrained(tmp_path, local_files_only=True)
    assert loaded.encode(sample, add_special_tokens=False) == ids
    assert loaded.encode(odd, add_special_tokens=False) == tok.encode(odd, add_special_tokens=False)
    assert loaded.apply_chat_template(messages, tokenize=False, add_generation_prompt=True) == text
    info = load_tokenizer(tmp_path)
    im_end = tok.convert_tokens_to_ids("<|im_end|>")
    assert info.eos_ids == (im_end,) and info.pad_id == tok.convert_tokens_to_ids("<|pad|>")
    with open(tmp_path / "generation_config.json") as f:
        assert json.load(f)["eos_token_id"] == im_end


def test_encode_corpus_masks_only_the_assistant_turn():
    tok = pt.build_tokenizer()
    records = syn.make_train_corpus(4, 0, SPEC)
    tokens, loss_mask, key_mask = pt.encode_corpus(records, tok)
    assert tokens.shape[1] % 8 == 0 and np.all(loss_mask <= key_mask)
    for row, lm, km, r in zip(tokens, loss_mask, key_mask, records):
        assert tok.decode(row[lm]) == r["completion"] + "<|im_end|>"
        assert tok.decode(row[km & ~lm]) == pt.chat_prompt(tok, r["problem"])


def test_short_pretraining_writes_a_loadable_hf_checkpoint(tmp_path):
    out = os.fspath(tmp_path / "tiny")
    info = pt.build(out, TINY, seed=0, log_every=0)
    for name in ("config.json", "model.safetensors", "tokenizer.json", "generation_config.json"):
        assert os.path.isfile(os.path.join(out, name)), name
    assert info["num_params"] == models.read_hf_config(out).num_params()
    assert pt.read_info(out)["preset_obj"] == TINY
    mtime = os.path.getmtime(os.path.join(out, "model.safetensors"))
    assert pt.load_or_build(out, TINY, seed=0)["wall_seconds"] == info["wall_seconds"]
    assert os.path.getmtime(os.path.join(out, "model.safetensors")) == mtime  # cached
    model = models.load_hf(out, dtype="float32")
    assert model.config.tie_word_embeddings and "lm_head" not in model.params()
    tok = AutoTokenizer.from_pretrained(out, local_files_only=True)
    prompts = [pt.chat_prompt(tok, r["problem"]) for r in syn.make_test_set(3, 0, TINY.task)]
    ids = [tok.encode(p + "left: 1", add_special_tokens=False) for p in prompts]
    ids[1] = ids[1][3:]  # ragged rows, so left padding is exercised
    tokens, mask = left_pad(ids, tok.pad_token_id, rule="exact")
    ours = np.asarray(models.logits(model, tokens, mask))
    hf = AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32).eval()
    with torch.no_grad():
        ref = hf(
            input_ids=torch.tensor(tokens).long(), attention_mask=torch.tensor(mask).long()
        ).logits.numpy()
    assert np.abs(ours - ref)[mask.astype(bool)].max() <= 1e-4
