"""``mentor3ad ablate``: train/evaluate full Mentor3AD, w/o voting, w/o mentor and the CFM baseline.

All variants share the cached backbone features. Training is deterministic and the VM stage comes last,
so "w/o voting" is the full model's MFM + MGM without its Voting Module (identical weights to a separate
run) and "CFM" is the "w/o mentor" model's MGM without its Voting Module: two trainings give four rows.
"""
from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

from ..common import add_common_arguments, config_from_args

LOG = logging.getLogger("mentor3ad.ablate")

VARIANTS = {
    # name: (use_mentor, use_voting, score maps)
    "Mentor3AD": (True, True, ["rgb", "xyz", "mtr"]),
    "w/o voting": (True, False, ["rgb", "xyz", "mtr"]),
    "w/o mentor": (False, True, ["rgb", "xyz"]),
    "CFM baseline": (False, False, ["rgb", "xyz"]),
}
METRIC_KEYS = ("i_auroc", "p_auroc", "aupro_30", "aupro_1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="ablation table: Mentor3AD, w/o voting, w/o mentor, CFM baseline")
    add_common_arguments(p)
    p.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS), metavar="NAME",
                   help=f"rows to compute (default all: {', '.join(VARIANTS)})")
    p.add_argument("--json", type=Path, default=None, help="also write the table (and model identities) as JSON")
    p.add_argument("--save-dir", type=Path, default=None, help="also save every variant's checkpoint here")
    p.set_defaults(func=run)


def without_voting(detector):
    """Same MFM + MGM weights, final map = plain product of the used score maps."""
    from ...model.detector import Detector
    from ...model.heads import Mentor3ADHeads

    config = detector.config.copy()
    config.model.use_voting = False
    heads = Mentor3ADHeads(detector.heads.rgb_dim, detector.heads.xyz_dim, config.model, seed=config.train.seed)
    state = {k: v for k, v in detector.heads.state_dict().items() if not k.startswith("voting.")}
    heads.load_state_dict(state, strict=True)
    return Detector(config, heads, detector.extractor, threshold=detector.threshold,
                    training_info=dict(detector.training_info, derived_from=detector.model_id), device=detector.device)


def run(args: argparse.Namespace) -> int:
    from ...eval.metrics import compute_metrics
    from ...eval.tables import format_metric_table
    from ...features.extractor import FeatureExtractor
    from ...jobs import load_samples
    from ...model.training import train_detector

    base = config_from_args(args)
    train_samples = load_samples(args.data, "train", shots=args.shots)
    test_samples = load_samples(args.data, "test")
    val_samples = load_samples(args.data, "validation") if (args.data / "validation").is_dir() else None
    extractor = FeatureExtractor(base.features, args.device)
    progress = not args.no_progress
    trained = {}
    rows, identities = [], {}
    for name in args.variants:
        use_mentor, use_voting, maps = VARIANTS[name]
        # the voting-free rows reuse the MFM/MGM of the matching voting model (same seed -> same weights)
        parent = {"w/o voting": "Mentor3AD", "CFM baseline": "w/o mentor"}.get(name)
        started = time.perf_counter()
        if parent is not None and parent in trained:
            detector = without_voting(trained[parent])
        else:
            config = base.copy()
            config.model.use_mentor, config.model.use_voting, config.model.score_maps = use_mentor, use_voting, maps
            LOG.info("training %s", name)
            detector = train_detector(train_samples, config, val_samples=val_samples, cache_dir=args.cache_dir,
                                      device=args.device, progress=progress, log=LOG.info, extractor=extractor)
        trained[name] = detector
        if args.save_dir is not None:
            slug = name.lower().replace("/", "").replace(" ", "_")
            detector.save(args.save_dir / f"{slug}.safetensors")
        predictions = detector.predict_samples(test_samples, cache_dir=args.cache_dir, progress=progress)
        metrics = compute_metrics([p.score for p in predictions], [s.label for s in test_samples],
                                  [p.anomaly_map for p in predictions], [s.mask for s in test_samples])
        metrics["seconds"] = round(time.perf_counter() - started, 2)
        LOG.info("%s: %s", name, {k: metrics.get(k) for k in METRIC_KEYS})
        rows.append((name, metrics))
        identities[name] = detector.identity
    # the naive per-pixel baseline (distance to the mean training image / depth) on the same split
    from ...eval.baselines import NaiveBaseline

    naive = NaiveBaseline().fit(train_samples).predict_samples(test_samples)
    rows.append(("naive baseline", compute_metrics([p.score for p in naive], [s.label for s in test_samples],
                                                   [p.anomaly_map for p in naive], [s.mask for s in test_samples])))
    weights = f"rgb_weights={base.features.rgb_weights}, point_weights={base.features.point_weights}"
    print(f"\nAblation on {args.data} ({len(train_samples)} train / {len(test_samples)} test; {base.features.rgb_backbone}, "
          f"{weights})\n")
    print(format_metric_table([{"name": n, **m} for n, m in rows], first_column="variant"))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"data": str(args.data), "rows": [{"variant": n, **m} for n, m in rows],
                                         "identities": identities}, indent=2, default=str))
    return 0
