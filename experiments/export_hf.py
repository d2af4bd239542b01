"""Turn an orbax checkpoint into an HF directory (config, safetensors, tokenizer files).

python -m experiments.export_hf --checkpoint=runs/ttrl --step=best --out=exports/ttrl-best

``--out`` must be empty or new; ``--overwrite`` replaces the files that an earlier
export wrote there (listed in its ``ttrl_export.json``) and never deletes any other
file. The run's base model directory is never an output.
"""

import os

from absl import flags

from experiments.cli import check_step, run_main

flags.DEFINE_string("checkpoint", None, "Orbax run directory or checkpoints directory.")
flags.DEFINE_string("step", "latest", "A step number, 'latest' or 'best'.")
flags.DEFINE_string("out", None, "Output HF directory (new or empty, or see --overwrite).")
flags.DEFINE_bool(
    "overwrite",
    False,
    "Export into a non-empty --out: replace the files an earlier export wrote there "
    "(other files are kept).",
)
flags.DEFINE_string("dtype", "", "Saved dtype (default: the params' dtype).")
flags.DEFINE_string("model_path", "", "HF directory with the architecture and tokenizer.")
flags.mark_flags_as_required(["checkpoint", "out"])
FLAGS = flags.FLAGS


def check_out(out: str, overwrite: bool) -> str:
    """``--out`` must be a directory that is new or empty, unless ``overwrite``."""
    path = os.path.abspath(out)
    if os.path.exists(path) and not os.path.isdir(path):
        raise ValueError(f"--out={out}: is a file, not a directory")
    if os.path.isdir(path) and os.listdir(path) and not overwrite:
        raise ValueError(
            f"--out={out}: directory is not empty; pass --overwrite to replace the files "
            "an earlier export wrote there"
        )
    return path


def main(argv):
    del argv
    check_step(FLAGS.step)
    out = check_out(FLAGS.out, FLAGS.overwrite)
    from ttrl_jax.eval.evaluation import load_policy
    from ttrl_jax.models import save_hf

    model, _, info = load_policy(FLAGS.checkpoint, FLAGS.step, model_path=FLAGS.model_path or None)
    base = model.source_path and os.path.abspath(model.source_path)
    if base == out:
        raise ValueError(f"--out={FLAGS.out}: is the run's base model directory; export elsewhere")
    save_hf(model, out, dtype=FLAGS.dtype or None)
    print(f"exported step {info['step']} of {info['source']} to {FLAGS.out}")
    return 0


def run():
    """Entry point: one error line and exit status 2 on a bad path or value."""
    run_main(main, (OSError, ValueError))


if __name__ == "__main__":
    run()
