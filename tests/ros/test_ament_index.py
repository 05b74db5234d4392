"""The pip-installed package is registered in the ament index like a colcon install.

Needs the package installed into the venv (``./run.sh setup``/``./run.sh test`` do it when packaging
files change).
"""
import os
import subprocess
from pathlib import Path

import pytest
from helpers import REPO_ROOT as REPO
from helpers import setup_executables

ament_index = pytest.importorskip("ament_index_python.packages")




@pytest.fixture(scope="module")
def share():
    try:
        return Path(ament_index.get_package_share_directory("mentor3ad"))
    except ament_index.PackageNotFoundError:
        pytest.fail(f"mentor3ad not in the ament index (AMENT_PREFIX_PATH={os.environ.get('AMENT_PREFIX_PATH')}); "
                    "run ./run.sh setup")


def test_share_directory_has_manifest_launch_and_config(share):
    assert (share / "package.xml").is_file()
    assert (share / "launch" / "inspect.launch.py").is_file()
    assert (share / "config" / "inspector.yaml").is_file()
    stale = [p.name for p in sorted((REPO / "launch").glob("*.launch.py")) + sorted((REPO / "config").glob("*.yaml"))
             if not (share / p.parent.name / p.name).is_file()]
    assert not stale, f"installed share lacks {stale}: run ./run.sh setup"


def test_executables_in_lib_run(share):
    prefix = Path(ament_index.get_package_prefix("mentor3ad"))
    lib = prefix / "lib" / "mentor3ad"
    names = setup_executables()
    assert {"inspector_node", "trainer_node", "evaluator_node", "replay_node", "mentor3ad"} <= set(names)
    for name in names:
        path = lib / name
        assert path.is_file() and os.access(path, os.X_OK), f"{path} missing or not executable"
    # the launchers reach the console scripts: --help parses arguments and exits before rclpy.init
    expected = {"inspector_node": "queue_policy", "trainer_node": "bag_paths", "evaluator_node": "ground_truth_bag",
                "replay_node": "--clock", "mentor3ad": "replay"}
    for name, word in expected.items():
        proc = subprocess.run([str(lib / name), "--help"], capture_output=True, text=True, timeout=60)
        assert proc.returncode == 0, f"{name} --help: {proc.stderr}"
        assert word in proc.stdout, f"{name} --help lacks {word}: {proc.stdout}"


def test_executables_are_found_in_a_colcon_layout(tmp_path, monkeypatch):
    """Under colcon the executables live in <prefix>/lib/mentor3ad (not beside the interpreter, not on PATH):
    package_executable finds them through AMENT_PREFIX_PATH, as `ros2 run` does."""
    from mentor3ad import package_files

    prefix = tmp_path / "install" / "mentor3ad"
    lib = prefix / "lib" / "mentor3ad"
    lib.mkdir(parents=True)
    script = lib / "replay_node"
    script.write_text("#!/bin/sh\n")
    script.chmod(0o755)
    monkeypatch.setattr(package_files.sys, "executable", str(tmp_path / "python" / "bin" / "python3"))
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    monkeypatch.setenv("AMENT_PREFIX_PATH", os.pathsep.join([str(tmp_path / "other"), str(prefix)]))
    assert package_files.package_executable("replay_node") == str(script)
    assert package_files.package_executable("inspector_node") is None
