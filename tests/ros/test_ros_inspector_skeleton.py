"""Inspector node over real DDS: console-script inspector + publisher process + collecting test node."""
import sys

import pytest

rclpy = pytest.importorskip("rclpy")

from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector  # noqa: E402
from mentor3ad.package_files import package_executable  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]

N_PAIRS = 5
START_NS = 1_700_000_000_123_456_789
PERIOD_NS = 100_000_000


def test_every_pair_gets_one_result_with_its_stamp(ros_node):
    exe = package_executable("inspector_node")
    assert exe, "console script inspector_node not installed (run ./run.sh setup or colcon build)"
    inspector = NodeProcess([exe, "--ros-args", "-p", "qos_overrides./image.subscription.reliability:=reliable",
                             "-p", "qos_overrides./points.subscription.reliability:=reliable"])
    publisher = None
    try:
        collector = ResultCollector(ros_node, "/inspector/result")
        assert collector.wait_for_publisher(30.0), "inspector never came up:\n" + inspector.output()
        publisher = NodeProcess([sys.executable, "-m", "mentor3ad.ros.tooling.pair_publisher", "--count", str(N_PAIRS),
                                 "--start-ns", str(START_NS), "--period-ns", str(PERIOD_NS), "--rate", "20"])
        results = collector.wait_for(N_PAIRS, 30.0)
        assert publisher.wait(10.0) == 0, publisher.output()
        collector.wait_for(N_PAIRS + 1, 0.5)  # nothing extra may arrive
        results = collector.results
        assert len(results) == N_PAIRS, (results, inspector.output())
        assert [r.stamp_ns for r in results] == [START_NS + i * PERIOD_NS for i in range(N_PAIRS)]
        # no model configured: each pair is answered with an ERROR naming the problem, the node keeps going
        assert all(r.verdict == "ERROR" and "model_path is empty" in r.reason for r in results), results
        assert all(r.frame_id == "camera" for r in results)
        assert inspector.proc.poll() is None, inspector.output()
    finally:
        if publisher is not None:
            publisher.stop()
        assert inspector.stop() in (0, -2), inspector.output()
