"""Intake (mentor3ad.ros.inspector.intake) on a real rclpy node fed real messages over DDS: a complete set is
handed on once, a lone image times out into one answer, a set completing after that is dropped and counted,
3D data without an image is counted."""
import time

import pytest

rclpy = pytest.importorskip("rclpy")

from mentor3ad.io.inputs import input_mode  # noqa: E402
from mentor3ad.ros.inspector.intake import Intake  # noqa: E402
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(60)]

SEC = 1_000_000_000
PAIR_TIMEOUT = 0.4


class Bench:
    """An Intake on one node, publishers of image and points on another, both spun from the test."""

    def __init__(self, namespace):
        from rclpy.executors import SingleThreadedExecutor
        from rclpy.qos import QoSProfile, ReliabilityPolicy
        from sensor_msgs.msg import Image, PointCloud2

        self.context = rclpy.context.Context()
        rclpy.init(context=self.context)
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        self.node = rclpy.create_node("intake_test", namespace=namespace, context=self.context)
        self.driver = rclpy.create_node("intake_driver", namespace=namespace, context=self.context)
        self.pairs, self.lone = [], []
        self.intake = Intake(self.node, input_mode("points"), qos, lambda messages, received: self.pairs.append(
            (messages, received)), lambda image, reason: self.lone.append((image, reason)), 10, 0.05, PAIR_TIMEOUT)
        self.publishers = {"image": self.driver.create_publisher(Image, "image", qos),
                           "points": self.driver.create_publisher(PointCloud2, "points", qos)}
        self.executor = SingleThreadedExecutor(context=self.context)
        self.executor.add_node(self.node)
        self.executor.add_node(self.driver)
        assert self.spin_until(lambda: all(p.get_subscription_count() == 1 for p in self.publishers.values()), 10.0)
        self.messages = to_messages(build_pair("good", 32, 24, "points"), 0)

    def publish(self, key, stamp_ns):
        msg = self.messages[key]
        msg.header.stamp.sec, msg.header.stamp.nanosec = divmod(stamp_ns, SEC)
        self.publishers[key].publish(msg)

    def spin_until(self, predicate, timeout):
        deadline = time.monotonic() + timeout
        while not predicate() and time.monotonic() < deadline:
            self.executor.spin_once(timeout_sec=0.02)
        return predicate()

    def spin_for(self, seconds):
        self.spin_until(lambda: False, seconds)

    def close(self):
        self.intake.close()
        self.node.destroy_node()
        self.driver.destroy_node()
        rclpy.shutdown(context=self.context)


@pytest.fixture
def bench(request):
    bench = Bench(f"/intake_{request.node.name[5:25]}")
    try:
        yield bench
    finally:
        bench.close()


def test_a_complete_set_is_handed_on_once(bench):
    before = time.monotonic()
    bench.publish("points", 5 * SEC)
    bench.publish("image", 5 * SEC)
    assert bench.spin_until(lambda: bench.pairs, 10.0)
    bench.spin_for(PAIR_TIMEOUT * 2)  # nothing more comes of it: no lone answer after the timeout
    assert len(bench.pairs) == 1 and bench.lone == []
    messages, received = bench.pairs[0]
    assert set(messages) == {"image", "points"} and received >= before
    assert messages["image"].header.stamp.sec == 5 and messages["points"].header.stamp.sec == 5
    counts = bench.intake.counts()
    assert (counts["pairs"], counts["lone_images"], counts["late_sets"], counts["waiting_images"]) == (1, 0, 0, 0)
    assert (counts["received_image"], counts["received_points"], counts["unpaired_points"]) == (1, 1, 0)


def test_lone_image_times_out_and_its_late_set_is_dropped_and_counted(bench):
    bench.publish("image", 7 * SEC)
    assert bench.spin_until(lambda: bench.intake.counts()["waiting_images"] == 1, 10.0)
    published = time.monotonic()
    assert bench.spin_until(lambda: bench.lone, 10.0)
    assert time.monotonic() - published >= PAIR_TIMEOUT * 0.9
    image, reason = bench.lone[0]
    assert image.header.stamp.sec == 7 and reason == f"no points within {PAIR_TIMEOUT:g} s of the image"
    assert bench.intake.counts()["waiting_images"] == 0

    bench.publish("points", 7 * SEC)  # the part already has its answer: the completed set is not handed on
    assert bench.spin_until(lambda: bench.intake.counts()["late_sets"] == 1, 10.0)
    bench.spin_for(0.2)
    assert bench.pairs == [] and len(bench.lone) == 1
    counts = bench.intake.counts()
    assert (counts["pairs"], counts["lone_images"], counts["late_sets"], counts["unpaired_points"]) == (0, 1, 1, 0)


def test_points_without_an_image_are_counted_never_answered(bench):
    bench.publish("points", 9 * SEC)
    bench.publish("points", 10 * SEC)
    assert bench.spin_until(lambda: bench.intake.counts()["received_points"] == 2, 10.0)
    bench.spin_for(PAIR_TIMEOUT * 2)
    assert bench.pairs == [] and bench.lone == []
    counts = bench.intake.counts()
    assert (counts["unpaired_points"], counts["received_image"], counts["pairs"]) == (2, 0, 0)


def test_an_exception_while_handing_a_set_on_answers_its_image_once(bench):
    def broken(messages, received):
        raise ZeroDivisionError("division by zero")

    bench.intake._on_pair = broken  # e.g. a bug downstream of the pairing
    bench.publish("points", 11 * SEC)
    bench.publish("image", 11 * SEC)
    assert bench.spin_until(lambda: bench.lone, 10.0)
    bench.spin_for(PAIR_TIMEOUT * 2)  # no second answer when its timeout would have come
    (image, reason), = bench.lone
    assert image.header.stamp.sec == 11 and reason == "internal error while pairing: ZeroDivisionError: division by zero"
    counts = bench.intake.counts()
    assert (counts["callback_errors"], counts["waiting_images"], counts["lone_images"]) == (1, 0, 0)


def test_gaps_in_a_publishers_sequence_numbers_are_counted_as_losses(bench):
    """The middleware reports nothing when a reader's history overwrites a message or a best-effort sample never
    comes; the publisher's sequence numbers do (here: messages published while the intake did not listen)."""
    bench.publish("image", 12 * SEC)
    assert bench.spin_until(lambda: bench.intake.counts()["received_image"] == 1, 10.0)
    subscriber = bench.intake.subscribers[0]
    bench.node.destroy_subscription(subscriber.sub)
    for second in (13, 14, 15):  # nobody listens: lost for this subscriber
        bench.publish("image", second * SEC)
    subscriber.sub = subscriber._subscribe(subscriber.qos_profile, {})
    assert bench.spin_until(lambda: bench.publishers["image"].get_subscription_count() == 1, 10.0)
    bench.publish("image", 16 * SEC)
    assert bench.spin_until(lambda: bench.intake.counts()["received_image"] == 2, 10.0)
    counts = bench.intake.counts()
    assert (counts["seq_gaps_image"], counts["lost_image"]) == (3, 0)
    assert bench.intake.lost_per_topic() == {"image": 3, "points": 0}
