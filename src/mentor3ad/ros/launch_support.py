"""What the package's launch files share: one table of launch arguments and the builders of the nodes.

Imported only where launch / launch_ros are installed; their imports happen inside the functions.

* :data:`ARGUMENTS`: every launch argument once (default, description). A launch file lists the names it
  offers (:func:`declare`, with per-file default overrides, e.g. recorded topic names for evaluation).
* :func:`inspector_node`: the inspector (plain or lifecycle) with the parameter file, the non-empty
  arguments as parameter overrides (typed) and the topic remaps of every input mode.
* :func:`dds_profile_actions`: the Fast DDS profile of the started nodes.
* :func:`dashboard_actions`: ``dashboard:=true``: ``mentor3ad dashboard`` on the inspector's record.
* :func:`end_with`: the launch ends when a node it exists for exits, and **fails** (``ros2 launch`` exits 1)
  when that node failed (:func:`exit_failure` decides, :class:`NodeFailed` carries the reason).
* :func:`number`: a numeric launch argument, or an error naming the argument.
"""
import os
import signal
from typing import Any, Callable, Dict, List, Optional

from ..io.inputs import INPUT_MODES, TOPICS, input_mode
from ..package_files import packaged_file
from .dds import FASTDDS_PROFILE_ENV, INSPECTOR_PROFILE_FILE

TRUE = ("true", "1", "yes", "on")


def package_file(*parts: str) -> str:
    """Path of a file of the installed package, e.g. ``package_file("config", "x.yaml")``."""
    return str(packaged_file(*parts))


def _profile_description() -> str:
    return ("Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) for the started nodes: the package's inspector "
            "profile (inputs over UDP: large clouds from a driver on Fast DDS defaults arrive; "
            "config/fastdds_large_shm.xml is the drivers' profile); empty, or FASTDDS_DEFAULT_PROFILES_FILE "
            "already set, leaves the environment alone. Ignored by other RMWs.")


# name: (default, description); defaults that are package files are resolved when declared
ARGUMENTS: Dict[str, tuple] = {
    "params_file": (("config", "inspector.yaml"), "Node parameter file (YAML)."),
    "namespace": ("", "Namespace of the started nodes."),
    "use_sim_time": ("false", "Use /clock (true when replaying recordings)."),
    "log_level": ("info", "Logging level: debug, info, warn, error."),
    "dds_profile": (("config", INSPECTOR_PROFILE_FILE), _profile_description()),
    "model_path": ("", "Model file to load; empty keeps the params file's value."),
    "device": ("", "auto, cpu, cuda or cuda:N; empty keeps the params file's value."),
    "input_mode": ("", f"{' or '.join(INPUT_MODES)}; empty keeps the params file's value."),
    "input_reliability": ("", "Inspector input QoS reliability: best_effort, reliable or best_available; empty keeps "
                              "the params file's value (see README: large clouds)."),
    "threshold": ("", "Decision threshold override (negative: the model's); empty keeps the params file's value."),
    "threads": ("", "Torch threads of the node (0: one per core); empty keeps the params file's value (README: "
                    "thread budgets)."),
    "nice": ("", "Niceness increment of the node at start-up (higher: lower CPU priority); empty keeps the params "
                 "file's value."),
    "queue_policy": ("", "Inspector queue policy: all or latest; empty keeps the params file's value."),
    "trigger_mode": ("", "stream (every pair judged) or request (only pairs an ~/inspect goal claims); empty keeps "
                         "the params file's value."),
    "pair_timeout": ("", "Seconds an image waits for its 3D data before it gets an ERROR result; empty keeps the "
                         "params file's value."),
    "publish_anomaly_map": ("", "true/false: publish ~/anomaly_map; empty keeps the params file's value."),
    "publish_overlay": ("", "true/false: publish ~/overlay; empty keeps the params file's value."),
    "publish_markers": ("", "true/false: publish ~/markers (RViz MarkerArray); empty keeps the params file's value."),
    "record_path": ("", "SQLite inspection record of the inspector (every part, evidence pictures beside it); empty "
                        "keeps the params file's value."),
    "record_url": ("", "Inspection record on a server instead (postgresql://USER@HOST/DB); empty keeps the params "
                       "file's value."),
    "dashboard": ("false", "Also start `mentor3ad dashboard` on the inspector's record (record_path or record_url) "
                           "at http://127.0.0.1:8050/ (this machine only; read-only)."),
    "lifecycle": ("false", "Run the inspector as a managed lifecycle node (inspector_lifecycle_node)."),
    "autostart": ("true", "With lifecycle:=true, configure and activate at start-up (false: wait for a "
                          "lifecycle manager)."),
    **{f"{key}_topic": (TOPICS[key].relative, f"Topic of the {TOPICS[key].description}, remapped to the inspector's "
                        f"`{TOPICS[key].relative}`.") for key in ("image", "points", "depth", "camera_info")},
}
INSPECTOR_STRINGS = ("model_path", "device", "input_mode", "input_reliability", "queue_policy", "trigger_mode",
                     "record_path", "record_url")
INSPECTOR_NUMBERS = ("threshold", "pair_timeout")
INSPECTOR_FLAGS = ("publish_anomaly_map", "publish_overlay", "publish_markers")
BUDGET_INTEGERS = ("threads", "nice")  # the node's CPU budget (mentor3ad.cpu_budget), inspector and trainer
INSPECTOR_ARGUMENTS = ("params_file", "namespace", "use_sim_time", "log_level", "dds_profile", *INSPECTOR_STRINGS,
                       *INSPECTOR_NUMBERS, *BUDGET_INTEGERS, *INSPECTOR_FLAGS, "lifecycle", "autostart", "image_topic", "points_topic",
                       "depth_topic", "camera_info_topic", "dashboard")


def declare(names, defaults=None, descriptions=None) -> List[Any]:
    """DeclareLaunchArgument for each name (defaults / descriptions from :data:`ARGUMENTS` unless overridden)."""
    from launch.actions import DeclareLaunchArgument

    out = []
    for name in names:
        default, description = ARGUMENTS.get(name, ("", ""))
        default = (defaults or {}).get(name, default)
        if isinstance(default, tuple):
            default = package_file(*default)
        out.append(DeclareLaunchArgument(name, default_value=default,
                                         description=(descriptions or {}).get(name, description)))
    return out


def argument(context: Any, name: str) -> str:
    from launch.substitutions import LaunchConfiguration

    return LaunchConfiguration(name).perform(context)


def flag(context: Any, name: str) -> bool:
    return argument(context, name).strip().lower() in TRUE


def number(context: Any, name: str, kind: Callable = float):
    """The launch argument as ``kind`` (float or int); ValueError naming the argument otherwise (launch
    prints it as its one error line and exits 1)."""
    text = argument(context, name)
    try:
        return kind(text)
    except ValueError:
        what = "an integer" if kind is int else "a number"
        raise ValueError(f"launch argument {name} must be {what}, got {text!r}") from None


STOPPED_BY_SIGNAL = (128 + signal.SIGINT, 128 + signal.SIGTERM)  # the shell convention (replay_node: 130)


class NodeFailed(RuntimeError):
    """A node the launch exists for failed: raised from its exit handler, so that launch logs the reason,
    shuts everything down and ``ros2 launch`` exits 1 (launch's only way to a non-zero exit code)."""


def exit_failure(name: str, returncode: int, shutting_down: bool) -> Optional[str]:
    """Why the exit of node ``name`` with ``returncode`` fails the launch, or None when it does not: 0 is
    success; while the launch is already shutting down (Ctrl-C, another node's end) a node killed by a
    signal did what it was asked."""
    if returncode == 0 or (shutting_down and (returncode < 0 or returncode in STOPPED_BY_SIGNAL)):
        return None
    if returncode < 0:
        try:
            cause = f"killed by {signal.Signals(-returncode).name}"
        except ValueError:
            cause = f"killed by signal {-returncode}"
        return f"{name} was {cause}"
    meaning = {1: "failed", 2: "configuration error"}.get(returncode, "failed")
    return f"{name} exited with code {returncode} ({meaning}; its log is above)"


def end_with(node: Any, name: str, success_reason: Optional[str] = "") -> Any:
    """RegisterEventHandler for ``node`` (a launch_ros Node action): when its process exits, a failure
    (:func:`exit_failure`) raises :class:`NodeFailed`; a success shuts the launch down with
    ``success_reason`` (default "<name> finished"), or leaves it running when ``success_reason`` is None."""
    from launch.actions import EmitEvent, RegisterEventHandler
    from launch.event_handlers import OnProcessExit
    from launch.events import Shutdown

    def on_exit(event: Any, context: Any) -> list:
        shutting_down = bool(getattr(context, "is_shutdown", False))
        failure = exit_failure(name, int(event.returncode), shutting_down)
        if failure:
            raise NodeFailed(failure)
        if success_reason is None or shutting_down:
            return []
        return [EmitEvent(event=Shutdown(reason=success_reason or f"{name} finished"))]

    return RegisterEventHandler(OnProcessExit(target_action=node, on_exit=on_exit))


def inspector_executable(context: Any) -> str:
    return "inspector_lifecycle_node" if flag(context, "lifecycle") else "inspector_node"


def inspector_node(context: Any, params_file_argument: str = "params_file"):
    """The inspector Node action from the launch arguments (see the module docstring)."""
    from launch_ros.actions import Node

    overrides: Dict[str, Any] = {"use_sim_time": flag(context, "use_sim_time")}
    for key in INSPECTOR_STRINGS:
        if argument(context, key):
            overrides[key] = argument(context, key)
    for key in INSPECTOR_NUMBERS:
        if argument(context, key):
            overrides[key] = number(context, key)
    for key in BUDGET_INTEGERS:
        if argument(context, key):
            overrides[key] = number(context, key, int)
    for key in INSPECTOR_FLAGS:
        if argument(context, key):
            overrides[key] = flag(context, key)
    if flag(context, "lifecycle"):
        overrides["autostart"] = flag(context, "autostart")
    remappings = [(TOPICS[key].relative, argument(context, f"{key}_topic"))
                  for key in ("image", "points", "depth", "camera_info")]
    return Node(package="mentor3ad", executable=inspector_executable(context),
                name="inspector", namespace=argument(context, "namespace"),
                parameters=[argument(context, params_file_argument), overrides], remappings=remappings,
                arguments=["--ros-args", "--log-level", argument(context, "log_level")], output="screen")


def dashboard_actions(context: Any, params_file_argument: str = "params_file") -> list:
    """``dashboard:=true``: [ExecuteProcess of ``mentor3ad dashboard``] on the inspector's record (the
    record_path / record_url argument, else the params file's), bound to 127.0.0.1; it waits for the
    inspector to create the record. Not a node the launch ends with: its exit is only logged. [] otherwise."""
    if not flag(context, "dashboard"):
        return []
    from launch.actions import ExecuteProcess

    from ..package_files import package_executable

    params = _file_parameters(argument(context, params_file_argument))
    record = (argument(context, "record_path") or argument(context, "record_url")
              or params.get("record_path") or params.get("record_url"))
    if not record:
        raise ValueError("dashboard:=true needs the inspector's record: set record_path (or record_url)")
    command = [package_executable("mentor3ad") or "mentor3ad", "dashboard", "--record", str(record), "--wait-s", "600"]
    if params.get("record_evidence_dir"):
        command += ["--evidence-dir", str(params["record_evidence_dir"])]
    return [ExecuteProcess(cmd=command, name="dashboard", output="screen")]


def _file_parameters(path: str) -> Dict[str, Any]:
    """The inspector's parameters in a ROS params file ("/**" or "inspector" section; {} when unreadable)."""
    import yaml

    try:
        with open(path) as stream:
            data = yaml.safe_load(stream) or {}
    except (OSError, yaml.YAMLError):
        return {}
    for key in ("/**", "inspector", "/inspector"):
        section = data.get(key) if isinstance(data, dict) else None
        if isinstance(section, dict) and isinstance(section.get("ros__parameters"), dict):
            return section["ros__parameters"]
    return {}


def played_topics(context: Any) -> List[str]:
    """The recorded topics an evaluation replays: the image and the 3D topics of the input mode."""
    mode = input_mode(argument(context, "input_mode") or "points")
    return [argument(context, f"{key}_topic") for key in mode.keys]


def dds_profile_actions(profile: str) -> list:
    """[SetEnvironmentVariable] for Fast DDS' XML profile, or [] when ``profile`` is empty or the user
    already set FASTDDS_DEFAULT_PROFILES_FILE (their profile wins). A missing file is an error."""
    from launch.actions import SetEnvironmentVariable

    if not profile or os.environ.get(FASTDDS_PROFILE_ENV):
        return []
    if not os.path.isfile(profile):
        raise RuntimeError(f"dds_profile {profile!r} does not exist (dds_profile:='' leaves Fast DDS as configured)")
    return [SetEnvironmentVariable(FASTDDS_PROFILE_ENV, profile)]
