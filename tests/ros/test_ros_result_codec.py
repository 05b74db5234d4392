"""The ~/result transport: InspectionResult <-> DiagnosticArray round-trips (no DDS needed)."""
import math

import pytest

pytest.importorskip("diagnostic_msgs")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mentor3ad.errors import InputError  # noqa: E402
from mentor3ad.ros.result_codec import decode, encode  # noqa: E402
from mentor3ad.types import InspectionResult, Region, Verdict  # noqa: E402


def test_round_trip_keeps_every_field():
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id="cam")
    regions = [Region((1, 2, 10, 12), 40, 3.25, (0.01, -0.02, 0.5), 0.9, (0.004, 0.003, 0.001)),
               Region((20, 20, 21, 21), 2, 0.0, (math.nan,) * 3, 0.7)]
    result = InspectionResult(Verdict.FAIL, score=0.123456789012345, threshold=0.1, latency_ms=12.5, model_id="abc123",
                              regions=regions)
    msg = encode(result, header, "/inspector/result")
    assert msg.header.stamp.sec == 12 and msg.status[0].level == DiagnosticStatus.WARN
    assert msg.status[0].hardware_id == "abc123" and msg.status[0].message == "FAIL"
    decoded = decode(msg)
    assert decoded.stamp_ns == 12_000_000_345 and decoded.frame_id == "cam"
    assert decoded.score == 0.123456789012345 and decoded.threshold == 0.1  # exact (repr)
    assert decoded.verdict is Verdict.FAIL and decoded.model_id == "abc123" and decoded.latency_ms == 12.5
    assert decoded.regions[0] == regions[0]
    assert all(math.isnan(c) for c in decoded.regions[1].centroid_xyz + decoded.regions[1].extent_xyz)


def test_error_result_names_the_reason_and_bad_verdicts_are_refused():
    msg = encode(InspectionResult.error("bad input: truncated"), Header(), "n")
    assert msg.status[0].message == "ERROR: bad input: truncated" and msg.status[0].level == DiagnosticStatus.ERROR
    decoded = decode(msg)
    assert decoded.verdict is Verdict.ERROR and decoded.reason == "bad input: truncated"
    assert math.isnan(decoded.score) and decoded.regions == []
    with pytest.raises(ValueError, match="MAYBE"):
        InspectionResult("MAYBE")
    msg.status = []
    with pytest.raises(InputError, match="no status"):
        decode(msg)
