"""Start the mentor3ad inspector node.

    ros2 launch mentor3ad inspect.launch.py model_path:=/models/gland.safetensors \
        image_topic:=/cam/color/image_raw points_topic:=/cam/depth/points

Parameters come from ``params_file`` (default: the package's config/inspector.yaml); every non-empty
argument overrides it (model_path, device, input_mode, input_reliability, threshold, queue_policy,
pair_timeout, threads, nice, publish_anomaly_map, publish_overlay, publish_markers, record_path, record_url).
``dashboard:=true`` also starts ``mentor3ad dashboard`` on the inspector's record (http://127.0.0.1:8050/,
this machine only). ``lifecycle:=true`` starts the
managed node (``autostart:=false`` leaves the transitions to a lifecycle manager). Every argument has a
description: ``ros2 launch mentor3ad inspect.launch.py --show-args``. When the node fails (e.g. exit 2 on a
bad parameter) the launch ends with exit code 1, naming it.

``dds_profile`` (default: the package's config/fastdds_inspector.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the node unless that variable is already set; ``dds_profile:=''`` leaves the environment alone
(inspector_node then loads that profile itself; set FASTDDS_DEFAULT_PROFILES_FILE to use your own).
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction

from mentor3ad.ros.launch_support import (INSPECTOR_ARGUMENTS, argument, dashboard_actions, declare, end_with,
                                          inspector_executable, inspector_node, package_file)
from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile

CONFIG = package_file("config", "inspector.yaml")
DDS_PROFILE = package_file("config", "fastdds_inspector.xml")


def _inspector(context):
    node = inspector_node(context)  # the launch ends with it, and fails (exit 1) when it fails
    return (_dds_profile(argument(context, "dds_profile")) + [node, end_with(node, inspector_executable(context))]
            + dashboard_actions(context))


def generate_launch_description():
    return LaunchDescription(declare(INSPECTOR_ARGUMENTS, {"params_file": CONFIG, "dds_profile": DDS_PROFILE})
                             + [OpaqueFunction(function=_inspector)])
