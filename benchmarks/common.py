"""Shared helpers of the benchmark scripts: machine/version banner, timing, tables, models.

Every script prints `banner()` first so a table can always be traced to the machine,
the load on it and the library versions that produced it.
"""

from __future__ import annotations

import importlib.metadata
import math
import os
import platform
import sys
import time
from collections.abc import Callable, Sequence

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# The rollout / RL-step workload of the issues: a tiny random Qwen2 (~11M params).
TINY_QWEN2 = dict(vocab=32000, hidden=256, layers=4, heads=4, kv_heads=2, inter=704)
SMOKE_QWEN2 = dict(vocab=512, hidden=64, layers=2, heads=4, kv_heads=2, inter=128)
# Qwen2.5-Math-1.5B's shape (real vocabulary, 128-wide heads), random weights: for GPU runs
QWEN2P5_MATH_1P5B = dict(vocab=151936, hidden=1536, layers=28, heads=12, kv_heads=2, inter=8960)

_PACKAGES = ("jax", "jaxlib", "flax", "optax", "transformers", "torch", "trl", "math-verify")


def versions(packages: Sequence[str] = _PACKAGES) -> dict[str, str]:
    """Installed versions of ``packages`` (missing ones are left out)."""
    out = {}
    for p in packages:
        try:
            out[p] = importlib.metadata.version(p)
        except importlib.metadata.PackageNotFoundError:
            pass
    return out


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def banner(title: str) -> str:
    """One block naming the benchmark, date, machine, load and versions; also printed."""
    v = ", ".join(f"{k} {x}" for k, x in versions().items())
    text = (
        f"== {title} ==\n"
        f"date {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}; {cpu_model()}, "
        f"{os.cpu_count()} CPUs; load average {os.getloadavg()[0]:.2f}; "
        f"python {platform.python_version()}\n{v}"
    )
    print(text, flush=True)
    return text


def timed(fn: Callable[[], object], repeats: int, warmup: int = 1) -> float:
    """Best wall time (s) of ``repeats`` calls after ``warmup`` untimed (compile) calls.

    The minimum, not the median: on a shared machine other processes only ever add time.
    """
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeats)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.min(times))


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A Markdown table (floats with 3 significant digits); also printed."""

    def fmt(x):
        if isinstance(x, float):
            return f"{x:.3g}" if abs(x) < 1e3 else f"{x:,.0f}"
        return str(x)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(x) for x in r) + " |" for r in rows]
    text = "\n".join(lines)
    print(text, flush=True)
    return text


def write_qwen2(path: str, vocab, hidden, layers, heads, kv_heads, inter, dtype="float32"):
    """A random Qwen2 checkpoint written by `transformers.save_pretrained` (seeded)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(0)
    cfg = Qwen2Config(
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        tie_word_embeddings=True,
        eos_token_id=1,
        pad_token_id=0,
        bos_token_id=None,
        max_position_embeddings=4096,
    )
    Qwen2ForCausalLM(cfg).to(getattr(torch, dtype)).save_pretrained(path)


def random_qwen2(vocab, hidden, layers, heads, kv_heads, inter, dtype="bfloat16", seed=0):
    """A random Qwen2 (tied embeddings, qkv biases, N(0, 0.02^2) weights) built in JAX on
    the default device, with no checkpoint on disk: for shapes too large to write with
    `transformers` in a benchmark's time (`QWEN2P5_MATH_1P5B`)."""
    import jax.numpy as jnp

    from ttrl_jax.models.config import ModelConfig
    from ttrl_jax.models.model import Transformer

    cfg = ModelConfig(
        model_type="qwen2",
        vocab_size=vocab,
        hidden_size=hidden,
        intermediate_size=inter,
        num_layers=layers,
        num_heads=heads,
        num_kv_heads=kv_heads,
        head_dim=hidden // heads,
        tie_word_embeddings=True,
        qkv_bias=True,
        max_position_embeddings=4096,
    )
    return Transformer.random(cfg, seed, jnp.dtype(dtype))


def write_random_qwen2(path: str, dtype="bfloat16", **dims) -> None:
    """`random_qwen2` written as an HF checkpoint with this library's own exporter (no
    torch), for scripts that load their model from a directory."""
    from ttrl_jax import models

    models.save_hf(random_qwen2(**dims, dtype=dtype), path)


def peak_rss_gib() -> float:
    """Peak resident memory of this process so far (GiB)."""
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def write_tokenizer(path: str, vocab: int) -> int:
    """A real byte-level BPE tokenizer on disk with exactly ``vocab`` ids (Qwen-style chat).

    Ids 0-3 are ``<|pad|> <|endoftext|> <|im_start|> <|im_end|>``, then the 256 byte
    symbols, then whole tokens (`` 0`` .. `` 9999``, short lower-case words, bare numbers)
    up to ``vocab``, so every id a model of that vocabulary samples decodes to text, and
    random samples read as numbers and words (answers can be extracted and voted on).
    Prompts are encoded byte by byte (no merges). Returns ``vocab``.
    """
    import itertools
    import string

    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    special = ["<|pad|>", "<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    alphabet = sorted(pre_tokenizers.ByteLevel.alphabet())
    words = [f"\u0120{n}" for n in range(10000)]
    for k in (2, 3):
        words += [
            "\u0120" + "".join(w) for w in itertools.product(string.ascii_lowercase, repeat=k)
        ]
    words += [str(n) for n in range(10, 10**6)]
    tokens = special + alphabet
    tokens += words[: vocab - len(tokens)]
    if len(tokens) != vocab:
        raise ValueError(f"vocab {vocab} is smaller than the {len(special) + 256} base symbols")
    tok = Tokenizer(models.BPE(vocab={t: i for i, t in enumerate(tokens)}, merges=[]))
    tok.add_special_tokens(special)
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|pad|>"
    )
    fast.chat_template = (
        "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n"
        "{% endfor %}{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    )
    fast.save_pretrained(path)
    return len(fast)


def matmul_peak(dtype: str, n: int, repeats: int) -> float:
    """GFLOP/s of an n^3 matmul (bf16 inputs accumulate in fp32)."""
    import jax
    import jax.numpy as jnp

    dt = jnp.dtype(dtype)
    a = jax.random.normal(jax.random.key(0), (n, n), jnp.float32).astype(dt)
    f = jax.jit(lambda x: jnp.matmul(x, x, preferred_element_type=jnp.float32))
    t = timed(lambda: f(a).block_until_ready(), repeats)
    return 2 * n**3 / t / 1e9


def length_law(n: int, t_max: int, median: float, clipped: float, seed: int):
    """``n`` lengths from a lognormal (median ``median``, P(L > t_max) = ``clipped``),
    rounded up and clipped to ``[1, t_max]``; returns (lengths, mu, sigma)."""
    from statistics import NormalDist

    mu = math.log(median)
    sigma = math.log(t_max / median) / NormalDist().inv_cdf(1.0 - clipped)
    raw = np.random.RandomState(seed).lognormal(mu, sigma, n)
    return np.clip(np.ceil(raw), 1, t_max).astype(np.int32), mu, sigma
