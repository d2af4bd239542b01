"""Launch a TTRL / SRT run.

  python -m experiments.ttrl --config=experiments/configs/ttrl_aime_qwen2p5_math_7b.py \
      --config.model.path=/models/Qwen2.5-Math-7B --config.optim.lr=1e-6

Unknown config keys, bad values and missing paths print one error line and exit 2.
"""

import logging
import sys

from absl import flags
from ml_collections import config_flags

from experiments.cli import run_main

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
        trainer = trainer_lib.Trainer(config)
    except (ConfigValueError, FileNotFoundError, ValueError) as e:
        print(f"error: {e}", file=sys.stderr)
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


def run():
    """Entry point that turns config-parsing errors into one line and exit code 2."""
    run_main(main, (KeyError, AttributeError, TypeError, ValueError, flags.Error))


if __name__ == "__main__":
    run()
