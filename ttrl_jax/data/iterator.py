"""A deterministic, resumable iterator over prompt indices.

Epoch ``e`` visits the items in the order ``permutation(seed, e)`` (or in file
order when not shuffling), and the iterator's whole state is
``(epoch, position, seed)``: the next batch is ``order(epoch)[position :
position + batch_size]``. Saving ``state()`` in a checkpoint and calling
``restore`` on a fresh iterator therefore replays exactly the batches an
uninterrupted run would have produced. Iteration never ends; the trainer
decides how many steps to take.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np

_STATE_KEYS = ("epoch", "position", "seed")


class PromptIterator:
    """Yields batches of item indices, epoch after epoch.

    Example::

        it = PromptIterator(num_items=30, batch_size=8, seed=0)
        batch = next(it)            # int64 [8] indices into the dataset
        saved = it.state()          # {"epoch": 0, "position": 8, "seed": 0}
        it2 = PromptIterator(30, 8, seed=0)
        it2.restore(saved)          # next(it2) == next(it)
    """

    def __init__(
        self,
        num_items: int,
        batch_size: int,
        seed: int,
        *,
        shuffle: bool = True,
        drop_remainder: bool = True,
    ):
        """Creates the iterator at epoch 0, position 0.

        Args:
            num_items: How many items the dataset holds (>= 1).
            batch_size: Items per batch (>= 1; <= num_items if dropping).
            seed: A non-negative integer; epoch ``e`` is shuffled from
                ``(seed, e)``.
            shuffle: Reshuffle every epoch; otherwise use the items' order.
            drop_remainder: Skip the last ``num_items % batch_size`` items of
                each epoch so every batch has ``batch_size`` items (a different
                remainder each epoch when shuffling); otherwise the last batch
                of an epoch is smaller.

        Raises:
            ValueError: A bad size or seed.
        """
        if num_items < 1 or batch_size < 1:
            raise ValueError(
                f"num_items and batch_size must be >= 1, got {num_items}, {batch_size}"
            )
        if drop_remainder and batch_size > num_items:
            raise ValueError(
                f"batch_size {batch_size} > num_items {num_items} with drop_remainder: "
                "no full batch exists"
            )
        if not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
        self.num_items = int(num_items)
        self.batch_size = int(batch_size)
        self.seed = int(seed)
        self.shuffle = shuffle
        self.drop_remainder = drop_remainder
        self._epoch = 0
        self._position = 0
        self._order_cache: tuple[int, np.ndarray] | None = None

    @property
    def epoch_length(self) -> int:
        """Items visited per epoch."""
        if self.drop_remainder:
            return self.num_items - self.num_items % self.batch_size
        return self.num_items

    @property
    def batches_per_epoch(self) -> int:
        """Batches per epoch (the last one may be smaller without dropping)."""
        return -(-self.epoch_length // self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """Returns the order of epoch ``epoch``: int64 ``[num_items]``."""
        if self._order_cache is not None and self._order_cache[0] == epoch:
            return self._order_cache[1]
        if self.shuffle:
            rng = np.random.Generator(np.random.PCG64(np.random.SeedSequence([self.seed, epoch])))
            order = rng.permutation(self.num_items).astype(np.int64)
        else:
            order = np.arange(self.num_items, dtype=np.int64)
        self._order_cache = (epoch, order)
        return order

    def __iter__(self) -> PromptIterator:
        return self

    def __next__(self) -> np.ndarray:
        """Returns the next batch of indices, int64 ``[batch_size]`` (or fewer
        at an epoch's end without ``drop_remainder``)."""
        end = min(self._position + self.batch_size, self.epoch_length)
        batch = self.epoch_order(self._epoch)[self._position : end].copy()
        self._position = end
        if self._position >= self.epoch_length:
            self._epoch, self._position = self._epoch + 1, 0
        return batch

    def state(self) -> dict[str, int]:
        """Returns ``{"epoch", "position", "seed"}`` (plain ints) to checkpoint."""
        return {"epoch": self._epoch, "position": self._position, "seed": self.seed}

    def restore(self, state: Mapping[str, Any]) -> None:
        """Continues from a ``state()``: the following batches are exactly those
        the saved iterator would have produced next.

        Args:
            state: A dict from ``state()`` (values may be numpy/JAX scalars, as
                read back from a checkpoint).

        Raises:
            ValueError: Missing keys, another seed, or a position outside the epoch.
        """
        if set(state) != set(_STATE_KEYS):
            raise ValueError(f"iterator state needs keys {_STATE_KEYS}, got {sorted(state)}")
        epoch, position, seed = (int(state[k]) for k in _STATE_KEYS)
        if seed != self.seed:
            raise ValueError(f"iterator state has seed {seed}, this iterator has seed {self.seed}")
        if epoch < 0 or not 0 <= position < self.epoch_length:
            raise ValueError(
                f"iterator state epoch={epoch}, position={position} is outside "
                f"0 <= position < {self.epoch_length}"
            )
        self._epoch, self._position = epoch, position
