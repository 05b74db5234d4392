"""Worker (mentor3ad.ros.inspector.worker): queue policies and the batch seat on its real thread; then the
batch seat through a real inspector node and model (one predict_batch call for the waiting pairs, the
same answers as one at a time)."""
import logging
import threading
import time

import pytest

from mentor3ad.ros.inspector.part import Pair
from mentor3ad.ros.inspector.worker import Worker

pytestmark = pytest.mark.timeout(120)


class Recorder:
    """The worker's callbacks, recording what it hands over; ``gate`` holds it back (like a loading model)."""

    def __init__(self):
        self.batches, self.refused, self.dropped, self.crashed = [], [], [], []
        self.gate = threading.Event()
        self.lock = threading.Lock()

    def judge(self, batch):
        with self.lock:
            self.batches.append([pair.part_id for pair in batch])

    def worker(self, **kw):
        kw.setdefault("ready", self.gate.is_set)
        return Worker(self.judge, lambda pair, why: self.refused.append((pair.part_id, why)),
                      drop=lambda pair: self.dropped.append(pair.part_id), **kw)

    def judged(self):
        with self.lock:
            return [part for batch in self.batches for part in batch]


def pairs(*names):
    return [Pair({"image": name}, time.monotonic(), part_id=name) for name in names]


def wait_for(predicate, timeout=10.0):
    deadline = time.monotonic() + timeout
    while not predicate() and time.monotonic() < deadline:
        time.sleep(0.01)
    return predicate()


def test_policy_all_keeps_order_refuses_overflow_and_batches_what_waits():
    rec = Recorder()
    worker = rec.worker(policy="all", queue_size=5, batch_size=3)
    worker.start()
    try:
        for pair in pairs("a", "b", "c", "d", "e", "f", "g"):
            worker.submit(pair)
        assert worker.queued == 5 and rec.batches == []  # waits for the model, nothing judged
        assert rec.refused == [("f", "inference queue full (queue_size=5)"),
                               ("g", "inference queue full (queue_size=5)")]
        rec.gate.set()
        worker.wake()
        assert wait_for(lambda: len(rec.judged()) == 5)
        assert rec.batches == [["a", "b", "c"], ["d", "e"]]  # oldest first, at most batch_size, never waits to fill
        worker.submit(pairs("h")[0])
        assert wait_for(lambda: len(rec.judged()) == 6) and rec.batches[-1] == ["h"]
        assert rec.dropped == [] and worker.dropped_stale == 0
    finally:
        assert worker.stop() == []


def test_policy_latest_keeps_only_the_newest_pair_and_counts_the_stale():
    rec = Recorder()
    worker = rec.worker(policy="latest", queue_size=8, batch_size=4)
    assert worker.queue_size == 1
    worker.start()
    try:
        for pair in pairs("a", "b", "c"):
            worker.submit(pair)
        assert worker.queued == 1 and worker.dropped_stale == 2 and rec.dropped == ["a", "b"]
        rec.gate.set()
        worker.wake()
        assert wait_for(lambda: rec.judged() == ["c"])
        assert rec.refused == []
    finally:
        worker.stop()


def test_a_crashing_batch_is_reported_and_the_worker_goes_on():
    seen, crashed = [], []

    def judge(batch):
        seen.append([pair.part_id for pair in batch])
        if batch[0].part_id == "bad":
            raise RuntimeError("boom")

    worker = Worker(judge, lambda pair, why: None, on_crash=lambda batch, exc: crashed.append(
        ([pair.part_id for pair in batch], str(exc))))
    worker.start()
    try:
        for pair in pairs("bad", "good"):
            worker.submit(pair)
        assert wait_for(lambda: len(seen) == 2)
        assert seen == [["bad"], ["good"]] and crashed == [(["bad"], "boom")]
    finally:
        worker.stop()


def test_stop_hands_back_the_pairs_still_waiting():
    rec = Recorder()
    worker = rec.worker(queue_size=4)
    worker.start()
    for pair in pairs("a", "b"):
        worker.submit(pair)
    assert [pair.part_id for pair in worker.stop()] == ["a", "b"] and rec.batches == []
    with pytest.raises(ValueError, match="all or latest"):
        Worker(rec.judge, lambda pair, why: None, policy="fifo")


@pytest.mark.ros
def test_batch_seat_through_a_real_inspector(tmp_path):
    """Pairs that wait while the model loads are judged in one batch and answered like one at a time."""
    rclpy = pytest.importorskip("rclpy")
    from rclpy.parameter import Parameter

    from helpers import train_tiny_model
    from mentor3ad.ros.nodes.inspector import InspectorNode
    from mentor3ad.ros.tooling.graph import ResultCollector
    from mentor3ad.ros.tooling.pair_publisher import build_pair, to_messages

    model_path = tmp_path / "tiny.m3ad"
    detector = train_tiny_model(model_path, n_train=4, n_val=2)
    sets = [to_messages(build_pair("good", 64, 64, "points", scene="cell", seed=seed, defect=defect),
                        (seed + 1) * 1_000_000_000) for seed, defect in enumerate(("good", "bulge", "good"))]
    sets.insert(1, to_messages(build_pair("mismatched_sizes", 64, 64, "points", scene="cell"), 1_500_000_000))
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = InspectorNode(context=context, namespace="/batch_test", parameter_overrides=[
        Parameter("batch_size", value=4), Parameter("device", value="cpu")])
    listener = rclpy.create_node("batch_listener", context=context)
    inspector = node.inspector
    sizes = []
    real_judge = inspector.pipeline.judge
    inspector.pipeline.judge = lambda det, message_sets, *a: sizes.append(len(message_sets)) or real_judge(
        det, message_sets, *a)
    package_logger = logging.getLogger("mentor3ad")
    try:
        assert not package_logger.propagate  # while it runs, the node's ROS logger prints the package's records
        collector = ResultCollector(listener, "/batch_test/inspector/result")
        assert collector.wait_for_publisher(10.0)
        assert inspector.model.load_in_background(str(model_path))  # pairs wait for the first model
        for messages in sets:
            inspector._on_pair({key: messages[key] for key in ("image", "points")}, time.monotonic())
        results = collector.wait_for(4, 60.0)
        assert sizes == [4], sizes
        assert [r.stamp_ns for r in results] == [1_000_000_000, 1_500_000_000, 2_000_000_000, 3_000_000_000]
        assert results[1].verdict == "ERROR" and "bad input" in results[1].reason
        for result, messages in zip([results[0], results[2], results[3]], [sets[0], sets[2], sets[3]]):
            alone = detector.predict(*inspector.pipeline.convert(messages))
            assert result.verdict == alone.verdict.value and result.model_id == detector.model_id
            assert result.score == pytest.approx(alone.score, rel=1e-4, abs=1e-6)
    finally:
        node.stop()
        listener.destroy_node()
        node.destroy_node()
        rclpy.shutdown(context=context)
    assert package_logger.propagate and not package_logger.handlers  # a stopped inspector gives the records back


def test_package_logs_propagate_again_when_the_last_node_stops_routing_them(caplog):
    """Two nodes route the package's records to ROS; only when both stop do they reach the root logger again."""
    from mentor3ad.ros.inspector.model_service import RosLogHandler, route_package_logs, unroute_package_logs

    seen = []

    class RosLogger:
        def warning(self, text):
            seen.append(text)

        error = debug = warning

    package_logger = logging.getLogger("mentor3ad")
    first, second = RosLogHandler(RosLogger()), RosLogHandler(RosLogger())
    route_package_logs(first)
    route_package_logs(second)
    try:
        with caplog.at_level(logging.WARNING, logger="mentor3ad"):
            logging.getLogger("mentor3ad.test").warning("while routed")
            unroute_package_logs(first)
            assert not package_logger.propagate
            logging.getLogger("mentor3ad.test").warning("one node left")
        assert seen == ["while routed", "while routed", "one node left"] and "routed" not in caplog.text
    finally:
        unroute_package_logs(second)
    assert package_logger.propagate and second not in package_logger.handlers
    with caplog.at_level(logging.WARNING, logger="mentor3ad"):
        logging.getLogger("mentor3ad.test").warning("after both")
    assert "after both" in caplog.text and len(seen) == 3


def test_setup_runs_first_on_the_inference_thread():
    recorder, calls = Recorder(), []
    worker = recorder.worker(setup=lambda: calls.append((threading.current_thread().name, list(recorder.batches))))
    recorder.gate.set()
    worker.start("inference-test")
    for pair in pairs("a", "b"):
        worker.submit(pair)
    deadline = time.monotonic() + 10
    while len(recorder.judged()) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    worker.stop()
    assert calls == [("inference-test", [])] and recorder.judged() == ["a", "b"]
