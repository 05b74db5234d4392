"""Fast DDS settings for large organized clouds (no ROS import).

A 224x224 organized cloud (784 KiB with 16-byte points) does not fit Fast DDS' default 512 KiB
shared-memory segment; the package ships ``config/fastdds_large_shm.xml`` (a 16 MiB segment).
:func:`large_shm_profile_path` finds it in a source checkout or an install; :func:`with_dds_profile`
gives a child process's environment that profile unless the user already chose one.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Dict, Mapping, Optional

from ..config import packaged_file

FASTDDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
LARGE_SHM_PROFILE_FILE = "fastdds_large_shm.xml"


def large_shm_profile_path() -> Path:
    """The package's Fast DDS profile with a 16 MiB shared-memory segment (config/fastdds_large_shm.xml)."""
    return packaged_file("config", LARGE_SHM_PROFILE_FILE)


def with_dds_profile(env: Optional[Mapping[str, str]] = None, profile: Optional[Path] = None) -> Dict[str, str]:
    """A copy of ``env`` (default: os.environ) that makes Fast DDS read ``profile``.

    profile: XML profile (default: :func:`large_shm_profile_path`). An existing non-empty
    FASTDDS_DEFAULT_PROFILES_FILE is kept (the user's choice wins). Other RMWs ignore the variable.
    """
    out = dict(os.environ if env is None else env)
    if not out.get(FASTDDS_PROFILE_ENV):
        path = Path(profile) if profile is not None else large_shm_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f"Fast DDS profile {path} does not exist")
        out[FASTDDS_PROFILE_ENV] = str(path)
    return out


__all__ = ["FASTDDS_PROFILE_ENV", "LARGE_SHM_PROFILE_FILE", "large_shm_profile_path", "with_dds_profile"]
