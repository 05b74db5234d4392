"""A camera at a fixed rate into a real inspector_node, first on an idle machine, then while a trainer_node
trains on the same machine (``mentor3ad bench --while-training``).

The bench process is the camera: it publishes image + organized cloud pairs at ``rate`` parts/s on a
schedule (as a driver does: it never waits for a result; reliable, depth 10, rclpy's default QoS) to an
``inspector_node`` on its default input QoS and CPU budget (or the ``threads`` / ``nice`` given), and
collects ``~/result``. Phases, in one run:

1. warm-up: ``warmup`` pairs one at a time (first-inference costs are not counted);
2. idle: ``idle_parts`` pairs at ``rate``;
3. training: ``trainer_command`` starts and pairs go out at ``rate`` until the trainer exits (or
   ``max_training_s`` passes: then it is stopped and the phase is marked so).

Per phase: parts published / answered, verdict counts (SKIPPED = the inspector's queue overflowed),
unanswered parts, and the latency of every answered part: publish -> result received (``round_trip``) and
the inspector's own receive -> publish (``inspector``). The trainer's wall time, exit code and the niceness
and thread count it ran with (read from /proc while it ran) come back too.
"""
from __future__ import annotations

import os
import re
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

VERDICTS = ("PASS", "FAIL", "ERROR", "SKIPPED")
START_STAMP_NS = 3_000_000_000_000


def process_status(pid: int) -> Dict[str, int]:
    """{'nice': niceness of the main thread, 'threads': OS threads} of a running process ({} when gone)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return {"nice": int(fields[16]), "threads": int(fields[17])}
    except (OSError, IndexError, ValueError):
        return {}


class Camera:
    """Publishes frames on a schedule and records each part's publish time, stamp and phase; results
    arrive through :meth:`receive` (the ``~/result`` subscription's callback)."""

    def __init__(self, node, namespace: str, frames: Sequence) -> None:
        from rclpy.qos import QoSProfile
        from sensor_msgs.msg import Image, PointCloud2

        qos = QoSProfile(depth=10)  # rclpy's default: reliable, keep last 10 (what most drivers use)
        self.image_pub = node.create_publisher(Image, f"{namespace}/image", qos)
        self.points_pub = node.create_publisher(PointCloud2, f"{namespace}/points", qos)
        self.frames = list(frames)
        self.sent: Dict[int, tuple] = {}  # stamp -> (phase, publish time)
        self.received: Dict[int, tuple] = {}  # stamp -> (arrival time, result)
        self.count = 0

    def matched(self) -> bool:
        return self.image_pub.get_subscription_count() > 0 and self.points_pub.get_subscription_count() > 0

    def publish(self, phase: str) -> int:
        stamp_ns = START_STAMP_NS + self.count * 100_000_000
        messages = self.frames[self.count % len(self.frames)].build_ros(stamp_ns)
        self.count += 1
        self.sent[stamp_ns] = (phase, time.perf_counter())
        self.image_pub.publish(messages["image"])
        self.points_pub.publish(messages["points"])
        return stamp_ns

    def receive(self, result) -> None:
        self.received.setdefault(result.stamp_ns, (time.perf_counter(), result))

    def answered(self, phase: str) -> int:
        return sum(1 for stamp, (p, _) in self.sent.items() if p == phase and stamp in self.received)

    def outstanding(self) -> int:
        return sum(1 for stamp in self.sent if stamp not in self.received)

    def phase_summary(self, phase: str) -> Dict[str, Any]:
        """Counts and latency series (seconds) of one phase's parts."""
        stamps = [stamp for stamp, (p, _) in self.sent.items() if p == phase]
        summary: Dict[str, Any] = {"published": len(stamps), "answered": 0, **{v: 0 for v in VERDICTS},
                                   "round_trip_s": [], "inspector_s": [], "skipped_reasons": []}
        for stamp in stamps:
            if stamp not in self.received:
                continue
            arrived, result = self.received[stamp]
            verdict = str(result.verdict)
            summary["answered"] += 1
            summary[verdict] = summary.get(verdict, 0) + 1
            if verdict == "SKIPPED" and len(summary["skipped_reasons"]) < 3:
                summary["skipped_reasons"].append(result.reason)
            if result.verdict.is_decision:
                summary["round_trip_s"].append(arrived - self.sent[stamp][1])
                summary["inspector_s"].append(result.latency_ms / 1e3)
        summary["unanswered"] = summary["published"] - summary["answered"]
        return summary


def run_while_training(model_path: Path, frames: Sequence, trainer_command: Sequence[str], *, rate: float = 1.0,
                       idle_parts: int = 20, warmup: int = 2, device: str = "cpu",
                       inspector_params: Optional[Mapping[str, Any]] = None, timeout: float = 120.0,
                       max_training_s: float = 3600.0, log: Callable[[str], None] = print,
                       dds_profile: Optional[Path] = None) -> Dict[str, Any]:
    """The three phases of the module docstring -> {"idle": phase summary, "training": phase summary,
    "trainer": {wall_s, exit_code, stopped, nice, threads, output_tail}, "inspector": {...}, "rate": ...}."""
    from .round_trip import bench_environment

    if rate <= 0 or idle_parts < 1:
        raise ValueError(f"the camera needs rate > 0 and at least one idle part, got {rate} and {idle_parts}")
    with bench_environment(dds_profile):
        return _run(model_path, frames, list(trainer_command), rate, idle_parts, warmup, device,
                    dict(inspector_params or {}), timeout, max_training_s, log)


def _run(model_path, frames, trainer_command, rate, idle_parts, warmup, device, inspector_params, timeout,
         max_training_s, log) -> Dict[str, Any]:
    import rclpy
    from rclpy.executors import SingleThreadedExecutor

    from ...eval.resources import peak_rss_mb
    from .graph import NodeProcess, ResultCollector, inspector_command
    from .round_trip import node_environment

    namespace = f"/mentor3ad_load_{os.getpid()}"
    env = node_environment()
    cmd = inspector_command(model_path, namespace=namespace,
                            params={"device": device, "queue_policy": "all", **inspector_params})
    context = rclpy.Context()
    rclpy.init(context=context)
    node = rclpy.create_node("mentor3ad_camera", context=context)
    executor = SingleThreadedExecutor(context=context)
    executor.add_node(node)
    camera = Camera(node, namespace, frames)
    collector = ResultCollector(node, f"{namespace}/inspector/result", on_result=camera.receive)
    out: Dict[str, Any] = {"rate": rate, "namespace": namespace, "inspector_command": cmd,
                           "trainer_command": trainer_command}

    def spin_until(deadline: float, done: Callable[[], bool] = lambda: False) -> None:
        while not done() and time.perf_counter() < deadline:
            executor.spin_once(timeout_sec=min(0.01, max(0.0, deadline - time.perf_counter())))

    def drain(what: str, process) -> None:
        """Wait until every published part is answered (or ``timeout`` passes)."""
        spin_until(time.perf_counter() + timeout, lambda: camera.outstanding() == 0)
        if camera.outstanding():
            log(f"{camera.outstanding()} parts without a result {timeout:.0f} s after the {what} phase")
        if process.proc.poll() is not None:
            raise SystemExit(f"bench --while-training: inspector_node exited ({process.proc.returncode}):\n"
                             f"{process.output()[-3000:]}")

    try:
        with NodeProcess(cmd, env=env) as inspector:
            deadline = time.monotonic() + timeout
            while not (camera.matched() and collector.sub.get_publisher_count() > 0):
                if inspector.proc.poll() is not None or time.monotonic() > deadline:
                    raise SystemExit(f"bench --while-training: inspector_node did not come up (exit code "
                                     f"{inspector.proc.poll()}):\n{inspector.output()[-3000:]}")
                executor.spin_once(timeout_sec=0.05)
            for _ in range(warmup):  # one at a time, not counted
                stamp = camera.publish("warmup")
                spin_until(time.perf_counter() + timeout, lambda: stamp in camera.received)
            log(f"camera at {rate:g} parts/s: {idle_parts} parts on an idle machine ...")
            period = 1.0 / rate
            start = time.perf_counter()
            for i in range(idle_parts):
                spin_until(start + i * period)
                camera.publish("idle")
            spin_until(start + idle_parts * period)
            drain("idle", inspector)
            log(f"idle: {camera.answered('idle')} of {idle_parts} answered; starting the trainer ...")
            out["trainer"] = _training_phase(camera, trainer_command, env, period, max_training_s, spin_until, log)
            drain("training", inspector)
            out["inspector"] = {"peak_rss_mb": peak_rss_mb(inspector.proc.pid), "command": cmd,
                                "budget_line": _budget_line(inspector.output())}
        out["idle"], out["training"] = camera.phase_summary("idle"), camera.phase_summary("training")
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return out


def _training_phase(camera: Camera, trainer_command: List[str], env: Dict[str, str], period: float,
                    max_training_s: float, spin_until: Callable, log: Callable[[str], None]) -> Dict[str, Any]:
    """Start the trainer and publish every ``period`` seconds until it exits -> the trainer's figures."""
    from .graph import NodeProcess

    status: Dict[str, int] = {}
    with NodeProcess(trainer_command, env=env) as trainer:
        started = time.perf_counter()
        stopped = False
        i = 0
        while trainer.proc.poll() is None:
            if time.perf_counter() - started > max_training_s:
                log(f"the trainer is still running after {max_training_s:.0f} s: stopping it")
                trainer.stop()
                stopped = True
                break
            spin_until(started + i * period)
            if trainer.proc.poll() is not None:
                break
            camera.publish("training")
            i += 1
            now = process_status(trainer.proc.pid)  # the budget it applied at start-up, its busiest thread count
            if now:
                status = {"nice": now["nice"], "threads": max(status.get("threads", 0), now["threads"])}
        wall = time.perf_counter() - started
        code = trainer.proc.wait()
        output = trainer.output()
    log(f"trainer exited with {code} after {wall:.1f} s; {camera.answered('training')} of "
        f"{sum(1 for p, _ in camera.sent.values() if p == 'training')} parts answered so far")
    logged = re.findall(r"written to .* after ([0-9.]+) s", output)
    return {"wall_s": wall, "exit_code": code, "stopped": stopped, **status,
            "job_s": float(logged[-1]) if logged else None, "budget_line": _budget_line(output),
            "output_tail": output[-2000:]}


def _budget_line(output: str) -> str:
    """The 'CPU budget: ...' line a node logs at start-up ('' when missing)."""
    lines = [line for line in output.splitlines() if "CPU budget:" in line]
    return lines[-1].split("CPU budget:", 1)[1].strip() if lines else ""


__all__ = ["run_while_training", "Camera", "process_status", "VERDICTS"]
