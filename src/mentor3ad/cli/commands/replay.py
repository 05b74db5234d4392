"""``mentor3ad replay BAG``: publish a rosbag2 recording in recording-time order, optionally with /clock.

The same as the ``replay_node`` console script (see :mod:`mentor3ad.ros.nodes.replay`); for machines
where ``ros2 bag play`` is not installed.
"""
from __future__ import annotations


def register(subparsers) -> None:
    from mentor3ad.ros.nodes.replay import add_replay_arguments

    parser = subparsers.add_parser("replay", help="replay a rosbag2 recording into the ROS graph (sim time)",
                                   description=__doc__.split("\n\n")[0])
    add_replay_arguments(parser)
    parser.set_defaults(func=run)


def run(args) -> int:
    from mentor3ad.ros.nodes.replay import replay_bag

    try:
        count = replay_bag(args)
    except ValueError as exc:
        print(f"mentor3ad replay: error: {exc}")
        return 2
    print(f"mentor3ad replay: published {count} messages")
    return 0
