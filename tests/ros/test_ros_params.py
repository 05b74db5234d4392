"""Node parameter tables agree with config/*.yaml, and every parameter is described."""

import pytest
from helpers import REPO_ROOT as REPO
import yaml

from mentor3ad.ros.nodes.evaluator import EVALUATOR_PARAMETERS
from mentor3ad.ros.inspector import INSPECTOR_PARAMETERS, resolve_device
from mentor3ad.ros.params import markdown_table
from mentor3ad.jobs import split_validation
from mentor3ad.ros.nodes.trainer import TRAINER_PARAMETERS



@pytest.mark.parametrize("name,specs", [("inspector", INSPECTOR_PARAMETERS), ("trainer", TRAINER_PARAMETERS),
                                        ("evaluator", EVALUATOR_PARAMETERS)])
def test_config_file_matches_declared_defaults(name, specs):
    data = yaml.safe_load((REPO / "config" / f"{name}.yaml").read_text())
    params = data["/**"]["ros__parameters"]
    declared = {s.name: s for s in specs}
    assert set(params) == set(declared), f"config/{name}.yaml and the node disagree on parameter names"
    for key, value in params.items():
        default = declared[key].default
        assert value == default and type(value) is type(default), f"{name}.{key}: yaml {value!r} != node {default!r}"
    for spec in specs:
        assert len(spec.description) > 20, f"{name}.{spec.name} needs a real description"
    assert f"`{specs[0].name}`" in markdown_table(specs)


def test_resolve_device_decides_a_cuda_request_once():
    import torch

    assert resolve_device("cpu") == ("cpu", "")
    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu", "")
    if torch.cuda.is_available():
        assert resolve_device("cuda:0") == ("cuda:0", "")
    else:  # no CUDA here: the request falls back to the CPU with a note for the log and the diagnostics
        device, note = resolve_device("cuda:1")
        assert device == "cpu" and "cuda:1 requested but CUDA is not available" in note
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")


def test_parameter_values_are_validated_naming_the_parameter():
    specs = {s.name: s for s in INSPECTOR_PARAMETERS}
    assert specs["sync_queue_size"].problem(0) == "parameter sync_queue_size must be >= 1, got 0"
    assert "diagnostics_period must be >= 0.1" in specs["diagnostics_period"].problem(0.0)
    assert "pair_timeout must be > 0" in specs["pair_timeout"].problem(0.0)
    assert "queue_policy must be one of all, latest" in specs["queue_policy"].problem("fifo")
    assert "input_reliability" in specs["input_reliability"].problem("sometimes")
    assert "threshold: must be finite" in specs["threshold"].problem(float("nan"))
    assert all(spec.problem(spec.default) is None for spec in INSPECTOR_PARAMETERS)


def test_split_validation_holds_out_the_tail():
    assert split_validation(list(range(10)), 0.2) == (list(range(8)), [8, 9])
    assert split_validation([1, 2], 0.1) == ([1], [2])
    assert split_validation([1], 0.5) == ([1], [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation([1, 2], 1.0)


def test_readme_parameter_tables_are_the_declared_ones():
    """The README's node parameter tables are generated from the declarations (markdown_table) and kept equal."""
    from mentor3ad.ros.nodes.inspector import LIFECYCLE_PARAMETERS

    readme = (REPO / "README.md").read_text()
    for name, specs in (("inspector", INSPECTOR_PARAMETERS), ("lifecycle", LIFECYCLE_PARAMETERS),
                        ("trainer", TRAINER_PARAMETERS), ("evaluator", EVALUATOR_PARAMETERS)):
        assert markdown_table(specs) in readme, (
            f"README's {name} parameter table differs from the node's declarations; paste the output of "
            f"mentor3ad.ros.params.markdown_table for it")
