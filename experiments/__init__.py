"""Experiment launchers (absl entry points); thin wrappers over the `ttrl_jax` library."""
