"""What a model read from a file must show before it serves (called by :meth:`Detector.load`).

* :func:`check_plausible`: its threshold within the plausible range of its calibration scores and named by its
  record, its input profile well-formed, its part-level cap finite where its maps need one (else ModelLoadError);
* :func:`warn_precisions`: one WARNING per arithmetic (heads, backbones) other than the one its threshold was
  calibrated with (scores shift; the inspector shows the load's warnings).
"""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np

from ..errors import ModelLoadError
from .threshold_bounds import plausible_range, threshold_problem

LOG = logging.getLogger("mentor3ad.model.detector")  # the load's messages keep the logger they always had
LEVEL_CAP_KEY = "part_level_cap"  # training_info: the largest part level a map may subtract (calibrated)


def warn_precisions(path: Path, detector, info: dict, stored_feature_precision: str) -> None:
    """One WARNING per arithmetic (heads, backbones) that differs from the one the threshold was calibrated with
    (absent in the file: fp32 heads; backbones as its stored ``features.precision``, fp32 for "auto")."""
    calibrated = str(info.get("head_precision", "fp32"))
    if calibrated != detector.heads.precision:
        LOG.warning("%s: its threshold was calibrated with the heads in %s, but on %s they score in %s "
                    "(model.head_precision %s): image scores may differ by about 1-2 %%; re-calibrate it here "
                    "(mentor3ad calibrate) for a threshold of this arithmetic", path, calibrated, detector.device,
                    detector.heads.precision, detector.config.model.head_precision)
    stored = "fp32" if stored_feature_precision == "auto" else stored_feature_precision
    calibrated = str(info.get("feature_precision", stored))
    if calibrated != detector.feature_precision:
        LOG.warning("%s: its threshold was calibrated with the backbones in %s, but on %s they run in %s "
                    "(features.precision %s): image scores may differ by up to about 15 %% (measured on the cable "
                    "gland); re-calibrate it here (mentor3ad calibrate) for a threshold of this arithmetic", path,
                    calibrated, detector.device, detector.feature_precision, detector.config.features.precision)


def check_plausible(path: Path, detector, stored_info) -> None:
    """A loaded model's threshold within the plausible range of its calibration scores
    (:mod:`mentor3ad.model.threshold_bounds`; without scores a warning), its threshold record naming its
    threshold, its input profile well-formed, its part-level cap a finite number >= 0 when its maps are
    relative to the part level; ModelLoadError naming the file otherwise."""
    stored = stored_info.get("threshold") if isinstance(stored_info, dict) else None
    if isinstance(stored, dict) and stored.get("value") != detector.threshold:
        raise ModelLoadError(f"{path}: the threshold {detector.threshold:.6g} is not the one its threshold record "
                             f"names ({stored.get('value')!r}): edited after calibration; refusing the model")
    record = detector.threshold_record
    problem = threshold_problem(detector.threshold, record, "the model's threshold")
    if problem:
        raise ModelLoadError(f"{path}: {problem}; refusing the model")
    if plausible_range(record) is None:
        LOG.warning("%s: its threshold %.6g cannot be checked against calibration scores (its record, set by %s, "
                    "has none); re-calibrate it (mentor3ad calibrate) to store them", path, detector.threshold,
                    record.set_by if record is not None else "nobody")
    try:
        detector.input_profile
        cap = detector.level_cap
    except ModelLoadError as err:
        raise ModelLoadError(f"{path}: {err}") from None
    if detector.config.model.level_percentile > 0 and not np.isfinite(cap):
        raise ModelLoadError(f"{path}: its maps are relative to the part level (model.level_percentile "
                             f"{detector.config.model.level_percentile:g}) but it has no calibrated cap "
                             f"(training_info {LEVEL_CAP_KEY}): a whole-part anomaly could hide; re-train it")


__all__ = ["check_plausible", "warn_precisions"]
