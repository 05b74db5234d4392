"""Does the calibrated operating point hold? Calibrate on K good parts, measure on fresh good parts.

    ./run.sh exec python benchmarks/calibration_study.py --model runs/demo/model.safetensors [--fresh 200]

On the synthetic inspection cell (any number of fresh good parts can be drawn), with a trained model:
score ``--fresh`` good parts never seen in training or calibration (``validation`` stream, indices after
the dataset's own) and the dataset's defective test parts; then, ``--trials`` times per K, draw K of the
fresh good parts as the calibration set, set the threshold with each rule (``tail``, ``quantile``) at the
model's target false-reject rate, and measure the false-reject rate on the other fresh good parts and the
escape rate (defective parts that PASS). Prints one table row per (rule, K): mean / median / 90th percentile
of the measured false-reject rate and the mean escape rate.
"""
import argparse
import json
from pathlib import Path

import numpy as np

from mentor3ad.io.datasets.synthetic import DEFECT_TYPES, cell_sample
from mentor3ad.model.calibration import calibrate_false_reject
from mentor3ad.model.detector import Detector


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--fresh", type=int, default=200, help="fresh good parts to draw")
    parser.add_argument("--defective", type=int, default=8, help="defective parts per defect type")
    parser.add_argument("--resolution", type=int, default=224)
    parser.add_argument("--ks", type=int, nargs="+", default=[5, 10, 20, 50])
    parser.add_argument("--trials", type=int, default=500)
    parser.add_argument("--cache-dir", type=Path, default=Path("cache/features"))
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    detector = Detector.load(args.model)
    rate = detector.config.calibration.target_false_reject_rate
    size = (args.resolution, args.resolution)
    fresh = [cell_sample("validation", "good", 1000 + i, size) for i in range(args.fresh)]
    defective = [cell_sample("test", d, 1000 + i, size) for d in DEFECT_TYPES for i in range(args.defective)]
    good = np.array([r.score for r in detector.predict_samples(fresh, cache_dir=args.cache_dir, progress=False)])
    bad = np.array([r.score for r in detector.predict_samples(defective, cache_dir=args.cache_dir, progress=False)])
    rng = np.random.default_rng(0)
    rows = []
    print(f"model {detector.model_id}: target false-reject rate {rate:.1%}; {args.fresh} fresh good parts, "
          f"{len(defective)} defective parts ({args.defective} per type), {args.trials} trials per K")
    print("| rule | K good parts | false-reject rate: mean | median | 90th pct | escape rate (mean) |")
    print("|---|---:|---:|---:|---:|---:|")
    for rule in ("tail", "quantile"):
        for k in args.ks:
            if k >= args.fresh:
                continue
            frr, escape = [], []
            for _ in range(args.trials):
                order = rng.permutation(args.fresh)
                threshold = calibrate_false_reject(good[order[:k]], rate, rule=rule)
                frr.append(float(np.mean(good[order[k:]] > threshold)))
                escape.append(float(np.mean(bad <= threshold)))
            row = {"rule": rule, "k": k, "frr_mean": float(np.mean(frr)), "frr_median": float(np.median(frr)),
                   "frr_p90": float(np.percentile(frr, 90)), "escape_mean": float(np.mean(escape))}
            rows.append(row)
            print(f"| {rule} | {k} | {row['frr_mean']:.2%} | {row['frr_median']:.2%} | {row['frr_p90']:.2%} | "
                  f"{row['escape_mean']:.1%} |")
    if args.json:
        args.json.write_text(json.dumps({"model": detector.model_id, "target": rate, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
