"""Robot-cell demo: a robot program has each part it places inspected on request and sorts it by the verdict,
while a recording of the synthetic cell plays the camera.

    ros2 launch mentor3ad robot_cell_demo.launch.py model_path:=runs/demo/model.safetensors bag:=runs/demo/test_bag

Starts ``inspector_node`` with ``trigger_mode: request`` (only the pairs a goal claims are judged; the others
are dropped and counted), ``replay_node`` (the bag at ``rate`` with ``/clock``: the inspector runs on the bag's
time, so "the first pair stamped after the goal" is the next recorded part; it plays once the inspector's
``~/inspection`` is advertised, i.e. the model is loaded) and ``robot_cell_example`` (``parts`` goals, one after
the other; verdicts on ``/robot_cell/reject``, ``/robot_cell/pass_bin``, ``/robot_cell/reject_bin``). The launch
ends with the robot program; a failing node fails it (exit 1). Recorded parts are replayed reliably.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

from mentor3ad.io.inputs import TOPICS
from mentor3ad.ros.launch_support import argument, declare, end_with, number, package_file
from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile

DDS_PROFILE = package_file("config", "fastdds_inspector.xml")
DEMO_ARGUMENTS = {
    "model_path": ("", "Model file (mentor3ad train / ./run.sh demo writes runs/demo/model.safetensors)."),
    "bag": ("", "Recording of parts that plays the camera (mentor3ad to-bag), e.g. the demo's test bag."),
    "rate": ("0.5", "Replay rate factor: 0.5 shows each recorded part twice as long as recorded."),
    "parts": ("5", "Parts the robot program inspects and sorts."),
    "part_prefix": ("part-", "part_id prefix of the robot's parts (part-001, part-002, ...)."),
    "timeout_s": ("10.0", "Seconds each goal waits for camera data and its verdict before an ERROR result."),
    "place_s": ("0.0", "Seconds the robot takes to place each part before it asks for the inspection."),
    "device": ("auto", "Inference device of the inspector: auto, cpu, cuda or cuda:N."),
    "log_level": ("info", "Log level of every node."),
    "dds_profile": (DDS_PROFILE, "Fast DDS XML profile of the nodes ('' leaves the environment alone)."),
}


def _nodes(context):
    log = ["--ros-args", "--log-level", argument(context, "log_level")]
    recorded = {key: TOPICS[key].recorded for key in ("image", "points")}
    reliable = [f"qos_overrides.{topic}.subscription.reliability:=reliable" for topic in recorded.values()]
    inspector = Node(package="mentor3ad", executable="inspector_node", name="inspector",
                     parameters=[package_file("config", "inspector.yaml"),
                                 {"model_path": argument(context, "model_path"), "device": argument(context, "device"),
                                  "trigger_mode": "request", "use_sim_time": True}],
                     remappings=[(TOPICS[key].relative, topic) for key, topic in recorded.items()],
                     arguments=log + [item for override in reliable for item in ("-p", override)], output="screen")
    replay = Node(package="mentor3ad", executable="replay_node", name="replay",
                  arguments=[argument(context, "bag"), "--rate", str(number(context, "rate")), "--clock",
                             "--wait-for-publisher", "/inspector/inspection", "--wait-for-publisher",
                             "/robot_cell/reject", "--wait-timeout", "300",
                             "--topics", *recorded.values(), *log], output="screen")
    robot = Node(package="mentor3ad", executable="robot_cell_example", name="robot_cell",
                 parameters=[{"parts": number(context, "parts", int), "part_prefix": argument(context, "part_prefix"),
                              "timeout_s": number(context, "timeout_s"), "place_s": number(context, "place_s"),
                              "inspect_action": "/inspector/inspect"}],
                 arguments=log, output="screen")
    return _dds_profile(argument(context, "dds_profile")) + [
        inspector, replay, robot, end_with(inspector, "inspector_node", None), end_with(replay, "replay_node", None),
        end_with(robot, "robot_cell_example")]


def generate_launch_description():
    defaults = {name: value for name, (value, _) in DEMO_ARGUMENTS.items()}
    descriptions = {name: text for name, (_, text) in DEMO_ARGUMENTS.items()}
    return LaunchDescription(declare(list(DEMO_ARGUMENTS), defaults, descriptions)
                             + [OpaqueFunction(function=_nodes)])
