"""ttrl-jax: label-free reinforcement learning (TTRL, SRT) for LLM reasoners on JAX."""

__version__ = "0.1.0"
