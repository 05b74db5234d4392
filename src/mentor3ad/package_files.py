"""The package's data files (``config/``, ``launch/``, ``models/``) and executables wherever it is installed:
a source checkout, a colcon / ament install (``share/mentor3ad``, ``lib/mentor3ad``) or a pip install
(``sys.prefix/share/mentor3ad``, ``bin/``)."""
from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path
from typing import Iterator, Optional, Sequence

from .errors import ConfigError

PACKAGE = "mentor3ad"


def packaged_file(*parts: str) -> Path:
    """A data file of the package (e.g. ``packaged_file("config", "model.yaml")``).

    Looked up, in order: the source checkout this module runs from; the ament share directory
    (``ament_index_python``, i.e. a colcon install or any prefix on AMENT_PREFIX_PATH);
    ``<prefix>/share/mentor3ad`` of every AMENT_PREFIX_PATH entry; ``sys.prefix/share/mentor3ad``
    (pip install). Raises ConfigError listing the places tried.
    """
    candidates = []
    for candidate in package_file_candidates(parts):
        if candidate.is_file():
            return candidate
        candidates.append(candidate)
    tried = ", ".join(dict.fromkeys(map(str, candidates)))
    raise ConfigError(f"packaged file {'/'.join(parts)} not found (looked in {tried}); reinstall the package")


def package_file_candidates(parts: Sequence[str]) -> Iterator[Path]:
    """Where packaged files may be, in order (generated lazily: the first hit ends the search)."""
    yield Path(__file__).resolve().parents[2].joinpath(*parts)
    try:
        from ament_index_python.packages import get_package_share_directory

        yield Path(get_package_share_directory(PACKAGE)).joinpath(*parts)
    except (ImportError, LookupError, OSError, ValueError):  # not installed / not in the ament index
        pass
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        yield Path(prefix, "share", PACKAGE).joinpath(*parts)
    yield Path(sys.prefix, "share", PACKAGE).joinpath(*parts)


def package_executable(name: str) -> Optional[str]:
    """Path of an executable of this package (``inspector_node``, ``mentor3ad``, ...): beside the running
    interpreter (pip venv), in ``<prefix>/lib/mentor3ad`` of every AMENT_PREFIX_PATH entry (colcon,
    ``ros2 run``), else on PATH; None when not installed."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    for prefix in filter(None, os.environ.get("AMENT_PREFIX_PATH", "").split(os.pathsep)):
        candidate = Path(prefix, "lib", PACKAGE, name)
        if candidate.is_file() and os.access(candidate, os.X_OK):
            return str(candidate)
    return shutil.which(name)
