"""Evaluate a model on a recorded test bag: inspector + evaluator (+ replay of the bag).

    ros2 launch mentor3ad evaluate.launch.py model_path:=/models/gland.m3ad bag:=/bags/test output_dir:=/tmp/eval

With ``bag`` empty, play the recording yourself (``ros2 bag play --clock /bags/test``) and pass it as
``ground_truth_bag``. The evaluator reads the ground truth from that recording, pairs it with the
inspector's results by stamp and writes the same report as ``mentor3ad evaluate`` into ``output_dir``.
The topic arguments default to the names ``mentor3ad to-bag`` records.

``dds_profile`` (default: the package's config/fastdds_large_shm.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the nodes unless that variable is already set; ``dds_profile:=''`` leaves the environment alone.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile, package_file

INSPECTOR_CONFIG = package_file("config", "inspector.yaml")
EVALUATOR_CONFIG = package_file("config", "evaluator.yaml")
DDS_PROFILE = package_file("config", "fastdds_large_shm.xml")

def _nodes(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    sim_time = arg("use_sim_time").lower() in ("true", "1")
    namespace = arg("namespace")
    inspector_overrides = {"use_sim_time": sim_time}
    for key in ("model_path", "device", "input_mode"):
        if arg(key):
            inspector_overrides[key] = arg(key)
    evaluator_overrides = {"use_sim_time": sim_time}
    ground_truth = arg("bag") or arg("ground_truth_bag")
    if ground_truth:
        evaluator_overrides["ground_truth_bag"] = ground_truth
    if arg("output_dir"):
        evaluator_overrides["output_dir"] = arg("output_dir")
    if arg("expected_pairs"):
        evaluator_overrides["expected_pairs"] = int(arg("expected_pairs"))
    log = ["--ros-args", "--log-level", arg("log_level")]
    nodes = [
        Node(
            package="mentor3ad",
            executable="inspector_node",
            name="inspector",
            namespace=namespace,
            parameters=[arg("params_file"), inspector_overrides],
            remappings=[
                ("image", arg("image_topic")),
                ("points", arg("points_topic")),
                ("depth", arg("depth_topic")),
                ("camera_info", arg("camera_info_topic")),
            ],
            arguments=log,
            output="screen",
        ),
        Node(
            package="mentor3ad",
            executable="evaluator_node",
            name="evaluator",
            namespace=namespace,
            parameters=[arg("evaluator_params_file"), evaluator_overrides],
            remappings=[("result", "inspector/result"), ("anomaly_map", "inspector/anomaly_map")],
            arguments=log,
            output="screen",
        ),
    ]
    if arg("bag"):
        if (arg("input_mode") or "points") == "depth":
            played = [arg("image_topic"), arg("depth_topic"), arg("camera_info_topic")]
        else:
            played = [arg("image_topic"), arg("points_topic")]
        nodes.append(
            Node(
                package="mentor3ad",
                executable="replay_node",
                name="replay",
                namespace=namespace,
                arguments=[arg("bag"), "--rate", arg("rate"), "--clock", "--wait-for-subscribers", "--topics"]
                + played + log,
                output="screen",
            )
        )
    return _dds_profile(arg("dds_profile")) + nodes


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=INSPECTOR_CONFIG,
                                  description="Inspector parameter file (YAML)."),
            DeclareLaunchArgument("evaluator_params_file", default_value=EVALUATOR_CONFIG,
                                  description="Evaluator parameter file (YAML)."),
            DeclareLaunchArgument("model_path", default_value="",
                                  description="Model file to evaluate; empty keeps the params file's value."),
            DeclareLaunchArgument("device", default_value="",
                                  description="auto, cpu, cuda or cuda:N; empty keeps the params file's value."),
            DeclareLaunchArgument("input_mode", default_value="",
                                  description="points or depth; empty keeps the params file's value."),
            DeclareLaunchArgument("namespace", default_value="",
                                  description="Namespace of all started nodes."),
            DeclareLaunchArgument("image_topic", default_value="/camera/image",
                                  description="Image topic of the recording, remapped to the inspector's `image`."),
            DeclareLaunchArgument("points_topic", default_value="/camera/points",
                                  description="Organized cloud topic, remapped to the inspector's `points`."),
            DeclareLaunchArgument("depth_topic", default_value="/camera/depth",
                                  description="Depth image topic, remapped to the inspector's `depth`."),
            DeclareLaunchArgument("camera_info_topic", default_value="/camera/camera_info",
                                  description="CameraInfo topic, remapped to the inspector's `camera_info`."),
            DeclareLaunchArgument("bag", default_value="",
                                  description="Test recording to replay with replay_node and to take the ground truth from."),
            DeclareLaunchArgument("ground_truth_bag", default_value="",
                                  description="Test recording with ground truth when `bag` is empty (you play it)."),
            DeclareLaunchArgument("rate", default_value="1.0",
                                  description="Replay rate factor (replay_node --rate)."),
            DeclareLaunchArgument("output_dir", default_value="",
                                  description="Report directory; empty keeps the evaluator params file's value."),
            DeclareLaunchArgument("expected_pairs", default_value="",
                                  description="Write the report after this many pairs; empty keeps the params file's."),
            DeclareLaunchArgument("use_sim_time", default_value="true",
                                  description="Use /clock from the bag replay."),
            DeclareLaunchArgument("log_level", default_value="info",
                                  description="Logging level: debug, info, warn, error."),
            DeclareLaunchArgument("dds_profile", default_value=DDS_PROFILE,
                                  description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) for the nodes: "
                                              "the package's 16 MiB shared-memory segment, so 224x224 clouds are not "
                                              "sent as UDP fragments; empty, or FASTDDS_DEFAULT_PROFILES_FILE already "
                                              "set, leaves the environment alone. Ignored by other RMWs."),
            OpaqueFunction(function=_nodes),
        ]
    )
