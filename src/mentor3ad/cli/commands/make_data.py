"""``mentor3ad make-data``: write the synthetic inspection cell as an MVTec 3D-AD category folder."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    from ...io.datasets.synthetic import DEFECT_TYPES

    p = sub.add_parser("make-data", help="generate the synthetic inspection cell dataset (MVTec 3D-AD layout)")
    p.add_argument("--out", type=Path, required=True, help="output category folder")
    p.add_argument("--n-train", type=int, default=20, help="good training samples")
    p.add_argument("--n-val", type=int, default=5, help="good validation samples (threshold calibration)")
    p.add_argument("--n-test-good", type=int, default=10, help="good test samples")
    p.add_argument("--n-test-per-defect", type=int, default=4, help="test samples per defect type")
    p.add_argument("--resolution", type=int, nargs="+", default=[224], metavar="N",
                   help="image size: N (square) or H W (default 224)")
    p.add_argument("--defects", nargs="+", default=list(DEFECT_TYPES), choices=list(DEFECT_TYPES),
                   help="defect types of the test split")
    p.add_argument("--defect-strength", type=float, default=1.0, help="scales defect depth/height and colour contrast")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...io.datasets.synthetic import CellConfig, generate_cell_dataset

    if len(args.resolution) not in (1, 2):
        raise SystemExit("make-data: --resolution takes N or H W")
    resolution = tuple(args.resolution) if len(args.resolution) == 2 else (args.resolution[0],) * 2
    counts = (args.n_train, args.n_val, args.n_test_good, args.n_test_per_defect)
    if min(counts) < 0 or args.n_train == 0:
        raise SystemExit("make-data: sample counts must be >= 0 and --n-train >= 1")
    info = generate_cell_dataset(
        args.out, n_train=args.n_train, n_val=args.n_val, n_test_good=args.n_test_good,
        n_test_per_defect=args.n_test_per_defect, resolution=resolution, seed=args.seed,
        defect_types=args.defects, config=CellConfig(defect_strength=args.defect_strength),
    )
    total = sum(info["counts"].values())
    print(f"wrote {total} samples to {args.out} in {info['generation_seconds']} s: "
          + ", ".join(f"{k} {v}" for k, v in info["counts"].items()))
    return 0
