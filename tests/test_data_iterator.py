"""The resumable prompt iterator: determinism, epochs, and exact resume."""

import itertools

import numpy as np
import pytest

from ttrl_jax.data import PromptIterator


def take(it, n):
    return [b.tolist() for b in itertools.islice(it, n)]


def test_epochs_cover_items_and_reshuffle():
    it = PromptIterator(30, 8, seed=3)
    assert it.batches_per_epoch == 3
    epochs = [take(it, 3) for _ in range(3)]
    for batches in epochs:
        flat = list(itertools.chain(*batches))
        assert all(len(b) == 8 for b in batches) and len(set(flat)) == 24
        assert set(flat) <= set(range(30))
    assert epochs[0] != epochs[1] != epochs[2]  # Reshuffled from (seed, epoch).
    assert take(PromptIterator(30, 8, seed=3), 9) == list(
        itertools.chain(*epochs)
    )  # Deterministic.
    assert take(PromptIterator(30, 8, seed=4), 3) != epochs[0]


def test_partial_last_batch_and_no_shuffle():
    it = PromptIterator(5, 2, seed=0, shuffle=False, drop_remainder=False)
    assert take(it, 4) == [[0, 1], [2, 3], [4], [0, 1]]
    assert it.state() == {"epoch": 1, "position": 2, "seed": 0}
    it = PromptIterator(7, 3, seed=1, drop_remainder=False)
    first = take(it, 3)
    assert [len(b) for b in first] == [3, 3, 1] and sorted(itertools.chain(*first)) == list(
        range(7)
    )


@pytest.mark.parametrize("drop_remainder", [True, False])
@pytest.mark.parametrize("stop", [0, 1, 2, 3, 7])
def test_restore_gives_the_same_following_batches(drop_remainder, stop):
    reference = PromptIterator(11, 4, seed=5, drop_remainder=drop_remainder)
    expected = take(reference, 12)
    run = PromptIterator(11, 4, seed=5, drop_remainder=drop_remainder)
    assert take(run, stop) == expected[:stop]
    saved = run.state()
    assert set(saved) == {"epoch", "position", "seed"}
    assert all(type(v) is int for v in saved.values())
    resumed = PromptIterator(11, 4, seed=5, drop_remainder=drop_remainder)
    resumed.restore({k: np.int64(v) for k, v in saved.items()})  # As read from a checkpoint.
    assert take(resumed, 12 - stop) == expected[stop:]


def test_bad_arguments_and_states():
    with pytest.raises(ValueError, match="no full batch"):
        PromptIterator(3, 4, seed=0)
    with pytest.raises(ValueError, match="seed"):
        PromptIterator(3, 1, seed=-1)
    it = PromptIterator(10, 4, seed=0)
    with pytest.raises(ValueError, match="seed 1"):
        it.restore({"epoch": 0, "position": 0, "seed": 1})
    with pytest.raises(ValueError, match="outside"):
        it.restore({"epoch": 0, "position": 8, "seed": 0})  # Past the last full batch.
    with pytest.raises(ValueError, match="needs keys"):
        it.restore({"epoch": 0, "position": 0})
