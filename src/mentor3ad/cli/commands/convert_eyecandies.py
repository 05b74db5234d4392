"""``mentor3ad convert-eyecandies SRC DST``: Eyecandies raw category folder -> MVTec 3D-AD layout."""
from __future__ import annotations

import argparse
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("convert-eyecandies", help="convert an Eyecandies category (raw layout) to the MVTec 3D-AD layout")
    p.add_argument("src", type=Path, help="Eyecandies category folder with train/, val/, test_public/ (each data/)")
    p.add_argument("dst", type=Path, help="output category folder")
    p.add_argument("--focal-length", type=float, default=711.11, help="pixels (711.11 for the 512x512 renders)")
    p.add_argument("--frame", choices=["world", "camera"], default="world",
                   help="point coordinates: world (pose applied, as the public converter) or camera")
    p.add_argument("--max-depth", type=float, default=None, help="metres; farther points become background (0)")
    p.add_argument("--remove-plane", type=float, default=None, metavar="METRES",
                   help="also zero the points within METRES of the dominant (support) plane (RANSAC)")
    p.add_argument("--image-index", type=int, default=4, help="which lighting image <id>_image_<N>.png to use")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ...io.datasets.eyecandies import convert_eyecandies

    counts = convert_eyecandies(args.src, args.dst, args.focal_length, args.frame, args.max_depth, args.image_index,
                                args.remove_plane)
    print(f"converted {sum(counts.values())} samples to {args.dst}: " + ", ".join(f"{k} {v}" for k, v in counts.items()))
    return 0
