"""Helpers for integration tests and commissioning scripts: start node processes, collect results.

``NodeProcess`` starts an executable (console script) with local-only discovery and always cleans
up; ``ResultCollector`` is an rclpy node that gathers the inspector's results by stamp;
``large_shm_profile_path`` / ``with_dds_profile`` give node processes the package's Fast DDS profile
for large clouds (no ROS import here).
"""
from __future__ import annotations

import os
import signal
import subprocess
import tempfile
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

FASTDDS_PROFILE_ENV = "FASTDDS_DEFAULT_PROFILES_FILE"
LARGE_SHM_PROFILE_FILE = "fastdds_large_shm.xml"


def large_shm_profile_path() -> Path:
    """The package's Fast DDS profile with a 16 MiB shared-memory segment (config/fastdds_large_shm.xml).

    Looked up in the source checkout first, then in the installed share directory
    (``share/mentor3ad/config``, via ament_index when available, else under ``sys.prefix``).
    """
    candidates = [Path(__file__).resolve().parents[3] / "config" / LARGE_SHM_PROFILE_FILE]
    try:
        from ament_index_python.packages import get_package_share_directory

        candidates.append(Path(get_package_share_directory("mentor3ad")) / "config" / LARGE_SHM_PROFILE_FILE)
    except Exception:  # ament_index missing or package not installed: fall back to the prefix
        pass
    candidates.append(Path(sys.prefix) / "share" / "mentor3ad" / "config" / LARGE_SHM_PROFILE_FILE)
    for candidate in candidates:
        if candidate.is_file():
            return candidate
    raise FileNotFoundError(
        f"Fast DDS profile {LARGE_SHM_PROFILE_FILE} not found (looked in {', '.join(map(str, candidates))}); "
        "reinstall the package (./run.sh setup)"
    )


def with_dds_profile(env: Optional[Mapping[str, str]] = None, profile: Optional[Path] = None) -> Dict[str, str]:
    """A copy of ``env`` (default: os.environ) that makes Fast DDS read ``profile``.

    profile: XML profile (default: ``large_shm_profile_path()``). An existing non-empty
    FASTDDS_DEFAULT_PROFILES_FILE is kept (the user's choice wins). Other RMWs ignore the variable.
    """
    out = dict(os.environ if env is None else env)
    if not out.get(FASTDDS_PROFILE_ENV):
        path = Path(profile) if profile is not None else large_shm_profile_path()
        if not path.is_file():
            raise FileNotFoundError(f"Fast DDS profile {path} does not exist")
        out[FASTDDS_PROFILE_ENV] = str(path)
    return out


def console_script(name: str) -> Optional[str]:
    """Path of a console script of this installation: beside the running interpreter, else on PATH."""
    import shutil
    import sys
    from pathlib import Path

    beside = Path(sys.executable).parent / name
    return str(beside) if beside.is_file() else shutil.which(name)


class NodeProcess:
    """A node process with its output captured in a temporary file (read with ``output()``)."""

    def __init__(self, cmd: Sequence[str], env: Optional[Dict[str, str]] = None) -> None:
        full_env = dict(os.environ if env is None else env)
        full_env.setdefault("ROS_AUTOMATIC_DISCOVERY_RANGE", "LOCALHOST")
        full_env.setdefault("OMP_NUM_THREADS", "1")
        full_env.setdefault("PYTHONUNBUFFERED", "1")
        self.cmd = list(cmd)
        self._log = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(self.cmd, stdout=self._log, stderr=subprocess.STDOUT, env=full_env)

    def output(self) -> str:
        if self._log.closed:
            return self._final_output
        self._log.flush()
        self._log.seek(0)
        return self._log.read().decode("utf-8", "replace")

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout=timeout)

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
        self._final_output = self.output()
        self._log.close()


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
    """Subscribes to an inspector's result topic (reliable) and keeps parsed results in arrival order."""

    def __init__(self, node: Any, topic: str = "/inspector/result",
                 on_result: Optional[Callable[[Dict[str, Any]], None]] = None) -> None:
        from diagnostic_msgs.msg import DiagnosticArray
        from rclpy.qos import QoSProfile, ReliabilityPolicy

        from mentor3ad.ros.result_msg import parse_result

        self.node = node
        self.topic = topic
        self.results: List[Dict[str, Any]] = []
        self._parse = parse_result
        self._on_result = on_result
        self.sub = node.create_subscription(
            DiagnosticArray, topic, self._receive,
            QoSProfile(depth=500, reliability=ReliabilityPolicy.RELIABLE),
        )

    def _receive(self, msg: Any) -> None:
        result = self._parse(msg)
        self.results.append(result)
        if self._on_result is not None:
            self._on_result(result)

    def wait_for_publisher(self, timeout: float) -> bool:
        """True once the node's result publisher is matched with this subscription."""
        return spin_until(self.node, lambda: self.sub.get_publisher_count() > 0, timeout)

    def wait_for(self, count: int, timeout: float) -> List[Dict[str, Any]]:
        spin_until(self.node, lambda: len(self.results) >= count, timeout)
        return list(self.results)


# A deliberately tiny detector (random-init backbones, 64x64 input): seconds to train on 2 CPU cores.
TINY_MODEL_CONFIG = {
    "features": dict(
        rgb_weights="none", rgb_model_kwargs=dict(depth=1, embed_dim=32, num_heads=2, img_size=64),
        point_num_groups=32, point_group_size=8, point_depth=2, point_width=32, point_heads=2,
        point_feature_blocks=(0, 1), image_size=64, feature_resolution=8,
    ),
    "model": dict(mentor_dim=16, mfm_hidden_dim=32, mgm_hidden_dim=32, mgm_mentor_dim=16, vote_levels=2),
    "train": dict(mfm_epochs=2, mgm_epochs=2, vm_steps=10),
}


def train_tiny_model(path, n_train: int = 6, n_val: int = 3, resolution=(64, 64)):
    """Train TINY_MODEL_CONFIG on synthetic-cell good samples and save it to ``path``; returns the Detector."""
    from mentor3ad.config import Mentor3ADConfig
    from mentor3ad.data.synthetic import generate_sample
    from mentor3ad.training import train_detector

    config = Mentor3ADConfig.from_dict(TINY_MODEL_CONFIG)
    train = [generate_sample(i, resolution, name=f"train/{i}") for i in range(n_train)]
    val = [generate_sample(100 + i, resolution, name=f"val/{i}") for i in range(n_val)]
    detector = train_detector(train, config, val, progress=False)
    detector.save(path)
    return detector
