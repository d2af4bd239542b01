"""Issue #21, "nothing lost": kills during checkpoint deletion, exports that would
overwrite files, missing tokenizers, one-line errors, metrics after resume."""

import json
import logging
import os
import random
import shutil
import signal
import subprocess
import sys
import textwrap
import time

import jax
import jax.numpy as jnp
import numpy as np
import optax
import procs
import pytest

from ttrl_jax import checkpointing
from ttrl_jax.checkpointing import (
    Checkpointer,
    CheckpointMismatchError,
    UnreadableCheckpointError,
)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ENV = procs.child_env()


def _params(scale=1.0, width=8):
    return {
        "w": jnp.full((width, 4), scale),
        "layers": {"a": jnp.arange(12.0).reshape(3, 4) * scale, "b": jnp.ones(5) * scale},
    }


def _save_steps(directory, steps, keep_last=3, width=8):
    ck = Checkpointer(directory, keep_last=keep_last, async_save=False)
    for s in steps:
        p = _params(s, width)
        ck.save(s, p, optax.adam(1e-3).init(p), {"step": s})
    ck.close()


# ---------------------------------------------------------------- point 3: deletion

_SAVER = textwrap.dedent(
    """
    import os, sys, time
    import jax.numpy as jnp, optax
    from ttrl_jax.checkpointing import Checkpointer

    # slow every file removal down, so that a kill at a random time often lands
    # while keep-last is deleting an old step (the window the issue is about)
    for name in ("remove", "unlink"):
        real = getattr(os, name)
        def slow(path, *a, _real=real, **k):
            time.sleep(0.003)
            return _real(path, *a, **k)
        setattr(os, name, slow)

    directory, start, progress = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    ck = Checkpointer(directory, keep_last=1, async_save=True)
    params = {f"p{i}": jnp.full((32, 32), float(i)) for i in range(24)}
    opt = optax.adam(1e-3).init(params)
    step = start
    while True:
        p = {k: v + step for k, v in params.items()}
        ck.save(step, p, opt, {"step": step})
        with open(progress, "a") as f:
            f.write(f"{step}\\n")
        step += 1
    """
)


@pytest.mark.slow
def test_kill_during_keep_last_deletion_never_lists_a_broken_step(tmp_path):
    """Real SIGKILLs at random times while a run saves with keep_last=1: afterwards
    every listed step restores, and "latest" restores, each time."""
    script = tmp_path / "saver.py"
    script.write_text(_SAVER)
    directory = tmp_path / "ck"
    rng = random.Random(0)
    start = 1
    for _ in range(8):
        progress = tmp_path / f"progress-{start}"
        proc = subprocess.Popen(
            [sys.executable, str(script), str(directory), str(start), str(progress)],
            cwd=ROOT,
            env=ENV,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.time() + 120
        while time.time() < deadline and proc.poll() is None:
            if progress.exists() and len(progress.read_text().split()) >= 2:
                break
            time.sleep(0.005)
        time.sleep(rng.uniform(0.0, 0.4))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        assert proc.returncode == -signal.SIGKILL
        ck = Checkpointer(directory, read_only=True)
        steps = ck.all_steps()
        assert steps, os.listdir(directory)
        for s in steps:  # every listed step restores, params and optimizer state
            got, p, _, meta = ck.restore(s)
            assert got == s and meta["step"] == s
            np.testing.assert_array_equal(np.asarray(p["p3"]), 3.0 + s)
        assert ck.restore("latest")[0] == max(steps)
        start = max(steps) + 1  # resume after the newest step, as the trainer does


def _break(directory, step):
    """A step as an older version's interrupted deletion left it: listed, with
    some of its array files gone."""
    d = os.path.join(directory, str(step), "params")
    victims = [
        os.path.join(root, f)
        for root, _, files in os.walk(d)
        for f in files
        if os.sep + "d" + os.sep in os.path.join(root, f) + os.sep
    ]
    assert victims
    for v in victims:
        os.remove(v)


def test_unreadable_latest_falls_back_with_one_warning_and_is_set_aside(tmp_path, caplog):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1, 2, 3])
    _break(directory, 3)
    like = _params()
    ro = Checkpointer(directory, read_only=True)
    assert ro.all_steps() == [1, 2, 3]  # it looks complete on disk
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        step, p, _, meta = ro.restore("latest", params_like=like)
    assert step == 2 and meta["step"] == 2
    np.testing.assert_array_equal(np.asarray(p["w"]), 2.0)
    warnings = [r for r in caplog.records if r.name == checkpointing.__name__]
    assert len(warnings) == 1 and "step 3" in warnings[0].getMessage()
    assert "\n" not in warnings[0].getMessage()
    assert ro.all_steps() == [1, 2]  # no longer listed as restorable
    assert os.path.isdir(os.path.join(directory, "3"))  # read-only: nothing moved
    # an explicit request for the broken step: one line, no fallback
    with pytest.raises(UnreadableCheckpointError, match="step 3 cannot be restored") as e:
        Checkpointer(directory, read_only=True).restore(3, params_like=like)
    assert "\n" not in str(e.value)
    # a writer (the trainer resuming) repairs: the step is moved aside, not deleted,
    # and saving that step again works
    rw = Checkpointer(directory, keep_last=3, async_save=False)
    p = _params()
    assert rw.restore("latest", params_like=p, opt_state_like=optax.adam(1e-3).init(p))[0] == 2
    assert rw.all_steps() == [1, 2]
    aside = os.listdir(os.path.join(directory, checkpointing.UNREADABLE))
    assert len(aside) == 1 and aside[0].startswith("3-")
    rw.save(3, _params(3), optax.adam(1e-3).init(p), {"step": 3})
    assert rw.restore("latest", params_like=p)[0] == 3
    rw.close()


def test_unreadable_latest_metadata_falls_back_with_one_warning(tmp_path, caplog):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1, 2])
    with open(os.path.join(directory, "2", "meta", "metadata"), "w") as f:
        f.write('{"step": 2, "it')  # cut short
    ro = Checkpointer(directory, read_only=True)
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        assert ro.read_meta("latest")["step"] == 1
    assert len([r for r in caplog.records if r.name == checkpointing.__name__]) == 1
    assert ro.all_steps() == [1] and ro.restore("latest", params_like=_params())[0] == 1


def test_unreadable_everywhere_raises_one_line_and_moves_nothing(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1])
    _break(directory, 1)
    rw = Checkpointer(directory, keep_last=3)
    with pytest.raises(UnreadableCheckpointError, match="step 1 cannot be restored"):
        rw.restore("latest", params_like=_params())
    assert os.path.isdir(os.path.join(directory, "1"))
    rw.close()


def test_resume_with_another_model_shape_names_the_param_and_both_shapes(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1], width=8)
    with pytest.raises(CheckpointMismatchError) as e:
        Checkpointer(directory, read_only=True).restore("latest", params_like=_params(width=16))
    msg = str(e.value)
    assert "'w'" in msg and "(8, 4)" in msg and "(16, 4)" in msg and "\n" not in msg
    # nothing was set aside: the checkpoint is fine, the run is not
    assert Checkpointer(directory, read_only=True).all_steps() == [1]


def test_step_that_is_not_a_number_is_one_line(tmp_path):
    directory = str(tmp_path / "ck")
    _save_steps(directory, [1])
    with pytest.raises(ValueError, match="'foo'"):
        Checkpointer(directory, read_only=True).resolve("foo")


# ---------------------------------------------------------------- a tiny model and run


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    import tiny_models

    base = tmp_path_factory.mktemp("lost")
    model = str(base / "model")
    _, vocab = tiny_models.make_tokenizer(model)
    tiny_models.make_qwen2(model, vocab_size=vocab, hidden_size=32, layers=2, eos_token_id=3)
    wide = str(base / "wide")
    tiny_models.make_tokenizer(wide)
    tiny_models.make_qwen2(wide, vocab_size=vocab, hidden_size=64, layers=2, eos_token_id=3)
    rows = [
        {"problem": f"What is {a} + {b} ?", "answer": str(a + b), "id": f"p{i}"}
        for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8), (2, 2), (9, 1)])
    ]
    data = base / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))
    return base, model, str(data), wide


def _config(setup, out, **overrides):
    from experiments.configs import tiny_cpu

    _, model, data, _ = setup
    c = tiny_cpu.get_config()
    c.model.path, c.data.dataset, c.data.id_key, c.output_dir = model, data, "id", str(out)
    c.mesh.data = 1
    for key, value in overrides.items():
        section, leaf = key.split(".")
        c[section][leaf] = value
    return c


@pytest.fixture(scope="module")
def run_dir(setup, tmp_path_factory):
    """A finished two-step run with checkpoints at steps 1 and 2."""
    from ttrl_jax import trainer as trainer_lib

    out = tmp_path_factory.mktemp("run") / "run"
    tr = trainer_lib.Trainer(_config(setup, out, **{"train.steps": 2}))
    tr.run()
    tr.close()
    return out


def _cli(module, *args, timeout=300):
    proc = subprocess.run(  # noqa: PLW1510 -- the return code is checked
        [sys.executable, "-m", module, *map(str, args)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stdout + proc.stderr


def _one_error_line(rc, out, *needles):
    assert rc != 0, out
    errors = [l for l in out.splitlines() if l.startswith("error:")]
    assert len(errors) == 1, out
    assert "Traceback" not in out, out
    for n in needles:
        assert n in errors[0], out
    return errors[0]


def _snapshot(directory):
    return {
        name: (
            os.path.getmtime(os.path.join(directory, name)),
            os.path.getsize(os.path.join(directory, name)),
        )
        for name in sorted(os.listdir(directory))
    }


# ---------------------------------------------------------------- point 2: export


@pytest.mark.slow
def test_export_refuses_a_non_empty_out_and_a_file_and_the_base_model(setup, run_dir, tmp_path):
    _, model, _, _ = setup
    out = tmp_path / "busy"
    out.mkdir()
    (out / "model.safetensors").write_bytes(b"not ours")
    (out / "notes.txt").write_text("keep me")
    before = _snapshot(out)
    rc, log = _cli("experiments.export_hf", f"--checkpoint={run_dir}", f"--out={out}")
    _one_error_line(rc, log, str(out), "not empty", "--overwrite")
    assert _snapshot(out) == before
    (tmp_path / "afile").write_text("x")
    rc, log = _cli(
        "experiments.export_hf", f"--checkpoint={run_dir}", f"--out={tmp_path / 'afile'}"
    )
    _one_error_line(rc, log, "afile", "is a file")
    # the base model directory, even with --overwrite: refused, untouched
    before = _snapshot(model)
    rc, log = _cli(
        "experiments.export_hf", f"--checkpoint={run_dir}", f"--out={model}", "--overwrite"
    )
    _one_error_line(rc, log, "base model directory")
    assert _snapshot(model) == before
    rc, log = _cli(
        "experiments.export_hf", f"--checkpoint={run_dir}", "--step=foo", f"--out={tmp_path / 'x'}"
    )
    _one_error_line(rc, log, "--step=foo")


@pytest.mark.slow
def test_export_overwrite_replaces_only_its_own_files(setup, run_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    out = tmp_path / "exp"
    rc, log = _cli("experiments.export_hf", f"--checkpoint={run_dir}", f"--out={out}")
    assert rc == 0, log
    manifest = json.loads((out / "ttrl_export.json").read_text())["files"]
    assert "model.safetensors" in manifest and "tokenizer.json" in manifest
    (out / "notes.txt").write_text("keep me")
    rc, log = _cli(
        "experiments.export_hf",
        f"--checkpoint={run_dir}",
        "--step=1",
        f"--out={out}",
        "--overwrite",
    )
    assert rc == 0, log
    assert (out / "notes.txt").read_text() == "keep me"
    AutoModelForCausalLM.from_pretrained(out)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".exp.export")]  # temp gone


def test_save_params_removes_its_stale_shards_but_never_foreign_files(setup, tmp_path):
    from ttrl_jax import models
    from ttrl_jax.models.checkpoint_hf import CheckpointError

    _, model_dir, _, _ = setup
    model = models.load_hf(model_dir, dtype="float32")
    out = tmp_path / "exp"
    models.save_hf(model, out, max_shard_bytes=20_000)
    shards = sorted(n for n in os.listdir(out) if n.startswith("model-"))
    assert len(shards) > 1 and (out / "model.safetensors.index.json").exists()
    (out / "README.md").write_text("mine")
    models.save_hf(model, out)  # one file now: our old shards and index go
    names = set(os.listdir(out))
    assert not names & set(shards) and "model.safetensors.index.json" not in names
    assert {"model.safetensors", "config.json", "README.md", "ttrl_export.json"} <= names
    again = models.load_hf(out, dtype="float32")
    for a, b in zip(jax.tree.leaves(model.params()), jax.tree.leaves(again.params())):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    # weights that no export of ours wrote: refused, nothing touched
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "model-00001-of-00002.safetensors").write_bytes(b"theirs")
    before = _snapshot(foreign)
    with pytest.raises(CheckpointError, match="model-00001-of-00002.safetensors"):
        models.save_hf(model, foreign)
    assert _snapshot(foreign) == before
    with pytest.raises(CheckpointError, match="is a file"):
        models.save_hf(model, foreign / "model-00001-of-00002.safetensors")


# ---------------------------------------------------------------- point 3 via launchers


def test_broken_latest_checkpoint_evaluation_falls_back_and_step_n_is_one_line(
    setup, run_dir, tmp_path, caplog
):
    from ttrl_jax.eval import evaluation

    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    (run / "config.json").write_text(
        (run_dir / "config.json").read_text().replace(str(run_dir), str(run))
    )
    _break(str(run / "checkpoints"), 2)
    with caplog.at_level(logging.WARNING, logger=checkpointing.__name__):
        _, _, info = evaluation.load_policy(str(run), "latest")
    assert info["step"] == 1
    assert len([r for r in caplog.records if r.name == checkpointing.__name__]) == 1
    rc, log = _cli(
        "experiments.evaluate",
        f"--checkpoint={run}",
        "--step=2",
        f"--dataset={setup[2]}",
        f"--out={tmp_path / 'ev'}",
    )
    _one_error_line(rc, log, "step 2 cannot be restored")
    rc, log = _cli("experiments.evaluate", f"--checkpoint={run}", "--step=foo")
    _one_error_line(rc, log, "--step=foo")


# ---------------------------------------------------------------- point 4: tokenizer


def test_model_directory_without_tokenizer_files_is_one_clear_error(setup, tmp_path):
    from ttrl_jax.models.tokenizer import load_tokenizer

    _, model, _, _ = setup
    bare = tmp_path / "bare"
    bare.mkdir()
    for name in ("config.json", "model.safetensors", "generation_config.json"):
        shutil.copy(os.path.join(model, name), bare / name)
    with pytest.raises(ValueError, match="no tokenizer files") as e:
        load_tokenizer(bare)
    assert str(bare) in str(e.value) and "tokenizer.json" in str(e.value)
    assert load_tokenizer(model).eos_ids  # the complete directory still loads


# ---------------------------------------------------------------- point 5: truncated weights


def test_truncated_safetensors_names_the_file_and_tensor(setup, tmp_path):
    from ttrl_jax import models
    from ttrl_jax.models.safetensors_io import SafetensorsError

    _, model, _, _ = setup
    cut = tmp_path / "cut"
    shutil.copytree(model, cut)
    f = cut / "model.safetensors"
    f.write_bytes(f.read_bytes()[: f.stat().st_size // 2])
    with pytest.raises(SafetensorsError, match="truncated") as e:
        models.load_hf(cut, dtype="float32")
    assert str(f) in str(e.value) and "tensor '" in str(e.value)
    f.write_bytes(f.read_bytes()[:20])  # inside the header
    with pytest.raises(SafetensorsError, match="truncated"):
        models.load_hf(cut, dtype="float32")


# ---------------------------------------------------------------- points 5, 6: launcher


def _ttrl(setup, out, *extra):
    _, model, data, _ = setup
    return _cli(
        "experiments.ttrl",
        "--config=experiments/configs/tiny_cpu.py",
        f"--config.model.path={model}",
        f"--config.data.dataset={data}",
        "--config.data.id_key=id",
        f"--config.output_dir={out}",
        "--config.mesh.data=1",
        *extra,
    )


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--config.optim.lrr=1"], "error: config.optim.lrr: unknown key (did you mean lr?)"),
        (["--config.optimm.lr=1"], "error: config.optimm: unknown key (did you mean optim?)"),
        (["--config.optim.b2=1.0"], "error: config.optim.b2: must be in [0, 1)"),
        (["--config.optim.b1=-0.1"], "error: config.optim.b1: must be in [0, 1)"),
        (["--config.reward.grading_workers=0"], "error: config.reward.grading_workers:"),
        (["--config.output_dir={afile}"], "error: config.output_dir: "),
        (["--config.output_dir={afile}/run"], "is inside the file"),
        (["--config=experiments/configs/nope.py"], "nope.py: no such file"),
    ],
)
def test_launcher_errors_are_one_line(setup, tmp_path, extra, needle):
    afile = tmp_path / "afile"
    afile.write_text("x")
    rc, log = _ttrl(setup, tmp_path / "out", *[e.format(afile=afile) for e in extra])
    line = _one_error_line(rc, log)
    assert needle in line, log


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--config.reward.task=nope"], "error: config.reward.task: unknown task 'nope'"),
        (["--config.reward.task=no_such_mod:f"], "error: config.reward.task: cannot load"),
        (["--config.data.dataset={tmp}/missing.jsonl"], "missing.jsonl"),
        (["--config.model.path={tmp}/no_model"], "no_model"),
    ],
)
@pytest.mark.slow
def test_bad_task_dataset_or_model_dir_fail_before_anything_is_written(
    setup, tmp_path, extra, needle
):
    """Checked before the model loads: one line, and the output dir stays untouched
    (no config.json, no metrics, no checkpoints)."""
    out = tmp_path / "out"
    rc, log = _ttrl(setup, out, *[e.format(tmp=tmp_path) for e in extra])
    line = _one_error_line(rc, log)
    assert needle in line, log
    assert not out.exists() or not any(out.iterdir()), sorted(out.iterdir())


def test_verbose_shows_the_traceback(setup, tmp_path):
    rc, log = _ttrl(setup, tmp_path / "out", "--config.optim.b2=1.0", "--verbose")
    assert rc != 0 and "Traceback" in log and "config.optim.b2" in log, log


def test_resume_with_another_model_shape_is_one_line(setup, run_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(run_dir, run)
    _, _, _, wide = setup
    rc, log = _ttrl(setup, run, f"--config.model.path={wide}")
    line = _one_error_line(rc, log, "32) in the checkpoint", "64) in this run")
    assert "param '" in line, log
    assert len(log.splitlines()) < 40, log


# ---------------------------------------------------------------- point 6: config values


def test_config_checks_name_their_keys(setup):
    from ttrl_jax.config import ConfigValueError, validate

    for key, value, needle in [
        ("optim.b1", 1.0, "config.optim.b1"),
        ("optim.b2", 1.0, "config.optim.b2"),
        ("optim.b2", -0.5, "config.optim.b2"),
        ("reward.grading_workers", 0, "config.reward.grading_workers"),
    ]:
        with pytest.raises(ConfigValueError, match=needle.replace(".", r"\.")):
            validate(_config(setup, "unused", **{key: value}))
    validate(_config(setup, "unused", **{"optim.b1": 0.0, "optim.b2": 0.95}))


def test_config_argv_check_without_jax():
    from experiments.cli import check_config_argv

    preset = "--config=experiments/configs/tiny_cpu.py"
    check_config_argv(["x", preset, "--config.optim.lr=1", "--config.train.progress"])
    check_config_argv(["x", preset, "--noconfig.train.progress"])
    with pytest.raises(
        ValueError, match=r"^config\.train\.stepz: unknown key \(did you mean steps\?\)$"
    ):
        check_config_argv(["x", preset, "--config.train.stepz", "3"])
    with pytest.raises(ValueError, match="unknown key"):
        check_config_argv(["x", preset, "--noconfig.train.progres"])


# ---------------------------------------------------------------- point 7b: metrics


def test_truncate_jsonl_keeps_rows_up_to_the_step_atomically(tmp_path):
    from ttrl_jax import metrics

    path = tmp_path / "metrics.jsonl"
    rows = [{"step": s, "x": s} for s in (0, 1, 2, 3, 4)]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows) + '{"step": 5, "x"')
    assert metrics.truncate_jsonl(path, 2) == 3  # steps 3, 4 and the cut-off row
    assert [json.loads(l)["step"] for l in path.read_text().splitlines()] == [0, 1, 2]
    assert metrics.truncate_jsonl(path, 2) == 0
    assert metrics.truncate_jsonl(tmp_path / "missing.jsonl", 2) == 0
    assert not (tmp_path / "missing.jsonl").exists()
    assert not [n for n in os.listdir(tmp_path) if ".tmp" in n]


def test_metric_writer_resume_step_cuts_jsonl_and_tensorboard(tmp_path):
    from ttrl_jax import metrics

    w = metrics.MetricWriter(tmp_path, config={"a": 1})
    for s in (1, 2, 3, 4):
        w.write(s, {"loss": float(s)})
    w.close()
    w = metrics.MetricWriter(tmp_path, config={"a": 1}, resume_step=2)  # resumed after step 2
    for s in (3, 4, 5):
        w.write(s, {"loss": 10.0 + s})
    w.close()
    steps = [json.loads(l)["step"] for l in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5]
    tb = metrics.read_tensorboard_scalars(tmp_path / "tensorboard")["loss"]
    assert tb == [(1, 1.0), (2, 2.0), (3, 13.0), (4, 14.0), (5, 15.0)]
    metrics.MetricWriter(tmp_path, resume_step=-1, tensorboard=False).close()  # fresh start
    assert (tmp_path / "metrics.jsonl").read_text() == ""


# The end-to-end check (a real SIGKILL after rows past the last checkpoint, then every
# step once in metrics.jsonl) runs inside test_trainer's crash-and-resume test, which
# also checks that the resumed run ends bitwise equal to an uninterrupted one.


# ---------------------------------------------------------------- point 8: prompt too long


def test_prompt_too_long_names_the_file_and_line(setup, tmp_path):
    from ttrl_jax.data import DataError, build_prompts, load_records
    from ttrl_jax.models.tokenizer import load_tokenizer

    _, model, _, _ = setup
    data = tmp_path / "d.jsonl"
    long = "What is " + " + ".join(["1"] * 60) + " ?"
    rows = [{"problem": "What is 1 ?", "answer": "1"}, {"problem": long, "answer": "1"}]
    # a blank line between the rows: rows count as an editor's lines, from 1
    data.write_text(json.dumps(rows[0]) + "\n\n" + json.dumps(rows[1]) + "\n")
    records = load_records(data)
    tok = load_tokenizer(model).tokenizer
    with pytest.raises(DataError, match=r"^" + str(data).replace(".", r"\.") + r":3: prompt has"):
        build_prompts(records, tok, max_prompt_tokens=40, on_too_long="error")
