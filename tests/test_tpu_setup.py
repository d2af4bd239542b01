"""tpu_setup scripts: --dry-run prints the gcloud commands, bad inputs fail in one line,
the remote launch / stop commands work (run locally through a stub gcloud), shellcheck."""

import os
import shlex
import shutil
import signal
import subprocess
import time

import procs
import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SETUP = os.path.join(ROOT, "tpu_setup")
SCRIPTS = [
    "create.sh",
    "install.sh",
    "copy_model.sh",
    "launch.sh",
    "logs.sh",
    "stop.sh",
    "delete.sh",
]
VM = ["--name=ttrl-v4", "--zone=us-central2-b"]
PRESET = "experiments/configs/ttrl_aime_qwen2p5_math_7b.py"


def sh(script, *args, env=None):
    return subprocess.run(
        ["bash", os.path.join(SETUP, script), *args],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )


def dry(script, *args):
    out = sh(script, "--dry-run", *args)  # before any "--"
    assert out.returncode == 0, out.stderr
    assert out.stderr == ""
    cmds = [shlex.split(line) for line in out.stdout.splitlines()]
    for cmd in cmds:  # every remote command is valid shell
        if cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"]:
            syntax = subprocess.run(["bash", "-n", "-c", remote(cmd)], check=False)
            assert syntax.returncode == 0, remote(cmd)
    return cmds


def remote(cmd):
    """The --command=... of a gcloud tpu-vm ssh line."""
    assert cmd[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "ssh"], cmd
    (c,) = [a for a in cmd if a.startswith("--command=")]
    return c[len("--command=") :]


def test_create_direct_and_queued():
    assert dry("create.sh", *VM, "--accelerator-type=v4-8") == [
        [
            "gcloud",
            "compute",
            "tpus",
            "tpu-vm",
            "create",
            "ttrl-v4",
            "--zone=us-central2-b",
            "--accelerator-type=v4-8",
            "--version=tpu-ubuntu2204-base",
        ]
    ]
    cmds = dry(
        "create.sh",
        "--name=ttrl-v6",
        "--zone=us-east5-b",
        "--accelerator-type=v6e-8",
        "--queued",
        "--spot",
        "--valid-until=6h",
        "--wait",
        "--project=my-proj",
    )
    assert cmds == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "create",
            "ttrl-v6",
            "--zone=us-east5-b",
            "--project=my-proj",
            "--accelerator-type=v6e-8",
            "--runtime-version=v2-alpha-tpuv6e",
            "--node-id=ttrl-v6",
            "--spot",
            "--valid-until-duration=6h",
        ],
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "describe",
            "ttrl-v6",
            "--zone=us-east5-b",
            "--project=my-proj",
            "--format=value(state.state)",
        ],
    ]
    v5e = dry("create.sh", *VM, "--accelerator-type=v5litepod-8")[0]
    assert "--version=v2-alpha-tpuv5-lite" in v5e


def test_install_copies_the_checkout_and_installs_jax_tpu():
    tar, scp, unpack, setup = dry("install.sh", *VM)
    assert tar[:2] == ["tar", "-czf"] and tar[-3:] == ["-C", ROOT, "."]
    assert scp[:5] == ["gcloud", "compute", "tpus", "tpu-vm", "scp"]
    assert "ttrl-v4:/tmp/ttrl-jax-src.tgz" in scp and "--worker=all" in scp
    assert "--worker=all" in unpack and "tar -xzf /tmp/ttrl-jax-src.tgz" in remote(unpack)
    with open(os.path.join(ROOT, "requirements", "constraints.txt")) as f:
        jax_pin = next(line.strip() for line in f if line.startswith("jax=="))
    cmd = remote(setup)
    assert "--worker=all" in setup
    assert f"'jax[tpu]=={jax_pin[5:]}'" in cmd
    assert "-c $HOME/ttrl-jax/requirements/constraints.txt -e $HOME/ttrl-jax" in cmd
    clone = dry("install.sh", *VM, "--repo=https://github.com/me/ttrl-jax.git", "--ref=dev")[0]
    assert "git clone -q --depth 1 --branch dev https://github.com/me/ttrl-jax.git" in remote(clone)


def test_copy_model_from_gcs_and_hub():
    (gcs,) = dry(
        "copy_model.sh",
        *VM,
        "--source=gs://bkt/models/Qwen2.5-Math-7B/",
        "--dest=~/models/Qwen2.5-Math-7B",
    )
    assert "--worker=all" in gcs
    assert (
        "gcloud storage cp -r 'gs://bkt/models/Qwen2.5-Math-7B/*' $HOME/models/Qwen2.5-Math-7B/"
    ) in remote(gcs)
    (gsutil,) = dry("copy_model.sh", *VM, "--source=gs://bkt/m", "--dest=/data/m", "--gsutil")
    assert "gsutil -m cp -r 'gs://bkt/m/*' /data/m/" in remote(gsutil)
    (hub,) = dry("copy_model.sh", *VM, "--source=hf://Qwen/Qwen2.5-Math-1.5B", "--dest=~/m")
    assert (
        "$HOME/ttrl-venv/bin/hf download Qwen/Qwen2.5-Math-1.5B --revision main --local-dir $HOME/m"
    ) in remote(hub)


def test_launch_logs_stop_delete():
    (launch,) = dry(
        "launch.sh",
        *VM,
        f"--config={PRESET}",
        "--",
        "--config.model.path=~/models/Qwen2.5-Math-7B",
        "--config.mesh.fsdp=4",
    )
    assert "--worker=all" in launch
    cmd = remote(launch)
    assert (
        f"nohup $HOME/ttrl-venv/bin/python -m experiments.ttrl --distributed --config={PRESET} "
        "--config.model.path=$HOME/models/Qwen2.5-Math-7B --config.mesh.fsdp=4 "
        "> $HOME/ttrl-logs/ttrl_aime_qwen2p5_math_7b.worker${W}.log"
    ) in cmd
    (logs,) = dry("logs.sh", *VM, "--run=ttrl_aime_qwen2p5_math_7b", "--follow", "--worker=0")
    assert "--worker=0" in logs
    assert remote(logs) == (
        "tail -v -n 50 -F $HOME/ttrl-logs/ttrl_aime_qwen2p5_math_7b.worker*.log"
    )
    (stop,) = dry("stop.sh", *VM, "--run=r1")
    assert "$HOME/ttrl-logs/r1.worker*.pid" in remote(stop)
    assert dry("delete.sh", *VM) == [
        ["gcloud", "compute", "tpus", "tpu-vm", "delete", "ttrl-v4", "--zone=us-central2-b"]
    ]
    assert dry("delete.sh", *VM, "--queued", "--yes") == [
        [
            "gcloud",
            "compute",
            "tpus",
            "queued-resources",
            "delete",
            "ttrl-v4",
            "--zone=us-central2-b",
            "--force",
            "--quiet",
        ]
    ]


BAD = [
    ("create.sh", ["--zone=us-central2-b", "--accelerator-type=v4-8"], "--name is required"),
    ("create.sh", ["--name=", "--zone=us-central2-b"], "--name needs a value"),
    (
        "create.sh",
        ["--name=My_TPU", "--zone=us-central2-b", "--accelerator-type=v4-8"],
        "not a valid name",
    ),
    ("create.sh", ["--name=t", "--zone=us-central2", "--accelerator-type=v4-8"], "not a zone"),
    ("create.sh", [*VM, "--accelerator-type=v5e-8"], "not a TPU type"),
    ("create.sh", [*VM], "--accelerator-type is required"),
    ("create.sh", [*VM, "--accelerator-type=v4-8", "--wait"], "--wait needs --queued"),
    ("create.sh", [*VM, "--accelerator-type=v4-8", "--bogus"], "unknown argument"),
    ("install.sh", ["--name=t"], "--zone is required"),
    ("install.sh", [*VM, "--repo=ftp://x"], "not a git URL"),
    ("install.sh", [*VM, "--dir=~/a b"], "--dir="),
    ("copy_model.sh", [*VM, "--dest=~/m"], "--source is required"),
    ("copy_model.sh", [*VM, "--source=s3://b/m", "--dest=~/m"], "must start with gs://"),
    ("copy_model.sh", [*VM, "--source=hf://Qwen", "--dest=~/m"], "not hf://OWNER/REPO"),
    ("copy_model.sh", [*VM, "--source=gs://b/m"], "--dest is required"),
    ("launch.sh", [*VM], "--config is required"),
    ("launch.sh", [*VM, "--config=experiments/configs/nope.py"], "no such file"),
    ("launch.sh", [*VM, f"--config={PRESET}", "--", "model.path=x"], "not a --flag"),
    ("logs.sh", [*VM], "--run is required"),
    ("logs.sh", [*VM, "--run=r", "--worker=two"], "--worker="),
    ("stop.sh", [*VM, "--run=a;b"], "--run="),
    ("delete.sh", ["--name=t", "--zone=US-EAST1-D"], "not a zone"),
]


@pytest.mark.parametrize("script,args,message", BAD, ids=[f"{s}-{m}" for s, _, m in BAD])
def test_bad_inputs_fail_with_one_error_line(script, args, message):
    out = sh(script, "--dry-run", *args)
    assert out.returncode != 0
    assert out.stdout == ""
    lines = out.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0], lines


@pytest.mark.parametrize("script", SCRIPTS)
def test_help(script):
    out = sh(script, "--help")
    assert out.returncode == 0 and out.stdout.startswith("Usage: tpu_setup/" + script)


def _write_exe(path, text):
    with open(path, "w") as f:
        f.write(text)
    os.chmod(path, 0o755)


def test_launch_and_stop_run_on_a_stub_worker(tmp_path):
    """The remote commands themselves: gcloud ssh is replaced by running --command in a
    local shell whose $HOME is a temporary worker."""
    home, bin_dir = tmp_path / "home", tmp_path / "bin"
    (home / "ttrl-jax").mkdir(parents=True)
    (home / "ttrl-venv" / "bin").mkdir(parents=True)
    bin_dir.mkdir()
    _write_exe(
        bin_dir / "gcloud",
        '#!/usr/bin/env bash\nfor a in "$@"; do\n'
        '  case "$a" in --command=*) exec bash -c "${a#--command=}" ;; esac\ndone\n',
    )
    _write_exe(bin_dir / "curl", "#!/usr/bin/env bash\necho 0\n")  # the metadata server
    _write_exe(
        home / "ttrl-venv" / "bin" / "python",
        '#!/usr/bin/env bash\necho "args: $*"\nexec sleep 60\n',
    )
    env = dict(os.environ, HOME=str(home), PATH=f"{bin_dir}:{os.environ['PATH']}")
    args = [*VM, f"--config={PRESET}", "--run=r1", "--", "--config.train.steps=2"]
    pid_file = home / "ttrl-logs" / "r1.worker0.pid"
    pid = None
    try:
        out = sh("launch.sh", *args, env=env)
        assert out.returncode == 0, out.stderr
        assert "worker 0: started r1" in out.stdout
        pid = int(pid_file.read_text())
        assert procs.alive(pid)
        again = sh("launch.sh", *args, env=env)
        assert again.returncode != 0 and "already running on worker 0" in again.stderr
        for _ in range(50):
            log = (home / "ttrl-logs" / "r1.worker0.log").read_text()
            if log:
                break
            time.sleep(0.1)
        assert f"args: -m experiments.ttrl --distributed --config={PRESET} --config.train.steps=2" in log
        logs = sh("logs.sh", *VM, "--run=r1", env=env)
        assert "==> " in logs.stdout and "r1.worker0.log" in logs.stdout
        stop = sh("stop.sh", *VM, "--run=r1", env=env)
        assert stop.returncode == 0 and "stopped" in stop.stdout
        assert not pid_file.exists()
        for _ in range(50):
            if not procs.alive(pid):
                break
            time.sleep(0.1)
        else:
            pytest.fail("stop.sh did not stop the run")
        pid = None
    finally:
        if pid is not None:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_shellcheck_clean():
    if shutil.which("shellcheck") is None:
        pytest.skip("shellcheck is not installed (apt-get install shellcheck)")
    files = [os.path.join(SETUP, s) for s in SCRIPTS + ["common.sh"]]
    out = subprocess.run(
        ["shellcheck", "-x", *files],
        check=False,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=SETUP,
    )
    assert out.returncode == 0, out.stdout
