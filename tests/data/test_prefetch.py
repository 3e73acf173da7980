"""Prefetcher: order, read-ahead, exception propagation, shutdown."""
import gc
import threading
import traceback

import numpy as np
import pytest
import torch

from kaldi_avg.data import Chunk, LoadedUtterance, Prefetcher, collate


def test_items_arrive_in_order_and_are_counted():
    items = [torch.full((2,), i) for i in range(10)]
    prefetcher = Prefetcher(items, depth=2, device="cpu")
    received = list(prefetcher)
    assert [int(x[0]) for x in received] == list(range(10))
    assert prefetcher.num_batches == 10 and prefetcher.wait_seconds >= 0.0
    assert not prefetcher.is_alive


def test_worker_reads_ahead_while_the_consumer_holds_an_item():
    requested = [threading.Event() for _ in range(6)]

    def produce():
        for i in range(6):
            requested[i].set()
            yield i

    with Prefetcher(produce(), depth=2) as prefetcher:
        assert next(prefetcher) == 0
        # with item 0 taken and 1, 2 queued, the worker is already producing item 3
        assert requested[3].wait(timeout=30)
        assert not requested[5].is_set()
        assert list(prefetcher) == [1, 2, 3, 4, 5]


def failing_source():
    yield 1
    yield 2
    raise ValueError("broken utterance u7")


def test_worker_exception_is_reraised_with_its_traceback():
    prefetcher = Prefetcher(failing_source())
    assert next(prefetcher) == 1 and next(prefetcher) == 2
    with pytest.raises(ValueError, match="u7") as error:
        next(prefetcher)
    frames = [frame.name for frame in traceback.extract_tb(error.value.__traceback__)]
    assert "failing_source" in frames
    assert not prefetcher.is_alive


def endless(closed: threading.Event):
    try:
        i = 0
        while True:
            yield i
            i += 1
    finally:
        closed.set()


def test_early_exit_stops_the_worker_and_closes_the_source():
    closed = threading.Event()
    with Prefetcher(endless(closed), depth=3) as prefetcher:
        for item in prefetcher:
            if item == 4:
                break
    assert not prefetcher.is_alive and closed.is_set()
    with pytest.raises(StopIteration):
        next(prefetcher)


def test_abandoned_prefetcher_shuts_down():
    closed = threading.Event()
    prefetcher = Prefetcher(endless(closed))
    next(prefetcher)
    del prefetcher
    gc.collect()
    assert closed.wait(timeout=30)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_items_are_pinned_and_copied():
    data = LoadedUtterance(np.ones((30, 3), np.float32), np.zeros(30, np.int64), None)
    mb = collate([("u", Chunk(0, 20, 2, 0, (1.0,) * 20, 0), data)], 1, 1)
    with Prefetcher([mb, mb], device="cuda") as prefetcher:
        moved = list(prefetcher)
    assert all(m.features.is_cuda and m.targets.is_cuda for m in moved)
