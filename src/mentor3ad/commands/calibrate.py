"""``mentor3ad calibrate``: re-calibrate a trained model's decision threshold and store it in the model.

Two rules (``mentor3ad.calibration``):
* ``--rule frr`` (default): from good parts only, so that at most ``--target-frr`` of them FAIL;
* ``--rule f1``: from labelled parts (good and defective), the F1-optimal threshold.
The model file is rewritten atomically (or ``--out`` is written); the backbones run once per sample
(features cached with ``--cache-dir``).
"""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("calibrate", help="set a model's threshold from good parts (false-reject rate) or labelled parts (F1)")
    p.add_argument("--model", type=Path, required=True, help="trained checkpoint (.safetensors)")
    p.add_argument("--data", type=Path, required=True, help="dataset folder (MVTec 3D-AD layout) or rosbag2 directory")
    p.add_argument("--split", default=None, choices=["train", "validation", "test"],
                   help="split of a dataset folder (default: validation for frr, test for f1)")
    p.add_argument("--rule", default="frr", choices=["frr", "f1"], help="frr: good parts only; f1: labelled parts")
    p.add_argument("--target-frr", type=float, default=None,
                   help="allowed false-reject rate for --rule frr (default: the model's calibration.target_false_reject_rate)")
    p.add_argument("--out", type=Path, default=None, help="write the re-calibrated model here (default: overwrite --model)")
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--input-mode", default="points", choices=["points", "depth"], help="bag input: cloud or depth")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..calibration import calibrate_f1, calibrate_false_reject, false_reject_rate
    from ..detector import Detector, ModelLoadError
    from .evaluate import load_samples

    try:
        detector = Detector.load(args.model, device=args.device)
    except ModelLoadError as err:
        raise SystemExit(f"calibrate: {err}") from None
    split = args.split or ("validation" if args.rule == "frr" else "test")
    samples = load_samples(args.data, split, args.input_mode, 20_000_000, require_mask=False)
    if not samples:
        raise SystemExit(f"calibrate: no samples in {args.data} ({split})")
    if args.rule == "frr":
        bad = [s.name for s in samples if s.label]
        if bad:
            raise SystemExit(f"calibrate --rule frr needs good parts only; defective: {', '.join(bad[:5])}")
    elif any(s.label is None for s in samples):
        raise SystemExit("calibrate --rule f1 needs labelled parts (good/defective); some samples have no label")

    predictions = detector.predict_samples(samples, cache_dir=args.cache_dir, progress=not args.no_progress)
    scores = [p.score for p in predictions]
    old = detector.threshold
    if args.rule == "frr":
        rate = args.target_frr if args.target_frr is not None else detector.config.calibration.target_false_reject_rate
        threshold = calibrate_false_reject(scores, rate, detector.config.calibration.margin)
        info = {"rule": f"false-reject rate {rate} on {len(scores)} good parts",
                "false_reject_rate": false_reject_rate(scores, threshold)}
    else:
        threshold, f1 = calibrate_f1(scores, [s.label for s in samples])
        info = {"rule": f"F1-optimal on {len(scores)} labelled parts", "f1": f1}
    detector.threshold = threshold
    detector.training_info.update(threshold_source=str(args.data), threshold_rule=info["rule"])
    out = detector.save(args.out or args.model)
    print(json.dumps({"model": str(out), "model_id": detector.model_id, "old_threshold": old,
                      "threshold": threshold, **info}))
    return 0
