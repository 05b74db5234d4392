"""Lost input messages are a fault (issue 24 items 6 and 10) on a real inspector_node over DDS: a burst that the
node cannot take (its process stopped while a stock driver publishes, best-effort inputs with a history of 1)
loses images silently to every counter the middleware has; the gaps in the driver's sequence numbers count
them, /diagnostics turns WARN / ERROR naming the topics, one log line starts the burst and one ends it.
Large clouds pin at most ``input_queue_mb`` per topic."""
import os
import signal
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, inspector_command, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
SEC = 1_000_000_000
STATUS = "/inspector: inspector"
GROWTH_LIMIT_MIB = 110  # measured: +70 MiB with the bound, +182 MiB with input_queue_mb 1024 (the old queues)


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train_tiny_model(path, n_train=4, n_val=3)
    return path


class Diagnostics:
    def __init__(self, node):
        from diagnostic_msgs.msg import DiagnosticArray

        self.node, self.statuses = node, []
        node.create_subscription(DiagnosticArray, "/diagnostics", lambda array: self.statuses.extend(
            s for s in array.status if s.name == STATUS), 100)

    def holds(self, predicate, timeout):
        """Whether ``predicate(level, message, values)`` holds for the newest status within ``timeout`` s."""
        return spin_until(self.node, lambda: bool(self.statuses) and predicate(*self.unpack(self.statuses[-1])),
                          timeout)

    def where(self, predicate, timeout=20.0):
        """(level, message, values) of the newest status once ``predicate`` holds for it."""
        assert self.holds(predicate, timeout), self.unpack(self.statuses[-1]) if self.statuses else None
        return self.unpack(self.statuses[-1])

    @staticmethod
    def unpack(status):
        return int.from_bytes(status.level, "little") if isinstance(status.level, bytes) else int(status.level), \
            status.message, {kv.key: kv.value for kv in status.values}


def test_a_burst_the_node_cannot_take_is_counted_and_makes_diagnostics_error(ros_node, tiny_model):
    from rclpy.qos import QoSProfile
    from sensor_msgs.msg import Image, PointCloud2

    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

    diagnostics = Diagnostics(ros_node)
    collector = ResultCollector(ros_node, "/inspector/result")
    driver = {"image": ros_node.create_publisher(Image, "image", QoSProfile(depth=10)),  # a stock driver's QoS
              "points": ros_node.create_publisher(PointCloud2, "points", QoSProfile(depth=10))}
    pair = to_messages(build_pair("good", 64, 64, "points", scene="cell"), 0)
    before, burst, after = 2, 20, 3

    def send(index):
        for key, message in pair.items():
            message.header.stamp.sec = 3000 + index
            driver[key].publish(message)
    params = {"device": "cpu", "input_depth": 1, "diagnostics_period": 0.3, "pair_timeout": 1.0}
    with NodeProcess(inspector_command(tiny_model, params=params)) as inspector:  # best effort, history 1
        assert collector.wait_for_publisher(90.0), inspector.output()
        assert spin_until(ros_node, lambda: all(p.get_subscription_count() for p in driver.values()), 20.0)
        spin_until(ros_node, lambda: False, 1.0)  # the readers' side of the match (a first pair lost there is no gap)
        for index in range(before):  # a driver publishing as usual
            send(index)
            spin_until(ros_node, lambda: False, 0.5)
        os.kill(inspector.proc.pid, signal.SIGSTOP)  # the node takes nothing while the burst arrives
        try:
            for index in range(before, before + burst):
                send(index)
                time.sleep(0.02)
        finally:
            os.kill(inspector.proc.pid, signal.SIGCONT)
        sent = before + burst

        def accounted(level, message, values):  # every image sent so far received or counted as a gap
            return (int(values["received_image"]) + int(values["seq_gaps_image"]) >= sent
                    and values["waiting_images"] == "0" and int(values["received"]) == len(collector.results))

        # then as usual again: at least `after` pairs, more while the last is unaccounted (a pair lost at the very
        # end leaves no sequence gap behind it until another pair arrives; CI failed this test twice in a row)
        for index in range(before + burst, before + burst + after + 6):
            spin_until(ros_node, lambda: False, 0.5)
            send(index)
            sent += 1
            if sent >= before + burst + after and diagnostics.holds(accounted, 3.0):
                break
        count = sent
        level, message, values = diagnostics.where(accounted)
        assert level == 2, (message, values)
        results = collector.results
        lost_images = max(int(values["lost_image"]), int(values["seq_gaps_image"])) + int(values["queue_overflow_image"])
        assert 0 < lost_images and len(results) + lost_images == count, (len(results), values)
        assert int(values["received_image"]) == len(results)  # every image that arrived was answered
        assert message.startswith("running; inputs: input messages lost in the last 60 s: ")
        assert f"image {lost_images}" in message and "see lost_, seq_gaps_, queue_overflow_<topic>" in message
        from rcl_interfaces.srv import SetParameters
        from rclpy.parameter import Parameter

        client = ros_node.create_client(SetParameters, "/inspector/set_parameters")
        assert spin_until(ros_node, client.service_is_ready, 20.0)
        future = client.call_async(SetParameters.Request(parameters=[Parameter("loss_error_rate", value=1.0)
                                                                     .to_parameter_msg()]))
        assert spin_until(ros_node, future.done, 20.0) and future.result().results[0].successful
        diagnostics.where(lambda level, message, values: level == 1 and "input messages lost" in message)
        spin_until(ros_node, lambda: False, 6.0)  # the burst ends: its summary line
        output = inspector.output()
    starts = [line for line in output.splitlines() if "input messages lost on" in line]
    ends = [line for line in output.splitlines() if "input loss burst over:" in line]
    assert len(starts) == 1 and len(ends) == 1, output
    assert f"image {lost_images}" in ends[0]


def test_large_clouds_pin_at_most_input_queue_mb(ros_node, tiny_model):
    """Twelve unpaired 1280x720 clouds (14 MiB each): with the old fixed queues ten stayed pinned (+182 MiB RSS
    here; +1.45 GB with 134 MB clouds); with input_queue_mb 20 one per queue and history (+70 MiB)."""
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import PointCloud2

    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

    diagnostics = Diagnostics(ros_node)
    publisher = ros_node.create_publisher(PointCloud2, "points", QoSProfile(depth=20,
                                                                           reliability=ReliabilityPolicy.RELIABLE))
    cloud = to_messages(build_pair("good", 1280, 720, "points"), 0)["points"]
    params = {"device": "cpu", "input_queue_mb": 20, "diagnostics_period": 0.3}
    command = inspector_command(tiny_model, reliable_inputs=["/points"], input_depth=10, params=params)
    with NodeProcess(command) as inspector:
        assert spin_until(ros_node, lambda: publisher.get_subscription_count() >= 1, 90.0), inspector.output()
        diagnostics.where(lambda level, message, values: True)
        before = _rss_mib(inspector.proc.pid)
        for index in range(12):
            cloud.header.stamp.sec = 2000 + index
            publisher.publish(cloud)
            spin_until(ros_node, lambda: False, 0.3)
        level, message, values = diagnostics.where(
            lambda level, message, values: int(values["received_points"]) + int(values["seq_gaps_points"]) >= 12, 60.0)
        grown = _rss_mib(inspector.proc.pid) - before
        output = inspector.output()
    assert int(values["queue_overflow_points"]) >= 1 and level >= 1, values
    assert "points: 14.1 MiB messages; subscription history 10 -> 1 (at most 20 MiB, input_queue_mb)" in output
    assert grown < GROWTH_LIMIT_MIB, f"the inspector grew by {grown:.0f} MiB holding 14 MiB clouds"


def _rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise AssertionError("no VmRSS")
