"""Launch a TTRL / SRT run.

  python -m experiments.ttrl --config=experiments/configs/ttrl_aime_qwen2p5_math_7b.py \
      --config.model.path=/models/Qwen2.5-Math-7B --config.optim.lr=1e-6

Unknown config keys, bad values and missing paths print one error line and exit 2
(``--verbose``: the traceback instead).
"""

import logging
import os
import sys

from absl import flags
from ml_collections import config_flags

from experiments.cli import check_config_argv, error_line, run_main

_CONFIG = config_flags.DEFINE_config_file("config", None, "Path to a config preset (.py).")
flags.DEFINE_string(
    "coordinator_address",
    None,
    "host:port of process 0 for a multi-host run (auto-detected on Cloud TPU).",
)
flags.DEFINE_integer("num_processes", None, "Number of processes (with --coordinator_address).")
flags.DEFINE_integer("process_id", None, "This process's index (with --coordinator_address).")
flags.DEFINE_bool(
    "distributed",
    False,
    "Call jax.distributed.initialize() with auto-detection "
    "(every worker of a Cloud TPU slice; tpu_setup/launch.sh passes it).",
)
flags.mark_flags_as_required(["config"])


def main(argv):
    del argv
    from ttrl_jax import sharding
    from ttrl_jax import trainer as trainer_lib
    from ttrl_jax.config import ConfigValueError

    sharding.initialize_distributed(
        flags.FLAGS.coordinator_address,
        flags.FLAGS.num_processes,
        flags.FLAGS.process_id,
        auto=flags.FLAGS.distributed,
    )

    logging.getLogger().setLevel(logging.INFO)
    config = _CONFIG.value
    try:
        check_output_dir(config.output_dir)
        check_resume_shapes(config)
        trainer = trainer_lib.Trainer(config)
    except (ConfigValueError, OSError, ValueError) as e:
        if flags.FLAGS.verbose:
            raise
        print(f"error: {error_line(e)}", file=sys.stderr)
        return 2
    try:
        last = trainer.run()
    except trainer_lib.TrainingError as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    finally:
        trainer.close()
    shown = {k: round(v, 4) for k, v in last.items() if not k.startswith("time/")}
    print(f"done: step {trainer.step}: {shown}")
    return 0


def check_output_dir(path: str) -> None:
    """``config.output_dir`` must be a directory or creatable as one."""
    if not path:
        raise ValueError("config.output_dir: is empty")
    probe = os.path.abspath(path)
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        what = "is a file" if probe == os.path.abspath(path) else f"is inside the file {probe}"
        raise ValueError(f"config.output_dir: {path} {what}, not a directory")
    if not os.access(probe, os.W_OK):
        raise ValueError(f"config.output_dir: {probe} is not writable")


def check_resume_shapes(config) -> None:
    """A run directory with checkpoints of another model shape: one error naming the
    param and both shapes, before any model or worker process is started."""
    import jax
    import jax.numpy as jnp

    from ttrl_jax import checkpointing
    from ttrl_jax.models import read_hf_config
    from ttrl_jax.models import transformer as tfm

    ckdir = os.path.join(config.output_dir, "checkpoints")
    if not os.path.isdir(ckdir) or not os.path.isdir(config.model.path):
        return
    ck = checkpointing.Checkpointer(ckdir, read_only=True)
    step = ck.latest_step()
    if step is None:
        return
    try:
        shapes = tfm.param_shapes(read_hf_config(config.model.path))
    except (OSError, ValueError):
        return  # the trainer reports a bad model directory

    def like(tree):
        if isinstance(tree, dict):
            return {k: like(v) for k, v in tree.items()}
        return jax.ShapeDtypeStruct(tuple(tree), jnp.float32)

    try:
        ck.check_compatible(step, params_like=like(shapes))
    except checkpointing.CheckpointMismatchError:
        raise
    except Exception:  # noqa: BLE001 -- unreadable metadata: the trainer falls back
        return


def run():
    """Entry point that turns config-parsing errors into one line and exit code 2."""
    run_main(
        main,
        (KeyError, AttributeError, TypeError, ValueError, OSError, flags.Error),
        argv_check=check_config_argv,
    )


if __name__ == "__main__":
    run()
