"""Atomic file writes: the one implementation used for models, feature caches and reports.

:func:`atomic_write_bytes` writes to a hidden temporary file in the destination folder
(``.<name>.<random>.tmp``), fsyncs it, gives it the replaced file's mode (else 0644), renames it over
the destination and fsyncs the folder, so a reader sees either the old or the new complete file,
never a partial one. A failed write removes its temporary file; temporaries left behind by a writer
that was killed (SIGKILL, power loss) are removed by the next write to the same destination once
they are older than ``STALE_TEMP_SECONDS``.
"""
from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path
from typing import Union

STALE_TEMP_SECONDS = 600.0


def temp_prefix(path: Path) -> str:
    """Prefix of the temporary files of writes to ``path``."""
    return f".{path.name}."


def remove_stale_temporaries(path: Union[str, Path], older_than_s: float = STALE_TEMP_SECONDS) -> int:
    """Delete leftover ``.<name>.*.tmp`` files of interrupted writes to ``path``; returns how many."""
    path = Path(path)
    removed = 0
    now = time.time()
    try:
        candidates = list(path.parent.glob(f"{temp_prefix(path)}*.tmp"))
    except OSError:
        return 0
    for candidate in candidates:
        try:
            if now - candidate.stat().st_mtime >= older_than_s:
                candidate.unlink()
                removed += 1
        except FileNotFoundError:
            pass
    return removed


def atomic_write_bytes(path: Union[str, Path], data: bytes, mode: int = 0o644, durable: bool = True) -> Path:
    """Write ``data`` to ``path`` atomically (see module docstring); returns the path.

    mode: permissions of a new file (an existing file keeps its own). durable: fsync file and folder
    (feature caches may skip it; models and reports keep it)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    handle, temp_name = tempfile.mkstemp(prefix=temp_prefix(path), suffix=".tmp", dir=str(path.parent))
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


__all__ = ["atomic_write_bytes", "atomic_write_text", "remove_stale_temporaries", "STALE_TEMP_SECONDS"]
