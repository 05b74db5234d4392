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
Callbacks run on the node's executor thread; the counters are read from the same thread.
"""
from __future__ import annotations

import collections
import time
from typing import Any, Callable, Deque, Dict, Mapping, Set, Tuple

from ...io.inputs import TOPICS, InputMode
from ...io.msgconv import header_stamp_ns
from ..messages import message_class
from ..sync import ApproximateTimeSynchronizer, Subscriber

EXPIRED_MEMORY = 2048  # image stamps remembered after their timeout (to drop late sets)


class Intake:
    """Subscriptions + synchronizer of one input mode with the per-image bookkeeping (see module doc)."""

    def __init__(self, node: Any, mode: InputMode, qos: Any, on_pair: Callable[[Dict[str, Any], float], None],
                 on_lone: Callable[[Any, str], None], sync_queue_size: int, slop: float, pair_timeout: float,
                 qos_overriding_options: Any = None) -> None:
        from rclpy.clock import Clock, ClockType

        self.node = node
        self.mode = mode
        self.pair_timeout = float(pair_timeout)
        self._on_pair = on_pair
        self._on_lone = on_lone
        self.received: Dict[str, int] = {key: 0 for key in mode.keys}
        self.lost: Dict[str, int] = {key: 0 for key in mode.keys}
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
                                    event_callbacks=self._event_callbacks(key), **extra)
            subscriber.registerCallback(self._count, key)  # before the synchronizer's: counts first
            self.subscribers.append(subscriber)
        self._sync = ApproximateTimeSynchronizer(self.subscribers, int(sync_queue_size), float(slop))
        self._sync.registerCallback(self._on_synced)
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

    def _count(self, msg: Any, key: str) -> None:
        self.received[key] += 1
        if key == "image":
            self._pending[header_stamp_ns(msg)] = (msg, time.monotonic())

    def _on_synced(self, *messages: Any) -> None:
        stamp = header_stamp_ns(messages[0])
        if stamp in self._expired_set:
            self.late += 1
            return
        self._pending.pop(stamp, None)
        self.paired += 1
        self._on_pair(dict(zip(self.mode.keys, messages)), time.monotonic())

    def _expire(self) -> None:
        now = time.monotonic()
        missing = ", ".join(TOPICS[key].relative for key in self.mode.topic_keys)
        for stamp, (image, arrival) in list(self._pending.items()):
            if now - arrival <= self.pair_timeout:
                continue
            del self._pending[stamp]
            self._expired.append(stamp)
            self._expired_set.add(stamp)
            while len(self._expired) > EXPIRED_MEMORY:
                self._expired_set.discard(self._expired.popleft())
            self.lone += 1
            self._on_lone(image, f"no {missing} within {self.pair_timeout:g} s of the image")

    def counts(self) -> Mapping[str, int]:
        """received_<key>, lost_<key>, incompatible_qos_<key>, unpaired_<key> (3D messages not used in a
        set), pairs, lone_images, late_sets, waiting_images."""
        out = {f"received_{key}": count for key, count in self.received.items()}
        out.update({f"lost_{key}": count for key, count in self.lost.items()})
        out.update({f"incompatible_qos_{key}": count for key, count in self.incompatible.items()})
        for key in self.mode.topic_keys:
            out[f"unpaired_{key}"] = max(0, self.received[key] - self.paired - self.late)
        out.update(pairs=self.paired, lone_images=self.lone, late_sets=self.late, waiting_images=len(self._pending))
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
