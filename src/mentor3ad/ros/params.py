"""Declaring node parameters from one table (name, default, description, read-only) with descriptors.

The same tables generate ``--help`` text and are compared with ``config/*.yaml`` by the tests, so
defaults in code, the config files and the README cannot drift apart.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, List, Mapping, Sequence


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: ``default`` fixes its type (bool, int, float, str or list of str)."""

    name: str
    default: Any
    description: str
    read_only: bool = False

    @property
    def type_name(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "double"
        if isinstance(self.default, (list, tuple)):
            return "string[]"
        return "string"


def topic_parameters(keys: Sequence[str], prefix: str = "", what: str = "in the recordings") -> List[ParamSpec]:
    """``<prefix><key>_topic`` parameters (read-only) with the recorded default names of
    :data:`mentor3ad.io.inputs.TOPICS`."""
    from ..io.inputs import TOPICS

    return [ParamSpec(f"{prefix}{key}_topic", TOPICS[key].recorded, f"{TOPICS[key].description[:1].upper()}"
                      f"{TOPICS[key].description[1:]}: topic {what}.", read_only=True) for key in keys]


def topics_from_parameters(values: Mapping[str, Any], prefix: str = "") -> Dict[str, str]:
    """{key: topic} from the values of :func:`topic_parameters` (defaults for keys not declared)."""
    from ..io.inputs import TOPICS, recorded_topics

    return recorded_topics({key: values.get(f"{prefix}{key}_topic", "") for key in TOPICS})


def declare_parameters(node: Any, specs: Sequence[ParamSpec]) -> Dict[str, Any]:
    """Declare every spec on ``node`` with a ParameterDescriptor; returns name -> current value."""
    from rcl_interfaces.msg import ParameterDescriptor, ParameterType

    types = {
        "bool": ParameterType.PARAMETER_BOOL,
        "int": ParameterType.PARAMETER_INTEGER,
        "double": ParameterType.PARAMETER_DOUBLE,
        "string": ParameterType.PARAMETER_STRING,
        "string[]": ParameterType.PARAMETER_STRING_ARRAY,
    }
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(
            name=spec.name, type=types[spec.type_name], description=spec.description, read_only=spec.read_only
        )
        default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
        param = node.declare_parameter(spec.name, default, descriptor)
        values[spec.name] = param.value
    return values


def help_text(specs: Sequence[ParamSpec]) -> str:
    """Parameter list for ``--help`` (name, type, default, description)."""
    lines = ["parameters (set with --ros-args -p name:=value or --params-file FILE):"]
    for spec in specs:
        ro = ", read-only" if spec.read_only else ""
        lines.append(f"  {spec.name} ({spec.type_name}{ro}, default {spec.default!r}): {spec.description}")
    return "\n".join(lines)


def markdown_table(specs: Sequence[ParamSpec]) -> str:
    """README table of the parameters (depth_image_proc style)."""
    rows = ["| name | type | default | description |", "|---|---|---|---|"]
    for spec in specs:
        ro = " (read-only)" if spec.read_only else ""
        rows.append(f"| `{spec.name}` | {spec.type_name} | `{spec.default!r}` | {spec.description}{ro} |")
    return "\n".join(rows)


def parse_node_help(argv: Sequence[str], prog: str, description: str, specs: Sequence[ParamSpec]) -> None:
    """``<node> --help`` listing the parameters; every other argument belongs to ROS (after --ros-args)."""
    import argparse

    from rclpy.utilities import remove_ros_args

    argparse.ArgumentParser(prog=prog, description=description, epilog=help_text(specs),
                            formatter_class=argparse.RawDescriptionHelpFormatter).parse_args(remove_ros_args(list(argv))[1:])
