"""A single inference thread with a one-slot mailbox: the newest frame wins.

A LiDAR node must never queue frames behind a slow model (latency would grow without bound), so while
one frame is being processed at most one more waits; a newer frame replaces the waiting one and the
replacement is counted as a drop.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Generic, TypeVar

__all__ = ["LatestWinsWorker"]

T = TypeVar("T")


class LatestWinsWorker(Generic[T]):
    """Runs ``handler(item)`` for submitted items on one thread, one at a time, newest pending first.

    ``on_error(item, exc)`` receives exceptions from the handler; the thread keeps running.
    """

    def __init__(self, handler: Callable[[T], None], *, on_error: Callable[[T, BaseException], None] | None = None,
                 name: str = "i2p-inference") -> None:
        self._handler = handler
        self._on_error = on_error
        self._cond = threading.Condition()
        self._pending: T | None = None
        self._has_pending = False
        self._busy = False
        self._stopping = False
        self.submitted = 0
        self.replaced = 0
        self.completed = 0
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, item: T) -> bool:
        """Queue ``item``; returns True when it replaced a waiting item (that item is dropped)."""
        with self._cond:
            if self._stopping:
                return False
            dropped = self._has_pending
            self._pending, self._has_pending = item, True
            self.submitted += 1
            self.replaced += dropped
            self._cond.notify()
        return dropped

    @property
    def busy(self) -> bool:
        with self._cond:
            return self._busy or self._has_pending

    def wait_idle(self, timeout: float | None = None) -> bool:
        """Block until nothing is running or waiting (tests, benchmarks); False on timeout."""
        with self._cond:
            return self._cond.wait_for(lambda: not (self._busy or self._has_pending), timeout)

    def stop(self, timeout: float = 10.0) -> bool:
        """Drop the waiting item, let the running one finish (up to ``timeout``); True if the thread ended."""
        with self._cond:
            self._stopping = True
            self._pending, self._has_pending = None, False
            self._cond.notify_all()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def _run(self) -> None:
        while True:
            with self._cond:
                self._cond.wait_for(lambda: self._has_pending or self._stopping)
                if self._stopping:
                    return
                item, self._pending, self._has_pending = self._pending, None, False
                self._busy = True
            try:
                self._handler(item)
            except Exception as exc:  # the node must survive any frame
                if self._on_error is not None:
                    self._on_error(item, exc)
            finally:
                with self._cond:
                    self._busy = False
                    self.completed += 1
                    self._cond.notify_all()
