"""The package's ROS 2 nodes: top-level node classes, one module each, with a ``main`` console script.

:func:`run_node` is the shared main loop: local-only discovery, ``rclpy.init``, a single-threaded
executor (inference runs on the nodes' own worker threads; rclpy's MultiThreadedExecutor was measured
to busy-loop under sim time, /clock at 100 Hz, starving inference: latency 0.33 s -> 10+ s), a clean
shutdown, and configuration errors (:class:`~mentor3ad.errors.ConfigError`) as one line, exit code 2.

Stopping (Ctrl-C, ``ros2 launch``'s SIGINT, a SIGTERM): the node's own handler, not rclpy's. rclpy's
handler shuts the context down at once, while a worker thread may be inferring: its publish then failed
with "publisher's context is invalid" tracebacks. Here the first SIGINT or SIGTERM ends the spin, the
node's ``stop()`` lets the worker finish (and publish) with the context still valid, then the node is
destroyed and rclpy shut down; exit code 0. Later signals are ignored, except that a SIGTERM after the
first signal (launch's escalation 5 s after its SIGINT) prints every thread's stack first, so a hang at
shutdown can be diagnosed from the launch log. A node that cut a thread off at a deadline (``abandoned_work``:
the evaluator's shutdown report) ends with ``os._exit`` once ROS is shut down.
"""
from __future__ import annotations

import os
import sys
import time
from typing import Callable, List, Optional

from ...errors import ConfigError
from .. import configure_local_discovery

SPIN_PERIOD_S = 0.1  # the executor wakes this often to let Python run the signal handler
FLUSH_TIMEOUT_S = 5.0  # the longest a node waits at exit for its last messages to be acknowledged


def apply_cpu_budget(node, values):
    """Apply the node's ``threads`` / ``interop_threads`` / ``nice`` parameter values (:mod:`mentor3ad.cpu_budget`)
    before torch does any work; logs what the process runs with (notes at WARN). Returns the AppliedBudget."""
    from ...cpu_budget import CpuBudget, apply_budget

    applied = apply_budget(CpuBudget(int(values["threads"]), int(values["interop_threads"]), int(values["nice"])))
    logger = node.get_logger()
    (logger.warning if applied.notes else logger.info)(f"CPU budget: {applied.describe()}")
    return applied


def deliver_before_exit(node, publishers, timeout_s: float = FLUSH_TIMEOUT_S) -> bool:
    """Wait until every matched reliable subscriber acknowledged what ``publishers`` sent (a process that exits
    right after its last publish loses any sample DDS has still to resend: Fast DDS re-sends a lost one only
    after its next heartbeat, seconds later). Logs a warning naming the topics not acknowledged within
    ``timeout_s`` seconds (for all of them together); True when all were."""
    from rclpy.duration import Duration

    deadline = time.monotonic() + timeout_s
    late = [pub.topic_name for pub in publishers if not pub.wait_for_all_acked(
        Duration(nanoseconds=max(0, int((deadline - time.monotonic()) * 1e9))))]
    if late:
        node.get_logger().warning(f"not acknowledged by every subscriber within {timeout_s:g} s before exit: "
                                  f"{', '.join(late)} (their last messages may be lost)")
    return not late


class DestroysWaitables:
    """Mixin (before ``Node`` / ``LifecycleNode`` in the bases) for nodes with action servers or clients
    (waitables): rclpy's ``destroy_node`` leaves those alive, and with them the node itself stays in the DDS graph
    (a dead ``~/inspect`` server that takes goals) until the garbage collector finds it; this ``destroy_node``
    destroys them first."""

    def destroy_node(self) -> None:
        from ..inspector.lifecycle import destroy_entities

        destroy_entities(self, [("waitables", entity) for entity in list(self.waitables)])
        super().destroy_node()


class StopRequest:
    """SIGINT / SIGTERM handler: the first one raises KeyboardInterrupt in the main thread (the spin ends)
    and arms faulthandler on SIGTERM (an escalation then dumps every thread's stack); later ones are ignored."""

    def __init__(self) -> None:
        self.signal: Optional[int] = None

    def install(self) -> "StopRequest":
        import signal

        for signum in (signal.SIGINT, signal.SIGTERM):
            signal.signal(signum, self.handle)
        return self

    def handle(self, signum: int, _frame) -> None:
        if self.signal is not None:
            return
        import faulthandler
        import signal

        self.signal = signum
        faulthandler.register(signal.SIGTERM, all_threads=True, chain=True)
        raise KeyboardInterrupt


def spin(executor, context=None) -> int:
    """Spin until the context is shut down (or a stop signal raises KeyboardInterrupt); returns 0."""
    import rclpy

    while rclpy.ok(context=context):
        executor.spin_once(timeout_sec=SPIN_PERIOD_S)
    return 0


def run_node(node_factory: Callable, argv: Optional[List[str]], prog: str,
             loop: Optional[Callable] = None, dds_profile: bool = False) -> int:
    """Create the node and spin it until stopped (see the module docstring); ``loop(executor, node) -> exit
    code`` replaces the plain spin (it must return to Python at least every few tenths of a second).
    dds_profile: load the package's inspector Fast DDS profile unless the user set one (large inputs)."""
    import signal

    import rclpy
    from rclpy.executors import ExternalShutdownException, SingleThreadedExecutor
    from rclpy.signals import SignalHandlerOptions

    configure_local_discovery()
    if dds_profile:
        from ..dds import use_package_profile

        use_package_profile()
    rclpy.init(args=argv, signal_handler_options=SignalHandlerOptions.NO)
    stop = StopRequest().install()  # after rclpy.init: it resets the C-level handlers even with NO
    node = None
    code = 0
    try:
        try:
            node = node_factory()
        except (ConfigError, ValueError) as exc:  # configuration errors: a clear message, no traceback
            print(f"{prog}: error: {exc}", file=sys.stderr)
            return 2
        executor = SingleThreadedExecutor()
        executor.add_node(node)
        code = spin(executor) if loop is None else loop(executor, node)
    except (KeyboardInterrupt, ExternalShutdownException):
        pass
    finally:
        # a stop signal during the clean-up must not interrupt it (launch forwards Ctrl-C to its children,
        # which already got it from the terminal): the handler ignores every signal after the first
        if stop.signal is None:
            stop.signal = signal.SIGINT
        if node is not None:
            if hasattr(node, "stop"):
                node.stop()  # the worker finishes and publishes while the context is still valid
            node.destroy_node()
        rclpy.try_shutdown()
        for signum in (signal.SIGINT, signal.SIGTERM):  # rclpy's shutdown restores the C-level handlers
            signal.signal(signum, signal.SIG_IGN)
        if getattr(node, "abandoned_work", False):  # a thread cut off by a deadline (the evaluator's report):
            sys.stdout.flush()  # interpreter finalization would wait for it or abort in a library's destructor
            sys.stderr.flush()
            os._exit(code)
    return code
