"""Evidence files beside the record: what a part looked like, kept within a retention budget.

Layout under the evidence folder (default: ``<record>.evidence/`` beside a SQLite file)::

    <VERDICT>/<YYYY-MM-DD>/<HH>/<uid>_thumbnail.jpg   every part with an image: the overlay (or the image),
                                                      ``thumbnail_px`` wide, for the dashboard's stream
    FAIL|ERROR/.../<uid>_image.png                    the part's RGB image
    FAIL|ERROR/.../<uid>_overlay.png                  the anomaly map over it (threshold_overlay: colour scale,
                                                      regions boxed)
    FAIL|ERROR/.../<uid>_map.npy                      the raw (H, W) float32 map (``keep_raw_maps``)

(UTC date and hour.) Files are written atomically (temporary + rename; a kill leaves no half file; FAIL and
ERROR evidence is fsynced). :class:`RetentionPolicy`: files older than their verdict's age limit are
deleted, and while the folder exceeds ``max_bytes`` the oldest files go first in the order PASS /
SKIPPED, ERROR, FAIL (FAIL evidence is kept longest) down to 90 % of the budget. Rows keep their paths; a
deleted file is shown as expired.
"""
from __future__ import annotations

import io
import logging
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Tuple

import numpy as np

from ..io.files import atomic_write_bytes

LOG = logging.getLogger("mentor3ad.records")
RETENTION_ORDER = ("PASS", "SKIPPED", "ERROR", "FAIL")  # deleted first ... last
FULL_EVIDENCE = ("FAIL", "ERROR")
STALE_TEMP_S = 3600.0


@dataclass
class Evidence:
    """Pictures of one part, handed to the writer with its result (kept by reference until written: do not
    modify them afterwards). rgb: (H, W, 3) uint8 RGB; overlay: (H, W, 3) uint8 RGB when the caller already
    rendered it (the inspector's ~/overlay), else rendered from the result's anomaly map."""

    rgb: Optional[np.ndarray] = None
    overlay: Optional[np.ndarray] = None


@dataclass
class RetentionPolicy:
    """max_bytes: size budget of the evidence folder; max_age_days: per verdict; keep_raw_maps: also store
    FAIL/ERROR maps as .npy; thumbnails: a small picture of every part; thumbnail_px: its width;
    check_interval_s: how often the folder is measured (also after 2 % of the budget was written)."""

    max_bytes: int = 2 * 1024 ** 3
    max_age_days: Dict[str, float] = field(default_factory=lambda: {"PASS": 7.0, "SKIPPED": 7.0, "ERROR": 90.0,
                                                                    "FAIL": 365.0})
    keep_raw_maps: bool = False
    thumbnails: bool = True
    thumbnail_px: int = 160
    check_interval_s: float = 300.0


def default_evidence_dir(record_path: Path) -> Path:
    """``<record file>.evidence`` beside a SQLite record."""
    return record_path.with_name(record_path.name + ".evidence")


def _encode(image: np.ndarray, fmt: str, width: Optional[int] = None) -> bytes:
    from PIL import Image

    picture = Image.fromarray(np.ascontiguousarray(image, dtype=np.uint8))
    if width and picture.width > width:
        picture = picture.resize((width, max(1, round(picture.height * width / picture.width))), Image.BILINEAR)
    buffer = io.BytesIO()
    picture.save(buffer, format=fmt, **({"quality": 80} if fmt == "JPEG" else {"compress_level": 3}))
    return buffer.getvalue()


def _shrink(rgb: np.ndarray, amap: np.ndarray, width: int) -> Tuple[np.ndarray, np.ndarray]:
    """rgb (H, W, 3) uint8 and map (H, W) scaled to ``width`` pixels wide (unchanged when not wider)."""
    if rgb.shape[1] <= width:
        return rgb, amap
    from PIL import Image

    size = (width, max(1, round(rgb.shape[0] * width / rgb.shape[1])))
    small_map = Image.fromarray(np.nan_to_num(np.asarray(amap, np.float32))).resize(size, Image.BILINEAR)
    return (np.asarray(Image.fromarray(np.ascontiguousarray(rgb, np.uint8)).resize(size, Image.BILINEAR)),
            np.asarray(small_map))


class EvidenceStore:
    """Writes a part's evidence files and keeps the folder within its :class:`RetentionPolicy`."""

    def __init__(self, root: Path, policy: Optional[RetentionPolicy] = None) -> None:
        self.root = Path(root)
        self.policy = policy or RetentionPolicy()
        self.total_bytes: Optional[int] = None  # measured by enforce()
        self._written_since_check = 0
        self._last_check = -math.inf
        self.removed_files = 0

    def write(self, uid: str, verdict: str, decided_ns: int, result, evidence: Optional[Evidence]) -> Dict[str, str]:
        """Write the evidence of one part; returns {kind: path relative to the root} for thumbnail, image,
        overlay, raw_map (kinds not written are absent). Raises OSError (disk full, permissions)."""
        amap = getattr(result, "anomaly_map", None)
        rgb = evidence.rgb if evidence is not None else None
        overlay = evidence.overlay if evidence is not None else None
        full = verdict in FULL_EVIDENCE
        if (overlay is None and rgb is not None and amap is not None and np.shape(amap) == np.shape(rgb)[:2]
                and (full or self.policy.thumbnails)):
            from ..eval.visualize import threshold_overlay

            if full:
                overlay = threshold_overlay(rgb, amap, float(result.threshold), result.regions)
            else:  # only the thumbnail shows it: rendered at its size (a 1280x720 overlay costs ~0.3 s)
                small_rgb, small_map = _shrink(rgb, amap, self.policy.thumbnail_px)
                overlay = threshold_overlay(small_rgb, small_map, float(result.threshold))
        stamp = time.gmtime(decided_ns / 1e9)
        folder = Path(verdict, time.strftime("%Y-%m-%d", stamp), time.strftime("%H", stamp))
        files: List[Tuple[str, str, bytes]] = []
        picture = overlay if overlay is not None else rgb
        if self.policy.thumbnails and picture is not None:
            files.append(("thumbnail", "thumbnail.jpg", _encode(picture, "JPEG", self.policy.thumbnail_px)))
        if full and rgb is not None:
            files.append(("image", "image.png", _encode(rgb, "PNG")))
        if full and overlay is not None:
            files.append(("overlay", "overlay.png", _encode(overlay, "PNG")))
        if full and self.policy.keep_raw_maps and amap is not None:
            buffer = io.BytesIO()
            np.save(buffer, np.asarray(amap, np.float32))
            files.append(("raw_map", "map.npy", buffer.getvalue()))
        written: Dict[str, str] = {}
        for kind, suffix, data in files:
            relative = folder / f"{uid}_{suffix}"
            atomic_write_bytes(self.root / relative, data, durable=full)
            written[kind] = relative.as_posix()
            self._written_since_check += len(data)
            if self.total_bytes is not None:
                self.total_bytes += len(data)
        return written

    def maybe_enforce(self) -> None:
        """:meth:`enforce` when ``check_interval_s`` passed or 2 % of the budget was written since."""
        if (time.monotonic() - self._last_check >= self.policy.check_interval_s
                or self._written_since_check >= 0.02 * self.policy.max_bytes):
            self.enforce()

    def _files(self) -> List[Tuple[int, float, int, Path]]:
        """(retention rank, mtime, size, path) of the evidence files; stale temporaries removed."""
        out = []
        now = time.time()
        for rank, verdict in enumerate(RETENTION_ORDER):
            base = self.root / verdict
            if not base.is_dir():
                continue
            for folder, _, names in os.walk(base):
                for name in names:
                    path = Path(folder, name)
                    try:
                        stat = path.stat()
                    except FileNotFoundError:
                        continue
                    if name.endswith(".tmp"):
                        if now - stat.st_mtime > STALE_TEMP_S:
                            path.unlink(missing_ok=True)
                        continue
                    out.append((rank, stat.st_mtime, stat.st_size, path))
        return out

    def enforce(self, now: Optional[float] = None) -> Dict[str, int]:
        """Apply the policy now; returns {removed_files, removed_bytes, total_bytes}."""
        now = time.time() if now is None else now
        self._last_check, self._written_since_check = time.monotonic(), 0
        files = self._files()
        doomed = set()
        for rank, mtime, _, path in files:
            limit = self.policy.max_age_days.get(RETENTION_ORDER[rank])
            if limit is not None and now - mtime > limit * 86400.0:
                doomed.add(path)
        total = sum(size for _, _, size, path in files if path not in doomed)
        if total > self.policy.max_bytes:
            for rank, mtime, size, path in sorted(f for f in files if f[3] not in doomed):
                if total <= 0.9 * self.policy.max_bytes:
                    break
                doomed.add(path)
                total -= size
        removed_bytes = 0
        for rank, mtime, size, path in files:
            if path in doomed:
                try:
                    path.unlink()
                    removed_bytes += size
                except FileNotFoundError:
                    pass
                except OSError as err:
                    LOG.warning("evidence retention: cannot delete %s: %s", path, err)
        for folder in {path.parent for path in doomed}:
            for directory in (folder, folder.parent):
                try:
                    directory.rmdir()  # only when empty
                except OSError:
                    break
        self.total_bytes = total
        self.removed_files += len(doomed)
        if doomed:
            LOG.info("evidence retention: removed %d files (%.1f MB), %.1f MB kept in %s", len(doomed),
                     removed_bytes / 1e6, total / 1e6, self.root)
        return {"removed_files": len(doomed), "removed_bytes": removed_bytes, "total_bytes": total}


__all__ = ["Evidence", "RetentionPolicy", "EvidenceStore", "default_evidence_dir", "RETENTION_ORDER"]
