"""Jobs shared by the command-line tool and the ROS nodes (one implementation each, no ROS import).

* :func:`load_samples`: a dataset folder (MVTec 3D-AD layout) split or a rosbag2 recording -> samples;
* :func:`read_good_parts`: training + held-out samples from recordings of good parts;
* :func:`train_and_save`: train, calibrate, record where the data came from, save atomically;
* :func:`train_from_bags`: the trainer node's and ``mentor3ad train --bag``'s whole job;
* :func:`recalibrate`: a new threshold for a trained model from good or labelled parts;
* :func:`evaluate_model`: predictions + metrics + report files (beside the naive baseline).

Expected failures raise :class:`~mentor3ad.errors.Mentor3ADError` subclasses with one-line reasons.
"""
from __future__ import annotations

import math
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

from .config import Mentor3ADConfig, load_config
from .errors import ConfigError, InputError
from .io.bags import is_bag, read_bag_samples
from .io.datasets.mvtec import load_mvtec_split
from .types import Sample

PathLike = Union[str, Path]
DEFAULT_SLOP_NS = 20_000_000


def load_samples(path: PathLike, split: str = "test", input_mode: str = "points",
                 topics: Optional[Mapping[str, str]] = None, slop_ns: int = DEFAULT_SLOP_NS,
                 require_mask: bool = False, shots: Optional[int] = None) -> List[Sample]:
    """Samples of a dataset folder's ``split`` or of a recording (``split`` ignored); ConfigError when
    ``path`` does not exist."""
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"{path} does not exist")
    if is_bag(path):
        samples = list(read_bag_samples(path, topics, input_mode, slop_ns, require_mask))
        if not samples:
            raise InputError(f"bag {path} has no synchronized image/{input_mode} pairs"
                             f"{' with a mask' if require_mask else ''} within {slop_ns / 1e6:g} ms")
        return samples[:shots] if shots else samples
    return load_mvtec_split(path, split, shots=shots)


def split_validation(samples: list, val_fraction: float) -> Tuple[list, list]:
    """-> (train, val): the last ``ceil(val_fraction * n)`` samples (at least 1 when n >= 2) held out."""
    if not 0.0 <= val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be in [0, 1), got {val_fraction}")
    n = len(samples)
    n_val = 0 if val_fraction == 0 or n < 2 else max(1, math.ceil(val_fraction * n))
    return samples[: n - n_val], samples[n - n_val:]


def require_good(samples: Sequence[Sample], what: str) -> None:
    """InputError naming the samples labelled defective (training and threshold data must be good parts)."""
    bad = [s for s in samples if s.label not in (None, 0)]
    if bad:
        where = f"; the first from {bad[0].source}" if bad[0].source else ""
        raise InputError(f"{what} needs good parts only, but {len(bad)} are labelled defective "
                         f"({', '.join(s.name for s in bad[:5])}{' ...' if len(bad) > 5 else ''}{where}): "
                         "is this a labelled test recording?")


def read_good_parts(bag_paths: Sequence[PathLike], val_bag_paths: Sequence[PathLike] = (), val_fraction: float = 0.2,
                    topics: Optional[Mapping[str, str]] = None, input_mode: str = "points",
                    slop_ns: int = DEFAULT_SLOP_NS) -> Tuple[List[Sample], List[Sample]]:
    """Training and held-out samples from recordings of good parts.

    Without ``val_bag_paths`` the last ``val_fraction`` of the pairs are held out for calibration.
    Unlabelled pairs are labelled good (0); pairs labelled defective are refused (InputError).
    """
    if not bag_paths:
        raise ConfigError("no training recordings given")
    samples = list(read_bag_samples(list(bag_paths), topics, input_mode, slop_ns))
    if not samples:
        raise InputError(f"no synchronized image/{input_mode} pairs in {list(map(str, bag_paths))} within "
                         f"{slop_ns / 1e6:g} ms")
    if val_bag_paths:
        train, val = samples, list(read_bag_samples(list(val_bag_paths), topics, input_mode, slop_ns))
    else:
        train, val = split_validation(samples, val_fraction)
    require_good(train, "training recordings")
    require_good(val, "held-out recordings")
    for sample in train + val:
        if sample.label is None:
            sample.label = 0
    return train, val


def train_and_save(train_samples: Sequence[Sample], val_samples: Optional[Sequence[Sample]], config: Mentor3ADConfig,
                   out_path: PathLike, cache_dir=None, device: str = "cpu", progress: bool = False,
                   log: Callable[[str], None] = print, info: Optional[Dict[str, Any]] = None):
    """Train Mentor3AD on good parts, calibrate on the held-out ones, save atomically; returns the Detector."""
    from .model.training import train_detector

    require_good(train_samples, "training samples")
    require_good(val_samples or [], "held-out samples")
    detector = train_detector(train_samples, config, val_samples=val_samples or None, cache_dir=cache_dir,
                              device=device, progress=progress, log=log)
    detector.training_info.update(info or {})
    detector.save(out_path)
    return detector


def train_from_bags(bag_paths: Sequence[str], output_model_path: str, *, val_bag_paths: Sequence[str] = (),
                    val_fraction: float = 0.2, config_file: str = "", overrides: Sequence[str] = (),
                    input_mode: str = "points", topics: Optional[Mapping[str, str]] = None,
                    slop_ns: int = DEFAULT_SLOP_NS, device: str = "cpu", cache_dir: str = "",
                    shots: Optional[int] = None, log: Callable[[str], None] = print):
    """Read good pairs from recordings, train, calibrate, save; returns the Detector."""
    if not bag_paths:
        raise ConfigError("no training recordings: set bag_paths")
    if not output_model_path:
        raise ConfigError("output_model_path is empty")
    config = load_config(config_file or None, overrides)
    log(f"reading {len(bag_paths)} recording(s): {', '.join(map(str, bag_paths))}")
    train, val = read_good_parts(bag_paths, val_bag_paths, val_fraction, topics, input_mode, slop_ns)
    train = train[:shots] if shots else train
    log(f"training on {len(train)} pairs, calibrating on {len(val)} held-out pairs, device {device}")
    started = time.monotonic()
    detector = train_and_save(train, val, config, output_model_path, cache_dir or None, device, log=log,
                              info={"bags": [str(p) for p in bag_paths], "val_bags": [str(p) for p in val_bag_paths]})
    log(f"model {detector.model_id} (threshold {detector.threshold:.6g}) written to {output_model_path} "
        f"after {time.monotonic() - started:.1f} s")
    return detector


def recalibrate(detector, samples: Sequence[Sample], rule: str = "frr", target_frr: Optional[float] = None,
                cache_dir=None, progress: bool = False, data: str = "",
                log: Callable[[str], None] = lambda message: None) -> Dict[str, Any]:
    """Set ``detector``'s threshold from good parts (``frr``: false-reject rate, with the pseudo-defect escape
    rate of :mod:`mentor3ad.model.escape`) or labelled parts (``f1``), recorded as a ``recalibration`` of
    ``data`` (where the parts came from); returns {old_threshold, threshold, rule (one line),
    false_reject_rate, expected_false_reject_rate, expected_escape_rate, alternatives, outliers | f1}."""
    from .model import escape
    from .model.calibration import calibration_outliers, false_reject_rate
    from .model.threshold import ThresholdSource, from_good_scores, from_labelled_scores

    if not samples:
        raise InputError("no samples to calibrate on")
    if rule == "frr":
        require_good(samples, "calibrate --rule frr")
    elif rule == "f1":
        if any(s.label is None for s in samples):
            raise InputError("--rule f1 needs labelled parts (good/defective); some samples have no label")
    else:
        raise ConfigError(f"unknown calibration rule {rule!r}; choose frr or f1")
    results = detector.predict_samples(samples, cache_dir=cache_dir, progress=progress)
    errors = [(s, r.reason) for s, r in zip(samples, results) if not r.verdict.is_decision]
    if errors:
        first = errors[0][0]
        raise InputError(f"{len(errors)} calibration parts got no score, e.g. {first.name}"
                         f"{f' ({first.source})' if first.source else ''}: {errors[0][1]}")
    scores = [r.score for r in results]
    old, sources = detector.threshold, [ThresholdSource("recalibration", len(scores), data)]
    if rule == "frr":
        record = from_good_scores(scores, detector.config.calibration, sources, "calibrate", target_frr, replaced=old)
        record = escape.estimate(record, detector, samples, detector.config.calibration, detector.config.train.seed,
                                 log)
        info = {"false_reject_rate": false_reject_rate(scores, record.value),
                "expected_false_reject_rate": record.expected_false_reject_rate,
                "expected_escape_rate": {k: v for k, v in record.expected_escape_rate.items() if k != "scores"},
                "alternatives": list(record.alternatives),
                "outliers": [{"name": samples[i].name, "source": samples[i].source, "score": scores[i]}
                             for i in calibration_outliers(scores)]}
    else:
        record, f1 = from_labelled_scores(scores, [s.label for s in samples], sources, "calibrate", replaced=old)
        info = {"f1": f1}
    detector.set_threshold(record)
    return {"old_threshold": old, "threshold": record.value, "rule": record.describe(), **info}


def evaluate_model(detector, samples: Sequence[Sample], out_dir: Optional[PathLike] = None, title: str = "mentor3ad",
                   naive_train: Optional[Sequence[Sample]] = None, extra: Optional[Mapping[str, Any]] = None,
                   defect_groups=None, gallery_size: int = 4, cache_dir=None, progress: bool = False,
                   log: Callable[[str], None] = print) -> Dict[str, Any]:
    """Predict, score and report (see :func:`mentor3ad.eval.report.evaluate_predictions`)."""
    from .eval.baselines import NaiveBaseline
    from .eval.report import evaluate_predictions

    if not samples:
        raise InputError("no labelled samples to evaluate")
    predictions = detector.predict_samples(samples, cache_dir=cache_dir, progress=progress)
    undecided = [(s, p.reason) for s, p in zip(samples, predictions) if not p.verdict.is_decision]
    if undecided:
        first = undecided[0][0]
        raise InputError(f"{len(undecided)} of {len(samples)} parts got no decision, e.g. {first.name}"
                         f"{f' ({first.source})' if first.source else ''}: {undecided[0][1]}")
    naive = None
    if naive_train:
        try:
            naive = NaiveBaseline().fit(naive_train).predict_samples(samples)
        except InputError as exc:
            log(f"naive baseline skipped: {exc}")
    info = {"model": detector.identity, "timings_s": detector.timings(), **dict(extra or {})}
    return evaluate_predictions(samples, predictions, out_dir=out_dir, title=title, naive=naive,
                                gallery_size=gallery_size, extra=info, defect_groups=defect_groups)


__all__ = ["load_samples", "split_validation", "require_good", "read_good_parts", "train_and_save",
           "train_from_bags", "recalibrate", "evaluate_model"]
