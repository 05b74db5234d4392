"""Launch files: every argument declared with a description and a default, the node actions they build
(executables, parameter files, typed overrides, remaps), the Fast DDS profile, and the evaluation's
shutdown after the report.

launch/launch_ros are not on PyPI: the launch files run here against recording stand-ins of the launch
classes (the launch descriptions are built and their OpaqueFunctions executed with the declared defaults);
where the real ``launch`` is importable the real descriptions are built too.
"""
import importlib.util
import sys
import types

import pytest
from helpers import REPO_ROOT as REPO
from helpers import setup_executables

LAUNCH_FILES = sorted((REPO / "launch").glob("*.launch.py"))
COMMON_ARGUMENTS = {"params_file", "namespace", "use_sim_time", "log_level", "device", "dds_profile"}
INSPECTOR_ARGUMENTS = COMMON_ARGUMENTS | {"model_path", "input_mode", "image_topic", "points_topic", "depth_topic",
                                          "camera_info_topic", "input_reliability", "threshold", "queue_policy",
                                          "pair_timeout", "publish_anomaly_map", "publish_overlay", "publish_markers",
                                          "lifecycle", "autostart", "record_path", "record_url", "dashboard",
                                          "trigger_mode", "threads", "nice"}
REQUIRED = {
    "inspect.launch.py": INSPECTOR_ARGUMENTS,
    "train.launch.py": COMMON_ARGUMENTS | {"input_mode", "image_topic", "points_topic", "depth_topic",
                                           "camera_info_topic", "bag_paths", "output_model_path", "reload_service",
                                           "cache_dir", "threads", "nice"},
    "evaluate.launch.py": INSPECTOR_ARGUMENTS | {"bag", "output_dir", "exit_when_done", "pace", "max_in_flight",
                                                 "ready_timeout"},
    "robot_cell_demo.launch.py": {"model_path", "bag", "rate", "parts", "part_prefix", "timeout_s", "place_s",
                                  "device", "log_level", "dds_profile"},
}


class Recorder:
    """Stand-in for a launch class: keeps its arguments."""

    def __init__(self, *args, **kwargs):
        self.args, self.kwargs = args, kwargs


class Configuration(Recorder):
    """LaunchConfiguration stand-in: perform(context) looks the name up and records it."""

    def perform(self, context):
        context.used.add(self.args[0])
        return context.values[self.args[0]]


class SetEnvironmentVariable:
    def __init__(self, name, value):
        self.name, self.value = name, value


def load(path, monkeypatch):
    """Import a launch file against the stand-ins; returns the module."""
    modules = {
        "launch": types.SimpleNamespace(LaunchDescription=Recorder),
        "launch.actions": types.SimpleNamespace(DeclareLaunchArgument=Recorder, OpaqueFunction=Recorder,
                                                SetEnvironmentVariable=SetEnvironmentVariable, EmitEvent=Recorder,
                                                RegisterEventHandler=Recorder, ExecuteProcess=Recorder),
        "launch.event_handlers": types.SimpleNamespace(OnProcessExit=Recorder),
        "launch.events": types.SimpleNamespace(Shutdown=Recorder),
        "launch.substitutions": types.SimpleNamespace(LaunchConfiguration=Configuration),
        "launch_ros": types.SimpleNamespace(),
        "launch_ros.actions": types.SimpleNamespace(Node=Recorder),
    }
    for name, module in modules.items():
        monkeypatch.setitem(sys.modules, name, module)
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_") + "_stubbed", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def declared(module):
    """{name: (default, description)} of the launch description's DeclareLaunchArgument actions."""
    actions = module.generate_launch_description().args[0]
    return {a.args[0]: (a.kwargs.get("default_value"), a.kwargs.get("description")) for a in actions
            if a.args and isinstance(a.args[0], str) and "default_value" in a.kwargs}


def run(module, **values):
    """Execute the launch description's OpaqueFunctions with the defaults (updated by ``values``)."""
    arguments = declared(module)
    context = types.SimpleNamespace(values={name: default for name, (default, _) in arguments.items()}, used=set())
    context.values.update(values)
    actions = []
    for action in module.generate_launch_description().args[0]:
        if "function" in getattr(action, "kwargs", {}):
            actions += action.kwargs["function"](context)
    return actions, context.used


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_arguments_have_descriptions_and_defaults(path, monkeypatch):
    arguments = declared(load(path, monkeypatch))
    for name, (default, description) in arguments.items():
        assert isinstance(default, str), f"{path.name}: {name} lacks a default"
        assert isinstance(description, str) and len(description.strip()) > 10, f"{path.name}: {name} lacks a description"
    missing = REQUIRED[path.name] - set(arguments)
    assert not missing, f"{path.name} does not declare {sorted(missing)}"
    _, used = run(load(path, monkeypatch))
    assert used <= set(arguments), f"{path.name} uses undeclared {sorted(used - set(arguments))}"


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_node_actions_reference_existing_executables_and_configs(path, monkeypatch):
    actions, _ = run(load(path, monkeypatch), bag="/bags/test")
    nodes = [a for a in actions if isinstance(a, Recorder) and "executable" in a.kwargs]
    assert nodes, f"{path.name} starts no node"
    assert {n.kwargs["package"] for n in nodes} == {"mentor3ad"}
    executables = {n.kwargs["executable"] for n in nodes}
    assert executables <= set(setup_executables()), f"{path.name}: unknown executables {executables}"
    for node in nodes:
        for parameters in node.kwargs.get("parameters", []):
            if isinstance(parameters, str):
                assert parameters.endswith(".yaml") and (REPO / "config" / parameters.split("/")[-1]).is_file()


def test_inspector_arguments_become_typed_overrides_and_remaps(monkeypatch):
    module = load(REPO / "launch" / "inspect.launch.py", monkeypatch)
    actions, _ = run(module, model_path="/m.safetensors", threshold="0.5", publish_overlay="false",
                     input_reliability="reliable", points_topic="/cam/points", namespace="cell1")
    node = [a for a in actions if isinstance(a, Recorder)][0]
    overrides = node.kwargs["parameters"][1]
    assert overrides["model_path"] == "/m.safetensors" and overrides["threshold"] == 0.5
    assert overrides["publish_overlay"] is False and overrides["input_reliability"] == "reliable"
    assert "queue_policy" not in overrides  # empty arguments keep the params file's values
    assert ("points", "/cam/points") in node.kwargs["remappings"] and node.kwargs["namespace"] == "cell1"
    assert node.kwargs["executable"] == "inspector_node"
    lifecycle, _ = run(module, lifecycle="true", autostart="false")
    managed = [a for a in lifecycle if isinstance(a, Recorder)][0]
    assert managed.kwargs["executable"] == "inspector_lifecycle_node"
    assert managed.kwargs["parameters"][1]["autostart"] is False


def test_evaluation_replays_the_input_modes_topics_and_ends_after_the_report(monkeypatch):
    module = load(REPO / "launch" / "evaluate.launch.py", monkeypatch)
    actions, _ = run(module, bag="/bags/test", input_mode="depth")
    replay = [a for a in actions if isinstance(a, Recorder) and a.kwargs.get("executable") == "replay_node"][0]
    topics = replay.kwargs["arguments"]
    assert {"/camera/image", "/camera/depth", "/camera/camera_info"} <= set(topics) and "/camera/points" not in topics
    # paced by default: the replay waits for the inspector's results on the image topic's parts
    assert topics[topics.index("--pace-on") + 1] == "/camera/image"
    assert topics[topics.index("--pace-results") + 1] == "inspector/result"
    assert topics[topics.index("--max-in-flight") + 1] == "2"
    # it plays once the inspector is ready (its ~/result advertised), waiting up to ready_timeout seconds
    assert topics[topics.index("--wait-for-publisher") + 1] == "inspector/result"
    # and once the evaluator reads the results (volatile: a late evaluator would miss the first parts)
    assert topics[topics.index("--wait-for-reader") + 1] == "inspector/result"
    assert float(topics[topics.index("--wait-timeout") + 1]) == 300.0
    assert declared(module)["input_reliability"][0] == "reliable"  # a recording: nothing may be lost
    unpaced, _ = run(module, bag="/bags/test", pace="false")
    replay = [a for a in unpaced if isinstance(a, Recorder) and a.kwargs.get("executable") == "replay_node"][0]
    assert "--pace-on" not in replay.kwargs["arguments"]
    evaluator_exit = exit_handlers(actions)["evaluator_node"]
    assert evaluator_exit.kwargs["target_action"].kwargs["parameters"][1]["exit_when_done"] is True
    shutdown = evaluator_exit.kwargs["on_exit"](types.SimpleNamespace(returncode=0), RUNNING)
    assert [a.kwargs["event"].kwargs["reason"] for a in shutdown] == ["evaluator_node wrote its report"]
    without, _ = run(module, bag="/bags/test", exit_when_done="false")
    assert exit_handlers(without)["evaluator_node"].kwargs["on_exit"](types.SimpleNamespace(returncode=0), RUNNING) == []


@pytest.mark.parametrize("name", ["inspect.launch.py", "evaluate.launch.py"])
def test_record_arguments_and_the_dashboard_on_the_same_record(name, monkeypatch, tmp_path):
    module = load(REPO / "launch" / name, monkeypatch)
    actions, _ = run(module, bag="/bags/test", record_path="/data/cell1.sqlite")
    node = [a for a in actions if isinstance(a, Recorder) and "executable" in a.kwargs][0]
    assert node.kwargs["parameters"][1]["record_path"] == "/data/cell1.sqlite"
    assert "record_url" not in node.kwargs["parameters"][1]  # empty: the params file's value
    assert not [a for a in actions if isinstance(a, Recorder) and "cmd" in a.kwargs]  # dashboard:=false
    actions, _ = run(module, bag="/bags/test", record_path="/data/cell1.sqlite", dashboard="true")
    dashboard = [a for a in actions if isinstance(a, Recorder) and "cmd" in a.kwargs]
    assert len(dashboard) == 1 and dashboard[0].kwargs["cmd"][1:4] == ["dashboard", "--record", "/data/cell1.sqlite"]
    assert "--host" not in dashboard[0].kwargs["cmd"]  # localhost only
    # the record named in the params file instead of the arguments
    params = tmp_path / "inspector.yaml"
    params.write_text("/**:\n  ros__parameters:\n    record_url: postgresql://m3ad@db/line\n"
                      "    record_evidence_dir: /srv/evidence\n")
    actions, _ = run(module, bag="/bags/test", params_file=str(params), dashboard="true")
    command = [a for a in actions if isinstance(a, Recorder) and "cmd" in a.kwargs][0].kwargs["cmd"]
    assert command[2:4] == ["--record", "postgresql://m3ad@db/line"] and command[-2:] == ["--evidence-dir", "/srv/evidence"]
    with pytest.raises(ValueError, match="dashboard:=true needs the inspector's record"):
        run(module, bag="/bags/test", dashboard="true")


RUNNING = types.SimpleNamespace(is_shutdown=False)


def exit_handlers(actions):
    """{executable: OnProcessExit stand-in} of the RegisterEventHandler actions."""
    handlers = [a.args[0] for a in actions if isinstance(a, Recorder) and a.args and isinstance(a.args[0], Recorder)
                and "target_action" in a.args[0].kwargs]
    return {h.kwargs["target_action"].kwargs["executable"]: h for h in handlers}


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_every_started_node_failing_fails_the_launch(path, monkeypatch):
    from mentor3ad.ros.launch_support import NodeFailed

    actions, _ = run(load(path, monkeypatch), bag="/bags/test")
    nodes = {a.kwargs["executable"] for a in actions if isinstance(a, Recorder) and "executable" in a.kwargs}
    handlers = exit_handlers(actions)
    assert set(handlers) == nodes
    for executable, handler in handlers.items():
        with pytest.raises(NodeFailed, match=f"^{executable} exited with code 2 \\(configuration error"):
            handler.kwargs["on_exit"](types.SimpleNamespace(returncode=2), RUNNING)
        with pytest.raises(NodeFailed, match=f"^{executable} was killed by SIGKILL"):
            handler.kwargs["on_exit"](types.SimpleNamespace(returncode=-9), RUNNING)
        stopping = types.SimpleNamespace(is_shutdown=True)  # Ctrl-C: a node stopped by the signal is no failure
        assert handler.kwargs["on_exit"](types.SimpleNamespace(returncode=-15), stopping) == []
        assert handler.kwargs["on_exit"](types.SimpleNamespace(returncode=130), stopping) == []


def test_exit_failure_names_the_node_and_the_cause():
    from mentor3ad.ros.launch_support import exit_failure

    assert exit_failure("trainer_node", 0, False) is None
    assert exit_failure("trainer_node", 1, False) == "trainer_node exited with code 1 (failed; its log is above)"
    assert exit_failure("inspector_node", 2, True).startswith("inspector_node exited with code 2 (configuration error")
    assert exit_failure("inspector_node", -15, False) == "inspector_node was killed by SIGTERM"
    assert exit_failure("inspector_node", -15, True) is None and exit_failure("replay_node", 130, True) is None
    assert exit_failure("replay_node", 130, False) == "replay_node exited with code 130 (failed; its log is above)"


@pytest.mark.parametrize("path, values, name", [
    ("inspect.launch.py", {"threshold": "abc"}, "threshold"),
    ("evaluate.launch.py", {"pair_timeout": "2s"}, "pair_timeout"),
    ("evaluate.launch.py", {"expected_pairs": "ten"}, "expected_pairs"),
])
def test_a_bad_number_names_the_launch_argument(path, values, name, monkeypatch):
    with pytest.raises(ValueError, match=f"^launch argument {name} must be (a number|an integer), got "):
        run(load(REPO / "launch" / path, monkeypatch), **values)


def test_train_passes_cache_dir(monkeypatch):
    actions, _ = run(load(REPO / "launch" / "train.launch.py", monkeypatch), cache_dir="/var/cache/m3ad")
    trainer = [a for a in actions if isinstance(a, Recorder) and a.kwargs.get("executable") == "trainer_node"][0]
    assert trainer.kwargs["parameters"][1]["cache_dir"] == "/var/cache/m3ad"


@pytest.mark.parametrize("path, executable", [("train.launch.py", "trainer_node"),
                                              ("inspect.launch.py", "inspector_node")])
def test_cpu_budget_arguments_become_integer_overrides(path, executable, monkeypatch):
    module = load(REPO / "launch" / path, monkeypatch)
    actions, _ = run(module, threads="2", nice="5")
    node = [a for a in actions if isinstance(a, Recorder) and a.kwargs.get("executable") == executable][0]
    assert node.kwargs["parameters"][1]["threads"] == 2 and node.kwargs["parameters"][1]["nice"] == 5
    plain, _ = run(module)
    assert "threads" not in [a for a in plain if isinstance(a, Recorder)][0].kwargs["parameters"][1]
    with pytest.raises(ValueError, match="^launch argument nice must be an integer, got '1.5'"):
        run(module, nice="1.5")


@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_dds_profile_argument_sets_fastdds_profile_unless_user_set_one(path, monkeypatch, tmp_path):
    module = load(path, monkeypatch)
    assert module.DDS_PROFILE == str(REPO / "config" / "fastdds_inspector.xml")  # source-checkout layout
    assert declared(module)["dds_profile"][0] == module.DDS_PROFILE
    monkeypatch.delenv("FASTDDS_DEFAULT_PROFILES_FILE", raising=False)
    actions = module._dds_profile(module.DDS_PROFILE)
    assert len(actions) == 1 and isinstance(actions[0], SetEnvironmentVariable)
    assert (actions[0].name, actions[0].value) == ("FASTDDS_DEFAULT_PROFILES_FILE", module.DDS_PROFILE)
    assert module._dds_profile("") == []  # empty: environment left alone
    with pytest.raises(RuntimeError, match="does not exist"):
        module._dds_profile(str(tmp_path / "missing.xml"))
    monkeypatch.setenv("FASTDDS_DEFAULT_PROFILES_FILE", "/etc/user_profile.xml")
    assert module._dds_profile(module.DDS_PROFILE) == []  # the user's profile wins


@pytest.mark.skipif(importlib.util.find_spec("launch") is None or importlib.util.find_spec("launch_ros") is None,
                    reason="launch/launch_ros not installed (no ROS install)")
@pytest.mark.parametrize("path", LAUNCH_FILES, ids=lambda p: p.name)
def test_launch_description_builds(path):
    spec = importlib.util.spec_from_file_location(path.stem.replace(".", "_"), path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    description = module.generate_launch_description()
    names = {a.name for a in description.get_launch_arguments()}
    assert REQUIRED[path.name] <= names
