"""Which image score a trained model keeps, set at calibration (``model.level_percentile``,
``calibration.image_score``): the peak above the part's own level with its cap (the largest level of the
held-out good parts), or the raw map's maximum (README, "Image score: the peak above the part's level")."""
from __future__ import annotations

import logging
import time
from typing import Callable

LOG = logging.getLogger(__name__)


def set_level_cap(detector, calibration_parts, log: Callable[[str], None] = LOG.info) -> None:
    """Cap the part level the detector subtracts (``model.level_percentile``) at the largest level of its
    calibration parts (ScoredParts scored without a cap): their maps, hence their scores, stay as scored, and
    a part whose whole map lies above every good part's level keeps the excess in its score."""
    if detector.config.model.level_percentile <= 0 or not calibration_parts.levels:
        detector.set_level_cap(None)
        return
    levels = calibration_parts.levels
    detector.set_level_cap(max(levels))
    log(f"part level (the {detector.config.model.level_percentile:g}th percentile of a map): calibration parts "
        f"{min(levels):.4g} - {max(levels):.4g}; maps are relative to it, capped at {max(levels):.4g}")


def choose_image_score(detector, scored, val_samples, log: Callable[[str], None] = LOG.info, cache_dir=None):
    """The image score the detector keeps (``calibration.image_score``, :class:`mentor3ad.config.CalibrationConfig`):
    sets the part-level cap, or stores ``model.level_percentile`` 0 for the raw maximum.

    scored: the calibration parts' ScoredParts, scored relative to their whole level (no cap); val_samples: the
    held-out good Samples pseudo-defects are seeded on. Returns (the calibration parts' scores under the kept
    score, their pseudo-defects' scores by kind under it or None when not scored, the seconds that scoring
    took or None; ``cache_dir``: their features' cache). With "auto" both scores
    come from one scoring of the pseudo-defects (max of the map + its level = the raw maximum) and
    ``training_info["image_score"]`` keeps the comparison; the maximum is kept only when it lets clearly fewer of
    the same pseudo-defects pass (:func:`~mentor3ad.model.escape.clearly_fewer_escapes`), else the level."""
    from ..errors import InputError
    from . import escape
    from .calibration import calibrate_by_config

    config = detector.config
    calibration = config.calibration
    if config.model.level_percentile <= 0 or not scored.levels:
        detector.set_level_cap(None)
        return scored.image_scores, None, None
    cap = max(scored.levels)
    level_scores = scored.image_scores  # the cap is their largest level: unchanged by it
    raw_scores = [score + level for score, level in zip(level_scores, scored.levels)]
    choice, defect_scores, seconds = calibration.image_score, None, None
    if choice == "auto" and not (val_samples and calibration.pseudo_defects_per_kind > 0):
        log("image score: the peak above the part level (calibration.image_score auto compares on pseudo-defects "
            "of held-out good parts; there are none)")
        choice = "level"
    if choice == "auto":
        detector.set_level_cap(None)  # the pseudo-defects' maps relative to their whole level, as ``scored``
        started = time.perf_counter()
        try:
            defects, parts = escape.score_pseudo_defect_parts(detector, val_samples, calibration.pseudo_defects_per_kind,
                                                              config.train.seed, cache_dir=cache_dir)
        except InputError as err:  # as escape.estimate: calibration stands without the comparison
            log(f"image score: the peak above the part level (a pseudo-defect could not be scored: {err})")
            defects = []
        if not defects:
            choice = "level"
        else:
            shifted = list(zip(parts.image_scores, parts.levels))
            candidates = {"level": (level_scores, [s + level - min(level, cap) for s, level in shifted]),
                          "max": (raw_scores, [s + level for s, level in shifted])}
            compared = {}
            for name, (good, bad) in candidates.items():
                threshold = calibrate_by_config(good, calibration)
                compared[name] = {"threshold": float(threshold), "pseudo_defect_escape_rate":
                                  escape.escape_rate({"all": bad}, threshold)}
            passed = {name: c["pseudo_defect_escape_rate"] for name, c in compared.items()}
            test = escape.clearly_fewer_escapes(candidates["level"][1], compared["level"]["threshold"],
                                                candidates["max"][1], compared["max"]["threshold"])
            choice = "max" if test["clearly"] else "level"
            detector.training_info["image_score"] = {"chosen": choice, "candidates": compared, "n": len(defects),
                                                     "paired_test": test}
            log("image score: " + "; ".join(f"{name}: threshold {c['threshold']:.4g}, {passed[name]:.0%} of "
                                             f"{len(defects)} pseudo-defects pass" for name, c in compared.items())
                + f"; max vs level: {escape.describe_choice(test)}"
                + f" -> {'the peak above the part level' if choice == 'level' else 'the maximum of the map'}")
            defect_scores, seconds = escape.by_kind(defects, candidates[choice][1]), time.perf_counter() - started
    if choice == "max":
        detector.config = config.replace(model={"level_percentile": 0.0})
        detector.set_level_cap(None)
        return raw_scores, defect_scores, seconds
    set_level_cap(detector, scored, log)
    return level_scores, defect_scores, seconds
