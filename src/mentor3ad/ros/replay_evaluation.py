"""Replay a labelled test bag through a live graph (inspector_node + evaluator_node + replay_node).

The programmatic twin of ``launch/evaluate.launch.py`` for machines without ``ros2 launch``: every node
runs as its console script in its own process over DDS (local discovery only). Used by ``mentor3ad demo``.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional

from . import configure_local_discovery


def _exe(name: str) -> str:
    """A console script of this installation (:func:`mentor3ad.ros.testing.console_script`), or an error."""
    from .testing import console_script

    path = console_script(name)
    if not path:
        raise FileNotFoundError(f"console script {name!r} not on PATH (install the package: ./run.sh setup)")
    return path


def run_replay_evaluation(
    model_path: Path,
    bag_path: Path,
    out_dir: Path,
    n_pairs: int,
    rate: float = 1.0,
    timeout_s: float = 600.0,
    on_result: Optional[Callable[[Dict[str, Any]], None]] = None,
) -> Dict[str, Any]:
    """Replay ``bag_path`` (points input) through inspector + evaluator; returns results and the report.

    n_pairs: synchronized pairs in the bag (the run ends when all have a result and a report exists).
    on_result: called with each parsed inspector result (``mentor3ad.ros.result_msg.parse_result``).
    Returns ``{"results": [...], "report": report.json dict, "summary": ros_summary.json dict}``.
    """
    configure_local_discovery()
    import rclpy

    from .testing import NodeProcess, ResultCollector, spin_until, with_dds_profile

    out_dir, model_path, bag_path = Path(out_dir).resolve(), Path(model_path).resolve(), Path(bag_path).resolve()
    inspector_cmd = [_exe("inspector_node"), "--ros-args", "-p", f"model_path:={model_path}",
                     "-p", "use_sim_time:=true", "-p", f"queue_size:={max(8, n_pairs)}",
                     "-r", "image:=/camera/image", "-r", "points:=/camera/points"]
    for topic in ("camera/image", "camera/points"):  # recorded data: no loss allowed
        inspector_cmd += ["-p", f"qos_overrides./{topic}.subscription.reliability:=reliable",
                          "-p", f"qos_overrides./{topic}.subscription.depth:={max(10, n_pairs)}"]
    evaluator_cmd = [_exe("evaluator_node"), "--ros-args", "-p", f"ground_truth_bag:={bag_path}",
                     "-p", f"output_dir:={out_dir}", "-p", "exit_when_done:=true", "-p", "use_sim_time:=true",
                     "-r", "result:=/inspector/result", "-r", "anomaly_map:=/inspector/anomaly_map"]
    replay_cmd = [_exe("replay_node"), str(bag_path), "--rate", str(rate), "--clock", "--wait-for-subscribers",
                  "--topics", "/camera/image", "/camera/points"]

    # 224x224 clouds exceed Fast DDS' default 512 KiB shared-memory segment: the node processes get the
    # package's large-segment profile (an existing FASTDDS_DEFAULT_PROFILES_FILE is kept)
    node_env = with_dds_profile()

    context = rclpy.context.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mentor3ad_replay_evaluation", context=context)
    results: List[Dict[str, Any]] = []
    try:
        collector = ResultCollector(node, "/inspector/result", on_result=on_result)
        with NodeProcess(inspector_cmd, node_env) as inspector, NodeProcess(evaluator_cmd, node_env) as evaluator:
            if not collector.wait_for_publisher(120.0):
                raise RuntimeError("inspector_node did not come up:\n" + inspector.output()[-2000:])
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
    return {
        "results": results,
        "report": json.loads((out_dir / "report.json").read_text()),
        "summary": json.loads((out_dir / "ros_summary.json").read_text()),
    }
