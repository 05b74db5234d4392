"""``mentor3ad evaluate``: a trained model on a labelled dataset split or test bag -> metrics and report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

from ..common import add_recording_arguments, topics_from_args

log = logging.getLogger("mentor3ad.evaluate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a dataset folder (MVTec 3D-AD layout) or a labelled bag")
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint (.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="category folder, or rosbag2 directory with a mask topic")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split of a folder")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="report folder")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    add_recording_arguments(p)
    p.add_argument("--naive", dest="naive", action="store_true", default=None,
                   help="also score the naive mean-image/depth baseline (default: on for dataset folders)")
    p.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive baseline")
    p.add_argument("--naive-train", type=Path, default=None,
                   help="good samples for the naive baseline: folder (train split) or bag (default: --data's train split)")
    p.add_argument("--gallery", type=int, default=4, help="worst and best samples in the gallery")
    p.add_argument("--title", default=None, help="report title (default: model and data names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...eval.report import dataset_defect_groups
    from ...eval.tables import format_rate_table, print_metric_table, rate_text, report_rows
    from ...io.bags import is_bag
    from ...jobs import evaluate_model, load_samples
    from ...model.detector import Detector

    topics, slop_ns = topics_from_args(args), int(args.slop_ms * 1e6)
    samples = load_samples(args.data, args.split, args.input_mode, topics, slop_ns, require_mask=True)
    detector = Detector.load(args.model, device=args.device)
    log.info("evaluating %s on %d samples of %s", args.model, len(samples), args.data)
    bag = is_bag(args.data)
    naive_train = None
    if args.naive if args.naive is not None else not bag:
        train_path = args.naive_train or (None if bag else args.data)
        if train_path is None:
            raise SystemExit("evaluate: the naive baseline on a bag needs --naive-train (folder or bag of good parts)")
        naive_train = load_samples(train_path, "train", args.input_mode, topics, slop_ns)
    title = args.title or f"{args.model.stem} on {args.data.name}"
    report = evaluate_model(
        detector, samples, out_dir=args.out, title=title, naive_train=naive_train, gallery_size=args.gallery,
        extra={"model_path": str(args.model), "data": str(args.data), "split": None if bag else args.split},
        defect_groups=None if bag else dataset_defect_groups(args.data), cache_dir=args.cache_dir,
        progress=not args.no_progress, log=log.warning)
    m = report["metrics"]
    print(f"{title}: {m['n_images']} images ({m['n_good']} good, {m['n_anomalous']} anomalous), "
          f"model {detector.model_id}")
    print_metric_table(report_rows(report, name="mentor3ad"))
    if "per_defect" in report:
        print()
        print_metric_table([{"name": d, **v} for d, v in report["per_defect"].items()])
    if report.get("per_group"):
        print()
        print_metric_table([{"name": f"good + {g}", **v} for g, v in report["per_group"].items()])
    v, rates = report["verdicts"], report["rates"]
    errors = f", {v['errors']} ERROR (not decided)" if v["errors"] else ""
    print(f"\nat threshold {v['threshold']}: {v['true_positives']} TP, {v['false_positives']} FP, "
          f"{v['true_negatives']} TN, {v['false_negatives']} FN{errors}")
    print(f"escape rate {rate_text(rates['escapes'], rates['defective_parts'])}, false-reject rate "
          f"{rate_text(rates['false_rejects'], rates['good_parts'])} at the model's threshold; per part type:\n")
    print(format_rate_table(rates))
    print(f"report: {args.out / 'report.json'}, plots: roc.png pro.png, gallery: {args.out / 'gallery.html'}")
    return 0
