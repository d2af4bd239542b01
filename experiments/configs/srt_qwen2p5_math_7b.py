"""SRT (Self-Rewarding Training, arXiv 2505.21444) with Qwen2.5-Math-7B.

The same self-consistency reward, with the 32 samples of each prompt both voting and
training, 16 prompts per step, RLOO advantages, KL (k3, 0.001) in the reward instead
of the loss, an entropy bonus of 0.001, one optimizer update per step, constant lr
1e-6. The mitigations of its reward-hacking failure mode are switches in `reward`
(threshold tau -- prompts below it stay in the batch with reward 0 and no KL, as SRT's
code does --, keep_fraction, offline labels), `data.curriculum_fraction` (SRT: 1/3 of
the prompts, those the base model answers most consistently) and `train.best_metric`
(early stopping on a small labelled validation set via the best-checkpoint policy).
"""

from experiments.configs import ttrl_aime_qwen2p5_math_7b as base
from ttrl_jax.data import SRT_SUFFIX


def get_config():
    c = base.get_config()
    c.name = "srt_qwen2p5_math_7b"
    c.output_dir = "runs/srt_qwen2p5_math_7b"
    c.model.system_prompt = ""
    c.data.dataset = "math500"  # SRT trains on DAPO / MATH prompts; point this at yours
    c.data.suffix = SRT_SUFFIX
    c.data.prompts_per_step = 16
    c.rollout.n_votes = 32
    c.rollout.n_train = 32
    c.rollout.temperature = 1.0
    c.reward.mode = "srt"
    c.reward.below_threshold = "keep"  # SRT's code: reward 0, no KL, still in the batch
    c.algo.advantage = "rloo"
    c.algo.kl_coef = 0.001
    c.algo.kl_type = "k3"
    c.algo.kl_in_reward = True
    c.algo.entropy_coef = 0.001
    c.algo.updates_per_step = 1
    c.algo.micro_batch_size = 8
    c.optim.lr = 1e-6
    c.optim.schedule = "constant"
    c.optim.warmup_ratio = 0.0
    c.train.epochs = 0
    c.train.steps = 400
    c.eval.n_samples = 32
    c.eval.temperature = 1.0
    c.eval.top_p = 1.0
    c.train.best_metric = "eval/mean@32"
    return c
