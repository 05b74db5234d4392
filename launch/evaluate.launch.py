"""Evaluate a model on a recorded test bag: inspector + evaluator (+ replay of the bag); ends with the report.

    ros2 launch mentor3ad evaluate.launch.py model_path:=/models/gland.safetensors bag:=/bags/test output_dir:=/tmp/eval

With ``bag`` empty, play the recording yourself (``ros2 bag play --clock /bags/test``) and pass it as
``ground_truth_bag``. The evaluator reads the ground truth from that recording, pairs it with the
inspector's results by stamp and writes the same report as ``mentor3ad evaluate`` into ``output_dir``;
with ``exit_when_done:=true`` (default) the whole launch ends once the report is written (exit code 1 when
the evaluator, the inspector or the replay failed). The replay plays once the inspector is ready (its
``~/result`` advertised) and the evaluator reads it (results are volatile: a late evaluator would miss the first
parts); at most ``ready_timeout`` seconds, then the launch fails. With
``pace:=true`` (default) the replay waits for the inspector's results (at most ``max_in_flight`` parts
unanswered), so a CPU slower than the recording still evaluates every part; the inspector's inputs are
reliable here (``input_reliability`` defaults to ``reliable``), so no recorded part is lost on the way. The topic
arguments default to the names ``mentor3ad to-bag`` records; the inspector arguments are those of
inspect.launch.py (``record_path`` keeps every evaluated part in a record, ``dashboard:=true`` shows it).

``dds_profile`` (default: the package's config/fastdds_inspector.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the nodes unless that variable is already set; ``dds_profile:=''`` leaves the environment alone
(inspector_node then loads that profile itself; set FASTDDS_DEFAULT_PROFILES_FILE to use your own).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

from mentor3ad.io.inputs import TOPICS
from mentor3ad.ros.launch_support import (INSPECTOR_ARGUMENTS, argument, dashboard_actions, declare, end_with, flag,
                                          inspector_executable, inspector_node, number, package_file, played_topics)
from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile

INSPECTOR_CONFIG = package_file("config", "inspector.yaml")
EVALUATOR_CONFIG = package_file("config", "evaluator.yaml")
DDS_PROFILE = package_file("config", "fastdds_inspector.xml")
RECORDED = {f"{key}_topic": TOPICS[key].recorded for key in ("image", "points", "depth", "camera_info")}
EVALUATION_ARGUMENTS = {
    "evaluator_params_file": (EVALUATOR_CONFIG, "Evaluator parameter file (YAML)."),
    "bag": ("", "Test recording to replay with replay_node and to take the ground truth from."),
    "ground_truth_bag": ("", "Test recording with ground truth when `bag` is empty (you play it)."),
    "rate": ("1.0", "Replay rate factor (replay_node --rate)."),
    "pace": ("true", "Hold the replay while `max_in_flight` parts have no result yet: every recorded part is "
                     "evaluated however slow the CPU (false: recorded timing; parts beyond the inspector's queue "
                     "are answered SKIPPED and not evaluated)."),
    "max_in_flight": ("2", "Parts published without a result, at most, when `pace` is true."),
    "ready_timeout": ("300", "Seconds the replay waits for the inspector to be ready (its ~/result advertised: model "
                             "loaded, self-tested, warmed up) and the evaluator to read it before it plays; the "
                             "launch fails (exit 1) after that."),
    "output_dir": ("", "Report directory; empty keeps the evaluator params file's value."),
    "expected_pairs": ("", "Write the report after this many pairs; empty keeps the params file's value."),
    "exit_when_done": ("true", "End the launch (all nodes) once the evaluator has written its report."),
}


def _nodes(context):
    namespace, log = argument(context, "namespace"), ["--ros-args", "--log-level", argument(context, "log_level")]
    evaluator_overrides = {"use_sim_time": flag(context, "use_sim_time"), "exit_when_done": flag(context, "exit_when_done")}
    ground_truth = argument(context, "bag") or argument(context, "ground_truth_bag")
    if ground_truth:
        evaluator_overrides["ground_truth_bag"] = ground_truth
    if argument(context, "output_dir"):
        evaluator_overrides["output_dir"] = argument(context, "output_dir")
    if argument(context, "expected_pairs"):
        evaluator_overrides["expected_pairs"] = number(context, "expected_pairs", int)
    if argument(context, "input_mode"):
        evaluator_overrides["gt_input_mode"] = argument(context, "input_mode")
    evaluator = Node(package="mentor3ad", executable="evaluator_node", name="evaluator", namespace=namespace,
                     parameters=[argument(context, "evaluator_params_file"), evaluator_overrides],
                     remappings=[("result", "inspector/result"), ("anomaly_map", "inspector/anomaly_map")],
                     arguments=log, output="screen")
    inspector = inspector_node(context)
    # a failing node fails the launch (exit 1); with exit_when_done the evaluator's success ends it
    done = "evaluator_node wrote its report" if flag(context, "exit_when_done") else None
    actions = _dds_profile(argument(context, "dds_profile")) + [
        inspector, evaluator, end_with(inspector, inspector_executable(context), None),
        end_with(evaluator, "evaluator_node", done)]
    if argument(context, "bag"):
        topics = played_topics(context)
        pacing = (["--pace-on", topics[0], "--pace-results", "inspector/result",
                   "--max-in-flight", argument(context, "max_in_flight")] if flag(context, "pace") else [])
        replay = Node(package="mentor3ad", executable="replay_node", name="replay", namespace=namespace,
                      arguments=[argument(context, "bag"), "--rate", argument(context, "rate"), "--clock",
                                 "--wait-for-subscribers", "--wait-for-publisher", "inspector/result",
                                 "--wait-for-reader", "inspector/result",
                                 "--wait-timeout", str(number(context, "ready_timeout")), "--topics", *topics, *pacing,
                                 *log], output="screen")
        actions += [replay, end_with(replay, "replay_node", None)]
    return actions + dashboard_actions(context)


def generate_launch_description():
    # a recording is replayed reliably (nothing of it may be lost); live cameras keep best_effort
    defaults = {"params_file": INSPECTOR_CONFIG, "dds_profile": DDS_PROFILE, "use_sim_time": "true",
                "input_reliability": "reliable", **RECORDED,
                **{name: value for name, (value, _) in EVALUATION_ARGUMENTS.items()}}
    descriptions = {name: text for name, (_, text) in EVALUATION_ARGUMENTS.items()}
    return LaunchDescription(declare(list(INSPECTOR_ARGUMENTS) + list(EVALUATION_ARGUMENTS), defaults, descriptions)
                             + [OpaqueFunction(function=_nodes)])
