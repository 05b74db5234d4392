"""``ros2 launch`` on the real tool chain (skipped without launch / ros2cli, e.g. in CI): the launch ends with
the node it exists for and exits 1, naming it, when that node fails (before: exit 0, so ``ros2 launch ... &&
next-step`` carried on). The handler logic itself is tested without launch in ``test_launch_files.py``."""
import json
import shutil
import subprocess

import pytest

pytest.importorskip("launch")
pytest.importorskip("launch_ros")
ROS2 = shutil.which("ros2")
pytestmark = [pytest.mark.ros, pytest.mark.timeout(300),
              pytest.mark.skipif(ROS2 is None, reason="ros2 (ros2cli + ros2launch) not installed")]


def ros2_launch(*arguments, timeout=240.0):
    proc = subprocess.run([ROS2, "launch", "mentor3ad", *map(str, arguments)], capture_output=True, text=True,
                          timeout=timeout)
    return proc.returncode, proc.stdout + proc.stderr


def test_inspect_launch_fails_when_the_inspector_refuses_its_parameters():
    code, output = ros2_launch("inspect.launch.py", "input_mode:=rgbd")
    assert code == 1, output
    assert "inspector_node exited with code 2 (configuration error" in output, output


def test_train_launch_fails_when_the_trainer_fails(tmp_path):
    code, output = ros2_launch("train.launch.py", f"bag_paths:={tmp_path / 'missing_bag'}",
                               f"output_model_path:={tmp_path / 'model.safetensors'}")
    assert code == 1, output
    assert "trainer_node exited with code 1 (failed" in output, output


def test_train_launch_fails_when_the_swap_is_refused(tmp_path):
    """The issue's case: the model is trained and written, the swap into an inspector is refused."""
    import yaml

    from helpers import TINY_MODEL_CONFIG
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample

    bag = write_dataset_bag([generate_sample(200 + i, (64, 64)) for i in range(5)], tmp_path / "good",
                            camera_info=camera_matrix((64, 64)))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    model = tmp_path / "model.safetensors"
    code, output = ros2_launch("train.launch.py", f"bag_paths:={bag}", f"output_model_path:={model}",
                               f"config_file:={config}", "device:=cpu", "reload_service:=/nobody/reload_model")
    assert model.is_file() and "not swapped in" in output, output
    assert code == 1 and "trainer_node exited with code 1 (failed" in output, output


def test_evaluate_launch_waits_for_a_slow_starting_inspector(tmp_path):
    """The inspector starts 25 s late (``--launch-prefix`` on it only), longer than the replay's old fixed 20 s:
    the replay waits for its ~/result, every part is evaluated and the launch ends with exit 0 (before: the
    first parts were played into nothing and each cost the pacer its 120 s timeout)."""
    from helpers import train_tiny_model
    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import generate_sample

    model = tmp_path / "tiny.safetensors"
    train_tiny_model(model, n_train=4, n_val=2)
    parts = [generate_sample(600, (64, 64), name="test/good/0"),
             generate_sample(601, (64, 64), defect="dent", name="test/dent/0"),
             generate_sample(602, (64, 64), name="test/good/1")]
    bag = write_dataset_bag(parts, tmp_path / "bag", storage="mcap", start_stamp_ns=1_800_000_000 * 10 ** 9)
    out = tmp_path / "report"
    proc = subprocess.run([ROS2, "launch", "--launch-prefix", "bash -c 'sleep 25; exec \"$0\" \"$@\"'",
                           "--launch-prefix-filter", "inspector_node", "mentor3ad", "evaluate.launch.py",
                           f"model_path:={model}", f"bag:={bag}", f"output_dir:={out}", "device:=cpu"],
                          capture_output=True, text=True, timeout=240)
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    summary = json.loads((out / "ros_summary.json").read_text())
    assert summary["evaluated_pairs"] == len(parts) and not summary["not_evaluated"], summary
    assert "inspector/result is advertised" in output and "without a result after" not in output, output
