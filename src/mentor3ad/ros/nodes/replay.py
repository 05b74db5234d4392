"""Replay a rosbag2 recording (sqlite3 or mcap) into a live ROS graph, for machines without rosbag2.

What ``ros2 bag play --clock`` does for evaluation: messages are published in recording-time order
(the bag's log time), spaced by their recorded time divided by ``--rate``, and ``/clock``
(rosgraph_msgs/Clock) carries the bag's time so nodes with ``use_sim_time`` follow it. The stored
CDR bytes are published as they are (rclpy publishes serialized messages), so every message type
whose Python package is installed can be replayed without conversion.

Console script ``replay_node`` and ``mentor3ad replay`` share :func:`add_replay_arguments` and
:func:`replay_bag`.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence

from ...errors import ConfigError

LOG = logging.getLogger(__name__)


def bag_directory(path: str) -> Path:
    """A rosbag2 directory (with metadata.yaml) from a directory or one of its .db3/.mcap files."""
    p = Path(path)
    if p.is_file() and (p.parent / "metadata.yaml").is_file():
        return p.parent
    if p.is_dir() and (p / "metadata.yaml").is_file():
        return p
    raise ConfigError(f"{path}: not a rosbag2 recording (expected a directory with metadata.yaml, or a file in one)")


def add_replay_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    parser.add_argument("bag", help="rosbag2 recording: directory with metadata.yaml (sqlite3 or mcap)")
    parser.add_argument("--rate", type=float, default=1.0, help="playback speed factor (0: as fast as possible)")
    parser.add_argument("--topics", nargs="+", default=None, help="play only these topics (default: all)")
    parser.add_argument("--clock", action="store_true", help="publish /clock with the bag's time (sim time)")
    parser.add_argument("--clock-frequency", type=float, default=100.0, help="/clock messages per second")
    parser.add_argument("--wait-for-subscribers", action="store_true",
                        help="before playing, wait until every played topic has a subscriber (up to --wait-timeout)")
    parser.add_argument("--wait-timeout", type=float, default=20.0, help="seconds to wait for subscribers")
    parser.add_argument("--start-delay", type=float, default=0.2, help="seconds between discovery and the first message")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the last message")
    return parser


def replay_bag(args: argparse.Namespace, ros_args: Optional[Sequence[str]] = None,
               progress: Optional[Callable[[int, int], None]] = None) -> int:
    """Play ``args.bag`` (see :func:`add_replay_arguments`); returns the number of messages published."""
    import rclpy
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from rosbags.rosbag2 import Reader
    from rosgraph_msgs.msg import Clock

    from .. import configure_local_discovery
    from ..messages import message_class

    if args.rate < 0:
        raise ConfigError(f"--rate must be >= 0, got {args.rate}")
    directory = bag_directory(args.bag)
    configure_local_discovery()
    rclpy.init(args=list(ros_args) if ros_args else None)
    node = rclpy.create_node("replay")
    published = 0
    try:
        with Reader(directory) as reader:
            available = {c.topic: c.msgtype for c in reader.connections}
            wanted = set(args.topics) if args.topics else set(available)
            unknown = sorted(wanted - set(available))
            if unknown:
                raise ConfigError(f"{directory}: no topic(s) {unknown} in the bag; it has: {sorted(available)}")
            qos = QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE)
            publishers: Dict[str, Any] = {}
            for topic in sorted(wanted):
                try:
                    publishers[topic] = node.create_publisher(message_class(available[topic]), topic, qos)
                except ConfigError as exc:
                    node.get_logger().warning(f"skipping {topic}: {exc}")
            clock_pub = node.create_publisher(Clock, "/clock", 10) if args.clock else None
            if args.wait_for_subscribers:
                deadline = time.monotonic() + args.wait_timeout
                while any(p.get_subscription_count() == 0 for p in publishers.values()):
                    if time.monotonic() > deadline:
                        lonely = [t for t, p in publishers.items() if p.get_subscription_count() == 0]
                        node.get_logger().warning(f"no subscriber on {lonely} after {args.wait_timeout} s; playing")
                        break
                    time.sleep(0.05)
            time.sleep(max(0.0, args.start_delay))
            connections = [c for c in reader.connections if c.topic in publishers]
            total = sum(c.msgcount for c in connections)
            node.get_logger().info(f"playing {total} messages on {sorted(publishers)} from {directory} "
                                   f"at rate {args.rate}{' with /clock' if clock_pub else ''}")
            wall_start = bag_start = None
            clock_period = 1.0 / args.clock_frequency if args.clock_frequency > 0 else None

            def publish_clock(bag_ns: int) -> None:
                if clock_pub is not None:
                    msg = Clock()
                    msg.clock.sec, msg.clock.nanosec = divmod(int(bag_ns), 1_000_000_000)
                    clock_pub.publish(msg)

            for connection, timestamp, rawdata in reader.messages(connections=connections):
                if wall_start is None:
                    wall_start, bag_start = time.monotonic(), timestamp
                    publish_clock(timestamp)
                if args.rate > 0:
                    due = wall_start + (timestamp - bag_start) / 1e9 / args.rate
                    while True:
                        remaining = due - time.monotonic()
                        if remaining <= 0:
                            break
                        step = min(remaining, clock_period) if clock_period else remaining
                        time.sleep(step)
                        elapsed = (time.monotonic() - wall_start) * args.rate
                        publish_clock(min(timestamp, bag_start + int(elapsed * 1e9)))
                publish_clock(timestamp)
                publishers[connection.topic].publish(bytes(rawdata))
                published += 1
                if progress is not None:
                    progress(published, total)
            time.sleep(max(0.0, args.linger))
    finally:
        node.destroy_node()
        rclpy.try_shutdown()
    return published


def main(argv: Optional[List[str]] = None) -> int:
    """Console script ``replay_node``: ``replay_node BAG [--rate R] [--clock] ... [--ros-args ...]``."""
    from rclpy.utilities import remove_ros_args

    argv = list(sys.argv if argv is None else argv)
    parser = add_replay_arguments(argparse.ArgumentParser(prog="replay_node", description=__doc__.split("\n\n")[0]))
    args = parser.parse_args(remove_ros_args(argv)[1:])
    try:
        count = replay_bag(args, ros_args=argv)
    except KeyboardInterrupt:
        return 130
    except ValueError as exc:
        print(f"replay_node: error: {exc}", file=sys.stderr)
        return 2
    print(f"replay_node: published {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
