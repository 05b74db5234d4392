"""Round trips through a real inspector_node: publish pairs one at a time and time publish -> ``~/result``
(``mentor3ad bench --ros``)."""
from __future__ import annotations

import contextlib
import os
import time
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, Mapping, Optional, Sequence, Tuple


@contextlib.contextmanager
def bench_environment(dds_profile: Optional[Path] = None) -> Iterator[None]:
    """Local-only discovery, a ROS domain of this process (kept apart from parallel runs) and the Fast DDS
    profile ``dds_profile`` for the processes started inside (ignored when FASTDDS_DEFAULT_PROFILES_FILE is
    set); the environment is restored afterwards."""
    from .. import configure_local_discovery

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    configure_local_discovery()
    saved_env = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")}
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 150))
    if dds_profile is not None and not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(dds_profile)  # read when the participant is created
    try:
        yield
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def node_environment() -> Dict[str, str]:
    """Environment of the node processes a bench starts: this package importable, unbuffered output and
    OMP_NUM_THREADS of a shell without it (one per core), so each node runs with its own CPU budget
    (its ``threads`` parameter; NodeProcess would otherwise default to 1)."""
    import mentor3ad

    package_root = str(Path(mentor3ad.__file__).resolve().parents[1])
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return dict(os.environ, OMP_NUM_THREADS=str(cores), PYTHONUNBUFFERED="1",
                PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))


def run_ros(model_path: Path, frames: Sequence, warmup: int, count: int, device, threads: Optional[int],
            timeout: float, log: Callable[[str], None], input_qos: str = "reliable",
            dds_profile: Optional[Path] = None) -> Dict[str, Any]:
    """Publish pairs one at a time to a real inspector_node and time publish -> ~/result receipt.

    threads: the inspector's ``threads`` parameter (None: its default); dds_profile: Fast DDS XML profile
    for both processes (ignored when FASTDDS_DEFAULT_PROFILES_FILE is set)."""
    params: Mapping[str, Any] = {} if threads is None else {"threads": threads}
    with bench_environment(dds_profile):
        return _run_ros(model_path, frames, warmup, count, device, params, timeout, log, input_qos)


def _run_ros(model_path, frames, warmup, count, device, params, timeout, log, input_qos) -> Dict[str, Any]:
    """run_ros once the environment is set."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    from ...eval.resources import peak_rss_mb
    from .graph import NodeProcess, inspector_command
    from ..result_codec import decode

    namespace = f"/mentor3ad_bench_{os.getpid()}"
    env = node_environment()
    reliable = [f"{namespace}/{topic}" for topic in ("image", "points")] if input_qos == "reliable" else []
    cmd = inspector_command(model_path, namespace=namespace, reliable_inputs=reliable,
                            params={"device": device, "queue_policy": "all", **params})
    received: Dict[int, Tuple[float, dict]] = {}
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mentor3ad_bench", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    out: Dict[str, Any] = {"namespace": namespace, "command": cmd, "domain_id": os.environ["ROS_DOMAIN_ID"],
                           "input_qos": input_qos,
                           "fastdds_profile": os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE", "")}
    try:
        qos = QoSProfile(depth=10, reliability=ReliabilityPolicy.RELIABLE)
        image_pub = node.create_publisher(Image, f"{namespace}/image", qos)
        points_pub = node.create_publisher(PointCloud2, f"{namespace}/points", qos)

        def on_result(msg):
            now = time.perf_counter()
            decoded = decode(msg)
            received[decoded.stamp_ns] = (now, decoded)

        result_sub = node.create_subscription(DiagnosticArray, f"{namespace}/inspector/result", on_result,
                                              QoSProfile(depth=100, reliability=ReliabilityPolicy.RELIABLE))
        started = time.perf_counter()
        with NodeProcess(cmd, env=env) as inspector:
            deadline = time.monotonic() + timeout
            while (image_pub.get_subscription_count() == 0 or points_pub.get_subscription_count() == 0
                   or result_sub.get_publisher_count() == 0):
                if inspector.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench --ros: inspector_node did not come up (exit code "
                                     f"{inspector.proc.poll()}); its output:\n{inspector.output()[-3000:]}")
                executor.spin_once(timeout_sec=0.05)
            out["inspector_startup_s"] = time.perf_counter() - started
            log(f"inspector_node up in {out['inspector_startup_s']:.1f} s (namespace {namespace})")
            round_trips, inspector_latency = [], []
            timed_started = None
            for i in range(warmup + count):
                if i == warmup:
                    timed_started = time.perf_counter()
                frame = frames[i % len(frames)]
                stamp_ns = 2_000_000_000_000 + i * 100_000_000
                msgs = frame.build_ros(stamp_ns)
                sent = time.perf_counter()
                image_pub.publish(msgs["image"])
                points_pub.publish(msgs["points"])
                deadline = time.monotonic() + timeout
                while stamp_ns not in received:
                    if inspector.proc.poll() is not None or time.monotonic() > deadline:
                        raise SystemExit(f"bench --ros: no result for frame {i} within {timeout:.0f} s; inspector "
                                         f"output:\n{inspector.output()[-3000:]}")
                    executor.spin_once(timeout_sec=0.01)
                arrived, result = received[stamp_ns]
                if not result.verdict.is_decision:
                    raise SystemExit(f"bench --ros: frame {i} got {result.verdict.value}: {result.reason}")
                if i >= warmup:
                    round_trips.append(arrived - sent)
                    inspector_latency.append(result.latency_ms / 1e3)
            out["timed_wall_s"] = time.perf_counter() - timed_started if timed_started else float("nan")
            out["inspector_peak_rss_mb"] = peak_rss_mb(inspector.proc.pid)
        out["series"] = {"ros_round_trip": round_trips, "ros_inspector_latency": inspector_latency,
                         "ros_transport": [a - b for a, b in zip(round_trips, inspector_latency)]}
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return out
