"""A node that exits right after its last publish (robot_cell_example's PLC line, the trainer's outcome) first
waits for every reliable subscriber to acknowledge it: ``deliver_before_exit`` against a real subscriber in
another process, frozen (SIGSTOP: it cannot acknowledge) and then thawed."""
import os
import signal
import sys
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from mentor3ad.ros.nodes import deliver_before_exit  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]
TOPIC = "/delivery_test/line"
SUBSCRIBER = f"""
import rclpy
from rclpy.qos import QoSProfile, ReliabilityPolicy
from std_msgs.msg import String
from mentor3ad.ros import configure_local_discovery
configure_local_discovery()
rclpy.init()
node = rclpy.create_node("delivery_listener")
node.create_subscription(String, "{TOPIC}", lambda m: print("got", m.data, flush=True),
                         QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
print("listening", flush=True)
rclpy.spin(node)
"""


class LogCapture:
    def __init__(self) -> None:
        self.lines = []

    def warning(self, text: str) -> None:
        self.lines.append(text)


class NodeWithLog:
    def __init__(self, logger: LogCapture) -> None:
        self.logger = logger

    def get_logger(self) -> LogCapture:
        return self.logger


def test_the_last_message_is_acknowledged_or_its_loss_is_named(ros_node):
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from std_msgs.msg import String

    publisher = ros_node.create_publisher(String, TOPIC, QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE))
    with NodeProcess([sys.executable, "-c", SUBSCRIBER]) as listener:
        assert spin_until(ros_node, lambda: publisher.get_subscription_count() >= 1, 30.0), listener.output()
        log = LogCapture()
        publisher.publish(String(data="part-001"))
        assert deliver_before_exit(NodeWithLog(log), [publisher], timeout_s=10.0), log.lines
        assert log.lines == []

        os.kill(listener.proc.pid, signal.SIGSTOP)  # matched, but can no longer acknowledge
        try:
            publisher.publish(String(data="part-002"))
            started = time.monotonic()
            assert not deliver_before_exit(NodeWithLog(log), [publisher], timeout_s=1.0)
            assert 0.9 <= time.monotonic() - started < 5.0
            assert len(log.lines) == 1 and TOPIC in log.lines[0] and "may be lost" in log.lines[0], log.lines
        finally:
            os.kill(listener.proc.pid, signal.SIGCONT)
        assert deliver_before_exit(NodeWithLog(log), [publisher], timeout_s=20.0)  # thawed: it acknowledges
        deadline = time.monotonic() + 10.0
        while "got part-002" not in listener.output() and time.monotonic() < deadline:
            time.sleep(0.1)
        assert "got part-001" in listener.output() and "got part-002" in listener.output(), listener.output()
