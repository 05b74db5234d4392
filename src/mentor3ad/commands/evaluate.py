"""``mentor3ad evaluate``: a trained model on a labelled dataset split or test bag -> metrics and report."""
from __future__ import annotations

import argparse
import logging
from pathlib import Path

log = logging.getLogger("mentor3ad.evaluate")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="evaluate a model on a dataset folder (MVTec 3D-AD layout) or a labelled bag")
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint (.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="category folder, or rosbag2 directory with a mask topic")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"], help="split of a folder")
    p.add_argument("--out", type=Path, default=Path("runs/evaluate"), help="report folder")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--input-mode", default="points", choices=["points", "depth"], help="bag input: cloud or depth")
    p.add_argument("--slop-ms", type=float, default=20.0, help="bag pairing tolerance in milliseconds")
    p.add_argument("--naive", dest="naive", action="store_true", default=None,
                   help="also score the naive mean-image/depth baseline (default: on for dataset folders)")
    p.add_argument("--no-naive", dest="naive", action="store_false", help="skip the naive baseline")
    p.add_argument("--naive-train", type=Path, default=None,
                   help="good samples for the naive baseline: folder (train split) or bag (default: --data's train split)")
    p.add_argument("--gallery", type=int, default=4, help="worst and best samples in the gallery")
    p.add_argument("--title", default=None, help="report title (default: model and data names)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def is_bag(path: Path) -> bool:
    """A rosbag2 directory (has metadata.yaml) or a single .mcap/.db3 file's folder."""
    return (path / "metadata.yaml").is_file()


def load_samples(path: Path, split: str, input_mode: str, slop_ns: int, require_mask: bool):
    from ..data.bags import read_bag_samples
    from ..data.mvtec import load_mvtec_split

    if is_bag(path):
        return list(read_bag_samples(path, input_mode=input_mode, slop_ns=slop_ns, require_mask=require_mask))
    return load_mvtec_split(path, split)


def run(args: argparse.Namespace) -> int:
    from ..baselines import NaiveBaseline
    from ..detector import Detector, ModelLoadError
    from ..evaluation import dataset_defect_groups, evaluate_predictions, print_metric_table, report_rows

    if not args.data.exists():
        raise SystemExit(f"evaluate: {args.data} does not exist")
    try:
        detector = Detector.load(args.model, device=args.device)
    except ModelLoadError as exc:
        raise SystemExit(f"evaluate: cannot load the model: {exc}")
    slop_ns = int(args.slop_ms * 1e6)
    samples = load_samples(args.data, args.split, args.input_mode, slop_ns, require_mask=True)
    if not samples:
        raise SystemExit(f"evaluate: no labelled samples in {args.data}")
    log.info("evaluating %s on %d samples of %s", args.model, len(samples), args.data)
    predictions = detector.predict_samples(samples, cache_dir=args.cache_dir, progress=not args.no_progress)

    naive_predictions = None
    use_naive = args.naive if args.naive is not None else not is_bag(args.data)
    if use_naive:
        train_path = args.naive_train or (None if is_bag(args.data) else args.data)
        if train_path is None:
            raise SystemExit("evaluate: the naive baseline on a bag needs --naive-train (folder or bag of good parts)")
        train = load_samples(train_path, "train", args.input_mode, slop_ns, require_mask=False)
        try:
            naive_predictions = NaiveBaseline().fit(train).predict_samples(samples)
        except ValueError as exc:
            log.warning("naive baseline skipped: %s", exc)

    identity = detector.identity
    title = args.title or f"{args.model.stem} on {args.data.name}"
    report = evaluate_predictions(
        samples, predictions, out_dir=args.out, title=title, naive=naive_predictions, gallery_size=args.gallery,
        extra={"model_path": str(args.model), "data": str(args.data), "split": None if is_bag(args.data) else args.split,
               "model": identity, "timings_s": detector.timings()},
        defect_groups=None if is_bag(args.data) else dataset_defect_groups(args.data),
    )
    m = report["metrics"]
    print(f"{title}: {m['n_images']} images ({m['n_good']} good, {m['n_anomalous']} anomalous), "
          f"model {identity.get('model_id')}")
    print_metric_table(report_rows(report, name="mentor3ad"))
    if "per_defect" in report:
        print()
        print_metric_table([{"name": d, **v} for d, v in report["per_defect"].items()])
    if report.get("per_group"):
        print()
        print_metric_table([{"name": f"good + {g}", **v} for g, v in report["per_group"].items()])
    v = report["verdicts"]
    print(f"\nat threshold {v['threshold']}: {v['true_positives']} TP, {v['false_positives']} FP, "
          f"{v['true_negatives']} TN, {v['false_negatives']} FN")
    print(f"report: {args.out / 'report.json'}, plots: roc.png pro.png, gallery: {args.out / 'gallery.html'}")
    return 0
