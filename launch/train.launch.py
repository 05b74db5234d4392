"""Train a model from rosbag2 recordings of good parts with the trainer node (and hand it to an inspector).

    ros2 launch mentor3ad train.launch.py bag_paths:=/bags/good1,/bags/good2 output_model_path:=/models/gland.safetensors \
        reload_service:=/inspector/reload_model

Parameters come from ``params_file`` (default: the package's config/trainer.yaml); non-empty arguments
override it (``threads:=`` / ``nice:=``: the trainer's CPU budget; its defaults, 1 thread at nice +19, leave
the inspector on the same cores its pace). The node exits when the model is written (and, with
``reload_service``, swapped into the running inspector: a refused swap is a failure); the launch ends with it
and exits 1 when it failed.

``dds_profile`` (default: the package's config/fastdds_inspector.xml) becomes FASTDDS_DEFAULT_PROFILES_FILE of
the nodes unless that variable is already set; ``dds_profile:=''`` leaves the environment alone.
"""
from launch import LaunchDescription
from launch.actions import OpaqueFunction
from launch_ros.actions import Node

from mentor3ad.ros.launch_support import BUDGET_INTEGERS, argument, declare, end_with, flag, number, package_file
from mentor3ad.ros.launch_support import dds_profile_actions as _dds_profile

CONFIG = package_file("config", "trainer.yaml")
DDS_PROFILE = package_file("config", "fastdds_inspector.xml")
LIST_ARGUMENTS = {"bag_paths": "Comma-separated rosbag2 recordings of good parts.",
                  "val_bag_paths": "Comma-separated held-out recordings for threshold calibration."}
TEXT_ARGUMENTS = {
    "output_model_path": "Model file to write; empty keeps the params file's value.",
    "config_file": "Mentor3AD model/training config YAML; empty keeps the params file's value.",
    "cache_dir": "Feature cache directory (second runs skip the backbones); empty keeps the params file's value.",
    "reload_service": "Inspector reload service to hand the model to when done, e.g. /inspector/reload_model.",
}
RECORDING_TOPICS = ("image_topic", "points_topic", "depth_topic", "camera_info_topic")


def _trainer(context):
    overrides = {"use_sim_time": flag(context, "use_sim_time")}
    for key in LIST_ARGUMENTS:
        if argument(context, key):
            overrides[key] = [p.strip() for p in argument(context, key).split(",") if p.strip()]
    for key in (*TEXT_ARGUMENTS, "device", "input_mode", *RECORDING_TOPICS):
        if argument(context, key):
            overrides[key] = argument(context, key)
    for key in BUDGET_INTEGERS:  # threads / nice: the trainer's CPU budget beside a running inspector
        if argument(context, key):
            overrides[key] = number(context, key, int)
    trainer = Node(package="mentor3ad", executable="trainer_node", name="trainer", namespace=argument(context, "namespace"),
                   parameters=[argument(context, "params_file"), overrides],
                   arguments=["--ros-args", "--log-level", argument(context, "log_level")], output="screen")
    return _dds_profile(argument(context, "dds_profile")) + [
        trainer, end_with(trainer, "trainer_node", "trainer_node finished: the model is written")]


def generate_launch_description():
    names = ["params_file", *LIST_ARGUMENTS, *TEXT_ARGUMENTS, "device", "input_mode", "namespace", *RECORDING_TOPICS,
             *BUDGET_INTEGERS, "use_sim_time", "log_level", "dds_profile"]
    defaults = {"params_file": CONFIG, "dds_profile": DDS_PROFILE, **{name: "" for name in RECORDING_TOPICS}}
    descriptions = {**LIST_ARGUMENTS, **TEXT_ARGUMENTS,
                    **{name: f"{name.replace('_topic', '').replace('_', ' ')} topic in the recordings; empty keeps the "
                             "params file's value." for name in RECORDING_TOPICS}}
    return LaunchDescription(declare(names, defaults, descriptions) + [OpaqueFunction(function=_trainer)])
