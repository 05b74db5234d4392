"""InspectionPipeline.judge (mentor3ad.ros.inspector.pipeline) with a real model on real messages: one answer
per set in order, a set that does not convert answers for itself, a batch the detector refuses is judged
set by set so only the refused set gets the error."""
import pytest

pytest.importorskip("torch")
pytest.importorskip("rclpy")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.errors import InputError  # noqa: E402
from mentor3ad.io.inputs import input_mode  # noqa: E402
from mentor3ad.ros.inspector.pipeline import InspectionPipeline  # noqa: E402
from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages  # noqa: E402


@pytest.fixture(scope="module")
def detector(tmp_path_factory):
    return train_tiny_model(tmp_path_factory.mktemp("pipeline") / "tiny.m3ad", n_train=4, n_val=2)


def message_sets():
    good = [to_messages(build_pair("good", 64, 64, "points", scene="cell", seed=s), s + 1) for s in range(2)]
    small = to_messages(build_pair("good", 40, 30, "points", scene="cell", seed=7), 9)
    broken = to_messages(build_pair("missing_fields", 64, 64, "points", scene="cell"), 5)
    return [good[0], broken, small, good[1]]


def test_one_answer_per_set_in_order(detector):
    pipeline = InspectionPipeline(input_mode("points"))
    sets = message_sets()
    judged = pipeline.judge(detector, sets)
    assert len(judged) == 4
    assert judged[1][0].verdict.value == "ERROR" and "bad input: " in judged[1][0].reason and judged[1][1] is None
    for (result, rgb), messages in zip([judged[0], judged[2], judged[3]], [sets[0], sets[2], sets[3]]):
        alone = detector.predict(*pipeline.convert(messages))
        assert result.verdict is alone.verdict and result.score == pytest.approx(alone.score, rel=1e-4, abs=1e-6)
        assert rgb.shape == alone.anomaly_map.shape + (3,)
    missing = pipeline.judge(None, sets, model_error="no model loaded: model_path is empty")
    assert [r.reason for r, _ in missing] == ["no model loaded: model_path is empty", judged[1][0].reason,
                                              "no model loaded: model_path is empty",
                                              "no model loaded: model_path is empty"]
    assert missing[0][1] is not None  # the image of a part judged without a model still reaches the outputs


def test_a_refused_batch_is_judged_set_by_set(detector):
    """The real detector, refusing any batch that holds the 30x40 part (as a backbone may refuse one input)."""

    class Refusing:
        model_id = detector.model_id

        @staticmethod
        def predict_batch(pairs, threshold=None):
            if any(rgb.shape[:2] == (30, 40) for rgb, _ in pairs):
                raise InputError("the 30x40 part is refused")
            return detector.predict_batch(pairs, threshold)

    pipeline = InspectionPipeline(input_mode("points"))
    judged = pipeline.judge(Refusing(), message_sets())
    verdicts = [result.verdict.value for result, _ in judged]
    assert verdicts[1] == verdicts[2] == "ERROR" and verdicts[0] in ("PASS", "FAIL") and verdicts[3] in ("PASS", "FAIL")
    assert judged[2][0].reason == "bad input: the 30x40 part is refused"
    assert judged[2][0].model_id == detector.model_id and judged[2][1].shape == (30, 40, 3)
