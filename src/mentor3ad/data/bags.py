"""rosbag2 recordings <-> samples, with the pure-Python ``rosbags`` library (no ROS install needed).

Writing (:func:`write_dataset_bag`): every sample becomes one stamp shared by all its messages:
``image`` (sensor_msgs/Image rgb8), then either ``points`` (organized sensor_msgs/PointCloud2, x/y/z
FLOAT32, invalid = NaN) or ``depth`` (sensor_msgs/Image 32FC1 metres or 16UC1 millimetres) +
``camera_info``; labelled samples also get ``mask`` (mono8, 255 = defect) and every sample a
``sample_info`` std_msgs/String with JSON ``{"name", "defect", "label"}``. Storage sqlite3 or mcap.

Reading (:func:`read_bag_samples`): image messages are paired with the cloud (or depth) whose header
stamp is nearest, within ``slop_ns``; camera_info is the nearest one in time (no slop: it is usually
constant); mask and sample_info are attached when their stamp is within ``slop_ns``.
"""
from __future__ import annotations

import bisect
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import msgconv
from ..types import Sample

PathLike = Union[str, Path]
DEFAULT_START_STAMP_NS = 1_700_000_000 * 1_000_000_000


class BagError(ValueError):
    """A bag cannot be written or read (missing topics, broken file ...); the message says which."""


@dataclass
class BagTopics:
    """Topic names used in dataset bags (absolute names as recorded)."""

    image: str = "/camera/image"
    points: str = "/camera/points"
    depth: str = "/camera/depth"
    camera_info: str = "/camera/camera_info"
    mask: str = "/camera/gt_mask"
    sample_info: str = "/dataset/sample_info"


MSG_TYPES = {
    "image": "sensor_msgs/msg/Image",
    "points": "sensor_msgs/msg/PointCloud2",
    "depth": "sensor_msgs/msg/Image",
    "camera_info": "sensor_msgs/msg/CameraInfo",
    "mask": "sensor_msgs/msg/Image",
    "sample_info": "std_msgs/msg/String",
}


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED if hasattr(Stores, "ROS2_KILTED") else Stores.LATEST)


def _check_input_mode(input_mode: str) -> None:
    if input_mode not in ("points", "depth"):
        raise BagError(f"unknown input_mode '{input_mode}'; expected 'points' or 'depth'")


# -------------------------------------------------------------------------------------------- writing
class _MessageFactory:
    """Build rosbags message objects from msgconv field dicts."""

    def __init__(self, typestore):
        self.ts = typestore
        self.T = typestore.types

    def header(self, stamp_ns: int, frame_id: str):
        time_cls = self.T["builtin_interfaces/msg/Time"]
        stamp = time_cls(sec=int(stamp_ns // 1_000_000_000), nanosec=int(stamp_ns % 1_000_000_000))
        return self.T["std_msgs/msg/Header"](stamp=stamp, frame_id=frame_id)

    def image(self, fields: Dict[str, Any], header):
        return self.T["sensor_msgs/msg/Image"](
            header=header, height=fields["height"], width=fields["width"], encoding=fields["encoding"],
            is_bigendian=int(fields["is_bigendian"]), step=fields["step"],
            data=np.frombuffer(fields["data"], dtype=np.uint8).copy(),
        )

    def cloud(self, fields: Dict[str, Any], header):
        point_field = self.T["sensor_msgs/msg/PointField"]
        return self.T["sensor_msgs/msg/PointCloud2"](
            header=header, height=fields["height"], width=fields["width"],
            fields=[point_field(name=n, offset=o, datatype=d, count=c) for n, o, d, c in fields["fields"]],
            is_bigendian=bool(fields["is_bigendian"]), point_step=fields["point_step"], row_step=fields["row_step"],
            data=np.frombuffer(fields["data"], dtype=np.uint8).copy(), is_dense=bool(fields["is_dense"]),
        )

    def camera_info(self, fields: Dict[str, Any], header):
        roi = self.T["sensor_msgs/msg/RegionOfInterest"](x_offset=0, y_offset=0, height=0, width=0, do_rectify=False)
        return self.T["sensor_msgs/msg/CameraInfo"](
            header=header, height=fields["height"], width=fields["width"], distortion_model=fields["distortion_model"],
            d=np.asarray(fields["d"], np.float64), k=np.asarray(fields["k"], np.float64),
            r=np.asarray(fields["r"], np.float64), p=np.asarray(fields["p"], np.float64),
            binning_x=fields["binning_x"], binning_y=fields["binning_y"], roi=roi,
        )

    def string(self, text: str):
        return self.T["std_msgs/msg/String"](data=text)


def write_dataset_bag(
    samples: Iterable[Sample],
    bag_path: PathLike,
    storage: str = "sqlite3",
    input_mode: str = "points",
    camera_info: Optional[Any] = None,
    topics: Optional[BagTopics] = None,
    frame_id: str = "camera_optical_frame",
    start_stamp_ns: int = DEFAULT_START_STAMP_NS,
    period_ns: int = 100_000_000,
    depth_encoding: str = "32FC1",
    overwrite: bool = False,
) -> Path:
    """Write samples to a new rosbag2 directory; returns its path.

    camera_info: the (3, 3) intrinsics K (needed for ``input_mode="depth"``; also recorded with
    clouds when given). Sample i is stamped ``start_stamp_ns + i * period_ns`` (its ``stamp_ns`` is
    not used, so a bag always has increasing stamps).
    """
    import shutil

    from rosbags.rosbag2 import StoragePlugin, Writer

    _check_input_mode(input_mode)
    topics = topics or BagTopics()
    plugins = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}
    if storage not in plugins:
        raise BagError(f"unknown storage '{storage}'; expected sqlite3 or mcap")
    if input_mode == "depth" and camera_info is None:
        raise BagError("input_mode 'depth' needs the camera intrinsics (camera_info=K)")
    if period_ns <= 0:
        raise BagError(f"period_ns must be positive, got {period_ns}")
    bag_path = Path(bag_path)
    if bag_path.exists():
        if not overwrite:
            raise BagError(f"{bag_path} already exists (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(bag_path)
    bag_path.parent.mkdir(parents=True, exist_ok=True)
    ts = _typestore()
    make = _MessageFactory(ts)
    count = 0
    with Writer(bag_path, version=8, storage_plugin=plugins[storage]) as writer:
        wanted = ["image", input_mode] + (["camera_info"] if camera_info is not None else [])
        conns = {key: writer.add_connection(getattr(topics, key), MSG_TYPES[key], typestore=ts) for key in wanted}
        for i, sample in enumerate(samples):
            stamp = int(start_stamp_ns + i * period_ns)
            rgb, xyz = np.asarray(sample.rgb), np.asarray(sample.xyz, dtype=np.float32)
            msgconv.check_aligned(rgb, xyz)
            header = make.header(stamp, frame_id)
            height, width = rgb.shape[:2]
            msgs: List[Tuple[str, Any]] = [("image", make.image(msgconv.rgb_to_image_fields(rgb), header))]
            if input_mode == "points":
                cloud_xyz = np.where(msgconv.valid_point_mask(xyz)[..., None], xyz, np.float32(np.nan))
                msgs.append(("points", make.cloud(msgconv.xyz_to_cloud_fields(cloud_xyz), header)))
            else:
                msgs.append(("depth", make.image(msgconv.xyz_to_depth_fields(xyz, depth_encoding), header)))
            if camera_info is not None:
                info = msgconv.camera_info_fields(camera_info, width, height, frame_id)
                msgs.append(("camera_info", make.camera_info(info, header)))
            if sample.mask is not None and sample.label is not None:
                if "mask" not in conns:
                    conns["mask"] = writer.add_connection(topics.mask, MSG_TYPES["mask"], typestore=ts)
                mask = (np.asarray(sample.mask) > 0).astype(np.uint8) * 255
                msgs.append(("mask", make.image(msgconv.rgb_to_image_fields(mask, "mono8"), header)))
            if "sample_info" not in conns:
                conns["sample_info"] = writer.add_connection(topics.sample_info, MSG_TYPES["sample_info"], typestore=ts)
            info_text = json.dumps({"name": sample.name, "defect": sample.defect, "label": sample.label})
            msgs.append(("sample_info", make.string(info_text)))
            for key, msg in msgs:
                writer.write(conns[key], stamp, ts.serialize_cdr(msg, MSG_TYPES[key]))
            count += 1
    if count == 0:
        shutil.rmtree(bag_path, ignore_errors=True)
        raise BagError("no samples to write")
    return bag_path


# -------------------------------------------------------------------------------------------- reading
def bag_topics(bag_path: PathLike) -> Dict[str, str]:
    """{topic: message type} of a bag (raises BagError for a missing or broken bag)."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(Path(bag_path)) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"cannot open bag {bag_path}: {exc}") from exc


def _stamp_ns(msg: Any) -> int:
    stamp = msg.header.stamp
    return int(stamp.sec) * 1_000_000_000 + int(stamp.nanosec)


def _nearest(stamps: List[int], target: int) -> Optional[int]:
    """Index of the stamp nearest to target in a sorted list (None if empty)."""
    if not stamps:
        return None
    i = bisect.bisect_left(stamps, target)
    candidates = [j for j in (i - 1, i) if 0 <= j < len(stamps)]
    return min(candidates, key=lambda j: abs(stamps[j] - target))


def _raw_header_stamp(raw: Any) -> Optional[int]:
    """Header stamp (ns) read straight from a CDR message that starts with std_msgs/Header, or None.

    CDR layout: 4-byte encapsulation header (byte 1: 0 big endian, 1 little endian), then
    ``stamp.sec`` int32 and ``stamp.nanosec`` uint32.
    """
    buf = memoryview(raw)
    if len(buf) < 12 or buf[0] != 0 or buf[1] not in (0, 1):
        return None
    order = "<" if buf[1] == 1 else ">"
    sec = int(np.frombuffer(buf[4:8], dtype=f"{order}i4")[0])
    nanosec = int(np.frombuffer(buf[8:12], dtype=f"{order}u4")[0])
    return sec * 1_000_000_000 + nanosec


def _sample_from_messages(bag_path: Path, index: int, stamp: int, msgs: Dict[str, Any], input_mode: str) -> Sample:
    """Convert one synchronized message set (keys image, points|depth, camera_info, mask, sample_info)."""
    try:
        rgb = msgconv.image_to_rgb(msgs["image"])
        if input_mode == "points":
            xyz = msgconv.cloud_to_xyz(msgs["points"])
        else:
            xyz = msgconv.depth_to_xyz(msgs["depth"], msgs["camera_info"])
        msgconv.check_aligned(rgb, xyz)
        sample = Sample(rgb=rgb, xyz=xyz, name=f"{bag_path.name}/{index:04d}", source=f"{bag_path}#{stamp}",
                        stamp_ns=stamp)
        if "mask" in msgs:
            sample.mask = msgconv.mono_to_mask(msgs["mask"])
            if sample.mask.shape != rgb.shape[:2]:
                raise msgconv.MessageConversionError(
                    f"mask size {sample.mask.shape[1]}x{sample.mask.shape[0]} does not match image size "
                    f"{rgb.shape[1]}x{rgb.shape[0]}")
            sample.label = int(sample.mask.any())
            sample.defect = "good" if sample.label == 0 else "anomalous"
    except msgconv.MessageConversionError as exc:
        raise msgconv.MessageConversionError(f"bag {bag_path}, stamp {stamp}: {exc}") from exc
    if "sample_info" in msgs:
        try:
            info = json.loads(msgs["sample_info"].data)
        except (TypeError, ValueError):
            info = {}
        if isinstance(info, dict):
            if info.get("name"):
                sample.name = str(info["name"])
            if info.get("defect") and sample.label is not None:
                sample.defect = str(info["defect"])
    return sample


def read_bag_samples(
    bag_paths: Union[PathLike, Sequence[PathLike]],
    topics: Optional[BagTopics] = None,
    input_mode: str = "points",
    slop_ns: int = 20_000_000,
    require_mask: bool = False,
) -> Iterator[Sample]:
    """Synchronized samples from one or more bags, in image-stamp order per bag.

    Each Sample has rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m (invalid NaN), ``stamp_ns`` (the
    image header stamp), mask/label from the mask topic when present (else None), name/defect from
    sample_info when present (else ``<bag>/<index>``). Images without a partner within ``slop_ns`` are
    skipped (and, with ``require_mask``, images without a mask). Raises BagError when a bag lacks the
    configured topics (listing the topics it has) or cannot be read, and
    msgconv.MessageConversionError (naming the bag and stamp) for a bad message.

    Streaming: a first pass reads only the header stamps (from the raw CDR bytes) to plan the
    pairs, the second deserializes messages as they come and yields each sample as soon as it and
    all earlier ones are complete, so memory stays bounded by the pairing window, not the bag size.
    """
    _check_input_mode(input_mode)
    topics = topics or BagTopics()
    paths = [bag_paths] if isinstance(bag_paths, (str, Path)) else list(bag_paths)
    if not paths:
        raise BagError("no bag given")
    for bag_path in paths:
        yield from _read_one_bag(Path(bag_path), topics, input_mode, slop_ns, require_mask)


def _read_one_bag(bag_path: Path, topics: BagTopics, input_mode: str, slop_ns: int,
                  require_mask: bool) -> Iterator[Sample]:
    from rosbags.rosbag2 import Reader

    ts = _typestore()
    keys = ["image", input_mode] + (["camera_info"] if input_mode == "depth" else []) + ["mask", "sample_info"]
    available = bag_topics(bag_path)
    required = ["image", input_mode] + (["camera_info"] if input_mode == "depth" else []) + (
        ["mask"] if require_mask else [])
    missing = [getattr(topics, k) for k in required if getattr(topics, k) not in available]
    if missing:
        have = ", ".join(f"{t} [{m}]" for t, m in sorted(available.items())) or "no topics"
        raise BagError(f"bag {bag_path} has no topic(s) {', '.join(missing)} (input_mode '{input_mode}'); "
                       f"it has: {have}")
    for key in keys:
        topic = getattr(topics, key)
        if topic in available and available[topic] != MSG_TYPES[key]:
            raise BagError(f"bag {bag_path}: topic {topic} has type {available[topic]}, expected {MSG_TYPES[key]}")
    topic_to_key = {getattr(topics, k): k for k in keys if getattr(topics, k) in available}

    def messages(reader):
        conns = [c for c in reader.connections if c.topic in topic_to_key]
        for position, (conn, timestamp, raw) in enumerate(reader.messages(connections=conns)):
            yield position, topic_to_key[conn.topic], conn.msgtype, int(timestamp), raw

    # pass 1: stamps only -> pairing plan
    stamps: Dict[str, List[Tuple[int, int]]] = {k: [] for k in keys}  # key -> [(stamp, position)]
    try:
        with Reader(bag_path) as reader:
            for position, key, msgtype, timestamp, raw in messages(reader):
                # String has no header: use the bag's receive time (write_dataset_bag sets it to the stamp)
                stamp = timestamp if key == "sample_info" else _raw_header_stamp(raw)
                if stamp is None:
                    stamp = _stamp_ns(ts.deserialize_cdr(raw, msgtype))
                stamps[key].append((stamp, position))
    except BagError:
        raise
    except Exception as exc:  # rosbags/sqlite3/mcap raise many types for broken files
        raise BagError(f"cannot read bag {bag_path} (broken or truncated?): {type(exc).__name__}: {exc}") from exc
    for key in stamps:
        stamps[key].sort()
    stamp_lists = {k: [s for s, _ in v] for k, v in stamps.items()}

    def match(key: str, stamp: int, slop: Optional[int]) -> Optional[int]:
        j = _nearest(stamp_lists[key], stamp)
        if j is None or (slop is not None and abs(stamp_lists[key][j] - stamp) > slop):
            return None
        return stamps[key][j][1]

    plan: List[Tuple[int, Dict[str, int]]] = []  # (image stamp, {key: message position})
    for stamp, image_pos in stamps["image"]:
        parts = {"image": image_pos}
        partner = match(input_mode, stamp, slop_ns)
        if partner is None:
            continue
        parts[input_mode] = partner
        if input_mode == "depth":
            info = match("camera_info", stamp, None)
            if info is None:
                continue
            parts["camera_info"] = info
        mask = match("mask", stamp, slop_ns)
        if mask is not None:
            parts["mask"] = mask
        elif require_mask:
            continue
        sample_info = match("sample_info", stamp, slop_ns)
        if sample_info is not None:
            parts["sample_info"] = sample_info
        plan.append((stamp, parts))
    if not plan:
        return
    refcount: Dict[int, int] = {}
    for _, parts in plan:
        for pos in parts.values():
            refcount[pos] = refcount.get(pos, 0) + 1

    # pass 2: deserialize needed messages in bag order, emit samples in plan order when complete
    cache: Dict[int, Any] = {}
    next_sample = 0
    try:
        with Reader(bag_path) as reader:
            for position, key, msgtype, _, raw in messages(reader):
                if position not in refcount:
                    continue
                cache[position] = ts.deserialize_cdr(raw, msgtype)
                while next_sample < len(plan) and all(p in cache for p in plan[next_sample][1].values()):
                    stamp, parts = plan[next_sample]
                    sample = _sample_from_messages(bag_path, next_sample, stamp,
                                                   {k: cache[p] for k, p in parts.items()}, input_mode)
                    for p in parts.values():
                        refcount[p] -= 1
                        if refcount[p] == 0:
                            del cache[p]
                    next_sample += 1
                    yield sample
    except (BagError, msgconv.MessageConversionError):
        raise
    except Exception as exc:
        raise BagError(f"cannot read bag {bag_path} (broken or truncated?): {type(exc).__name__}: {exc}") from exc
    if next_sample < len(plan):
        raise BagError(f"bag {bag_path}: {len(plan) - next_sample} planned samples were incomplete on the second read")


__all__ = ["BagError", "BagTopics", "MSG_TYPES", "write_dataset_bag", "read_bag_samples", "bag_topics",
           "DEFAULT_START_STAMP_NS"]


def split_validation(samples: list, val_fraction: float):
    """-> (train, val): the last ``ceil(val_fraction * n)`` samples (at least 1 when n >= 2) held out."""
    import math

    if not 0.0 <= val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(samples)
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, math.ceil(val_fraction * n))
    return samples[: n - n_val], samples[n - n_val:]


def read_good_parts(
    bag_paths: Sequence[PathLike],
    val_bag_paths: Sequence[PathLike] = (),
    val_fraction: float = 0.2,
    topics: Optional[BagTopics] = None,
    input_mode: str = "points",
    slop_ns: int = 20_000_000,
) -> Tuple[List[Sample], List[Sample]]:
    """Training and held-out samples from recordings of good parts.

    Without ``val_bag_paths`` the last ``val_fraction`` of the pairs are held out for calibration.
    Unlabelled pairs are labelled good (0); a pair labelled anomalous is left so for the trainer to refuse.
    """
    if not bag_paths:
        raise ValueError("no training recordings given")
    samples = list(read_bag_samples(list(bag_paths), topics, input_mode, slop_ns))
    if not samples:
        raise ValueError(f"no synchronized image/{input_mode} pairs in {list(map(str, bag_paths))} within {slop_ns} ns")
    if val_bag_paths:
        train, val = samples, list(read_bag_samples(list(val_bag_paths), topics, input_mode, slop_ns))
    else:
        train, val = split_validation(samples, val_fraction)
    for sample in train + val:
        if sample.label is None:
            sample.label = 0
    return train, val
