"""TTRL on MATH-500 with Qwen2.5-Math-1.5B (the paper trains 10 episodes on MATH-500)."""

from experiments.configs import ttrl_aime_qwen2p5_math_1p5b as base


def get_config():
    c = base.get_config()
    c.name = "ttrl_math500_qwen2p5_math_1p5b"
    c.output_dir = "runs/ttrl_math500_qwen2p5_math_1p5b"
    c.data.dataset = "math500"
    c.train.epochs = 10
    c.train.save_every = 20
    c.train.eval_every = 20
    return c
