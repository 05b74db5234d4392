"""Test-wide settings: local-only DDS discovery, an isolated ROS domain, shared fixtures."""
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

REPO_ROOT = Path(__file__).resolve().parents[1]
# tests (and the console scripts they start) use the working tree's code, not a stale installed copy
_src = str(REPO_ROOT / "src")
if _src not in sys.path:
    sys.path.insert(0, _src)
os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_src, os.environ.get("PYTHONPATH")) if p)
SHARED_DATA = Path(
    os.environ.get("MENTOR3AD_MVTEC_ROOT", REPO_ROOT / ".." / "shared" / "data" / "mvtec3d" / "cable_gland")
).resolve()


def run_mentor3ad(*args, timeout=300):
    """Run the installed ``mentor3ad`` console script; returns (exit code, stdout, stdout + stderr)."""
    import subprocess

    proc = subprocess.run([str(Path(sys.executable).parent / "mentor3ad"), *map(str, args)],
                          capture_output=True, text=True, timeout=timeout)
    return proc.returncode, proc.stdout, proc.stdout + proc.stderr


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


def setup_executables() -> list:
    """Console-script names from setup.py's EXECUTABLES dict (parsed, not executed)."""
    import ast

    tree = ast.parse((REPO_ROOT / "setup.py").read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "EXECUTABLES" for t in node.targets):
            return list(ast.literal_eval(node.value))
    raise AssertionError("setup.py has no EXECUTABLES dict")
