"""``mentor3ad calibrate``: re-calibrate a trained model's decision threshold and store it in the model.

Two rules (:mod:`mentor3ad.model.calibration`, via :func:`mentor3ad.jobs.recalibrate`):
* ``--rule frr`` (default): from good parts only, so that at most ``--target-frr`` of them FAIL;
* ``--rule f1``: from labelled parts (good and defective), the F1-optimal threshold. Without ``--split``
  it uses the test split and says so in a warning line on stderr: an evaluation on the same split is then
  optimistic (the threshold was chosen on it).
With ``--rule frr`` it prints the expected false-reject rate and the pseudo-defect escape rate at the new
threshold and a table of alternative operating points (:mod:`mentor3ad.model.escape`; pseudo-defects seeded on
the calibration parts: a pessimistic estimate); the last line of stdout is a JSON summary.
The model file is rewritten atomically (or ``--out`` is written) with the new threshold's record
(``training_info["threshold"]``: a ``recalibration`` of the data and split); the backbones run once per
sample (features cached with ``--cache-dir``).

``--record R`` instead of ``--data``: from the parts an operator confirmed good in an inspection record
(``mentor3ad record confirm``; the newest ``--last`` of them, ``--since`` a time), scored by this model or
the models it was re-calibrated from (:mod:`mentor3ad.records.recalibration`); the new model is added to
the record with its parent, so the next re-calibration finds these scores again.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ..common import add_recording_arguments, topics_from_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="set a model's threshold from good parts (false-reject rate) or labelled parts (F1)")
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint (.safetensors)")
    p.add_argument("--data", type=Path, default=None, help="dataset folder (MVTec 3D-AD layout) or rosbag2 directory")
    p.add_argument("--record", default=None, metavar="PATH_OR_URL",
                   help="instead of --data: an inspection record; calibrates on parts an operator confirmed good")
    p.add_argument("--since", default=None, metavar="TIME", help="with --record: parts from this time (7d = 7 days ago, 2026-05-20)")
    p.add_argument("--last", type=int, default=1000, help="with --record: the newest N confirmed parts (default 1000)")
    p.add_argument("--split", default=None, choices=["train", "validation", "test"],
                   help="split of a dataset folder (default: validation for frr; test for f1, with a warning)")
    p.add_argument("--rule", default="frr", choices=["frr", "f1"], help="frr: good parts only; f1: labelled parts")
    p.add_argument("--target-frr", type=float, default=None,
                   help="allowed false-reject rate for --rule frr (default: the model's calibration.target_false_reject_rate)")
    p.add_argument("--out", type=Path, default=None, help="write the re-calibrated model here (default: overwrite --model)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    add_recording_arguments(p)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...errors import ConfigError
    from ...io.bags import is_bag
    from ...jobs import load_samples, recalibrate
    from ...model.detector import Detector

    if (args.data is None) == (args.record is None):
        raise ConfigError("give --data (a dataset or recording) or --record (an inspection record), not both")
    detector = Detector.load(args.model, device=args.device)
    if args.record is not None:
        return _run_from_record(args, detector)
    bag = is_bag(args.data)
    split = args.split or ("validation" if args.rule == "frr" else "test")
    if args.rule == "f1" and args.split is None and not bag:
        print(f"mentor3ad calibrate: warning: --rule f1 without --split calibrates on the test split of {args.data}; "
              "an evaluation on that split is then optimistic (choose the split with --split)", file=sys.stderr)
    samples = load_samples(args.data, split, args.input_mode, topics_from_args(args), int(args.slop_ms * 1e6))
    info = recalibrate(detector, samples, args.rule, args.target_frr, args.cache_dir, progress=not args.no_progress,
                       data=str(args.data) if bag else f"{args.data} ({split} split)", log=print)
    if args.rule == "frr":
        _print_operating_point(detector.threshold_record)
    out = detector.save(args.out or args.model)
    print(json.dumps({"model": str(out), "model_id": detector.model_id,
                      "split": None if bag else split, **info}))
    return 0


def _print_operating_point(record) -> None:
    """The expected false-reject and pseudo-defect escape rates and the alternatives table (stdout, before
    the JSON summary line)."""
    from ...model import escape

    print(escape.summary(record))
    for line in escape.table(record):
        print(line)


def _run_from_record(args: argparse.Namespace, detector) -> int:
    from ...errors import ConfigError
    from ...records.admin import add_model
    from ...records.models import ModelRecord
    from ...records.reader import RecordReader
    from ...records.recalibration import recalibrate_from_record
    from ...records.timespec import parse_time

    if args.rule != "frr":
        raise ConfigError("--record calibrates on good parts: use --rule frr")
    reader = RecordReader(args.record)
    info = recalibrate_from_record(detector, reader, args.target_frr, parse_time(args.since), args.last)
    print("pseudo-defect escape rate: skipped (an inspection record holds the parts' scores, not the images "
          "to seed pseudo-defects on; re-calibrate with --data for it)")
    _print_operating_point(detector.threshold_record)
    out = detector.save(args.out or args.model)
    add_model(args.record, ModelRecord.from_detector(detector, str(out), info["parent_model_id"]))
    print(json.dumps({"model": str(out), "model_id": detector.model_id, "record": reader.database.describe(), **info}))
    return 0
