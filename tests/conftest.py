"""Test-wide settings (local-only DDS discovery, an isolated ROS domain, the working tree's code on the
path of tests and of the processes they start) and shared fixtures. Helpers: ``helpers.py``."""
import os
import sys
from pathlib import Path

import pytest

os.environ.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
if os.environ.get("ROS_DISTRO") == "humble":
    os.environ.setdefault("ROS_LOCALHOST_ONLY", "1")
# one DDS domain per test session so concurrent runs on one machine never see each other's topics
os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 150))
# the venv's prefix is an ament prefix (pip installs share/ament_index there)
_prefix = sys.prefix
if _prefix not in os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep):
    os.environ["AMENT_PREFIX_PATH"] = os.pathsep.join(p for p in (_prefix, os.environ.get("AMENT_PREFIX_PATH")) if p)
# bin/ of the venv on PATH so console scripts can be started as subprocesses
_bin = str(Path(sys.executable).parent)
if _bin not in os.environ.get("PATH", "").split(os.pathsep):
    os.environ["PATH"] = _bin + os.pathsep + os.environ.get("PATH", "")

TESTS = Path(__file__).resolve().parent
# tests (and the console scripts they start) use the working tree's code, not a stale installed copy;
# tests/ itself holds helpers.py
for _path in (str(TESTS.parent / "src"), str(TESTS)):
    if _path not in sys.path:
        sys.path.insert(0, _path)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (str(TESTS.parent / "src"), os.environ.get("PYTHONPATH")) if p)


def pytest_collection_modifyitems(config, items):
    """Tests that exchange messages between real processes over DDS (marker ``ros``) run once more when they
    fail: on a loaded 2-core CI machine Fast DDS discovery has stalled now and then (a client that never saw
    a live server within 60 s, a best-effort burst partly lost) in tests that pass alone and under a
    busy-core load here. The rerun starts from fresh processes; a test that fails twice fails, and every
    rerun is listed in the summary ("R", "N rerun")."""
    if not config.pluginmanager.hasplugin("rerunfailures"):
        return
    for item in items:
        if item.get_closest_marker("ros") and not item.get_closest_marker("flaky"):
            item.add_marker(pytest.mark.flaky(reruns=1, reruns_delay=2))


@pytest.fixture
def ros_node():
    """An rclpy node in its own context (local discovery, this session's domain), shut down afterwards."""
    rclpy = pytest.importorskip("rclpy")
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mentor3ad_test", context=context)
    try:
        yield node
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
