"""``mentor3ad`` command-line tool: one sub-command per module in :mod:`mentor3ad.cli.commands` (and the
:mod:`mentor3ad.cli.bench` package).

Each command module defines ``register(subparsers)`` which adds its parser and sets
``func=run(args) -> int``; heavy imports (torch, rclpy) happen inside ``run`` so ``--help`` stays fast.
Expected failures (:class:`~mentor3ad.errors.Mentor3ADError`: bad bag, model, config or data) print one
line ``mentor3ad <command>: error: <reason>`` and exit 2 (configuration) or 1 (everything else), and so
does running out of memory (``MemoryError``); the traceback is shown only with ``--debug``.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
import traceback

from ..errors import ConfigError, Mentor3ADError

# sub-command modules, in the order they are listed by --help
COMMAND_MODULES = [
    "mentor3ad.cli.commands.demo",
    "mentor3ad.cli.commands.make_data",
    "mentor3ad.cli.commands.convert_eyecandies",
    "mentor3ad.cli.commands.to_bag",
    "mentor3ad.cli.commands.train",
    "mentor3ad.cli.commands.evaluate",
    "mentor3ad.cli.commands.calibrate",
    "mentor3ad.cli.commands.ablate",
    "mentor3ad.cli.commands.replay",
    "mentor3ad.cli.commands.record",
    "mentor3ad.cli.commands.dashboard",
    "mentor3ad.cli.bench",
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mentor3ad", description="Mentor3AD RGB + 3D anomaly detection: data, training, evaluation, replay."
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(sub)
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
    try:
        return int(args.func(args) or 0)
    except Mentor3ADError as err:
        if args.debug:
            traceback.print_exc()
        print(f"mentor3ad {args.command}: error: {err}", file=sys.stderr)
        return 2 if isinstance(err, ConfigError) else 1
    except MemoryError:  # e.g. a crafted input under a memory limit: one line too, not a traceback
        if args.debug:
            traceback.print_exc()
        print(f"mentor3ad {args.command}: error: out of memory (MemoryError)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
