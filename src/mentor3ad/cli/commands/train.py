"""``mentor3ad train``: train a Mentor3AD detector on good parts (dataset folder or rosbag2 recordings)."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..common import add_common_arguments, add_recording_arguments, config_from_args, topics_from_args

LOG = logging.getLogger("mentor3ad.train")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Mentor3AD detector on good parts (dataset folder or rosbag2 recordings)")
    add_common_arguments(p, data_required=False)
    bags = p.add_argument_group("rosbag2 input (instead of --data; as trainer_node)")
    bags.add_argument("--bag", type=Path, nargs="+", default=None, metavar="BAG",
                      help="recordings of good parts (sqlite3 or mcap rosbag2 directories)")
    bags.add_argument("--val-bag", type=Path, nargs="+", default=(), metavar="BAG",
                      help="held-out good recordings for the threshold (default: the last --val-fraction of --bag)")
    bags.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of --bag pairs")
    add_recording_arguments(bags)
    p.add_argument("--out", type=Path, default=Path("models/mentor3ad.safetensors"), help="checkpoint to write")
    p.add_argument("--no-validation", action="store_true",
                   help="ignore validation/ (then the threshold is calibrated on the training scores)")
    budget = p.add_argument_group("CPU budget (as trainer_node's threads / nice parameters)")
    budget.add_argument("--threads", type=int, default=0,
                        help="torch threads (0: one per core); beside a running inspector use 1")
    budget.add_argument("--nice", type=int, default=0,
                        help="niceness increment, as nice -n (beside a running inspector use 19: it yields, and its "
                             "idle OpenMP threads sleep at once)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...cpu_budget import CpuBudget, apply_budget

    if (args.data is None) == (args.bag is None):
        raise SystemExit("train: give either --data DIR (dataset folder) or --bag BAG [BAG ...] (recordings)")
    budget = CpuBudget(threads=args.threads, nice=args.nice)
    if budget.problem():
        raise SystemExit(f"train: --threads / --nice: {budget.problem()}")
    applied = apply_budget(budget)  # before torch does any work
    LOG.info("CPU budget: %s", applied.describe())
    from ...jobs import load_samples, train_and_save, train_from_bags

    if args.bag:
        detector = train_from_bags([str(b) for b in args.bag], str(args.out),
                                   val_bag_paths=[] if args.no_validation else [str(b) for b in args.val_bag],
                                   val_fraction=0.0 if args.no_validation else args.val_fraction,
                                   config_file=str(args.config or ""), overrides=args.overrides,
                                   input_mode=args.input_mode, topics=topics_from_args(args),
                                   slop_ns=int(args.slop_ms * 1e6), device=args.device,
                                   cache_dir=str(args.cache_dir or ""), shots=args.shots, log=LOG.info)
    else:
        config = config_from_args(args)
        train_samples = load_samples(args.data, "train", shots=args.shots)
        val_samples = None
        if not args.no_validation and (args.data / "validation").is_dir():
            val_samples = load_samples(args.data, "validation")
        LOG.info("training on %d samples from %s (%s validation samples)", len(train_samples), args.data,
                 len(val_samples) if val_samples else "no")
        detector = train_and_save(train_samples, val_samples, config, args.out, args.cache_dir, args.device,
                                  progress=not args.no_progress, log=LOG.info,
                                  info={"data": str(args.data), "shots": args.shots})
    print(json.dumps({"model": str(args.out), "model_id": detector.model_id, "threshold": detector.threshold,
                      "train_seconds": detector.training_info.get("train_seconds"), "cpu_budget": applied.to_dict()}))
    return 0
