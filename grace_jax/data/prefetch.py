"""Batches put on the devices ahead of the step that uses them, without losing exact resumption.

`DevicePrefetcher(iterator, put, depth=1)` wraps the host-side data iterator (grain's DataLoader
iterator). A background thread takes the next host batch and `put`s it (the trainer's
`sharding.global_batch`: a device_put with the step's input sharding) while the current step runs,
so the step finds its input already on the devices: double-buffered with the default depth of 1
(one batch in use by the step, one ready). At most `depth` batches are ever taken from the host
iterator and not yet handed out.

Checkpoints: the thread has taken batches the loop has not consumed yet, so the host iterator's own
state is ahead of the training state. The prefetcher therefore records the host iterator's state
right after taking each batch and hands it out with that batch; its `get_state()` is the state after
the last batch *consumed* (handed out by `__next__`), which is what a checkpoint of the training step
that used that batch must hold. `set_state()` (a restore) drops whatever was prefetched, sets the
host iterator and starts again from there. Both have grain's signatures, so
`grain.checkpoint.CheckpointSave/CheckpointRestore` take the prefetcher as they take grain's iterator.

`wait_s` adds up the time `__next__` spent waiting for a batch (zero when input keeps up): the
trainer's progress line reports it beside the step time.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

_END = object()  # the host iterator is exhausted


class _Failed:
    """An exception raised by the host iterator or `put`, re-raised in the consumer's thread."""

    def __init__(self, error: BaseException):
        self.error = error


class DevicePrefetcher:
    """Iterator of device batches, `depth` batches ahead; checkpointable like grain's iterator."""

    def __init__(self, iterator: Iterator, put: Callable[[Any], Any], *, depth: int = 1):
        if depth < 1:
            raise ValueError(f"prefetch depth must be >= 1, got {depth}")
        self._iterator = iterator
        self._put = put
        self._depth = depth
        self._state = iterator.get_state()  # after the last consumed batch; none consumed yet
        self._thread: threading.Thread | None = None
        self._queue: queue.Queue = queue.Queue()
        self._slots = threading.Semaphore(depth)
        self._stop = threading.Event()
        self.wait_s = 0.0

    # -------------------------------------------------------------------------------- the thread
    def _fill(self, stop: threading.Event, slots: threading.Semaphore, out: queue.Queue) -> None:
        while True:
            slots.acquire()  # a free buffer: at most `depth` batches taken and not handed out
            if stop.is_set():
                return
            try:
                host = next(self._iterator)
            except StopIteration:
                out.put(_END)
                return
            except BaseException as e:  # noqa: BLE001 - handed to the consumer, raised there
                out.put(_Failed(e))
                return
            try:
                state = self._iterator.get_state()  # before any later batch moves it on
                item = (self._put(host), state)
            except BaseException as e:  # noqa: BLE001
                out.put(_Failed(e))
                return
            out.put(item)

    def start_prefetch(self) -> None:
        """Starts the thread if it is not running (grain's restore handler calls this too)."""
        if self._thread is None:
            self._stop = threading.Event()
            self._slots = threading.Semaphore(self._depth)
            self._queue = queue.Queue()
            self._thread = threading.Thread(
                target=self._fill,
                args=(self._stop, self._slots, self._queue),
                name="device-prefetch",
                daemon=True,
            )
            self._thread.start()

    def close(self) -> None:
        """Stops the thread and drops the prefetched batches; the host iterator is set back to the
        last consumed batch's state, so iterating on continues with the next unconsumed batch."""
        thread, self._thread = self._thread, None
        if thread is None:
            return
        self._stop.set()
        self._slots.release()  # wakes a thread waiting for a free buffer
        thread.join()
        self._iterator.set_state(self._state)

    # -------------------------------------------------------------------------------- the iterator
    def __iter__(self) -> DevicePrefetcher:
        return self

    def __next__(self):
        self.start_prefetch()
        t0 = time.perf_counter()
        item = self._queue.get()
        self.wait_s += time.perf_counter() - t0
        if item is _END:
            self.close()
            raise StopIteration
        if isinstance(item, _Failed):
            self.close()
            raise item.error
        batch, self._state = item
        self._slots.release()
        return batch

    # -------------------------------------------------------------------------------- checkpoints
    def get_state(self):
        """The host iterator's state after the last batch handed out (not after the prefetched
        ones)."""
        return self._state

    def set_state(self, state) -> None:
        """Restores: prefetched batches are dropped and the host iterator continues from `state`."""
        self.close()
        self._iterator.set_state(state)
        self._state = state
