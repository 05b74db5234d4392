"""``mentor3ad to-bag``: one split of an MVTec 3D-AD-layout folder -> a rosbag2 recording."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("to-bag", help="convert a dataset split (MVTec 3D-AD layout) into a rosbag2 recording")
    p.add_argument("--data", type=Path, required=True, help="category folder (MVTec 3D-AD layout)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--out", type=Path, required=True, help="bag directory to create")
    p.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--input-mode", default="points", choices=["points", "depth"],
                   help="points: organized PointCloud2; depth: 32FC1 depth + camera_info (needs intrinsics)")
    p.add_argument("--camera-info", type=Path, default=None,
                   help="camera_info.yaml with the intrinsics (default: <data>/camera_info.yaml when present)")
    p.add_argument("--depth-encoding", default="32FC1", choices=["32FC1", "16UC1"])
    p.add_argument("--shots", type=int, default=None, help="only the first K samples")
    p.add_argument("--rate", type=float, default=10.0, help="sample rate (Hz) that sets the stamps")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import numpy as np
    import yaml

    from ..data.bags import write_dataset_bag
    from ..data.mvtec import load_mvtec_split

    info_path = args.camera_info or (args.data / "camera_info.yaml")
    K = None
    if info_path.is_file():
        info = yaml.safe_load(info_path.read_text())
        try:
            K = np.asarray(info["camera_matrix"]["data"], dtype=np.float64).reshape(3, 3)
        except (KeyError, TypeError, ValueError) as exc:
            raise SystemExit(f"to-bag: {info_path} has no valid camera_matrix: {exc}")
    elif args.camera_info is not None:
        raise SystemExit(f"to-bag: {info_path} does not exist")
    if args.input_mode == "depth" and K is None:
        raise SystemExit(f"to-bag: --input-mode depth needs intrinsics; {info_path} not found (use --camera-info)")
    if args.rate <= 0:
        raise SystemExit("to-bag: --rate must be positive")
    samples = load_mvtec_split(args.data, args.split, shots=args.shots)
    bag = write_dataset_bag(samples, args.out, storage=args.storage, input_mode=args.input_mode, camera_info=K,
                            period_ns=int(1e9 / args.rate), depth_encoding=args.depth_encoding,
                            overwrite=args.overwrite)
    labelled = sum(s.mask is not None for s in samples)
    print(f"wrote {len(samples)} samples ({labelled} with ground-truth masks) of {args.data}/{args.split} to {bag} "
          f"[{args.storage}, {args.input_mode}]")
    return 0
