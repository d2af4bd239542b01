"""TTRL on MATH-500 with Qwen3-1.7B, the paper's recipe moved to Qwen3.

As `ttrl_aime_qwen2p5_math_7b` (M = 64 votes, N = 32 trained, 8 prompts per step, T = 1.0,
GRPO, k3 KL 0.001 as a loss, 8 updates per RL step, AdamW with 3% warm-up then cosine)
with TTRL's MATH-500 schedule (10 episodes) and what Qwen3 changes:

- the boxed-answer instruction goes in the user turn (`data.suffix`), as Qwen3's model
  card recommends for math, not in a system prompt;
- ``model.enable_thinking = False``: the chat template opens the answer with an empty
  think block, so the 3072-token budget goes to the solution, not to a long trace (set
  it True, with a larger ``rollout.max_new_tokens``, for thinking-mode runs).

``model.path`` names the post-trained (hybrid thinking) checkpoint, whose template has
the switch; a Qwen3 base checkpoint loads the same way.

Memory plan: ``python -m experiments.plan_memory --preset=qwen3-1.7b --fsdp=4``.
"""

from experiments.configs import ttrl_aime_qwen2p5_math_7b as base

BOXED = "Please reason step by step, and put your final answer within \\boxed{}."


def get_config():
    c = base.get_config()
    c.name = "ttrl_math500_qwen3_1p7b"
    c.output_dir = "runs/ttrl_math500_qwen3_1p7b"
    c.model.path = "models/Qwen3-1.7B"
    c.model.system_prompt = ""
    c.model.enable_thinking = False
    c.data.suffix = BOXED
    c.data.dataset = "math500"
    c.mesh.fsdp = 4
    c.algo.micro_batch_size = 8
    c.train.epochs = 10
    c.train.save_every = 20
    c.train.eval_every = 20
    return c
