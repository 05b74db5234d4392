"""Node parameter tables agree with config/*.yaml, and every parameter is described."""

import pytest
from helpers import REPO_ROOT as REPO
import yaml

from mentor3ad.ros.nodes.evaluator import EVALUATOR_PARAMETERS
from mentor3ad.ros.nodes.inspector import INSPECTOR_PARAMETERS, resolve_device
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


def test_resolve_device():
    assert resolve_device("cpu") == "cpu" and resolve_device("cuda:1") == "cuda:1"
    assert resolve_device("auto") in ("cpu", "cuda")
    with pytest.raises(ValueError, match="auto, cpu, cuda or cuda:N"):
        resolve_device("gpu0")


def test_split_validation_holds_out_the_tail():
    assert split_validation(list(range(10)), 0.2) == (list(range(8)), [8, 9])
    assert split_validation([1, 2], 0.1) == ([1], [2])
    assert split_validation([1], 0.5) == ([1], [])
    with pytest.raises(ValueError, match="val_fraction"):
        split_validation([1, 2], 1.0)
