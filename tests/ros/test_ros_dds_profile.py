"""Fast DDS profiles for large clouds: 224x224 organized clouds (784 KiB; a pair overruns a writer's default
512 KiB shared-memory segment) published best effort by a driver on Fast DDS defaults reach the inspector,
which loads its own profile (config/fastdds_inspector.xml); a QoS mismatch is reported, not silent."""
import sys

import pytest

from helpers import REPO_ROOT as REPO
from helpers import train_tiny_model
from mentor3ad.ros.dds import (FASTDDS_PROFILE_ENV, inspector_profile_path, large_shm_profile_path,
                               use_package_profile, with_dds_profile)
from mentor3ad.package_files import package_executable
from mentor3ad.ros.tooling.graph import NodeProcess

# Best-effort publisher of N cell pairs at SIZE (runs in its own process: Fast DDS reads the profile file
# once per process, so the pytest process, whose participants may already exist, cannot be used).
PUBLISHER = r"""
import sys, time
import rclpy
from rclpy.qos import qos_profile_sensor_data
from sensor_msgs.msg import Image, PointCloud2
from mentor3ad.ros import configure_local_discovery
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

count, width, height = int(sys.argv[1]), int(sys.argv[2]), int(sys.argv[3])
configure_local_discovery()
rclpy.init()
node = rclpy.create_node("large_cloud_publisher")
pubs = {"image": node.create_publisher(Image, "image", qos_profile_sensor_data),
        "points": node.create_publisher(PointCloud2, "points", qos_profile_sensor_data)}
pairs = [to_messages(build_pair("good", width, height, "points", seed=i, scene="cell"), (1800 + i) * 10**9)
         for i in range(count)]
assert len(pairs[0]["points"].data) == width * height * 16, len(pairs[0]["points"].data)
deadline = time.monotonic() + 30.0
while any(p.get_subscription_count() == 0 for p in pubs.values()):
    if time.monotonic() > deadline:
        sys.exit("no subscriber")
    time.sleep(0.05)
time.sleep(0.5)
for msgs in pairs:
    pubs["image"].publish(msgs["image"])
    pubs["points"].publish(msgs["points"])
    time.sleep(0.2)
time.sleep(1.0)
node.destroy_node()
rclpy.try_shutdown()
"""


def test_profiles_are_found_and_user_choice_wins(monkeypatch, tmp_path):
    shm, inspector = large_shm_profile_path(), inspector_profile_path()
    assert shm == REPO / "config" / "fastdds_large_shm.xml"  # source checkout first
    assert inspector == REPO / "config" / "fastdds_inspector.xml"
    assert "<segment_size>134217728</segment_size>" in shm.read_text()
    text = inspector.read_text()
    assert "<defaultUnicastLocatorList>" in text and "<receiveBufferSize>67108864</receiveBufferSize>" in text
    assert with_dds_profile({"A": "1"}) == {"A": "1", FASTDDS_PROFILE_ENV: str(inspector)}
    assert with_dds_profile({FASTDDS_PROFILE_ENV: "/user.xml"})[FASTDDS_PROFILE_ENV] == "/user.xml"
    assert with_dds_profile({FASTDDS_PROFILE_ENV: ""})[FASTDDS_PROFILE_ENV] == str(inspector)  # empty = unset
    with pytest.raises(FileNotFoundError, match="does not exist"):
        with_dds_profile({}, tmp_path / "missing.xml")
    monkeypatch.delenv(FASTDDS_PROFILE_ENV, raising=False)
    assert use_package_profile() == str(inspector)
    monkeypatch.setenv(FASTDDS_PROFILE_ENV, "/user.xml")
    assert use_package_profile() == "/user.xml"


def stock_environment():
    """A process on Fast DDS defaults (no XML profile), as a camera driver started by hand."""
    import os

    env = dict(os.environ)
    env.pop(FASTDDS_PROFILE_ENV, None)
    return env


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_224_clouds_from_a_best_effort_driver_on_defaults_reach_the_inspector(tmp_path, monkeypatch):
    rclpy = pytest.importorskip("rclpy")
    pytest.importorskip("torch")
    exe = package_executable("inspector_node")
    assert exe, "console script inspector_node not installed (run ./run.sh setup or colcon build)"
    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    env = stock_environment()  # the driver on defaults; the inspector loads its own profile
    count = 8
    # the node's input default is sensor-data QoS (best effort): no override here, a lost sample stays lost
    inspector_cmd = [exe, "--ros-args", "-r", "__node:=inspector", "-p", f"model_path:={model_path}",
                     "-p", "queue_policy:=all", "-p", "device:=cpu"]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("dds_profile_test", context=context)
    try:
        from mentor3ad.ros.tooling.graph import ResultCollector

        collector = ResultCollector(node, "/inspector/result")
        with NodeProcess(inspector_cmd, env) as inspector:
            assert collector.wait_for_publisher(40.0), inspector.output()
            with NodeProcess([sys.executable, "-c", PUBLISHER, str(count), "224", "224"], env) as publisher:
                results = collector.wait_for(count, 30.0)
                assert publisher.wait(30.0) == 0, publisher.output()
            assert len(results) == count, f"{len(results)}/{count} pairs arrived:\n{inspector.output()[-3000:]}"
            assert [r.stamp_ns for r in results] == [(1800 + i) * 10**9 for i in range(count)]
            assert {r.verdict for r in results} <= {"PASS", "FAIL"}, [r.reason for r in results]
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)


@pytest.mark.ros
@pytest.mark.timeout(60)
def test_a_qos_mismatch_is_an_error_in_diagnostics_not_silence(tmp_path):
    rclpy = pytest.importorskip("rclpy")
    from diagnostic_msgs.msg import DiagnosticArray

    from mentor3ad.ros.tooling.graph import ResultCollector, spin_until

    exe = package_executable("inspector_node")
    model_path = tmp_path / "tiny.m3ad"
    train_tiny_model(model_path, n_train=4, n_val=2)
    inspector_cmd = [exe, "--ros-args", "-r", "__node:=inspector", "-p", f"model_path:={model_path}",
                     "-p", "device:=cpu", "-p", "input_reliability:=reliable", "-p", "diagnostics_period:=0.2"]
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("qos_mismatch_test", context=context)
    statuses = []
    node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: statuses.extend(
        s for s in m.status if s.name == "/inspector: inspector"), 50)
    try:
        collector = ResultCollector(node, "/inspector/result")
        with NodeProcess(inspector_cmd, stock_environment()) as inspector:
            assert collector.wait_for_publisher(40.0), inspector.output()
            # the best-effort driver (sensor-data QoS) cannot match a reliable subscription
            with NodeProcess([sys.executable, "-c", PUBLISHER, "2", "64", "64"], stock_environment()):
                def mismatch_reported():
                    values = {kv.key: kv.value for kv in statuses[-1].values} if statuses else {}
                    return int(values.get("incompatible_qos_image", "0")) >= 1
                assert spin_until(node, mismatch_reported, 20.0), inspector.output()[-2000:]
            status = statuses[-1]
            assert status.level == status.ERROR and "incompatible QoS" in status.message, status.message
            assert "offers QoS incompatible" in inspector.output() and "input_reliability" in inspector.output()
            assert not collector.results
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
