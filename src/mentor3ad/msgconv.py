"""Conversion between numpy arrays and the FIELDS of ROS sensor messages, without importing ROS.

Functions read attributes by name (``height``, ``width``, ``encoding``, ``step``, ``data``, ``fields``,
``k``/``p`` ...), so the same code works with rclpy messages, ``rosbags`` message objects and any
object with those attributes. The ``*_fields`` functions return plain dicts of field values that a
caller turns into a real message (``Image(**fields)`` in rclpy, the rosbags dataclass, ...).

Conventions: RGB images are (H, W, 3) uint8 in RGB order; XYZ maps are (H, W, 3) float32 in metres,
pixel-aligned with the image, invalid points NaN.

Depth back-projection follows ROS ``depth_image_proc`` (``point_cloud_xyz``, ``depth_conversions.hpp``):
``x = (u - cx) * d * (unit / fx)``, ``y = (v - cy) * d * (unit / fy)``, ``z = d * unit`` computed in
float32, where ``fx, fy, cx, cy`` are read from the projection matrix ``P`` (what
``image_geometry.PinholeCameraModel.fx()`` returns, adjusted for ``roi`` offsets and ``binning_x/y`` as
image_geometry does; ``K`` is used when ``P`` is all zero, where depth_image_proc would divide by
zero), ``unit`` is 0.001 for 16UC1 (millimetres) and 1 for 32FC1 (metres); invalid depth (0 for
16UC1, NaN/inf for 32FC1) becomes a NaN point (depth_image_proc's default, ``range_max`` = 0).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

SUPPORTED_IMAGE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")
SUPPORTED_DEPTH_ENCODINGS = ("16UC1", "32FC1")

# sensor_msgs/PointField datatype constants
POINTFIELD_FLOAT32 = 7
_POINTFIELD_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32", 7: "FLOAT32", 8: "FLOAT64"}

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}


class MessageConversionError(ValueError):
    """A message cannot be converted; the text names the problem (encoding, sizes, fields ...)."""


# --------------------------------------------------------------------------------------------- helpers
def _field(msg: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    if default is not None:
        return default
    raise MessageConversionError(f"message {type(msg).__name__} has no field {' / '.join(names)}")


def _data_bytes(msg: Any) -> np.ndarray:
    """The ``data`` field as a flat uint8 array (bytes, bytearray, array.array, list or numpy)."""
    data = _field(msg, "data")
    if isinstance(data, np.ndarray):
        return np.ascontiguousarray(data, dtype=np.uint8).reshape(-1)
    if isinstance(data, (bytes, bytearray, memoryview)):
        return np.frombuffer(data, dtype=np.uint8)
    try:
        return np.frombuffer(memoryview(data).cast("B"), dtype=np.uint8)
    except TypeError:
        return np.asarray(list(data), dtype=np.uint8)


def _rows(msg: Any, height: int, step: int, what: str, step_name: str) -> np.ndarray:
    """(height, step) uint8 view of ``msg.data``; the size must be exactly height * step."""
    data = _data_bytes(msg)
    expected = height * step
    if data.size < expected:
        raise MessageConversionError(
            f"{what} data is truncated or has the wrong size: {data.size} bytes, expected height*{step_name} = "
            f"{height}*{step} = {expected}"
        )
    if data.size > expected:
        raise MessageConversionError(
            f"{what} data size {data.size} does not match height*{step_name} = {height}*{step} = {expected}"
        )
    return data.reshape(height, step)


def _image_rows(msg: Any, bytes_per_pixel: int, what: str) -> Tuple[np.ndarray, int, int]:
    """Validated (H, W * bytes_per_pixel) uint8 view of an image's pixel bytes (row padding removed)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise MessageConversionError(f"{what} has an empty size {width}x{height}")
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise MessageConversionError(
            f"{what} step {step} is smaller than width*bytes_per_pixel = {width}*{bytes_per_pixel} = {row_bytes}"
        )
    rows = _rows(msg, height, step, what, "step")[:, :row_bytes]
    return rows, height, width


# ----------------------------------------------------------------------------------------------- image
def image_to_rgb(msg: Any) -> np.ndarray:
    """sensor_msgs/Image (rgb8, bgr8, rgba8, bgra8, mono8, mono16) -> (H, W, 3) uint8 RGB.

    mono16 is scaled to 8 bit by ``value >> 8``. Row padding (``step``) is honoured.
    """
    encoding = str(_field(msg, "encoding")).strip()
    if encoding not in _CHANNELS:
        raise MessageConversionError(
            f"unsupported image encoding '{encoding}'; supported: {', '.join(SUPPORTED_IMAGE_ENCODINGS)}"
        )
    channels = _CHANNELS[encoding]
    bytes_per_pixel = channels * (2 if encoding == "mono16" else 1)
    rows, height, width = _image_rows(msg, bytes_per_pixel, f"image ({encoding})")
    if encoding == "mono16":
        dtype = np.dtype(">u2" if int(getattr(msg, "is_bigendian", 0)) else "<u2")
        mono = (rows.copy().view(dtype).reshape(height, width) >> 8).astype(np.uint8)
        return np.repeat(mono[..., None], 3, axis=2)
    pix = rows.reshape(height, width, channels)
    if encoding == "mono8":
        return np.repeat(pix, 3, axis=2).copy()
    if encoding in ("bgr8", "bgra8"):
        return np.ascontiguousarray(pix[..., 2::-1])
    return np.ascontiguousarray(pix[..., :3])


def rgb_to_image_fields(rgb: np.ndarray, encoding: str = "rgb8") -> Dict[str, Any]:
    """(H, W, 3) uint8 RGB (or (H, W) uint8 for mono8) -> Image fields dict (data as bytes, no padding)."""
    arr = np.asarray(rgb)
    if arr.dtype != np.uint8:
        raise MessageConversionError(f"image array must be uint8, got {arr.dtype}")
    if encoding == "mono8":
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr.mean(axis=2).round().astype(np.uint8)
        if arr.ndim != 2:
            raise MessageConversionError(f"mono8 image must be (H, W) or (H, W, 3), got shape {arr.shape}")
        pix = arr
        channels = 1
    else:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise MessageConversionError(f"RGB image must be (H, W, 3), got shape {arr.shape}")
        if encoding == "rgb8":
            pix = arr
        elif encoding == "bgr8":
            pix = arr[..., ::-1]
        elif encoding == "rgba8":
            pix = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        elif encoding == "bgra8":
            pix = np.concatenate([arr[..., ::-1], np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        else:
            raise MessageConversionError(
                f"unsupported image encoding '{encoding}'; supported for writing: rgb8, bgr8, rgba8, bgra8, mono8"
            )
        channels = pix.shape[2]
    height, width = arr.shape[:2]
    return dict(
        height=int(height),
        width=int(width),
        encoding=encoding,
        is_bigendian=0,
        step=int(width * channels),
        data=np.ascontiguousarray(pix).tobytes(),
    )


def mono_to_mask(msg: Any) -> np.ndarray:
    """mono8 ground-truth mask Image -> (H, W) uint8 with 1 = defective (any nonzero value)."""
    encoding = str(_field(msg, "encoding")).strip()
    if encoding != "mono8":
        raise MessageConversionError(f"unsupported mask encoding '{encoding}'; supported: mono8")
    rows, height, width = _image_rows(msg, 1, "mask image (mono8)")
    return (rows.reshape(height, width) > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- cloud
def _cloud_field_offsets(msg: Any) -> Dict[str, int]:
    fields = list(_field(msg, "fields"))
    by_name = {str(f.name): f for f in fields}
    missing = [n for n in ("x", "y", "z") if n not in by_name]
    if missing:
        raise MessageConversionError(
            f"point cloud is missing field(s) {', '.join(missing)}; it has: {', '.join(by_name) or 'no fields'}"
        )
    offsets = {}
    for name in ("x", "y", "z"):
        f = by_name[name]
        if int(f.datatype) != POINTFIELD_FLOAT32:
            raise MessageConversionError(
                f"point cloud field '{name}' has datatype {_POINTFIELD_NAMES.get(int(f.datatype), f.datatype)}, "
                "expected FLOAT32 (7)"
            )
        if int(getattr(f, "count", 1)) < 1:
            raise MessageConversionError(f"point cloud field '{name}' has count {f.count}, expected 1")
        offsets[name] = int(f.offset)
    return offsets


def cloud_to_xyz(msg: Any, require_organized: bool = True) -> np.ndarray:
    """Organized sensor_msgs/PointCloud2 with FLOAT32 x/y/z -> (H, W, 3) float32 metres (NaN kept).

    Any field offsets, ``point_step`` and ``row_step`` padding and either endianness are supported.
    With ``require_organized`` a cloud of height 1 is refused (it cannot be aligned with an image).
    """
    height, width = int(msg.height), int(msg.width)
    if require_organized and height <= 1:
        raise MessageConversionError(
            f"point cloud is unorganized (height={height}, width={width}); an organized cloud "
            "(height = image rows, width = image columns) is required"
        )
    if height <= 0 or width <= 0:
        raise MessageConversionError(f"point cloud has an empty size {width}x{height}")
    offsets = _cloud_field_offsets(msg)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    for name, off in offsets.items():
        if off + 4 > point_step:
            raise MessageConversionError(
                f"point cloud field '{name}' at offset {off} does not fit in point_step {point_step}"
            )
    if row_step < width * point_step:
        raise MessageConversionError(
            f"point cloud row_step {row_step} is smaller than width*point_step = {width}*{point_step}"
        )
    rows = _rows(msg, height, row_step, "point cloud", "row_step")[:, : width * point_step]
    rows = rows.reshape(height, width, point_step)
    dtype = np.dtype(">f4" if int(getattr(msg, "is_bigendian", False)) else "<f4")
    xyz = np.empty((height, width, 3), np.float32)
    for channel, name in enumerate(("x", "y", "z")):
        off = offsets[name]
        raw = np.ascontiguousarray(rows[:, :, off : off + 4])
        xyz[..., channel] = raw.view(dtype)[..., 0].astype(np.float32)
    return xyz


def xyz_to_cloud_fields(xyz: np.ndarray, padded: bool = False) -> Dict[str, Any]:
    """(H, W, 3) float32 metres -> organized PointCloud2 fields dict, little endian.

    ``fields`` is a list of ``(name, offset, datatype, count)``; ``point_step`` is 12, or 16 with
    ``padded`` (4 padding bytes per point, as many drivers publish). Invalid points are NaN;
    ``is_dense`` is True only when every point is finite.
    """
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MessageConversionError(f"XYZ map must be (H, W, 3), got shape {arr.shape}")
    height, width = arr.shape[:2]
    point_step = 16 if padded else 12
    buf = np.zeros((height, width, point_step // 4), "<f4")
    buf[..., :3] = arr.astype(np.float32)
    return dict(
        height=int(height),
        width=int(width),
        fields=[("x", 0, POINTFIELD_FLOAT32, 1), ("y", 4, POINTFIELD_FLOAT32, 1), ("z", 8, POINTFIELD_FLOAT32, 1)],
        is_bigendian=False,
        point_step=point_step,
        row_step=int(width * point_step),
        data=buf.tobytes(),
        is_dense=bool(np.isfinite(arr).all()),
    )


# ----------------------------------------------------------------------------------------------- depth
def _matrix(msg: Any, names: Sequence[str], size: int) -> Optional[np.ndarray]:
    for name in names:
        if hasattr(msg, name):
            value = np.asarray(list(getattr(msg, name)) if not isinstance(getattr(msg, name), np.ndarray)
                               else getattr(msg, name), dtype=np.float64).reshape(-1)
            if value.size != size:
                raise MessageConversionError(f"camera_info {name} has {value.size} values, expected {size}")
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
        raise MessageConversionError("camera_info has neither k nor p")
    if not (np.isfinite([fx, fy, cx, cy]).all() and fx > 0 and fy > 0):
        raise MessageConversionError(
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
    encoding = str(_field(depth_msg, "encoding")).strip()
    if encoding not in SUPPORTED_DEPTH_ENCODINGS:
        raise MessageConversionError(
            f"unsupported depth encoding '{encoding}'; supported: {', '.join(SUPPORTED_DEPTH_ENCODINGS)}"
        )
    info_w, info_h = int(getattr(camera_info_msg, "width", 0)), int(getattr(camera_info_msg, "height", 0))
    binning = (max(int(getattr(camera_info_msg, "binning_x", 0) or 0), 1),
               max(int(getattr(camera_info_msg, "binning_y", 0) or 0), 1))
    roi = getattr(camera_info_msg, "roi", None)
    if roi is not None and int(getattr(roi, "width", 0) or 0) and int(getattr(roi, "height", 0) or 0):
        info_w, info_h = int(roi.width), int(roi.height)
    info_w, info_h = info_w // binning[0], info_h // binning[1]
    fx, fy, cx, cy = intrinsics_from_camera_info(camera_info_msg)
    rows, height, width = _image_rows(depth_msg, 2 if encoding == "16UC1" else 4, f"depth image ({encoding})")
    if info_w and info_h and (info_w, info_h) != (width, height):
        raise MessageConversionError(
            f"depth image size {width}x{height} does not match camera_info size {info_w}x{info_h}"
        )
    big = int(getattr(depth_msg, "is_bigendian", 0))
    if encoding == "16UC1":
        raw = rows.copy().view(">u2" if big else "<u2").reshape(height, width)
        depth = raw.astype(np.float32)
        valid = raw != 0
        unit_scaling = float(np.float32(0.001))
        z = depth * np.float32(0.001)
    else:
        depth = rows.copy().view(">f4" if big else "<f4").reshape(height, width).astype(np.float32)
        valid = np.isfinite(depth)
        unit_scaling = 1.0
        z = depth
    constant_x = np.float32(unit_scaling / fx)
    constant_y = np.float32(unit_scaling / fy)
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
    arr = np.asarray(xyz, dtype=np.float32)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise MessageConversionError(f"XYZ map must be (H, W, 3), got shape {arr.shape}")
    height, width = arr.shape[:2]
    z = arr[..., 2]
    invalid = ~np.isfinite(arr).all(-1) | (z <= 0)
    if encoding == "32FC1":
        depth = np.where(invalid, np.float32(np.nan), z).astype("<f4")
        step = width * 4
    elif encoding == "16UC1":
        mm = np.round(np.where(invalid, 0.0, z.astype(np.float64) * 1000.0))
        if mm.max(initial=0) > 65535:
            raise MessageConversionError(f"depth {mm.max() / 1000:.3f} m exceeds the 16UC1 range (65.535 m)")
        depth = mm.astype("<u2")
        step = width * 2
    else:
        raise MessageConversionError(
            f"unsupported depth encoding '{encoding}'; supported: {', '.join(SUPPORTED_DEPTH_ENCODINGS)}"
        )
    return dict(height=int(height), width=int(width), encoding=encoding, is_bigendian=0, step=int(step),
                data=depth.tobytes())


def camera_info_fields(K: Any, width: int, height: int, frame_id: str = "camera") -> Dict[str, Any]:
    """CameraInfo fields for an undistorted pinhole camera: k (9), p = [K | 0] (12), r = I, d = [].

    K: 3x3 intrinsics (or 9 values) in pixels. ``frame_id`` is returned for the caller's header.
    """
    k = np.asarray(K, dtype=np.float64).reshape(-1)
    if k.size != 9:
        raise MessageConversionError(f"K must have 9 values (3x3), got {k.size}")
    if not (np.isfinite(k).all() and k[0] > 0 and k[4] > 0):
        raise MessageConversionError(f"K has zero or invalid focal lengths: fx={k[0]}, fy={k[4]}")
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


# ------------------------------------------------------------------------------------------- checks
def check_aligned(rgb: np.ndarray, xyz: np.ndarray) -> None:
    """Raise MessageConversionError unless rgb (H, W, 3) and xyz (H, W, 3) are pixel-aligned."""
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise MessageConversionError(f"image must be (H, W, 3), got shape {rgb.shape}")
    if xyz.ndim != 3 or xyz.shape[2] != 3:
        raise MessageConversionError(f"point map must be (H, W, 3), got shape {xyz.shape}")
    if rgb.shape[:2] != xyz.shape[:2]:
        raise MessageConversionError(
            f"image size {rgb.shape[1]}x{rgb.shape[0]} does not match point cloud size "
            f"{xyz.shape[1]}x{xyz.shape[0]} (width x height); they must be pixel-aligned"
        )


def valid_point_mask(xyz: np.ndarray) -> np.ndarray:
    """(H, W) bool: finite and not all-zero (MVTec marks background as 0, ROS as NaN)."""
    finite = np.isfinite(xyz).all(-1)
    return finite & (np.abs(np.where(finite[..., None], xyz, 0)).sum(-1) > 0)


def check_enough_valid_points(xyz: np.ndarray, min_points: int = 16) -> int:
    """Number of valid points; raise MessageConversionError when fewer than ``min_points``."""
    count = int(valid_point_mask(xyz).sum())
    if count < min_points:
        raise MessageConversionError(
            f"too few valid points in the point cloud: {count} of {xyz.shape[0] * xyz.shape[1]}, need at least {min_points}"
        )
    return count


__all__: List[str] = [
    "MessageConversionError",
    "SUPPORTED_IMAGE_ENCODINGS",
    "SUPPORTED_DEPTH_ENCODINGS",
    "image_to_rgb",
    "rgb_to_image_fields",
    "mono_to_mask",
    "cloud_to_xyz",
    "xyz_to_cloud_fields",
    "intrinsics_from_camera_info",
    "depth_to_xyz",
    "xyz_to_depth_fields",
    "camera_info_fields",
    "check_aligned",
    "valid_point_mask",
    "check_enough_valid_points",
]
