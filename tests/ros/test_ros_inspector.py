"""Inspector node over real DDS (console script), with a tiny trained model: bad inputs, depth == points,
reload, enable, burst handling and diagnostics."""
import shutil
import sys

import numpy as np
import pytest

rclpy = pytest.importorskip("rclpy")
pytest.importorskip("torch")

from helpers import train_tiny_model  # noqa: E402
from mentor3ad.ros.tooling.graph import NodeProcess, ResultCollector, spin_until  # noqa: E402
from mentor3ad.package_files import package_executable  # noqa: E402

pytestmark = [pytest.mark.ros, pytest.mark.timeout(120)]

SEC = 1_000_000_000
START_NS = 1_800_000_000 * SEC
PERIOD_NS = 50_000_000
INPUT_TOPICS = ("image", "points", "depth", "camera_info")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    path = tmp_path_factory.mktemp("model") / "tiny.m3ad"
    detector = train_tiny_model(path)
    return path, detector.identity["model_id"]


def start_inspector(name="inspector", **params):
    exe = package_executable("inspector_node")
    assert exe, "console script inspector_node not installed (run ./run.sh setup or colcon build)"
    args = [exe, "--ros-args", "-r", f"__node:={name}"]
    for topic in INPUT_TOPICS:  # deterministic delivery in tests: reliable, deep reader queues
        args += ["-p", f"qos_overrides./{topic}.subscription.reliability:=reliable",
                 "-p", f"qos_overrides./{topic}.subscription.depth:=50"]
    for key, value in params.items():
        args += ["-p", f"{key}:={value}"]
    return NodeProcess(args)


def publish(sequence, mode="points", rate=20.0, scene="cell", seed=0, start_ns=START_NS):
    return NodeProcess([sys.executable, "-m", "mentor3ad.ros.tooling.pair_publisher", "--sequence", ",".join(sequence),
                        "--mode", mode, "--scene", scene, "--size", "64x64", "--rate", str(rate),
                        "--seed", str(seed), "--start-ns", str(start_ns), "--period-ns", str(PERIOD_NS)])


def run_sequence(ros_node, collector, sequence, inspectors, **publish_kw):
    for inspector in inspectors:
        assert collector.wait_for_publisher(40.0) if collector is not None else True, inspector.output()
    with publish(sequence, **publish_kw) as publisher:
        results = collector.wait_for(len(sequence), 60.0)
        assert publisher.wait(30.0) == 0, publisher.output()
    return results


BAD_INPUTS = {
    "mismatched_sizes": "does not match point cloud size",
    "bad_encoding": "unsupported image encoding '32FC1'",
    "unorganized": "unorganized",
    "missing_fields": "missing field(s) z",
    "few_points": "too few valid points",
    "truncated": "truncated",
}


def test_bad_inputs_give_named_errors_and_node_keeps_serving(ros_node, tiny_model):
    model_path, model_id = tiny_model
    sequence = ["good"]
    for kind in BAD_INPUTS:
        sequence += [kind, "good"]
    from sensor_msgs.msg import Image

    overlays = []
    ros_node.create_subscription(Image, "/inspector/overlay", lambda m: overlays.append(
        (m.header.stamp.sec * SEC + m.header.stamp.nanosec, m.encoding, m.width, m.height, m.header.frame_id)), 50)
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(model_path)) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        with publish(sequence) as publisher:
            results = collector.wait_for(len(sequence), 60.0)
            assert publisher.wait(30.0) == 0, publisher.output()
        spin_until(ros_node, lambda: len(overlays) >= sequence.count("good"), 5.0)
        assert inspector.proc.poll() is None, inspector.output()
    stamps = [START_NS + i * PERIOD_NS for i in range(len(sequence))]
    assert [r.stamp_ns for r in results] == stamps
    # overlays only for scored pairs, with the image's header and size
    assert sorted(overlays) == [(t, "bgr8", 64, 64, "camera") for t, k in zip(stamps, sequence) if k == "good"]
    for kind, result in zip(sequence, results):
        if kind == "good":
            assert result.verdict in ("PASS", "FAIL"), result
            assert result.model_id == model_id and np.isfinite(result.score) and result.latency_ms > 0
        else:
            assert result.verdict == "ERROR", (kind, result)
            assert BAD_INPUTS[kind] in result.reason, (kind, result.reason)
            assert result.reason.startswith("bad input")


def test_depth_input_gives_the_same_maps_as_the_organized_cloud(ros_node, tiny_model):
    from sensor_msgs.msg import Image

    model_path, _ = tiny_model
    maps = {"points": {}, "depth": {}}
    for mode in maps:
        ros_node.create_subscription(
            Image, f"/insp_{mode}/anomaly_map",
            lambda m, mode=mode: maps[mode].__setitem__(
                m.header.stamp.sec * SEC + m.header.stamp.nanosec,
                np.frombuffer(bytes(m.data), np.float32).reshape(m.height, m.width)), 20)
    points_results = ResultCollector(ros_node, "/insp_points/result")
    depth_results = ResultCollector(ros_node, "/insp_depth/result")
    sequence = ["good", "good", "zero_intrinsics", "good"]
    with start_inspector("insp_points", model_path=str(model_path), input_mode="points") as a, \
            start_inspector("insp_depth", model_path=str(model_path), input_mode="depth") as b:
        assert points_results.wait_for_publisher(40.0), a.output()
        assert depth_results.wait_for_publisher(40.0), b.output()
        with publish(sequence, mode="both") as publisher:
            depth_results.wait_for(len(sequence), 60.0)
            points_results.wait_for(len(sequence), 60.0)
            spin_until(ros_node, lambda: len(maps["depth"]) >= 3 and len(maps["points"]) >= 4, 10.0)
            assert publisher.wait(30.0) == 0, publisher.output()
    assert [r.verdict == "ERROR" for r in depth_results.results] == [False, False, True, False]
    assert "zero or invalid intrinsics" in depth_results.results[2].reason
    # the cloud path ignores camera_info, so its third pair is a normal result
    assert all(r.verdict in ("PASS", "FAIL") for r in points_results.results)
    assert sorted(maps["points"]) == [START_NS + i * PERIOD_NS for i in range(4)]
    assert sorted(maps["depth"]) == [START_NS + i * PERIOD_NS for i in (0, 1, 3)]
    for stamp, depth_map in maps["depth"].items():
        assert depth_map.shape == (64, 64)
        np.testing.assert_array_equal(depth_map, maps["points"][stamp])
    for p, d in zip(points_results.results, depth_results.results):
        if d.verdict != "ERROR":
            assert (p.score, p.verdict, p.regions) == (d.score, d.verdict, d.regions)


def _call(node, srv_type, name, request, timeout=20.0):
    client = node.create_client(srv_type, name)
    assert spin_until(node, client.service_is_ready, timeout), f"service {name} not available"
    future = client.call_async(request)
    assert spin_until(node, future.done, timeout), f"service {name} did not answer"
    return future.result()


def test_reload_enable_and_diagnostics(ros_node, tiny_model, tmp_path):
    from diagnostic_msgs.msg import DiagnosticArray
    from std_srvs.srv import SetBool, Trigger

    good_model, model_id = tiny_model
    live_model = tmp_path / "live.m3ad"
    shutil.copy(good_model, live_model)
    diagnostics = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
        s for s in m.status if s.name == "/inspector: inspector"), 20)
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(live_model), diagnostics_period=0.2) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        live_model.write_bytes(b"this is not a model")
        response = _call(ros_node, Trigger, "/inspector/reload_model", Trigger.Request())
        assert not response.success and "cannot load model" in response.message and model_id in response.message, inspector.output()
        disabled = _call(ros_node, SetBool, "/inspector/enable", SetBool.Request(data=False))
        assert disabled.success
        with publish(["good", "good"], seed=5) as publisher:
            collector.wait_for(2, 60.0)
            assert publisher.wait(30.0) == 0
        assert [r.verdict for r in collector.results] == ["SKIPPED", "SKIPPED"]
        assert "disabled" in collector.results[0].reason
        assert _call(ros_node, SetBool, "/inspector/enable", SetBool.Request(data=True)).success
        with publish(["good"], seed=6, start_ns=START_NS + SEC) as publisher:
            collector.wait_for(3, 60.0)
            assert publisher.wait(30.0) == 0
        # the corrupt file was refused: the old model still answers
        assert collector.results[2].verdict in ("PASS", "FAIL") and collector.results[2].model_id == model_id
        spin_until(ros_node, lambda: any(kv.key == "processed" and kv.value == "1"
                                         for s in diagnostics[-1:] for kv in s.values), 5.0)
    values = {kv.key: kv.value for kv in diagnostics[-1].values}
    for key in ("input_rate_hz", "latency_p50_ms", "latency_p90_ms", "latency_p99_ms", "queued", "skipped",
                "errored", "dropped_stale", "device", "model"):
        assert key in values, values
    import torch

    assert values["device"] == ("cuda" if torch.cuda.is_available() else "cpu")  # device:=auto
    assert values["model"] == model_id and values["skipped"] == "2"
    assert values["received"] == "3" and values["processed"] == "1"


def test_missing_model_reports_error_until_reload(ros_node, tiny_model, tmp_path):
    from std_srvs.srv import Trigger

    model_path = tmp_path / "later.m3ad"
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(model_path)) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        with publish(["good"]) as publisher:
            collector.wait_for(1, 60.0)
            assert publisher.wait(30.0) == 0
        assert collector.results[0].verdict == "ERROR" and "cannot load model" in collector.results[0].reason
        shutil.copy(tiny_model[0], model_path)
        assert _call(ros_node, Trigger, "/inspector/reload_model", Trigger.Request()).success
        with publish(["good"], start_ns=START_NS + SEC) as publisher:
            collector.wait_for(2, 60.0)
            assert publisher.wait(30.0) == 0
    assert collector.results[1].verdict in ("PASS", "FAIL") and collector.results[1].model_id == tiny_model[1]


@pytest.mark.parametrize("queue_size", [32, 2])
def test_burst_gets_one_result_per_pair_in_order(ros_node, tiny_model, queue_size):
    model_path, _ = tiny_model
    n = 12
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(model_path), queue_policy="all", queue_size=queue_size) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        with publish(["good"] * n, rate=0) as publisher:
            collector.wait_for(n, 60.0)
            assert publisher.wait(30.0) == 0
        collector.wait_for(n + 1, 0.5)
    stamps = [START_NS + i * PERIOD_NS for i in range(n)]
    results = collector.results
    assert len(results) == n and sorted(r.stamp_ns for r in results) == stamps
    processed = [r for r in results if r.verdict != "SKIPPED"]
    assert [r.stamp_ns for r in processed] == sorted(r.stamp_ns for r in processed)  # in order
    if queue_size >= n:
        assert len(processed) == n and [r.stamp_ns for r in results] == stamps
        # the burst outran inference: later pairs waited in the queue
        assert results[-1].latency_ms > results[0].latency_ms
    else:
        skipped = [r for r in results if r.verdict == "SKIPPED"]
        assert skipped and all("queue full" in r.reason for r in skipped)


def test_latest_policy_drops_stale_pairs_and_threshold_override(ros_node, tiny_model):
    from diagnostic_msgs.msg import DiagnosticArray

    model_path, _ = tiny_model
    n = 12
    diagnostics = []
    ros_node.create_subscription(DiagnosticArray, "/diagnostics", lambda m: diagnostics.extend(
        s for s in m.status if s.name == "/inspector: inspector"), 20)
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(model_path), queue_policy="latest", threshold=1e-6,
                         diagnostics_period=0.2) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        with publish(["good"] * n, rate=0) as publisher:
            assert publisher.wait(30.0) == 0
        collector.wait_for(n, 5.0)

        def counts():
            values = {kv.key: kv.value for kv in diagnostics[-1].values} if diagnostics else {}
            return int(values.get("processed", 0)), int(values.get("dropped_stale", 0))

        spin_until(ros_node, lambda: sum(counts()) == n, 10.0)
    results = collector.results
    processed, dropped = counts()
    assert 0 < len(results) < n and dropped > 0 and processed + dropped == n == int(
        {kv.key: kv.value for kv in diagnostics[-1].values}["received"])
    assert len(results) == processed
    assert [r.stamp_ns for r in results] == sorted(r.stamp_ns for r in results)
    assert results[-1].stamp_ns == START_NS + (n - 1) * PERIOD_NS  # the newest pair is never dropped
    # threshold override 1e-6: every scored pair FAILs and carries regions measured on the cloud
    for r in results:
        assert r.verdict == "FAIL" and r.threshold == 1e-6 and r.regions
        assert r.regions[0].area_mm2 > 0 and all(np.isfinite(r.regions[0].centroid_xyz))


def test_trainer_node_asks_the_running_inspector_to_reload(ros_node, tmp_path):
    import json

    import yaml

    from mentor3ad.io.bags import write_dataset_bag
    from mentor3ad.io.datasets.synthetic import camera_matrix, generate_sample
    from helpers import TINY_MODEL_CONFIG

    bag = write_dataset_bag([generate_sample(i, (64, 64)) for i in range(5)], tmp_path / "good_bag",
                            camera_info=camera_matrix((64, 64)))
    config = tmp_path / "tiny.yaml"
    config.write_text(yaml.safe_dump(json.loads(json.dumps(TINY_MODEL_CONFIG))))
    model_path = tmp_path / "fresh.m3ad"
    collector = ResultCollector(ros_node, "/inspector/result")
    with start_inspector(model_path=str(model_path)) as inspector:
        assert collector.wait_for_publisher(40.0), inspector.output()
        trainer = NodeProcess([package_executable("trainer_node"), "--ros-args", "-p", f"bag_paths:=['{bag}']",
                               "-p", f"output_model_path:={model_path}", "-p", f"config_file:={config}",
                               "-p", "device:=cpu", "-p", "reload_service:=/inspector/reload_model"])
        with trainer:
            assert trainer.wait(180.0) == 0, trainer.output()
        assert "/inspector/reload_model: loaded model" in trainer.output(), trainer.output()
        with publish(["good"]) as publisher:
            collector.wait_for(1, 60.0)
            assert publisher.wait(30.0) == 0
    assert collector.results[0].verdict in ("PASS", "FAIL"), collector.results


def test_frame_check_and_working_volume_are_parameters(ros_node, tiny_model):
    model_path, _ = tiny_model
    sequence = ["good", "other_frame", "millimetres", "good"]
    for params, errors in (({}, {"other_frame": "differs from cloud frame 'camera_depth_optical_frame'",
                                 "millimetres": "outside the working volume"}),
                           ({"require_same_frame": "false",  # in the volume, the model still refuses millimetres
                             "working_volume": "[-1000.0,1000.0,-1000.0,1000.0,0.0,1000.0]"},
                            {"millimetres": "x outside the training depths [0.338, 0.36] m: wrong units"})):
        collector = ResultCollector(ros_node, "/inspector/result")
        with start_inspector(model_path=str(model_path), **params) as inspector:
            results = run_sequence(ros_node, collector, sequence, [inspector], scene="cell")
        assert len(results) == len(sequence), inspector.output()
        for kind, result in zip(sequence, results):
            if kind in errors:
                assert result.verdict == "ERROR" and errors[kind] in result.reason, (kind, result.reason)
            else:
                assert result.verdict in ("PASS", "FAIL"), (params, kind, result.reason)
        ros_node.destroy_subscription(collector.sub)


def test_a_bad_working_volume_is_refused_at_start(tmp_path):
    with start_inspector(working_volume="[1.0,-1.0,-1.0,1.0,0.0,2.0]") as inspector:
        assert inspector.wait(30.0) == 2, inspector.output()
    assert "working_volume" in inspector.output() and "min < max" in inspector.output()
