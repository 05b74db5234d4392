"""Approximate-time synchronization of message streams (image + cloud, depth + camera_info ...).

Uses the real ``message_filters`` package when it is importable (a ROS 2 install). Otherwise the
minimal equivalents below are used; they have the same constructor arguments and the same callback
semantics as ``message_filters`` (ROS 2 Python implementation):

* ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`` subscribes and passes every
  message to the filters connected to it.
* ``ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)`` keeps, per input,
  the last ``queue_size`` messages keyed by header stamp (the oldest is dropped on overflow). When a
  message arrives, the candidates of every other input within ``slop`` seconds of its stamp are tried
  closest first; the first combination whose stamps span strictly less than ``slop`` is emitted as
  ``callback(msg_0, ..., msg_n-1, *args)`` (inputs in the order of ``fs``) and removed from the
  queues. Messages that never find partners stay queued until they are pushed out.
* ``registerCallback(cb, *args)`` returns a connection id.

Headerless messages are refused (logged once) unless ``allow_headerless`` is set, in which case the
receive time (ROS clock) is used as their stamp.
"""
from __future__ import annotations

import itertools
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..io.msgconv import stamp_to_ns

try:  # pragma: no cover - depends on the machine
    import message_filters
except ImportError:
    message_filters = None
USING_MESSAGE_FILTERS = message_filters is not None

_log = logging.getLogger(__name__)


class SimpleFilter:
    """A message source that calls every registered ``callback(*messages, *args)``."""

    def __init__(self) -> None:
        self.callbacks: Dict[int, tuple] = {}

    def registerCallback(self, cb: Callable, *args: Any) -> int:  # noqa: N802 (message_filters API)
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msgs: Any) -> None:  # noqa: N802 (message_filters API)
        for cb, args in list(self.callbacks.values()):
            cb(*(msgs + args))


class _Subscriber(SimpleFilter):
    """``message_filters.Subscriber``: ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos_profile: Any = 10, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        self.sub = node.create_subscription(msg_type, topic, self.callback, qos_profile, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def getTopic(self) -> str:  # noqa: N802 (message_filters API)
        return self.topic


class _ApproximateTimeSynchronizer(SimpleFilter):
    """``message_filters.ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)``.

    fs: input filters (e.g. Subscribers); queue_size: messages kept per input; slop: seconds.
    """

    def __init__(self, fs: Sequence[Any], queue_size: int, slop: float, allow_headerless: bool = False) -> None:
        super().__init__()
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not float(slop) >= 0.0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.queue_size = int(queue_size)
        self.slop_ns = int(round(float(slop) * 1e9))
        self.allow_headerless = allow_headerless
        self.lock = threading.Lock()
        self._warned_headerless = False
        self.queues: List[Dict[int, Any]] = [{} for _ in fs]
        self.input_connections = [f.registerCallback(self.add, q, i) for i, (f, q) in enumerate(zip(fs, self.queues))]

    def _stamp_ns(self, msg: Any) -> Optional[int]:
        header = getattr(msg, "header", None)
        if header is not None and hasattr(header, "stamp"):
            return stamp_to_ns(header.stamp)
        if not self.allow_headerless:
            if not self._warned_headerless:
                _log.warning("message without header stamp ignored (set allow_headerless to use receive time)")
                self._warned_headerless = True
            return None
        from rclpy.clock import ROSClock

        return int(ROSClock().now().nanoseconds)

    def add(self, msg: Any, my_queue: Dict[int, Any], my_queue_index: Optional[int] = None) -> None:
        stamp = self._stamp_ns(msg)
        if stamp is None:
            return
        with self.lock:
            my_queue[stamp] = msg
            while len(my_queue) > self.queue_size:
                del my_queue[min(my_queue)]
            others = [i for i in range(len(self.queues)) if i != my_queue_index]
            candidates = []  # per other input: its stamps within slop, closest first
            for i in others:
                near = sorted((s for s in self.queues[i] if abs(s - stamp) <= self.slop_ns), key=lambda s: abs(s - stamp))
                if not near:
                    return
                candidates.append(near)
            for combination in itertools.product(*candidates):
                stamps = dict(zip(others, combination))
                if my_queue_index is not None:
                    stamps[my_queue_index] = stamp
                chosen = [stamps[i] for i in range(len(self.queues))]
                if max(chosen) - min(chosen) < self.slop_ns:
                    msgs = [q.pop(s) for q, s in zip(self.queues, chosen)]
                    break
            else:
                return
        self.signalMessage(*msgs)


Subscriber = message_filters.Subscriber if USING_MESSAGE_FILTERS else _Subscriber
ApproximateTimeSynchronizer = (message_filters.ApproximateTimeSynchronizer if USING_MESSAGE_FILTERS
                               else _ApproximateTimeSynchronizer)

__all__ = [
    "Subscriber",
    "ApproximateTimeSynchronizer",
    "SimpleFilter",
    "USING_MESSAGE_FILTERS",
]
