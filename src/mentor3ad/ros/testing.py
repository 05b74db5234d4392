"""Helpers for integration tests and commissioning scripts: start node processes, collect results.

``NodeProcess`` starts an executable (console script) with local-only discovery and always cleans
up; ``ResultCollector`` is an rclpy node that gathers the inspector's results by stamp.
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import time
from typing import Any, Callable, Dict, List, Optional, Sequence


class NodeProcess:
    """A node process with its output captured in a temporary file (read with ``output()``)."""

    def __init__(self, cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        full_env.setdefault("OMP_NUM_THREADS", "1")
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.cmd = list(cmd)
        self._log = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def output(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGINT, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self._log.close()


def spin_until(node: Any, predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Spin ``node`` until ``predicate()`` or ``timeout`` seconds; returns the predicate's value."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return predicate()
            executor.spin_once(timeout_sec=step)
        return True
    finally:
        executor.remove_node(node)
        executor.shutdown()


class ResultCollector:
    """Subscribes to an inspector's result topic (reliable) and keeps parsed results in arrival order."""

    def __init__(self, node: Any, topic: str = "/inspector/result") -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from mentor3ad.ros.result_msg import parse_result

        self.node = node
        self.topic = topic
        self.results: List[Dict[str, Any]] = []
        self._parse = parse_result
        self.sub = node.create_subscription(
            DiagnosticArray, topic, lambda m: self.results.append(self._parse(m)),
            QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE),
        )

    def wait_for_publisher(self, timeout: float) -> bool:
        """True once the node's result publisher is matched with this subscription."""
        return spin_until(self.node, lambda: self.sub.get_publisher_count() > 0, timeout)

    def wait_for(self, count: int, timeout: float) -> List[Dict[str, Any]]:
        spin_until(self.node, lambda: len(self.results) >= count, timeout)
        return list(self.results)
