"""Inspector node in-process: the anomaly map and overlay are only built while someone subscribes."""
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from mentor3ad.ros.inspector.part import Pair  # noqa: E402
from mentor3ad.ros.nodes import inspector as inspector_node  # noqa: E402
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages  # noqa: E402
from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import ResultCollector, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]


def _wait_matched(publisher, expected, timeout=10.0):
    deadline = time.monotonic() + timeout
    while publisher.get_subscription_count() != expected and time.monotonic() < deadline:
        time.sleep(0.02)
    return publisher.get_subscription_count() == expected


def test_map_and_overlay_skipped_without_subscribers(tmp_path, monkeypatch):
    from rclpy.parameter import Parameter
    from sensor_msgs.msg import Image

    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    from mentor3ad.ros.inspector.outputs import anomaly_map, overlay

    rendered, built = [], []
    real_map, real_overlay = anomaly_map.map_message, overlay.overlay_message

    def map_message(*a):
        msg = real_map(*a)
        built.append(msg.encoding)
        return msg

    def overlay_message(*a):
        rendered.append(1)
        msg = real_overlay(*a)
        built.append(msg.encoding)
        return msg

    monkeypatch.setattr(anomaly_map, "map_message", map_message)
    monkeypatch.setattr(overlay, "overlay_message", overlay_message)

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = inspector_node.InspectorNode(
        context=context, namespace="/outputs_test",
        parameter_overrides=[Parameter("model_path", value=str(model_path)), Parameter("device", value="cpu")])
    listener = rclpy.create_node("outputs_listener", context=context)
    try:
        collector = ResultCollector(listener, "/outputs_test/inspector/result")
        slot, outputs = node.inspector.model.slot, node.inspector.outputs
        assert slot.current()[0] is not None, slot.current()[2]
        messages = to_messages(build_pair("good", 64, 64, "points", scene="cell"), 1_000_000_000)
        pair = Pair({"image": messages["image"], "points": messages["points"]}, received=time.monotonic())

        node.inspector.judge([pair])  # nobody listens to ~/anomaly_map or ~/overlay
        assert collector.wait_for(1, 10.0) and collector.results[0].verdict in ("PASS", "FAIL")
        assert rendered == [] and built == []

        maps, overlays = [], []
        listener.create_subscription(Image, "/outputs_test/inspector/anomaly_map", maps.append, 10)
        listener.create_subscription(Image, "/outputs_test/inspector/overlay", overlays.append, 10)
        assert _wait_matched(outputs["anomaly_map"].publisher, 1) and _wait_matched(outputs["overlay"].publisher, 1)
        node.inspector.judge([pair])
        assert rendered == [1] and built == ["32FC1", "bgr8"]
        assert spin_until(listener, lambda: len(maps) == 1 and len(overlays) == 1, 10.0)
        assert (maps[0].encoding, maps[0].width, overlays[0].encoding, overlays[0].height) == ("32FC1", 64, "bgr8", 64)
        assert collector.wait_for(2, 10.0)[1].stamp_ns == 1_000_000_000
    finally:
        node.stop()
        listener.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
