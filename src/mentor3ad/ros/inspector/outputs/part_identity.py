"""Part identity in stream mode: ``~/part_id`` (std_msgs/String) names the next part.

The rule: a part_id message applies to the first complete image + 3D pair whose image is stamped at or after
the message's arrival (the node's clock: ROS time, or sim time under ``use_sim_time``), once. A second message
before such a pair arrived replaces the first (logged as a warning and counted: that part was named but never
seen). Pairs claimed by an ``~/inspect`` goal carry the goal's part_id and leave a pending name for the next
pair; with ``trigger_mode: request`` the topic is ignored (goals name their parts; a warning once).

A part_id is printable text of 1 to :data:`MAX_PART_ID` characters (:func:`part_id_problem`; the ``~/inspect``
goals follow the same rule); anything else is refused with a warning. This output also keeps the last
answered part's id for ``/diagnostics`` (``last_part_id``).
"""
from __future__ import annotations

import threading
from typing import Any, Optional, Tuple

from ....io.msgconv import stamp_to_ns
from ..part import JudgedPart, Pair
from . import Output, register_output

MAX_PART_ID = 128  # characters


def part_id_problem(part_id: str) -> str:
    """Why ``part_id`` cannot name a part ("" when it can): empty or blank, longer than MAX_PART_ID, or
    with non-printable characters (control characters, line breaks)."""
    if not part_id.strip():
        return "part_id is empty: name the part (serial number, tray slot, order)"
    if len(part_id) > MAX_PART_ID:
        return f"part_id is {len(part_id)} characters long; at most {MAX_PART_ID}"
    bad = next((c for c in part_id if not c.isprintable()), None)
    if bad is not None:
        return f"part_id contains a non-printable character ({bad!r}): printable text only"
    return ""


@register_output
class PartIdentity(Output):
    """``~/part_id`` subscription (stream mode) and the ``last_part_id`` diagnostics value."""

    name, order = "part_id", 3

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from std_msgs.msg import String

        self.on_request = self.param("trigger_mode") == "request"
        self._lock = threading.Lock()
        self._pending: Optional[Tuple[str, int]] = None  # (part_id, arrival in ns of the node's clock)
        self.last_part_id = ""
        self.named = self.assigned = self.replaced = self.refused = 0
        self._ignored_said = False
        node.create_subscription(String, "~/part_id", self._on_part_id, 10)

    def _on_part_id(self, msg: Any) -> None:
        log = self.node.get_logger()
        if self.on_request:
            if not self._ignored_said:
                log.warning("~/part_id is ignored with trigger_mode: request (each ~/inspect goal names its part)")
                self._ignored_said = True
            return
        problem = part_id_problem(msg.data)
        if problem:
            self.refused += 1
            log.warning(f"~/part_id refused: {problem}")
            return
        with self._lock:
            previous = self._pending
            self._pending = (msg.data, self.node.get_clock().now().nanoseconds)
            self.named += 1
            if previous is not None:
                self.replaced += 1
        if previous is not None:
            log.warning(f"~/part_id {previous[0]!r} was replaced by {msg.data!r} before a pair stamped after it "
                        "arrived: no result carries it")

    def observe(self, pair: Pair) -> None:
        if pair.part_id or self.on_request:
            return
        with self._lock:
            if self._pending is None or stamp_to_ns(pair.header.stamp) < self._pending[1]:
                return
            pair.part_id, self._pending = self._pending[0], None
            self.assigned += 1

    def publish(self, part: JudgedPart) -> None:
        if part.part_id:
            self.last_part_id = part.part_id

    def diagnostics(self):
        with self._lock:
            pending = self._pending[0] if self._pending else ""
        return "OK", "", {"last_part_id": self.last_part_id, "part_id_pending": pending,
                          "part_ids_named": self.named, "part_ids_replaced": self.replaced,
                          "part_ids_refused": self.refused}


__all__ = ["PartIdentity", "part_id_problem", "MAX_PART_ID"]
