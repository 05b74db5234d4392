"""Registered depth images + CameraInfo <-> organized XYZ maps, as ROS ``depth_image_proc`` computes them.

Back-projection follows ``depth_image_proc`` (``point_cloud_xyz``, ``depth_conversions.hpp``, its
``DepthTraits``): ``x = (u - cx) * d * (unit / fx)``, ``y = (v - cy) * d * (unit / fy)``,
``z = d * unit`` computed in float32, where ``fx, fy, cx, cy`` are read from the projection matrix
``P`` (what ``image_geometry.PinholeCameraModel.fx()`` returns, adjusted for ``roi`` offsets and
``binning_x/y`` as image_geometry does; ``K`` is used when ``P`` is all zero, where depth_image_proc
would divide by zero). Per encoding, :data:`DEPTH_TRAITS` gives the stored type, the unit (metres per
stored value) and which values are invalid (0 for integer depth, non-finite for float depth); an
invalid depth becomes a NaN point (depth_image_proc's default, ``range_max`` = 0).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Dict, Optional, Sequence, Tuple

import numpy as np

from ..errors import InputError
from .msgconv import _field, _image_rows


@dataclass(frozen=True)
class DepthTraits:
    """One depth encoding: ``dtype`` (numpy code without byte order), ``unit_m`` metres per value;
    integer encodings mark invalid pixels with 0, float encodings with NaN/inf."""

    encoding: str
    dtype: str
    unit_m: float

    @property
    def is_integer(self) -> bool:
        return self.dtype.startswith("u")

    @property
    def bytes_per_pixel(self) -> int:
        return np.dtype(self.dtype).itemsize

    def valid(self, raw: np.ndarray) -> np.ndarray:
        return raw != 0 if self.is_integer else np.isfinite(raw)

    def from_metres(self, z: np.ndarray, invalid: np.ndarray) -> np.ndarray:
        """(H, W) metres + invalid mask -> stored values (little endian)."""
        if not self.is_integer:
            return np.where(invalid, np.float32(np.nan), z).astype("<" + self.dtype)
        stored = np.round(np.where(invalid, 0.0, z.astype(np.float64) * (1.0 / self.unit_m)))
        limit = np.iinfo(np.dtype(self.dtype)).max
        if stored.max(initial=0) > limit:
            raise InputError(f"depth {stored.max() * self.unit_m:.3f} m exceeds the {self.encoding} range "
                             f"({limit * self.unit_m:.3f} m)")
        return stored.astype("<" + self.dtype)


DEPTH_TRAITS: Dict[str, DepthTraits] = {
    "16UC1": DepthTraits("16UC1", "u2", 0.001),  # millimetres, 0 = invalid
    "32FC1": DepthTraits("32FC1", "f4", 1.0),  # metres, NaN/inf = invalid
}
SUPPORTED_DEPTH_ENCODINGS = tuple(DEPTH_TRAITS)


def depth_traits(encoding: str) -> DepthTraits:
    traits = DEPTH_TRAITS.get(str(encoding).strip())
    if traits is None:
        raise InputError(f"unsupported depth encoding '{encoding}'; supported: {', '.join(DEPTH_TRAITS)}")
    return traits


def _matrix(msg: Any, names: Sequence[str], size: int) -> Optional[np.ndarray]:
    for name in names:
        if hasattr(msg, name):
            value = np.asarray(list(getattr(msg, name)) if not isinstance(getattr(msg, name), np.ndarray)
                               else getattr(msg, name), dtype=np.float64).reshape(-1)
            if value.size != size:
                raise InputError(f"camera_info {name} has {value.size} values, expected {size}")
            return value
    return None


def intrinsics_from_camera_info(camera_info: Any) -> Tuple[float, float, float, float]:
    """(fx, fy, cx, cy) in pixels of the image the CameraInfo describes, as image_geometry computes them.

    Read from P (``PinholeCameraModel.fx()`` etc.), or from K when P is all zero; the principal point
    is shifted by ``roi.x_offset/y_offset`` and focal length and principal point divided by
    ``binning_x/y`` (> 1), like ``PinholeCameraModel.fromCameraInfo``.
    """
    p = _matrix(camera_info, ("p", "P"), 12)
    k = _matrix(camera_info, ("k", "K"), 9)
    if p is not None and np.any(p != 0):
        fx, fy, cx, cy = p[0], p[5], p[2], p[6]
    elif k is not None:
        fx, fy, cx, cy = k[0], k[4], k[2], k[5]
    else:
        raise InputError("camera_info has neither k nor p")
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise InputError(
            f"camera_info has zero or invalid intrinsics: fx={fx}, fy={fy}, cx={cx}, cy={cy} (fx, fy must be > 0)"
        )
    roi = getattr(camera_info, "roi", None)
    if roi is not None:
        cx -= float(getattr(roi, "x_offset", 0) or 0)
        cy -= float(getattr(roi, "y_offset", 0) or 0)
    binning_x = int(getattr(camera_info, "binning_x", 0) or 0)
    binning_y = int(getattr(camera_info, "binning_y", 0) or 0)
    if binning_x > 1:
        fx, cx = fx / binning_x, cx / binning_x
    if binning_y > 1:
        fy, cy = fy / binning_y, cy / binning_y
    return float(fx), float(fy), float(cx), float(cy)


def depth_to_xyz(depth_msg: Any, camera_info_msg: Any) -> np.ndarray:
    """Registered depth Image (16UC1 mm or 32FC1 m) + CameraInfo -> (H, W, 3) float32 metres, invalid NaN.

    Same arithmetic as depth_image_proc's point_cloud_xyz (see module docstring).
    """
    traits = depth_traits(_field(depth_msg, "encoding"))
    info_w, info_h = int(getattr(camera_info_msg, "width", 0)), int(getattr(camera_info_msg, "height", 0))
    binning = (max(int(getattr(camera_info_msg, "binning_x", 0) or 0), 1),
               max(int(getattr(camera_info_msg, "binning_y", 0) or 0), 1))
    roi = getattr(camera_info_msg, "roi", None)
    if roi is not None and int(getattr(roi, "width", 0) or 0) and int(getattr(roi, "height", 0) or 0):
        info_w, info_h = int(roi.width), int(roi.height)
    info_w, info_h = info_w // binning[0], info_h // binning[1]
    fx, fy, cx, cy = intrinsics_from_camera_info(camera_info_msg)
    rows, height, width = _image_rows(depth_msg, traits.bytes_per_pixel, f"depth image ({traits.encoding})")
    if info_w and info_h and (info_w, info_h) != (width, height):
        raise InputError(f"depth image size {width}x{height} does not match camera_info size {info_w}x{info_h}")
    order = ">" if int(getattr(depth_msg, "is_bigendian", 0)) else "<"
    raw = rows.copy().view(order + traits.dtype).reshape(height, width)
    valid = traits.valid(raw)
    depth = raw.astype(np.float32)
    unit = np.float32(traits.unit_m)
    z = depth * unit if traits.unit_m != 1.0 else depth
    constant_x = np.float32(float(unit) / fx)
    constant_y = np.float32(float(unit) / fy)
    u = np.arange(width, dtype=np.float32)[None, :] - np.float32(cx)
    v = np.arange(height, dtype=np.float32)[:, None] - np.float32(cy)
    with np.errstate(invalid="ignore", over="ignore"):
        x = (u * depth) * constant_x
        y = (v * depth) * constant_y
    xyz = np.stack([x, y, z], axis=-1).astype(np.float32)
    xyz[~valid] = np.nan
    return xyz


def xyz_to_depth_fields(xyz: np.ndarray, encoding: str = "32FC1") -> Dict[str, Any]:
    """(H, W, 3) metres -> registered depth Image fields: z in metres (32FC1, invalid NaN) or mm (16UC1, 0).

    The XYZ map must come from the pinhole camera the depth image will be paired with (z is taken
    per pixel; x/y are implied by the intrinsics).
    """
    traits = depth_traits(encoding)
    arr = np.asarray(xyz, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"XYZ map must be (H, W, 3), got shape {arr.shape}")
    height, width = arr.shape[:2]
    z = arr[..., 2]
    invalid = ~np.isfinite(arr).all(-1) | (z <= 0)
    depth = traits.from_metres(z, invalid)
    return dict(height=int(height), width=int(width), encoding=traits.encoding, is_bigendian=0,
                step=int(width * traits.bytes_per_pixel), data=depth.tobytes())


def camera_info_fields(K: Any, width: int, height: int, frame_id: str = "camera") -> Dict[str, Any]:
    """CameraInfo fields for an undistorted pinhole camera: k (9), p = [K | 0] (12), r = I, d = [].

    K: 3x3 intrinsics (or 9 values) in pixels. ``frame_id`` is returned for the caller's header.
    """
    k = np.asarray(K, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise InputError(f"K must have 9 values (3x3), got {k.size}")
    if not (np.isfinite(k).all() and k[0] > 0 and k[4] > 0):
        raise InputError(f"K has zero or invalid focal lengths: fx={k[0]}, fy={k[4]}")
    p = np.zeros(12)
    p[0:3], p[4:7], p[8:11] = k[0:3], k[3:6], k[6:9]
    return dict(
        frame_id=frame_id,
        height=int(height),
        width=int(width),
        distortion_model="plumb_bob",
        d=[0.0] * 5,
        k=k.tolist(),
        r=[1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0],
        p=p.tolist(),
        binning_x=0,
        binning_y=0,
    )


__all__ = ["DepthTraits", "DEPTH_TRAITS", "SUPPORTED_DEPTH_ENCODINGS", "depth_traits", "intrinsics_from_camera_info",
           "depth_to_xyz", "xyz_to_depth_fields", "camera_info_fields"]
