"""Train a model from rosbag2 recordings of good parts with the trainer node.

    ros2 launch mentor3ad train.launch.py bag_paths:=/bags/good1,/bags/good2 output_model_path:=/models/gland.m3ad

Parameters come from ``params_file`` (default: the package's config/trainer.yaml); non-empty
arguments override it. The node exits when the model is written.

``dds_profile`` (default: the package's config/fastdds_large_shm.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the nodes unless that variable is already set; ``dds_profile:=''`` leaves the environment alone.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile, package_file

CONFIG = package_file("config", "trainer.yaml")
DDS_PROFILE = package_file("config", "fastdds_large_shm.xml")



def _trainer(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1")}
    for key in ("bag_paths", "val_bag_paths"):
        if arg(key):
            overrides[key] = [p.strip() for p in arg(key).split(",") if p.strip()]
    for key in ("output_model_path", "config_file", "device", "input_mode", "image_topic", "points_topic",
                "depth_topic", "camera_info_topic", "reload_service"):
        if arg(key):
            overrides[key] = arg(key)
    return _dds_profile(arg("dds_profile")) + [
        Node(
            package="mentor3ad",
            executable="trainer_node",
            name="trainer",
            namespace=arg("namespace"),
            parameters=[arg("params_file"), overrides],
            arguments=["--ros-args", "--log-level", arg("log_level")],
            output="screen",
        )
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=CONFIG,
                                  description="Trainer parameter file (YAML)."),
            DeclareLaunchArgument("bag_paths", default_value="",
                                  description="Comma-separated rosbag2 recordings of good parts."),
            DeclareLaunchArgument("val_bag_paths", default_value="",
                                  description="Comma-separated held-out recordings for threshold calibration."),
            DeclareLaunchArgument("output_model_path", default_value="",
                                  description="Model file to write; empty keeps the params file's value."),
            DeclareLaunchArgument("config_file", default_value="",
                                  description="Mentor3AD model/training config YAML; empty keeps the params file's."),
            DeclareLaunchArgument("device", default_value="",
                                  description="auto, cpu, cuda or cuda:N; empty keeps the params file's value."),
            DeclareLaunchArgument("input_mode", default_value="",
                                  description="points or depth; empty keeps the params file's value."),
            DeclareLaunchArgument("namespace", default_value="",
                                  description="Namespace of the trainer node."),
            DeclareLaunchArgument("image_topic", default_value="",
                                  description="Image topic in the recordings; empty keeps the params file's value."),
            DeclareLaunchArgument("points_topic", default_value="",
                                  description="Organized cloud topic in the recordings (input_mode points)."),
            DeclareLaunchArgument("depth_topic", default_value="",
                                  description="Depth image topic in the recordings (input_mode depth)."),
            DeclareLaunchArgument("camera_info_topic", default_value="",
                                  description="CameraInfo topic in the recordings (input_mode depth)."),
            DeclareLaunchArgument("reload_service", default_value="",
                                  description="Inspector reload service to call when done, e.g. /inspector/reload_model."),
            DeclareLaunchArgument("use_sim_time", default_value="false",
                                  description="Use /clock for the node's time."),
            DeclareLaunchArgument("log_level", default_value="info",
                                  description="Logging level: debug, info, warn, error."),
            DeclareLaunchArgument("dds_profile", default_value=DDS_PROFILE,
                                  description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) for the nodes: "
                                              "the package's 16 MiB shared-memory segment, so 224x224 clouds are not "
                                              "sent as UDP fragments; empty, or FASTDDS_DEFAULT_PROFILES_FILE already "
                                              "set, leaves the environment alone. Ignored by other RMWs."),
            OpaqueFunction(function=_trainer),
        ]
    )
