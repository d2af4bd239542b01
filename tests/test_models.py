"""The decoder against `transformers` (PyTorch CPU) on tiny random checkpoints."""

import json
import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import oracles
import pytest
import tiny_models
import torch
from transformers import AutoModelForCausalLM

from ttrl_jax import models, sharding
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.config import ConfigError, config_from_hf


@pytest.fixture(scope="module")
def qwen_dir(tmp_path_factory):
    return tiny_models.make_qwen2(tmp_path_factory.mktemp("qwen2"))


@pytest.fixture(scope="module")
def llama_dir(tmp_path_factory):
    return tiny_models.make_llama3(tmp_path_factory.mktemp("llama3"))


@pytest.fixture(scope="module")
def qwen3_dirs(tmp_path_factory):
    """Untied (the default of the larger Qwen3s) and tied (0.6B-4B) embeddings."""
    return {
        tie: tiny_models.make_qwen3(tmp_path_factory.mktemp(f"qwen3_{tie}"), tie=tie)
        for tie in (False, True)
    }


@pytest.fixture
def model_dir(request, qwen_dir, llama_dir, qwen3_dirs):
    return {
        "qwen": qwen_dir,
        "llama": llama_dir,
        "qwen3": qwen3_dirs[False],
        "qwen3_tied": qwen3_dirs[True],
    }[request.param]


def hf_logits(path, tokens, mask):
    hf = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    with torch.no_grad():
        return hf(
            input_ids=torch.tensor(tokens, dtype=torch.long),
            attention_mask=torch.tensor(mask, dtype=torch.long),
        ).logits.numpy()


def batch(seed=0, lengths=(12, 7, 3, 12), vocab=96):
    return tiny_models.left_padded_batch(np.random.RandomState(seed), lengths, vocab)


@pytest.mark.parametrize(
    "model_dir", ["qwen", "llama", "qwen3", "qwen3_tied"], indirect=True, ids=str
)
def test_logit_parity_left_padded(model_dir):
    model = models.load_hf(model_dir, dtype="float32")
    cfg = model.config
    if cfg.model_type == "qwen2":
        assert cfg.qkv_bias and cfg.tie_word_embeddings and "lm_head" not in model.params()
        assert float(jnp.abs(model.params()["layers"]["bq"]).max()) > 0.01
    elif cfg.model_type == "qwen3":
        assert cfg.qk_norm and not cfg.qkv_bias and not cfg.o_bias
        assert cfg.head_dim * cfg.num_heads != cfg.hidden_size  # Dh set apart from D / H
        assert ("lm_head" in model.params()) != cfg.tie_word_embeddings
        gain = model.params()["layers"]["q_norm"]  # [layers, Dh], randomised around 1
        assert gain.shape == (cfg.num_layers, cfg.head_dim)
        assert float(jnp.abs(gain - 1).max()) > 0.05
    else:
        assert cfg.rope_scaling_dict["rope_type"] == "llama3" and not cfg.tie_word_embeddings
    tokens, mask = batch()
    ours = np.asarray(models.logits(model, tokens, mask))
    ref = hf_logits(model_dir, tokens, mask)
    assert ours.dtype == np.float32 and ours.shape == ref.shape
    valid = mask.astype(bool)
    assert np.abs(ours - ref)[valid].max() <= 1e-4
    assert model.config.num_params() == sum(x.size for x in jax.tree.leaves(model.params()))


def test_llama3_rope_scaling_changes_frequencies(llama_dir):
    cfg = models.read_hf_config(llama_dir)
    plain = tfm.rope_inv_freq(cfg.__class__(**{**cfg.__dict__, "rope_scaling": None}))
    scaled = tfm.rope_inv_freq(cfg)
    assert np.allclose(scaled[0], plain[0]) and not np.allclose(scaled, plain)
    from transformers import LlamaConfig
    from transformers.modeling_rope_utils import ROPE_INIT_FUNCTIONS

    hf_cfg = LlamaConfig.from_pretrained(llama_dir)
    ref, _ = ROPE_INIT_FUNCTIONS["llama3"](hf_cfg, "cpu")
    np.testing.assert_allclose(scaled, ref.numpy(), rtol=1e-6)


def test_kv_cache_decode_matches_full_forward(qwen_dir):
    """Prefill a prefix, then decode one token at a time through the same block with the
    engine's cache attention (`engine.decode_layers`): the logits equal the full forward's."""
    from ttrl_jax.rollout import engine

    model = models.load_hf(qwen_dir, dtype="float32")
    params, cfg = model.params(), model.config
    tokens, mask = batch(seed=1, lengths=(10, 6, 10))
    full = np.asarray(models.logits(model, tokens, mask))
    b, n = tokens.shape
    p = 6  # prefill the first p slots, then feed the rest one token at a time
    pos = np.asarray(tfm.positions_from_mask(mask))
    _, kv = tfm.forward(
        params,
        cfg,
        jnp.asarray(tokens[:, None, :p]),
        jnp.asarray(pos[:, None, :p]),
        key_mask=jnp.asarray(mask[:, None, :p], bool),
        return_kv=True,
    )
    per_layer = lambda a: [jnp.swapaxes(a[i, :, 0], 1, 2) for i in range(cfg.num_layers)]
    prefix = {"k": per_layer(kv["k"]), "v": per_layer(kv["v"])}
    prefix["mask"] = jnp.asarray(mask[:, :p], bool)  # [B, P]
    cache = engine.empty_cache(cfg, (b, 1), n - p, jnp.float32, ("batch", None))
    layers = engine.layer_params(params, cfg)
    step = jax.jit(lambda c, t, q, w: engine.decode_layers(params, layers, cfg, t, q, w, c, prefix))
    for t in range(p, n):
        w = np.full((b, 1), t - p, np.int32)
        h, cache = step(cache, jnp.asarray(tokens[:, t : t + 1]), jnp.asarray(pos[:, t : t + 1]), w)
        z = np.asarray(tfm.head_logits(h, tfm.lm_head_weight(params, cfg)))[:, 0]
        rows = mask[:, t].astype(bool)
        assert np.abs(z - full[:, t])[rows].max() <= 1e-4, t


def test_token_logprobs_chunked_equals_full_softmax(llama_dir):
    model = models.load_hf(llama_dir, dtype="float32")
    params, cfg = model.params(), model.config
    tokens, mask = batch(seed=2, lengths=(11, 11))
    hidden, _ = tfm.forward(
        params,
        cfg,
        jnp.asarray(tokens)[:, None],
        tfm.positions_from_mask(jnp.asarray(mask))[:, None],
    )
    targets = np.roll(tokens, -1, axis=1)
    for temp in (1.0, 0.6):
        lp, ent = oracles.token_logprobs(
            params,
            cfg,
            hidden[:, 0],
            jnp.asarray(targets),
            temperature=temp,
            chunk=4,
            with_entropy=True,
        )
        z = np.asarray(models.logits(model, tokens, mask), np.float64) / temp
        logp = (
            z
            - np.log(np.exp(z - z.max(-1, keepdims=True)).sum(-1, keepdims=True))
            - z.max(-1, keepdims=True)
        )
        ref = np.take_along_axis(logp, targets[..., None], -1)[..., 0]
        np.testing.assert_allclose(lp, ref, atol=1e-5)
        np.testing.assert_allclose(ent, -(np.exp(logp) * logp).sum(-1), atol=1e-5)


@pytest.mark.parametrize("model_dir", ["qwen", "llama", "qwen3"], indirect=True, ids=str)
def test_export_roundtrip_transformers(model_dir, tmp_path):
    path = model_dir
    model = models.load_hf(path, dtype="float32")
    out = tmp_path / "export"
    models.save_hf(model, out, max_shard_bytes=20_000)  # force several shards + index
    assert (out / "model.safetensors.index.json").exists()
    saved = json.loads((out / "config.json").read_text())
    assert saved["model_type"] == model.config.model_type
    assert saved["architectures"] == [type(AutoModelForCausalLM.from_pretrained(path)).__name__]
    tokens, mask = batch(seed=3)
    np.testing.assert_allclose(
        hf_logits(str(out), tokens, mask), hf_logits(path, tokens, mask), atol=1e-6
    )
    again = models.load_hf(out, dtype="float32")
    assert again.config == model.config
    for a, b in zip(jax.tree.leaves(model.params()), jax.tree.leaves(again.params())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


def test_bf16_params_fp32_logits(qwen_dir, tmp_path):
    model = models.load_hf(qwen_dir, dtype="bfloat16")
    assert all(x.dtype == jnp.bfloat16 for x in jax.tree.leaves(model.params()))
    tokens, mask = batch(seed=4)
    z = models.logits(model, tokens, mask)
    assert z.dtype == jnp.float32
    ref = hf_logits(qwen_dir, tokens, mask)
    assert np.abs(np.asarray(z) - ref)[mask.astype(bool)].max() < 0.1
    models.save_hf(model, tmp_path / "bf16")
    cfg = json.loads((tmp_path / "bf16" / "config.json").read_text())
    assert cfg["dtype"] == "bfloat16"
    hf = AutoModelForCausalLM.from_pretrained(tmp_path / "bf16")
    assert hf.model.embed_tokens.weight.dtype == torch.bfloat16


def test_sharded_forward_equals_single_device(qwen_dir):
    assert jax.device_count() == 8
    tokens, mask = batch(seed=5, lengths=(12, 7, 3, 12, 9, 1, 12, 5))
    single = np.asarray(models.logits(models.load_hf(qwen_dir, dtype="float32"), tokens, mask))
    mesh = sharding.make_mesh(data=4, fsdp=1, tensor=2)
    model = models.load_hf(qwen_dir, dtype="float32", mesh=mesh)
    wq = model.params()["layers"]["wq"]
    assert wq.sharding.spec == jax.sharding.PartitionSpec(None, None, "tensor")
    with jax.set_mesh(mesh):
        tok, msk = sharding.shard_batch((tokens, mask), mesh)
        assert tok.sharding.spec[0] == ("data", "fsdp") or tok.sharding.spec[0] == "data"
        sharded = np.asarray(models.logits(model, tok, msk))
    np.testing.assert_allclose(sharded, single, atol=1e-5)
    fsdp = sharding.make_mesh(data=2, fsdp=2, tensor=2)
    model = models.load_hf(qwen_dir, dtype="float32", mesh=fsdp)
    with jax.set_mesh(fsdp):
        tok, msk = sharding.shard_batch((tokens, mask), fsdp)
        np.testing.assert_allclose(np.asarray(models.logits(model, tok, msk)), single, atol=1e-5)


def test_mesh_uses_auto_axes():
    mesh = sharding.make_mesh(data=-1, tensor=2)
    assert mesh.shape == {"data": 4, "fsdp": 1, "tensor": 2}
    assert all(t == jax.sharding.AxisType.Auto for t in mesh.axis_types)
    with pytest.raises(ValueError, match="does not divide"):
        sharding.make_mesh(data=-1, tensor=3)
    # a dimension the mesh axis does not divide is replicated instead of failing
    spec = sharding.spec_for((3, 8), ("vocab", "embed"), mesh)
    assert spec == jax.sharding.PartitionSpec()


def test_transformers4_and_5_config_layouts_agree(qwen_dir):
    v5 = json.loads(open(os.path.join(qwen_dir, "config.json")).read())
    v4 = dict(v5)
    rope = v4.pop("rope_parameters")
    v4["rope_theta"] = rope["rope_theta"]
    assert config_from_hf(v4) == config_from_hf(v5)
    l5 = {
        **v5,
        "model_type": "llama",
        "rope_parameters": {
            "rope_type": "llama3",
            "rope_theta": 5e5,
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    }
    l4 = {
        **v5,
        "model_type": "llama",
        "rope_theta": 5e5,
        "rope_scaling": {
            "type": "llama3",
            "factor": 8.0,
            "low_freq_factor": 1.0,
            "high_freq_factor": 4.0,
            "original_max_position_embeddings": 64,
        },
    }
    l4.pop("rope_parameters")
    assert config_from_hf(l4) == config_from_hf(l5)
    assert config_from_hf(l5).rope_theta == 5e5


def test_bad_inputs_give_clear_errors(qwen_dir, tmp_path):
    with pytest.raises(FileNotFoundError, match="model directory not found"):
        models.load_hf(tmp_path / "nope")
    broken = tmp_path / "broken"
    shutil.copytree(qwen_dir, broken)
    (broken / "config.json").write_text("{not json")
    with pytest.raises(ConfigError, match=r"config.json: malformed JSON"):
        models.load_hf(broken)
    cfg = json.loads(open(os.path.join(qwen_dir, "config.json")).read())
    (broken / "config.json").write_text(json.dumps({**cfg, "model_type": "gpt2"}))
    with pytest.raises(ConfigError, match="unsupported model_type 'gpt2'"):
        models.load_hf(broken)
    del cfg["hidden_size"]
    (broken / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(ConfigError, match="missing key 'hidden_size'"):
        models.load_hf(broken)
    # a checkpoint without one tensor
    shutil.rmtree(broken)
    shutil.copytree(qwen_dir, broken)
    from ttrl_jax.models.safetensors_io import SafetensorsFile, write_file

    f = SafetensorsFile(str(broken / "model.safetensors"))
    kept = [(n, np.array(f.get(n))) for n in f.keys() if n != "model.layers.1.mlp.up_proj.weight"]
    write_file(str(broken / "model.safetensors"), kept)
    with pytest.raises(
        models.CheckpointError, match=r"missing tensor 'model.layers.1.mlp.up_proj.weight'"
    ):
        models.load_hf(broken)
    os.remove(broken / "model.safetensors")
    with pytest.raises(models.CheckpointError, match="no \\*.safetensors"):
        models.load_hf(broken)
    with pytest.raises(ValueError, match="unsupported dtype"):
        models.load_hf(qwen_dir, dtype="int8")


def test_tokenizer_chat_template_and_stop_ids(tmp_path):
    from transformers import AutoTokenizer

    from ttrl_jax.data.padding import left_pad
    from ttrl_jax.models.tokenizer import load_tokenizer

    path, _ = tiny_models.make_tokenizer(tmp_path / "tok")
    (tmp_path / "tok" / "generation_config.json").write_text(json.dumps({"eos_token_id": [1, 3]}))
    info = load_tokenizer(path)
    hf = AutoTokenizer.from_pretrained(path)
    system = "Please reason step by step, and put your final answer within \\boxed{}."
    msgs = [{"role": "system", "content": system}, {"role": "user", "content": "What is 12 + 7 ?"}]
    assert info.chat_prompt("What is 12 + 7 ?", system) == hf.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True
    )
    im_end = hf.convert_tokens_to_ids("<|im_end|>")
    assert info.eos_ids[0] == im_end and set(info.eos_ids) == {im_end, 1, 3}
    assert info.pad_id == hf.convert_tokens_to_ids("<|pad|>")
    ids = info.encode(["What is 12 + 7 ?", "19"])
    assert info.decode(ids[0]) == "What is 12 + 7 ?"
    tokens, mask = left_pad(ids, info.pad_id, length=16)
    assert tokens.shape == (2, 16) and mask[1].sum() == len(ids[1]) and mask[1, -1] == 1
    with pytest.raises(FileNotFoundError):
        load_tokenizer(tmp_path / "missing")


def test_qwen3_thinking_switch_and_stop_ids(tmp_path):
    """Qwen3's chat-template switch reaches the prompts (trainer and evaluation build
    them with `build_prompts`): off opens the answer with an empty think block, on (the
    default) renders as a template without the switch; Qwen3's generation config stops
    at <|im_end|> and <|endoftext|>."""
    from transformers import AutoTokenizer

    from ttrl_jax.data import build_prompts
    from ttrl_jax.models.tokenizer import load_tokenizer

    path, _ = tiny_models.make_tokenizer(
        tmp_path / "tok", chat_template=tiny_models.THINKING_TEMPLATE
    )
    plain, _ = tiny_models.make_tokenizer(tmp_path / "plain")
    hf = AutoTokenizer.from_pretrained(path)
    eos = [hf.convert_tokens_to_ids(t) for t in ("<|im_end|>", "<|endoftext|>")]
    (tmp_path / "tok" / "generation_config.json").write_text(json.dumps({"eos_token_id": eos}))
    info = load_tokenizer(path)
    assert set(info.eos_ids) == set(eos)
    records = [
        {"problem": "What is 12 + 7 ?", "id": "a"},
        {"problem": "What is 1 + 2 ?", "id": "b"},
    ]
    on = build_prompts(records, info.tokenizer, max_prompt_tokens=64, suffix="Box it.")
    off = build_prompts(
        records, info.tokenizer, max_prompt_tokens=64, suffix="Box it.", enable_thinking=False
    )
    same = build_prompts(
        records, load_tokenizer(plain).tokenizer, max_prompt_tokens=64, suffix="Box it."
    )
    for a, b, c in zip(on.texts, off.texts, same.texts):
        assert a == c and a.endswith("<|im_start|>assistant\n")
        assert b == a + "<think>\n\n</think>\n\n"
    assert [len(t) for t in off.token_ids] > [len(t) for t in on.token_ids]
    msgs = [{"role": "user", "content": "What is 12 + 7 ?"}]
    assert info.chat_prompt("What is 12 + 7 ?", enable_thinking=False) == hf.apply_chat_template(
        msgs, tokenize=False, add_generation_prompt=True, enable_thinking=False
    )


def test_qwen3_config_fields_and_sliding_window_refused(qwen3_dirs):
    with open(os.path.join(qwen3_dirs[False], "config.json")) as f:
        raw = json.load(f)
    cfg = config_from_hf(raw)
    assert cfg.model_type == "qwen3" and cfg.qk_norm and cfg.head_dim == 16
    assert not (cfg.qkv_bias or cfg.o_bias)
    biased = config_from_hf({**raw, "attention_bias": True})
    assert biased.qkv_bias and biased.o_bias
    for bad in (
        {"use_sliding_window": True},
        {"layer_types": ["full_attention", "sliding_attention"]},
    ):
        with pytest.raises(ConfigError, match="sliding-window"):
            config_from_hf({**raw, **bad})
