"""The outputs registry (mentor3ad.ros.inspector.outputs): the node's outputs and their parameters, and the
contract a new output relies on, checked with extra outputs on a real inspector node and model: every
answered part reaches every output once as a JudgedPart, observe() sees a set first and may name the part,
a failing output costs the others nothing, a missing message package leaves one output unavailable, close()
comes at shutdown."""
import importlib
import time

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.inspector import INSPECTOR_PARAMETERS  # noqa: E402
from mentor3ad.ros.inspector import outputs as registry  # noqa: E402
from mentor3ad.ros.params import ParamSpec  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(90)]


def test_the_node_has_its_outputs_and_their_parameters():
    classes = registry.output_classes()
    assert [cls.name for cls in classes] == ["result", "inspection", "inspect", "part_id", "anomaly_map", "overlay",
                                             "markers", "drift", "record"]
    names = [spec.name for spec in INSPECTOR_PARAMETERS]
    assert names[names.index("publish_anomaly_map"):][:3] == ["publish_anomaly_map", "publish_overlay",
                                                             "publish_markers"] and "batch_size" in names
    assert {"drift_window", "drift_factor", "record_path", "record_url", "record_cell"} <= set(names)
    with pytest.raises(ValueError, match="declared twice .*: publish_overlay"):
        registry.collect_parameters([ParamSpec("publish_overlay", True, "a core parameter of the same name")], classes)

    class Nameless(registry.Output):
        pass

    with pytest.raises(TypeError, match="Output subclass with a name"):
        registry.register_output(Nameless)

    class Impostor(registry.Output):
        name = "overlay"

    with pytest.raises(ValueError, match="two inspector outputs are named 'overlay'"):
        registry.register_output(Impostor)


class Recording(registry.Output):
    """A new output as the contract describes it: names the parts it observes, records what it is given."""

    name = "recording_test"
    order = 90

    def __init__(self, node):
        super().__init__(node)
        self.observed, self.parts, self.closed = [], [], False

    def observe(self, pair):
        pair.part_id = f"part-{pair.header.stamp.sec}"
        self.observed.append(pair.part_id)

    def publish(self, part):
        self.parts.append(part)

    def close(self):
        self.closed = True


class Failing(registry.Output):
    name = "failing_test"
    order = 5  # between ~/result and the others

    def publish(self, part):
        raise RuntimeError("disk full")


class NeedsMissingPackage(registry.Output):
    name = "missing_test"

    def __init__(self, node):
        super().__init__(node)
        importlib.import_module("mentor3ad_not_installed_msgs")  # as a message package this machine lacks


def test_every_output_gets_every_part(tmp_path, monkeypatch):
    from rclpy.parameter import Parameter

    from mentor3ad.ros.nodes.inspector import InspectorNode
    from mentor3ad.ros.tooling.graph import ResultCollector
    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

    for cls in (Recording, Failing, NeedsMissingPackage):
        monkeypatch.setitem(registry._REGISTRY, cls.name, cls)
    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = InspectorNode(context=context, namespace="/outputs_contract", parameter_overrides=[
        Parameter("model_path", value=str(model_path)), Parameter("device", value="cpu")])
    listener = rclpy.create_node("contract_listener", context=context)
    inspector = node.inspector
    try:
        outputs = inspector.outputs
        assert list(outputs.active) == ["result", "inspection", "inspect", "part_id", "failing_test", "anomaly_map",
                                        "overlay", "markers", "drift", "record", "recording_test"]
        assert "unavailable: missing_test (No module named 'mentor3ad_not_installed_msgs')" in outputs.describe()
        recording = outputs["recording_test"]
        collector = ResultCollector(listener, "/outputs_contract/inspector/result")
        assert collector.wait_for_publisher(10.0)

        messages = to_messages(build_pair("good", 64, 64, "points", scene="cell"), 3_000_000_000)
        inspector._on_pair({key: messages[key] for key in ("image", "points")}, time.monotonic())
        inspector._on_lone(to_messages(build_pair("good", 64, 64, "points"), 4_000_000_000)["image"],
                           "no /points within 2 s of the image")
        inspector.enabled = False
        inspector._on_pair(to_messages(build_pair("good", 64, 64, "points"), 5_000_000_000), time.monotonic())
        deadline = time.monotonic() + 30.0
        while len(recording.parts) < 3 and time.monotonic() < deadline:
            time.sleep(0.02)
        results = collector.wait_for(3, 10.0)  # the failing output kept nothing from ~/result
        assert [r.verdict for r in results] == [p.result.verdict.value for p in recording.parts]
        assert recording.observed == ["part-3", "part-5"]  # complete sets only, on arrival

        judged, lone, skipped = sorted(recording.parts, key=lambda p: p.header.stamp.sec)
        assert judged.is_decision and judged.part_id == "part-3" and judged.result.part_id == "part-3"
        assert judged.result.anomaly_map.shape == (64, 64) and judged.rgb.shape == (64, 64, 3)
        assert judged.header_3d is judged.messages["points"].header and set(judged.messages) == {"image", "points"}
        assert judged.latency_ms > 0 and judged.result.model_id == inspector.model.slot.current()[1]
        assert (lone.result.verdict.value, lone.result.reason, lone.rgb, lone.header_3d, lone.part_id) == (
            "ERROR", "no /points within 2 s of the image", None, None, "")
        assert set(lone.messages) == {"image"}
        assert (skipped.result.verdict.value, skipped.part_id) == ("SKIPPED", "part-5")
        assert not recording.closed
    finally:
        node.stop()
        assert recording.closed
        listener.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
