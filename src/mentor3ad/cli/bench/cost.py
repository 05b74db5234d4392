"""``mentor3ad bench --cost-table``: how cost grows with the work, for the config being benchmarked.

* Per-part latency at camera sizes (``--cost-sizes``, W x H; default 224x224, 448x448, 640x480, 1280x720):
  test parts of the synthetic cell rendered at that size, run in-process through exactly what the
  inspector's worker runs (:func:`.stages.run_in_process`: conversion from deserialized messages,
  ``Detector.predict``, building the outputs), batch 1, the bench model.
* Training time at numbers of good parts (``--cost-parts``; default 25, 50, 100, 220) of the cell at
  ``--cost-part-size`` (default 400x400, the cable_gland size): the features of the largest set are
  extracted once first (timed: the cold cost per part), then each row trains from the feature cache, so
  the rows show what the heads' training and the calibration cost. ``cold`` = cached + the parts' measured
  extraction time (an estimate, not a second run). Each row also times scoring one held-out part: the
  trained heads, and a PatchCore RGB+3D bank of ``--coreset-ratio`` of that many parts' patches (random
  rows instead of the k-center coreset, which would take hours at 220 parts: the nearest-neighbour search
  costs the same): a bank grows with the training set, the heads do not.
"""
from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

DEFAULT_SIZES = "224x224,448x448,640x480,1280x720"
DEFAULT_PARTS = "25,50,100,220"
LATENCY_STAGES = (("rgb_backbone", "RGB backbone"), ("point_descriptors", "3D descriptors"),
                  ("heads", "heads"), ("post", "post"))


def parse_size(text: str) -> Tuple[int, int]:
    """'640x480' (width x height) -> (height, width); SystemExit naming the value otherwise."""
    try:
        width, height = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise SystemExit(f"bench: a size is WIDTHxHEIGHT, e.g. 640x480, got {text!r}") from None
    if min(width, height) < 16:
        raise SystemExit(f"bench: sizes must be at least 16 pixels each way, got {text!r}")
    return height, width


def parse_counts(text: str) -> List[int]:
    try:
        counts = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        counts = []
    if not counts or min(counts) < 2:
        raise SystemExit(f"bench: --cost-parts is a list of part counts >= 2, e.g. 25,50,100,220, got {text!r}")
    return counts


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--cost-table: latency vs input size, training time vs number of parts")
    g.add_argument("--cost-table", action="store_true", help="also print how cost grows with input size and parts")
    g.add_argument("--cost-sizes", default=DEFAULT_SIZES, help="input sizes WxH of the latency rows")
    g.add_argument("--cost-frames", type=int, default=5, help="timed parts per size (after one warm-up part)")
    g.add_argument("--cost-parts", default=DEFAULT_PARTS, help="numbers of good parts of the training rows")
    g.add_argument("--cost-part-size", default="400x400", help="size WxH of the training rows' parts")


def check_arguments(args: argparse.Namespace) -> None:
    if args.cost_table:
        [parse_size(v) for v in args.cost_sizes.split(",")]
        parse_size(args.cost_part_size)
        parse_counts(args.cost_parts)
        if args.cost_frames < 1:
            raise SystemExit(f"--cost-frames must be >= 1, got {args.cost_frames}")


def latency_rows(detector, args: argparse.Namespace, device, with_messages: bool,
                 log: Callable[[str], None]) -> List[Dict[str, Any]]:
    """One row per --cost-sizes entry: median / p95 ms end to end and of the main stages."""
    from .frames import FRAME_DEFECTS, SerializedFrame
    from .stages import run_in_process, summarize
    from ...io.datasets.synthetic import cell_sample

    rows = []
    for text in args.cost_sizes.split(","):
        height, width = parse_size(text)
        samples = [cell_sample("test", FRAME_DEFECTS[i % 2], i // 2, (height, width))
                   for i in range(min(args.cost_frames + 1, 4))]
        frames = [SerializedFrame(s, 1_000_000_000_000 + i * 100_000_000) for i, s in enumerate(samples)]
        series, _ = run_in_process(detector, frames, 1, args.cost_frames, device, with_messages, False)
        series["heads"] = [sum(v) for v in zip(*(series[k] for k in ("heads_mfm", "heads_mgm", "heads_vm",
                                                                     "heads_other")))]
        series["post"] = [sum(v) for v in zip(*(series[k] for k in ("post_upsample", "post_regions", "post_other")))]
        row = {"width": width, "height": height, "end_to_end": summarize(series["end_to_end"]),
               **{key: summarize(series[key]) for key, _ in LATENCY_STAGES}}
        rows.append(row)
        log(f"{width}x{height}: {row['end_to_end']['median_ms']:.1f} ms per part")
    return rows


def training_rows(config, args: argparse.Namespace, device, work_dir: Path,
                  log: Callable[[str], None]) -> Dict[str, Any]:
    """Feature extraction once for the largest set, then one cached training per --cost-parts count, each
    with the scoring time of the heads and of a PatchCore bank of that training set's size."""
    from ...features.cache import extract_features
    from ...features.extractor import FeatureExtractor, settle_auto_options, stack_features
    from ...io.datasets.synthetic import cell_sample
    from ...model.training import train_detector

    counts = parse_counts(args.cost_parts)
    size = parse_size(args.cost_part_size)
    parts = [cell_sample("train", "good", i, size) for i in range(max(counts))]
    val = [cell_sample("validation", "good", i, size) for i in range(max(1, args.val_samples))]
    config, note = settle_auto_options(config, parts, str(device))  # once, for every count
    if note:
        log(note)
    extractor = FeatureExtractor(config.features, str(device))
    cache = work_dir / "cost_features"
    started = time.perf_counter()
    features = stack_features(extract_features(parts + val, extractor, cache))
    per_part = (time.perf_counter() - started) / (len(parts) + len(val))
    log(f"features of {len(parts) + len(val)} parts ({size[1]}x{size[0]}): {per_part:.2f} s per part")
    query = features.subset(slice(len(parts), len(parts) + 1))  # a held-out part
    rows = []
    for count in counts:
        started = time.perf_counter()
        detector = train_detector(parts[:count], config, val_samples=val, cache_dir=cache, device=str(device),
                                  progress=False, log=lambda message: None, extractor=extractor)
        wall = time.perf_counter() - started
        heads = float(detector.training_info.get("train_seconds") or float("nan"))
        scoring = scoring_times(detector, features.subset(slice(0, count)), query, args.coreset_ratio, device)
        rows.append({"parts": count, "cached_s": wall, "heads_s": heads, "cached_s_per_part": wall / count,
                     "cold_s_estimate": wall + per_part * (count + len(val)), **scoring})
        log(f"{count} parts: {wall:.1f} s with cached features ({heads:.1f} s head training); scoring a part: "
            f"heads {scoring['heads_scoring_ms']:.1f} ms, PatchCore bank of {scoring['bank_patches']} "
            f"{scoring['patchcore_scoring_ms']:.1f} ms")
    return {"part_width": size[1], "part_height": size[0], "val_parts": len(val), "features_s_per_part": per_part,
            "coreset_ratio": args.coreset_ratio, "rows": rows}


def scoring_times(detector, train, query, ratio: float, device, repeats: int = 3) -> Dict[str, Any]:
    """Median ms to score ``query`` (one part's FeatureSet): the detector's heads (grid maps), and the
    nearest-neighbour search of PatchCore RGB+3D against ``ratio`` of ``train``'s patches (random rows)."""
    import statistics

    import torch

    from ...eval.patchcore import nearest_neighbours, patches_of

    def rows(grid):
        return grid.permute(0, 2, 3, 1).reshape(-1, grid.shape[1]).to(device)

    patches = rows(patches_of(train, "rgb+xyz"))
    keep = max(1, int(ratio * patches.shape[0]))
    bank = patches[torch.randperm(patches.shape[0], generator=torch.Generator().manual_seed(0))[:keep]].contiguous()
    queries = rows(patches_of(query, "rgb+xyz"))
    heads, banks = [], []
    for _ in range(repeats):
        started = time.perf_counter()
        detector.grid_maps(query)
        middle = time.perf_counter()
        with torch.no_grad():
            nearest_neighbours(queries, bank)
        heads.append(middle - started)
        banks.append(time.perf_counter() - middle)
    return {"heads_scoring_ms": statistics.median(heads) * 1e3, "patchcore_scoring_ms": statistics.median(banks) * 1e3,
            "bank_patches": keep}


def format_cost(latency: List[Dict[str, Any]], training: Dict[str, Any]) -> str:
    """The two Markdown tables."""
    stages = " | ".join(f"{label} ms" for _, label in LATENCY_STAGES)
    lines = [f"| input (W x H) | per part ms (median) | p95 ms | {stages} |",
             "|---|---:|---:|" + "---:|" * len(LATENCY_STAGES)]
    for row in latency:
        cells = " | ".join(f"{row[key]['median_ms']:.1f}" for key, _ in LATENCY_STAGES)
        lines.append(f"| {row['width']}x{row['height']} | {row['end_to_end']['median_ms']:.1f} | "
                     f"{row['end_to_end']['p95_ms']:.1f} | {cells} |")
    lines += ["", f"| good parts ({training['part_width']}x{training['part_height']}, + {training['val_parts']} "
              "held out) | training s, cached features | of which head training s | s per part "
              "| cold s (+ feature extraction, est.) | scoring a part: heads ms | PatchCore RGB+3D ms (bank) |",
              "|---:|---:|---:|---:|---:|---:|---:|"]
    for row in training["rows"]:
        lines.append(f"| {row['parts']} | {row['cached_s']:.1f} | {row['heads_s']:.1f} | "
                     f"{row['cached_s_per_part']:.2f} | {row['cold_s_estimate']:.1f} | {row['heads_scoring_ms']:.1f} | "
                     f"{row['patchcore_scoring_ms']:.1f} ({row['bank_patches']}) |")
    lines += ["", f"feature extraction (cold): {training['features_s_per_part']:.2f} s per part"]
    return "\n".join(lines)


__all__ = ["add_arguments", "check_arguments", "latency_rows", "training_rows", "format_cost", "parse_size",
           "DEFAULT_SIZES", "DEFAULT_PARTS"]
