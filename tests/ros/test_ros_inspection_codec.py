"""The typed result transport (~/inspection, mentor3ad.ros.inspection_codec): InspectionResult <->
mentor3ad_interfaces/msg/InspectionResult both ways, through CDR; the part_id in the legacy ~/result values;
the evaluator's report keyed by part_id (a real evaluator node fed real result messages over DDS)."""
import json
import math
import time

import pytest

pytest.importorskip("rclpy")
msg = pytest.importorskip("mentor3ad_interfaces.msg", reason="mentor3ad_interfaces not built (./run.sh setup)")

from builtin_interfaces.msg import Time  # noqa: E402
from std_msgs.msg import Header  # noqa: E402

from mentor3ad.errors import InputError  # noqa: E402
from mentor3ad.ros import inspection_codec, result_codec  # noqa: E402
from mentor3ad.types import InspectionResult, Region, Verdict  # noqa: E402

REGIONS = [Region((1, 2, 10, 12), 40, 3.25, (0.01, -0.02, 0.5), 0.9, (0.004, 0.003, 0.001)),
           Region((20, 20, 20, 21), 2, 0.0, (math.nan,) * 3, 0.7)]


def test_typed_round_trip_keeps_every_field_through_cdr():
    from rclpy.serialization import deserialize_message, serialize_message

    result = InspectionResult(Verdict.FAIL, score=0.1234567890123, threshold=0.1, latency_ms=12.5, model_id="abc123",
                              regions=REGIONS, part_id="tray 3 / slot 7")
    image = Header(stamp=Time(sec=12, nanosec=345), frame_id="cam")
    cloud = Header(stamp=Time(sec=12, nanosec=346), frame_id="cam_depth")
    message = inspection_codec.encode(result, image, cloud)
    assert message.verdict == msg.InspectionResult.FAIL and message.part_id == "tray 3 / slot 7"
    assert (message.cloud_frame_id, message.cloud_stamp.nanosec) == ("cam_depth", 346)
    box = message.regions[0].bbox  # inclusive (1, 2)-(10, 12) -> offset + size
    assert (box.x_offset, box.y_offset, box.width, box.height) == (1, 2, 10, 11)
    assert (message.regions[1].bbox.width, message.regions[1].bbox.height) == (1, 2)
    decoded = inspection_codec.decode(deserialize_message(serialize_message(message), msg.InspectionResult))
    assert (decoded.verdict, decoded.score, decoded.threshold, decoded.latency_ms) == (Verdict.FAIL, 0.1234567890123, 0.1,
                                                                                        12.5)
    assert (decoded.model_id, decoded.part_id) == ("abc123", "tray 3 / slot 7")
    assert decoded.stamp_ns == 12_000_000_345 and decoded.frame_id == "cam"
    assert decoded.regions[0] == REGIONS[0]
    assert decoded.regions[1].bbox == REGIONS[1].bbox
    assert all(math.isnan(c) for c in decoded.regions[1].centroid_xyz + decoded.regions[1].extent_xyz)


def test_every_verdict_has_its_constant_and_an_unset_message_is_refused():
    for verdict in Verdict:
        message = inspection_codec.encode(InspectionResult(verdict, reason="why" if not verdict.is_decision else ""),
                                          None)
        assert message.verdict == getattr(msg.InspectionResult, verdict.value)
        back = inspection_codec.decode(message)
        assert back.verdict is verdict and back.stamp_ns is None and math.isnan(back.score)  # no image judged
    with pytest.raises(InputError, match="verdict 0: not PASS"):
        inspection_codec.decode(msg.InspectionResult())


def test_the_legacy_result_carries_the_part_id_too():
    message = result_codec.encode(InspectionResult.error("bad input", part_id="SN-7"), Header(), "/inspector/result")
    assert {kv.key: kv.value for kv in message.status[0].values}["part_id"] == "SN-7"
    assert result_codec.decode(message).part_id == "SN-7"
    message.status[0].values = [kv for kv in message.status[0].values if kv.key != "part_id"]  # an older inspector
    assert result_codec.decode(message).part_id == ""


def test_the_evaluator_reports_parts_by_part_id(ros_node, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.parameter import Parameter

    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample
    from mentor3ad.ros.messages import header
    from mentor3ad.ros.nodes.evaluator import EvaluatorNode
    from mentor3ad.ros.tooling.graph import spin_until

    start, period = 1_700_000_000 * 10**9, 100_000_000
    bag = write_dataset_bag([generate_sample(i, (32, 32), defect="dent" if i else "good") for i in range(3)],
                            tmp_path / "test", camera_info=camera_matrix((32, 32)), start_stamp_ns=start,
                            period_ns=period)
    evaluator = EvaluatorNode(context=ros_node.context, parameter_overrides=[
        Parameter("ground_truth_bag", value=str(bag)), Parameter("output_dir", value=str(tmp_path / "out"))])
    try:
        results = ros_node.create_publisher(DiagnosticArray, "/result", 10)
        assert spin_until(ros_node, lambda: results.get_subscription_count() > 0, 10.0)
        for i, part_id in enumerate(["SN-0", "", "SN-2"]):
            results.publish(result_codec.encode(InspectionResult.error(f"no model ({i})", part_id=part_id),
                                                header(start + i * period, "camera"), "/inspector/result"))
        executor = SingleThreadedExecutor(context=ros_node.context)
        executor.add_node(evaluator)
        deadline = time.monotonic() + 10.0
        while len(evaluator.results) < 3 and time.monotonic() < deadline:
            executor.spin_once(timeout_sec=0.05)
        executor.remove_node(evaluator)
        with pytest.raises(InputError, match="no pair could be evaluated"):  # every part ERROR: no metrics
            evaluator.write_report("test")
        summary = json.loads((tmp_path / "out" / "ros_summary.json").read_text())
    finally:
        evaluator.destroy_node()
    assert set(summary["parts"]) == {"SN-0", "SN-2"}
    assert summary["parts"]["SN-2"] == {"stamp_ns": start + 2 * period, "name": summary["parts"]["SN-2"]["name"],
                                        "verdict": "ERROR", "score": None, "reason": "no model (2)"}
    assert summary["parts"]["SN-2"]["name"] and [p["part_id"] for p in summary["not_evaluated"]] == ["SN-0", "", "SN-2"]
