"""Who may change what a running inspector judges with (issue 24 item 2), on a real inspector_node process over
DDS: a threshold that would pass everything, a model file outside the directories, another file than the
pinned one, a model that does not fit the current parameters, parameters that would make every part ERROR;
each refused with its reason while the serving model keeps answering, and every change logged at WARN with
its source."""
import json

import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import InspectorCell, train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, inspector_command, spin_until  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(240)]
SEC = 1_000_000_000


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """Two valid models in one directory, a self-consistent forgery with threshold 1e6, a legacy file."""
    from mentor3ad.model import checkpoint
    from mentor3ad.model.integrity import file_sha256

    folder = tmp_path_factory.mktemp("cell_models")
    first = train_tiny_model(folder / "first.safetensors", n_train=4, n_val=3)
    train_tiny_model(folder / "second.safetensors", n_train=5, n_val=3)
    metadata, tensors = _parts(folder / "first.safetensors")
    metadata["threshold"] = metadata["training_info"]["threshold"]["value"] = 1e6  # digest recomputed below
    checkpoint.write_checkpoint(folder / "forged.safetensors", tensors, metadata)
    metadata, tensors = _parts(folder / "first.safetensors")
    del metadata["training_info"]["threshold"]  # written before threshold records: no calibration scores
    checkpoint.write_checkpoint(folder / "legacy.safetensors", tensors, metadata)
    return {"dir": folder, "first": folder / "first.safetensors", "second": folder / "second.safetensors",
            "forged": folder / "forged.safetensors", "legacy": folder / "legacy.safetensors",
            "sha256": file_sha256(folder / "first.safetensors"), "detector": first}


def _parts(path):
    from safetensors import safe_open
    from safetensors.torch import load_file

    from mentor3ad.model.checkpoint import METADATA_KEY, TENSOR_PREFIX

    with safe_open(str(path), "pt") as handle:
        metadata = json.loads(handle.metadata()[METADATA_KEY])
    return metadata, {k[len(TENSOR_PREFIX):]: v for k, v in load_file(str(path)).items()}


class Cell(InspectorCell):
    """The test's side (:class:`helpers.InspectorCell`): sends synthetic-cell parts, reloads models, reads
    the newest /diagnostics values."""

    def __init__(self, node):
        super().__init__(node)
        self.stamp = 1_950_000_000 * SEC

    def send(self, seed: int = 0, defect: str = "good"):
        """Publish one 64x64 synthetic-cell part; its result."""
        from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

        self.stamp += SEC // 10
        messages = to_messages(build_pair("good", 64, 64, "points", seed=seed, scene="cell", defect=defect), self.stamp)
        for key, message in messages.items():
            self.publishers[key].publish(message)
        count = len(self.results.results) + 1
        assert len(self.results.wait_for(count, 60.0)) == count, "no result"
        return self.results.results[-1]

    def reload(self, path):
        """(success, message) of model_path := path, then ~/reload_model."""
        from std_srvs.srv import Trigger

        assert self.set_parameter("model_path", str(path))[0]
        answer = self.call(Trigger, "/inspector/reload_model", Trigger.Request())
        return answer.success, answer.message

    def values(self):
        spin_until(self.node, lambda: False, 0.5)
        return {kv.key: kv.value for kv in self.statuses[-1].values}


def test_threshold_and_model_attacks_are_refused_and_every_change_is_logged(ros_node, models):
    from mentor3ad.model.threshold_bounds import plausible_range

    detector = models["detector"]
    _, high = plausible_range(detector.threshold_record)
    cell = Cell(ros_node)
    params = {"device": "cpu", "diagnostics_period": 0.3, "model_directories": f"['{models['dir']}']"}
    with NodeProcess(inspector_command(models["first"], reliable_inputs=["/image", "/points"], input_depth=50,
                                       params=params)) as inspector:
        cell.ready(inspector)
        ok, reason = cell.set_parameter("threshold", 1e300)  # would PASS every part
        assert not ok and reason.startswith("parameter threshold: the threshold override 1e+300 is above the "
                                            f"plausible range (0, {high:.4g}] of this model"), reason
        assert "every defect scoring below it would PASS" in reason
        assert not cell.set_parameter("threshold", 0.0)[0]  # every part would FAIL
        dented = cell.send(defect="dent")
        assert dented.threshold == pytest.approx(detector.threshold) and dented.verdict in ("PASS", "FAIL")
        assert cell.set_parameter("threshold", 1e-6) == (True, "")  # forcing FAILs stays possible: loud
        assert cell.send().verdict == "FAIL"
        assert cell.set_parameter("threshold", -1.0)[0]

        ok, message = cell.reload(models["forged"])  # a self-consistent file whose threshold passes everything
        assert not ok and "the model's threshold 1e+06 is above the plausible range" in message, message
        assert message.endswith(f"keeping model {detector.model_id}")
        ok, message = cell.reload("/etc/passwd")
        assert not ok and "is outside the allowed model directories" in message and "root:" not in message
        assert cell.set_parameter("threshold", 1e-6)[0]
        ok, message = cell.reload(models["legacy"])  # no calibration scores: the override cannot be bounded
        assert not ok and "does not fit the inspector's current parameters: parameter threshold: model" in message
        assert "has no calibration scores to bound an override by" in message
        assert cell.set_parameter("threshold", -1.0)[0]
        ok, message = cell.reload(models["legacy"])  # loads (with a warning) once no override is set
        assert ok, message
        assert not cell.set_parameter("threshold", 1.0)[0]  # ... and refuses any override
        assert cell.send().model_id == message.split()[2]
        values = cell.values()
        assert values["threshold_range"] == "none (no calibration scores)" and len(values["model_sha256"]) == 64
        output = inspector.output()
    assert "parameter threshold changed: -1.0 -> 1e-06 by the parameter service" in output, output
    assert "refused: parameter threshold: the threshold override 1e+300" in output
    assert f"model changed: none -> {detector.model_id} (file {models['first']}, sha256 {models['sha256']}" in output
    assert "by start-up (parameter model_path)" in output and "by the ~/reload_model service" in output
    assert "cannot be checked against calibration scores" in output


def test_a_pinned_inspector_loads_only_the_pinned_file(ros_node, models):
    cell = Cell(ros_node)
    params = {"device": "cpu", "model_sha256": models["sha256"]}
    with NodeProcess(inspector_command(models["first"], reliable_inputs=["/image", "/points"], input_depth=50,
                                       params=params)) as inspector:
        cell.ready(inspector)
        ok, message = cell.reload(models["second"])
        assert not ok and "which is not the pinned model_sha256" in message, message
        assert not cell.set_parameter("model_sha256", "")[0]  # read-only: the pin cannot be lifted remotely
        assert cell.reload(models["first"])[0]
        assert cell.send().model_id == models["detector"].model_id


def test_parameters_that_would_make_every_part_error_are_refused(ros_node, models):
    profile = models["detector"].input_profile
    cell = Cell(ros_node)
    with NodeProcess(inspector_command(models["first"], reliable_inputs=["/image", "/points"], input_depth=50,
                                       params={"device": "cpu"})) as inspector:
        cell.ready(inspector)
        ok, reason = cell.set_parameter("min_valid_points", profile.valid_points_min + 1)
        assert not ok and f"the {profile.valid_points_min} valid points of model" in reason, reason
        ok, reason = cell.set_parameter("working_volume", [-10.0, 10.0, -10.0, 10.0, 0.0, 0.2])  # the part is at ~0.35 m
        assert not ok and "does not contain model" in reason and "training points" in reason, reason
        assert cell.set_parameter("min_valid_points", profile.valid_points_min)[0]
        assert cell.set_parameter("working_volume", [-1.0, 1.0, -1.0, 1.0, 0.1, 1.0])[0]
        assert cell.send().verdict in ("PASS", "FAIL")
        output = inspector.output()
    assert "parameter working_volume changed: [-10.0, 10.0, -10.0, 10.0, 0.0, 10.0] -> [-1.0, 1.0, -1.0, 1.0, 0.1, 1.0]" \
        in output, output
