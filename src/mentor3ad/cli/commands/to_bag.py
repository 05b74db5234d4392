"""``mentor3ad to-bag``: one split of an MVTec 3D-AD-layout folder -> a rosbag2 recording."""
from __future__ import annotations

import argparse
from pathlib import Path

from ...io.inputs import INPUT_MODES, input_mode, input_mode_help


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("to-bag", help="convert a dataset split (MVTec 3D-AD layout) into a rosbag2 recording")
    p.add_argument("--data", type=Path, required=True, help="category folder (MVTec 3D-AD layout)")
    p.add_argument("--split", default="test", choices=["train", "validation", "test"])
    p.add_argument("--out", type=Path, required=True, help="bag directory to create")
    p.add_argument("--storage", default="sqlite3", choices=["sqlite3", "mcap"])
    p.add_argument("--input-mode", default="points", choices=list(INPUT_MODES), help=input_mode_help())
    p.add_argument("--camera-info", type=Path, default=None,
                   help="camera_info.yaml with the intrinsics (default: <data>/camera_info.yaml when present)")
    p.add_argument("--depth-encoding", default="32FC1", choices=["32FC1", "16UC1"])
    p.add_argument("--shots", type=int, default=None, help="only the first K samples")
    p.add_argument("--rate", type=float, default=10.0, help="sample rate (Hz) that sets the stamps")
    p.add_argument("--overwrite", action="store_true", help="replace an existing bag")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...io.bags import write_dataset_bag
    from ...io.datasets.synthetic import load_camera_matrix
    from ...jobs import load_samples

    info_path = args.camera_info or (args.data / "camera_info.yaml")
    if args.camera_info is not None and not info_path.is_file():
        raise SystemExit(f"to-bag: {info_path} does not exist")
    K = load_camera_matrix(info_path)
    if input_mode(args.input_mode).needs_intrinsics and K is None:
        raise SystemExit(f"to-bag: --input-mode {args.input_mode} needs intrinsics; {info_path} not found "
                         "(use --camera-info)")
    if args.rate <= 0:
        raise SystemExit("to-bag: --rate must be positive")
    samples = load_samples(args.data, args.split, shots=args.shots)
    bag = write_dataset_bag(samples, args.out, storage=args.storage, input_mode=args.input_mode, camera_info=K,
                            period_ns=int(1e9 / args.rate), depth_encoding=args.depth_encoding,
                            overwrite=args.overwrite)
    labelled = sum(s.mask is not None for s in samples)
    print(f"wrote {len(samples)} samples ({labelled} with ground-truth masks) of {args.data}/{args.split} to {bag} "
          f"[{args.storage}, {args.input_mode}]")
    return 0
