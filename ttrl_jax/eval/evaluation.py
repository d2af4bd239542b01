"""Evaluate a policy the way the papers report it, from an orbax or HF checkpoint.

Protocols (all on one benchmark, every problem):

* sampled: n samples per problem at temperature tau / top-p -> mean@n (TTRL: mean@16 at
  tau = 0.6, top-p 0.95; SRT: mean@32 at tau = 1.0), unbiased pass@k, maj@n with
  semantic voting (`rewards.voting`);
* greedy: one temperature-0 completion per problem -> greedy pass@1 (TTRL v1 protocol).

Outputs: every generation with its extracted answer and grade (JSONL), a summary JSON
and a Markdown table; MATH-500 also gets a per-subject breakdown.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence

import jax
import numpy as np

from ttrl_jax import checkpointing, sharding
from ttrl_jax.data import build_prompts, left_pad
from ttrl_jax.eval import metrics as eval_metrics
from ttrl_jax.models import Transformer, load_hf
from ttrl_jax.models.tokenizer import TokenizerInfo, load_tokenizer
from ttrl_jax.rewards import answers as answers_lib
from ttrl_jax.rewards import consensus, voting
from ttrl_jax.rollout import generate
from ttrl_jax.rollout.generate import RolloutSpec


@dataclasses.dataclass(frozen=True)
class EvalSettings:
    """How to sample for evaluation."""

    n_samples: int = 16
    temperature: float = 0.6
    top_p: float = 0.95
    top_k: int = 0
    max_new_tokens: int = 3072
    greedy: bool = True
    prompts_per_batch: int = 8
    max_prompt_tokens: int = 1024
    prompt_bucket: int = 64
    system_prompt: str = ""
    enable_thinking: bool = True
    suffix: str = ""
    task: str = "math"
    clustering: str = "semantic"
    seed: int = 0
    head_dtype: str = ""  # the sampler's LM-head operand dtype ("": the params')
    decode_slots: int = -1  # decode-engine slots (-1: the default rule, 0: static decoder)
    attn_kernel: str = "auto"  # the engine's own-cache read (auto | xla | pallas)


def find_checkpoint_dir(path: str) -> str | None:
    """The orbax checkpoints folder of a run directory (or the folder itself)."""
    for cand in (os.path.join(path, "checkpoints"), path):
        if os.path.isdir(cand) and any(d.isdigit() for d in os.listdir(cand)):
            return cand
    return None


def load_policy(
    path: str,
    which: str | int = "latest",
    dtype: str | None = None,
    mesh=None,
    model_path: str | None = None,
):
    """Loads a policy from an HF directory or an orbax run / checkpoints directory.

    For orbax, the HF directory in the run's saved config (or ``model_path``) provides
    the architecture and tokenizer; the checkpoint's params replace its weights.

    Returns:
      (model, tokenizer info, description dict with ``source`` and ``step``).
    """
    path = os.fspath(path)
    if os.path.isfile(os.path.join(path, "config.json")) and not find_checkpoint_dir(path):
        model = load_hf(path, dtype=dtype or "float32", mesh=mesh)
        return model, load_tokenizer(path), {"source": path, "step": None}
    ckdir = find_checkpoint_dir(path)
    if ckdir is None:
        raise FileNotFoundError(
            f"{path}: neither an HF model directory nor an orbax run directory with checkpoints"
        )
    ck = checkpointing.Checkpointer(ckdir, read_only=True, best_metric=_best_metric(path))
    if ck.best_metric is None and which == "best":  # given the checkpoints folder itself
        saved = ck.read_meta("latest").get("config", {})
        ck.best_metric = (saved.get("train") or {}).get("best_metric") or None
    meta = ck.read_meta(which)
    cfg = meta.get("config", {})
    hf_dir = model_path or cfg.get("model", {}).get("path")
    if not hf_dir or not os.path.isdir(hf_dir):
        raise FileNotFoundError(
            f"{ckdir}: the run's model directory {hf_dir!r} is missing; pass model_path"
        )
    dtype = dtype or cfg.get("model", {}).get("dtype", "float32")
    base = load_hf(hf_dir, dtype=dtype, mesh=mesh)
    step, params, _, _ = ck.restore(which, params_like=base.params(), with_opt_state=False)
    return base.with_params(params), load_tokenizer(hf_dir), {"source": ckdir, "step": step}


def _best_metric(run_dir: str) -> str | None:
    cfg_file = os.path.join(run_dir, "config.json")
    if os.path.isfile(cfg_file):
        with open(cfg_file, encoding="utf-8") as f:
            return (json.load(f).get("train") or {}).get("best_metric") or None
    return None


def _generate(
    model: Transformer,
    tok: TokenizerInfo,
    prompt_ids: Sequence[Sequence[int]],
    n: int,
    settings: EvalSettings,
    temperature: float,
    key,
    mesh=None,
):
    """Texts ``[B][n]`` for all prompts, in batches of ``prompts_per_batch``."""
    params, cfg = model.params(), model.config
    spec = RolloutSpec(
        n,
        settings.max_new_tokens,
        temperature,
        settings.top_p if temperature > 0 else 1.0,
        settings.top_k,
        settings.head_dtype or None,
        None if settings.decode_slots < 0 else settings.decode_slots,
        settings.attn_kernel,
    )
    texts: list[list[str]] = []
    bsz = settings.prompts_per_batch
    for start in range(0, len(prompt_ids), bsz):
        chunk = list(prompt_ids[start : start + bsz])
        real = len(chunk)
        chunk += [chunk[-1]] * (bsz - real)  # static batch shape: repeat the last prompt
        tokens, mask = left_pad(chunk, tok.pad_id, multiple=settings.prompt_bucket)
        out = generate.rollout(
            params,
            cfg,
            tokens,
            mask,
            jax.random.fold_in(key, start),
            spec,
            eos_ids=tok.eos_ids,
            pad_id=tok.pad_id,
            mesh=mesh,
        )
        toks, lens = sharding.to_host((out.tokens, out.lengths))  # whole on every host
        toks, lens = toks[:real], lens[:real]
        texts += consensus.decode_completions(tok.tokenizer, toks, lens)
    return texts


def _grade(texts, golds, settings: EvalSettings, pool=None):
    answers = answers_lib.extract_answers(texts, settings.task, pool=pool)
    clusters = voting.cluster_answers(
        answers, mode=settings.clustering, task=settings.task, pool=pool
    )
    correct, _ = voting.match_labels(clusters, golds, task=settings.task, pool=pool)
    return answers, clusters.ids, correct


def evaluate(
    model: Transformer,
    tok: TokenizerInfo,
    records: Sequence[dict],
    settings: EvalSettings,
    *,
    mesh=None,
    out_dir: str | None = None,
    name: str = "eval",
    pool=None,
) -> dict:
    """Runs the protocols on ``records`` (with gold answers) and returns the summary.

    Summary keys: ``mean@n``, ``pass@k`` (k = 1, 2, 4, ... <= n), ``maj@n``,
    ``greedy_pass@1``, ``num_problems`` and ``by_subject`` (when records have one).
    """
    prompts = build_prompts(
        records,
        tok.tokenizer,
        max_prompt_tokens=settings.max_prompt_tokens,
        suffix=settings.suffix or None,
        system_prompt=settings.system_prompt or None,
        enable_thinking=settings.enable_thinking,
    )
    recs = prompts.records
    golds = [r["answer"] for r in recs]
    key = jax.random.key(settings.seed)
    n = settings.n_samples
    texts = _generate(
        model,
        tok,
        prompts.token_ids,
        n,
        settings,
        settings.temperature,
        jax.random.fold_in(key, 0),
        mesh,
    )
    answers, ids, correct = _grade(texts, golds, settings, pool)
    ks = [k for k in (1, 2, 4, 8, 16, 32, 64) if k <= n]
    summary = eval_metrics.summarize(correct, ids, ks)
    gen_rows = [
        {
            "id": r["id"],
            "subject": r.get("subject"),
            "mode": "sampled",
            "sample": j,
            "text": texts[b][j],
            "answer": answers[b][j],
            "correct": bool(correct[b, j]),
        }
        for b, r in enumerate(recs)
        for j in range(n)
    ]
    greedy_correct = None
    if settings.greedy:
        g_texts = _generate(
            model, tok, prompts.token_ids, 1, settings, 0.0, jax.random.fold_in(key, 1), mesh
        )
        g_answers, _, greedy_correct = _grade(g_texts, golds, settings, pool)
        summary["greedy_pass@1"] = float(greedy_correct.mean())
        gen_rows += [
            {
                "id": r["id"],
                "subject": r.get("subject"),
                "mode": "greedy",
                "sample": 0,
                "text": g_texts[b][0],
                "answer": g_answers[b][0],
                "correct": bool(greedy_correct[b, 0]),
            }
            for b, r in enumerate(recs)
        ]
    summary["num_problems"] = len(recs)
    subjects = sorted({r.get("subject") for r in recs if r.get("subject")})
    if subjects:
        summary["by_subject"] = {}
        for s in subjects:
            rows = np.array([r.get("subject") == s for r in recs])
            part = eval_metrics.summarize(correct[rows], ids[rows], (1,))
            if greedy_correct is not None:
                part["greedy_pass@1"] = float(greedy_correct[rows].mean())
            part["num_problems"] = int(rows.sum())
            summary["by_subject"][s] = part
    if out_dir and jax.process_index() == 0:
        write_outputs(out_dir, name, summary, gen_rows)
    return summary


def majority_ratios(
    model: Transformer,
    tok: TokenizerInfo,
    prompt_ids: Sequence[Sequence[int]],
    settings: EvalSettings,
    *,
    key,
    mesh=None,
    pool=None,
) -> np.ndarray:
    """One label-free voting pass: the majority ratio of each prompt, ``[B]`` float64.

    Samples ``settings.n_samples`` = M completions per prompt at ``settings.temperature``,
    clusters their answers as training does (``settings.clustering``) and returns
    :math:`\\max_k |C_{bk}| / M`, the share of votes in the largest answer class (0 when
    no sample answered; no-answer samples count in M). No gold answer is read.
    """
    n = settings.n_samples
    texts = _generate(model, tok, prompt_ids, n, settings, settings.temperature, key, mesh)
    answers = answers_lib.extract_answers(texts, settings.task, pool=pool)
    clusters = voting.cluster_answers(
        answers, mode=settings.clustering, task=settings.task, pool=pool
    )
    return np.asarray([max(v, default=0) / n for v in clusters.votes], np.float64)  # [B]


def write_outputs(out_dir: str, name: str, summary: dict, gen_rows: list[dict]) -> None:
    """``<name>.generations.jsonl``, ``<name>.summary.json`` and ``<name>.summary.md``."""
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, f"{name}.generations.jsonl"), "w", encoding="utf-8") as f:
        f.writelines(json.dumps(row) + "\n" for row in gen_rows)
    with open(os.path.join(out_dir, f"{name}.summary.json"), "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
    with open(os.path.join(out_dir, f"{name}.summary.md"), "w", encoding="utf-8") as f:
        f.write(markdown_table({name: summary}) + "\n")


def labels_from_generations(
    path: str, *, task: str = "math", clustering: str = "semantic", pool=None
) -> dict[str, str | None]:
    """Offline pseudo-labels ``{id: majority answer}`` from an evaluation's sampled rows.

    SRT's "offline" labels: a frozen model (e.g. the base model) votes once, and its
    majority answer per problem is the fixed target of every later step, so the policy
    cannot move its own reward. Reads ``<name>.generations.jsonl`` as written by
    `evaluate`; answers are clustered as in training (``clustering``), ties go to the
    class whose earliest sample comes first; None where no sample answered.
    """
    by_id: dict[str, list[str | None]] = {}
    with open(path, encoding="utf-8") as f:
        for i, line in enumerate(f, 1):
            try:
                row = json.loads(line)
                if row["mode"] == "sampled":
                    by_id.setdefault(str(row["id"]), []).append(row["answer"])
            except (json.JSONDecodeError, KeyError, TypeError) as e:
                raise ValueError(f"{path}:{i}: not an evaluation generations row ({e})") from None
    ids = list(by_id)
    if len({len(v) for v in by_id.values()}) > 1:
        raise ValueError(f"{path}: problems have different numbers of samples")
    clusters = voting.cluster_answers(
        [by_id[i] for i in ids], mode=clustering, task=task, pool=pool
    )
    return {i: clusters.label(b) for b, i in enumerate(ids)}


def markdown_table(summaries: dict[str, dict]) -> str:
    """One row per named summary, one column per scalar metric (in first-seen order)."""
    cols: list[str] = []
    for s in summaries.values():
        cols += [k for k, v in s.items() if isinstance(v, (int, float)) and k not in cols]
    lines = ["| checkpoint | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for name, s in summaries.items():
        cells = [
            (f"{s[c]:.3f}" if isinstance(s.get(c), float) else str(s.get(c, ""))) for c in cols
        ]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_metrics(metrics_file: str, keys: Sequence[str], out_png: str, title: str = "") -> str:
    """A PNG of the given metrics vs step from a run's ``metrics.jsonl``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ttrl_jax.metrics import read_jsonl

    rows = read_jsonl(metrics_file)
    fig, ax = plt.subplots(figsize=(7, 4))
    for k in keys:
        pts = [(r["step"], r[k]) for r in rows if r.get(k) is not None]
        if pts:
            ax.plot(*zip(*pts), marker="o", ms=3, label=k)
    ax.set_xlabel("step")
    ax.set_title(title or os.path.basename(os.path.dirname(os.path.abspath(metrics_file))))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out_png, dpi=120)
    plt.close(fig)
    return out_png
