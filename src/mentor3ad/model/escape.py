"""The pseudo-defect escape rate at calibration: the trade-off a cell chooses, set from good parts only.

A new cell has good parts only, so the false-reject rate is all calibration can measure. Here the good
calibration parts also get seeded pseudo-defects (:mod:`mentor3ad.io.datasets.pseudo_defects`: dents,
bumps, holes, cuts, stains, textures; ``calibration.pseudo_defects_per_kind`` of each kind per part, seed
``train.seed``), scored the way inference scores parts (:meth:`~mentor3ad.model.scoring.PartScorer.score_samples`).
The share of them that would PASS (score <= threshold) is the **pseudo-defect escape rate**: a guide for
comparing operating points, not the escape rate of real defects. Measured: on the real cable gland parts
(package default model) it overstated the escapes (73 % of the pseudo-defects against 11 of 24 real
defects at the default threshold; dev-real I-AUROC 0.77 against 0.986), on the synthetic cell's demo model
it understated them (20 % against 7 of 24, whose paint and stain defects are harder than the seeded ones).

:func:`estimate` returns ``expected_escape_rate`` (stored in the
:class:`~mentor3ad.model.threshold.ThresholdRecord`)::

    {"rate": 0.27, "n": 60, "per_kind": {"dent": 0.5, ...}, "source": "pseudo-defects",
     "per_part_and_kind": 1, "seed": 0, "scores": {"dent": [2.1, ...], ...}}

and ``alternatives``: one row per target false-reject rate (:data:`TARGETS` and the configured one) under
the configured rule and margin, and one at the largest calibration score::

    {"target_false_reject_rate": 0.01, "threshold": 4.99, "expected_false_reject_rate": 0.002,
     "pseudo_defect_escape_rate": 0.27, "chosen": true}

(``target_false_reject_rate`` null and ``"at": "max"`` for the largest-score row). Rates are fractions.
"""
from __future__ import annotations

import time
from dataclasses import replace
from typing import Any, Callable, Dict, List, Optional, Sequence

import numpy as np
from scipy import stats

from ..errors import InputError
from ..io.datasets.pseudo_defects import KINDS, pseudo_defects
from .calibration import calibrate_by_config, false_reject_estimate
from .threshold import ThresholdRecord, significant

SOURCE = "pseudo-defects"
TARGETS = (0.005, 0.01, 0.02, 0.05)
CAVEAT = "seeded pseudo-defects, not real defects: for comparing operating points; README: Pseudo-defect escape rate"


def score_pseudo_defects(scorer, good: Sequence, per_kind: int, seed: int = 0,
                         batch_size: int = 8) -> Dict[str, List[float]]:
    """kind -> image scores of ``per_kind`` pseudo-defects of that kind on each good sample (rgb (H, W, 3)
    uint8, xyz (H, W, 3) metres), scored by ``scorer`` as inference scores parts; parts too small to carry a
    defect are skipped."""
    defects, scored = score_pseudo_defect_parts(scorer, good, per_kind, seed, batch_size)
    return by_kind(defects, scored.image_scores) if defects else {}


def score_pseudo_defect_parts(scorer, good: Sequence, per_kind: int, seed: int = 0, batch_size: int = 8,
                              cache_dir=None):
    """(the pseudo-defect Samples, their :class:`~mentor3ad.model.scoring.ScoredParts`) as
    :func:`score_pseudo_defects` makes and scores them (features through the cache at ``cache_dir``: a
    calibration that scores them more than once extracts them once)."""
    defects = pseudo_defects(list(good), KINDS, per_kind, seed)
    return defects, (scorer.score_samples(defects, cache_dir=cache_dir, batch_size=batch_size) if defects else None)


def by_kind(defects: Sequence, scores: Sequence[float]) -> Dict[str, List[float]]:
    """kind -> the scores of the pseudo-defect Samples ``defects`` (in their order)."""
    out: Dict[str, List[float]] = {}
    for sample, score in zip(defects, scores):
        out.setdefault(sample.defect, []).append(float(score))
    return out


def _flat(defect_scores) -> np.ndarray:
    """kind -> scores dict (in its kind order) or a sequence of scores -> (N,) float64."""
    if not isinstance(defect_scores, dict):
        return np.asarray(defect_scores, np.float64)
    return np.concatenate([np.asarray(v, np.float64) for v in defect_scores.values()]) if defect_scores else np.zeros(0)


def escape_rate(defect_scores: Dict[str, Sequence[float]], threshold: float) -> Optional[float]:
    """Fraction of the scores that PASS (score <= threshold); None without scores."""
    values = _flat(defect_scores)
    return float(np.mean(values <= threshold)) if len(values) else None


CHOICE_ALPHA = 0.05  # a calibration choice leaves its default only on a paired difference this unlikely by chance


def clearly_fewer_escapes(default_scores, default_threshold: float, other_scores, other_threshold: float,
                          alpha: float = CHOICE_ALPHA) -> Dict[str, Any]:
    """Does the other operating point let clearly fewer of the same pseudo-defects pass than the default one?

    default_scores / other_scores: the same pseudo-defects' image scores under each (lists in one order, or
    kind -> list dicts of one kind order); a part PASSes at score <= threshold. A one-sided sign test on the
    pseudo-defects the two judge differently (``caught``: the other catches, the default lets pass;
    ``missed``: the reverse): ``clearly`` when caught > missed and P(Binomial(caught + missed, 1/2) >= caught)
    <= alpha. Measured why (README, "Calibration's choices and chance"): differences of 2-4 of 60 pseudo-defects
    flipped with the training seed and did not hold on another set of pseudo-defects of the same parts."""
    default_pass, other_pass = _flat(default_scores) <= default_threshold, _flat(other_scores) <= other_threshold
    if default_pass.shape != other_pass.shape:
        raise ValueError(f"paired comparison of {default_pass.size} and {other_pass.size} pseudo-defects")
    caught, missed = int(np.sum(default_pass & ~other_pass)), int(np.sum(other_pass & ~default_pass))
    p_value = float(stats.binom.sf(caught - 1, caught + missed, 0.5)) if caught + missed else 1.0
    return {"caught": caught, "missed": missed, "p_value": p_value, "alpha": float(alpha),
            "clearly": bool(caught > missed and p_value <= alpha)}


def describe_choice(test: Dict[str, Any]) -> str:
    """'7 more caught, 1 more missed: sign test p 0.035' (the log's account of :func:`clearly_fewer_escapes`)."""
    return (f"{test['caught']} more caught, {test['missed']} more missed: sign test p {test['p_value']:.2g}"
            f"{'' if test['clearly'] else ' > ' + format(test['alpha'], 'g') + ', not clearly better'}")


def alternatives(good_scores: Sequence[float], defect_scores: Dict[str, Sequence[float]], calibration,
                 chosen: ThresholdRecord) -> List[Dict[str, Any]]:
    """Rows of :data:`TARGETS` (and ``chosen``'s target) by ``calibration``'s rule and margin, and the largest
    good score: threshold, expected false-reject rate (tail model), pseudo-defect escape rate, chosen."""
    targets = sorted(set(TARGETS) | ({chosen.target_false_reject_rate} if chosen.target_false_reject_rate else set()))
    rows = []
    for target in targets:
        mine = target == chosen.target_false_reject_rate
        value = chosen.value if mine else calibrate_by_config(good_scores, calibration, target)
        rows.append({"target_false_reject_rate": target, "threshold": float(value), "chosen": mine})
    rows.append({"target_false_reject_rate": None, "at": "max", "threshold": float(max(good_scores)),
                 "chosen": False})
    for row in rows:
        row["expected_false_reject_rate"] = float(false_reject_estimate(good_scores, row["threshold"], 200)["expected"])
        row["pseudo_defect_escape_rate"] = escape_rate(defect_scores, row["threshold"])
    return rows


def estimate(record: ThresholdRecord, scorer, good: Sequence, calibration, seed: int = 0,
             log: Callable[[str], None] = lambda message: None,
             defect_scores: Optional[Dict[str, List[float]]] = None,
             scoring_seconds: Optional[float] = None) -> ThresholdRecord:
    """``record`` (set from the good parts' scores by ``calibration``) with ``expected_escape_rate`` and
    ``alternatives`` from pseudo-defects of ``good`` scored by ``scorer`` (or their ``defect_scores``, already
    scored as ``scorer`` scores parts, in ``scoring_seconds``); unchanged (and logged why) when
    ``calibration.pseudo_defects_per_kind`` is 0, no part can carry a defect or one cannot be scored."""
    per_kind = int(calibration.pseudo_defects_per_kind)
    if per_kind <= 0:
        log("pseudo-defect escape rate: skipped (calibration.pseudo_defects_per_kind is 0)")
        return record
    started = time.perf_counter()
    try:
        if defect_scores is None:
            defect_scores = score_pseudo_defects(scorer, good, per_kind, seed)
            scoring_seconds = time.perf_counter() - started
    except InputError as err:  # the threshold stands without the estimate
        log(f"pseudo-defect escape rate: skipped (a pseudo-defect could not be scored: {err})")
        return record
    count = sum(len(v) for v in defect_scores.values())
    if not count:
        log(f"pseudo-defect escape rate: skipped (none of the {len(good)} calibration parts is large enough "
            "above its background to carry a pseudo-defect)")
        return record
    log(f"pseudo-defect escape rate: {count} pseudo-defects of {len(good)} calibration parts scored in "
        f"{scoring_seconds or 0.0:.1f} s")
    escape = {"rate": escape_rate(defect_scores, record.value), "n": count,
              "per_kind": {k: escape_rate({k: v}, record.value) for k, v in defect_scores.items()},
              "source": SOURCE, "per_part_and_kind": per_kind, "seed": int(seed),
              "scores": {k: sorted(significant(s) for s in v) for k, v in defect_scores.items()}}
    rows = alternatives(list(record.calibration_scores), defect_scores, calibration, record)
    return replace(record, expected_escape_rate=escape, alternatives=tuple(rows))


def _percent(value: Optional[float]) -> str:
    """0.272 -> "27 %", 0.0735 -> "7.3 %", 0.002 -> "0.2 %", below 0.01 % "< 0.01 %"."""
    if value is None:
        return "n/a"
    percent = 100.0 * value
    if 0 < percent < 0.01:
        return "< 0.01 %"
    return f"{percent:.0f} %" if percent >= 10 else f"{percent:.2g} %"


def summary(record: ThresholdRecord) -> str:
    """One line: expected false-reject rate and pseudo-defect escape rate at the record's threshold."""
    frr = record.expected_false_reject_rate.get("expected")
    line = f"at threshold {record.value:.4g}: expected false-reject rate {_percent(frr)}"
    escape = record.expected_escape_rate
    if not escape:
        return line + "; pseudo-defect escape rate not estimated"
    kinds = ", ".join(f"{k} {_percent(v)}" for k, v in escape["per_kind"].items())
    return (f"{line}; pseudo-defect escape rate {_percent(escape['rate'])} of {escape['n']} ({kinds}; "
            f"{CAVEAT})")


def table(record: ThresholdRecord) -> List[str]:
    """The alternatives as aligned text lines (header first, the chosen row marked with *)."""
    if not record.alternatives:
        return []
    lines = [f"    {'operating point':<26} {'threshold':>10} {'exp. false-reject':>18} {'pseudo-defect escape':>21}"]
    for row in record.alternatives:
        name = (f"target false-reject {100 * row['target_false_reject_rate']:g} %"
                if row.get("target_false_reject_rate") is not None else "max calibration score")
        frr, escapes = _percent(row["expected_false_reject_rate"]), _percent(row["pseudo_defect_escape_rate"])
        lines.append(f"  {'*' if row.get('chosen') else ' '} {name:<26} {row['threshold']:>10.4g} {frr:>18} {escapes:>21}")
    return lines


__all__ = ["CHOICE_ALPHA", "clearly_fewer_escapes", "describe_choice", "SOURCE", "TARGETS", "score_pseudo_defects",
           "escape_rate", "alternatives", "estimate", "summary", "table"]
