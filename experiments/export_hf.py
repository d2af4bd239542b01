"""Turn an orbax checkpoint into an HF directory (config, safetensors, tokenizer files).

python -m experiments.export_hf --checkpoint=runs/ttrl --step=best --out=exports/ttrl-best
"""

from absl import flags

from experiments.cli import run_main

flags.DEFINE_string("checkpoint", None, "Orbax run directory or checkpoints directory.")
flags.DEFINE_string("step", "latest", "A step number, 'latest' or 'best'.")
flags.DEFINE_string("out", None, "Output HF directory.")
flags.DEFINE_string("dtype", "", "Saved dtype (default: the params' dtype).")
flags.DEFINE_string("model_path", "", "HF directory with the architecture and tokenizer.")
flags.mark_flags_as_required(["checkpoint", "out"])
FLAGS = flags.FLAGS


def main(argv):
    del argv
    from ttrl_jax.evaluation import load_policy
    from ttrl_jax.models import save_hf

    model, _, info = load_policy(FLAGS.checkpoint, FLAGS.step, model_path=FLAGS.model_path or None)
    save_hf(model, FLAGS.out, dtype=FLAGS.dtype or None)
    print(f"exported step {info['step']} of {info['source']} to {FLAGS.out}")
    return 0


def run():
    """Entry point: one error line and exit status 2 on a bad path or value."""
    run_main(main, (FileNotFoundError, ValueError))


if __name__ == "__main__":
    run()
