"""The frames a benchmark runs: test parts of the synthetic cell as the bytes a subscriber receives."""
from __future__ import annotations

from typing import Any, Dict, List

from ...ros import messages

# good parts alternating with defect types
FRAME_DEFECTS = ("good", "bulge", "good", "scratch", "good", "paint", "good", "impact")


def bench_frames(count: int, resolution: int) -> list:
    """``count`` distinct test samples of the cell (seed 0, as ``mentor3ad demo`` generates them)."""
    from ...io.datasets.synthetic import cell_sample

    frames, per_kind = [], {}
    for i in range(count):
        defect = FRAME_DEFECTS[i % len(FRAME_DEFECTS)]
        index = per_kind.get(defect, 0)
        per_kind[defect] = index + 1
        frames.append(cell_sample("test", defect, index, (resolution, resolution)))
    return frames


class SerializedFrame:
    """One frame as serialized ROS messages (image, points, depth, camera_info), built with the input
    modes' writers (:mod:`mentor3ad.io.inputs`) and the package's message builder.

    ``messages()`` deserializes a fresh set each call (what DDS hands a subscriber)."""

    KEYS = ("image", "points", "depth", "camera_info")

    def __init__(self, sample, stamp_ns: int):
        from ...io import msgconv
        from ...io.datasets.synthetic import camera_matrix
        from ...io.inputs import INPUT_MODES

        height, width = sample.xyz.shape[:2]
        K = camera_matrix((height, width))
        self.fields: Dict[str, Any] = {"image": msgconv.rgb_to_image_fields(sample.rgb, "rgb8")}
        for mode in INPUT_MODES.values():
            self.fields.update(mode.to_fields(sample.xyz, K, "32FC1"))
        self.stamp_ns = stamp_ns
        self.ros = messages.available()
        if self.ros:
            self.serialized = {k: messages.serialize(m) for k, m in self.build_ros(stamp_ns).items()}

    def build_ros(self, stamp_ns: int) -> Dict[str, Any]:
        """rclpy messages of this frame with one header (stamp_ns, frame 'camera')."""
        return messages.build_messages({k: self.fields[k] for k in self.KEYS}, stamp_ns, "camera")

    def messages(self) -> Dict[str, Any]:
        if not self.ros:
            from types import SimpleNamespace

            return {k: SimpleNamespace(**self.fields[k]) for k in self.KEYS}
        from ...io.inputs import TOPICS

        return {k: messages.deserialize(data, TOPICS[k].msg_type) for k, data in self.serialized.items()}


__all__: List[str] = ["FRAME_DEFECTS", "bench_frames", "SerializedFrame"]
