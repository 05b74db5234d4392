"""The scoring protocol (model/scoring.py) that the Detector, the PatchCore yardstick and the naive baseline share:
score_samples -> one map per part at its input size, predict_samples = judge of exactly those maps."""
import inspect

import numpy as np
import pytest

from helpers import synthetic_sample, train_tiny_model
from mentor3ad.eval.baselines import NaiveBaseline
from mentor3ad.eval.patchcore import PatchCore
from mentor3ad.model.scoring import PartScorer
from mentor3ad.types import Verdict


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("scoring") / "tiny.safetensors")


def test_detector_patchcore_and_naive_answer_through_one_protocol(detector, tmp_path):
    from mentor3ad.features.cache import extract_features
    from mentor3ad.features.extractor import stack_features

    train = [synthetic_sample(i) for i in range(4)]
    parts = [synthetic_sample(31), synthetic_sample(32, defect="stain"), synthetic_sample(33, size=96)]
    core = PatchCore.for_detector(detector.config, "rgb+xyz", extractor=detector.extractor)
    core.fit(stack_features(extract_features(train, detector.extractor)))
    naive = NaiveBaseline().fit(train)
    for scorer, samples in ((detector, parts), (core, parts), (naive, parts[:2])):  # naive: one image size only
        assert inspect.signature(type(scorer).predict_samples) == inspect.signature(PartScorer.predict_samples)
        scored = scorer.score_samples(samples, cache_dir=tmp_path)
        assert [m.shape for m in scored.maps] == [s.rgb.shape[:2] for s in samples]
        answers = scorer.predict_samples(samples, cache_dir=tmp_path)
        assert [a.score for a in answers] == scored.image_scores
        assert all(np.array_equal(a.anomaly_map, m) for a, m in zip(answers, scored.maps))
        assert all(a.threshold == scorer.threshold and a.model_id == scorer.model_id for a in answers)
        assert scorer.threshold_record.value == scorer.threshold
        assert all(a.verdict is Verdict.FAIL for a in scorer.predict_samples(samples, threshold=-1.0))
    assert naive.threshold == max(naive.score_samples(train).image_scores)  # its rule: the largest training score
    assert core.threshold_record.set_by == "patchcore" and naive.threshold_record.set_by == "naive"
    assert {"features", "heads", "post_upsample", "post_decide"} <= set(detector.timings())  # the detector's timer
