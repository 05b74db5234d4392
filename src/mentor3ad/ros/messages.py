"""rclpy messages from numpy arrays and message field dicts: the one builder used by the nodes, the tools
and the benchmarks (recordings use the same :class:`~mentor3ad.io.msgconv.MessageFactory` with rosbags'
classes, :func:`mentor3ad.io.bags.rosbags_factory`)."""
from __future__ import annotations

import importlib
from typing import Any, Dict, Mapping

import numpy as np

from ..errors import ConfigError
from ..io import msgconv
from ..io.inputs import TOPICS


def message_class(msg_type: str) -> Any:
    """'sensor_msgs/msg/Image' -> the rclpy message class; ConfigError when its package is not installed."""
    parts = msg_type.split("/")
    if len(parts) != 3:
        raise ConfigError(f"unexpected message type name {msg_type!r} (expected pkg/msg/Name)")
    try:
        return getattr(importlib.import_module(f"{parts[0]}.{parts[1]}"), parts[2])
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"message type {msg_type} is not installed: {exc}") from None


FACTORY = msgconv.MessageFactory(message_class)


def header(stamp_ns: int, frame_id: str = ""):
    """std_msgs/Header with ``stamp_ns`` nanoseconds."""
    return FACTORY.header(stamp_ns, frame_id)


def image_from_array(msg_header: Any, array: np.ndarray, encoding: str):
    """numpy (H, W) float32 (32FC1), (H, W) uint8 (mono8) or (H, W, 3) uint8 (bgr8/rgb8) -> sensor_msgs/Image."""
    arr = np.ascontiguousarray(array)
    height, width = arr.shape[:2]
    return FACTORY.image(dict(height=height, width=width, encoding=encoding, is_bigendian=0,
                              step=int(arr.strides[0]), data=arr.tobytes()), msg_header)


def build_messages(fields: Mapping[str, Mapping[str, Any]], stamp_ns: int, frame_id: str = "camera") -> Dict[str, Any]:
    """{topic key: field dict} (keys of :data:`mentor3ad.io.inputs.TOPICS`) -> {key: rclpy message}, one header."""
    shared = header(stamp_ns, frame_id)
    return {key: FACTORY.build(TOPICS[key].kind, value, shared) for key, value in fields.items()}


def available() -> bool:
    """True when rclpy and the standard message packages import (they do in the project venv)."""
    try:
        for name in ("rclpy.serialization", "sensor_msgs.msg", "diagnostic_msgs.msg"):
            importlib.import_module(name)
    except ImportError:
        return False
    return True


def serialize(msg: Any) -> bytes:
    """CDR bytes of an rclpy message (what DDS carries)."""
    from rclpy.serialization import serialize_message

    return serialize_message(msg)


def deserialize(data: bytes, msg_type: str) -> Any:
    """CDR bytes -> rclpy message of ``msg_type`` ("sensor_msgs/msg/Image")."""
    from rclpy.serialization import deserialize_message

    return deserialize_message(data, message_class(msg_type))


__all__ = ["FACTORY", "message_class", "header", "image_from_array", "build_messages", "available", "serialize",
           "deserialize"]
