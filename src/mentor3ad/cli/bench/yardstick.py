"""Mentor3AD's heads next to the same-features PatchCore yardsticks, per part, in the bench's run.

Each frame's features are extracted once (the bench model's FeatureExtractor, batch 1) and shared: every
scorer turns the same FeatureSet into its answer, timed in two steps: ``scoring`` (grid maps: Mentor3AD's
MFM + MGM + Voting Module heads, or PatchCore's nearest-neighbour distances to its memory bank) and
``post`` (upsampling + smoothing to the input size, verdict and regions: :func:`mentor3ad.model.scoring.judge`).
The banks are built as ``mentor3ad ablate`` builds them (:meth:`PatchCore.for_detector`: the detector's
post-processing, threshold rule and seed; a ``--coreset-ratio`` coreset of every grid cell's patch, BTF) from
the features of the bench model's training parts and calibrated on its held-out parts.
"""
from __future__ import annotations

import argparse
import time
from typing import Any, Callable, Dict, List, Sequence, Tuple

# (key, label, PatchCore modality or None for the detector's heads)
SCORERS: List[Tuple[str, str, Any]] = [("mentor3ad", "Mentor3AD heads", None),
                                       ("patchcore_rgb", "PatchCore RGB", "rgb"),
                                       ("patchcore_rgb_xyz", "PatchCore RGB+3D (BTF)", "rgb+xyz")]
PARTS = ("features", "scoring", "post", "per_part")


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--no-patchcore", action="store_true",
                   help="skip the same-features PatchCore yardsticks (RGB, RGB+3D) timed beside the heads")
    p.add_argument("--coreset-ratio", type=float, default=0.1,
                   help="share of the training patches a PatchCore bank keeps (as mentor3ad ablate)")


def check_arguments(args: argparse.Namespace) -> None:
    if not 0.0 < args.coreset_ratio <= 1.0:
        raise SystemExit(f"--coreset-ratio must be in (0, 1], got {args.coreset_ratio}")


def fit_yardsticks(detector, train: Sequence, val: Sequence, cache_dir, coreset_ratio: float, device,
                   log: Callable[[str], None]) -> Tuple[Dict[str, Any], Dict[str, Any]]:
    """PatchCore RGB and RGB+3D on the features of ``train`` (good parts), calibrated on ``val`` ->
    ({key: PatchCore}, {key: {bank_patches, train_patches, channels, fit_s}})."""
    from ...eval.patchcore import PatchCore
    from ...features.cache import extract_features
    from ...features.extractor import stack_features

    started = time.perf_counter()
    train_features = stack_features(extract_features(list(train), detector.extractor, cache_dir))
    val_features = stack_features(extract_features(list(val), detector.extractor, cache_dir)) if val else None
    log(f"PatchCore: features of {len(train)} + {len(val)} parts in {time.perf_counter() - started:.1f} s")
    cores, info = {}, {}
    for key, label, modality in SCORERS[1:]:
        started = time.perf_counter()
        core = PatchCore.for_detector(detector.config, modality, coreset_ratio=coreset_ratio, device=device)
        core.fit(train_features, val_features, [s.rgb.shape[:2] for s in val] if val else None)
        cores[key] = core
        info[key] = {"bank_patches": core.timings["bank_patches"], "train_patches": core.timings["train_patches"],
                     "channels": int(core.bank.shape[1]), "fit_s": time.perf_counter() - started,
                     "threshold": core.threshold}
        log(f"{label}: bank of {info[key]['bank_patches']} x {info[key]['channels']} from "
            f"{info[key]['train_patches']} patches in {info[key]['fit_s']:.1f} s")
    return cores, info


def time_scorers(detector, cores: Dict[str, Any], samples: Sequence, warmup: int, count: int,
                 device) -> Dict[str, Dict[str, List[float]]]:
    """Per part (seconds): shared feature extraction, then each scorer's scoring and post-processing ->
    {scorer key: {features, scoring, post, per_part: [seconds per timed part]}}."""
    from ...features.extractor import stack_features
    from ...geometry.observation import check_observation
    from ...model.scoring import ScoredParts, judge

    def now() -> float:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        return time.perf_counter()

    scorers = {"mentor3ad": detector, **cores}
    series = {key: {part: [] for part in PARTS} for key in scorers}
    for i in range(warmup + count):
        sample = samples[i % len(samples)]
        rgb, xyz = check_observation(sample.rgb, sample.xyz)
        started = now()
        features = stack_features(detector.extractor.extract_batch([rgb], [xyz]))
        extracted = now()
        for key, scorer in scorers.items():
            begin = now()
            grid = scorer.grid_maps(features)
            scored = now()
            amap, level = scorer.post.upsample(grid[0:1], rgb.shape[:2])
            judge(ScoredParts([amap], [xyz], [level]), scorer.threshold, scorer.model_id)
            done = now()
            if i >= warmup:
                timing = series[key]
                timing["features"].append(extracted - started)
                timing["scoring"].append(scored - begin)
                timing["post"].append(done - scored)
                timing["per_part"].append(extracted - started + done - begin)
    return series


def summarize_scorers(series: Dict[str, Dict[str, List[float]]], info: Dict[str, Any], detector) -> Dict[str, Any]:
    """Statistics per scorer and part (ms), with what each scores with (bank size or head parameters)."""
    from .stages import summarize

    heads = sum(int(p.numel()) for p in detector.heads.parameters())
    out = {}
    for key, label, _ in SCORERS:
        if key not in series:
            continue
        out[key] = {"label": label, **{part: summarize(values) for part, values in series[key].items()},
                    **({"head_parameters": heads} if key == "mentor3ad" else info.get(key, {}))}
    return out


def format_yardsticks(stats: Dict[str, Any]) -> str:
    """Markdown table: median ms per part and step, and the heads' speed-up over each bank."""
    lines = ["| scorer (same features, batch 1) | features ms (shared) | scoring ms | post + verdict ms "
             "| per part ms | p95 ms | scores with |", "|---|---:|---:|---:|---:|---:|---|"]
    for key, row in stats.items():
        what = (f"heads, {row['head_parameters'] / 1e6:.2f} M parameters" if key == "mentor3ad" else
                f"bank {row['bank_patches']} x {row['channels']} ({row['bank_patches'] / row['train_patches']:.0%} "
                f"of {row['train_patches']} patches)")
        lines.append(f"| {row['label']} | {row['features']['median_ms']:.1f} | {row['scoring']['median_ms']:.1f} | "
                     f"{row['post']['median_ms']:.1f} | {row['per_part']['median_ms']:.1f} | "
                     f"{row['per_part']['p95_ms']:.1f} | {what} |")
    heads = stats.get("mentor3ad")
    if heads is not None and len(stats) > 1:
        lines.append("")
    for key, row in stats.items():
        if key != "mentor3ad" and heads is not None:
            lines.append(f"Mentor3AD speed-up over {row['label']} (> 1: the heads are faster): "
                         f"{row['per_part']['median_ms'] / heads['per_part']['median_ms']:.2f}x per part, "
                         f"{row['scoring']['median_ms'] / heads['scoring']['median_ms']:.2f}x scoring alone")
    return "\n".join(lines)


__all__ = ["SCORERS", "add_arguments", "check_arguments", "fit_yardsticks", "time_scorers", "summarize_scorers",
           "format_yardsticks"]
