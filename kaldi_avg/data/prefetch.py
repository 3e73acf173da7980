"""Reading, checking, chunking and collating in a background thread while the model computes.

The worker runs the wrapped iterable (feature I/O and numpy work release the GIL for most of
their time) and keeps up to `depth` items ready.  For a CUDA device the worker pins each item
and the consumer copies it with `non_blocking=True`, so the host-to-device copy overlaps the
previous step's kernels.  `wait_seconds` is the time the consumer spent blocked on data: near
zero when loading keeps up.
"""
from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterable, Iterator
from typing import Generic, TypeVar

import torch

T = TypeVar("T")

_POLL_SECONDS = 0.05


class _End:
    pass


class _Failure:
    def __init__(self, error: BaseException):
        self.error = error


class Prefetcher(Generic[T]):
    """Iterate `iterable` through a background thread; items are moved to `device` (if given,
    via any `.to(device, non_blocking=...)` method).  Use as a context manager, or call
    `close()`, to stop the worker early; an exception in the worker is re-raised here with
    its original traceback."""

    def __init__(self, iterable: Iterable[T], depth: int = 2,
                 device: torch.device | str | None = None):
        if depth < 1:
            raise ValueError(f"depth must be >= 1, got {depth}")
        self.device = torch.device(device) if device is not None else None
        self._pin = self.device is not None and self.device.type == "cuda"
        self.wait_seconds = 0.0
        self.num_batches = 0
        self._queue: queue.Queue = queue.Queue(maxsize=depth)
        self._stop = threading.Event()
        self._finished = False
        # the worker gets no reference to self, so an abandoned Prefetcher is collected and closed
        self._thread = threading.Thread(target=_produce, name="kaldi-avg-prefetch", daemon=True,
                                        args=(iterable, self._queue, self._stop, self._pin))
        self._thread.start()

    def __iter__(self) -> Iterator[T]:
        return self

    def __next__(self) -> T:
        if self._finished:
            raise StopIteration
        started = time.perf_counter()
        item = self._queue.get()
        self.wait_seconds += time.perf_counter() - started
        if isinstance(item, _End):
            self.close()
            raise StopIteration
        if isinstance(item, _Failure):
            self.close()
            raise item.error
        self.num_batches += 1
        if self.device is not None:
            item = item.to(self.device, non_blocking=self._pin)
        return item

    def close(self) -> None:
        """Stop the worker and wait for it (at most the item it is producing now)."""
        self._finished = True
        self._stop.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                break
        if self._thread is not threading.current_thread():
            self._thread.join()

    @property
    def is_alive(self) -> bool:
        return self._thread.is_alive()

    def __enter__(self) -> Prefetcher[T]:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def __del__(self):
        if getattr(self, "_thread", None) is not None:
            self.close()


def _produce(iterable: Iterable, out: queue.Queue, stop: threading.Event, pin: bool) -> None:
    iterator = None
    try:
        iterator = iter(iterable)
        while not stop.is_set():
            try:
                item = next(iterator)
            except StopIteration:
                _put(out, _End(), stop)
                return
            if not _put(out, item.pin_memory() if pin else item, stop):
                return
    except BaseException as error:  # handed to the consumer, which re-raises it
        _put(out, _Failure(error), stop)
    finally:
        close = getattr(iterator, "close", None)
        if close is not None:
            close()


def _put(out: queue.Queue, item, stop: threading.Event) -> bool:
    """Blocking put that gives up once the consumer has closed."""
    while not stop.is_set():
        try:
            out.put(item, timeout=_POLL_SECONDS)
            return True
        except queue.Full:
            continue
    return False
