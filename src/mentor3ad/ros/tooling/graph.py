"""Running a ROS graph of this package from Python: node processes, result collection, the replay graph.

* :func:`executable`: an executable of this package (pip venv, colcon/ament install or PATH) or a clear error;
* :class:`NodeProcess`: a node process with local-only discovery and captured output, always cleaned up;
* :func:`inspector_command`: the inspector's command line with parameters, remaps and input QoS;
* :class:`ResultCollector`: an rclpy subscription that decodes the inspector's results
  (:mod:`mentor3ad.ros.result_codec`) in arrival order;
* :func:`run_replay_evaluation`: replay a labelled test bag through inspector + evaluator + replay
  processes over DDS (the programmatic twin of ``launch/evaluate.launch.py``; the demo uses it).
"""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

from ...errors import ConfigError
from ...package_files import PACKAGE, package_executable
from ...types import InspectionResult
from .. import configure_local_discovery
from ..dds import with_dds_profile


def executable(name: str) -> str:
    """:func:`mentor3ad.package_files.package_executable` or a ConfigError saying how to install it."""
    path = package_executable(name)
    if not path:
        raise ConfigError(f"executable {name!r} not found beside {sys.executable}, in lib/{PACKAGE} of "
                          "AMENT_PREFIX_PATH or on PATH (install the package: ./run.sh setup or colcon build)")
    return path


def exit_status(code: int) -> str:
    """'exit code 2' or 'killed by SIGBUS' for a Popen return code."""
    if code >= 0:
        return f"exit code {code}"
    try:
        return f"killed by {signal.Signals(-code).name}"
    except ValueError:
        return f"killed by signal {-code}"


class NodeProcess:
    """A node process with its output captured in a temporary file (read with ``output()``)."""

    def __init__(self, cmd: Sequence[str], env: Optional[Mapping[str, str]] = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        full_env.setdefault("OMP_NUM_THREADS", "1")
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.cmd = list(cmd)
        self._log = tempfile.TemporaryFile(mode="w+b")
        self._printed = ""  # what it printed, kept once the log is closed
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def output(self, status: bool = True) -> str:
        """Everything the process printed; once it has ended and ``status``, a last line with its exit status
        (a node that died of a signal, e.g. SIGBUS on a full /dev/shm, prints nothing itself)."""
        text = self._printed if self._log.closed else self._read_log()
        code = self.proc.poll()
        if status and code is not None:
            text += f"\n[{os.path.basename(self.cmd[0])}: {exit_status(code)}]"
        return text

    def _read_log(self) -> str:
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait(self, timeout: float) -> Optional[int]:
        """The exit code, or None while the process still runs after ``timeout`` seconds (callers compare it with
        the code they expect and show :meth:`output`, which a raised TimeoutExpired would hide)."""
        try:
            return self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            return None

    def stop(self, timeout: float = 5.0) -> Optional[int]:
        """SIGINT, then SIGKILL after ``timeout`` seconds; returns the exit code."""
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=timeout)
        return self.proc.returncode

    def __enter__(self) -> "NodeProcess":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
        self._printed = self._read_log()
        self._log.close()


def inspector_command(model_path: Optional[Path] = None, namespace: str = "", reliable_inputs: Sequence[str] = (),
                      input_depth: Optional[int] = None, params: Optional[Mapping[str, Any]] = None,
                      remaps: Optional[Mapping[str, str]] = None) -> List[str]:
    """``inspector_node --ros-args ...`` with ``model_path``, ``params``, ``remaps`` (relative name -> topic)
    and, for each topic in ``reliable_inputs`` (as the node resolves it, e.g. "/camera/image"), reliable
    input QoS with ``input_depth`` through the standard QoS override parameters."""
    cmd = [executable("inspector_node"), "--ros-args"]
    if namespace:
        cmd += ["-r", f"__ns:={namespace}"]
    values = dict(params or {})
    if model_path is not None:
        values["model_path"] = str(model_path)
    for key, value in values.items():
        cmd += ["-p", f"{key}:={str(value).lower() if isinstance(value, bool) else value}"]
    for topic in reliable_inputs:
        cmd += ["-p", f"qos_overrides.{topic}.subscription.reliability:=reliable"]
        if input_depth:
            cmd += ["-p", f"qos_overrides.{topic}.subscription.depth:={input_depth}"]
    for name, topic in (remaps or {}).items():
        cmd += ["-r", f"{name}:={topic}"]
    return cmd


def spin_until(node: Any, predicate: Callable[[], bool], timeout: float, step: float = 0.05) -> bool:
    """Spin ``node`` until ``predicate()`` or ``timeout`` seconds; returns the predicate's value."""
    from rclpy.executors import SingleThreadedExecutor

    executor = SingleThreadedExecutor(context=node.context)
    executor.add_node(node)
    try:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                return predicate()
            executor.spin_once(timeout_sec=step)
        return True
    finally:
        executor.remove_node(node)
        executor.shutdown()


class ResultCollector:
    """Subscribes to an inspector's result topic (reliable) and keeps decoded results in arrival order."""

    def __init__(self, node: Any, topic: str = "/inspector/result",
                 on_result: Optional[Callable[[InspectionResult], None]] = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from ..result_codec import decode

        self.node = node
        self.topic = topic
        self.results: List[InspectionResult] = []
        self.arrivals: List[float] = []  # time.perf_counter() of each result
        self._decode = decode
        self._on_result = on_result
        self.sub = node.create_subscription(DiagnosticArray, topic, self._receive,
                                            QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE))

    def _receive(self, msg: Any) -> None:
        result = self._decode(msg)
        self.arrivals.append(time.perf_counter())
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)

    def by_stamp(self) -> Dict[int, InspectionResult]:
        return {r.stamp_ns: r for r in self.results}

    def wait_for_publisher(self, timeout: float) -> bool:
        """True once the node's result publisher is matched with this subscription."""
        return spin_until(self.node, lambda: self.sub.get_publisher_count() > 0, timeout)

    def wait_for_readers(self, count: int, timeout: float) -> bool:
        """True once ``count`` subscriptions to the result topic (this one included) are in the graph. Results are
        volatile: a reader that joins after a replay started (an evaluator still importing torch) misses the
        first ones and waits for them for ever, so wait for it before replaying."""
        return spin_until(self.node, lambda: self.node.count_subscribers(self.topic) >= count, timeout)

    def wait_for(self, count: int, timeout: float) -> List[InspectionResult]:
        spin_until(self.node, lambda: len(self.results) >= count, timeout)
        return list(self.results)


def run_replay_evaluation(model_path: Path, bag_path: Path, out_dir: Path, n_pairs: int, rate: float = 1.0,
                          timeout_s: float = 600.0, on_result: Optional[Callable[[InspectionResult], None]] = None,
                          inspector_params: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Replay ``bag_path`` (points input) through inspector + evaluator; returns results and the report.

    n_pairs: synchronized pairs in the bag (the run ends when all have a result and a report exists).
    on_result: called with each decoded inspector result.
    inspector_params: more inspector parameters (e.g. ``record_path``); the inspector has stopped (and
    closed its record) when this returns.
    Returns ``{"results": [InspectionResult], "report": report.json dict, "summary": ros_summary.json dict}``.
    """
    from ...io.inputs import TOPICS

    configure_local_discovery()
    import rclpy

    out_dir, model_path, bag_path = Path(out_dir).resolve(), Path(model_path).resolve(), Path(bag_path).resolve()
    recorded = {key: TOPICS[key].recorded for key in ("image", "points")}
    inspector_cmd = inspector_command(
        model_path, reliable_inputs=list(recorded.values()), input_depth=max(10, n_pairs),  # recorded data: no loss
        params={"use_sim_time": True, **(inspector_params or {})}, remaps=recorded)
    evaluator_cmd = [executable("evaluator_node"), "--ros-args", "-p", f"ground_truth_bag:={bag_path}",
                     "-p", f"output_dir:={out_dir}", "-p", "exit_when_done:=true", "-p", "use_sim_time:=true",
                     "-r", "result:=/inspector/result", "-r", "anomaly_map:=/inspector/anomaly_map"]
    replay_cmd = [executable("replay_node"), str(bag_path), "--rate", str(rate), "--clock", "--wait-for-subscribers",
                  "--topics", *recorded.values(), "--pace-on", recorded["image"], "--pace-results", "/inspector/result"]
    # 224x224 clouds exceed Fast DDS' default 512 KiB shared-memory segment: the node processes get the
    # package's large-segment profile (an existing FASTDDS_DEFAULT_PROFILES_FILE is kept)
    node_env = with_dds_profile()
    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mentor3ad_replay_evaluation", context=context)
    try:
        collector = ResultCollector(node, "/inspector/result", on_result=on_result)
        with NodeProcess(inspector_cmd, node_env) as inspector, NodeProcess(evaluator_cmd, node_env) as evaluator:
            if not collector.wait_for_publisher(120.0):
                raise RuntimeError("inspector_node did not come up:\n" + inspector.output()[-2000:])
            if not collector.wait_for_readers(2, 120.0):  # this collector + the evaluator
                raise RuntimeError("evaluator_node did not subscribe to the results:\n" + evaluator.output()[-2000:])
            with NodeProcess(replay_cmd, node_env) as replay:
                collector.wait_for(n_pairs, timeout_s)
                if replay.wait(120.0) != 0:
                    raise RuntimeError("replay_node failed:\n" + replay.output()[-2000:])
            if evaluator.wait(120.0) != 0:
                raise RuntimeError("evaluator_node failed:\n" + evaluator.output()[-2000:])
            spin_until(node, lambda: len(collector.results) >= n_pairs, 1.0)
        results = list(collector.results)
    finally:
        node.destroy_node()
        rclpy.shutdown(context=context)
    return {"results": results, "report": json.loads((out_dir / "report.json").read_text()),
            "summary": json.loads((out_dir / "ros_summary.json").read_text())}


__all__ = ["executable", "NodeProcess", "inspector_command", "spin_until", "ResultCollector",
           "run_replay_evaluation"]
