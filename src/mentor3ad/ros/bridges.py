"""The ROS distribution's own converters, used where they exist: ``cv_bridge`` and ``sensor_msgs_py``.

The package's converters (:mod:`mentor3ad.io.msgconv`) handle what inspection cameras send (rgb8, bgr8,
rgba8, bgra8, mono8, mono16 images; FLOAT32 x/y/z clouds of any layout and endianness) with validation
and reasons that name the problem, and they need no ROS install. Where a ROS install provides the
standard converters, :func:`normalize` lets them take what ours do not know, so the inspector accepts
every encoding cv_bridge converts (yuv422, bayer_*, rgb16, ...) and clouds whose x/y/z are not FLOAT32
(sensor_msgs_py reads any numeric field type); the result is handed on as an equivalent message that the
package's converter then reads. Without them, such messages get the package converter's named error.
The two implementations are cross-checked by the tests where both are installed.
"""
from __future__ import annotations

import importlib.util
import re
from types import SimpleNamespace
from typing import Any, Dict, Mapping

import numpy as np

from ..errors import InputError
from ..io import msgconv

HAVE_CV_BRIDGE = importlib.util.find_spec("cv_bridge") is not None
HAVE_SENSOR_MSGS_PY = importlib.util.find_spec("sensor_msgs_py") is not None
_BRIDGE = None


def _cv_bridge():
    global _BRIDGE
    if _BRIDGE is None:
        from cv_bridge import CvBridge

        _BRIDGE = CvBridge()
    return _BRIDGE


def _as_message(fields: Dict[str, Any], original: Any) -> SimpleNamespace:
    return SimpleNamespace(header=getattr(original, "header", None), **fields)


def image_via_cv_bridge(msg: Any) -> SimpleNamespace:
    """An image of an encoding the package does not read -> an equivalent rgb8 message (cv_bridge)."""
    try:
        rgb = _cv_bridge().imgmsg_to_cv2(msg, desired_encoding="rgb8")
    except Exception as exc:  # noqa: BLE001 - CvBridgeError, TypeError (short buffers), ...
        raise InputError(f"image ({msg.encoding}) cannot be converted by cv_bridge: {exc}") from None
    return _as_message(msgconv.rgb_to_image_fields(np.ascontiguousarray(rgb[..., :3], dtype=np.uint8)), msg)


def cloud_via_sensor_msgs_py(msg: Any) -> SimpleNamespace:
    """An organized cloud whose x/y/z are not FLOAT32 -> an equivalent FLOAT32 cloud message (sensor_msgs_py)."""
    from sensor_msgs_py import point_cloud2

    try:
        points = point_cloud2.read_points_numpy(msg, field_names=("x", "y", "z"), skip_nans=False)
    except Exception as exc:  # noqa: BLE001 - AssertionError, ValueError, ...
        raise InputError(f"point cloud cannot be read by sensor_msgs_py: {exc}") from None
    xyz = np.asarray(points, dtype=np.float32).reshape(int(msg.height), int(msg.width), 3)
    fields = msgconv.xyz_to_cloud_fields(xyz)
    fields["fields"] = [SimpleNamespace(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields["fields"]]
    return _as_message(fields, msg)


def _needs_sensor_msgs_py(msg: Any) -> bool:
    types = {str(f.name): int(f.datatype) for f in getattr(msg, "fields", [])}
    return all(k in types for k in "xyz") and any(types[k] != msgconv.POINTFIELD_FLOAT32 for k in "xyz")


# single-channel numeric encodings are depth or mask images, never a colour camera: the package's own
# "unsupported image encoding" error names them better than cv_bridge's "not a color format"
NOT_COLOUR = re.compile(r"^(8S|16U|16S|32S|32F|64F)C1$")


def _for_cv_bridge(encoding: str) -> bool:
    return encoding not in msgconv.SUPPORTED_IMAGE_ENCODINGS and not NOT_COLOUR.match(encoding)


def normalize(messages: Mapping[str, Any]) -> Dict[str, Any]:
    """{topic key: message} with images / clouds the package converter cannot read replaced by equivalents
    converted by cv_bridge / sensor_msgs_py (when installed); everything else unchanged."""
    out = dict(messages)
    image = out.get("image")
    if HAVE_CV_BRIDGE and image is not None and _for_cv_bridge(str(image.encoding).strip()):
        out["image"] = image_via_cv_bridge(image)
    cloud = out.get("points")
    if HAVE_SENSOR_MSGS_PY and cloud is not None and _needs_sensor_msgs_py(cloud):
        out["points"] = cloud_via_sensor_msgs_py(cloud)
    return out


__all__ = ["HAVE_CV_BRIDGE", "HAVE_SENSOR_MSGS_PY", "normalize", "image_via_cv_bridge", "cloud_via_sensor_msgs_py"]
