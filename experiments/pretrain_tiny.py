"""Builds the demo's base model: a tokenizer and a tiny Qwen2 trained on noisy traces.

Usage::

    python -m experiments.pretrain_tiny --out /tmp/tiny --seed 0 [--preset demo|ci]

Everything is reproducible from ``--seed``: the tokenizer (its BPE merges are learned
from a fixed corpus, so it is the same for every seed), the training corpus
(`ttrl_jax.data.synthetic`: noisy traces, test problems excluded), the
initialisation and the batch order. The output directory is an ordinary HF checkpoint
-- ``config.json``, ``model.safetensors``, ``tokenizer.json`` with a Qwen-style chat
template, ``generation_config.json`` -- that `ttrl_jax.models.load_hf` and
``transformers.AutoModelForCausalLM`` both load, plus ``pretrain_info.json`` (preset,
task spec, seed, parameter count, loss, wall time). `load_or_build` reuses a cached
build with the same settings.

Measured on the 2-core CPU (256 test problems, 16 samples):

=========  ======  ===========  ======  =====  ======  =====  ========
preset     params  pretraining  pass@1  maj@16  greedy  T=0.3  seed
=========  ======  ===========  ======  =====  ======  =====  ========
demo       778K    100-190 s    0.38    0.68    0.00    0.18   0
demo       778K    110 s        0.43    0.71    0.03    0.26   1
ci (5 d.)  335K    20-40 s      0.39    0.59    0.03    0.23   0
=========  ======  ===========  ======  =====  ======  =====  ========

(Pretraining time depends on how busy the shared machine is. The ci row is on 64
problems; with 4 digits the careless path is right too often and TTRL reinforced it,
so the ci preset uses 5.)

Training is plain supervised next-token prediction in JAX with this project's
decoder: fixed-length right-padded batches of chat-formatted traces, cross-entropy
on the assistant tokens only (its closing ``<|im_end|>`` included), optax AdamW with
warm-up and cosine decay, one jitted step.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from ttrl_jax.data import synthetic
from ttrl_jax.models import transformer as tfm
from ttrl_jax.models.checkpoint_hf import save_params
from ttrl_jax.models.config import ModelConfig, config_from_hf

EOT, IM_START, IM_END, PAD = "<|endoftext|>", "<|im_start|>", "<|im_end|>", "<|pad|>"
SPECIAL_TOKENS = (EOT, IM_START, IM_END, PAD)
# The pre-tokenizer of Qwen2's tokenizer (digits are single tokens). transformers 5
# rebuilds any `model_type: qwen2` directory's tokenizer as `Qwen2Tokenizer` (this
# regex + byte-level BPE over tokenizer.json's vocab and merges), so the tokenizer is
# built with exactly that pipeline: then both loaders produce the same ids.
QWEN2_PRETOKENIZE_REGEX = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)
# Extra text the BPE merges are learned from, besides chat-formatted traces: the
# system role and SRT's instruction.
EXTRA_TEXT = (
    "<|im_start|>system\nYou are a helpful assistant.<|im_end|>\n",
    "Let's think step by step and output the final answer within \\boxed{}.",
)
TOKENIZER_CORPUS_SIZE = 512
CHAT_TEMPLATE = (
    "{%- for message in messages -%}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{ '<|im_start|>assistant\\n' }}{%- endif -%}"
)
INFO_FILE = "pretrain_info.json"
# Test problems never put in the corpus: the first EXCLUDED_TEST of the test seed's
# set, so any test set of at most this size (same seed) is unseen by the base model.
EXCLUDED_TEST = 1024


@dataclasses.dataclass(frozen=True)
class Preset:
    """Model size and training budget.

    Attributes:
        task: The synthetic task and the noise of its traces.
        hidden_size, intermediate_size, num_layers, num_heads, num_kv_heads: the
            Qwen2 shape (head_dim = hidden_size / num_heads).
        steps: Optimizer steps.
        batch_size: Traces per step.
        learning_rate: Peak AdamW learning rate.
        warmup_steps: Linear warm-up steps, then cosine decay to 10% of the peak.
        weight_decay: AdamW weight decay.
    """

    task: synthetic.TaskSpec
    hidden_size: int
    intermediate_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    steps: int
    batch_size: int
    learning_rate: float
    warmup_steps: int = 50
    weight_decay: float = 0.01

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["task"] = self.task.to_dict()
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Preset:
        return cls(**{**d, "task": synthetic.TaskSpec(**d["task"])})


PRESETS = {
    # ~0.78M parameters, ~2.5 min on 2 CPU cores.
    "demo": Preset(
        task=synthetic.TaskSpec(num_digits=6, p_left=0.62, drop_carry=0.6, slip=0.02),
        hidden_size=128,
        intermediate_size=512,
        num_layers=3,
        num_heads=4,
        num_kv_heads=2,
        steps=600,
        batch_size=32,
        learning_rate=3e-3,
    ),
    # ~0.34M parameters, ~25 s: for CI tests that only need the direction of the effect.
    "ci": Preset(
        task=synthetic.TaskSpec(num_digits=5, p_left=0.62, drop_carry=0.6, slip=0.02),
        hidden_size=128,
        intermediate_size=256,
        num_layers=2,
        num_heads=4,
        num_kv_heads=2,
        steps=500,
        batch_size=16,
        # 3e-3 sat on an edge: whether the loss fell from ~0.25 to ~0.07 (learning the
        # carries) within 500 steps flipped with the seed or a last-bit change in the
        # gradients; 2e-3 got there for each of seeds 0-5 (final loss 0.066-0.074).
        learning_rate=2e-3,
        warmup_steps=30,
    ),
}


# --------------------------------------------------------------------------- tokenizer


def build_tokenizer(max_vocab: int = 320):
    """A small byte-level BPE tokenizer with a Qwen-style chat template, built from scratch.

    The pipeline is Qwen2's (NFC, the Qwen2 split regex, byte-level BPE, byte-level
    decoder), so any text round-trips, digits are single tokens, and
    ``AutoTokenizer`` -- which rebuilds a qwen2 directory's tokenizer as
    ``Qwen2Tokenizer`` -- gives the same ids. The merges are learned with
    ``tokenizers``' BPE trainer from a fixed corpus (clean traces of a fixed seed,
    chat-formatted, plus `EXTRA_TEXT`), so the result never depends on the run's
    seed. Special tokens: ``<|endoftext|>``, ``<|im_start|>``, ``<|im_end|>`` (EOS)
    and ``<|pad|>``.

    Args:
        max_vocab: Upper bound on the vocabulary (bytes + merges + specials).

    Returns:
        A ``transformers.PreTrainedTokenizerFast``.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token=None, fuse_unk=False, byte_fallback=False))
    tok.normalizer = normalizers.NFC()
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_PRETOKENIZE_REGEX), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=max_vocab,
        min_frequency=2,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(_tokenizer_corpus(), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token=IM_END,
        pad_token=PAD,
        unk_token=None,
        clean_up_tokenization_spaces=False,
        model_max_length=512,
    )
    fast.chat_template = CHAT_TEMPLATE
    return fast


def _tokenizer_corpus() -> list[str]:
    """Chat-formatted clean traces of a fixed seed, for learning the BPE merges."""
    from jinja2 import Template

    template = Template(CHAT_TEMPLATE)
    texts = list(EXTRA_TEXT)
    for i, record in enumerate(synthetic.make_test_set(TOKENIZER_CORPUS_SIZE, seed=12345)):
        digits = synthetic.parse_problem(record["problem"])
        order = synthetic.LEFT if i % 2 == 0 else synthetic.RIGHT
        messages = [{"role": "user", "content": record["problem"]}]
        prompt = template.render(messages=messages, add_generation_prompt=True)
        texts.append(prompt + synthetic.clean_trace(digits, order) + IM_END)
    return texts


def save_tokenizer(tokenizer, path: str) -> None:
    """Writes the tokenizer files and a ``generation_config.json`` (EOS = ``<|im_end|>``)."""
    from transformers import GenerationConfig

    tokenizer.save_pretrained(path)
    GenerationConfig(
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
        do_sample=True,
        temperature=1.0,
    ).save_pretrained(path)


# ------------------------------------------------------------------------------ model


def model_config(preset: Preset, tokenizer) -> ModelConfig:
    """The Qwen2 config (``transformers.Qwen2Config``, tied embeddings) as a `ModelConfig`."""
    from transformers import Qwen2Config

    hf = Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=preset.hidden_size,
        intermediate_size=preset.intermediate_size,
        num_hidden_layers=preset.num_layers,
        num_attention_heads=preset.num_heads,
        num_key_value_heads=preset.num_kv_heads,
        max_position_embeddings=256,
        tie_word_embeddings=True,
        rope_theta=10000.0,
        eos_token_id=tokenizer.convert_tokens_to_ids(IM_END),
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=None,
    )
    return config_from_hf(hf.to_dict(), where="pretrain_tiny")


def chat_prompt(tokenizer, problem: str) -> str:
    """The chat-templated prompt of one problem (ends with the assistant header)."""
    messages = [{"role": "user", "content": problem}]
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)


def encode_corpus(records, tokenizer, seq_len: int | None = None):
    """Tokenizes chat-formatted traces into fixed-length right-padded arrays.

    Each row is ``prompt + completion + <|im_end|>``; ``loss_mask`` is 1 on the
    tokens after the prompt (the targets the model learns), ``key_mask`` on every
    real token.

    Args:
        records: Records with ``problem`` and ``completion``.
        tokenizer: The tokenizer (`build_tokenizer`).
        seq_len: Row length (default: the longest row, rounded up to 8).

    Returns:
        ``(tokens, loss_mask, key_mask)``, int32 / bool / bool ``[N, L]``.
    """
    prompts = [chat_prompt(tokenizer, r["problem"]) for r in records]
    completions = [r["completion"] + IM_END for r in records]
    p_ids = tokenizer(prompts, add_special_tokens=False)["input_ids"]
    c_ids = tokenizer(completions, add_special_tokens=False)["input_ids"]
    longest = max(len(p) + len(c) for p, c in zip(p_ids, c_ids))
    seq_len = seq_len or -(-longest // 8) * 8
    if longest > seq_len:
        raise ValueError(f"a trace has {longest} tokens, more than seq_len={seq_len}")
    n = len(records)
    tokens = np.full((n, seq_len), tokenizer.pad_token_id, np.int32)
    loss_mask = np.zeros((n, seq_len), bool)
    key_mask = np.zeros((n, seq_len), bool)
    for i, (p, c) in enumerate(zip(p_ids, c_ids)):
        tokens[i, : len(p) + len(c)] = p + c
        loss_mask[i, len(p) : len(p) + len(c)] = True
        key_mask[i, : len(p) + len(c)] = True
    return tokens, loss_mask, key_mask


def lm_loss(params, cfg: ModelConfig, tokens, loss_mask, key_mask):
    """Mean next-token cross-entropy over the assistant tokens.

    loss = -sum_{b,t} m[b,t+1] log p(x[b,t+1] | x[b,<=t]) / sum m, with m the loss mask.
    """
    positions = tfm.positions_from_mask(key_mask)
    # unroll=True: the few layers unrolled run about 2x faster on CPU than a scan
    hidden, _ = tfm.forward(
        params, cfg, tokens[:, None], positions[:, None], key_mask=key_mask[:, None], unroll=True
    )
    logits = tfm.head_logits(hidden[:, 0, :-1], tfm.lm_head_weight(params, cfg))  # [B, L-1, V]
    logp = jax.nn.log_softmax(logits, axis=-1)
    target_logp = jnp.take_along_axis(logp, tokens[:, 1:, None], axis=-1)[..., 0]  # [B, L-1]
    mask = loss_mask[:, 1:].astype(jnp.float32)
    return -jnp.sum(target_logp * mask) / jnp.maximum(jnp.sum(mask), 1.0)


def make_optimizer(preset: Preset) -> optax.GradientTransformation:
    """AdamW with gradient clipping, linear warm-up and cosine decay to 10%."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        preset.learning_rate,
        min(preset.warmup_steps, max(preset.steps - 1, 1)),
        max(preset.steps, 2),
        end_value=0.1 * preset.learning_rate,
    )
    return optax.chain(
        optax.clip_by_global_norm(1.0),
        optax.adamw(schedule, b1=0.9, b2=0.98, weight_decay=preset.weight_decay),
    )


def train(params, cfg: ModelConfig, preset: Preset, arrays, seed: int, log_every: int = 50):
    """Runs ``preset.steps`` AdamW steps over shuffled fixed-length batches.

    Args:
        params: Initial parameters.
        cfg: Model config.
        preset: Budget and optimizer settings.
        arrays: ``(tokens, loss_mask, key_mask)`` from `encode_corpus`.
        seed: Seed of the batch order.
        log_every: Print the loss every this many steps (0: never).

    Returns:
        ``(params, losses)`` with the loss of every step.
    """
    opt = make_optimizer(preset)

    @jax.jit
    def step(params, opt_state, tokens, loss_mask, key_mask):
        loss, grads = jax.value_and_grad(lm_loss)(params, cfg, tokens, loss_mask, key_mask)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    opt_state = opt.init(params)
    rng = np.random.default_rng([seed, 7])
    n, b = arrays[0].shape[0], preset.batch_size
    order = rng.permutation(n)
    losses = []
    for i in range(preset.steps):
        start = (i * b) % n
        if start + b > n:  # a new epoch: reshuffle
            order, start = rng.permutation(n), 0
        idx = order[start : start + b]
        params, opt_state, loss = step(params, opt_state, *(a[idx] for a in arrays))
        losses.append(loss)
        if log_every and (i + 1) % log_every == 0:
            print(f"step {i + 1}/{preset.steps} loss {float(loss):.4f}", flush=True)
    return params, [float(x) for x in losses]


def build(
    out: str,
    preset: Preset | str = "demo",
    seed: int = 0,
    test_seed: int = 0,
    log_every: int = 50,
    name: str | None = None,
) -> dict[str, Any]:
    """Builds the tokenizer and the base model and writes them to ``out``.

    Args:
        out: Output directory (created; existing model files are replaced).
        preset: A `Preset` or a name in `PRESETS`.
        seed: Seed of the corpus, the initialisation and the batch order.
        test_seed: Seed of the test set whose first `EXCLUDED_TEST` problems are kept
            out of the corpus.
        log_every: Loss print interval (0: quiet).
        name: The preset's name in the info file (default: ``preset`` if it is a
            name, else ``"custom"``).

    Returns:
        The info dict also written to ``out/pretrain_info.json``.
    """
    start = time.time()
    preset_name = name or (preset if isinstance(preset, str) else "custom")
    preset = PRESETS[preset] if isinstance(preset, str) else preset
    tokenizer = build_tokenizer()
    cfg = model_config(preset, tokenizer)
    held_out = [
        r["problem"] for r in synthetic.make_test_set(EXCLUDED_TEST, test_seed, preset.task)
    ]
    corpus = synthetic.make_train_corpus(
        preset.steps * preset.batch_size, seed, preset.task, exclude=held_out
    )
    arrays = encode_corpus(corpus, tokenizer)
    params = tfm.init_params(cfg, jax.random.key(seed))
    params, losses = train(params, cfg, preset, arrays, seed, log_every)
    os.makedirs(out, exist_ok=True)
    save_tokenizer(tokenizer, out)
    save_params(params, cfg, out)
    info = {
        "preset": preset_name,
        "config": preset.to_dict(),
        "seed": seed,
        "test_seed": test_seed,
        "excluded_test_problems": EXCLUDED_TEST,
        "num_params": cfg.num_params(),
        "vocab_size": cfg.vocab_size,
        "seq_len": int(arrays[0].shape[1]),
        "train_traces": len(corpus),
        "final_loss": float(np.mean(losses[-20:])),
        "wall_seconds": round(time.time() - start, 1),
    }
    with open(os.path.join(out, INFO_FILE), "w", encoding="utf-8") as f:
        json.dump(info, f, indent=2)
    return info


def read_info(path: str) -> dict[str, Any]:
    """Reads ``pretrain_info.json`` of a built model directory (with the `Preset` rebuilt)."""
    with open(os.path.join(path, INFO_FILE), encoding="utf-8") as f:
        info = json.load(f)
    info["preset_obj"] = Preset.from_dict(info["config"])
    return info


def load_or_build(
    out: str, preset: Preset | str = "demo", seed: int = 0, test_seed: int = 0, log_every: int = 50
) -> dict[str, Any]:
    """Returns the info of the model in ``out``, building it first unless it is cached.

    The cache is valid when ``out/pretrain_info.json`` records the same preset
    settings, seed and test seed (and the model files are there).
    """
    preset_obj = PRESETS[preset] if isinstance(preset, str) else preset
    try:
        info = read_info(out)
        if (
            info["preset_obj"] == preset_obj
            and (info["seed"], info["test_seed"]) == (seed, test_seed)
            and os.path.isfile(os.path.join(out, "model.safetensors"))
        ):
            return info
    except (OSError, ValueError, KeyError, TypeError):
        pass
    build(out, preset, seed=seed, test_seed=test_seed, log_every=log_every)
    return read_info(out)


def main(argv) -> int:
    from absl import flags

    del argv
    f = flags.FLAGS
    preset = PRESETS[f.preset]
    overrides = {
        k: getattr(f, k) for k in ("steps", "batch_size", "learning_rate") if getattr(f, k)
    }
    preset = dataclasses.replace(preset, **overrides)
    name = f.preset + (" (overridden)" if overrides else "")
    info = build(f.out, preset, seed=f.seed, test_seed=f.test_seed, name=name)
    print(json.dumps(info, indent=2))
    return 0


def _define_flags() -> None:
    from absl import flags

    flags.DEFINE_string("out", None, "Output directory (HF checkpoint + tokenizer).", required=True)
    flags.DEFINE_enum("preset", "demo", sorted(PRESETS), "Model size and training budget.")
    flags.DEFINE_integer("seed", 0, "Seed of corpus, initialisation and batch order.")
    flags.DEFINE_integer("test_seed", 0, "Seed of the test set kept out of the corpus.")
    flags.DEFINE_integer("steps", None, "Override the preset's optimizer steps.")
    flags.DEFINE_integer("batch_size", None, "Override the preset's batch size.")
    flags.DEFINE_float("learning_rate", None, "Override the preset's peak learning rate.")


if __name__ == "__main__":
    from absl import app

    _define_flags()
    sys.exit(app.run(main))
