"""Loaded at start-up by the processes tests launch (`tests/procs.py` puts this folder on
their PYTHONPATH): it hides the test extra's torch, so a child runs as on `make demo`'s
core install, which has none. A launcher that came to need torch would fail its tests,
and `transformers` no longer imports torch in every child (~1.7 s of CPU each)."""

import sys

sys.modules.setdefault("torch", None)  # `import torch` raises ImportError; find_spec -> None
