"""Evaluator node: pair a live inspector's results and anomaly maps with a test bag's ground truth.

The ground truth (masks, sample names, defect types, images) comes from the test recording being
replayed (``ground_truth_bag``, read with :func:`mentor3ad.io.bags.read_bag_samples`), so the samples are
exactly those ``mentor3ad evaluate`` reads from the same bag. Results (``result``, decoded by
:mod:`mentor3ad.ros.result_codec`) and maps (``anomaly_map``, 32FC1) are matched to the ground truth by
the image header stamp. When every ground-truth pair has an answer (or ``expected_pairs`` answers
arrived, or nothing arrived for ``idle_timeout`` seconds, or ``~/write_report`` is called) the report of
:func:`mentor3ad.eval.report.evaluate_predictions` is written to ``output_dir``, plus
``ros_summary.json`` (pairs answered, ERROR/SKIPPED pairs with their reasons, pairs that never got a
result, latencies; ``parts``: the answers keyed by part_id, for results that carry one: an ``~/inspect``
goal's or ``~/part_id``'s).
"""
from __future__ import annotations

import json
import math
import sys
import threading
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import numpy as np
from diagnostic_msgs.msg import DiagnosticArray
from rclpy.node import Node
from rclpy.qos import QoSProfile, ReliabilityPolicy
from sensor_msgs.msg import Image
from std_srvs.srv import Trigger

from ...errors import ConfigError, InputError
from ...io.inputs import INPUT_MODES, TOPICS
from ...io.msgconv import stamp_to_ns
from ...types import InspectionResult
from ..params import ParamSpec, declare_parameters, parse_node_help, topic_parameters, topics_from_parameters
from ..result_codec import decode
from . import run_node

EVALUATOR_PARAMETERS = [
    ParamSpec("output_dir", "runs/ros_evaluation", "Report directory (report.json, curves, gallery, "
              "ros_summary.json).", read_only=True),
    ParamSpec("ground_truth_bag", "", "Test recording with the ground-truth mask topic (the bag being replayed).",
              read_only=True),
    ParamSpec("gt_input_mode", "points", f"3D data in the test recording: {', '.join(INPUT_MODES)}.", read_only=True),
    *topic_parameters(TOPICS, prefix="gt_", what="in the test recording"),
    ParamSpec("expected_pairs", 0, "Write the report once this many pairs are answered (0: every pair of the "
              "ground-truth bag).", read_only=True),
    ParamSpec("idle_timeout", 0.0, "Write the report when nothing arrived for this many seconds after the first "
              "result (0: never).", read_only=True),
    ParamSpec("exit_when_done", False, "Shut the node down (exit code 0) once the report is written.",
              read_only=True),
]


SHUTDOWN_REPORT_S = 3.5  # launch's SIGTERM comes 5 s after its SIGINT; the rest of the shutdown needs < 1 s


class EvaluatorNode(Node):
    """See the module docstring and the README (Nodes -> evaluator_node)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__("evaluator", **kwargs)
        self.p = declare_parameters(self, EVALUATOR_PARAMETERS)
        self.lock = threading.Lock()
        self.results: Dict[int, InspectionResult] = {}
        self.maps: Dict[int, np.ndarray] = {}
        self.last_arrival: Optional[float] = None
        self.report: Optional[Dict[str, Any]] = None
        self.failed = ""
        self.done = threading.Event()
        self.abandoned_work = False
        self.ground_truth = self._load_ground_truth()
        qos = QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE)
        self.create_subscription(DiagnosticArray, "result", self._on_result, qos)
        self.create_subscription(Image, "anomaly_map", self._on_map, qos)
        self.create_service(Trigger, "~/write_report", self._on_write_report)
        self.get_logger().info(f"evaluator ready: {len(self.ground_truth)} ground-truth pairs, "
                               f"report to {self.p['output_dir']}")

    def _load_ground_truth(self):
        from ...io.bags import read_bag_samples

        bag = self.p["ground_truth_bag"]
        if not bag:
            raise ConfigError("ground_truth_bag is empty: set it to the test recording being replayed")
        samples = list(read_bag_samples(bag, topics_from_parameters(self.p, "gt_"), self.p["gt_input_mode"],
                                        require_mask=True))
        if not samples:
            raise ConfigError(f"{bag}: no image/{self.p['gt_input_mode']} pairs with a ground-truth mask")
        return {s.stamp_ns: s for s in samples}

    def _on_result(self, msg) -> None:
        try:
            result = decode(msg)
        except InputError as exc:
            self.get_logger().warning(f"ignoring a result message: {exc}")
            return
        with self.lock:
            self.results[result.stamp_ns] = result
            self.last_arrival = time.monotonic()

    def _on_map(self, msg) -> None:
        if msg.encoding != "32FC1":
            self.get_logger().warning(f"ignoring anomaly_map with encoding {msg.encoding} (expected 32FC1)")
            return
        amap = np.frombuffer(bytes(msg.data), np.float32).reshape(msg.height, msg.step // 4)[:, : msg.width]
        with self.lock:
            self.maps[stamp_to_ns(msg.header.stamp)] = amap.copy()
            self.last_arrival = time.monotonic()

    def answered(self) -> List[int]:
        """Stamps with a final answer: an ERROR/SKIPPED result, or a PASS/FAIL result plus its map."""
        with self.lock:
            return [s for s, r in self.results.items() if not r.verdict.is_decision or s in self.maps]

    def check_done(self) -> None:
        """Write the report when complete or idle (called from the spin loop: wall time, not sim time)."""
        if self.report is not None:
            return
        expected = int(self.p["expected_pairs"]) or len(self.ground_truth)
        idle = float(self.p["idle_timeout"])
        timed_out = idle > 0 and self.last_arrival is not None and time.monotonic() - self.last_arrival > idle
        if len(self.answered()) >= expected or timed_out:
            try:
                self.write_report("idle timeout" if timed_out and len(self.answered()) < expected else "complete")
            except Exception as exc:  # noqa: BLE001 - reported; the node stays up for ~/write_report
                self.failed = f"{type(exc).__name__}: {exc}"
                self.get_logger().error(f"report not written: {self.failed}")
                self.report = {"error": self.failed}
                self.done.set()

    def _on_write_report(self, request, response):
        try:
            report = self.write_report("requested")
            response.success, response.message = True, json.dumps(report["metrics"])
        except Exception as exc:  # noqa: BLE001 - report why it could not be written
            response.success, response.message = False, f"{type(exc).__name__}: {exc}"
        return response

    def write_report(self, why: str) -> Dict[str, Any]:
        from ...eval.report import evaluate_predictions

        with self.lock:
            results, maps = dict(self.results), dict(self.maps)
        samples, predictions, latencies = [], [], []
        problems, unknown = [], sorted(set(results) - set(self.ground_truth))
        for stamp in sorted(self.ground_truth):
            result = results.get(stamp)
            if result is None or (result.verdict.is_decision and stamp not in maps):
                problems.append({"stamp_ns": stamp, "verdict": "MISSING", "reason": "no result/map received"})
                continue
            if not result.verdict.is_decision:
                problems.append({"stamp_ns": stamp, "verdict": result.verdict.value, "reason": result.reason,
                                 "part_id": result.part_id})
                continue
            samples.append(self.ground_truth[stamp])
            predictions.append(result.replace(anomaly_map=maps[stamp]))
            latencies.append(result.latency_ms)
        models = sorted({r.model_id for r in results.values() if r.model_id})
        parts = {r.part_id: {"stamp_ns": stamp, "name": getattr(self.ground_truth.get(stamp), "name", None),
                             "verdict": r.verdict.value, "score": r.score if math.isfinite(r.score) else None,
                             "reason": r.reason}
                 for stamp, r in sorted(results.items()) if r.part_id}
        summary = {
            "reason": why, "ground_truth_pairs": len(self.ground_truth), "evaluated_pairs": len(samples),
            "not_evaluated": [{**p, "name": self.ground_truth[p["stamp_ns"]].name} for p in problems],
            "results_without_ground_truth": unknown, "models": models, "parts": parts,
            "latency_ms": {q: float(np.percentile(latencies, int(q[1:]))) for q in ("p50", "p90", "p99")}
            if latencies else {},
        }
        out = Path(self.p["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        (out / "ros_summary.json").write_text(json.dumps(summary, indent=2))
        if not samples:
            raise InputError(f"no pair could be evaluated ({len(problems)} ERROR/SKIPPED/MISSING, "
                             f"see {out / 'ros_summary.json'})")
        report = evaluate_predictions(samples, predictions, out, title="mentor3ad (ROS)",
                                      extra={"source": "evaluator_node", "ground_truth_bag":
                                             self.p["ground_truth_bag"], "models": models})
        self.report = report
        self.get_logger().info(f"report ({why}) written to {out}: {len(samples)} pairs evaluated, "
                               f"{len(problems)} not evaluated; metrics {json.dumps(report['metrics'])}")
        self.done.set()
        return report

    def stop(self) -> None:
        """Called at shutdown: write the report from what arrived if none was written yet, within
        ``SHUTDOWN_REPORT_S`` (launch sends SIGTERM 5 s after its SIGINT). ros_summary.json comes first, then
        report.json (atomic), then plots and gallery; what is not done by then is abandoned, and said so."""
        if self.report is not None or not self.results:
            return
        failure: List[str] = []

        def write() -> None:
            try:
                self.write_report("shutdown")
            except Exception as exc:  # noqa: BLE001 - report why the final report is missing
                failure.append(f"{type(exc).__name__}: {exc}")

        writer = threading.Thread(target=write, name="shutdown-report", daemon=True)
        writer.start()
        writer.join(SHUTDOWN_REPORT_S)
        if writer.is_alive():
            self.abandoned_work = True  # run_node ends the process without joining the writer
            print(f"evaluator_node: the shutdown report did not finish within {SHUTDOWN_REPORT_S:g} s (a launch "
                  f"stops its nodes 5 s after Ctrl-C), abandoned: {self.p['output_dir']}/ros_summary.json lists the "
                  "answered pairs; for the whole report let the evaluation end (expected_pairs, idle_timeout) or "
                  "call ~/write_report before stopping", file=sys.stderr)
        elif failure:
            print(f"evaluator_node: no report written: {failure[0]}", file=sys.stderr)


def _spin(executor, node: EvaluatorNode) -> int:
    import rclpy

    while rclpy.ok():
        executor.spin_once(timeout_sec=0.1)
        node.check_done()
        if node.done.is_set() and node.p["exit_when_done"]:
            break
    return 1 if node.failed else 0


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv if argv is None else argv)
    parse_node_help(argv, "evaluator_node", "Mentor3AD evaluator: inspector results + test bag ground truth -> report.",
                    EVALUATOR_PARAMETERS)
    return run_node(EvaluatorNode, argv, "evaluator_node", loop=_spin)


if __name__ == "__main__":
    sys.exit(main())
