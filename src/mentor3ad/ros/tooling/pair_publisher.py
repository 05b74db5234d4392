"""Publish synthetic (or deliberately broken) image + cloud / depth + camera_info pairs.

A commissioning and test tool: ``python -m mentor3ad.ros.tooling.pair_publisher --count 5`` publishes 5
synchronized pairs on ``image`` + ``points`` with stamps ``start + i * period`` and exits. With
``--sequence good,bad_encoding,good`` each pair is built as named (see ``PAIR_KINDS``), which is how
the tests feed every kind of bad input through real DDS.

Scenes: ``plane`` (a tilted plane 0.5 m in front of a pinhole camera, fx = fy = width, textured
image) or ``cell`` (the synthetic inspection cell of :mod:`mentor3ad.data.synthetic`, a machined part
that a model can be trained on; ``--defect`` picks its defect type).
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Any, Dict, List, Optional, Tuple

import numpy as np

from ...io import depth as depth_io
from ...io import msgconv
from ...io.inputs import INPUT_MODES, TOPICS, input_mode
from ..messages import build_messages

PAIR_KINDS = (
    "good",
    "mismatched_sizes",  # cloud one row/column smaller than the image
    "bad_encoding",  # image encoding 32FC1
    "unorganized",  # cloud of height 1
    "missing_fields",  # cloud without z
    "few_points",  # all points NaN
    "truncated",  # image data shorter than height * step
    "zero_intrinsics",  # camera_info with fx = fy = 0 (depth mode)
    "other_frame",  # the 3D data (and camera_info) in frame "camera_depth_optical_frame", the image in "camera"
    "millimetres",  # a cloud in millimetres declared as metres: every point beyond the 10 m working volume
    "lone_image",  # the image only: its 3D data never comes
)
QOS_CHOICES = ("deep", "default", "sensor")  # reliable depth >= 10 | rclpy default (reliable, depth 10) | best effort


def synthetic_scene(width: int, height: int, seed: int = 0) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """-> rgb (H, W, 3) uint8, xyz (H, W, 3) float32 metres, K (3, 3) pinhole intrinsics in pixels."""
    rng = np.random.default_rng(seed)
    f = float(width)
    K = np.array([[f, 0, (width - 1) / 2], [0, f, (height - 1) / 2], [0, 0, 1]], np.float64)
    v, u = np.mgrid[0:height, 0:width].astype(np.float64)
    # plane z = 0.5 + 0.1 * y (metres), intersected with each pixel's ray
    rx, ry = (u - K[0, 2]) / f, (v - K[1, 2]) / f
    z = 0.5 / (1.0 - 0.1 * ry)
    xyz = np.stack([rx * z, ry * z, z], -1).astype(np.float32)
    base = np.stack([u / width * 200, v / height * 200, np.full_like(u, 90)], -1)
    rgb = np.clip(base + rng.normal(0, 8, base.shape), 0, 255).astype(np.uint8)
    return rgb, xyz, K


def cell_scene(width: int, height: int, seed: int = 0, defect: str = "good"):
    """The synthetic cell's sample -> rgb, xyz (invalid = NaN, as ROS drivers publish), K."""
    from ...io.datasets.synthetic import camera_matrix, generate_sample

    sample = generate_sample(seed, (height, width), defect=defect)
    xyz = sample.xyz.astype(np.float32).copy()
    xyz[~msgconv.valid_point_mask(xyz)] = np.nan
    return sample.rgb, xyz, camera_matrix((height, width))


MODES = {**{name: (name,) for name in INPUT_MODES}, "both": tuple(INPUT_MODES)}


def mode_keys(mode: str) -> List[str]:
    """The topic keys published in ``mode`` (an input mode, or "both": every input mode's topics)."""
    return list(dict.fromkeys(key for name in MODES[mode] for key in input_mode(name).keys))


def build_pair(kind: str, width: int, height: int, mode: str, seed: int = 0, scene: str = "plane",
               defect: str = "good") -> Dict[str, Dict[str, Any]]:
    """Field dicts of one pair for the topics of ``mode`` (see :func:`mode_keys`), written by the input
    modes' own writers (:mod:`mentor3ad.io.inputs`), then broken as ``kind`` says.

    In ``both`` mode the cloud is the one depth_image_proc computes from the depth image and camera
    info (:func:`mentor3ad.io.depth.depth_to_xyz`), so both 3D inputs describe exactly the same points.
    """
    if kind not in PAIR_KINDS:
        raise ValueError(f"unknown pair kind {kind!r}; choose from {', '.join(PAIR_KINDS)}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")
    if scene == "cell":
        rgb, xyz, K = cell_scene(width, height, seed, defect)
    elif scene == "plane":
        rgb, xyz, K = synthetic_scene(width, height, seed)
    else:
        raise ValueError(f"scene must be plane or cell, got {scene!r}")
    if kind == "few_points":
        xyz = np.full_like(xyz, np.nan)
    if kind == "millimetres":
        xyz = xyz * 1000.0
    if kind == "mismatched_sizes":
        xyz = xyz[:-1, :-1]
    if len(MODES[mode]) > 1:
        from types import SimpleNamespace

        xyz = depth_io.depth_to_xyz(SimpleNamespace(**depth_io.xyz_to_depth_fields(xyz, "32FC1")),
                                    SimpleNamespace(**depth_io.camera_info_fields(K, xyz.shape[1], xyz.shape[0])))
    pair: Dict[str, Dict[str, Any]] = {"image": msgconv.rgb_to_image_fields(rgb, "rgb8")}
    for name in MODES[mode]:
        pair.update(input_mode(name).to_fields(xyz, K, "32FC1"))
    pair = {key: pair[key] for key in mode_keys(mode)}
    if kind == "bad_encoding":
        pair["image"]["encoding"] = "32FC1"
    if kind == "truncated":
        pair["image"]["data"] = pair["image"]["data"][: len(pair["image"]["data"]) // 2]
    if "points" in pair and kind == "unorganized":
        cloud = pair["points"]
        cloud.update(height=1, width=cloud["height"] * cloud["width"],
                     row_step=cloud["height"] * cloud["width"] * cloud["point_step"])
    if "points" in pair and kind == "missing_fields":
        pair["points"]["fields"] = [f for f in pair["points"]["fields"] if f[0] != "z"]
    if "camera_info" in pair and kind == "zero_intrinsics":
        pair["camera_info"].update(k=[0.0] * 9, p=[0.0] * 12)
    if kind == "lone_image":
        pair = {"image": pair["image"]}
    return pair


OTHER_FRAME = "camera_depth_optical_frame"


def to_messages(pair: Dict[str, Dict[str, Any]], stamp_ns: int, frame_id: str = "camera",
                kind: str = "good") -> Dict[str, Any]:
    """Field dicts -> rclpy messages sharing one header (stamp_ns, frame_id); kind "other_frame": the 3D
    messages in :data:`OTHER_FRAME`."""
    messages = build_messages(pair, stamp_ns, frame_id)
    if kind == "other_frame":
        others = build_messages({k: v for k, v in pair.items() if k != "image"}, stamp_ns, OTHER_FRAME)
        messages.update(others)
    return messages


def main(argv: Optional[List[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="pair_publisher", description=__doc__.split("\n\n")[0])
    parser.add_argument("--count", type=int, default=5, help="number of good pairs (ignored with --sequence)")
    parser.add_argument("--sequence", default="", help=f"comma-separated pair kinds: {', '.join(PAIR_KINDS)}")
    parser.add_argument("--mode", choices=list(MODES), default="points",
                        help="3D topics: an input mode's, or both (every input mode's)")
    parser.add_argument("--scene", choices=("plane", "cell"), default="plane")
    parser.add_argument("--defect", default="good", help="defect type of the cell scene")
    parser.add_argument("--seed", type=int, default=0, help="seed of the first pair (pair i uses seed + i)")
    parser.add_argument("--size", default="64x48", help="WIDTHxHEIGHT")
    parser.add_argument("--rate", type=float, default=10.0, help="pairs per second (0: as fast as possible)")
    parser.add_argument("--start-ns", type=int, default=1_000_000_000_000, help="stamp of the first pair")
    parser.add_argument("--period-ns", type=int, default=100_000_000, help="stamp spacing")
    parser.add_argument("--namespace", default="", help="publish under this namespace")
    parser.add_argument("--qos", choices=QOS_CHOICES, default="deep",
                        help="deep: reliable with a history of every pair (tests); default: rclpy's default "
                             "(reliable, depth 10), as a stock driver; sensor: best effort (sensor-data QoS)")
    parser.add_argument("--wait", type=float, default=20.0, help="seconds to wait for subscribers on every topic")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the last pair")
    args = parser.parse_args(argv)
    width, height = (int(v) for v in args.size.lower().split("x"))
    kinds = [k.strip() for k in args.sequence.split(",") if k.strip()] or ["good"] * args.count

    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy, qos_profile_sensor_data

    from .. import configure_local_discovery
    from ..messages import message_class

    configure_local_discovery()
    rclpy.init()
    node = rclpy.create_node("pair_publisher", namespace=args.namespace or None)
    try:
        qos = {"deep": QoSProfile(depth=max(10, len(kinds)), reliability=ReliabilityPolicy.RELIABLE),
               "default": QoSProfile(depth=10), "sensor": qos_profile_sensor_data}[args.qos]
        topics = mode_keys(args.mode)
        pubs = {t: node.create_publisher(message_class(TOPICS[t].msg_type), TOPICS[t].relative, qos) for t in topics}
        # build every pair (during discovery) so that the publishing rate is not limited by scene generation
        batches = [to_messages(build_pair(kind, width, height, args.mode, seed=args.seed + i, scene=args.scene,
                                          defect=args.defect), args.start_ns + i * args.period_ns, kind=kind)
                   for i, kind in enumerate(kinds)]
        deadline = time.monotonic() + args.wait
        while any(p.get_subscription_count() == 0 for p in pubs.values()):
            if time.monotonic() > deadline:
                print("pair_publisher: no subscriber on " + ", ".join(t for t, p in pubs.items()
                      if p.get_subscription_count() == 0), file=sys.stderr)
                return 1
            time.sleep(0.05)
        # let the matched readers finish their handshake: a best-effort reader that has not yet matched this
        # writer drops what arrives; 1 s (was 0.3 s) leaves room for a loaded machine's discovery
        time.sleep(1.0)
        for msgs in batches:
            for topic in topics:
                if topic in msgs:
                    pubs[topic].publish(msgs[topic])
            if args.rate > 0:
                time.sleep(1.0 / args.rate)
        time.sleep(args.linger)
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return 0


if __name__ == "__main__":
    sys.exit(main())
