"""``~/inspect``: the ``mentor3ad_interfaces/action/InspectPart`` server, inspection on request.

A goal claims the first complete image + 3D pair stamped at or after its ``min_stamp`` (zero: the node's clock
when the goal is accepted), one pair per goal, goals in the order they were accepted; the claimed pair carries
the goal's part_id through the inspector, and the goal is answered with that pair's typed result (the same
answer ``~/inspection`` and ``~/result`` carry). Every accepted goal ends with a result:

* SUCCEEDED: its pair was answered (PASS, FAIL, or ERROR / SKIPPED for that pair: bad input, no model loaded,
  queue full; the verdict and reason say which);
* ABORTED with an ERROR result, no image judged (zero header stamp), ``reason`` saying why: a bad goal (empty,
  blank, over-long or non-printable part_id; a negative, non-finite or over-long timeout), no verdict within
  the timeout (no camera data, pairs stamped before ``min_stamp``, images without 3D data, inspection disabled,
  not listening, the model still loading), its pair dropped unjudged (``queue_policy: latest``), too many goals
  waiting, the node shutting down;
* CANCELED when the client cancels it (a pair it already claimed is still judged and published on the topics).

A goal for a part_id that an earlier goal is still waiting for (no pair claimed yet) supersedes it: the earlier
goal is ABORTED ("superseded by a newer goal for the same part_id"), so a robot program may re-send a goal whose
acceptance it never heard (a DDS reply lost while the program was being discovered) without one part being
judged twice.

Feedback: WAITING_FOR_DATA on acceptance, QUEUED with the pair's stamp once a pair is claimed (the part may
move), INSPECTING when the worker starts judging it. Goals are never rejected (a rejection carries no reason):
bad goals get their ERROR at once. Goal handles are only touched on the executor thread: answers found on the
inference thread are handed over through a guard condition, timeouts come from a steady-clock timer.
"""
from __future__ import annotations

import collections
import math
import threading
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Deque, Dict, List, Optional

from ....io.msgconv import stamp_to_ns
from ....types import InspectionResult
from ...inspection_codec import encode, stamp
from ...params import ParamSpec
from ..part import JudgedPart, Pair
from . import Output, register_output
from .part_identity import MAX_PART_ID, part_id_problem

MAX_TIMEOUT_S = 3600.0
MAX_WAITING_GOALS = 100
TICK_S = 0.05  # how often deadlines are checked while goals wait


@dataclass
class Goal:
    """One accepted goal: its handle, part_id, the stamp its pair must reach (ns), its deadline
    (time.monotonic()), the intake's counters when it was accepted, the pair it claimed."""

    handle: Any
    part_id: str
    min_stamp_ns: int
    timeout_s: float
    deadline: float
    counts: Dict[str, int] = field(default_factory=dict)
    pair: Optional[Pair] = None
    older: int = 0  # pairs seen while waiting that were stamped before min_stamp
    last_older_ns: int = 0
    disabled: int = 0  # pairs seen while inspection was disabled


def goal_problem(part_id: str, timeout_s: float) -> str:
    """Why a goal cannot be served ("" when it can)."""
    problem = part_id_problem(part_id)
    if problem:
        return problem
    if not math.isfinite(timeout_s):
        return f"timeout_s is {timeout_s}: seconds, a finite number >= 0 (0: the inspector's inspect_timeout)"
    if timeout_s < 0:
        return f"timeout_s is {timeout_s:g}: must be >= 0 (0: the inspector's inspect_timeout)"
    if timeout_s > MAX_TIMEOUT_S:
        return f"timeout_s is {timeout_s:g}: at most {MAX_TIMEOUT_S:g} s"
    return ""


def _timeout_problem(value: float) -> Optional[str]:
    return None if value <= MAX_TIMEOUT_S else f"at most {MAX_TIMEOUT_S:g} s"


@register_output
class InspectAction(Output):
    """``~/inspect`` action server (see the module docstring)."""

    name, order = "inspect", 2
    PARAMETERS = [
        ParamSpec("inspect_timeout", 10.0, "Seconds an ~/inspect goal with timeout_s = 0 waits for camera data and "
                  "its verdict before it ends with an ERROR result saying why (no camera data, inspection disabled, "
                  "model loading, ...).", minimum=0.0, exclusive=True, check=_timeout_problem),
    ]

    def __init__(self, node: Any) -> None:
        super().__init__(node)
        from mentor3ad_interfaces.action import InspectPart
        from rclpy.action import ActionServer, CancelResponse, GoalResponse
        from rclpy.clock import Clock, ClockType

        self.action = InspectPart
        self._cancel_answers = CancelResponse
        self.inspector = node.inspector
        self.on_request = self.param("trigger_mode") == "request"
        self._lock = threading.Lock()
        self._waiting: List[Goal] = []  # accepted, no pair yet, in acceptance order
        self._claimed: Dict[int, Goal] = {}  # id(pair.messages) -> goal whose pair is queued or being judged
        self._posted: Deque[Callable[[], None]] = collections.deque()  # work for the executor thread
        self.counts = collections.Counter()
        self.last_timeout = ""
        self._closed = False
        self._guard = node.create_guard_condition(self._run_posted)
        self._timer = node.create_timer(TICK_S, self._check_deadlines, clock=Clock(clock_type=ClockType.STEADY_TIME))
        self._timer.cancel()
        self.server = ActionServer(node, InspectPart, "~/inspect", execute_callback=self._never_called,
                                   goal_callback=lambda request: GoalResponse.ACCEPT,
                                   handle_accepted_callback=self._accepted, cancel_callback=self._cancel)

    # ------------------------------------------------------------------ goals (executor thread)
    def _accepted(self, handle: Any) -> None:
        request = handle.request
        part_id, timeout_s = request.part_id, float(request.timeout_s)
        self.counts["goals_accepted"] += 1
        problem = goal_problem(part_id, timeout_s)
        if not problem and len(self._waiting) >= MAX_WAITING_GOALS:
            problem = f"{MAX_WAITING_GOALS} goals are already waiting for camera data"
        shown_id = "" if part_id_problem(part_id) else part_id
        if problem:
            self.counts["goals_refused"] += 1
            self.node.get_logger().warning(f"~/inspect goal refused: {problem}")
            self._conclude(handle, self._error(f"bad goal: {problem}", shown_id), ok=False)
            return
        timeout_s = timeout_s or float(self.param("inspect_timeout"))
        min_stamp_ns = stamp_to_ns(request.min_stamp) or self.node.get_clock().now().nanoseconds
        intake = self.inspector.intake
        goal = Goal(handle, part_id, min_stamp_ns, timeout_s, time.monotonic() + timeout_s,
                    dict(intake.counts()) if intake is not None else {})
        with self._lock:
            superseded = self._take(lambda g: g.part_id == part_id and g.pair is None)
            self._waiting.append(goal)
        if superseded is not None:
            self.counts["goals_superseded"] += 1
            self.node.get_logger().warning(f"~/inspect goal {part_id!r} sent again: the earlier one is superseded")
            self._conclude(superseded.handle, self._error("superseded by a newer goal for the same part_id",
                                                          part_id), ok=False)
        self._feedback(goal, self.action.Feedback.WAITING_FOR_DATA)
        if self._timer.is_canceled():
            self._timer.reset()

    def _cancel(self, handle: Any):
        """Cancel request: a goal not yet answered ends CANCELED (its claimed pair is still judged)."""
        with self._lock:
            goal = self._take(lambda g: g.handle is handle)
        if goal is None:
            return self._cancel_answers.REJECT  # already answered (its result is on its way)
        self.counts["goals_cancelled"] += 1
        self._post(lambda: self._conclude(goal.handle, self._error("cancelled by the client", goal.part_id), False))
        return self._cancel_answers.ACCEPT

    def _check_deadlines(self) -> None:
        now = time.monotonic()
        with self._lock:
            late = [g for g in self._waiting + list(self._claimed.values()) if now >= g.deadline]
            for goal in late:
                self._take(lambda g, goal=goal: g is goal)
            idle = not self._waiting and not self._claimed
        for goal in late:
            reason = self._timeout_reason(goal)
            self.counts["goals_timed_out"] += 1
            self.last_timeout = f"{goal.part_id}: {reason}"
            self.node.get_logger().warning(f"~/inspect goal {goal.part_id!r}: {reason}")
            self._conclude(goal.handle, self._error(reason, goal.part_id), ok=False)
        if idle:
            self._timer.cancel()

    def _timeout_reason(self, goal: Goal) -> str:
        """Why ``goal`` got no verdict within its timeout, from what the inspector saw meanwhile."""
        waited = f"within {goal.timeout_s:g} s"
        inspector = self.inspector
        if goal.pair is not None:
            stamp_s = stamp_to_ns(goal.pair.header.stamp) / 1e9
            if inspector.model.waiting_for_first():
                return f"no verdict {waited}: the model is still loading (pair stamped {stamp_s:.3f} s queued)"
            return (f"no verdict {waited}: the pair stamped {stamp_s:.3f} s is still queued ({inspector.worker.queued} "
                    "pairs waiting for the worker)")
        if goal.disabled:
            return f"inspection disabled (~/enable): no pair judged {waited}"
        intake = inspector.intake
        if intake is None:
            return f"the inspector is not listening (inactive lifecycle node): no camera data {waited}"
        seen = {key: value - goal.counts.get(key, 0) for key, value in intake.counts().items()}
        if goal.older:
            return (f"no image + 3D pair stamped at or after {goal.min_stamp_ns / 1e9:.3f} s {waited}: {goal.older} "
                    f"older pair(s), the last stamped {goal.last_older_ns / 1e9:.3f} s (is the camera's clock "
                    "behind the inspector's, or min_stamp in the future?)")
        if seen.get("received_image", 0):
            return (f"no camera data {waited}: {seen['received_image']} image(s) but no complete image + 3D pair "
                    f"({seen.get('lone_images', 0)} without 3D data)")
        return f"no camera data {waited}: no image arrived on {intake.subscribers[0].sub.topic_name}"

    # ------------------------------------------------------------------ pairs and answers (see Output)
    def observe(self, pair: Pair) -> None:
        """Give ``pair`` to the first waiting goal it is recent enough for (executor thread)."""
        if self._closed:
            return
        stamp_ns = stamp_to_ns(pair.header.stamp)
        enabled = self.inspector.enabled
        with self._lock:
            goal = None
            for candidate in self._waiting:
                if not enabled:
                    candidate.disabled += 1
                elif stamp_ns >= candidate.min_stamp_ns:
                    goal = candidate
                    break
                else:
                    candidate.older += 1
                    candidate.last_older_ns = stamp_ns
            if goal is None:
                return
            self._waiting.remove(goal)
            goal.pair = pair
            self._claimed[id(pair.messages)] = goal
        pair.part_id, pair.requested = goal.part_id, True
        self._feedback(goal, self.action.Feedback.QUEUED)

    def judging(self, pair: Pair) -> None:
        goal = self._claimed.get(id(pair.messages))
        if goal is not None and goal.pair is pair:
            self._post(lambda: self._feedback(goal, self.action.Feedback.INSPECTING))

    def publish(self, part: JudgedPart) -> None:
        with self._lock:
            goal = self._claimed.get(id(part.messages))
            if goal is None or goal.pair.messages is not part.messages:
                return
            del self._claimed[id(part.messages)]
        message = encode(part.result, part.header, part.header_3d)
        self.counts["goals_answered"] += 1
        self.last_timeout = ""
        self._post(lambda: self._conclude(goal.handle, message, ok=True))

    def dropped(self, pair: Pair) -> None:
        with self._lock:
            goal = self._claimed.pop(id(pair.messages), None)
        if goal is not None:
            reason = "its pair was dropped unjudged: a newer pair replaced it (queue_policy: latest)"
            self._post(lambda: self._conclude(goal.handle, self._error(reason, goal.part_id), ok=False))
        elif self.on_request and not pair.requested:
            self.counts["unrequested_pairs"] += 1

    def diagnostics(self):
        with self._lock:
            waiting, claimed = len(self._waiting), len(self._claimed)
        values = {"trigger_mode": self.param("trigger_mode"), "goals_waiting": waiting + claimed,
                  **{key: self.counts[key] for key in ("goals_accepted", "goals_answered", "goals_timed_out",
                                                       "goals_cancelled", "goals_refused", "goals_superseded",
                                                       "unrequested_pairs")}}
        if self.last_timeout:
            return "WARN", f"last ~/inspect goal timed out ({self.last_timeout})", values
        return "OK", "", values

    def close(self) -> None:
        """Answer every waiting goal with an ERROR (the node shuts down) and let the executor send them."""
        self._closed = True
        with self._lock:
            goals = self._waiting + list(self._claimed.values())
            self._waiting, self._claimed = [], {}
        for goal in goals:
            self._conclude(goal.handle, self._error("the inspector is shutting down", goal.part_id), ok=False)
        executor = self.node.executor
        deadline = time.monotonic() + 0.5
        while goals and executor is not None and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)  # runs the goals' result tasks: the clients get their answer

    # ------------------------------------------------------------------ helpers
    def _take(self, match: Callable[[Goal], bool]) -> Optional[Goal]:
        """Remove and return the first waiting or claimed goal that ``match``es (caller holds the lock)."""
        for goal in self._waiting:
            if match(goal):
                self._waiting.remove(goal)
                return goal
        for key, goal in list(self._claimed.items()):
            if match(goal):
                del self._claimed[key]
                return goal
        return None

    def _error(self, reason: str, part_id: str):
        """The typed ERROR result of a goal that got no judged pair (zero header stamp)."""
        return encode(InspectionResult.error(reason, part_id=part_id, model_id=self.inspector.model.slot.current()[1]),
                      None)

    def _feedback(self, goal: Goal, stage: int) -> None:
        feedback = self.action.Feedback(stage=stage)
        if goal.pair is not None:
            feedback.pair_stamp = stamp(stamp_to_ns(goal.pair.header.stamp))
        goal.handle.publish_feedback(feedback)

    def _conclude(self, handle: Any, message: Any, ok: bool) -> None:
        """End the goal (executor thread): CANCELED if cancel was requested, else SUCCEEDED (``ok``) or ABORTED;
        its result is ``message``."""
        def finish(goal_handle: Any):
            if goal_handle.is_cancel_requested:
                goal_handle.canceled()
            elif ok:
                goal_handle.succeed()
            else:
                goal_handle.abort()
            return self.action.Result(result=message)

        handle.execute(finish)

    def _never_called(self, handle: Any):  # goals are executed through _conclude only
        raise RuntimeError("~/inspect goals are executed when answered")

    def _post(self, work: Callable[[], None]) -> None:
        """Run ``work`` on the executor thread (from any thread)."""
        self._posted.append(work)
        self._guard.trigger()

    def _run_posted(self) -> None:
        while self._posted:
            self._posted.popleft()()


__all__ = ["InspectAction", "Goal", "goal_problem", "MAX_TIMEOUT_S", "MAX_WAITING_GOALS", "MAX_PART_ID"]
