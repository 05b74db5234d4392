"""Input modes: how the 3D half of an observation arrives. One :class:`InputMode` entry per sensor kind.

Every place that deals with the sensor goes through this registry: the inspector node subscribes to
``mode.topics`` and converts with :meth:`InputMode.convert`; rosbag2 recordings are written with
:meth:`InputMode.to_fields` and read with the same conversion; node parameters, launch arguments and
CLI choices list :data:`INPUT_MODES`. Built in:

* ``points``: an organized ``sensor_msgs/PointCloud2`` (FLOAT32 x/y/z, pixel-aligned with the image);
* ``depth``: a registered depth ``sensor_msgs/Image`` (16UC1 mm / 32FC1 m) + its ``sensor_msgs/CameraInfo``,
  back-projected as depth_image_proc does.

A new sensor is one entry here: give its topics (message type, recorded and node-relative names) and
two functions, messages -> (H, W, 3) float32 metres and (H, W, 3) metres -> message field dicts; the
synchronizer, bags, parameters and CLI pick it up.

Topic names: :data:`TOPICS` holds every topic once, with the absolute name used in recordings
(``/camera/points``: what ``mentor3ad to-bag`` writes and the trainer/evaluator read by default) and
the relative name the inspector subscribes to (``points``: remap it to the driver's topic).

Plausibility (:class:`InputChecks`, applied by :meth:`InputMode.convert` in the node and in recordings
alike, so training sees what inspection sees). Decisions:

* The 3D data is in the sensor's optical frame (z forward, metres), as a pixel-aligned organized cloud
  or a registered depth image always is. A point with z <= 0 (zero or negative depth, behind the
  camera) is invalid in every mode and with any volume: no camera measures it.
* :class:`WorkingVolume` (default x, y in [-10, 10] m, z in (0, 10] m): points outside are invalid
  (set to NaN, like a dropout), so a few stray returns do not reach the model; when fewer than
  ``min_valid_points`` remain the pair is refused with "N points outside the working volume ...",
  e.g. a cloud 1e6 m away (wrong units, garbage data). ``volume=None`` keeps only the z > 0 rule.
* Frames: when the image's ``header.frame_id`` and the cloud's / depth image's are both set and differ,
  the pair is refused ("image frame 'A' differs from cloud frame 'B'"): pixel alignment is only
  guaranteed in one frame. ``require_same_frame=False`` allows it (a calibrated, registered pair
  published under two names); an empty frame_id is not checked.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError
from ..geometry.observation import check_observation, valid_point_mask
from . import depth as depth_io
from . import msgconv


@dataclass(frozen=True)
class Topic:
    """One input or ground-truth topic.

    key: name used in code and parameters (``<key>_topic``); msg_type: ROS type name; recorded: the
    absolute name in recordings; relative: the name the inspector subscribes to (remappable);
    kind: the :class:`mentor3ad.io.msgconv.MessageFactory` builder ("image", "cloud", "camera_info",
    "string").
    """

    key: str
    msg_type: str
    recorded: str
    relative: str
    kind: str
    description: str


TOPICS: Dict[str, Topic] = {t.key: t for t in (
    Topic("image", "sensor_msgs/msg/Image", "/camera/image", "image", "image",
          "colour image (rgb8, bgr8, rgba8, bgra8, mono8, mono16)"),
    Topic("points", "sensor_msgs/msg/PointCloud2", "/camera/points", "points", "cloud",
          "organized point cloud, FLOAT32 x/y/z, pixel-aligned with the image"),
    Topic("depth", "sensor_msgs/msg/Image", "/camera/depth", "depth", "image",
          "registered depth image (16UC1 mm or 32FC1 m)"),
    Topic("camera_info", "sensor_msgs/msg/CameraInfo", "/camera/camera_info", "camera_info", "camera_info",
          "intrinsics of the depth image"),
    Topic("mask", "sensor_msgs/msg/Image", "/camera/gt_mask", "gt_mask", "image",
          "ground-truth defect mask (mono8, 255 = defect) of labelled recordings"),
    Topic("sample_info", "std_msgs/msg/String", "/dataset/sample_info", "sample_info", "string",
          'sample name and defect type of labelled recordings (JSON {"name", "defect", "label"})'),
)}


def recorded_topics(overrides: Optional[Mapping[str, str]] = None) -> Dict[str, str]:
    """{key: absolute topic name in recordings}, defaults from :data:`TOPICS`, empty overrides ignored."""
    names = {key: topic.recorded for key, topic in TOPICS.items()}
    for key, value in (overrides or {}).items():
        if key not in names:
            raise ConfigError(f"unknown topic key {key!r} (known: {', '.join(names)})")
        if value:
            names[key] = str(value)
    return names


def _points_to_xyz(messages: Mapping[str, Any]) -> np.ndarray:
    return msgconv.cloud_to_xyz(messages["points"])


def _points_fields(xyz: np.ndarray, camera_matrix: Optional[np.ndarray], depth_encoding: str) -> Dict[str, dict]:
    cloud_xyz = np.where(valid_point_mask(xyz)[..., None], xyz, np.float32(np.nan)).astype(np.float32)
    out = {"points": msgconv.xyz_to_cloud_fields(cloud_xyz, padded=True)}  # 16-byte points, as drivers send
    if camera_matrix is not None:
        out["camera_info"] = depth_io.camera_info_fields(camera_matrix, xyz.shape[1], xyz.shape[0])
    return out


def _depth_to_xyz(messages: Mapping[str, Any]) -> np.ndarray:
    return depth_io.depth_to_xyz(messages["depth"], messages["camera_info"])


def _depth_fields(xyz: np.ndarray, camera_matrix: Optional[np.ndarray], depth_encoding: str) -> Dict[str, dict]:
    if camera_matrix is None:
        raise ConfigError("input mode 'depth' needs the camera intrinsics (a 3x3 camera matrix)")
    return {"depth": depth_io.xyz_to_depth_fields(xyz, depth_encoding),
            "camera_info": depth_io.camera_info_fields(camera_matrix, xyz.shape[1], xyz.shape[0])}


@dataclass(frozen=True)
class WorkingVolume:
    """Box in the sensor's optical frame, metres: x_min <= x <= x_max, y_min <= y <= y_max, z_min < z <= z_max."""

    x_min: float = -10.0
    x_max: float = 10.0
    y_min: float = -10.0
    y_max: float = 10.0
    z_min: float = 0.0
    z_max: float = 10.0

    def __post_init__(self):
        values = [self.x_min, self.x_max, self.y_min, self.y_max, self.z_min, self.z_max]
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in values):
            raise ConfigError(f"working volume bounds must be finite numbers, got {values}")
        if not (self.x_min < self.x_max and self.y_min < self.y_max and self.z_min < self.z_max):
            raise ConfigError(f"working volume needs min < max on every axis, got {self.describe()}")
        if self.z_min < 0:
            raise ConfigError(f"working volume z_min must be >= 0 (z <= 0 is behind the camera), got {self.z_min}")

    @classmethod
    def from_list(cls, values: Sequence[float]) -> "WorkingVolume":
        """[x_min, x_max, y_min, y_max, z_min, z_max] (a node's double-array parameter) -> WorkingVolume."""
        values = list(values)
        if len(values) != 6:
            raise ConfigError(f"working volume needs 6 values [x_min, x_max, y_min, y_max, z_min, z_max], "
                              f"got {len(values)}")
        return cls(*(float(v) for v in values))

    def contains(self, xyz: np.ndarray) -> np.ndarray:
        """(H, W) bool for (H, W, 3) points (NaN: False)."""
        x, y, z = xyz[..., 0], xyz[..., 1], xyz[..., 2]
        with np.errstate(invalid="ignore"):
            return ((x >= self.x_min) & (x <= self.x_max) & (y >= self.y_min) & (y <= self.y_max)
                    & (z > self.z_min) & (z <= self.z_max))

    def describe(self) -> str:
        return (f"x [{self.x_min:g}, {self.x_max:g}] m, y [{self.y_min:g}, {self.y_max:g}] m, "
                f"z ({self.z_min:g}, {self.z_max:g}] m")


@dataclass(frozen=True)
class InputChecks:
    """Plausibility rules of :meth:`InputMode.convert` (see the module docstring for the decisions)."""

    volume: Optional[WorkingVolume] = WorkingVolume()
    require_same_frame: bool = True


DEFAULT_CHECKS = InputChecks()


def _frame(msg: Any) -> str:
    return str(getattr(getattr(msg, "header", None), "frame_id", "") or "")


def check_frames(messages: Mapping[str, Any], keys: Sequence[str]) -> None:
    """InputError when the image's frame_id and that of a 3D message (``keys``) are both set and differ."""
    image_frame = _frame(messages["image"])
    for key in keys:
        frame = _frame(messages[key])
        if image_frame and frame and frame != image_frame:
            what = "cloud" if key == "points" else key.replace("_", " ")
            raise InputError(f"image frame '{image_frame}' differs from {what} frame '{frame}': the pair is not "
                             "pixel-aligned in one frame (require_same_frame=false allows it)")


def apply_volume(xyz: np.ndarray, volume: Optional[WorkingVolume], min_valid_points: int) -> np.ndarray:
    """xyz with points behind the camera (z <= 0) and outside ``volume`` set to NaN; InputError when fewer
    than ``min_valid_points`` valid points remain (naming what was dropped). Valid points: the rule of
    :func:`~mentor3ad.geometry.observation.valid_point_mask`, then z > 0 and inside ``volume``."""
    valid = valid_point_mask(xyz)
    with np.errstate(invalid="ignore"):
        behind = valid & ~(xyz[..., 2] > 0)
    outside = valid & ~behind & ~volume.contains(xyz) if volume is not None else np.zeros_like(valid)
    dropped = behind | outside
    remaining = int(valid.sum() - dropped.sum())
    if remaining < min_valid_points:
        if not dropped.any():
            msgconv.check_enough_valid_points(xyz, min_valid_points)
        parts = []
        if outside.any():
            example = ", ".join(f"{float(c):.4g}" for c in xyz[outside][0])
            parts.append(f"{int(outside.sum())} points outside the working volume {volume.describe()} "
                         f"(e.g. [{example}])")
        if behind.any():
            parts.append(f"{int(behind.sum())} points behind the camera (z <= 0)")
        raise InputError(f"{' and '.join(parts)}: {remaining} valid points remain of {xyz.shape[0] * xyz.shape[1]}, "
                         f"need at least {min_valid_points}")
    if dropped.any():
        xyz = xyz.copy()
        xyz[dropped] = np.nan
    return xyz


@dataclass(frozen=True)
class InputMode:
    """One way the 3D data arrives beside the image.

    topic_keys: the 3D topics paired with the image, in synchronizer order.
    constant_keys: of those, topics that change rarely (camera_info): in recordings they are paired
        with the nearest message in time, without the stamp tolerance.
    to_xyz: {key: message} -> (H, W, 3) float32 metres, invalid NaN (raises InputError).
    to_fields: (xyz (H, W, 3) metres, camera matrix (3, 3) or None, depth encoding) -> {key: fields dict}.
    needs_intrinsics: to_fields needs the camera matrix.
    """

    name: str
    description: str
    topic_keys: Tuple[str, ...]
    to_xyz: Callable[[Mapping[str, Any]], np.ndarray]
    to_fields: Callable[[np.ndarray, Optional[np.ndarray], str], Dict[str, dict]]
    constant_keys: Tuple[str, ...] = ()
    needs_intrinsics: bool = False

    @property
    def topics(self) -> Tuple[Topic, ...]:
        """The 3D topics (without the image)."""
        return tuple(TOPICS[key] for key in self.topic_keys)

    @property
    def keys(self) -> Tuple[str, ...]:
        """"image" followed by the 3D topic keys: the synchronizer's input order."""
        return ("image",) + self.topic_keys

    def convert(self, messages: Mapping[str, Any], min_valid_points: int = 1,
                checks: Optional[InputChecks] = None) -> Tuple[np.ndarray, np.ndarray]:
        """{key: message} -> (rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres, invalid NaN); InputError
        naming the problem. ``checks`` (default :data:`DEFAULT_CHECKS`): frame agreement, one observation
        (:func:`~mentor3ad.geometry.observation.check_observation`), z > 0 and the working volume (points
        outside become NaN), then at least ``min_valid_points`` valid points."""
        checks = DEFAULT_CHECKS if checks is None else checks
        if checks.require_same_frame:
            check_frames(messages, self.topic_keys)  # CameraInfo's frame too
        rgb = msgconv.image_to_rgb(messages["image"])
        xyz = self.to_xyz(messages)
        rgb, xyz = check_observation(rgb, xyz)
        return rgb, apply_volume(xyz, checks.volume, min_valid_points)


INPUT_MODES: Dict[str, InputMode] = {m.name: m for m in (
    InputMode("points", "organized PointCloud2 on `points`", ("points",), _points_to_xyz, _points_fields),
    InputMode("depth", "registered depth Image on `depth` + CameraInfo on `camera_info`", ("depth", "camera_info"),
              _depth_to_xyz, _depth_fields, constant_keys=("camera_info",), needs_intrinsics=True),
)}


def input_mode(name: str) -> InputMode:
    """The registered mode ``name``; ConfigError listing the choices otherwise."""
    try:
        return INPUT_MODES[name]
    except (KeyError, TypeError):
        raise ConfigError(f"unknown input_mode {name!r}; choose from: "
                          + ", ".join(f"{m.name} ({m.description})" for m in INPUT_MODES.values())) from None


def input_mode_help() -> str:
    """One line listing the modes, for parameter descriptions and --help."""
    return "; ".join(f"{m.name}: {m.description}" for m in INPUT_MODES.values())


__all__ = ["Topic", "TOPICS", "InputMode", "INPUT_MODES", "input_mode", "input_mode_help", "recorded_topics",
           "WorkingVolume", "InputChecks", "DEFAULT_CHECKS", "check_frames", "apply_volume"]
