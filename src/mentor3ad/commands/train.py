"""``mentor3ad train``: train a Mentor3AD detector on an MVTec 3D-AD layout folder and save one checkpoint."""
from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

LOG = logging.getLogger("mentor3ad.train")


def add_common_arguments(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Arguments shared by ``train`` and ``ablate``."""
    p.add_argument("--data", type=Path, required=data_required,
                   help="MVTec 3D-AD category folder (train/, validation/, test/)")
    p.add_argument("--config", type=Path, default=None, help="model YAML (default: the packaged config/model.yaml)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder (second runs skip the backbones)")
    p.add_argument("--shots", type=int, default=None, help="train on the first K training samples only (few-shot)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set train.mgm_epochs=20; repeatable")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a Mentor3AD detector on good parts (dataset folder or rosbag2 recordings)")
    add_common_arguments(p, data_required=False)
    bags = p.add_argument_group("rosbag2 input (instead of --data; as trainer_node)")
    bags.add_argument("--bag", type=Path, nargs="+", default=None, metavar="BAG",
                      help="recordings of good parts (sqlite3 or mcap rosbag2 directories)")
    bags.add_argument("--val-bag", type=Path, nargs="+", default=(), metavar="BAG",
                      help="held-out good recordings for the threshold (default: the last --val-fraction of --bag)")
    bags.add_argument("--val-fraction", type=float, default=0.2, help="held-out share of --bag pairs")
    bags.add_argument("--input-mode", default="points", choices=["points", "depth"], help="cloud or depth + camera_info")
    bags.add_argument("--image-topic", default="/camera/image")
    bags.add_argument("--points-topic", default="/camera/points")
    bags.add_argument("--depth-topic", default="/camera/depth")
    bags.add_argument("--camera-info-topic", default="/camera/camera_info")
    bags.add_argument("--slop-ms", type=float, default=20.0, help="image to cloud/depth pairing tolerance, ms")
    p.add_argument("--out", type=Path, default=Path("models/mentor3ad.safetensors"), help="checkpoint to write")
    p.add_argument("--no-validation", action="store_true",
                   help="ignore validation/ (then the threshold is calibrated on the training scores)")
    p.set_defaults(func=run)


def load_config(args: argparse.Namespace):
    """Config from --config (or the default YAML) with --set overrides applied; ValueError on bad keys."""
    import yaml

    from ..config import Mentor3ADConfig, default_config_path

    path = args.config or default_config_path()
    if not Path(path).is_file():
        raise SystemExit(f"config file not found: {path}")
    data = yaml.safe_load(Path(path).read_text()) or {}
    for override in args.overrides:
        if "=" not in override or "." not in override.split("=", 1)[0]:
            raise SystemExit(f"--set expects SECTION.KEY=VALUE, got {override!r}")
        dotted, raw = override.split("=", 1)
        section, key = dotted.split(".", 1)
        data.setdefault(section, {})
        if not isinstance(data[section], dict):
            raise SystemExit(f"--set {override}: config section {section!r} is not a mapping")
        data[section][key] = yaml.safe_load(raw)
    try:
        return Mentor3ADConfig.from_dict(data)
    except ValueError as err:
        raise SystemExit(f"{path}: {err}") from None


def run(args: argparse.Namespace) -> int:
    from ..data.bags import BagTopics, read_good_parts
    from ..data.mvtec import load_mvtec_split
    from ..training import train_detector

    if (args.data is None) == (args.bag is None):
        raise SystemExit("train: give either --data DIR (dataset folder) or --bag BAG [BAG ...] (recordings)")
    config = load_config(args)
    source = args.data or [str(b) for b in args.bag]
    try:
        if args.bag:
            topics = BagTopics(image=args.image_topic, points=args.points_topic, depth=args.depth_topic,
                               camera_info=args.camera_info_topic)
            train_samples, val_samples = read_good_parts(args.bag, args.val_bag, args.val_fraction, topics,
                                                         args.input_mode, int(args.slop_ms * 1e6))
            train_samples = train_samples[: args.shots] if args.shots else train_samples
            val_samples = None if args.no_validation else (val_samples or None)
        else:
            train_samples = load_mvtec_split(args.data, "train", shots=args.shots)
            val_samples = None
            if not args.no_validation and (args.data / "validation").is_dir():
                val_samples = load_mvtec_split(args.data, "validation")
    except ValueError as err:  # includes BagError: missing topics (listed), broken bags
        raise SystemExit(f"train: {err}") from None
    LOG.info("training on %d samples from %s (%s validation samples)", len(train_samples), source,
             len(val_samples) if val_samples else "no")
    detector = train_detector(train_samples, config, val_samples=val_samples, cache_dir=args.cache_dir,
                              device=args.device, progress=not args.no_progress, log=LOG.info)
    detector.training_info.update(data=str(source), shots=args.shots)
    detector.save(args.out)
    print(json.dumps({"model": str(args.out), "model_id": detector.model_id, "threshold": detector.threshold,
                      "train_seconds": detector.training_info.get("train_seconds")}))
    return 0
