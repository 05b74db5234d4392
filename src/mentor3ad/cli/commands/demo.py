"""``mentor3ad demo``: the main job on the embedded default data (the synthetic inspection cell).

1. generate the synthetic cell dataset (deterministic, seed 0) unless it already exists;
2. train Mentor3AD on its good parts (backbone features cached on disk), calibrate the threshold on the
   held-out good parts, save the checkpoint;
3. evaluate on its test split beside the naive baseline: metric table, JSON report, curves, gallery;
4. unless --no-ros: replay the test split as a rosbag through the real inspector and evaluator nodes
   (console scripts over DDS), print one PASS/FAIL line per part, and keep every replayed part in the
   inspection record ``<work-dir>/record.sqlite`` (evidence beside it; replaced on every run), which
   ``mentor3ad dashboard --record <work-dir>/record.sqlite`` shows.
"""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

from ..common import add_config_arguments, config_from_args

LOG = logging.getLogger("mentor3ad.demo")

# dataset sizes of the embedded default data
# 20 held-out good parts: enough for the threshold rule (a tail model of the good scores) to mean something
DEMO_DATASET = dict(n_train=20, n_val=20, n_test_good=10, n_test_per_defect=4, resolution=(224, 224), seed=0)
METRIC_TOLERANCE = 1e-4  # ROS replay vs offline metrics (see _replay_stage)


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("demo", help="run the main job on the embedded synthetic inspection cell")
    p.add_argument("--work-dir", type=Path, default=Path("runs/demo"), help="outputs (model, report, bags)")
    p.add_argument("--data", type=Path, default=Path("data/synthetic_cell"), help="dataset folder (generated if missing)")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"), help="backbone feature cache")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where local backbone weight files are looked up")
    add_config_arguments(p)
    p.add_argument("--dataset-scale", type=float, default=1.0,
                   help="scale the generated dataset's sample counts (e.g. 0.25 for a smoke run)")
    p.add_argument("--resolution", type=int, default=224, help="generated image size (pixels, square)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--no-ros", action="store_true", help="skip the ROS replay stage")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


def _dataset(args) -> Path:
    from ...io.datasets.synthetic import generate_cell_dataset

    spec = dict(DEMO_DATASET, resolution=(args.resolution, args.resolution))
    for key in ("n_train", "n_val", "n_test_good", "n_test_per_defect"):
        spec[key] = max(1 if key != "n_train" else 2, round(spec[key] * args.dataset_scale))
    marker = args.data / "dataset.json"
    counts = {"train/good": spec["n_train"], "validation/good": spec["n_val"], "test/good": spec["n_test_good"]}
    if marker.is_file():
        existing = json.loads(marker.read_text())
        same = (existing.get("resolution") == list(spec["resolution"]) and existing.get("seed") == spec["seed"]
                and all(existing.get("counts", {}).get(key) == value for key, value in counts.items()))
        if same:
            LOG.info("using the existing synthetic cell dataset in %s", args.data)
            return args.data
        if existing.get("name") != "mentor3ad synthetic inspection cell":
            raise SystemExit(f"{args.data} holds another dataset ({marker}); remove it or pass --data")
        import shutil

        print(f"      {args.data} holds another version of the synthetic cell: generating it again")
        shutil.rmtree(args.data)
    print(f"[1/4] generating the synthetic inspection cell in {args.data} ...", flush=True)
    info = generate_cell_dataset(args.data, **spec)
    print(f"      {sum(info['counts'].values())} samples in {info['generation_seconds']} s: {info['counts']}")
    return args.data


def run(args: argparse.Namespace) -> int:
    import os
    from ...eval.tables import print_metric_table, report_rows
    from ...jobs import evaluate_model, load_samples, train_and_save

    data = _dataset(args)
    config = config_from_args(args)
    os.environ["MENTOR3AD_MODELS_DIR"] = str(args.models_dir)  # where rgb/point_weights "auto" look first
    train, val, test = (load_samples(data, split) for split in ("train", "validation", "test"))
    args.work_dir.mkdir(parents=True, exist_ok=True)
    model_path = args.work_dir / "model.safetensors"

    print(f"[2/4] training Mentor3AD on {len(train)} good parts ({len(val)} held out for the threshold); "
          f"features cached in {args.cache_dir}", flush=True)
    detector = train_and_save(train, val, config, model_path, args.cache_dir, args.device,
                              progress=not args.no_progress, log=LOG.info, info={"data": str(data)})
    print(f"      model {detector.model_id} -> {model_path} (threshold {detector.threshold:.4f}, "
          f"{detector.training_info.get('train_seconds', float('nan')):.1f} s of head training)")
    print("      backbone weights: " + "; ".join(detector.extractor.weights_sources.values()))

    print(f"[3/4] evaluating on {len(test)} test parts "
          f"({sum(1 for s in test if s.label)} defective) beside the naive baseline", flush=True)
    report_dir = args.work_dir / "report"
    report = evaluate_model(detector, test, out_dir=report_dir, title="Mentor3AD on the synthetic cell",
                            naive_train=train, cache_dir=args.cache_dir, progress=not args.no_progress,
                            extra={"model_path": str(model_path), "rgb_weights": config.features.rgb_weights,
                                   "point_weights": config.features.point_weights})
    print_metric_table(report_rows(report, name="Mentor3AD"))
    print_operating_point(report, data, detector.threshold)
    print(f"      report: {report_dir}/report.json, curves and gallery in {report_dir}")

    if args.no_ros:
        print("[4/4] ROS replay skipped (--no-ros)")
        return 0
    return _replay_stage(model_path, test, data, args.work_dir, report)


def print_operating_point(report: dict, data: Path, threshold: float) -> None:
    """What the cell would do at the calibrated threshold: defective parts caught per family, good parts passed."""
    from ...eval.report import dataset_defect_groups

    families = {d: f for f, members in (dataset_defect_groups(data) or {}).items() for d in members}
    caught, total = {}, {}
    for sample in report["samples"]:
        family = "good" if not sample["label"] else families.get(sample["defect"], sample["defect"])
        total[family] = total.get(family, 0) + 1
        caught[family] = caught.get(family, 0) + int(bool(sample["is_anomalous"]) == bool(sample["label"]))
    parts = [f"{name} {caught[name]}/{total[name]} caught" for name in sorted(total) if name != "good"]
    defective = sum(total[n] for n in total if n != "good")
    print(f"      at the calibrated threshold {threshold:.4g}: " + ", ".join(parts)
          + f" ({sum(caught[n] for n in total if n != 'good')}/{defective} defective parts FAIL); "
          f"good parts PASS {caught.get('good', 0)}/{total.get('good', 0)}")


def _replay_stage(model_path: Path, test: list, data: Path, work_dir: Path, offline_report: dict) -> int:
    """Write the test split as a rosbag and replay it through the live inspector + evaluator graph."""
    import math

    from ...io.bags import write_dataset_bag
    from ...io.datasets.synthetic import load_camera_matrix
    from ...ros.tooling.graph import run_replay_evaluation

    bag = work_dir / "test_bag"
    # one part per second, as a conveyor would present them (sample i is stamped start + i * period)
    start_ns, period_ns = 1_800_000_000 * 10**9, 1_000_000_000
    write_dataset_bag(test, bag, storage="mcap", camera_info=load_camera_matrix(data), start_stamp_ns=start_ns,
                      period_ns=period_ns, overwrite=True)
    print(f"[4/4] replaying {len(test)} test parts from {bag} (mcap) through inspector_node + evaluator_node "
          "over DDS", flush=True)
    names = {start_ns + i * period_ns: sample.name for i, sample in enumerate(test)}

    def show(result):
        where = ""
        if result.regions:
            r = result.regions[0]
            area_txt = f", {r.area_mm2:.1f} mm^2" if math.isfinite(r.area_mm2) else ""
            where = f"  largest region bbox {list(r.bbox)}{area_txt}"
        score_txt = f"score {result.score:.4f}" if math.isfinite(result.score) else result.reason
        print(f"      {names.get(result.stamp_ns, result.stamp_ns):<22} {result.verdict.value:<7} {score_txt}"
              f"  {result.latency_ms:.0f} ms{where}", flush=True)

    record = _fresh_record(work_dir / "record.sqlite")
    out = run_replay_evaluation(model_path, bag, work_dir / "ros_report", n_pairs=len(test), rate=1.0,
                                on_result=show, inspector_params={"record_path": str(record.resolve()),
                                                                  "record_part_type": "synthetic_cell"})
    verdicts = [r.verdict.value for r in out["results"]]
    print(f"      {len(verdicts)} results for {len(test)} parts: " +
          ", ".join(f"{v} {verdicts.count(v)}" for v in ("PASS", "FAIL", "ERROR", "SKIPPED")))
    ros_metrics = out["report"]["metrics"]
    # the inspector runs its heads with its own thread count: bf16 sums in another order move scores by
    # ~1e-3 relative (README, "Quick start"), so verdicts must be equal and metrics equal to METRIC_TOLERANCE
    offline_verdicts = {p["name"]: p["is_anomalous"] for p in offline_report["samples"]}
    ros_verdicts = {p["name"]: p["is_anomalous"] for p in out["report"]["samples"]}
    differences = [abs(ros_metrics[k] - offline_report["metrics"][k]) for k in ("i_auroc", "p_auroc", "aupro_30", "aupro_1")
                   if isinstance(ros_metrics.get(k), float) and math.isfinite(ros_metrics[k])]
    same = ros_verdicts == offline_verdicts and all(d < METRIC_TOLERANCE for d in differences)
    print(f"      ROS replay verdicts and metrics {'match' if same else 'DIFFER FROM'} the offline evaluation "
          f"(I-AUROC {ros_metrics['i_auroc']:.3f}, largest metric difference {max(differences, default=0.0):.1e}); "
          f"report in {work_dir / 'ros_report'}")
    recorded = _recorded_parts(record)
    print(f"      inspection record: {recorded} of {len(test)} parts in {record} (evidence in {record}.evidence); "
          f"the operator dashboard on them:\n        ./run.sh mentor3ad dashboard --record {record}   "
          "(then open http://127.0.0.1:8050/)")
    return 0 if len(verdicts) == len(test) == recorded and same else 1


def _fresh_record(record: Path) -> Path:
    """``record`` with the previous run's record (SQLite file, its WAL files, its evidence) removed."""
    import shutil

    for path in (record, record.with_name(record.name + "-wal"), record.with_name(record.name + "-shm")):
        path.unlink(missing_ok=True)
    shutil.rmtree(record.with_name(record.name + ".evidence"), ignore_errors=True)
    return record


def _recorded_parts(record: Path) -> int:
    """Results in the record (0 when there is none)."""
    from ...records import RecordReader
    from ...records.database import RecordError

    reader = RecordReader(record)
    try:
        return sum(reader.verdict_counts().values())
    except RecordError as err:
        print(f"      the inspection record cannot be read: {err}")
        return 0
    finally:
        reader.close()
