"""Start the mentor3ad inspector node.

    ros2 launch mentor3ad inspect.launch.py model_path:=/path/to/model device:=cuda image_topic:=/cam/color

Parameters come from ``params_file`` (default: the package's config/inspector.yaml); the arguments
model_path, device and input_mode override it when they are not empty.

``dds_profile`` (default: the package's config/fastdds_large_shm.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the nodes unless that variable is already set; ``dds_profile:=''`` leaves the environment alone.
"""
from launch import LaunchDescription
from launch.actions import DeclareLaunchArgument, OpaqueFunction
from launch.substitutions import LaunchConfiguration
from launch_ros.actions import Node

from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile, package_file

CONFIG = package_file("config", "inspector.yaml")
DDS_PROFILE = package_file("config", "fastdds_large_shm.xml")



def _inspector(context):
    def arg(name):
        return LaunchConfiguration(name).perform(context)

    overrides = {"use_sim_time": arg("use_sim_time").lower() in ("true", "1")}
    for key in ("model_path", "device", "input_mode"):
        if arg(key):
            overrides[key] = arg(key)
    return _dds_profile(arg("dds_profile")) + [
        Node(
            package="mentor3ad",
            executable="inspector_node",
            name="inspector",
            namespace=arg("namespace"),
            parameters=[arg("params_file"), overrides],
            remappings=[
                ("image", arg("image_topic")),
                ("points", arg("points_topic")),
                ("depth", arg("depth_topic")),
                ("camera_info", arg("camera_info_topic")),
            ],
            arguments=["--ros-args", "--log-level", arg("log_level")],
            output="screen",
        )
    ]


def generate_launch_description():
    return LaunchDescription(
        [
            DeclareLaunchArgument("params_file", default_value=CONFIG,
                                  description="Inspector parameter file (YAML)."),
            DeclareLaunchArgument("model_path", default_value="",
                                  description="Model file to load; empty keeps the params file's value."),
            DeclareLaunchArgument("device", default_value="",
                                  description="auto, cpu, cuda or cuda:N; empty keeps the params file's value."),
            DeclareLaunchArgument("input_mode", default_value="",
                                  description="points or depth; empty keeps the params file's value."),
            DeclareLaunchArgument("namespace", default_value="",
                                  description="Namespace of the inspector node."),
            DeclareLaunchArgument("image_topic", default_value="image",
                                  description="Image topic (sensor_msgs/Image) remapped to the node's `image`."),
            DeclareLaunchArgument("points_topic", default_value="points",
                                  description="Organized cloud topic (sensor_msgs/PointCloud2), input_mode points."),
            DeclareLaunchArgument("depth_topic", default_value="depth",
                                  description="Registered depth image topic, input_mode depth."),
            DeclareLaunchArgument("camera_info_topic", default_value="camera_info",
                                  description="CameraInfo of the depth image, input_mode depth."),
            DeclareLaunchArgument("use_sim_time", default_value="false",
                                  description="Use /clock (true when replaying bags)."),
            DeclareLaunchArgument("log_level", default_value="info",
                                  description="Logging level: debug, info, warn, error."),
            DeclareLaunchArgument("dds_profile", default_value=DDS_PROFILE,
                                  description="Fast DDS XML profile (FASTDDS_DEFAULT_PROFILES_FILE) for the nodes: "
                                              "the package's 16 MiB shared-memory segment, so 224x224 clouds are not "
                                              "sent as UDP fragments; empty, or FASTDDS_DEFAULT_PROFILES_FILE already "
                                              "set, leaves the environment alone. Ignored by other RMWs."),
            OpaqueFunction(function=_inspector),
        ]
    )
