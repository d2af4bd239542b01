"""TTRL on AIME 2024 with Qwen2.5-Math-1.5B (the paper's recipe at 1.5B)."""

from experiments.configs import ttrl_aime_qwen2p5_math_7b as base


def get_config():
    c = base.get_config()
    c.name = "ttrl_aime_qwen2p5_math_1p5b"
    c.output_dir = "runs/ttrl_aime_qwen2p5_math_1p5b"
    c.model.path = "models/Qwen2.5-Math-1.5B"
    c.mesh.fsdp = 4
    c.algo.micro_batch_size = 8
    return c
