"""A tiny CPU run: any small local HF model, a few prompts, short responses.

Usage: python -m experiments.ttrl --config=experiments/configs/tiny_cpu.py \
         --config.model.path=/path/to/tiny/model --config.data.dataset=/path/to/data.jsonl
"""

from ttrl_jax.config import default_config


def get_config():
    c = default_config()
    c.name = "tiny_cpu"
    c.output_dir = "runs/tiny_cpu"
    c.model.dtype = "float32"
    c.data.max_prompt_tokens = 128
    c.data.prompts_per_step = 2
    c.data.prompt_bucket = 16
    c.rollout.n_votes = 8
    c.rollout.n_train = 4
    c.rollout.max_new_tokens = 16
    c.algo.updates_per_step = 2
    c.optim.lr = 1e-4
    c.optim.warmup_ratio = 0.0
    c.train.steps = 3
    c.train.save_every = 1
    c.train.progress = False
    c.reward.grading_workers = 1
    return c
