"""Naive reference detector: per-pixel distance to the mean training image and mean training depth.

It shows how hard a dataset is: any detector worth deploying must beat it clearly. For an (H, W)
input it computes

    map = ||rgb - mean_rgb|| / s_rgb + |z - mean_z| / s_z       (each term 0 where undefined)

smoothed with a Gaussian (sigma 4 px, the usual post-processing of anomaly maps), where ``mean_*``
are per-pixel means over the training samples (depth over valid points only) and ``s_*`` the mean
absolute training residual of each term (so both modalities weigh the same). The image score is the
map's maximum; the threshold is the maximum training score (the quantile rule at a false-reject rate of
0, with its :class:`~mentor3ad.model.threshold.ThresholdRecord`). It follows the detectors' scoring
protocol (:class:`~mentor3ad.model.scoring.PartScorer`). No alignment, no features: pose changes and
lighting changes of good parts count as anomalies, which is exactly its weakness.
"""
from __future__ import annotations

from typing import Optional, Sequence

import numpy as np
from scipy import ndimage

from ..config import CalibrationConfig
from ..errors import InputError
from ..geometry.observation import valid_point_mask
from ..model.scoring import PartScorer, ScoredParts
from ..model.threshold import ThresholdSource, from_good_scores
from ..types import InspectionResult, Sample

MAX_TRAINING_SCORE = CalibrationConfig(target_false_reject_rate=0.0, rule="quantile")  # the largest score


def _valid_depth(xyz: np.ndarray) -> np.ndarray:
    z = np.asarray(xyz, dtype=np.float64)[..., 2]
    return np.where(valid_point_mask(xyz), z, np.nan)


class NaiveBaseline(PartScorer):
    """Per-pixel mean-image / mean-depth distance detector (see module docstring)."""

    def __init__(self, smoothing_sigma: float = 4.0):
        self.smoothing_sigma = smoothing_sigma
        self.mean_rgb: Optional[np.ndarray] = None
        self.mean_z: Optional[np.ndarray] = None
        self.rgb_scale = 1.0
        self.z_scale = 1.0

    def fit(self, samples: Sequence[Sample]) -> "NaiveBaseline":
        """Learn per-pixel means from good samples of one resolution."""
        samples = list(samples)
        if not samples:
            raise InputError("the naive baseline needs at least one training sample")
        shape = samples[0].rgb.shape
        bad = [s.name or str(i) for i, s in enumerate(samples) if s.rgb.shape != shape or s.xyz.shape != shape]
        if bad:
            raise InputError(f"all training samples must have the size {shape}; these differ: {', '.join(bad[:5])}")
        rgbs = np.stack([s.rgb.astype(np.float32) for s in samples])
        zs = np.stack([_valid_depth(s.xyz) for s in samples])
        self.mean_rgb = rgbs.mean(0)
        with np.errstate(invalid="ignore"), _quiet_nanmean():
            self.mean_z = np.nanmean(zs, axis=0)
        rgb_res = np.linalg.norm(rgbs - self.mean_rgb, axis=-1)
        z_res = np.abs(zs - self.mean_z)
        self.rgb_scale = float(max(rgb_res.mean(), 1e-6))
        self.z_scale = float(max(np.nanmean(z_res) if np.isfinite(z_res).any() else 0.0, 1e-9))
        scores = self.score_samples(samples).image_scores
        self.set_threshold(from_good_scores(scores, MAX_TRAINING_SCORE, [ThresholdSource("train", len(scores))],
                                            set_by="naive"))
        return self

    def _map(self, sample: Sample) -> np.ndarray:
        if self.mean_rgb is None:
            raise InputError("the naive baseline is not fitted; call fit(train_samples) first")
        if sample.rgb.shape != self.mean_rgb.shape:
            raise InputError(
                f"sample {sample.name or ''} has size {sample.rgb.shape[:2]}, the baseline was fitted on "
                f"{self.mean_rgb.shape[:2]}"
            )
        rgb_term = np.linalg.norm(sample.rgb.astype(np.float32) - self.mean_rgb, axis=-1) / self.rgb_scale
        z_term = np.abs(_valid_depth(sample.xyz) - self.mean_z) / self.z_scale
        amap = rgb_term + np.nan_to_num(z_term, nan=0.0)
        if self.smoothing_sigma > 0:
            amap = ndimage.gaussian_filter(amap, self.smoothing_sigma)
        return amap.astype(np.float32)

    def score_samples(self, samples: Sequence[Sample], cache_dir=None, progress: bool = False,
                      batch_size: int = 8) -> ScoredParts:
        """(H, W) float32 maps at the input resolution (no features: ``cache_dir`` and ``batch_size`` unused;
        regions are measured in pixels only)."""
        return ScoredParts([self._map(s) for s in samples], [None] * len(samples))

    def predict(self, sample: Sample) -> InspectionResult:
        """The answer with the (H, W) float32 map at the input resolution (decided like the detector's)."""
        return self.predict_samples([sample])[0]


class _quiet_nanmean:
    """Silence numpy's 'Mean of empty slice' for pixels never valid in training (they stay NaN)."""

    def __enter__(self):
        import warnings

        self._ctx = warnings.catch_warnings()
        self._ctx.__enter__()
        warnings.simplefilter("ignore", category=RuntimeWarning)

    def __exit__(self, *exc):
        return self._ctx.__exit__(*exc)
