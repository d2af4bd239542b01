"""The evaluation protocols: transductive (evaluate the training problems) and inductive
(a disjoint held-out set), checked by problem-text hash; a broken protocol is one clear
error before anything is written."""

import json
import os
import subprocess
import sys

import procs
import pytest

from ttrl_jax.data import heldout, synthetic


def _rows(texts, answers=True):
    return [
        {"problem": t, "answer": str(i) if answers else None, "id": f"q{i}"}
        for i, t in enumerate(texts)
    ]


TRAIN = _rows(["What is 1 + 2 ?", "What is 3 + 4 ?", "Solve x^2 = 4."], answers=False)


def test_problem_hash_ignores_spacing_and_case_only():
    h = heldout.problem_hash
    assert h("What is 1 + 2 ?") == h("  what  is 1 +\n2 ? ") == h("WHAT IS 1 + 2 ?")
    assert h("What is 1 + 2 ?") != h("What is 1 + 3 ?")
    assert h("x²") == h("x2")  # NFKC folds the superscript
    assert len(h("")) == 64


def test_inductive_refuses_any_overlap_and_names_both_sets():
    held = _rows(["What is 5 + 6 ?", "what is 3  + 4 ?", "Solve x^2 = 9."])
    with pytest.raises(ValueError) as e:
        heldout.check_protocol("inductive", TRAIN, "train.jsonl", [("held.jsonl", held)])
    msg = str(e.value)
    assert "held.jsonl shares 1 of 3 problems with data.dataset train.jsonl" in msg
    assert "what is 3 + 4 ?" in msg and "\n" not in msg
    with pytest.raises(ValueError, match="the both protocol needs a disjoint"):
        heldout.check_protocol("both", TRAIN, "train.jsonl", [("held.jsonl", held)])
    disjoint = [held[0], held[2]]
    heldout.check_protocol("inductive", TRAIN, "train.jsonl", [("held.jsonl", disjoint)])
    heldout.check_protocol("both", TRAIN, "train.jsonl", [("a", disjoint), ("b", disjoint[:1])])


def test_transductive_takes_the_training_problems_only():
    labelled_copy = _rows([r["problem"].upper() for r in TRAIN][:2])
    heldout.check_protocol("transductive", TRAIN, "train.jsonl", [("gold.jsonl", labelled_copy)])
    heldout.check_protocol("transductive", TRAIN, "train.jsonl", [])
    other = labelled_copy + _rows(["What is 9 + 9 ?"])
    with pytest.raises(ValueError, match="1 of 3 problems that are not in data.dataset"):
        heldout.check_protocol("transductive", TRAIN, "train.jsonl", [("gold.jsonl", other)])
    with pytest.raises(ValueError, match="eval.protocol"):
        heldout.check_protocol("held-out", TRAIN, "train.jsonl", [])


@pytest.mark.parametrize("seed, n_train, n_held", [(0, 64, 64), (3, 256, 128), (11, 5, 700)])
def test_synthetic_split_keeps_the_training_set_and_is_disjoint(seed, n_train, n_held):
    spec = synthetic.TaskSpec(num_digits=5)
    train, held = synthetic.make_heldout_split(n_train, n_held, seed, spec)
    assert train == synthetic.make_test_set(n_train, seed, spec)  # the demo's set, unchanged
    assert len(held) == n_held and all(r["answer"] is not None for r in held)
    heldout.check_protocol("inductive", train, "train", [("held", held)])
    assert len({r["id"] for r in train + held}) == n_train + n_held


def _launch(tmp_path, *extra):
    """The tiny launcher on an unlabeled training file and a labelled eval file."""
    import tiny_models

    model = tmp_path / "model"
    _, vocab = tiny_models.make_tokenizer(str(model))
    tiny_models.make_qwen2(str(model), vocab_size=vocab, hidden_size=16, layers=1)
    data = tmp_path / "train.jsonl"
    data.write_text("\n".join(json.dumps({"problem": r["problem"]}) for r in TRAIN))
    held = tmp_path / "held.jsonl"
    held.write_text("\n".join(json.dumps(r) for r in _rows(["What is 1 + 2 ?", "New one ?"])))
    out = tmp_path / "run"
    args = [
        sys.executable,
        "-m",
        "experiments.ttrl",
        "--config=experiments/configs/tiny_cpu.py",
        f"--config.model.path={model}",
        f"--config.data.dataset={data}",
        "--config.data.answer_key=",  # unlabeled
        f"--config.eval.datasets={held}",
        f"--config.output_dir={out}",
        *extra,
    ]
    proc = subprocess.run(
        args, cwd=procs.ROOT, env=procs.child_env(), capture_output=True, text=True, timeout=120
    )
    return proc, out


def test_launcher_refuses_an_overlapping_heldout_set_before_writing(tmp_path):
    proc, out = _launch(tmp_path, "--config.eval.protocol=inductive")
    assert proc.returncode != 0
    errors = [line for line in proc.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, proc.stderr[-2000:]
    assert "held.jsonl shares 1 of 2 problems with data.dataset" in errors[0]
    assert not (out / "config.json").exists() and not (out / "checkpoints").exists()
    assert not os.path.exists(out) or not any(out.iterdir())


def test_trainer_eval_sets_per_protocol(tmp_path):
    from experiments.configs import tiny_cpu
    from ttrl_jax import trainer as trainer_lib

    train = _rows(["What is 1 + 2 ?", "What is 3 + 4 ?", "Unlabelled one ?"])
    train[2]["answer"] = None
    held = tmp_path / "held.jsonl"
    held.write_text("\n".join(json.dumps(r) for r in _rows(["A ?", "B ?", "C ?"])))
    c = tiny_cpu.get_config()
    c.data.dataset = "train.jsonl"
    assert trainer_lib.eval_sets(c, train) == [("eval", train[:2])]  # labelled training set
    c.eval.protocol, c.eval.datasets, c.eval.max_prompts = "both", f"{held}, {held}", 4
    sets = trainer_lib.eval_sets(c, train)
    assert [name for name, _ in sets] == ["eval", "eval_heldout"]
    assert sets[0][1] == train[:2]
    # the given sets evaluated as one, cut at eval.max_prompts
    assert [r["problem"] for r in sets[1][1]] == ["A ?", "B ?", "C ?", "A ?"]
    c.eval.protocol = "inductive"
    assert [name for name, _ in trainer_lib.eval_sets(c, train)] == ["eval"]
