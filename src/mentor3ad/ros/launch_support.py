"""Helpers shared by the package's launch files (imported only where launch/launch_ros are installed).

Imports of launch and ament_index happen inside the functions, so this module itself imports nothing
from ROS.
"""
import os

DDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"


def package_file(*parts: str) -> str:
    """Path of a file in the installed package's share directory, e.g. ``package_file("config", "x.yaml")``."""
    from ament_index_python.packages import get_package_share_directory

    return os.path.join(get_package_share_directory("mentor3ad"), *parts)


def dds_profile_actions(profile: str) -> list:
    """[SetEnvironmentVariable] for Fast DDS' XML profile, or [] when ``profile`` is empty or the user
    already set FASTDDS_DEFAULT_PROFILES_FILE (their profile wins). A missing file is an error."""
    from launch.actions import SetEnvironmentVariable

    if not profile or os.environ.get(DDS_PROFILE_ENV):
        return []
    if not os.path.isfile(profile):
        raise RuntimeError(f"dds_profile {profile!r} does not exist (dds_profile:='' leaves Fast DDS as configured)")
    return [SetEnvironmentVariable(DDS_PROFILE_ENV, profile)]
