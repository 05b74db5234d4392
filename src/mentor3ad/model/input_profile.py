"""What a model was trained on, as inputs: :class:`InputProfile`, and the check of new inputs against it.

A model's features are learnt at its training data's resolution, depth quantisation and distance; inputs
that differ can move every score (a 16UC1 depth image in millimetres made every part FAIL with a model
trained on float depth; a part at another size let a dent PASS). The profile is recorded at training
(:func:`mentor3ad.model.training.train_detector`: ``training_info["input_profile"]``, so the model file's
content digest covers it), exposed as ``Detector.input_profile`` (None for models trained before it: no
checks), and compared with each observation by :meth:`InputProfile.check`.

Profile (``to_dict``)::

    {"version": 1, "samples": 6, "sizes": [[224, 224]], "z_lattice_share": 0.008,
     "z_m": [0.331, 0.346, 0.359], "xyz_range_m": [[-0.06, 0.06], [-0.06, 0.06], [0.331, 0.359]],
     "valid_points_min": 3890}

* sizes: the distinct (H, W) of the training observations (at most :data:`MAX_SIZES`);
* z_lattice_share: the share of valid z values within 10 um of a whole millimetre (depth quantised to
  1 mm, e.g. a 16UC1 image in millimetres: ~1; float depth: ~0.02);
* z_m: [1st percentile, median, 99th percentile] of the valid z (metres), over all training points;
* xyz_range_m: per axis the [1st, 99th] percentile range of the valid points (a working volume that
  does not contain it makes the model's own training parts invalid);
* valid_points_min: the fewest valid points of a training observation (a larger ``min_valid_points``
  would make such a part ERROR).

Checks (:data:`SEVERITY` is the one table of severities; the inspector shows WARN kinds in /diagnostics
and answers an ERROR kind with an ERROR result naming it):

============================  ========  =====================================================================
kind                          severity  when
============================  ========  =====================================================================
``size``                      WARN      (H, W) is none of the training sizes
``aspect_ratio``              WARN      W / H differs by more than 2 % from every training size's
``depth_quantisation``        WARN      > 90 % of z on the 1 mm lattice while the model saw < 50 % (or the reverse),
                                        the points spaced at least 1 mm apart (steps finer than the spacing)
``depth_steps``               ERROR     the same 1 mm lattice with points spaced closer than 1 mm: the steps are
                                        the surface's shape. Measured on cable_gland (float-trained default model,
                                        0.27 mm spacing): good parts scored 8.4-11.7 instead of 2.8-3.4, I-AUROC
                                        0.47 (uniform +-0.5 mm noise: 0.65); 0.1 mm steps changed nothing (0.986)
``distance``                  WARN      the median z is outside [z_1 % / 1.5, z_99 % x 1.5] of training
``z_units``                   ERROR     the median z is outside [z_1 % / 10, z_99 % x 10]: wrong units
                                        (millimetres given as metres, or the reverse); no verdict can mean anything
============================  ========  =====================================================================
"""
from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass
from typing import Any, Dict, List, NamedTuple, Optional, Sequence, Tuple

import numpy as np

from ..errors import ModelLoadError
from ..geometry.observation import pixel_pitch_m, valid_point_mask

PROFILE_VERSION = 1
PROFILE_KEY = "input_profile"
MAX_SIZES = 8
LATTICE_TOLERANCE_MM = 0.01
QUANTISED_SHARE, UNQUANTISED_SHARE = 0.9, 0.5
MIN_POINTS_FOR_QUANTISATION = 200
ASPECT_TOLERANCE = 0.02
DISTANCE_FACTOR, UNITS_FACTOR = 1.5, 10.0
SAMPLE_POINTS = 65536  # z values looked at per observation (an evenly strided subset of larger ones)
SEVERITY = {"size": "WARN", "aspect_ratio": "WARN", "depth_quantisation": "WARN", "depth_steps": "ERROR",
            "distance": "WARN", "z_units": "ERROR"}
DEPTH_STEP_M = 0.001


class Mismatch(NamedTuple):
    """One way an observation differs from the training data: kind (a :data:`SEVERITY` key), severity
    ("WARN" | "ERROR"), message (one line naming both values)."""

    kind: str
    severity: str
    message: str


def _strided(xyz: np.ndarray) -> np.ndarray:
    """An evenly strided subset of at most about :data:`SAMPLE_POINTS` of the (H, W, 3) points, (N, 3) float64,
    valid (:func:`~mentor3ad.geometry.observation.valid_point_mask`) with z > 0."""
    height, width = xyz.shape[:2]
    stride = max(1, int(math.ceil(math.sqrt(height * width / SAMPLE_POINTS))))
    points = np.asarray(xyz[::stride, ::stride], dtype=np.float32)
    points = points[valid_point_mask(points)].astype(np.float64)
    return points[points[:, 2] > 0]


def _valid_z(xyz: np.ndarray) -> np.ndarray:
    """The z (metres) of :func:`_strided`'s points."""
    return _strided(xyz)[:, 2]


def lattice_share(z: np.ndarray) -> float:
    """Share of ``z`` (metres) within :data:`LATTICE_TOLERANCE_MM` of a whole millimetre (NaN for none)."""
    if z.size == 0:
        return math.nan
    millimetres = z * 1000.0
    return float(np.mean(np.abs(millimetres - np.round(millimetres)) <= LATTICE_TOLERANCE_MM))


def _size(shape: Sequence[int]) -> str:
    return f"{int(shape[1])}x{int(shape[0])}"


@dataclass(frozen=True)
class InputProfile:
    """The training observations' sizes, depth quantisation and geometry (module docstring)."""

    samples: int
    sizes: Tuple[Tuple[int, int], ...]
    z_lattice_share: float
    z_m: Tuple[float, float, float]
    xyz_range_m: Tuple[Tuple[float, float], ...]
    valid_points_min: int

    @classmethod
    def of(cls, observations: Sequence[Any]) -> "InputProfile":
        """The profile of training observations: objects with ``rgb`` (H, W, 3) and ``xyz`` (H, W, 3) metres
        (e.g. :class:`~mentor3ad.types.Sample`)."""
        sizes: List[Tuple[int, int]] = []
        zs, lows, highs, counts = [], [], [], []
        for observation in observations:
            xyz = np.asarray(observation.xyz)
            size = (int(xyz.shape[0]), int(xyz.shape[1]))
            if size not in sizes and len(sizes) < MAX_SIZES:
                sizes.append(size)
            with np.errstate(invalid="ignore"):
                counts.append(int((valid_point_mask(xyz) & (xyz[..., 2] > 0)).sum()))
            points = _strided(xyz)
            if len(points):
                zs.append(points[:, 2])
                lows.append(np.percentile(points, 1, axis=0))
                highs.append(np.percentile(points, 99, axis=0))
        if not zs:
            raise ValueError("an input profile needs observations with valid 3D points")
        z = np.concatenate(zs)
        low, high = np.min(lows, axis=0), np.max(highs, axis=0)
        return cls(samples=len(counts), sizes=tuple(sizes), z_lattice_share=round(lattice_share(z), 4),
                   z_m=tuple(float(f"{v:.6g}") for v in np.percentile(z, [1, 50, 99])),
                   xyz_range_m=tuple((float(f"{lo:.6g}"), float(f"{hi:.6g}")) for lo, hi in zip(low, high)),
                   valid_points_min=min(counts))

    def to_dict(self) -> Dict[str, Any]:
        return {"version": PROFILE_VERSION, "samples": self.samples, "sizes": [list(s) for s in self.sizes],
                "z_lattice_share": self.z_lattice_share, "z_m": list(self.z_m),
                "xyz_range_m": [list(r) for r in self.xyz_range_m], "valid_points_min": self.valid_points_min}

    @classmethod
    def from_dict(cls, data: Dict[str, Any]) -> "InputProfile":
        """A stored profile, checked (ValueError naming the problem)."""
        try:
            if data.get("version") != PROFILE_VERSION:
                raise ValueError(f"version {data.get('version')!r} (expected {PROFILE_VERSION})")
            sizes = tuple((int(h), int(w)) for h, w in data["sizes"])
            z_m = tuple(float(v) for v in data["z_m"])
            ranges = tuple((float(lo), float(hi)) for lo, hi in data["xyz_range_m"])
            profile = cls(int(data["samples"]), sizes, float(data["z_lattice_share"]), z_m, ranges,
                          int(data["valid_points_min"]))
        except (KeyError, TypeError, ValueError, AttributeError) as err:
            raise ValueError(f"malformed input profile: {err}") from None
        numbers = [profile.z_lattice_share, *z_m, *(v for r in ranges for v in r)]
        if (not sizes or len(sizes) > MAX_SIZES or min(min(s) for s in sizes) < 2 or len(z_m) != 3 or len(ranges) != 3
                or not all(math.isfinite(v) for v in numbers) or not 0 < z_m[0] <= z_m[1] <= z_m[2]
                or any(lo > hi for lo, hi in ranges) or profile.valid_points_min < 1 or profile.samples < 1):
            raise ValueError("malformed input profile: sizes, z range or point ranges out of bounds")
        return profile

    @classmethod
    def stored(cls, training_info: Dict[str, Any]) -> Optional["InputProfile"]:
        """The profile in a model's ``training_info`` (None when the model has none); ModelLoadError when it
        is malformed."""
        data = training_info.get(PROFILE_KEY) if isinstance(training_info, dict) else None
        if data is None:
            return None
        if not isinstance(data, dict):
            raise ModelLoadError(f"malformed input profile: a {type(data).__name__}, not a mapping")
        try:
            return cls.from_dict(data)
        except ValueError as err:
            raise ModelLoadError(str(err)) from None

    def describe(self) -> str:
        """One line: sizes, z range, quantisation."""
        return (f"{', '.join(_size(s) for s in self.sizes)}, z {self.z_m[0]:.3g}-{self.z_m[2]:.3g} m, "
                f"{self.z_lattice_share:.0%} of z on a 1 mm lattice")

    def check(self, rgb: np.ndarray, xyz: np.ndarray) -> List[Mismatch]:
        """How the observation rgb (H, W, 3), xyz (H, W, 3) metres differs from the training data
        (empty when it does not): one :class:`Mismatch` per kind, severities from :data:`SEVERITY`."""
        found: List[Tuple[str, str]] = []
        shape = tuple(int(v) for v in np.shape(xyz)[:2])
        trained = ", ".join(_size(s) for s in self.sizes)
        if shape not in self.sizes:
            found.append(("size", f"input size {_size(shape)} differs from the training size(s) {trained}"))
        ratio = shape[1] / shape[0]
        if all(abs(math.log(ratio * h / w)) > math.log1p(ASPECT_TOLERANCE) for h, w in self.sizes):
            found.append(("aspect_ratio", f"input aspect ratio {ratio:.3g} ({_size(shape)}) differs from the "
                                          f"training aspect ratio(s) of {trained}"))
        z = _valid_z(np.asarray(xyz))
        if z.size:
            found += self._depth_mismatches(z, xyz)
        return [Mismatch(kind, SEVERITY[kind], message) for kind, message in found]

    def _depth_mismatches(self, z: np.ndarray, xyz: np.ndarray) -> List[Tuple[str, str]]:
        found = []
        median = float(np.median(z))
        low, high = self.z_m[0], self.z_m[2]
        trained = f"[{low:.3g}, {high:.3g}] m"
        if not low / UNITS_FACTOR <= median <= high * UNITS_FACTOR:
            found.append(("z_units", f"median depth {median:.4g} m is {max(median / high, low / median):.0f}x "
                                     f"outside the training depths {trained}: wrong units (millimetres given as "
                                     f"metres, or the reverse)?"))
        elif not low / DISTANCE_FACTOR <= median <= high * DISTANCE_FACTOR:
            found.append(("distance", f"median depth {median:.3g} m is far from the training depths {trained} "
                                      f"(another working distance changes every feature's scale)"))
        if z.size >= MIN_POINTS_FOR_QUANTISATION:
            share = lattice_share(z)
            if share > QUANTISED_SHARE and self.z_lattice_share < UNQUANTISED_SHARE:
                pitch = pixel_pitch_m(xyz, valid_point_mask(xyz))
                kind, effect = (("depth_steps", f"; its points are {pitch * 1000:.2g} mm apart, so the 1 mm steps "
                                                "become the surface's shape and no verdict means anything: publish "
                                                "depth in finer units (e.g. 0.1 mm) or train on this sensor's "
                                                "data") if pitch < DEPTH_STEP_M else ("depth_quantisation", ""))
                found.append((kind, f"depth quantised to 1 mm ({share:.0%} of z on a 1 mm lattice, e.g. 16UC1 "
                                    f"millimetres) while the model was trained on unquantised depth "
                                    f"({self.z_lattice_share:.0%}){effect}"))
            elif share < UNQUANTISED_SHARE and self.z_lattice_share > QUANTISED_SHARE:
                found.append(("depth_quantisation", f"unquantised depth ({share:.0%} of z on a 1 mm lattice) while "
                                                    f"the model was trained on 1 mm depth "
                                                    f"({self.z_lattice_share:.0%})"))
        return found


class InputWatch:
    """Checks observations against the serving model's profile for a server (the inspector): counts each
    kind, logs each kind once per model (``log(text)``), and tells which observations get an ERROR; the
    :meth:`summary` level covers the kinds seen within the last ``recent_s`` seconds. Thread-safe (checked
    on a worker thread, read from another)."""

    def __init__(self, log=None, recent_s: float = 60.0) -> None:
        self._log = log
        self.recent_s = float(recent_s)
        self._lock = threading.Lock()
        self.counts: Dict[str, int] = {}
        self.last: Dict[str, Tuple[str, float]] = {}  # kind -> (message, time.monotonic() seen)
        self._logged: Dict[str, str] = {}  # kind -> model id it was logged for

    def check(self, detector: Any, rgb: np.ndarray, xyz: np.ndarray) -> Optional[str]:
        """The ERROR reason for this observation (None: judge it); WARN kinds are only counted and logged.
        ``detector``: anything with ``input_profile`` (None: no checks) and ``model_id``."""
        profile = getattr(detector, "input_profile", None)
        if profile is None:
            return None
        mismatches = profile.check(rgb, xyz)
        model_id = str(getattr(detector, "model_id", ""))
        error = None
        for mismatch in mismatches:
            with self._lock:
                self.counts[mismatch.kind] = self.counts.get(mismatch.kind, 0) + 1
                self.last[mismatch.kind] = (mismatch.message, time.monotonic())
                first = self._logged.get(mismatch.kind) != model_id
                self._logged[mismatch.kind] = model_id
            if first and self._log is not None:
                self._log(f"input unlike model {model_id}'s training data ({mismatch.severity}, {mismatch.kind}): "
                          f"{mismatch.message}; counted as input_mismatch_{mismatch.kind}, logged once per model")
            if mismatch.severity == "ERROR" and error is None:
                error = f"input unlike the model's training data: {mismatch.message}"
        return error

    def summary(self) -> Tuple[str, str, Dict[str, int]]:
        """(level "OK" | "WARN" | "ERROR": the worst severity of the kinds seen within ``recent_s``, one line
        naming the latest message of each of them, the counts of every kind since start)."""
        now = time.monotonic()
        with self._lock:
            counts = dict(self.counts)
            recent = {kind: message for kind, (message, seen) in self.last.items() if now - seen <= self.recent_s}
        if not recent:
            return "OK", "", counts
        level = "ERROR" if any(SEVERITY[kind] == "ERROR" for kind in recent) else "WARN"
        message = "inputs unlike the model's training data: " + "; ".join(
            f"{recent[kind]} ({counts[kind]} parts)" for kind in sorted(recent))
        return level, message, counts


__all__ = ["InputProfile", "InputWatch", "Mismatch", "SEVERITY", "PROFILE_KEY", "lattice_share"]
