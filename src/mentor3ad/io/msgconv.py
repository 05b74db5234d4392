"""Conversion between numpy arrays and the FIELDS of ROS sensor messages, without importing ROS.

Functions read attributes by name (``height``, ``width``, ``encoding``, ``step``, ``data``, ``fields``
...), so the same code works with rclpy messages, ``rosbags`` message objects and any object with
those attributes. The ``*_fields`` functions return plain dicts of field values that a caller turns
into a real message (:class:`MessageFactory` does it for rclpy and for rosbags alike).

Conventions: RGB images are (H, W, 3) uint8 in RGB order; XYZ maps are (H, W, 3) float32 in metres,
pixel-aligned with the image, invalid points NaN. Header stamps are integer nanoseconds
(:func:`stamp_to_ns`, :func:`ns_to_stamp`). Depth images: :mod:`mentor3ad.io.depth`. Every problem
raises :class:`~mentor3ad.errors.InputError` naming it.
"""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Mapping, Tuple

import numpy as np

from ..errors import InputError
from ..geometry.observation import valid_point_mask  # the one valid-point rule, re-exported for callers

SUPPORTED_IMAGE_ENCODINGS = ("rgb8", "bgr8", "rgba8", "bgra8", "mono8", "mono16")

# sensor_msgs/PointField datatype constants
POINTFIELD_FLOAT32 = 7
_POINTFIELD_NAMES = {1: "INT8", 2: "UINT8", 3: "INT16", 4: "UINT16", 5: "INT32", 6: "UINT32", 7: "FLOAT32", 8: "FLOAT64"}

_CHANNELS = {"rgb8": 3, "bgr8": 3, "rgba8": 4, "bgra8": 4, "mono8": 1, "mono16": 1}
NS_PER_S = 1_000_000_000


# ---------------------------------------------------------------------------------------------- stamps
def stamp_to_ns(stamp: Any) -> int:
    """builtin_interfaces/Time (``sec``, ``nanosec``), rclpy Time (``nanoseconds``) or int -> nanoseconds."""
    if isinstance(stamp, (int, np.integer)):
        return int(stamp)
    if hasattr(stamp, "nanoseconds"):
        return int(stamp.nanoseconds)
    return int(stamp.sec) * NS_PER_S + int(stamp.nanosec)


def ns_to_stamp(stamp_ns: int) -> Tuple[int, int]:
    """Nanoseconds -> (sec, nanosec) of a builtin_interfaces/Time."""
    sec, nanosec = divmod(int(stamp_ns), NS_PER_S)
    return int(sec), int(nanosec)


def header_stamp_ns(msg: Any) -> int:
    """Header stamp of a message in nanoseconds."""
    return stamp_to_ns(msg.header.stamp)


# --------------------------------------------------------------------------------------------- helpers
def _field(msg: Any, *names: str, default: Any = None) -> Any:
    for name in names:
        if hasattr(msg, name):
            return getattr(msg, name)
    if default is not None:
        return default
    raise InputError(f"message {type(msg).__name__} has no field {' / '.join(names)}")


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
        raise InputError(
            f"{what} data is truncated or has the wrong size: {data.size} bytes, expected height*{step_name} = "
            f"{height}*{step} = {expected}"
        )
    if data.size > expected:
        raise InputError(
            f"{what} data size {data.size} does not match height*{step_name} = {height}*{step} = {expected}"
        )
    return data.reshape(height, step)


def _image_rows(msg: Any, bytes_per_pixel: int, what: str) -> Tuple[np.ndarray, int, int]:
    """Validated (H, W * bytes_per_pixel) uint8 view of an image's pixel bytes (row padding removed)."""
    height, width, step = int(msg.height), int(msg.width), int(msg.step)
    if height <= 0 or width <= 0:
        raise InputError(f"{what} has an empty size {width}x{height}")
    row_bytes = width * bytes_per_pixel
    if step < row_bytes:
        raise InputError(
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
        raise InputError(
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
        raise InputError(f"image array must be uint8, got {arr.dtype}")
    if encoding == "mono8":
        if arr.ndim == 3 and arr.shape[2] == 3:
            arr = arr.mean(axis=2).round().astype(np.uint8)
        if arr.ndim != 2:
            raise InputError(f"mono8 image must be (H, W) or (H, W, 3), got shape {arr.shape}")
        pix = arr
        channels = 1
    else:
        if arr.ndim != 3 or arr.shape[2] != 3:
            raise InputError(f"RGB image must be (H, W, 3), got shape {arr.shape}")
        if encoding == "rgb8":
            pix = arr
        elif encoding == "bgr8":
            pix = arr[..., ::-1]
        elif encoding == "rgba8":
            pix = np.concatenate([arr, np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        elif encoding == "bgra8":
            pix = np.concatenate([arr[..., ::-1], np.full(arr.shape[:2] + (1,), 255, np.uint8)], axis=2)
        else:
            raise InputError(
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
        raise InputError(f"unsupported mask encoding '{encoding}'; supported: mono8")
    rows, height, width = _image_rows(msg, 1, "mask image (mono8)")
    return (rows.reshape(height, width) > 0).astype(np.uint8)


# ----------------------------------------------------------------------------------------------- cloud
def _cloud_field_offsets(msg: Any) -> Dict[str, int]:
    """{x, y, z: byte offset in a point}: each present once, FLOAT32, count 1, not overlapping another."""
    fields = list(_field(msg, "fields"))
    by_name: Dict[str, Any] = {}
    for f in fields:
        name = str(f.name)
        if name in ("x", "y", "z") and name in by_name:
            raise InputError(f"point cloud has field '{name}' twice (offsets {int(by_name[name].offset)} and "
                             f"{int(f.offset)}); which one holds the coordinate is ambiguous")
        by_name.setdefault(name, f)
    missing = [n for n in ("x", "y", "z") if n not in by_name]
    if missing:
        raise InputError(
            f"point cloud is missing field(s) {', '.join(missing)}; it has: {', '.join(by_name) or 'no fields'}"
        )
    offsets = {}
    for name in ("x", "y", "z"):
        f = by_name[name]
        if int(f.datatype) != POINTFIELD_FLOAT32:
            raise InputError(
                f"point cloud field '{name}' has datatype {_POINTFIELD_NAMES.get(int(f.datatype), f.datatype)}, "
                "expected FLOAT32 (7)"
            )
        if int(getattr(f, "count", 1)) != 1:
            raise InputError(f"point cloud field '{name}' has count {f.count}, expected 1 (one coordinate per point)")
        if int(f.offset) < 0:
            raise InputError(f"point cloud field '{name}' has a negative offset {f.offset}")
        offsets[name] = int(f.offset)
    for a, b in (("x", "y"), ("x", "z"), ("y", "z")):
        if abs(offsets[a] - offsets[b]) < 4:
            raise InputError(f"point cloud fields '{a}' (offset {offsets[a]}) and '{b}' (offset {offsets[b]}) "
                             "overlap: FLOAT32 coordinates need 4 bytes each")
    return offsets


PLAUSIBLE_METRES = (1e-7, 1e5)  # |coordinate| of a real sensor point, when not exactly 0
BYTE_ORDER_SAMPLE = 16384  # points the byte-order check looks at (evenly spread over the cloud)


def _plausible_fraction(xyz: np.ndarray) -> Tuple[float, int]:
    """(fraction of the measured points whose coordinates are all 0 or within PLAUSIBLE_METRES, how many
    measured points): points that are all-NaN or all-zero (invalid markers) are not counted."""
    with np.errstate(invalid="ignore", over="ignore"):
        magnitude = np.abs(xyz)
        invalid = np.isnan(xyz).all(-1) | (xyz == 0).all(-1)
        sane = (magnitude == 0) | ((magnitude >= PLAUSIBLE_METRES[0]) & (magnitude <= PLAUSIBLE_METRES[1]))
    measured = int((~invalid).sum())
    return (float((sane.all(-1) & ~invalid).sum()) / measured if measured else 1.0), measured


def _check_byte_order(xyz: np.ndarray, swapped: np.ndarray, bigendian: bool) -> None:
    """InputError when the declared byte order decodes to nonsense and the other one to metres.

    Decoded with the wrong order, real coordinates become values of random magnitude (the low mantissa
    byte turns into the exponent: 1e-38 ... 1e38, denormals, NaN) and NaN markers become denormals: well
    under half of the points look like metres. The check needs a clear majority both ways (< 50 %
    plausible as declared, > 90 % swapped), so noisy but correctly labelled clouds are never refused."""
    declared, measured = _plausible_fraction(xyz)
    if declared >= 0.5 or measured == 0:
        return
    other, _ = _plausible_fraction(swapped)
    if other > 0.9:
        example = xyz[~(np.isnan(xyz).all(-1) | (xyz == 0).all(-1))][0]  # (N, 3) points
        raise InputError(
            f"point cloud is_bigendian looks wrong: decoded as is_bigendian={bigendian} only {declared:.0%} of "
            f"{measured} points are plausible metres (e.g. {example.tolist()}), with the other byte order "
            f"{other:.0%} are; fix the sender's is_bigendian flag")


def cloud_to_xyz(msg: Any, require_organized: bool = True) -> np.ndarray:
    """Organized sensor_msgs/PointCloud2 with FLOAT32 x/y/z -> (H, W, 3) float32 metres (NaN kept).

    Any field offsets, ``point_step`` and ``row_step`` padding and either endianness are supported.
    With ``require_organized`` a cloud of height 1 is refused (it cannot be aligned with an image).
    Refused (InputError naming the problem): x/y/z missing, duplicated, not FLOAT32, ``count`` != 1 or
    overlapping one another; fields outside ``point_step``; a data size other than height * row_step;
    and data whose ``is_bigendian`` flag is evidently wrong (:func:`_check_byte_order`). Other absurd
    values (1e6 m away, behind the camera) are for the working volume of :mod:`mentor3ad.io.inputs`.
    """
    height, width = int(msg.height), int(msg.width)
    if require_organized and height <= 1:
        raise InputError(
            f"point cloud is unorganized (height={height}, width={width}); an organized cloud "
            "(height = image rows, width = image columns) is required"
        )
    if height <= 0 or width <= 0:
        raise InputError(f"point cloud has an empty size {width}x{height}")
    offsets = _cloud_field_offsets(msg)
    point_step, row_step = int(msg.point_step), int(msg.row_step)
    for name, off in offsets.items():
        if off + 4 > point_step:
            raise InputError(
                f"point cloud field '{name}' at offset {off} does not fit in point_step {point_step}"
            )
    if row_step < width * point_step:
        raise InputError(
            f"point cloud row_step {row_step} is smaller than width*point_step = {width}*{point_step}"
        )
    rows = _rows(msg, height, row_step, "point cloud", "row_step")[:, : width * point_step]
    rows = rows.reshape(height, width, point_step)
    bigendian = bool(int(getattr(msg, "is_bigendian", False)))
    if point_step % 4 == 0 and all(off % 4 == 0 for off in offsets.values()):
        # 4-byte aligned fields (every common driver): one gather of the three words per point
        words = rows.view(">u4" if bigendian else "<u4")  # (H, W, point_step / 4)
        raw = words[..., [offsets["x"] // 4, offsets["y"] // 4, offsets["z"] // 4]].astype(np.uint32, order="C")
    else:
        raw = np.empty((height, width, 3), np.uint32)
        for channel, name in enumerate(("x", "y", "z")):
            off = offsets[name]
            raw[..., channel] = np.ascontiguousarray(rows[:, :, off : off + 4]).view(
                ">u4" if bigendian else "<u4")[..., 0]
    xyz = raw.view(np.float32)
    sample = raw.reshape(-1, 3)[:: max(1, raw.size // 3 // BYTE_ORDER_SAMPLE)]  # evenly spread points
    _check_byte_order(sample.view(np.float32), sample.byteswap().view(np.float32), bigendian)
    return xyz


def xyz_to_cloud_fields(xyz: np.ndarray, padded: bool = False) -> Dict[str, Any]:
    """(H, W, 3) float32 metres -> organized PointCloud2 fields dict, little endian.

    ``fields`` is a list of ``(name, offset, datatype, count)``; ``point_step`` is 12, or 16 with
    ``padded`` (4 padding bytes per point, as many drivers publish). Invalid points are NaN;
    ``is_dense`` is True only when every point is finite.
    """
    arr = np.asarray(xyz)
    if arr.ndim != 3 or arr.shape[2] != 3:
        raise InputError(f"XYZ map must be (H, W, 3), got shape {arr.shape}")
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



# ------------------------------------------------------------------------------------------- checks
def check_enough_valid_points(xyz: np.ndarray, min_points: int = 16) -> int:
    """Number of valid points; raise InputError when fewer than ``min_points``."""
    count = int(valid_point_mask(xyz).sum())
    if count < min_points:
        raise InputError(
            f"too few valid points in the point cloud: {count} of {xyz.shape[0] * xyz.shape[1]}, need at least {min_points}"
        )
    return count



# ------------------------------------------------------------------------------------- message objects
class MessageFactory:
    """Builds message objects from the ``*_fields`` dicts, for any message library.

    ``classes`` maps ROS type names ("sensor_msgs/msg/Image", "std_msgs/msg/Header",
    "builtin_interfaces/msg/Time", "sensor_msgs/msg/PointField", "sensor_msgs/msg/PointCloud2",
    "sensor_msgs/msg/CameraInfo", "sensor_msgs/msg/RegionOfInterest") to classes taking keyword
    arguments (rclpy message classes, rosbags typestore classes); ``byte_array`` converts the ``data``
    bytes to what the library stores (bytes for rclpy, a uint8 numpy array for rosbags) and
    ``float_array`` the CameraInfo matrices.
    """

    def __init__(self, classes: Callable[[str], Any], byte_array: Callable[[bytes], Any] = bytes,
                 float_array: Callable[[Any], Any] = list):
        self.classes = classes
        self.byte_array = byte_array
        self.float_array = float_array

    def header(self, stamp_ns: int, frame_id: str = ""):
        sec, nanosec = ns_to_stamp(stamp_ns)
        return self.classes("std_msgs/msg/Header")(stamp=self.classes("builtin_interfaces/msg/Time")(
            sec=sec, nanosec=nanosec), frame_id=frame_id)

    def image(self, fields: Mapping[str, Any], header):
        return self.classes("sensor_msgs/msg/Image")(
            header=header, height=int(fields["height"]), width=int(fields["width"]), encoding=fields["encoding"],
            is_bigendian=int(fields["is_bigendian"]), step=int(fields["step"]), data=self.byte_array(fields["data"]))

    def cloud(self, fields: Mapping[str, Any], header):
        point_field = self.classes("sensor_msgs/msg/PointField")
        return self.classes("sensor_msgs/msg/PointCloud2")(
            header=header, height=int(fields["height"]), width=int(fields["width"]),
            fields=[point_field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields["fields"]],
            is_bigendian=bool(fields["is_bigendian"]), point_step=int(fields["point_step"]),
            row_step=int(fields["row_step"]), data=self.byte_array(fields["data"]), is_dense=bool(fields["is_dense"]))

    def camera_info(self, fields: Mapping[str, Any], header):
        roi = self.classes("sensor_msgs/msg/RegionOfInterest")(x_offset=0, y_offset=0, height=0, width=0,
                                                                do_rectify=False)
        return self.classes("sensor_msgs/msg/CameraInfo")(
            header=header, height=int(fields["height"]), width=int(fields["width"]),
            distortion_model=fields["distortion_model"], d=self.float_array(fields["d"]),
            k=self.float_array(fields["k"]), r=self.float_array(fields["r"]), p=self.float_array(fields["p"]),
            binning_x=int(fields["binning_x"]), binning_y=int(fields["binning_y"]), roi=roi)

    def build(self, kind: str, fields: Mapping[str, Any], header):
        """kind: "image" (also depth and mask images), "cloud" or "camera_info"."""
        return {"image": self.image, "cloud": self.cloud, "camera_info": self.camera_info}[kind](fields, header)


__all__: List[str] = [
    "SUPPORTED_IMAGE_ENCODINGS", "POINTFIELD_FLOAT32", "stamp_to_ns", "ns_to_stamp", "header_stamp_ns",
    "image_to_rgb", "rgb_to_image_fields", "mono_to_mask", "cloud_to_xyz", "xyz_to_cloud_fields",
    "valid_point_mask", "check_enough_valid_points", "MessageFactory",
]
