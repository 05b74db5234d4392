"""Node parameters from one table (name, default, description, read-only, allowed values) with descriptors.

The same tables generate ``--help`` text and are compared with ``config/*.yaml`` by the tests, so
defaults in code, the config files and the README cannot drift apart. Every value is validated at
start-up (:func:`declare_parameters` raises ConfigError naming the parameter) and on ``ros2 param set``
(:func:`install_validation`: the set is refused with the reason).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ..errors import ConfigError


@dataclass(frozen=True)
class ParamSpec:
    """One ROS parameter: ``default`` fixes its type (bool, int, float, str, list of str or of float).

    choices: allowed values (strings); minimum: smallest allowed number (``exclusive``: strictly greater);
    check: ``check(value) -> error text or None`` for anything else.
    """

    name: str
    default: Any
    description: str
    read_only: bool = False
    choices: Optional[Sequence[str]] = None
    minimum: Optional[float] = None
    exclusive: bool = False
    check: Optional[Callable[[Any], Optional[str]]] = None

    @property
    def type_name(self) -> str:
        if isinstance(self.default, bool):
            return "bool"
        if isinstance(self.default, int):
            return "int"
        if isinstance(self.default, float):
            return "double"
        if isinstance(self.default, (list, tuple)):
            return "double[]" if self.default and isinstance(self.default[0], float) else "string[]"
        return "string"

    def problem(self, value: Any) -> Optional[str]:
        """Why ``value`` is not allowed for this parameter (None when it is)."""
        if self.choices is not None and value not in self.choices:
            return f"parameter {self.name} must be one of {', '.join(self.choices)}, got {value!r}"
        if self.minimum is not None and isinstance(value, (int, float)) and not isinstance(value, bool):
            too_small = value <= self.minimum if self.exclusive else value < self.minimum
            if too_small or value != value:  # NaN
                return f"parameter {self.name} must be {'>' if self.exclusive else '>='} {self.minimum:g}, got {value}"
        if self.check is not None:
            message = self.check(value)
            if message:
                return f"parameter {self.name}: {message}"
        return None


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


def cpu_budget_parameters(threads: int, nice: int, who: str) -> List[ParamSpec]:
    """``threads``, ``interop_threads``, ``nice``: the node's :class:`~mentor3ad.cpu_budget.CpuBudget`,
    applied at start-up before torch does any work (read-only; README "Speed and memory": thread budgets)."""
    return [
        ParamSpec("threads", threads, f"torch intra-op threads of {who} (OpenMP, MKL, oneDNN) and open3d's (TBB); 0: one per core. "
                  "Applied at start-up.", read_only=True, minimum=0),
        ParamSpec("interop_threads", 0, "torch inter-op threads; 0: torch's default.", read_only=True, minimum=0),
        ParamSpec("nice", nice, "Added to the process's niceness at start-up, as nice -n (higher: lower CPU "
                  "priority; a negative value needs CAP_SYS_NICE, else a warning and unchanged).", read_only=True,
                  check=lambda v: None if -20 <= v <= 19 else "must be in [-20, 19]"),
    ]


EXPECTED = {"bool": "true or false", "int": "an integer", "double": "a number (double)", "string": "a string",
            "string[]": "a list of strings", "double[]": "a list of numbers (double[])"}
GIVEN = {"BOOL": "true/false", "INTEGER": "an integer", "DOUBLE": "a number", "STRING": "a string",
         "BYTE_ARRAY": "bytes", "BOOL_ARRAY": "a list of true/false", "INTEGER_ARRAY": "a list of integers",
         "DOUBLE_ARRAY": "a list of numbers", "STRING_ARRAY": "a list of strings"}


def _type_problem(spec: ParamSpec, override: Any, exc: Exception) -> str:
    """'parameter NAME must be <type>, got <value> (<its type>)' for a start-up value rclpy refused."""
    if override is None:
        return f"parameter {spec.name}: {exc}"
    value = override.value
    shown = repr(value) if isinstance(value, str) else str(list(value) if not isinstance(value, (bool, int, float))
                                                          else value).replace("True", "true").replace("False", "false")
    hint = f"; write {value}.0" if spec.type_name == "double" and override.type_.name == "INTEGER" else ""
    return (f"parameter {spec.name} must be {EXPECTED[spec.type_name]}, got {shown} "
            f"({GIVEN.get(override.type_.name, override.type_.name.lower())}){hint}")


def declare_parameters(node: Any, specs: Sequence[ParamSpec]) -> Dict[str, Any]:
    """Declare every spec on ``node`` with a ParameterDescriptor; returns name -> current value. A start-up
    value of the wrong type (``-p queue_size:=notanint``) is a ConfigError naming the parameter."""
    from rcl_interfaces.msg import ParameterDescriptor, ParameterType
    from rclpy.exceptions import ParameterException

    types = {
        "bool": ParameterType.PARAMETER_BOOL,
        "int": ParameterType.PARAMETER_INTEGER,
        "double": ParameterType.PARAMETER_DOUBLE,
        "string": ParameterType.PARAMETER_STRING,
        "string[]": ParameterType.PARAMETER_STRING_ARRAY,
        "double[]": ParameterType.PARAMETER_DOUBLE_ARRAY,
    }
    values = {}
    for spec in specs:
        descriptor = ParameterDescriptor(
            name=spec.name, type=types[spec.type_name], description=spec.description, read_only=spec.read_only
        )
        default = list(spec.default) if isinstance(spec.default, (list, tuple)) else spec.default
        try:
            param = node.declare_parameter(spec.name, default, descriptor)
        except ParameterException as exc:  # e.g. -p queue_size:=notanint: one line naming the parameter
            raise ConfigError(_type_problem(spec, getattr(node, "_parameter_overrides", {}).get(spec.name), exc)) \
                from None
        values[spec.name] = list(param.value) if isinstance(param.value, (list, tuple)) else param.value
        problem = spec.problem(values[spec.name])
        if problem:
            raise ConfigError(problem)
    return values


def install_validation(node: Any, specs: Sequence[ParamSpec]) -> None:
    """Refuse ``ros2 param set`` values that :meth:`ParamSpec.problem` rejects (the reason is returned)."""
    from rcl_interfaces.msg import SetParametersResult

    by_name = {spec.name: spec for spec in specs}

    def validate(parameters) -> SetParametersResult:
        for parameter in parameters:
            spec = by_name.get(parameter.name)
            problem = spec.problem(parameter.value) if spec is not None else None
            if problem:
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    node.add_on_set_parameters_callback(validate)


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
