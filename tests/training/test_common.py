"""The shared batch stream: in-process draws follow the run's generator; worker draws are
reproducible for a given worker count and differ between workers."""

from itertools import islice

import numpy as np

from archive_search.training.common import batch_stream


def _draw(rng: np.random.Generator) -> int:
    return int(rng.integers(1 << 40))


def test_in_process_batches_continue_the_given_generator():
    drawn = list(islice(batch_stream(_draw, np.random.default_rng(7)), 4))
    expected = np.random.default_rng(7)
    assert drawn == [_draw(expected) for _ in range(4)]


def test_worker_batches_are_reproducible_and_differ_between_workers():
    first = list(islice(batch_stream(_draw, np.random.default_rng(0), workers=2, seed=3, start_step=10), 6))
    again = list(islice(batch_stream(_draw, np.random.default_rng(99), workers=2, seed=3, start_step=10), 6))
    assert first == again
    # round robin: worker 0 gives items 0, 2, 4 and worker 1 items 1, 3, 5, each from its own generator
    worker0 = np.random.default_rng([3, 10, 0])
    worker1 = np.random.default_rng([3, 10, 1])
    assert first[0::2] == [_draw(worker0) for _ in range(3)]
    assert first[1::2] == [_draw(worker1) for _ in range(3)]
    # a resumed run (another start step) draws new batches
    later = list(islice(batch_stream(_draw, np.random.default_rng(0), workers=2, seed=3, start_step=11), 6))
    assert later != first
