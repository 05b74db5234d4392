"""mentor3ad_interfaces: the generated types (built by run.sh into the venv, or by colcon) import, carry the
contract's fields, survive CDR serialization, and cross DDS between processes (a topic and an action);
``ros2 interface show`` and colcon's discovery of both packages where the real tool chain is installed."""
import math
import os
import re
import shutil
import subprocess
import sys
import time

import pytest

from helpers import REPO_ROOT

INTERFACES = REPO_ROOT / "mentor3ad_interfaces"
msg = pytest.importorskip("mentor3ad_interfaces.msg", reason="mentor3ad_interfaces not built (./run.sh setup)")
action = pytest.importorskip("mentor3ad_interfaces.action")

# the contract a robot program / PLC bridge relies on: field -> rosidl type (a change must be deliberate)
RESULT_FIELDS = {"header": "std_msgs/Header", "part_id": "string", "verdict": "uint8", "reason": "string",
                 "score": "double", "threshold": "double", "model_id": "string", "latency_ms": "double",
                 "cloud_frame_id": "string", "cloud_stamp": "builtin_interfaces/Time",
                 "regions": "sequence<mentor3ad_interfaces/DefectRegion>"}
REGION_FIELDS = {"bbox": "sensor_msgs/RegionOfInterest", "area_px": "uint32", "area_mm2": "double",
                 "centroid": "geometry_msgs/Point", "extent": "geometry_msgs/Vector3", "peak_score": "double"}


def sample_result(part_id="serial-0042", sec=1800):
    """A FAIL result with two regions (one without valid 3D points: NaN centroid / extent)."""
    from geometry_msgs.msg import Point, Vector3
    from sensor_msgs.msg import RegionOfInterest

    out = msg.InspectionResult(part_id=part_id, verdict=msg.InspectionResult.FAIL, score=3.25, threshold=2.5,
                               model_id="fdcbf2194ba1", latency_ms=17.5, cloud_frame_id="camera_depth")
    out.header.stamp.sec, out.header.stamp.nanosec, out.header.frame_id = sec, 5, "camera"
    out.cloud_stamp.sec, out.cloud_stamp.nanosec = sec, 7
    nan = math.nan
    out.regions = [
        msg.DefectRegion(bbox=RegionOfInterest(x_offset=55, y_offset=99, width=7, height=6), area_px=31,
                         area_mm2=10.7, centroid=Point(x=0.01, y=-0.02, z=0.5),
                         extent=Vector3(x=0.003, y=0.002, z=0.001), peak_score=3.25),
        msg.DefectRegion(bbox=RegionOfInterest(x_offset=0, y_offset=0, width=1, height=1), area_px=1,
                         area_mm2=0.0, centroid=Point(x=nan, y=nan, z=nan), extent=Vector3(x=nan, y=nan, z=nan),
                         peak_score=2.6),
    ]
    return out


def assert_same_result(got, want):
    assert (got.part_id, got.verdict, got.score, got.threshold, got.model_id, got.latency_ms, got.cloud_frame_id) == \
        (want.part_id, want.verdict, want.score, want.threshold, want.model_id, want.latency_ms, want.cloud_frame_id)
    assert got.header == want.header and got.cloud_stamp == want.cloud_stamp
    assert len(got.regions) == len(want.regions)
    for a, b in zip(got.regions, want.regions):
        assert a.bbox == b.bbox and (a.area_px, a.area_mm2, a.peak_score) == (b.area_px, b.area_mm2, b.peak_score)
        for name in ("centroid", "extent"):
            va, vb = getattr(a, name), getattr(b, name)
            assert all((x == y) or (math.isnan(x) and math.isnan(y))
                       for x, y in zip((va.x, va.y, va.z), (vb.x, vb.y, vb.z))), (name, va, vb)


def test_message_fields_and_verdict_constants_are_the_contract():
    from mentor3ad.types import Verdict

    assert msg.InspectionResult.get_fields_and_field_types() == RESULT_FIELDS
    assert msg.DefectRegion.get_fields_and_field_types() == REGION_FIELDS
    # every verdict of the core has its constant; 0 is left for a default-constructed (unset) message
    assert {v.value: getattr(msg.InspectionResult, v.value) for v in Verdict} == \
        {"PASS": 1, "FAIL": 2, "ERROR": 3, "SKIPPED": 4}
    assert msg.InspectionResult.UNKNOWN == 0 == msg.InspectionResult().verdict
    goal, result, feedback = action.InspectPart.Goal, action.InspectPart.Result, action.InspectPart.Feedback
    assert goal.get_fields_and_field_types() == {"part_id": "string", "timeout_s": "double",
                                                 "min_stamp": "builtin_interfaces/Time"}
    assert result.get_fields_and_field_types() == {"result": "mentor3ad_interfaces/InspectionResult"}
    assert feedback.get_fields_and_field_types() == {"stage": "uint8", "pair_stamp": "builtin_interfaces/Time"}
    assert (feedback.WAITING_FOR_DATA, feedback.QUEUED, feedback.INSPECTING) == (1, 2, 3)


def test_result_and_action_messages_survive_cdr_serialization():
    from rclpy.serialization import deserialize_message, serialize_message

    want = sample_result()
    data = serialize_message(want)
    assert_same_result(deserialize_message(data, msg.InspectionResult), want)
    goal = action.InspectPart.Goal(part_id="tray 3 / slot 7", timeout_s=5.0)
    goal.min_stamp.sec = 1800
    assert deserialize_message(serialize_message(goal), action.InspectPart.Goal) == goal
    wrapped = action.InspectPart.Result(result=want)
    assert_same_result(deserialize_message(serialize_message(wrapped), action.InspectPart.Result).result, want)


def test_interface_files_are_all_generated_and_declared():
    """Every .msg / .action file is in rosidl_generate_interfaces and importable; the Python package's
    manifest depends on the interfaces (colcon builds them first)."""
    cmake = (INTERFACES / "CMakeLists.txt").read_text()
    files = sorted(str(p.relative_to(INTERFACES)) for p in INTERFACES.glob("*/*") if p.suffix in (".msg", ".action"))
    assert files == ["action/InspectPart.action", "msg/DefectRegion.msg", "msg/InspectionResult.msg"]
    assert all(f'"{f}"' in cmake for f in files), cmake
    manifest = (INTERFACES / "package.xml").read_text()
    assert "<member_of_group>rosidl_interface_packages</member_of_group>" in manifest
    assert "<build_type>ament_cmake</build_type>" in manifest
    assert "<exec_depend>mentor3ad_interfaces</exec_depend>" in (REPO_ROOT / "package.xml").read_text()
    from ament_index_python.packages import get_package_share_directory

    share = get_package_share_directory("mentor3ad_interfaces")  # registered in the ament index
    assert os.path.isfile(os.path.join(share, "msg", "InspectionResult.msg"))


# A peer process: publishes sample results (reliable) on /m3ad_if_test/results and serves InspectPart on
# /m3ad_if_test/inspect (feedback QUEUED with the pair's stamp, then a FAIL result carrying the goal's part_id).
PEER = r"""
import signal, sys, time
import rclpy
from rclpy.action import ActionServer
from rclpy.executors import SingleThreadedExecutor
from rclpy.signals import SignalHandlerOptions
sys.path[:0] = [sys.argv[1], sys.argv[1] + "/ros"]
from test_interfaces import sample_result
from mentor3ad_interfaces.action import InspectPart
from mentor3ad_interfaces.msg import InspectionResult
from mentor3ad.ros import configure_local_discovery

configure_local_discovery()
stop = []  # SIGTERM from the test ends the loop below (rclpy's own handler would shut the context down under it)
signal.signal(signal.SIGTERM, lambda *_: stop.append(True))
rclpy.init(signal_handler_options=SignalHandlerOptions.NO)
node = rclpy.create_node("interfaces_peer", namespace="m3ad_if_test")
pub = node.create_publisher(InspectionResult, "results", 10)

def execute(handle):
    feedback = InspectPart.Feedback(stage=InspectPart.Feedback.QUEUED)
    feedback.pair_stamp.sec = 1900
    handle.publish_feedback(feedback)
    handle.succeed()
    return InspectPart.Result(result=sample_result(part_id=handle.request.part_id, sec=1900))

server = ActionServer(node, InspectPart, "inspect", execute)
executor = SingleThreadedExecutor()
executor.add_node(node)
deadline = time.monotonic() + 30
while pub.get_subscription_count() == 0 and time.monotonic() < deadline:
    executor.spin_once(timeout_sec=0.05)
for i in range(3):
    pub.publish(sample_result(part_id=f"part-{i}", sec=1800 + i))
end = time.monotonic() + float(sys.argv[2])
while time.monotonic() < end and not stop:
    executor.spin_once(timeout_sec=0.05)
node.destroy_node()
rclpy.shutdown()
"""


@pytest.mark.ros
@pytest.mark.timeout(90)
def test_results_and_an_inspect_part_goal_cross_dds_between_processes(ros_node):
    from rclpy.action import ActionClient

    from mentor3ad.ros import configure_local_discovery

    configure_local_discovery()
    received = []
    ros_node.create_subscription(msg.InspectionResult, "/m3ad_if_test/results", received.append, 10)
    client = ActionClient(ros_node, action.InspectPart, "/m3ad_if_test/inspect")
    peer = subprocess.Popen([sys.executable, "-c", PEER, str(REPO_ROOT / "tests"), "20"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=ros_node.context)
    executor.add_node(ros_node)

    def spin_until(done, timeout):
        end = time.monotonic() + timeout
        while not done() and time.monotonic() < end:
            executor.spin_once(timeout_sec=0.05)
        return done()

    try:

        assert spin_until(lambda: len(received) == 3, 30.0), f"{len(received)}/3 results"
        for i, got in enumerate(received):
            assert_same_result(got, sample_result(part_id=f"part-{i}", sec=1800 + i))
        assert client.wait_for_server(timeout_sec=20.0)
        feedback = []
        sent = client.send_goal_async(action.InspectPart.Goal(part_id="SN-7", timeout_s=2.0),
                                      feedback_callback=lambda f: feedback.append(f.feedback))
        assert spin_until(sent.done, 10.0) and sent.result().accepted
        answer = sent.result().get_result_async()
        assert spin_until(answer.done, 10.0)
        assert_same_result(answer.result().result.result, sample_result(part_id="SN-7", sec=1900))
        assert [(f.stage, f.pair_stamp.sec) for f in feedback] in ([], [(action.InspectPart.Feedback.QUEUED, 1900)])
    finally:
        peer.terminate()
        out = peer.communicate(timeout=20)[0]
        client.destroy()
        executor.shutdown()
    assert peer.returncode == 0, out


ros2cli = shutil.which("ros2")


@pytest.mark.skipif(not ros2cli, reason="ros2cli (the real ROS 2 tool chain) not installed")
def test_ros2_interface_show_expands_the_result():
    shown = subprocess.run([ros2cli, "interface", "show", "mentor3ad_interfaces/msg/InspectionResult"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    assert "uint8 FAIL=2" in shown.stdout and "DefectRegion[] regions" in shown.stdout
    assert re.search(r"\n\s+geometry_msgs/Point centroid", shown.stdout), shown.stdout  # nested types expanded
    listed = subprocess.run([ros2cli, "interface", "package", "mentor3ad_interfaces"], capture_output=True,
                            text=True, timeout=60).stdout.split()
    assert sorted(listed) == ["mentor3ad_interfaces/action/InspectPart", "mentor3ad_interfaces/msg/DefectRegion",
                              "mentor3ad_interfaces/msg/InspectionResult"]


@pytest.mark.skipif(not shutil.which("colcon"), reason="colcon not installed")
def test_colcon_finds_both_packages_with_the_readme_base_paths(tmp_path):
    """The repository root is the ament_python package and colcon does not descend into a package: the
    README's `--base-paths src src/mentor3ad/mentor3ad_interfaces` finds both, in dependency order."""
    src = tmp_path / "src"
    src.mkdir()
    (src / "mentor3ad").symlink_to(REPO_ROOT)
    run = dict(capture_output=True, text=True, timeout=120, cwd=tmp_path)
    plain = subprocess.run(["colcon", "list", "--names-only"], **run)
    assert plain.stdout.split() == ["mentor3ad"], plain.stderr
    both = subprocess.run(["colcon", "list", "--names-only", "--topological-order", "--base-paths", "src",
                           "src/mentor3ad/mentor3ad_interfaces"], **run)
    assert both.stdout.split() == ["mentor3ad_interfaces", "mentor3ad"], both.stderr
