"""Plain data types shared by the data tools, the model and the ROS adapters (no ROS, no torch)."""
from __future__ import annotations

from dataclasses import dataclass, field
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
    peak_score: maximum anomaly score inside the region.
    """

    bbox: Tuple[int, int, int, int]
    area_px: int
    area_mm2: float
    centroid_xyz: Tuple[float, float, float]
    peak_score: float


@dataclass
class Prediction:
    """Detector output for one sample.

    score: image anomaly score (max of ``anomaly_map``).
    anomaly_map: (H, W) float32 at the input resolution.
    threshold: the decision threshold the verdict used.
    is_anomalous: score > threshold (FAIL).
    regions: defect regions above the threshold, largest first.
    """

    score: float
    anomaly_map: np.ndarray
    threshold: float
    is_anomalous: bool
    regions: List[Region] = field(default_factory=list)
