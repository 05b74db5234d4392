"""Plain data types shared by the data tools, the model and every transport (numpy only: no ROS, no torch).

* :class:`Sample`: one RGB + organized point cloud observation (with ground truth when known).
* :class:`Region`: a defect region of an anomaly map, measured on the cloud.
* :class:`Verdict` and :class:`InspectionResult`: the answer for one part. The detector produces it
  (:meth:`mentor3ad.model.detector.Detector.predict`), nodes add transport fields (stamp, latency) and
  every transport encodes and decodes exactly this type (:mod:`mentor3ad.ros.result_codec`).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from enum import Enum
from typing import List, Optional, Tuple

import numpy as np


@dataclass
class Sample:
    """One RGB + organized point cloud observation of a part.

    rgb:   (H, W, 3) uint8, RGB channel order.
    xyz:   (H, W, 3) float32, metres, pixel-aligned with ``rgb``; invalid points are 0 or NaN.
    mask:  (H, W) uint8 ground truth, 1 = defective pixel; None when unknown.
    label: 0 good, 1 anomalous, None unknown.
    defect: defect type ("good" for normal parts).
    name:  identifier unique within its dataset, e.g. "test/bent/000".
    source: file the sample came from (used to key feature caches); None for in-memory samples.
    stamp_ns: acquisition time in nanoseconds when known (bags, live data).
    """

    rgb: np.ndarray
    xyz: np.ndarray
    mask: Optional[np.ndarray] = None
    label: Optional[int] = None
    defect: str = "good"
    name: str = ""
    source: Optional[str] = None
    stamp_ns: Optional[int] = None


@dataclass
class Region:
    """A connected region of the anomaly map above the threshold.

    bbox: (x_min, y_min, x_max, y_max) in input pixels, inclusive.
    area_px: number of pixels.
    area_mm2: surface area in mm^2 measured on the point cloud (sum of valid pixel footprints).
    centroid_xyz: mean 3D position (metres, cloud frame) of the region's valid points; NaN if none.
    extent_xyz: size (metres) of the axis-aligned box around the region's valid points; NaN if none.
    peak_score: maximum anomaly score inside the region.
    """

    bbox: Tuple[int, int, int, int]
    area_px: int
    area_mm2: float
    centroid_xyz: Tuple[float, float, float]
    peak_score: float
    extent_xyz: Tuple[float, float, float] = (math.nan, math.nan, math.nan)


class Verdict(str, Enum):
    """PASS (no defect), FAIL (defect found), ERROR (no decision possible: reason given), SKIPPED (not
    inspected on purpose: reason given)."""

    PASS = "PASS"
    FAIL = "FAIL"
    ERROR = "ERROR"
    SKIPPED = "SKIPPED"

    @property
    def is_decision(self) -> bool:
        """True for PASS and FAIL (a score and a threshold exist)."""
        return self in (Verdict.PASS, Verdict.FAIL)

    def __str__(self) -> str:
        return self.value


@dataclass
class InspectionResult:
    """The answer for one part.

    verdict: :class:`Verdict`; reason: why ERROR / SKIPPED ("" otherwise).
    score: image anomaly score (max of ``anomaly_map``); NaN when not computed.
    threshold: the decision threshold used; NaN when not computed.
    regions: defect regions above the threshold, largest first (FAIL only).
    anomaly_map: (H, W) float32 at the input resolution, or None (ERROR/SKIPPED, decoded messages).
    model_id: identity of the model that decided ("" when none).
    stamp_ns / frame_id: the input image's header, when the part came through a transport.
    latency_ms: receive-to-publish time of a node, NaN elsewhere.
    part_id: the part's identity when a transport knows it (e.g. an action goal), "" otherwise.
    """

    verdict: Verdict
    score: float = math.nan
    threshold: float = math.nan
    reason: str = ""
    regions: List[Region] = field(default_factory=list)
    anomaly_map: Optional[np.ndarray] = None
    model_id: str = ""
    stamp_ns: Optional[int] = None
    frame_id: str = ""
    latency_ms: float = math.nan
    part_id: str = ""

    def __post_init__(self) -> None:
        self.verdict = Verdict(self.verdict)

    @property
    def is_anomalous(self) -> bool:
        """True when the part FAILed (a defect was found)."""
        return self.verdict is Verdict.FAIL

    @classmethod
    def error(cls, reason: str, **fields) -> "InspectionResult":
        return cls(Verdict.ERROR, reason=reason, **fields)

    @classmethod
    def skipped(cls, reason: str, **fields) -> "InspectionResult":
        return cls(Verdict.SKIPPED, reason=reason, **fields)

    def replace(self, **changes) -> "InspectionResult":
        """A copy with ``changes`` applied (e.g. transport fields)."""
        return dataclasses.replace(self, **changes)


__all__ = ["Sample", "Region", "Verdict", "InspectionResult"]
