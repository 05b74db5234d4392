"""The one scoring protocol every detector follows: parts -> anomaly maps -> verdicts.

The Detector, the PatchCore yardsticks and the naive baseline (:mod:`mentor3ad.eval`) are
:class:`PartScorer` s, and cross-validation scores its fold heads with the same :func:`score_feature_set`:

* ``score_samples(samples, cache_dir=None, progress=False, batch_size=8) -> ScoredParts``: the (H, W)
  float32 anomaly map of each part at its input resolution (image score = the map's maximum; with
  ``model.level_percentile`` the map is relative to the part's own level, :class:`PostProcessing`) and the
  cloud its regions are measured on;
* ``predict_samples(samples, cache_dir=None, progress=False, batch_size=8, threshold=None)``:
  :func:`judge` of the scored parts, the one loop that turns maps into answers
  (:func:`mentor3ad.model.postprocess.decide`: non-finite maps are ERROR, never PASS);
* ``set_threshold(record)``: the one threshold writer, a value always with its
  :class:`~mentor3ad.model.threshold.ThresholdRecord`.

:class:`FeatureScorer` is a scorer whose maps come from backbone features: ``grid_maps(FeatureSet) ->
(M, R, R)``, post-processed by :class:`PostProcessing` (:func:`~mentor3ad.model.postprocess.upsample_maps`);
its ``score_samples`` checks each observation and reads features through the feature cache.
Stage timings are opt-in (``timer``; :mod:`mentor3ad.timing`).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from ..errors import ConfigError, InputError, ModelError
from ..features.cache import extract_features
from ..features.extractor import stack_features
from ..geometry.observation import check_observation
from ..timing import NO_TIMER, StageTimer
from ..types import InspectionResult
from . import threshold as records
from .postprocess import decide, upsample_maps
from .threshold import ThresholdRecord


@dataclass
class ScoredParts:
    """maps: one (H, W) float32 anomaly map per part at its input resolution; xyzs: the (H, W, 3) cloud each
    part's regions are measured on (None: regions in pixels only); levels: each part's own level before it
    was subtracted (:func:`part_level`; 0 without ``model.level_percentile``)."""

    maps: List[np.ndarray] = field(default_factory=list)
    xyzs: List[Optional[np.ndarray]] = field(default_factory=list)
    levels: List[float] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.maps)

    @property
    def image_scores(self) -> List[float]:
        """The maximum of each map (what :func:`decide` compares with the threshold; NaN for an empty map)."""
        return [float(m.max()) if m.size else math.nan for m in self.maps]

    def extend(self, other: "ScoredParts") -> None:
        self.maps.extend(other.maps)
        self.xyzs.extend(other.xyzs)
        self.levels.extend(other.levels)


def part_level(amap: np.ndarray, percentile: float) -> float:
    """A part's own level: the ``percentile`` (0-100) of its map's positive pixels (the part; the background
    is 0), 0.0 when none is positive or the map is not finite (then :func:`decide` answers ERROR)."""
    positive = amap[amap > 0]
    if not positive.size or not np.isfinite(positive).all():
        return 0.0
    return float(np.percentile(positive, percentile))


@dataclass(frozen=True)
class PostProcessing:
    """Grid maps -> maps at the input resolution: bilinear to ``image_size``, Gaussian ``smoothing_sigma``
    (pixels of that grid), bilinear to the part's size; then, with ``level_percentile`` > 0, minus the
    part's own level (:func:`part_level`) capped at ``level_cap``; pixels without the part (raw map 0) get
    ``-level_cap``, the same value for every part and below every part pixel (non-finite pixels stay: ERROR).

    Why: held-out good parts differ from each other mostly by a level over the whole part (pose, light), and
    the maximum inherits it; the peak above the part's level separates defects better (README, "Image
    score"). The cap (the largest level of the held-out good parts, set at calibration) keeps a part whose
    whole map is high - a wrong part, a broken model - from subtracting its own anomaly: its score is at
    least the map's maximum minus the cap."""

    image_size: int
    smoothing_sigma: float
    level_percentile: float = 0.0
    level_cap: float = math.inf

    @classmethod
    def of(cls, config, level_cap: float = math.inf) -> "PostProcessing":
        """The post-processing a Mentor3ADConfig describes, with the calibrated ``level_cap``."""
        return cls(int(config.features.image_size), float(config.model.smoothing_sigma),
                   float(config.model.level_percentile), float(level_cap))

    def upsample(self, grid, size: Tuple[int, int]) -> Tuple[np.ndarray, float]:
        """(1, R, R) tensor -> ((H, W) float32 array, (H, W) = ``size``; the part's level before the shift)."""
        amap = upsample_maps(grid, self.image_size, self.smoothing_sigma, size)[0].cpu().numpy().astype(np.float32)
        if self.level_percentile <= 0:
            return amap, 0.0
        level = part_level(amap, self.level_percentile)
        shifted = amap - np.float32(min(level, self.level_cap))
        if math.isfinite(self.level_cap):  # no part there: one value below every part pixel, for every part
            shifted[amap == 0] = -np.float32(self.level_cap)  # (not <= 0: a -inf pixel must stay, for ERROR)
        return shifted, level

    def sizes(self, count: int, sizes: Optional[Sequence[Tuple[int, int]]]) -> List[Tuple[int, int]]:
        """``count`` output sizes (default image_size x image_size); InputError when the count differs."""
        sizes = list(sizes) if sizes is not None else [(self.image_size, self.image_size)] * count
        if len(sizes) != count:
            raise InputError(f"{count} feature samples but {len(sizes)} output sizes")
        return [tuple(int(v) for v in size) for size in sizes]


def score_feature_set(grid_maps: Callable, features, sizes: Optional[Sequence[Tuple[int, int]]], post: PostProcessing,
                      batch_size: Optional[int] = None, xyzs: Optional[Sequence[np.ndarray]] = None,
                      timer: StageTimer = NO_TIMER) -> ScoredParts:
    """Maps of a FeatureSet (M samples): ``grid_maps`` (FeatureSet -> (B, R, R)) on batches of ``batch_size``
    (None: all at once), each map post-processed to its size. Timer stages: heads, post_upsample, postprocess."""
    count = len(features)
    sizes = post.sizes(count, sizes)
    xyzs = list(xyzs) if xyzs is not None else [None] * count
    if len(xyzs) != count:
        raise InputError(f"{count} feature samples but {len(xyzs)} point clouds")
    step = max(1, batch_size or count)
    maps: List[np.ndarray] = []
    levels: List[float] = []
    for start in range(0, count, step):
        started = timer.now()
        batch = features.subset(slice(start, start + step))
        grid = grid_maps(batch)
        timer.tick("heads", started)
        if int(grid.shape[0]) != len(batch):
            raise ModelError(f"{len(batch)} parts scored but {int(grid.shape[0])} maps came back")
        for index in range(len(batch)):
            started = timer.now()
            amap, level = post.upsample(grid[index:index + 1], sizes[start + index])
            maps.append(amap)
            levels.append(level)
            timer.add("postprocess", timer.tick("post_upsample", started) - started)
    return ScoredParts(maps, xyzs, levels)


def judge(scored: ScoredParts, threshold: float, model_id: str = "", timer: StageTimer = NO_TIMER) -> List[InspectionResult]:
    """The answers for scored parts at ``threshold``, each made by :func:`decide`."""
    results = []
    for amap, xyz in zip(scored.maps, scored.xyzs):
        started = timer.now()
        results.append(decide(amap, threshold, xyz, model_id))
        timer.add("postprocess", timer.tick("post_decide", started) - started)
    return results


class PartScorer:
    """Base of every detector: a threshold with its record, ``predict_samples`` = :func:`judge` of
    ``score_samples``. Subclasses implement :meth:`score_samples` and may override :attr:`model_id`."""

    timer: StageTimer = NO_TIMER
    _threshold: float = math.inf
    _threshold_record: Optional[ThresholdRecord] = None

    @property
    def model_id(self) -> str:
        return ""

    @property
    def threshold(self) -> float:
        """The image-score decision threshold (FAIL when score > threshold); setting it records a manual one."""
        return self._threshold

    @threshold.setter
    def threshold(self, value: float) -> None:
        self.set_threshold(records.manual(value, replaced=self._threshold))

    @property
    def threshold_record(self) -> Optional[ThresholdRecord]:
        """Where the threshold came from (None before calibration)."""
        return self._threshold_record

    def set_threshold(self, record: ThresholdRecord) -> None:
        """The one threshold writer: the value and its record together (ConfigError for NaN)."""
        if math.isnan(float(record.value)):
            raise ConfigError("threshold must be a number, got NaN")
        self._threshold, self._threshold_record = float(record.value), record
        self._store_threshold_record(record)

    def _store_threshold_record(self, record: ThresholdRecord) -> None:
        """Hook for scorers that persist the record (the Detector's metadata)."""

    def score_samples(self, samples: Sequence, cache_dir=None, progress: bool = False,
                      batch_size: int = 8) -> ScoredParts:
        raise NotImplementedError

    def predict_samples(self, samples: Sequence, cache_dir=None, progress: bool = False, batch_size: int = 8,
                        threshold: Optional[float] = None) -> List[InspectionResult]:
        """Answers for :class:`~mentor3ad.types.Sample` s at the calibrated threshold (or ``threshold``)."""
        scored = self.score_samples(samples, cache_dir=cache_dir, progress=progress, batch_size=batch_size)
        return judge(scored, self.threshold if threshold is None else float(threshold), self.model_id, self.timer)


class FeatureScorer(PartScorer):
    """A PartScorer on backbone features: subclasses give ``grid_maps``, ``extractor`` and ``post``."""

    extractor = None
    post: PostProcessing

    def grid_maps(self, features):
        """FeatureSet (B samples) -> (B, R, R) grid maps."""
        raise NotImplementedError

    def score_features(self, features, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                       batch_size: Optional[int] = None, xyzs: Optional[Sequence[np.ndarray]] = None) -> ScoredParts:
        """Maps of a FeatureSet at the input sizes ``sizes`` (default image_size), ``batch_size`` at a time."""
        return score_feature_set(self.grid_maps, features, sizes, self.post, batch_size, xyzs, self.timer)

    def image_scores(self, features, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                     batch_size: Optional[int] = None) -> List[float]:
        """Image scores of a FeatureSet, as :meth:`predict_samples` scores the same parts."""
        return self.score_features(features, sizes, batch_size).image_scores

    def predict_features(self, features, sizes: Optional[Sequence[Tuple[int, int]]] = None,
                         xyzs: Optional[Sequence[np.ndarray]] = None,
                         threshold: Optional[float] = None) -> List[InspectionResult]:
        """Answers from a FeatureSet (one batch): maps at ``sizes``, regions measured on ``xyzs``."""
        scored = self.score_features(features, sizes, xyzs=xyzs)
        return judge(scored, self.threshold if threshold is None else float(threshold), self.model_id, self.timer)

    def score_samples(self, samples: Sequence, cache_dir=None, progress: bool = False,
                      batch_size: int = 8) -> ScoredParts:
        """Maps of samples in chunks of ``batch_size``: observation check, features (through the cache when
        ``cache_dir``), :meth:`score_features` per chunk."""
        from tqdm import tqdm

        if self.extractor is None:
            raise ConfigError(f"{type(self).__name__} has no feature extractor to score samples with")
        step = max(1, batch_size)
        self.timer.reset()
        scored = ScoredParts()
        with tqdm(total=len(samples), desc="score", disable=not progress, leave=False) as bar:
            for start in range(0, len(samples), step):
                chunk = samples[start:start + step]
                checked = [check_observation(s.rgb, s.xyz) for s in chunk]
                started = self.timer.now()
                features = extract_features(chunk, self.extractor, cache_dir, step,
                                            timer=self.timer.prefixed("features_"))
                self.timer.tick("features", started)
                scored.extend(self.score_features(stack_features(features), [r.shape[:2] for r, _ in checked],
                                                  xyzs=[x for _, x in checked]))
                bar.update(len(chunk))
        return scored


__all__ = ["ScoredParts", "part_level", "PostProcessing", "score_feature_set", "judge", "PartScorer", "FeatureScorer"]
