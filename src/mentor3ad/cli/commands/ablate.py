"""``mentor3ad ablate``: full Mentor3AD, w/o voting, w/o mentor, the CFM baseline, three PatchCore peers and
the naive baseline on one test split, all on the same cached backbone features.

* Rows differ from the base config only in use_mentor / use_voting (rows w/o mentor also drop the
  mentor's score map "mtr"); the rows other than the full one compare heads, without an RGB bank
  (``calibration.rgb_bank`` off). Training is deterministic and the VM stage comes last, so "w/o voting" is
  the full model's MFM + MGM without its Voting Module (identical weights to a separate run) and "CFM"
  is the "w/o mentor" model's MGM without it: two trainings give four rows. The derived models' scores are on
  another scale than their parent's, so each is re-calibrated by the training rule on the validation split
  (the training split when there is none, as training does) before it is saved or evaluated; its threshold
  record (``set_by: ablate``) keeps the parent's threshold as ``replaced``.
* ``--model M`` reuses a model ``mentor3ad train`` produced as the full row (not retrained); its config
  is the base config of every other row (``--config`` / ``--set`` are refused with it).
* PatchCore RGB / 3D / RGB+3D (BTF) (:mod:`mentor3ad.eval.patchcore`): memory banks on the same features,
  same post-processing, thresholds by the same false-reject rule on the validation split.
* Every row is evaluated at its own threshold: metrics, verdict counts, escape and false-reject rates
  (overall and per defect type) and the false-reject rate on the validation split; ``--json`` keeps them.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import logging
import tempfile
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from ..common import add_common_arguments, config_from_args

LOG = logging.getLogger("mentor3ad.ablate")

VARIANTS = {
    # name: (use_mentor, use_voting); score maps: the base config's, without the mentor's "mtr" w/o mentor
    "Mentor3AD": (True, True),
    "w/o voting": (True, False),
    "w/o mentor": (False, True),
    "CFM baseline": (False, False),
}
DERIVED = {"w/o voting": "Mentor3AD", "CFM baseline": "w/o mentor"}  # row: the voting model it is cut from
PATCHCORE_ROWS = {"PatchCore RGB": "rgb", "PatchCore 3D": "xyz", "PatchCore RGB+3D (BTF)": "rgb+xyz"}
ROWS = list(VARIANTS) + list(PATCHCORE_ROWS)
NAIVE = "naive baseline"
METRIC_KEYS = ("i_auroc", "p_auroc", "aupro_30", "aupro_1")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("ablate", help="ablation table: Mentor3AD, w/o voting, w/o mentor, CFM, PatchCore, naive")
    add_common_arguments(p)
    p.add_argument("--variants", nargs="+", default=list(ROWS), choices=ROWS, metavar="NAME",
                   help=f"rows to compute besides the naive baseline (default all: {', '.join(ROWS)})")
    p.add_argument("--model", type=Path, default=None,
                   help="a trained full Mentor3AD model to use as the 'Mentor3AD' row (not retrained); its config "
                        "is the base of the other rows")
    p.add_argument("--coreset-ratio", type=float, default=0.1, help="share of training patches in PatchCore banks")
    p.add_argument("--patchcore-cells", default="all", choices=["all", "valid"],
                   help="PatchCore patches: all grid cells (BTF) or cells with object points only")
    p.add_argument("--json", type=Path, default=None,
                   help="also write the rows (metrics, verdict counts, rates) and identities as JSON")
    p.add_argument("--save-dir", type=Path, default=None, help="also save every Mentor3AD variant's checkpoint here")
    p.set_defaults(func=run)


def without_voting(detector):
    """Same MFM + MGM weights, final map = plain product of the used score maps, no RGB bank (threshold and
    part-level cap: the parent's until :func:`calibrate_derived` sets this model's own)."""
    from ...model.detector import Detector
    from ...model.heads import Mentor3ADHeads

    config = detector.config.replace(model={"use_voting": False, "rgb_bank_patches": 0}, calibration={"rgb_bank": "never"})
    heads = Mentor3ADHeads(detector.heads.rgb_dim, detector.heads.xyz_dim, config.model, seed=config.train.seed)
    state = {k: v for k, v in detector.heads.state_dict().items() if not k.startswith(("voting.", "rgb_bank."))}
    heads.load_state_dict(state, strict=True)
    return Detector(config, heads, detector.extractor, threshold=detector.threshold,
                    training_info=dict(detector.training_info, derived_from=detector.model_id), device=detector.device)


class Split:
    """Samples of one split and (on first use) their features from the shared cache."""

    def __init__(self, name: str, samples: list, extractor, cache_dir: Path):
        self.name, self.samples, self.extractor, self.cache_dir = name, samples, extractor, cache_dir
        self._features = None

    @property
    def features(self):
        """FeatureSet (M, C, R, R) of the samples."""
        if self._features is None:
            from ...features.cache import extract_features
            from ...features.extractor import stack_features

            self._features = stack_features(extract_features(self.samples, self.extractor, self.cache_dir,
                                                             desc=f"{self.name} features"))
        return self._features

    @property
    def sizes(self) -> List[tuple]:
        return [s.rgb.shape[:2] for s in self.samples]


def calibrate_derived(detector, calibration: "Split", log=LOG.info):
    """The training rule (the config's false-reject target, margin, rule; the part-level cap) on this model's
    own image scores of ``calibration``'s good parts (cross-validation folds are not repeated for derived models);
    returns the new ThresholdRecord (``replaced``: the inherited threshold)."""
    from ...model.threshold import ThresholdSource, from_good_scores
    from ...model.image_score import set_level_cap

    detector.set_level_cap(None)
    scored = detector.score_features(calibration.features, calibration.sizes, batch_size=8)
    set_level_cap(detector, scored, log)
    scores = scored.image_scores
    inherited = detector.threshold
    record = from_good_scores(scores, detector.config.calibration, [ThresholdSource(calibration.name, len(scores))],
                              set_by="ablate", replaced=inherited)
    detector.set_threshold(record)
    log(f"threshold {record.describe()}, inherited {inherited:.6g}")
    return record


def _given_model(args: argparse.Namespace):
    from ...errors import ConfigError
    from ...model.detector import Detector

    if args.config is not None or args.overrides:
        raise ConfigError("ablate --model: the model's config is the base of every row; --config and --set "
                          "cannot be combined with it")
    detector = Detector.load(args.model, device=args.device)
    model = detector.config.model
    if not (model.use_mentor and model.use_voting):
        raise ConfigError(f"ablate --model: {args.model} is not a full Mentor3AD model (use_mentor="
                          f"{model.use_mentor}, use_voting={model.use_voting})")
    LOG.info("reusing model %s from %s as the full Mentor3AD row (not retrained)", detector.model_id, args.model)
    return detector


def variant_config(base, name: str):
    """The base config with a row's switches: the full model keeps the base score maps, the rows without
    mentor drop its map "mtr" (ConfigError when no map is left)."""
    from ...errors import ConfigError

    use_mentor, use_voting = VARIANTS[name]
    maps = list(base.model.score_maps) if use_mentor else [m for m in base.model.score_maps if m != "mtr"]
    if not maps:
        raise ConfigError(f"ablate: the '{name}' row has no score map left of {base.model.score_maps}")
    switches = {"use_mentor": use_mentor, "use_voting": use_voting, "score_maps": maps}
    if name == "Mentor3AD":
        return base.replace(model=switches)
    # the other rows compare the heads: without an RGB bank (calibration.rgb_bank) beside them
    return base.replace(model={**switches, "rgb_bank_patches": 0}, calibration={"rgb_bank": "never"})


def _train(name: str, base, splits: Dict[str, Split], args, extractor):
    from ...model.training import train_detector

    config = variant_config(base, name)
    LOG.info("training %s", name)
    validation = splits.get("validation")
    return train_detector(splits["train"].samples, config, val_samples=validation.samples if validation else None,
                          cache_dir=splits["train"].cache_dir, device=args.device, progress=not args.no_progress,
                          log=LOG.info, extractor=extractor)


def _evaluate(name: str, predictions, test: Split, threshold: float, validation_scores, started: float,
              identity: Optional[dict] = None) -> Dict[str, Any]:
    """A row: metrics, verdict counts and rates at ``threshold`` on the test split, validation false rejects."""
    from ...eval.report import evaluate_predictions
    from ...model.calibration import false_reject_rate

    report = evaluate_predictions(test.samples, predictions, title=name)
    frr = false_reject_rate(validation_scores, threshold) if validation_scores else None
    row = {"variant": name, **report["metrics"], "threshold": threshold, "validation_false_reject_rate": frr,
           "verdicts": report["verdicts"], "rates": report["rates"],
           "seconds": round(time.perf_counter() - started, 2)}
    if identity is not None:
        row["model_id"] = identity["model_id"]
    LOG.info("%s: %s", name, {k: row.get(k) for k in METRIC_KEYS})
    return row


def _detector_rows(args, base, given, splits: Dict[str, Split], extractor, identities) -> List[Dict[str, Any]]:
    rows: List[Dict[str, Any]] = []
    trained = {"Mentor3AD": given} if given is not None else {}
    validation = splits.get("validation")
    for name in [n for n in VARIANTS if n in args.variants]:
        started = time.perf_counter()
        parent = DERIVED.get(name)
        if name in trained:
            detector = trained[name]
        elif parent is not None and parent in trained:
            detector = without_voting(trained[parent])
            calibrate_derived(detector, validation or splits["train"])
        else:
            detector = _train(name, base, splits, args, extractor)
        trained[name] = detector
        if args.save_dir is not None:
            slug = name.lower().replace("/", "").replace(" ", "_")
            detector.save(args.save_dir / f"{slug}.safetensors")
        predictions = detector.predict_samples(splits["test"].samples, cache_dir=splits["test"].cache_dir,
                                               progress=not args.no_progress)
        val_scores = detector.image_scores(validation.features, validation.sizes, batch_size=8) if validation else None
        identities[name] = detector.identity
        rows.append(_evaluate(name, predictions, splits["test"], detector.threshold, val_scores, started,
                              detector.identity))
    return rows


def _patchcore_rows(args, base, splits: Dict[str, Split], identities) -> List[Dict[str, Any]]:
    from ...eval.patchcore import PatchCore

    rows = []
    validation, test = splits.get("validation"), splits["test"]
    for name in [n for n in PATCHCORE_ROWS if n in args.variants]:
        started = time.perf_counter()
        core = PatchCore.for_detector(base, PATCHCORE_ROWS[name], coreset_ratio=args.coreset_ratio,
                                      cells=args.patchcore_cells, device=args.device)
        core.fit(splits["train"].features, validation.features if validation else None,
                 validation.sizes if validation else None)
        predictions = core.predict_features(test.features, test.sizes, [s.xyz for s in test.samples])
        identities[name] = core.identity
        LOG.info("%s: bank %d of %d patches in %.3f s", name, core.timings["bank_patches"],
                 core.timings["train_patches"], core.timings["coreset_s"])
        val_scores = core.image_scores(validation.features, validation.sizes) if validation else None
        rows.append(_evaluate(name, predictions, test, core.threshold, val_scores, started, core.identity))
    return rows


def _naive_row(splits: Dict[str, Split]) -> Dict[str, Any]:
    """The naive per-pixel baseline (distance to the mean training image / depth), its own threshold."""
    from ...eval.baselines import NaiveBaseline

    started = time.perf_counter()
    naive = NaiveBaseline().fit(splits["train"].samples)
    validation = splits.get("validation")
    val_scores = naive.score_samples(validation.samples).image_scores if validation else None
    return _evaluate(NAIVE, naive.predict_samples(splits["test"].samples), splits["test"], naive.threshold,
                     val_scores, started)


def run(args: argparse.Namespace) -> int:
    from ...eval.report import json_safe
    from ...eval.tables import format_metric_table, format_threshold_table
    from ...features.extractor import FeatureExtractor, settle_auto_options
    from ...jobs import load_samples

    given = _given_model(args) if args.model is not None else None
    base = given.config if given is not None else config_from_args(args)
    train_samples = load_samples(args.data, "train", shots=args.shots)
    if given is not None and given.training_info.get("num_train_samples") not in (None, len(train_samples)):
        LOG.warning("the given model was trained on %s samples, the other rows train on %d (see --shots)",
                    given.training_info.get("num_train_samples"), len(train_samples))
    if given is None:  # options left to training are decided once, from the training parts, for every row
        base, note = settle_auto_options(base, train_samples, args.device)
        if note:
            LOG.info(note)
    extractor = given.extractor if given is not None else FeatureExtractor(base.features, args.device)
    with contextlib.ExitStack() as stack:
        cache_dir = args.cache_dir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="mentor3ad-ablate-")))
        splits = {"train": Split("train", train_samples, extractor, cache_dir),
                  "test": Split("test", load_samples(args.data, "test"), extractor, cache_dir)}
        if (args.data / "validation").is_dir():
            splits["validation"] = Split("validation", load_samples(args.data, "validation"), extractor, cache_dir)
        identities: Dict[str, dict] = {}
        rows = _detector_rows(args, base, given, splits, extractor, identities)
        rows += _patchcore_rows(args, base, splits, identities)
        rows.append(_naive_row(splits))
    order = {name: i for i, name in enumerate(ROWS + [NAIVE])}
    rows.sort(key=lambda row: order[row["variant"]])
    weights = f"rgb_weights={base.features.rgb_weights}, point_weights={base.features.point_weights}"
    n_val = len(splits["validation"].samples) if "validation" in splits else 0
    print(f"\nAblation on {args.data} ({len(train_samples)} train / {n_val} validation / {len(splits['test'].samples)} "
          f"test; {base.features.rgb_backbone}, {weights}{f'; full model {args.model}' if given else ''})\n")
    print(format_metric_table([{"name": r["variant"], **r} for r in rows], first_column="variant"))
    print("\nVerdicts at each row's threshold (test split; false-reject rate also on the validation split):\n")
    print(format_threshold_table([{"name": r["variant"], **r} for r in rows]))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(json_safe(
            {"data": str(args.data), "model": str(args.model) if given else None, "rows": rows,
             "identities": identities}), indent=2, default=str))
    return 0
