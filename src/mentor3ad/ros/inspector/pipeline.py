"""What the inspector does with one synchronized message set, without DDS: convert, judge, encode.

:class:`InspectionPipeline` is used by ``inspector_node``'s worker and by ``mentor3ad bench`` (which
times the same calls), so there is one convert-and-publish path:

1. :meth:`convert`: messages -> (rgb, xyz) through the input mode (:mod:`mentor3ad.io.inputs`), with
   cv_bridge / sensor_msgs_py for what only they read (:mod:`mentor3ad.ros.bridges`);
2. :meth:`judge`: the detector's :class:`~mentor3ad.types.InspectionResult` (threshold override passed
   to the core); an :class:`~mentor3ad.errors.InputError` becomes ``ERROR: bad input: ...``, a missing
   model ``ERROR: <why>``; anything else propagates (the node reports it as an internal error);
3. :meth:`result_message`, :meth:`map_message`, :meth:`overlay_message`: the output messages.
"""
from __future__ import annotations

from typing import Any, Mapping, Optional, Tuple

import numpy as np

from ..errors import InputError
from ..eval.visualize import threshold_overlay
from ..io.inputs import DEFAULT_CHECKS, InputChecks, InputMode
from ..types import InspectionResult
from . import bridges, result_codec
from .messages import image_from_array


class InspectionPipeline:
    """Per-pair processing of the inspector (see module docstring)."""

    def __init__(self, mode: InputMode, result_name: str, min_valid_points: int = 16,
                 checks: InputChecks = DEFAULT_CHECKS):
        self.mode = mode
        self.result_name = result_name
        self.min_valid_points = int(min_valid_points)
        self.checks = checks  # frame agreement and working volume (mentor3ad.io.inputs.InputChecks)

    def convert(self, messages: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        """{key: message} -> (rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m); InputError naming the problem.
        Encodings only cv_bridge / sensor_msgs_py read are converted by them (:mod:`mentor3ad.ros.bridges`)."""
        return self.mode.convert(bridges.normalize(messages), self.min_valid_points, self.checks)

    def judge(self, detector: Any, messages: Mapping[str, Any], threshold: Optional[float] = None,
              model_error: str = "no model loaded") -> Tuple[InspectionResult, Optional[np.ndarray]]:
        """-> (result, rgb or None). ``detector`` None: ERROR ``model_error``."""
        try:
            rgb, xyz = self.convert(messages)
        except InputError as exc:
            return InspectionResult.error(f"bad input: {exc}"), None
        if detector is None:
            return InspectionResult.error(model_error), rgb
        try:
            return detector.predict(rgb, xyz, threshold), rgb
        except InputError as exc:
            return InspectionResult.error(f"bad input: {exc}", model_id=detector.model_id), rgb

    def result_message(self, result: InspectionResult, header: Any):
        return result_codec.encode(result, header, self.result_name)

    @staticmethod
    def map_message(result: InspectionResult, header: Any):
        """~/anomaly_map: 32FC1 at the input resolution."""
        return image_from_array(header, np.asarray(result.anomaly_map, np.float32), "32FC1")

    @staticmethod
    def overlay_message(result: InspectionResult, rgb: np.ndarray, header: Any):
        """~/overlay: bgr8 heat map (threshold at mid-scale) over the image, regions boxed."""
        overlay = threshold_overlay(rgb, result.anomaly_map, result.threshold, result.regions)
        return image_from_array(header, np.ascontiguousarray(overlay[..., ::-1]), "bgr8")


__all__ = ["InspectionPipeline"]
