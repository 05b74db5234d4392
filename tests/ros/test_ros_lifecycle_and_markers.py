"""The managed (lifecycle) inspector and the RViz markers of defect regions, over real DDS."""
import math
import sys

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, executable, spin_until  # noqa: E402
from mentor3ad.types import InspectionResult, Region, Verdict  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(180)]
START_NS = 1_950_000_000 * 1_000_000_000


@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.safetensors"
    train_tiny_model(path)
    return path


def publish(sequence, **extra):
    args = [sys.executable, "-m", "mentor3ad.ros.tooling.pair_publisher", "--sequence", ",".join(sequence), "--scene", "cell",
            "--size", "64x64", "--rate", "10", "--start-ns", str(START_NS)]
    for key, value in extra.items():
        args += [f"--{key}", str(value)]
    return NodeProcess(args)


def change_state(node, transition_id):
    from lifecycle_msgs.msg import Transition
    from lifecycle_msgs.srv import ChangeState

    client = node.create_client(ChangeState, "/inspector/change_state")
    assert spin_until(node, client.service_is_ready, 30.0)
    future = client.call_async(ChangeState.Request(transition=Transition(id=transition_id)))
    assert spin_until(node, future.done, 60.0)
    return future.result().success


def state_of(node):
    from lifecycle_msgs.srv import GetState

    client = node.create_client(GetState, "/inspector/get_state")
    assert spin_until(node, client.service_is_ready, 30.0)
    future = client.call_async(GetState.Request())
    assert spin_until(node, future.done, 30.0)
    return future.result().current_state.label


def test_lifecycle_inspector_loads_on_configure_and_listens_when_active(ros_node, tiny_model, tmp_path):
    from lifecycle_msgs.msg import Transition

    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"not a model")
    collector = ResultCollector(ros_node, "/inspector/result")
    cmd = [executable("inspector_lifecycle_node"), "--ros-args", "-p", f"model_path:={bad}", "-p", "device:=cpu"]
    with NodeProcess(cmd) as node:
        assert state_of(ros_node) == "unconfigured", node.output()
        assert not change_state(ros_node, Transition.TRANSITION_CONFIGURE)  # a refused model fails configure
        assert state_of(ros_node) == "unconfigured"
        from rcl_interfaces.msg import Parameter, ParameterType, ParameterValue
        from rcl_interfaces.srv import SetParameters

        setter = ros_node.create_client(SetParameters, "/inspector/set_parameters")
        assert spin_until(ros_node, setter.service_is_ready, 20.0)
        value = ParameterValue(type=ParameterType.PARAMETER_STRING, string_value=str(tiny_model))
        future = setter.call_async(SetParameters.Request(parameters=[Parameter(name="model_path", value=value)]))
        assert spin_until(ros_node, future.done, 20.0) and future.result().results[0].successful
        assert change_state(ros_node, Transition.TRANSITION_CONFIGURE), node.output()
        assert state_of(ros_node) == "inactive"
        assert change_state(ros_node, Transition.TRANSITION_ACTIVATE)
        assert state_of(ros_node) == "active"
        assert collector.wait_for_publisher(20.0)
        with publish(["good", "good"]) as publisher:
            collector.wait_for(2, 60.0)
            assert publisher.wait(30.0) == 0, publisher.output()
        assert [r.verdict in ("PASS", "FAIL") for r in collector.results] == [True, True], node.output()
        assert change_state(ros_node, Transition.TRANSITION_DEACTIVATE)
        with publish(["good"], wait=2) as publisher:  # nobody subscribes any more
            assert publisher.wait(30.0) == 1 and "no subscriber" in publisher.output()


def test_autostart_lifecycle_and_markers_of_the_defect_regions(ros_node, tiny_model):
    from visualization_msgs.msg import Marker, MarkerArray

    arrays = []
    ros_node.create_subscription(MarkerArray, "/inspector/markers", arrays.append, 10)
    collector = ResultCollector(ros_node, "/inspector/result")
    cmd = [executable("inspector_lifecycle_node"), "--ros-args", "-p", f"model_path:={tiny_model}",
           "-p", "device:=cpu", "-p", "autostart:=true", "-p", "threshold:=1e-6"]  # every part FAILs
    with NodeProcess(cmd) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        with publish(["good"], defect="dent") as publisher:
            collector.wait_for(1, 60.0)
            assert publisher.wait(30.0) == 0
        assert spin_until(ros_node, lambda: len(arrays) >= 1, 10.0), node.output()
    result, markers = collector.results[0], arrays[0].markers
    assert result.verdict == "FAIL" and result.regions
    assert markers[0].action == Marker.DELETEALL
    boxes = [m for m in markers if m.type == Marker.CUBE]
    labels = [m for m in markers if m.type == Marker.TEXT_VIEW_FACING]
    assert boxes and len(boxes) == len(labels) and all(m.header.frame_id == "camera" for m in markers)
    centroid = next(r.centroid_xyz for r in result.regions if all(math.isfinite(c) for c in r.centroid_xyz))
    assert boxes[0].pose.position.z == pytest.approx(centroid[2]) and boxes[0].scale.x >= 0.002


def test_region_markers_without_centroid_only_clear():
    pytest.importorskip("visualization_msgs")
    from std_msgs.msg import Header
    from visualization_msgs.msg import Marker

    from mentor3ad.ros.inspector.outputs.markers import region_markers

    region = Region((1, 1, 3, 3), 9, math.nan, (math.nan,) * 3, 2.0)
    array = region_markers(InspectionResult(Verdict.FAIL, score=2.0, threshold=1.0, regions=[region]), Header())
    assert [m.action for m in array.markers] == [Marker.DELETEALL]


def test_cleanup_takes_the_outputs_with_the_model_and_says_unconfigured(ros_node, tiny_model):
    """issue 24 item 9: after a lifecycle cleanup /diagnostics said ERROR (a deliberate state shown as a fault)
    and ~/result, the "ready" signal, stayed advertised without a model."""
    from diagnostic_msgs.msg import DiagnosticArray, DiagnosticStatus
    from lifecycle_msgs.msg import Transition

    statuses = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
        s for s in m.status if s.name == "/inspector: inspector"), 50)
    collector = ResultCollector(ros_node, "/inspector/result")
    cmd = [executable("inspector_lifecycle_node"), "--ros-args", "-p", f"model_path:={tiny_model}", "-p",
           "device:=cpu", "-p", "autostart:=true", "-p", "diagnostics_period:=0.2"]
    with NodeProcess(cmd) as node:
        assert collector.wait_for_publisher(60.0), node.output()
        assert spin_until(ros_node, lambda: ros_node.count_publishers("/inspector/inspection") == 1, 10.0)
        assert change_state(ros_node, Transition.TRANSITION_DEACTIVATE)
        assert change_state(ros_node, Transition.TRANSITION_CLEANUP), node.output()
        assert state_of(ros_node) == "unconfigured"
        assert spin_until(ros_node, lambda: ros_node.count_publishers("/inspector/result") == 0
                          and ros_node.count_publishers("/inspector/inspection") == 0, 10.0), node.output()
        statuses.clear()
        assert spin_until(ros_node, lambda: len(statuses) >= 2, 10.0), node.output()
        assert (statuses[-1].level, statuses[-1].message) == (
            DiagnosticStatus.WARN, "unconfigured (lifecycle): no model, no outputs; configure to serve")
        assert change_state(ros_node, Transition.TRANSITION_CONFIGURE), node.output()
        assert change_state(ros_node, Transition.TRANSITION_ACTIVATE)
        assert collector.wait_for_publisher(20.0), node.output()
        with publish(["good"]) as publisher:
            collector.wait_for(1, 60.0)
            assert publisher.wait(30.0) == 0, publisher.output()
        statuses.clear()
        assert spin_until(ros_node, lambda: len(statuses) >= 2, 10.0)
        assert statuses[-1].level == DiagnosticStatus.OK, statuses[-1].message
        output = node.output()
    assert [r.verdict in ("PASS", "FAIL") for r in collector.results] == [True], output
    assert "cleaned up: model unloaded, outputs destroyed" in output
    assert "Traceback" not in output and "answered while unconfigured" not in output
