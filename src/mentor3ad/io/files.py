"""Atomic file writes: the one implementation used for models, feature caches and reports.

:func:`atomic_write_bytes` writes to a hidden temporary file in the destination folder
(``.<name>.<host>-<pid>.<random>.tmp``: the writer's host name and process id), fsyncs it, gives it the
replaced file's mode (else 0644), renames it over the destination and fsyncs the folder, so a reader sees
either the old or the new complete file, never a partial one. A failed write removes its temporary file.

Temporaries left behind by a writer that was killed (SIGKILL, OOM killer, power loss) are removed by the
next write to the same destination:

* at once when the name carries this host and a process id that is not running (or is a zombie): its
  writer is gone and will never rename it;
* otherwise (a live writer, another host sharing the folder, an old name without a process id) once
  they are older than ``STALE_TEMP_SECONDS``, so a concurrent writer on another machine is never robbed
  of its file, and a process id reused by an unrelated process delays the clean-up only that long.
"""
from __future__ import annotations

import os
import re
import socket
import tempfile
import time
from pathlib import Path
from typing import Optional, Tuple, Union


STALE_TEMP_SECONDS = 600.0


def temp_prefix(path: Path) -> str:
    """Prefix of the temporary files of writes to ``path``."""
    return f".{path.name}."


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname())[:32] or "host"


def owner_prefix(path: Path) -> str:
    """Prefix of this process's temporary files for ``path``: ``.<name>.<host>-<pid>.``."""
    return f"{temp_prefix(path)}{_host()}-{os.getpid()}."


def temp_owner(path: Path, candidate: Path) -> Optional[Tuple[str, int]]:
    """(host, pid) encoded in a temporary file's name for ``path``, or None (another naming)."""
    middle = candidate.name[len(temp_prefix(path)):-len(".tmp")]
    match = re.fullmatch(r"([A-Za-z0-9-]*)-(\d+)\.[^.]+", middle)
    return (match.group(1), int(match.group(2))) if match else None


def process_alive(pid: int) -> bool:
    """Whether process ``pid`` runs on this machine (a zombie, killed but not yet reaped, is not alive)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat[stat.rfind(")") + 2:][:1] not in ("Z", "X")


def remove_stale_temporaries(path: Union[str, Path], older_than_s: float = STALE_TEMP_SECONDS) -> int:
    """Delete leftover ``.<name>.*.tmp`` files of interrupted writes to ``path`` (rules: module docstring);
    returns how many."""
    path = Path(path)
    removed = 0
    now = time.time()
    host = _host()
    try:
        candidates = list(path.parent.glob(f"{temp_prefix(path)}*.tmp"))
    except OSError:
        return 0
    for candidate in candidates:
        owner = temp_owner(path, candidate)
        try:
            orphan = owner is not None and owner[0] == host and not process_alive(owner[1])
            if orphan or now - candidate.stat().st_mtime >= older_than_s:
                candidate.unlink()
                removed += 1
        except FileNotFoundError:
            pass
        except OSError:
            pass  # not ours to remove (permissions): the write itself goes on
    return removed


def atomic_write_bytes(path: Union[str, Path], data: bytes, mode: int = 0o644, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see module docstring); returns the path.

    mode: permissions of a new file (an existing file keeps its own). durable: fsync file and folder
    (feature caches may skip it; models and reports keep it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temp_name = tempfile.mkstemp(prefix=owner_prefix(path), suffix=".tmp", dir=str(path.parent))
    try:
        with os.fdopen(handle, "wb") as stream:
            stream.write(data)
            stream.flush()
            if durable:
                os.fsync(stream.fileno())
        os.chmod(temp_name, (path.stat().st_mode & 0o777) if path.exists() else mode)
        os.replace(temp_name, path)
    except BaseException:
        try:
            os.unlink(temp_name)
        except FileNotFoundError:
            pass
        raise
    if durable:
        try:
            directory = os.open(str(path.parent), os.O_RDONLY)
            try:
                os.fsync(directory)
            finally:
                os.close(directory)
        except OSError:
            pass
    return path


def atomic_write_text(path: Union[str, Path], text: str, durable: bool = True) -> Path:
    """:func:`atomic_write_bytes` of UTF-8 text."""
    return atomic_write_bytes(path, text.encode("utf-8"), durable=durable)


__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries", "STALE_TEMP_SECONDS", "temp_owner",
           "process_alive"]
