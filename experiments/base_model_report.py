"""Base-model report: pass@1, greedy, T=0.3 and maj@16 side by side on the test set.

Usage::

    python -m experiments.base_model_report --model_dir /tmp/tiny [--num_test 256]

The test set is rebuilt from the model directory's ``pretrain_info.json`` (task spec
and test seed). Sampling goes through the project's jitted sampler
(`ttrl_jax.rollout.sampling.sample`: prefill each prompt once, decode M samples), answers
are the last ``\\boxed{}`` (`ttrl_jax.rewards.answers.extract_math_answer`), compared
to the gold answer as integers. Metrics (all means over problems):

* ``pass@1``: mean accuracy of ``k`` samples at temperature 1;
* ``maj@k``: accuracy of the most frequent answer among those ``k`` samples
  (ties: the answer sampled first; samples without an answer do not vote);
* ``greedy``: accuracy of greedy decoding;
* ``t0.3``: mean accuracy of ``k`` samples at temperature 0.3;
* ``left_frac``, ``left_acc``, ``right_acc``: at temperature 1, the share of
  samples that add left to right (the careless order) and each order's accuracy.
"""

from __future__ import annotations

import collections
import json
import sys
import time
from collections.abc import Sequence
from typing import Any

import jax
import numpy as np

from ttrl_jax.data import build_prompts, left_pad, synthetic
from ttrl_jax.models import load_hf
from ttrl_jax.models.tokenizer import load_tokenizer
from ttrl_jax.rewards.answers import extract_math_answer
from ttrl_jax.rollout import sampling


def generate(
    model,
    tok,
    records: Sequence[dict[str, Any]],
    *,
    num_samples: int,
    temperature: float,
    key: jax.Array,
    max_new_tokens: int = 64,
    batch_prompts: int = 64,
) -> list[list[str]]:
    """Samples ``num_samples`` completions of every record's problem.

    Args:
        model: A `ttrl_jax.models.Transformer`.
        tok: `ttrl_jax.models.tokenizer.TokenizerInfo`.
        records: Records with ``problem``.
        num_samples: M, completions per problem.
        temperature: Sampling temperature; ``<= 0`` decodes greedily.
        key: PRNG key.
        max_new_tokens: Length limit of a completion.
        batch_prompts: Prompts per sampler call (the last batch is padded with
            repeats, so every call has the same shape and compiles once).

    Returns:
        ``completions[i][m]``, decoded without special tokens.
    """
    prompts = build_prompts(records, tok.tokenizer, max_prompt_tokens=512, on_too_long="error")
    tokens, mask = left_pad(prompts.token_ids, tok.pad_id)
    sp = sampling.sampling_params(temperature=max(temperature, 0.0), greedy=temperature <= 0)
    out: list[list[str]] = []
    for start in range(0, len(records), batch_prompts):
        rows = np.arange(start, start + batch_prompts).clip(max=len(records) - 1)
        roll = sampling.sample(
            model.params(),
            model.config,
            tokens[rows],
            mask[rows],
            jax.random.fold_in(key, start),
            num_samples=num_samples,
            max_new_tokens=max_new_tokens,
            sampling=sp,
            eos_ids=tok.eos_ids,
            pad_id=tok.pad_id,
        )
        toks, lens = np.asarray(roll.tokens), np.asarray(roll.lengths)
        for b in range(min(batch_prompts, len(records) - start)):
            out.append([tok.decode(toks[b, m, : lens[b, m]]) for m in range(num_samples)])
    return out


def _correct(answer: str | None, gold: str) -> bool:
    return answer is not None and answer.strip().isdigit() and int(answer) == int(gold)


def majority(answers: Sequence[str | None]) -> str | None:
    """Most frequent non-empty answer; ties go to the one sampled first."""
    counts = collections.Counter(a for a in answers if a is not None)
    if not counts:
        return None
    top = max(counts.values())
    return next(a for a in answers if a is not None and counts[a] == top)


def score(completions: Sequence[Sequence[str]], golds: Sequence[str]) -> dict[str, float]:
    """Mean accuracy and majority-vote accuracy of ``completions[i][m]``."""
    acc, maj = [], []
    for samples, gold in zip(completions, golds):
        answers = [extract_math_answer(c) for c in samples]
        acc.append(np.mean([_correct(a, gold) for a in answers]))
        maj.append(_correct(majority(answers), gold))
    return {"mean_acc": float(np.mean(acc)), "maj_acc": float(np.mean(maj))}


def order_stats(completions: Sequence[Sequence[str]], golds: Sequence[str]) -> dict[str, float]:
    """Share of left-order samples and the accuracy of each order."""
    hits = {synthetic.LEFT: [], synthetic.RIGHT: []}
    for samples, gold in zip(completions, golds):
        for c in samples:
            order = synthetic.LEFT if c.startswith(synthetic.LEFT) else synthetic.RIGHT
            hits[order].append(_correct(extract_math_answer(c), gold))
    n = sum(len(v) for v in hits.values())
    mean = lambda v: float(np.mean(v)) if v else float("nan")
    return {
        "left_frac": len(hits[synthetic.LEFT]) / max(n, 1),
        "left_acc": mean(hits[synthetic.LEFT]),
        "right_acc": mean(hits[synthetic.RIGHT]),
    }


def evaluate_base(
    model_dir: str,
    records: Sequence[dict[str, Any]] | None = None,
    *,
    num_test: int = 256,
    num_samples: int = 16,
    seed: int = 0,
    max_new_tokens: int = 64,
) -> dict[str, Any]:
    """Measures a built base model: pass@1, maj@k (T=1), greedy and T=0.3 accuracy.

    Args:
        model_dir: A directory written by `experiments.pretrain_tiny.build`.
        records: Test records (default: the first ``num_test`` of the model's test
            set, rebuilt from its ``pretrain_info.json``).
        num_test: Test-set size when ``records`` is None.
        num_samples: k, samples per problem at each temperature.
        seed: Sampling seed.
        max_new_tokens: Completion length limit.

    Returns:
        ``{"pass@1", "maj@k", "greedy", "t0.3", "left_frac", "left_acc",
        "right_acc", "num_test", "seconds"}``.
    """
    from experiments import pretrain_tiny

    start = time.time()
    if records is None:
        info = pretrain_tiny.read_info(model_dir)
        task = info["preset_obj"].task
        records = synthetic.make_test_set(num_test, info["test_seed"], task)
    model = load_hf(model_dir, dtype="float32")
    tok = load_tokenizer(model_dir)
    golds = [r["answer"] for r in records]
    key = jax.random.key(seed)
    kw = {"max_new_tokens": max_new_tokens}
    t1 = generate(model, tok, records, num_samples=num_samples, temperature=1.0, key=key, **kw)
    t03 = generate(
        model, tok, records, num_samples=num_samples, temperature=0.3,
        key=jax.random.fold_in(key, 1), **kw,
    )  # fmt: skip
    greedy = generate(model, tok, records, num_samples=1, temperature=0.0, key=key, **kw)
    s1 = score(t1, golds)
    return {
        "pass@1": s1["mean_acc"],
        f"maj@{num_samples}": s1["maj_acc"],
        "greedy": score(greedy, golds)["mean_acc"],
        "t0.3": score(t03, golds)["mean_acc"],
        **order_stats(t1, golds),
        "num_test": len(records),
        "seconds": round(time.time() - start, 1),
    }


def main(argv) -> int:
    from absl import flags

    del argv
    f = flags.FLAGS
    report = evaluate_base(f.model_dir, num_test=f.num_test, num_samples=f.num_samples, seed=f.seed)
    clean = {
        k: (None if np.isnan(v) else round(v, 4)) if isinstance(v, float) else v
        for k, v in report.items()
    }
    print(json.dumps(clean))
    return 0


if __name__ == "__main__":
    from absl import app, flags

    flags.DEFINE_string("model_dir", None, "A directory built by pretrain_tiny.", required=True)
    flags.DEFINE_integer("num_test", 256, "Test problems.")
    flags.DEFINE_integer("num_samples", 16, "Samples per problem (k of pass@1 / maj@k).")
    flags.DEFINE_integer("seed", 0, "Sampling seed.")
    sys.exit(app.run(main))
