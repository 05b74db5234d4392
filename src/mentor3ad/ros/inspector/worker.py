"""The inspector's inference thread: a bounded queue of pairs and one worker that judges them in batches.

:class:`Worker` takes pairs from the executor thread (:meth:`Worker.submit`, never blocking) and hands
them to ``judge(batch)`` on its own thread, oldest first, up to ``batch_size`` waiting pairs at a time (it
never waits for a batch to fill: a lone pair is judged at once). Queue policies:

* ``all``: every pair is kept in order, up to ``queue_size`` waiting; an overflowing pair is handed to
  ``refuse(pair, reason)`` (the inspector answers it SKIPPED: never a silent drop);
* ``latest``: only the newest pair waits (capacity 1); a waiting pair that a newer one replaces is handed
  to ``drop(pair)`` and counted in :attr:`Worker.dropped_stale`.

While ``ready()`` is false (the first model is loading) pairs wait in the queue; :meth:`wake` re-checks.
"""
from __future__ import annotations

import collections
import threading
from typing import Callable, Deque, List, Optional

from .part import Pair


class Worker:
    """Bounded queue + one inference thread (see module docstring)."""

    def __init__(self, judge: Callable[[List[Pair]], None], refuse: Callable[[Pair, str], None],
                 policy: str = "all", queue_size: int = 8, batch_size: int = 1,
                 drop: Optional[Callable[[Pair], None]] = None, ready: Callable[[], bool] = lambda: True,
                 on_crash: Optional[Callable[[List[Pair], Exception], None]] = None,
                 setup: Callable[[], None] = lambda: None) -> None:
        if policy not in ("all", "latest"):
            raise ValueError(f"queue policy must be all or latest, got {policy!r}")
        self.policy = policy
        self.queue_size = int(queue_size) if policy == "all" else 1
        self.batch_size = max(1, int(batch_size))
        self.dropped_stale = 0
        self._judge, self._refuse, self._drop, self._ready = judge, refuse, drop, ready
        self._on_crash = on_crash
        self._setup = setup  # runs first on the inference thread (its torch threads: the process's budget)
        self._queue: Deque[Pair] = collections.deque()
        self._cv = threading.Condition()
        self._stopping = False
        self._thread: Optional[threading.Thread] = None

    @property
    def queued(self) -> int:
        """Pairs waiting for the worker."""
        return len(self._queue)

    def start(self, name: str = "inspector-inference") -> None:
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def submit(self, pair: Pair) -> None:
        """Queue ``pair`` (any thread, never blocks); see the module docstring for the policies."""
        stale: List[Pair] = []
        with self._cv:
            if self.policy == "latest":
                stale = list(self._queue)
                self.dropped_stale += len(stale)
                self._queue.clear()
            full = len(self._queue) >= self.queue_size
            if not full:
                self._queue.append(pair)
                self._cv.notify()
        for old in stale:
            if self._drop is not None:
                self._drop(old)
        if full:
            self._refuse(pair, f"inference queue full (queue_size={self.queue_size})")

    def wake(self) -> None:
        """Re-check ``ready()`` (e.g. after a model load)."""
        with self._cv:
            self._cv.notify_all()

    def _take(self) -> Optional[List[Pair]]:
        """The next batch (oldest first), or None when stopping."""
        with self._cv:
            while not self._stopping and (not self._queue or not self._ready()):
                self._cv.wait(timeout=0.5)
            if self._stopping:
                return None
            return [self._queue.popleft() for _ in range(min(self.batch_size, len(self._queue)))]

    def _run(self) -> None:
        self._setup()
        while True:
            batch = self._take()
            if batch is None:
                return
            try:
                self._judge(batch)
            except Exception as exc:  # noqa: BLE001 - keep serving: report and go on with the next batch
                if self._on_crash is None:
                    raise
                self._on_crash(batch, exc)

    def stop(self, timeout: float = 5.0) -> List[Pair]:
        """Stop the thread after the batch in flight; returns the pairs still waiting (never judged)."""
        with self._cv:
            self._stopping = True
            self._cv.notify_all()
            left = list(self._queue)
            self._queue.clear()
        if self._thread is not None:
            self._thread.join(timeout=timeout)
        return left


__all__ = ["Worker"]
