"""Replay a rosbag2 recording (sqlite3 or mcap) into a live ROS graph, for machines without rosbag2.

What ``ros2 bag play --clock`` does for evaluation: messages are published in recording-time order
(the bag's log time), spaced by their recorded time divided by ``--rate``, and ``/clock``
(rosgraph_msgs/Clock) carries the bag's time so nodes with ``use_sim_time`` follow it. The stored
CDR bytes are published as they are (rclpy publishes serialized messages), so every message type
whose Python package is installed can be replayed without conversion.

``--wait-for-publisher inspector/result`` holds playback until the inspector is ready (its ``~/result`` is
advertised once its model is loaded, self-tested and warmed up; start-up takes 10-26 s on a loaded machine),
so no part is played into an inspector that cannot take it yet (exit 1 after ``--wait-timeout``).

Paced replay (``--pace-on /camera/image --pace-results inspector/result``) is for evaluation on a machine
slower than the recording: before each message of the part topic it waits until at most
``--max-in-flight`` parts are without a result (the inspector answers every image exactly once, so results
are counted, not matched). Recorded spacing is kept between waits and /clock stops while waiting, so a
slow CPU evaluates every recorded part instead of answering most of them SKIPPED (queue full).

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

from ...errors import ConfigError, Mentor3ADError

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
    parser.add_argument("--wait-for-publisher", action="append", default=[], metavar="TOPIC",
                        help="before playing, wait until TOPIC has a publisher, e.g. the inspector's ~/result (its "
                             "ready signal: advertised once the model is loaded, self-tested and warmed up); "
                             "repeatable (every TOPIC, e.g. also a robot program's topic); exit 1 without playing "
                             "when one has none after --wait-timeout")
    parser.add_argument("--wait-for-reader", action="append", default=[], metavar="TOPIC",
                        help="before playing, wait until another node subscribes to TOPIC, e.g. an evaluator of the "
                             "inspector's ~/result (results are volatile: a reader that subscribes late misses the "
                             "first parts' results); repeatable; exit 1 without playing when one has none after "
                             "--wait-timeout")
    parser.add_argument("--wait-timeout", type=float, default=20.0,
                        help="seconds to wait for subscribers and for the --wait-for-publisher / --wait-for-reader "
                             "topics")
    parser.add_argument("--start-delay", type=float, default=0.2, help="seconds between discovery and the first message")
    parser.add_argument("--linger", type=float, default=1.0, help="seconds to stay up after the last message")
    parser.add_argument("--pace-on", default="", metavar="TOPIC",
                        help="played topic whose messages are parts (the image topic); with --pace-results")
    parser.add_argument("--pace-results", default="", metavar="TOPIC",
                        help="result topic (diagnostic_msgs/DiagnosticArray, one message per part) to pace by")
    parser.add_argument("--max-in-flight", type=int, default=2, help="parts published without a result, at most")
    parser.add_argument("--pace-timeout", type=float, default=120.0,
                        help="seconds to wait for one part's result before playing on (logged)")
    return parser


class NotReady(Mentor3ADError, RuntimeError):
    """The graph the replay plays into did not come up in time (nothing was played)."""


def wait_until_ready(node: Any, publishers: Dict[str, Any], args: argparse.Namespace) -> None:
    """Wait (up to ``args.wait_timeout`` seconds, graph changes need no spinning) for a publisher on each of
    ``args.wait_for_publisher`` and for a subscriber of another node on each of ``args.wait_for_reader`` (NotReady
    when one does not come), then for a subscriber on every played topic with ``args.wait_for_subscribers`` (a
    warning when one is missing: other consumers may be late or absent)."""
    deadline = time.monotonic() + args.wait_timeout
    start = time.monotonic()
    for topic in args.wait_for_publisher:
        while node.count_publishers(topic) == 0:
            if time.monotonic() > deadline:
                raise NotReady(f"no publisher on {topic} after {args.wait_timeout:g} s: what should answer the "
                               "replay is not ready (its log says why; --wait-timeout waits longer)")
            time.sleep(0.05)
        node.get_logger().info(f"{topic} is advertised (after {time.monotonic() - start:.1f} s)")
    for topic in args.wait_for_reader:
        while other_readers(node, topic) == 0:
            if time.monotonic() > deadline:
                raise NotReady(f"no other node reads {topic} after {args.wait_timeout:g} s: what should read the "
                               "results is not ready (its log says why; --wait-timeout waits longer)")
            time.sleep(0.05)
        node.get_logger().info(f"{topic} has a reader (after {time.monotonic() - start:.1f} s)")
    if args.wait_for_subscribers:
        while any(p.get_subscription_count() == 0 for p in publishers.values()):
            if time.monotonic() > deadline:
                lonely = [t for t, p in publishers.items() if p.get_subscription_count() == 0]
                node.get_logger().warning(f"no subscriber on {lonely} after {args.wait_timeout} s; playing")
                break
            time.sleep(0.05)


def other_readers(node: Any, topic: str) -> int:
    """Subscriptions to ``topic`` (resolved in ``node``'s namespace) of nodes other than ``node`` itself (its
    own result pacer does not count)."""
    name = node.resolve_topic_name(topic)
    mine = (node.get_name(), node.get_namespace())
    return sum(1 for info in node.get_subscriptions_info_by_topic(name)
               if (info.node_name, info.node_namespace) != mine)


class ResultPacer:
    """Counts results on ``topic`` and holds playback while ``max_in_flight`` parts are unanswered.

    Runs on the replay thread: :meth:`wait` spins ``node`` itself."""

    def __init__(self, node: Any, topic: str, max_in_flight: int, timeout_s: float) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        if max_in_flight < 1:
            raise ConfigError(f"--max-in-flight must be >= 1, got {max_in_flight}")
        self.node, self.max_in_flight, self.timeout_s = node, max_in_flight, timeout_s
        self.parts = self.results = self.timeouts = 0
        self.waited_s = 0.0
        self.sub = node.create_subscription(DiagnosticArray, topic, self._count,
                                            QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))

    def _count(self, _msg: Any) -> None:
        self.results += 1

    def wait(self, until_in_flight: int) -> float:
        """Spin until at most ``until_in_flight`` parts lack a result (or the timeout); returns seconds waited."""
        import rclpy

        start = time.monotonic()
        while self.parts - self.results > until_in_flight:
            if time.monotonic() - start > self.timeout_s:
                self.timeouts += 1
                self.node.get_logger().warning(
                    f"{self.parts - self.results} part(s) without a result after {self.timeout_s} s; playing on")
                break
            rclpy.spin_once(self.node, timeout_sec=0.02)
        waited = time.monotonic() - start
        self.waited_s += waited
        return waited

    def before_part(self) -> float:
        waited = self.wait(self.max_in_flight - 1)
        self.parts += 1
        return waited


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
    if bool(args.pace_on) != bool(args.pace_results):
        raise ConfigError("--pace-on and --pace-results go together (the part topic and the result topic)")
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
            if args.pace_on and args.pace_on not in publishers:
                raise ConfigError(f"--pace-on {args.pace_on}: not a played topic; played: {sorted(publishers)}")
            pacer = (ResultPacer(node, args.pace_results, args.max_in_flight, args.pace_timeout)
                     if args.pace_on else None)
            clock_pub = node.create_publisher(Clock, "/clock", 10) if args.clock else None
            wait_until_ready(node, publishers, args)
            time.sleep(max(0.0, args.start_delay))
            connections = [c for c in reader.connections if c.topic in publishers]
            total = sum(c.msgcount for c in connections)
            node.get_logger().info(f"playing {total} messages on {sorted(publishers)} from {directory} "
                                   f"at rate {args.rate}{' with /clock' if clock_pub else ''}"
                                   + (f", paced by {args.pace_results} (at most {args.max_in_flight} part(s) "
                                      f"without a result)" if pacer else ""))
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
                if pacer is not None and connection.topic == args.pace_on:
                    wall_start += pacer.before_part()  # recorded spacing resumes after the wait
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
            if pacer is not None:
                pacer.wait(0)
                node.get_logger().info(f"{pacer.results} result(s) for {pacer.parts} part(s); waited "
                                       f"{pacer.waited_s:.1f} s for results, {pacer.timeouts} timeout(s)")
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
    except NotReady as exc:
        print(f"replay_node: error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"replay_node: error: {exc}", file=sys.stderr)
        return 2
    print(f"replay_node: published {count} messages")
    return 0


if __name__ == "__main__":
    sys.exit(main())
