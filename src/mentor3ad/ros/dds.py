"""Fast DDS profiles for large frames (no ROS import).

An image + 224x224 organized cloud pair is about 934 KiB. On one host Fast DDS moves large messages
through the *writer's* shared-memory segment, 512 KiB by default, and a writer on defaults overwrites
fragments before its readers have them: best effort loses most pairs without an error, reliable repairs
them only on the writer's heartbeat (up to ~3 s). The package ships two profiles (``config/``):

* ``fastdds_inspector.xml`` (:func:`inspector_profile_path`, the default): the *reader* side alone fixes
  it: the participant's readers receive user data over UDP (4 MiB socket buffers), never from a writer's
  segment; a 16 MiB segment for its own outputs. Works with a driver left on defaults.
* ``fastdds_large_shm.xml`` (:func:`large_shm_profile_path`): a 16 MiB segment; it must be the *driver's*
  (writer's) profile to help; lower latency for large frames when the driver can be started with it.

:func:`use_package_profile` makes the current process read a profile (before ``rclpy.init``);
:func:`with_dds_profile` gives a child process's environment one. A user's FASTDDS_DEFAULT_PROFILES_FILE
always wins. Other RMWs ignore the variable.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional

from ..package_files import packaged_file

FASTDDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
INSPECTOR_PROFILE_FILE = "fastdds_inspector.xml"
LARGE_SHM_PROFILE_FILE = "fastdds_large_shm.xml"


def inspector_profile_path() -> Path:
    """The inspector's profile: readers over UDP, any driver on defaults (config/fastdds_inspector.xml)."""
    return packaged_file("config", INSPECTOR_PROFILE_FILE)


def large_shm_profile_path() -> Path:
    """The 16 MiB shared-memory segment profile for drivers (config/fastdds_large_shm.xml)."""
    return packaged_file("config", LARGE_SHM_PROFILE_FILE)


def with_dds_profile(env: Optional[Mapping[str, str]] = None, profile: Optional[Path] = None) -> Dict[str, str]:
    """A copy of ``env`` (default: os.environ) that makes Fast DDS read ``profile``.

    profile: XML profile (default: :func:`inspector_profile_path`). An existing non-empty
    FASTDDS_DEFAULT_PROFILES_FILE is kept (the user's choice wins).
    """
    out = dict(os.environ if env is None else env)
    if not out.get(FASTDDS_PROFILE_ENV):
        path = Path(profile) if profile is not None else inspector_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f"Fast DDS profile {path} does not exist")
        out[FASTDDS_PROFILE_ENV] = str(path)
    return out


def use_package_profile(profile: Optional[Path] = None) -> str:
    """Make this process's Fast DDS participants read ``profile`` (default: the inspector's) unless
    FASTDDS_DEFAULT_PROFILES_FILE is set; must run before ``rclpy.init()``. Returns the profile in use."""
    os.environ.update(with_dds_profile(os.environ, profile))
    return os.environ[FASTDDS_PROFILE_ENV]


__all__ = ["FASTDDS_PROFILE_ENV", "INSPECTOR_PROFILE_FILE", "LARGE_SHM_PROFILE_FILE", "inspector_profile_path",
           "large_shm_profile_path", "use_package_profile", "with_dds_profile"]
