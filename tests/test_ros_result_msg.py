"""The ~/result DiagnosticArray encoding round-trips (no DDS needed)."""
import math

import pytest

pytest.importorskip("diagnostic_msgs")

from builtin_interfaces.msg import Time  # noqa: E402
from diagnostic_msgs.msg import DiagnosticStatus  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mentor3ad.ros.result_msg import build_result, parse_result  # noqa: E402
from mentor3ad.types import Region  # noqa: E402


def test_round_trip_keeps_every_field():
    header = Header(stamp=Time(sec=12, nanosec=345), frame_id="cam")
    regions = [Region((1, 2, 10, 12), 40, 3.25, (0.01, -0.02, 0.5), 0.9),
               Region((20, 20, 21, 21), 2, 0.0, (math.nan,) * 3, 0.7)]
    msg = build_result(header, "FAIL", "/inspector/result", score=0.123456789012345, threshold=0.1,
                       latency_ms=12.5, model="abc123", regions=regions)
    assert msg.header.stamp.sec == 12 and msg.status[0].level == DiagnosticStatus.WARN
    assert msg.status[0].hardware_id == "abc123" and msg.status[0].message == "FAIL"
    parsed = parse_result(msg)
    assert parsed["stamp_ns"] == 12_000_000_345 and parsed["frame_id"] == "cam"
    assert parsed["score"] == 0.123456789012345 and parsed["threshold"] == 0.1  # exact (repr)
    assert parsed["verdict"] == "FAIL" and parsed["model"] == "abc123" and parsed["latency_ms"] == 12.5
    assert parsed["regions"][0] == regions[0]
    assert all(math.isnan(c) for c in parsed["regions"][1].centroid_xyz)


def test_error_result_names_the_reason_and_bad_verdicts_are_refused():
    msg = build_result(Header(), "ERROR", "n", reason="bad input: truncated")
    parsed = parse_result(msg)
    assert parsed["message"] == "ERROR: bad input: truncated" and parsed["level"] == 2
    assert math.isnan(parsed["score"]) and parsed["regions"] == []
    with pytest.raises(ValueError, match="verdict must be one of"):
        build_result(Header(), "MAYBE", "n")
    msg.status = []
    with pytest.raises(ValueError, match="no status"):
        parse_result(msg)
