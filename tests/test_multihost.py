"""Two OS processes (jax.distributed, local coordinator, gloo CPU collectives, 4 fake
devices each) train like one process with 8 devices: same votes, losses and params."""

import json
import os
import socket
import subprocess
import sys

import jax
import numpy as np
import procs
import pytest
import tiny_models

from ttrl_jax import checkpointing, metrics, models

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STEPS = 2


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cmd(model, data, out, extra=()):
    return [sys.executable, "-m", "experiments.ttrl", "--config=experiments/configs/tiny_cpu.py",
            f"--config.model.path={model}", f"--config.data.dataset={data}",
            "--config.data.id_key=id", f"--config.output_dir={out}",
            f"--config.train.steps={STEPS}", "--config.mesh.data=-1",
            # 8 prompts over the 8-way data axis: each process samples 4 prompts' groups,
            # and every host gathers all of them before voting
            "--config.data.prompts_per_step=8", *extra]


def _run(cmds, devices, tmp_path, name):
    env = procs.child_env(devices)
    logs = [open(tmp_path / f"{name}{i}.log", "w") for i in range(len(cmds))]
    children = [subprocess.Popen(c, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT)
                for c, f in zip(cmds, logs)]
    codes = [p.wait(timeout=600) for p in children]
    for f in logs:
        f.close()
    texts = [open(f.name).read() for f in logs]
    assert codes == [0] * len(cmds), "\n".join(t[-3000:] for t in texts)


@pytest.mark.slow
def test_two_processes_match_one_process_with_eight_devices(tmp_path):
    model = str(tmp_path / "model")
    _, vocab = tiny_models.make_tokenizer(model)
    tiny_models.make_qwen2(model, vocab_size=vocab, hidden_size=32, layers=2, eos_token_id=3)
    rows = [{"problem": f"What is {a} + {b} ?", "answer": str(a + b), "id": f"p{i}"}
            for i, (a, b) in enumerate([(1, 2), (3, 4), (5, 6), (7, 8), (2, 9), (4, 4),
                                        (6, 1), (8, 3)])]
    data = tmp_path / "data.jsonl"
    data.write_text("\n".join(json.dumps(r) for r in rows))

    _run([_cmd(model, data, tmp_path / "one")], 8, tmp_path, "one")
    port = _free_port()
    two = [_cmd(model, data, tmp_path / "two",
                (f"--coordinator_address=127.0.0.1:{port}", "--num_processes=2",
                 f"--process_id={i}")) for i in range(2)]
    _run(two, 4, tmp_path, "two")

    one_rows = metrics.read_jsonl(tmp_path / "one" / "metrics.jsonl")
    two_rows = metrics.read_jsonl(tmp_path / "two" / "metrics.jsonl")
    assert [r["step"] for r in two_rows] == list(range(1, STEPS + 1))  # process 0 only
    for a, b in zip(one_rows, two_rows):
        # votes gathered from both hosts: the same labels and rewards as one host
        for k in ("majority_ratio", "reward_mean", "label_accuracy", "answered_fraction"):
            assert a[k] == b[k], k
        np.testing.assert_allclose(a["actor/loss"], b["actor/loss"], rtol=1e-5, atol=1e-7)
    pa = checkpointing.Checkpointer(tmp_path / "one" / "checkpoints", read_only=True)
    pb = checkpointing.Checkpointer(tmp_path / "two" / "checkpoints", read_only=True)
    like = models.load_hf(model, dtype="float32").params()  # this process's topology
    _, x, _, _ = pa.restore(STEPS, params_like=like, with_opt_state=False)
    _, y, _, _ = pb.restore(STEPS, params_like=like, with_opt_state=False)
    for u, v in zip(jax.tree.leaves(x), jax.tree.leaves(y)):
        np.testing.assert_allclose(np.asarray(u), np.asarray(v), atol=1e-6)
