"""TTRL on AIME 2024 with Qwen2.5-Math-7B (arXiv 2504.16084, the paper's main recipe).

M = 64 votes, N = 32 trained samples per prompt, 8 prompts per step, temperature 1.0,
responses up to 3072 tokens, GRPO, KL (k3) 0.001 as a loss, no entropy bonus, AdamW lr
5e-7 (wd 0.01, clip 1.0), 3% warmup then cosine to 0, 8 optimizer updates per RL step,
80 episodes on AIME. Evaluation: mean@16 at T = 0.6, top-p 0.95.
"""

from ttrl_jax.config import default_config

QWEN_MATH_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."


def get_config():
    c = default_config()
    c.name = "ttrl_aime_qwen2p5_math_7b"
    c.output_dir = "runs/ttrl_aime_qwen2p5_math_7b"
    c.model.path = "models/Qwen2.5-Math-7B"
    c.model.dtype = "bfloat16"
    c.model.system_prompt = QWEN_MATH_SYSTEM
    c.mesh.fsdp = 8  # set to the slice size (see tpu_setup/README.md)
    c.data.dataset = "aime24"
    c.data.max_prompt_tokens = 1024
    c.data.prompts_per_step = 8
    c.rollout.n_votes = 64
    c.rollout.n_train = 32
    c.rollout.temperature = 1.0
    c.rollout.max_new_tokens = 3072
    c.reward.mode = "ttrl"
    c.algo.advantage = "grpo"
    c.algo.kl_coef = 0.001
    c.algo.kl_type = "k3"
    c.algo.entropy_coef = 0.0
    c.algo.updates_per_step = 8
    c.algo.micro_batch_size = 4
    c.optim.lr = 5e-7
    c.optim.schedule = "cosine"
    c.optim.warmup_ratio = 0.03
    c.optim.weight_decay = 0.01
    c.optim.grad_clip = 1.0
    c.train.epochs = 80
    c.train.save_every = 10
    c.train.eval_every = 10
    c.train.best_metric = "eval/mean@16"
    c.eval.n_samples = 16
    c.eval.temperature = 0.6
    c.eval.top_p = 0.95
    c.eval.max_new_tokens = 3072
    return c
