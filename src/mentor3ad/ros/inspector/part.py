"""A part on its way through the inspector: :class:`Pair` (an input set waiting to be judged) and
:class:`JudgedPart` (the answer, as every output receives it)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Dict, Mapping, Optional

import numpy as np

from ...types import InspectionResult


@dataclass
class Pair:
    """One input set of a part: ``messages`` {topic key: message} ("image", and "points" or "depth" +
    "camera_info"; only "image" for an image whose 3D data never came), ``received``: time.monotonic() when
    the set was complete (latency is measured from it). ``part_id``: the part's identity when an output
    knows it (set in :meth:`Output.observe`, e.g. from an action goal); it travels into the result.
    ``requested``: an output claimed the set for a request (an ``~/inspect`` goal); with ``trigger_mode:
    request`` only requested sets are judged."""

    messages: Dict[str, Any] = field(default_factory=dict)
    received: float = 0.0
    part_id: str = ""
    requested: bool = False

    @property
    def header(self) -> Any:
        """The input image's std_msgs/Header (stamp and frame_id of the part)."""
        return self.messages["image"].header


@dataclass(frozen=True)
class JudgedPart:
    """One answered part: what every output receives, exactly once per part.

    result: the InspectionResult with its transport fields set: latency_ms (set to receive-to-answer),
      model_id, part_id; ``anomaly_map`` (H, W) float32 at the input resolution for PASS/FAIL, else None.
    header: the input image's std_msgs/Header (stamp, frame_id): the part's identity on the wire.
    messages: {topic key: message} as received (see :class:`Pair`).
    rgb: (H, W, 3) uint8 image as judged; None when the input could not be converted (bad input,
      SKIPPED, a lone image).
    header_3d: header of the 3D message (cloud or depth image: the frame of ``Region.centroid_xyz``);
      None for a lone image.
    received: time.monotonic() when the input set was complete.
    """

    result: InspectionResult
    header: Any
    messages: Mapping[str, Any]
    rgb: Optional[np.ndarray] = None
    header_3d: Any = None
    received: float = 0.0

    @property
    def part_id(self) -> str:
        return self.result.part_id

    @property
    def latency_ms(self) -> float:
        return self.result.latency_ms

    @property
    def is_decision(self) -> bool:
        """PASS or FAIL (the anomaly map exists)."""
        return self.result.verdict.is_decision


__all__ = ["Pair", "JudgedPart"]
