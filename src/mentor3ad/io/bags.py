"""rosbag2 recordings <-> samples, with the pure-Python ``rosbags`` library (no ROS install needed).

Writing (:func:`write_dataset_bag`): every sample becomes one stamp shared by all its messages: the
``image`` (sensor_msgs/Image rgb8), the input mode's 3D topics (:mod:`mentor3ad.io.inputs`: an
organized PointCloud2 with NaN for invalid points, or a depth image + camera_info); labelled
samples also get the ``mask`` (mono8, 255 = defect) and every sample a ``sample_info`` std_msgs/String
with JSON ``{"name", "defect", "label"}``. Storage sqlite3 or mcap; mcap files get real CRC-32s in every
chunk, the data section and the summary (``rosbags`` writes 0: :func:`mentor3ad.io.bag_storage.add_mcap_crcs`).

Reading (:func:`read_bag_samples`): image messages are paired with the input mode's topics whose
header stamp is nearest, within ``slop_ns`` (``constant_keys`` such as camera_info: the nearest one,
no tolerance); mask and sample_info are attached when their stamp is within ``slop_ns``.
Topic names: ``topics`` maps topic keys to names (default: :func:`mentor3ad.io.inputs.recorded_topics`).
Before reading, every storage file is checked (:func:`verify_bag`: MCAP structure and CRCs, SQLite
``quick_check``). Every failure is a BagError (the container) or an InputError (a message), naming the bag.
"""
from __future__ import annotations

import bisect
import json
import shutil
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from ..errors import BagError, InputError
from ..geometry.observation import check_observation
from ..types import Sample
from . import msgconv
from .bag_storage import add_mcap_crcs, verify_mcap, verify_sqlite
from .inputs import TOPICS, InputChecks, InputMode, input_mode, recorded_topics

PathLike = Union[str, Path]
DEFAULT_START_STAMP_NS = 1_700_000_000 * 1_000_000_000
STORAGES = ("sqlite3", "mcap")


def _typestore():
    from rosbags.typesys import Stores, get_typestore

    return get_typestore(Stores.ROS2_KILTED if hasattr(Stores, "ROS2_KILTED") else Stores.LATEST)


def rosbags_factory(typestore) -> msgconv.MessageFactory:
    """The :class:`~mentor3ad.io.msgconv.MessageFactory` building ``rosbags`` message objects."""
    return msgconv.MessageFactory(lambda name: typestore.types[name],
                                  byte_array=lambda data: np.frombuffer(data, dtype=np.uint8).copy(),
                                  float_array=lambda values: np.asarray(values, np.float64))


def _why(exc: BaseException) -> str:
    """An exception of a library as one line: ``Type: message`` (YAML and SQLite messages span lines)."""
    return f"{type(exc).__name__}: {' '.join(str(exc).split())}"


def _mode(name: str) -> InputMode:
    try:
        return input_mode(name)
    except ValueError as exc:
        raise BagError(str(exc)) from None


# -------------------------------------------------------------------------------------------- writing
def write_dataset_bag(
    samples: Iterable[Sample],
    bag_path: PathLike,
    storage: str = "sqlite3",
    input_mode: str = "points",
    camera_info: Optional[Any] = None,
    topics: Optional[Mapping[str, str]] = None,
    frame_id: str = "camera_optical_frame",
    start_stamp_ns: int = DEFAULT_START_STAMP_NS,
    period_ns: int = 100_000_000,
    depth_encoding: str = "32FC1",
    overwrite: bool = False,
) -> Path:
    """Write samples to a new rosbag2 directory; returns its path.

    camera_info: the (3, 3) intrinsics K (needed by input modes with ``needs_intrinsics``; also recorded
    with clouds when given). Sample i is stamped ``start_stamp_ns + i * period_ns`` (its ``stamp_ns``
    is not used, so a bag always has increasing stamps).
    """
    from rosbags.rosbag2 import StoragePlugin, Writer

    mode = _mode(input_mode)
    names = recorded_topics(topics)
    if storage not in STORAGES:
        raise BagError(f"unknown storage '{storage}'; expected one of {', '.join(STORAGES)}")
    if mode.needs_intrinsics and camera_info is None:
        raise BagError(f"input_mode '{mode.name}' needs the camera intrinsics (camera_info=K)")
    if period_ns <= 0:
        raise BagError(f"period_ns must be positive, got {period_ns}")
    bag_path = Path(bag_path)
    if bag_path.exists():
        if not overwrite:
            raise BagError(f"{bag_path} already exists (pass overwrite=True / --overwrite to replace it)")
        shutil.rmtree(bag_path)
    bag_path.parent.mkdir(parents=True, exist_ok=True)
    ts = _typestore()
    make = rosbags_factory(ts)
    plugin = {"sqlite3": StoragePlugin.SQLITE3, "mcap": StoragePlugin.MCAP}[storage]
    count = 0
    with Writer(bag_path, version=8, storage_plugin=plugin) as writer:
        conns: Dict[str, Any] = {}

        def connection(key: str):
            if key not in conns:
                conns[key] = writer.add_connection(names[key], TOPICS[key].msg_type, typestore=ts)
            return conns[key]

        for i, sample in enumerate(samples):
            stamp = int(start_stamp_ns + i * period_ns)
            rgb, xyz = np.asarray(sample.rgb), np.asarray(sample.xyz, dtype=np.float32)
            check_observation(rgb, xyz)
            header = make.header(stamp, frame_id)
            fields = {"image": msgconv.rgb_to_image_fields(rgb)}
            fields.update(mode.to_fields(xyz, camera_info, depth_encoding))
            if sample.mask is not None and sample.label is not None:
                mask = (np.asarray(sample.mask) > 0).astype(np.uint8) * 255
                fields["mask"] = msgconv.rgb_to_image_fields(mask, "mono8")
            messages = [(key, make.build(TOPICS[key].kind, value, header)) for key, value in fields.items()]
            info_text = json.dumps({"name": sample.name, "defect": sample.defect, "label": sample.label})
            messages.append(("sample_info", ts.types["std_msgs/msg/String"](data=info_text)))
            for key, msg in messages:
                writer.write(connection(key), stamp, ts.serialize_cdr(msg, TOPICS[key].msg_type))
            count += 1
    if count == 0:
        shutil.rmtree(bag_path, ignore_errors=True)
        raise BagError("no samples to write")
    for path in bag_path.glob("*.mcap"):
        add_mcap_crcs(path)
    return bag_path


# -------------------------------------------------------------------------------------------- reading
def is_bag(path: PathLike) -> bool:
    """A rosbag2 directory (it has metadata.yaml)."""
    return (Path(path) / "metadata.yaml").is_file()


def verify_bag(bag_path: PathLike) -> None:
    """Integrity of a bag's storage files (MCAP CRCs and structure, SQLite quick_check); BagError naming
    the bag, the file and where it is damaged."""
    bag_path = Path(bag_path)
    try:
        for path in sorted(bag_path.glob("*.mcap")):
            verify_mcap(path)
        for path in sorted(bag_path.glob("*.db3")):
            verify_sqlite(path)
    except BagError as exc:
        raise BagError(f"bag {bag_path} is damaged: {exc}") from None
    except OSError as exc:
        raise BagError(f"cannot read bag {bag_path}: {_why(exc)}") from None


def bag_topics(bag_path: PathLike) -> Dict[str, str]:
    """{topic: message type} of a bag (raises BagError for a missing or broken bag)."""
    from rosbags.rosbag2 import Reader

    try:
        with Reader(Path(bag_path)) as reader:
            return {c.topic: c.msgtype for c in reader.connections}
    except Exception as exc:  # rosbags raises several types for unreadable bags
        raise BagError(f"cannot open bag {bag_path}: {_why(exc)}") from None


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
    return sec * msgconv.NS_PER_S + nanosec


def _sample_from_messages(bag_path: Path, index: int, stamp: int, msgs: Dict[str, Any], mode: InputMode,
                          checks: Optional[InputChecks] = None) -> Sample:
    """Convert one synchronized message set (keys image, the mode's topics, mask, sample_info); a pair
    without a single valid 3D point (after the input checks) is an InputError, as in the inspector."""
    try:
        rgb, xyz = mode.convert(msgs, 1, checks)
        sample = Sample(rgb=rgb, xyz=xyz, name=f"{bag_path.name}/{index:04d}", source=f"{bag_path}#{stamp}",
                        stamp_ns=stamp)
        if "mask" in msgs:
            sample.mask = msgconv.mono_to_mask(msgs["mask"])
            if sample.mask.shape != rgb.shape[:2]:
                raise InputError(f"mask size {sample.mask.shape[1]}x{sample.mask.shape[0]} does not match image "
                                 f"size {rgb.shape[1]}x{rgb.shape[0]}")
            sample.label = int(sample.mask.any())
            sample.defect = "good" if sample.label == 0 else "anomalous"
    except InputError as exc:
        raise InputError(f"bag {bag_path}, stamp {stamp}: {exc}") from None
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
    topics: Optional[Mapping[str, str]] = None,
    input_mode: str = "points",
    slop_ns: int = 20_000_000,
    require_mask: bool = False,
    checks: Optional[InputChecks] = None,
) -> Iterator[Sample]:
    """Synchronized samples from one or more bags, in image-stamp order per bag.

    Each Sample has rgb (H, W, 3) uint8, xyz (H, W, 3) float32 m (invalid NaN), ``stamp_ns`` (the
    image header stamp), mask/label from the mask topic when present (else None), name/defect from
    sample_info when present (else ``<bag>/<index>``). Images without a partner within ``slop_ns`` are
    skipped (and, with ``require_mask``, images without a mask). Raises BagError when a bag lacks the
    configured topics (listing the topics it has) or cannot be read, and InputError (naming the bag
    and stamp) for a bad message. ``checks``: the input plausibility rules (default
    :data:`mentor3ad.io.inputs.DEFAULT_CHECKS`, as the inspector applies them).

    Streaming: a first pass reads only the header stamps (from the raw CDR bytes) to plan the
    pairs, the second deserializes messages as they come and yields each sample as soon as it and
    all earlier ones are complete, so memory stays bounded by the pairing window, not the bag size.
    """
    mode = _mode(input_mode)
    names = recorded_topics(topics)
    paths = [bag_paths] if isinstance(bag_paths, (str, Path)) else list(bag_paths)
    if not paths:
        raise BagError("no bag given")
    for bag_path in paths:
        yield from _read_one_bag(Path(bag_path), names, mode, slop_ns, require_mask, checks)


def _plan_pairs(stamps: Dict[str, List[Tuple[int, int]]], mode: InputMode, slop_ns: int,
                require_mask: bool) -> List[Tuple[int, Dict[str, int]]]:
    """[(image stamp, {key: message position})] for every image that has all its partners."""
    stamp_lists = {k: [s for s, _ in v] for k, v in stamps.items()}

    def match(key: str, stamp: int, slop: Optional[int]) -> Optional[int]:
        j = _nearest(stamp_lists[key], stamp)
        if j is None or (slop is not None and abs(stamp_lists[key][j] - stamp) > slop):
            return None
        return stamps[key][j][1]

    plan = []
    for stamp, image_pos in stamps["image"]:
        parts = {"image": image_pos}
        for key in mode.topic_keys:
            partner = match(key, stamp, None if key in mode.constant_keys else slop_ns)
            if partner is None:
                break
            parts[key] = partner
        else:
            mask = match("mask", stamp, slop_ns)
            if mask is not None:
                parts["mask"] = mask
            elif require_mask:
                continue
            sample_info = match("sample_info", stamp, slop_ns)
            if sample_info is not None:
                parts["sample_info"] = sample_info
            plan.append((stamp, parts))
    return plan


def _read_one_bag(bag_path: Path, names: Dict[str, str], mode: InputMode, slop_ns: int,
                  require_mask: bool, checks: Optional[InputChecks]) -> Iterator[Sample]:
    from rosbags.rosbag2 import Reader

    ts = _typestore()
    keys = list(mode.keys) + ["mask", "sample_info"]
    verify_bag(bag_path)
    available = bag_topics(bag_path)
    required = list(mode.keys) + (["mask"] if require_mask else [])
    missing = [names[k] for k in required if names[k] not in available]
    if missing:
        have = ", ".join(f"{t} [{m}]" for t, m in sorted(available.items())) or "no topics"
        raise BagError(f"bag {bag_path} has no topic(s) {', '.join(missing)} (input_mode '{mode.name}'); "
                       f"it has: {have}")
    for key in keys:
        if names[key] in available and available[names[key]] != TOPICS[key].msg_type:
            raise BagError(f"bag {bag_path}: topic {names[key]} has type {available[names[key]]}, "
                           f"expected {TOPICS[key].msg_type}")
    topic_to_key = {names[k]: k for k in keys if names[k] in available}

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
                    stamp = msgconv.header_stamp_ns(ts.deserialize_cdr(raw, msgtype))
                stamps[key].append((stamp, position))
    except BagError:
        raise
    except Exception as exc:  # rosbags/sqlite3/mcap raise many types for broken files
        raise BagError(f"cannot read bag {bag_path} (broken or truncated?): {_why(exc)}") from None
    for key in stamps:
        stamps[key].sort()
    plan = _plan_pairs(stamps, mode, slop_ns, require_mask)
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
                                                   {k: cache[p] for k, p in parts.items()}, mode, checks)
                    for p in parts.values():
                        refcount[p] -= 1
                        if refcount[p] == 0:
                            del cache[p]
                    next_sample += 1
                    yield sample
    except (BagError, InputError):
        raise
    except Exception as exc:
        raise BagError(f"cannot read bag {bag_path} (broken or truncated?): {_why(exc)}") from None
    if next_sample < len(plan):
        raise BagError(f"bag {bag_path}: {len(plan) - next_sample} planned samples were incomplete on the second read")


__all__ = ["STORAGES", "write_dataset_bag", "read_bag_samples", "bag_topics", "is_bag", "verify_bag", "rosbags_factory",
           "DEFAULT_START_STAMP_NS"]
