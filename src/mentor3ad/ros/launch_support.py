"""Helpers shared by the package's launch files (imported only where launch/launch_ros are installed).

Imports of launch happen inside the functions, so this module itself imports nothing from ROS.
"""
import os

from ..config import packaged_file
from .dds import FASTDDS_PROFILE_ENV


def package_file(*parts: str) -> str:
    """Path of a file of the installed package, e.g. ``package_file("config", "x.yaml")``."""
    return str(packaged_file(*parts))


def dds_profile_actions(profile: str) -> list:
    """[SetEnvironmentVariable] for Fast DDS' XML profile, or [] when ``profile`` is empty or the user
    already set FASTDDS_DEFAULT_PROFILES_FILE (their profile wins). A missing file is an error."""
    from launch.actions import SetEnvironmentVariable

    if not profile or os.environ.get(FASTDDS_PROFILE_ENV):
        return []
    if not os.path.isfile(profile):
        raise RuntimeError(f"dds_profile {profile!r} does not exist (dds_profile:='' leaves Fast DDS as configured)")
    return [SetEnvironmentVariable(FASTDDS_PROFILE_ENV, profile)]
