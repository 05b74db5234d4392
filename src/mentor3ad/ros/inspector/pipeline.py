"""What the inspector does with synchronized message sets, without DDS: convert, then judge as one batch.

:class:`InspectionPipeline` is used by ``inspector_node``'s worker and by ``mentor3ad bench`` (which
times the same calls), so there is one convert path:

1. :meth:`convert`: messages -> (rgb, xyz) through the input mode (:mod:`mentor3ad.io.inputs`), with
   cv_bridge / sensor_msgs_py for what only they read (:mod:`mentor3ad.ros.bridges`);
2. :meth:`judge`: a list of message sets -> one (result, rgb) each. The sets that convert are judged in
   one :meth:`Detector.predict_batch <mentor3ad.model.detector.Detector.predict_batch>` call (threshold
   override passed to the core); an :class:`~mentor3ad.errors.InputError` becomes ``ERROR: bad input:
   ...`` for its own set only (a batch the detector refuses is judged set by set), a missing model
   ``ERROR: <why>``; anything else propagates (the node answers the batch with an internal error).
   Each converted set is first compared with the model's training data (``watch``,
   :class:`~mentor3ad.model.input_profile.InputWatch`: WARN kinds counted and logged once, an ERROR kind
   such as depth in the wrong units answers ``ERROR: input unlike the model's training data: ...``).

The output messages are built by the outputs (:mod:`mentor3ad.ros.inspector.outputs`).
"""
from __future__ import annotations

import logging
from typing import Any, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ...errors import InputError
from ...io.inputs import DEFAULT_CHECKS, InputChecks, InputMode
from ...model.input_profile import InputWatch
from ...types import InspectionResult
from .. import bridges

Judged = Tuple[InspectionResult, Optional[np.ndarray]]  # (result, rgb (H, W, 3) uint8 or None)


class InspectionPipeline:
    """Per-pair processing of the inspector (see module docstring)."""

    def __init__(self, mode: InputMode, min_valid_points: int = 16, checks: InputChecks = DEFAULT_CHECKS):
        self.mode = mode
        self.min_valid_points = int(min_valid_points)
        self.checks = checks  # frame agreement and working volume (mentor3ad.io.inputs.InputChecks)
        self.watch = InputWatch(logging.getLogger(__name__).warning)

    def convert(self, messages: Mapping[str, Any]) -> Tuple[np.ndarray, np.ndarray]:
        """{key: message} -> (rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m); InputError naming the problem.
        Encodings only cv_bridge / sensor_msgs_py read are converted by them (:mod:`mentor3ad.ros.bridges`)."""
        return self.mode.convert(bridges.normalize(messages), self.min_valid_points, self.checks)

    def judge(self, detector: Any, message_sets: Sequence[Mapping[str, Any]], threshold: Optional[float] = None,
              model_error: str = "no model loaded") -> List[Judged]:
        """-> [(result, rgb or None)], one per message set, in order. ``detector`` None: ERROR ``model_error``."""
        judged: List[Optional[Judged]] = [None] * len(message_sets)
        converted = {}  # index -> (rgb, xyz)
        for index, messages in enumerate(message_sets):
            try:
                converted[index] = self.convert(messages)
            except InputError as exc:
                judged[index] = (InspectionResult.error(f"bad input: {exc}"), None)
        if detector is None:
            for index, (rgb, _) in converted.items():
                judged[index] = (InspectionResult.error(model_error), rgb)
            return judged
        for index in list(converted):
            refusal = self.watch.check(detector, *converted[index])
            if refusal:
                judged[index] = (InspectionResult.error(refusal, model_id=detector.model_id), converted.pop(index)[0])
        indices = list(converted)
        try:
            results = detector.predict_batch([converted[i] for i in indices], threshold) if indices else []
        except InputError as exc:
            if len(indices) != 1:  # which set was refused: judge each on its own
                results = [self._judge_one(detector, *converted[i], threshold) for i in indices]
            else:
                results = [InspectionResult.error(f"bad input: {exc}", model_id=detector.model_id)]
        for index, result in zip(indices, results):
            judged[index] = (result, converted[index][0])
        return judged

    @staticmethod
    def _judge_one(detector: Any, rgb: np.ndarray, xyz: np.ndarray, threshold: Optional[float]) -> InspectionResult:
        try:
            return detector.predict_batch([(rgb, xyz)], threshold)[0]
        except InputError as exc:
            return InspectionResult.error(f"bad input: {exc}", model_id=detector.model_id)


__all__ = ["InspectionPipeline", "Judged"]
