"""The inspector's input side: subscriptions, approximate-time pairing, and exactly one outcome per image.

The image is the trigger: every part has exactly one image, while 3D data may come late, never, or from a
driver that drops frames. :class:`Intake` subscribes to the input mode's topics (:mod:`mentor3ad.io.inputs`)
and guarantees that every image it receives ends in exactly one call:

* ``on_pair(messages, received)`` when the synchronizer completes the image's set (``messages``: {topic key:
  message}, ``received``: time.monotonic() of completion);
* ``on_lone(image, reason)`` when no complete set arrived within ``pair_timeout`` seconds (wall clock) of
  the image: "no points within 1 s of the image". A set that completes after that is dropped and counted
  (``late``): the part already has its answer.

3D messages without an image are counted per topic (``unpaired_<key>`` in :meth:`counts`); they cannot be
answered, having no part to answer for. Counters per topic make a transport loss visible at a glance, with
the middleware's own events: ``lost_<key>`` (messages the RMW reports lost; Fast DDS undercounts them) and
``incompatible_qos_<key>`` (publishers whose QoS cannot match this subscription, e.g. a best-effort driver
and ``input_reliability: reliable``: nothing will ever arrive from them; logged as an error).

Losses the middleware does not report are found from the driver's side: every message carries its
publisher's GID and publication sequence number (rclpy's MessageInfo); a jump in one publisher's numbers
is that many messages lost on the way or overwritten in the subscription's history (``seq_gaps_<key>``).
Large messages are bounded by bytes (``max_bytes`` per topic): the synchronizer's queue keeps at most
that much message data (``queue_overflow_<key>`` counts what it dropped), and the first message of a
topic sets the subscription's history depth to at most ``max_bytes`` / its size (logged). A lost image
leaves its part without any answer, so every kind of loss is a fault: :class:`LossMonitor` makes it a
WARN (ERROR above a rate) in /diagnostics, logged once when a burst of losses starts and once when it ends.
An exception in the pairing callback answers the image with an ERROR result (``callback_errors``).
Callbacks run on the node's executor thread; the counters are read from the same thread.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Deque, Dict, Mapping, Optional, Set, Tuple

from ...io.inputs import TOPICS, InputMode
from ...io.msgconv import header_stamp_ns
from ..messages import message_class
from ..sync import ApproximateTimeSynchronizer, Subscriber, guarded, message_bytes

EXPIRED_MEMORY = 2048  # image stamps remembered after their timeout (to drop late sets)
LOSS_WINDOW_S = 60.0  # the diagnostics level covers the losses of this many seconds
BURST_QUIET_S = 5.0  # a burst of losses ends after this many seconds without one


class LossMonitor:
    """Input losses per topic -> a diagnostics level and message; logs once when a burst of losses starts
    and once when it ends (``log(text)``). :meth:`update` with the running totals (executor thread)."""

    def __init__(self, log: Callable[[str], None], window_s: float = LOSS_WINDOW_S, quiet_s: float = BURST_QUIET_S):
        self._log, self.window_s, self.quiet_s = log, float(window_s), float(quiet_s)
        self._last: Dict[str, int] = {}
        self._events: Deque[Tuple[float, str, int]] = collections.deque()  # (time, topic, messages lost)
        self._received: Deque[Tuple[float, int]] = collections.deque()  # (time, received total)
        self._burst: Optional[Dict[str, Any]] = None

    def update(self, now: float, lost: Mapping[str, int], received_total: int) -> None:
        """``lost``: {topic: messages lost so far}; ``received_total``: input messages received so far."""
        fresh = {topic: count - self._last.get(topic, 0) for topic, count in lost.items()}
        self._last = dict(lost)
        if not self._received or self._received[-1][1] != received_total:
            self._received.append((now, received_total))
        for topic, count in fresh.items():
            if count <= 0:
                continue
            self._events.append((now, topic, count))
            if self._burst is None:
                self._burst = {"start": now, "lost": collections.Counter()}
                self._log(f"input messages lost on {topic}: {count} (a lost image leaves its part without a "
                          f"result); /diagnostics counts them per topic until the burst ends")
            self._burst["lost"][topic] += count
            self._burst["last"] = now
        while self._events and now - self._events[0][0] > self.window_s:
            self._events.popleft()
        while len(self._received) > 1 and now - self._received[1][0] > self.window_s:
            self._received.popleft()
        if self._burst is not None and now - self._burst["last"] > self.quiet_s:
            lost_text = ", ".join(f"{topic} {count}" for topic, count in sorted(self._burst["lost"].items()))
            self._log(f"input loss burst over: {lost_text} messages lost in "
                      f"{self._burst['last'] - self._burst['start']:.1f} s")
            self._burst = None

    def status(self, now: float, error_rate: float) -> Tuple[str, str]:
        """(level "OK" | "WARN" | "ERROR", message): WARN while messages were lost within the window, ERROR
        when more than ``error_rate`` of the messages (received + lost) were lost."""
        recent = [(topic, count) for when, topic, count in self._events if now - when <= self.window_s]
        if not recent:
            return "OK", ""
        lost: Dict[str, int] = collections.Counter()
        for topic, count in recent:
            lost[topic] += count
        received = self._received[-1][1] - self._received[0][1] if self._received else 0
        total = sum(lost.values())
        rate = total / max(1, total + received)
        text = ", ".join(f"{topic} {count}" for topic, count in sorted(lost.items()))
        level = "ERROR" if rate > error_rate else "WARN"
        return level, (f"input messages lost in the last {self.window_s:.0f} s: {text} ({rate:.1%} of "
                       f"{total + received}; see lost_, seq_gaps_, queue_overflow_<topic>)")


class Intake:
    """Subscriptions + synchronizer of one input mode with the per-image bookkeeping (see module doc)."""

    def __init__(self, node: Any, mode: InputMode, qos: Any, on_pair: Callable[[Dict[str, Any], float], None],
                 on_lone: Callable[[Any, str], None], sync_queue_size: int, slop: float, pair_timeout: float,
                 qos_overriding_options: Any = None, max_bytes: Optional[int] = None) -> None:
        from rclpy.clock import Clock, ClockType

        self.node = node
        self.mode = mode
        self.pair_timeout = float(pair_timeout)
        self.max_bytes = max_bytes
        self._on_pair = on_pair
        self._on_lone = on_lone
        self.received: Dict[str, int] = {key: 0 for key in mode.keys}
        self.lost: Dict[str, int] = {key: 0 for key in mode.keys}
        self.gaps: Dict[str, int] = {key: 0 for key in mode.keys}
        self._sequence: Dict[str, Dict[bytes, int]] = {key: {} for key in mode.keys}  # publisher GID -> last number
        self._sized: Set[str] = set()
        self.losses = LossMonitor(node.get_logger().warning)
        self.incompatible: Dict[str, int] = {key: 0 for key in mode.keys}
        self.paired = 0
        self.lone = 0
        self.late = 0
        self._pending: Dict[int, Tuple[Any, float]] = {}  # image stamp -> (image, arrival)
        self._expired: Deque[int] = collections.deque()
        self._expired_set: Set[int] = set()
        extra = {"qos_overriding_options": qos_overriding_options} if qos_overriding_options is not None else {}
        self.subscribers = []
        for key in mode.keys:
            subscriber = Subscriber(node, message_class(TOPICS[key].msg_type), TOPICS[key].relative, qos_profile=qos,
                                    message_info=self._sequence_check(key), event_callbacks=self._event_callbacks(key),
                                    **extra)
            subscriber.registerCallback(self._count, key)  # before the synchronizer's: counts first
            self.subscribers.append(subscriber)
        self._sync = ApproximateTimeSynchronizer(self.subscribers, int(sync_queue_size), float(slop),
                                                 max_bytes=max_bytes)
        self._sync.registerCallback(guarded(self._on_synced, self._sync.errors, on_error=self._pairing_failed))
        period = min(0.1, max(0.01, self.pair_timeout / 4.0))
        self._timer = node.create_timer(period, self._expire, clock=Clock(clock_type=ClockType.STEADY_TIME))

    def _event_callbacks(self, key: str) -> Any:
        from rclpy.event_handler import SubscriptionEventCallbacks

        def on_lost(info: Any) -> None:
            self.lost[key] += int(info.total_count_change)

        def on_incompatible(info: Any) -> None:
            self.incompatible[key] += int(info.total_count_change)
            self.node.get_logger().error(
                f"a publisher on {TOPICS[key].relative} offers QoS incompatible with this subscription (policy "
                f"{getattr(info.last_policy_kind, 'name', info.last_policy_kind)}): none of its messages will "
                f"arrive; a best-effort driver needs input_reliability: best_effort")

        return SubscriptionEventCallbacks(message_lost=on_lost, incompatible_qos=on_incompatible)

    def _sequence_check(self, key: str) -> Callable[[Any, Any], None]:
        """MessageInfo callback: count the gaps in each publisher's publication sequence numbers."""

        def check(msg: Any, info: Any) -> None:
            number, gid = info.get("publication_sequence_number"), info.get("publisher_gid")
            if not number or not gid:  # the RMW does not tell
                return
            publisher = bytes(gid.get("data", b"")) if isinstance(gid, dict) else bytes(gid)
            last = self._sequence[key].get(publisher)
            if last is not None and number > last + 1:
                self.gaps[key] += number - last - 1
            if last is None or number > last:  # a lower number: a restarted publisher, counted afresh
                self._sequence[key][publisher] = number

        return check

    def _count(self, msg: Any, key: str) -> None:
        self.received[key] += 1
        if key == "image":
            self._pending[header_stamp_ns(msg)] = (msg, time.monotonic())
        if self.max_bytes is not None and key not in self._sized:
            self._bound_history(key, message_bytes(msg))

    def _bound_history(self, key: str, size: int) -> None:
        """Cap the subscription's history at ``max_bytes`` of messages the size of the first one."""
        self._sized.add(key)
        subscriber = self.subscribers[self.mode.keys.index(key)]
        depth = max(1, int(self.max_bytes // max(1, size)))
        if size and depth < subscriber.history_depth:
            self.node.get_logger().info(
                f"{TOPICS[key].relative}: {size / 2 ** 20:.1f} MiB messages; subscription history "
                f"{subscriber.history_depth} -> {depth} (at most {self.max_bytes / 2 ** 20:.0f} MiB, input_queue_mb)")
            subscriber.set_history_depth(depth)

    def _on_synced(self, *messages: Any) -> None:
        stamp = header_stamp_ns(messages[0])
        if stamp in self._expired_set:
            self.late += 1
            return
        self._pending.pop(stamp, None)
        self.paired += 1
        self._on_pair(dict(zip(self.mode.keys, messages)), time.monotonic())

    def _pairing_failed(self, exc: Exception, image: Any, *others: Any) -> None:
        """An exception while handing on a set: its image gets an ERROR result (once: no timeout later)."""
        try:
            stamp = header_stamp_ns(image)
        except Exception:  # noqa: BLE001 - a message without a usable stamp: it was never pending
            stamp = None
        if stamp is not None and self._pending.pop(stamp, None) is not None:
            self._remember_expired(stamp)
        self._on_lone(image, f"internal error while pairing: {type(exc).__name__}: {exc}")

    def _remember_expired(self, stamp: int) -> None:
        self._expired.append(stamp)
        self._expired_set.add(stamp)
        while len(self._expired) > EXPIRED_MEMORY:
            self._expired_set.discard(self._expired.popleft())

    def _expire(self) -> None:
        now = time.monotonic()
        missing = ", ".join(TOPICS[key].relative for key in self.mode.topic_keys)
        for stamp, (image, arrival) in list(self._pending.items()):
            if now - arrival <= self.pair_timeout:
                continue
            del self._pending[stamp]
            self._remember_expired(stamp)
            self.lone += 1
            self._on_lone(image, f"no {missing} within {self.pair_timeout:g} s of the image")
        self.losses.update(now, self.lost_per_topic(), sum(self.received.values()))

    def lost_per_topic(self) -> Dict[str, int]:
        """{topic: messages lost so far}: the larger of the middleware's count and the sequence gaps (they
        may see the same loss), plus those the byte bound dropped."""
        return {TOPICS[key].relative: max(self.lost[key], self.gaps[key]) + self._sync.evicted_for_bytes[index]
                for index, key in enumerate(self.mode.keys)}

    @property
    def callback_errors(self) -> int:
        """Exceptions caught in the subscriptions' and the synchronizer's callbacks."""
        return self._sync.callback_errors + sum(subscriber.callback_errors for subscriber in self.subscribers)

    def counts(self) -> Mapping[str, int]:
        """received_<key>, lost_<key>, seq_gaps_<key>, queue_overflow_<key>, incompatible_qos_<key>,
        unpaired_<key> (3D messages not used in a set), pairs, lone_images, late_sets, waiting_images,
        callback_errors."""
        out = {f"received_{key}": count for key, count in self.received.items()}
        out.update({f"lost_{key}": count for key, count in self.lost.items()})
        out.update({f"seq_gaps_{key}": count for key, count in self.gaps.items()})
        out.update({f"queue_overflow_{key}": self._sync.evicted_for_bytes[i] for i, key in enumerate(self.mode.keys)})
        out.update({f"incompatible_qos_{key}": count for key, count in self.incompatible.items()})
        for key in self.mode.topic_keys:
            out[f"unpaired_{key}"] = max(0, self.received[key] - self.paired - self.late)
        out.update(pairs=self.paired, lone_images=self.lone, late_sets=self.late, waiting_images=len(self._pending),
                   callback_errors=self.callback_errors)
        return out

    @property
    def incompatible_topics(self) -> list:
        """Input topics with an incompatible publisher (empty when all match)."""
        return [TOPICS[key].relative for key, count in self.incompatible.items() if count]

    def close(self) -> None:
        """Destroy the subscriptions and the timer (a deactivated lifecycle node stops listening)."""
        for subscriber in self.subscribers:
            self.node.destroy_subscription(subscriber.sub)
        self.node.destroy_timer(self._timer)
        self.subscribers = []


__all__ = ["Intake"]
