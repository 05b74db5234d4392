"""Approximate-time synchronization of message streams (image + cloud, depth + camera_info ...).

The package's own implementation, used with and without a ROS install. Constructor arguments and the
matching rule are those of the Python ``message_filters`` (tested against it on random sequences,
``tests/ros/test_sync.py``):

* ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)`` subscribes and passes every
  message to the filters connected to it (``message_info=f``: ``f(msg, MessageInfo)`` first, with the
  publisher's GID and sequence number; :meth:`Subscriber.set_history_depth` re-subscribes with another depth).
* ``ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False, max_bytes=None)`` keeps, per
  input, up to ``queue_size`` messages keyed by header stamp (and, with ``max_bytes``, at most that many
  bytes of message data, at least the newest message: a byte bound for large clouds). When a message
  arrives, the candidates of every other input within ``slop`` seconds of its stamp are tried closest
  first; the first combination whose stamps span strictly less than ``slop`` is emitted as
  ``callback(msg_0, ..., msg_n-1, *args)`` (inputs in the order of ``fs``) and removed from the queues.
  Messages that never find partners stay queued until they are pushed out.
* ``registerCallback(cb, *args)`` returns a connection id.

Deliberate differences from the Python ``message_filters``, all about faults:

* **Overflow drops the message that has waited longest** (C++ message_filters' ApproximateTime rule), not
  the smallest stamp. With the smallest-stamp rule a burst of future-stamped messages (a driver clock that
  jumped) fills the queue, every later message is the smallest and is dropped on arrival, and the input
  never pairs again; here the burst is pushed out by the next messages. While an input's stamps never go
  backwards the two rules drop the same message. Messages dropped by the count or byte bound are
  counted per input (``evicted``, ``evicted_for_bytes``).
* **A callback's exception never reaches the executor** (where it ends the node; ``message_filters`` would
  also keep its lock and block every later message): it is logged (the first with its traceback) and
  counted in the filter's ``callback_errors``. :func:`guarded` does the same for any other callback.

Headerless messages are refused (logged once) unless ``allow_headerless`` is set, in which case the
receive time (ROS clock) is used as their stamp.
"""
from __future__ import annotations

import copy
import functools
import itertools
import logging
import threading
from typing import Any, Callable, Dict, List, Optional, Sequence

from ..io.msgconv import stamp_to_ns

NS_PER_S = 1_000_000_000
_log = logging.getLogger(__name__)


class CallbackErrors:
    """Counts exceptions of callbacks that must not reach the executor and logs them: the first with its
    traceback, later ones as one line when the count reaches 2, 4, 8, ... (a broken callback on a 30 Hz
    topic must not flood the log)."""

    def __init__(self) -> None:
        self.count = 0

    def report(self, callback: Callable, exc: BaseException) -> None:
        self.count += 1
        name = getattr(callback, "__qualname__", repr(callback))
        if self.count == 1:
            _log.error("callback %s raised %s: %s (message dropped; the node goes on)", name, type(exc).__name__,
                       exc, exc_info=exc)
        elif self.count & (self.count - 1) == 0:
            _log.error("callback %s raised %s: %s (%d callback errors so far, messages dropped)", name,
                       type(exc).__name__, exc, self.count)


def guarded(callback: Callable, errors: Optional[CallbackErrors] = None,
            on_error: Optional[Callable[..., Any]] = None) -> Callable:
    """``callback`` wrapped for an executor: an exception is counted in ``errors`` (a new
    :class:`CallbackErrors` when None; the wrapper's ``.errors``), logged, and then handed to
    ``on_error(exc, *args)`` when given (e.g. to answer the part with an ERROR result); it never propagates.
    An exception of ``on_error`` itself is counted and logged too."""
    counter = errors if errors is not None else CallbackErrors()

    @functools.wraps(callback)
    def call(*args: Any, **kwargs: Any) -> Any:
        try:
            return callback(*args, **kwargs)
        except Exception as exc:  # noqa: BLE001 - the point: no exception ends the node
            counter.report(callback, exc)
            if on_error is not None:
                try:
                    on_error(exc, *args)
                except Exception as inner:  # noqa: BLE001
                    counter.report(on_error, inner)
            return None

    call.errors = counter
    return call


class SimpleFilter:
    """A message source that calls every registered ``callback(*messages, *args)``; a callback's exception
    is counted in ``callback_errors`` and logged, and the other callbacks still run."""

    def __init__(self) -> None:
        self.callbacks: Dict[int, tuple] = {}
        self.errors = CallbackErrors()

    @property
    def callback_errors(self) -> int:
        return self.errors.count

    def registerCallback(self, cb: Callable, *args: Any) -> int:  # noqa: N802 (message_filters API)
        connection = len(self.callbacks)
        self.callbacks[connection] = (cb, args)
        return connection

    def signalMessage(self, *msgs: Any) -> None:  # noqa: N802 (message_filters API)
        for cb, args in list(self.callbacks.values()):
            try:
                cb(*(msgs + args))
            except Exception as exc:  # noqa: BLE001 - see the class docstring
                self.errors.report(cb, exc)


def message_bytes(msg: Any) -> int:
    """Bytes of a message's ``data`` payload (Image, PointCloud2, ...; 0 for messages without one)."""
    data = getattr(msg, "data", None)
    try:
        return len(data) if data is not None and not isinstance(data, (int, float, str)) else 0
    except TypeError:
        return 0


class Subscriber(SimpleFilter):
    """``message_filters.Subscriber``: ``Subscriber(node, msg_type, topic, qos_profile=10, **kwargs)``;
    ``message_info``: ``message_info(msg, info)`` (rclpy MessageInfo) before the connected filters."""

    def __init__(self, node: Any, msg_type: Any, topic: str, qos_profile: Any = 10,
                 message_info: Optional[Callable[[Any, Any], None]] = None, **kwargs: Any) -> None:
        super().__init__()
        self.node = node
        self.topic = topic
        if not isinstance(qos_profile, int):  # its own copy: QoS overrides are applied to it in place
            qos_profile = copy.copy(qos_profile)
        self.msg_type, self.qos_profile, self._kwargs, self._message_info = msg_type, qos_profile, kwargs, message_info
        self.sub = self._subscribe(qos_profile, kwargs)

    def _subscribe(self, qos_profile: Any, kwargs: Dict[str, Any]) -> Any:
        callback = self.callback if self._message_info is None else self._with_info
        return self.node.create_subscription(self.msg_type, self.topic, callback, qos_profile, **kwargs)

    def callback(self, msg: Any) -> None:
        self.signalMessage(msg)

    def _with_info(self, msg: Any, info: Any) -> None:  # two arguments: rclpy passes the MessageInfo
        try:
            self._message_info(msg, info)
        except Exception as exc:  # noqa: BLE001 - see SimpleFilter
            self.errors.report(self._message_info, exc)
        self.signalMessage(msg)

    @property
    def history_depth(self) -> int:
        return int(getattr(self.qos_profile, "depth", self.qos_profile))

    def set_history_depth(self, depth: int) -> None:
        """Subscribe again with a KEEP_LAST history of ``depth`` (messages in flight meanwhile may be lost);
        QoS overrides given at the first subscription stay applied (and are not read again)."""
        qos = copy.copy(self.qos_profile) if not isinstance(self.qos_profile, int) else int(depth)
        if not isinstance(qos, int):
            qos.depth = int(depth)
        self.node.destroy_subscription(self.sub)
        self.qos_profile = qos
        self.sub = self._subscribe(qos, {k: v for k, v in self._kwargs.items() if k != "qos_overriding_options"})

    def getTopic(self) -> str:  # noqa: N802 (message_filters API)
        return self.topic


class ApproximateTimeSynchronizer(SimpleFilter):
    """``message_filters.ApproximateTimeSynchronizer(fs, queue_size, slop, allow_headerless=False)``.

    fs: input filters (e.g. Subscribers); queue_size: messages kept per input; slop: seconds.
    """

    def __init__(self, fs: Sequence[Any], queue_size: int, slop: float, allow_headerless: bool = False,
                 max_bytes: Optional[int] = None) -> None:
        super().__init__()
        if int(queue_size) < 1:
            raise ValueError(f"queue_size must be >= 1, got {queue_size}")
        if not float(slop) >= 0.0:
            raise ValueError(f"slop must be >= 0 seconds, got {slop}")
        self.queue_size = int(queue_size)
        self.max_bytes = None if max_bytes is None else int(max_bytes)
        self.slop_ns = int(float(slop) * NS_PER_S)  # as rclpy's Duration(seconds=slop)
        self.allow_headerless = allow_headerless
        self.lock = threading.Lock()
        self._warned_headerless = False
        self.queues: List[Dict[int, Any]] = [{} for _ in fs]  # stamp -> message, in arrival order
        self.evicted = [0 for _ in fs]  # messages dropped by the count or byte bound, per input
        self.evicted_for_bytes = [0 for _ in fs]
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

    def evict(self, queue: Dict[int, Any]) -> None:
        """Drop the message that has waited longest (see the module docstring)."""
        del queue[next(iter(queue))]

    def queue_bytes(self, index: int) -> int:
        """Bytes of message data waiting in input ``index``'s queue."""
        return sum(message_bytes(msg) for msg in self.queues[index].values())

    def add(self, msg: Any, my_queue: Dict[int, Any], my_queue_index: Optional[int] = None) -> None:
        stamp = self._stamp_ns(msg)
        if stamp is None:
            return
        with self.lock:
            index = my_queue_index if my_queue_index is not None else \
                next(i for i, q in enumerate(self.queues) if q is my_queue)
            my_queue[stamp] = msg  # a repeated stamp replaces the message and keeps its place
            while len(my_queue) > self.queue_size:
                self.evict(my_queue)
                self.evicted[index] += 1
            while self.max_bytes is not None and len(my_queue) > 1 and self.queue_bytes(index) > self.max_bytes:
                self.evict(my_queue)
                self.evicted[index] += 1
                self.evicted_for_bytes[index] += 1
            if stamp not in my_queue:  # pushed out at once: nothing to pair
                return
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


__all__ = ["Subscriber", "ApproximateTimeSynchronizer", "SimpleFilter", "CallbackErrors", "guarded", "message_bytes"]
