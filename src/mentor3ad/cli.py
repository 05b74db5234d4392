"""``mentor3ad`` command-line tool: one sub-command per module in :mod:`mentor3ad.commands`.

Each command module defines ``register(subparsers)`` which adds its parser and sets
``func=run(args) -> int``. Command modules import heavy dependencies (torch, rclpy) inside ``run``
so that ``mentor3ad --help`` stays fast.
"""
from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

# sub-command modules, in the order they are listed by --help
COMMAND_MODULES = [
    "demo",
    "make_data",
    "convert_eyecandies",
    "to_bag",
    "train",
    "evaluate",
    "calibrate",
    "ablate",
    "replay",
    "bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mentor3ad", description="Mentor3AD RGB + 3D anomaly detection: data, training, evaluation, replay."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        if importlib.util.find_spec(f"mentor3ad.commands.{name}") is None:
            continue  # not part of this build
        importlib.import_module(f"mentor3ad.commands.{name}").register(sub)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO, format="%(levelname)s %(name)s: %(message)s"
    )
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
