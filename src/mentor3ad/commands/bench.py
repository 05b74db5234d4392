"""``mentor3ad bench``: where every millisecond of a frame goes, on the embedded default data.

Runs N frames of the synthetic inspection cell (:mod:`mentor3ad.data.synthetic`, 224x224 by default)
through the real pipeline, frame by frame (batch 1), and prints per stage the median and p95 latency
in milliseconds:

- message conversion (:mod:`mentor3ad.msgconv`): deserialized ``sensor_msgs/Image`` + organized
  ``PointCloud2`` -> numpy (what the inspector does), and depth ``Image`` + ``CameraInfo`` -> XYZ;
- ``Detector.predict``: preprocessing, plane removal, RGB backbone, point backbone (FPS + k-NN,
  transformer), projection (``FeatureExtractor.timings()``), the heads (``Detector.timings()``, split
  into MFM / MGM / VM by forward hooks on the head modules), post-processing (split into
  upsampling + smoothing and regions + verdict by timing ``Detector.postprocess`` and
  ``Detector._prediction`` from outside);
- result publishing: building and serializing the inspector's ``~/result``, ``~/anomaly_map`` and
  ``~/overlay`` messages exactly as :mod:`mentor3ad.ros.inspector_node` does.

``--ros`` additionally starts the real ``inspector_node`` (console script, local-only discovery) on a
model the bench trained first, publishes the pairs one at a time from this process and times publish
-> receipt of ``~/result``. The summary line ``ratio end-to-end / RGB-backbone-forward = X.XX`` uses
the in-process end-to-end latency (conversion + predict + publishing) by default and the ROS round
trip with ``--ros``; both medians come from the same run. ``--train`` also times training on the
embedded data with a cold and with a warm feature cache. ``--json OUT`` writes every number.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

# (key, label, group) in print order; group "e2e" rows are sums/spans, not part of the stage sum
STAGES: List[Tuple[str, str]] = [
    ("convert_points", "msg conversion: Image + PointCloud2 -> numpy"),
    ("convert_depth", "msg conversion: depth + CameraInfo -> XYZ (info)"),
    ("preprocess", "preprocessing: upload + resize"),
    ("plane_removal", "preprocessing: plane removal + cluster"),
    ("rgb_backbone", "RGB backbone forward"),
    ("point_fps_knn", "point backbone: FPS + k-NN"),
    ("point_transformer", "point backbone: embedding + transformer"),
    ("projection", "projection (points -> grid, RGB -> R)"),
    ("features_other", "feature extraction: untimed rest"),
    ("heads_mfm", "heads: MFM"),
    ("heads_mgm", "heads: MGM"),
    ("heads_vm", "heads: VM"),
    ("heads_other", "heads: score maps + rest"),
    ("post_upsample", "post: upsample + smoothing"),
    ("post_regions", "post: regions + verdict"),
    ("post_other", "post: download + rest"),
    ("predict_other", "predict: input checks + rest"),
    ("publish_result", "publish: ~/result (build + serialize)"),
    ("publish_map", "publish: ~/anomaly_map"),
    ("publish_overlay", "publish: ~/overlay (render + msg)"),
    ("predict", "= Detector.predict (wall)"),
    ("end_to_end", "= end-to-end in-process (wall)"),
]
ROS_STAGES: List[Tuple[str, str]] = [
    ("ros_round_trip", "ROS: publish -> ~/result received"),
    ("ros_inspector_latency", "ROS: inspector receive -> publish"),
    ("ros_transport", "ROS: transport + sync (difference)"),
]
RATIO_LINE = "ratio end-to-end / RGB-backbone-forward = {:.2f}"

# extractor stage name (FeatureExtractor.timings(), prefixed "features_" by Detector.timings()) -> row key
EXTRACTOR_STAGES = {
    "features_preprocess": "preprocess",
    "features_plane_removal": "plane_removal",
    "features_rgb_backbone": "rgb_backbone",
    "features_point_fps_knn": "point_fps_knn",
    "features_point_transformer": "point_transformer",
    "features_projection": "projection",
}
# default data: the streams of mentor3ad.data.synthetic.generate_cell_dataset (seed 0), so the bench's
# training samples are byte-identical to `mentor3ad demo`'s and share its feature cache
SPLIT_CODES = {"train": 1, "validation": 2, "test": 3}
FRAME_DEFECTS = ("good", "bulge", "good", "scratch", "good", "paint", "good", "impact")


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-stage latency, throughput, memory and training time on the embedded data",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20, help="timed frames (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up frames")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("bf16", "fp16"), default=None,
                   help="mixed precision of the backbones (features.precision); fp16 needs CUDA")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (also OMP_NUM_THREADS of the --ros inspector); default: torch's")
    p.add_argument("--ros", action="store_true", help="also measure publish -> ~/result through a real inspector_node")
    p.add_argument("--train", action="store_true", help="time training on the default data (cold and cached features)")
    p.add_argument("--model", type=Path, default=None, help="use this checkpoint instead of training one")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write every number to this JSON file")
    p.add_argument("--config", type=Path, default=None, help="model YAML (default: the packaged config/model.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set features.rgb_model_kwargs={depth: 1}")
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where local backbone weights are looked up")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"),
                   help="feature cache of the training run (shared with `mentor3ad demo`)")
    p.add_argument("--resolution", type=int, default=224, help="frame size in pixels (square)")
    p.add_argument("--train-samples", type=int, default=20, help="good samples to train on")
    p.add_argument("--val-samples", type=int, default=5, help="held-out good samples for the threshold")
    p.add_argument("--ros-timeout", type=float, default=120.0, help="seconds to wait for one ROS result / start-up")
    p.add_argument("--ros-input-qos", choices=("reliable", "sensor"), default="reliable",
                   help="inspector input subscriptions: reliable (qos_overrides parameters) or the node's "
                        "sensor-data default (best effort: a lost fragment of a large cloud loses the pair)")
    p.add_argument("--dds-profile", choices=("large-shm", "default"), default="large-shm",
                   help="large-shm: run both ROS processes with a Fast DDS profile whose shared-memory segment "
                        "(16 MiB) carries a whole 224x224 cloud (the default 512 KiB segment sends it as UDP "
                        "fragments that loopback drops: lost pairs or 3 s repair stalls); default: Fast DDS as "
                        "configured (an existing FASTDDS_DEFAULT_PROFILES_FILE is always kept)")
    p.add_argument("--save-model", type=Path, default=None, help="also save the trained bench model here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(func=run)


# ------------------------------------------------------------------------------------------ statistics
def summarize(samples_s: Sequence[float]) -> Dict[str, float]:
    """Seconds -> {median_ms, p95_ms, mean_ms, min_ms, max_ms, n} (NaN when empty)."""
    import numpy as np

    values = np.asarray([v for v in samples_s if v is not None and math.isfinite(v)], dtype=np.float64) * 1e3
    if values.size == 0:
        nan = float("nan")
        return {"median_ms": nan, "p95_ms": nan, "mean_ms": nan, "min_ms": nan, "max_ms": nan, "n": 0}
    return {"median_ms": float(np.median(values)), "p95_ms": float(np.percentile(values, 95)),
            "mean_ms": float(values.mean()), "min_ms": float(values.min()), "max_ms": float(values.max()),
            "n": int(values.size)}


def peak_rss_mb(pid: Optional[int] = None) -> float:
    """Peak resident set size (VmHWM of /proc/<pid>/status) in MiB; NaN where /proc is unavailable."""
    try:
        for line in Path(f"/proc/{pid or 'self'}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    if pid is None:
        import resource

        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # KiB on Linux
    return float("nan")


def reset_peak_rss() -> bool:
    """Reset this process's VmHWM to the current RSS (Linux ``clear_refs`` 5); False when not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def machine_info(device) -> Dict[str, Any]:
    import torch

    info = {"platform": platform.platform(), "python": platform.python_version(), "torch": torch.__version__,
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "load_average_1_5_15": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
            "device": str(device), "cuda_available": torch.cuda.is_available()}
    try:
        model = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]
        info["cpu_model"] = model[0] if model else platform.processor()
    except OSError:
        info["cpu_model"] = platform.processor()
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    return info


# ------------------------------------------------------------------------------------------ data
def cell_sample(split: str, defect: str, index: int, resolution: int):
    """The synthetic cell's sample ``split/defect/index`` exactly as generate_cell_dataset(seed=0) draws it."""
    import numpy as np

    from ..data.synthetic import DEFECT_TYPES, generate_sample

    code = (DEFECT_TYPES.index(defect) + 1) if defect != "good" else 0
    rng = np.random.default_rng([0, SPLIT_CODES[split], code, index])
    return generate_sample(rng, (resolution, resolution), defect, name=f"{split}/{defect}/{index:03d}")


def bench_frames(count: int, resolution: int) -> list:
    """``count`` distinct test frames of the cell, good parts alternating with defect types."""
    frames, per_kind = [], {}
    for i in range(count):
        defect = FRAME_DEFECTS[i % len(FRAME_DEFECTS)]
        index = per_kind.get(defect, 0)
        per_kind[defect] = index + 1
        frames.append(cell_sample("test", defect, index, resolution))
    return frames


class SerializedFrame:
    """One frame as the bytes a subscriber receives (serialized ROS messages) or plain field objects.

    ``messages()`` deserializes a fresh set each call: {"image", "points", "depth", "camera_info"}.
    """

    def __init__(self, sample, stamp_ns: int):
        import numpy as np

        from .. import msgconv
        from ..data.synthetic import camera_matrix

        xyz = sample.xyz.astype(np.float32).copy()
        xyz[~msgconv.valid_point_mask(xyz)] = np.nan  # ROS drivers publish invalid points as NaN
        height, width = xyz.shape[:2]
        info = msgconv.camera_info_fields(camera_matrix((height, width)), width, height)
        info.pop("frame_id", None)
        self.fields = {"image": msgconv.rgb_to_image_fields(sample.rgb, "rgb8"),
                       "points": msgconv.xyz_to_cloud_fields(xyz, padded=True),
                       "depth": msgconv.xyz_to_depth_fields(xyz, "32FC1"),
                       "camera_info": info}
        self.stamp_ns = stamp_ns
        self.ros = ros_messages_available()
        if self.ros:
            from rclpy.serialization import serialize_message

            self.serialized = {k: serialize_message(m) for k, m in self.build_ros(stamp_ns).items()}

    def build_ros(self, stamp_ns: int) -> Dict[str, Any]:
        """rclpy messages of this frame with one header (stamp_ns, frame 'camera')."""
        from builtin_interfaces.msg import Time
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2, PointField
        from std_msgs.msg import Header

        header = Header(stamp=Time(sec=stamp_ns // 1_000_000_000, nanosec=stamp_ns % 1_000_000_000),
                        frame_id="camera")
        cloud = dict(self.fields["points"])
        cloud["fields"] = [PointField(name=n, offset=o, datatype=d, count=c) for n, o, d, c in cloud["fields"]]
        return {"image": Image(header=header, **self.fields["image"]),
                "points": PointCloud2(header=header, **cloud),
                "depth": Image(header=header, **self.fields["depth"]),
                "camera_info": CameraInfo(header=header, **self.fields["camera_info"])}

    def messages(self) -> Dict[str, Any]:
        if not self.ros:
            from types import SimpleNamespace

            return {k: SimpleNamespace(**v) for k, v in self.fields.items()}
        from rclpy.serialization import deserialize_message
        from sensor_msgs.msg import CameraInfo, Image, PointCloud2

        types = {"image": Image, "points": PointCloud2, "depth": Image, "camera_info": CameraInfo}
        return {k: deserialize_message(data, types[k]) for k, data in self.serialized.items()}


def ros_messages_available() -> bool:
    """True when rclpy and the standard message packages import (they do in the project venv)."""
    try:
        import diagnostic_msgs.msg  # noqa: F401
        import rclpy.serialization  # noqa: F401
        import sensor_msgs.msg  # noqa: F401
    except ImportError:
        return False
    return True


# ------------------------------------------------------------------------------------------ model
def bench_config(args: argparse.Namespace, device) -> Tuple[Any, List[str]]:
    """Config (default YAML + --set), offline weights resolved, --amp applied -> (config, notes)."""
    from ..features import resolve_offline_weights
    from .train import load_config

    config = load_config(args)
    notes = resolve_offline_weights(config.features, args.models_dir)
    if args.amp:
        if not hasattr(config.features, "precision"):
            raise SystemExit("--amp: this build's FeatureConfig has no 'precision' option (mixed precision unsupported)")
        if args.amp == "fp16" and device.type != "cuda":
            raise SystemExit("--amp fp16 needs --device cuda; on CPU use --amp bf16")
        config.features.precision = args.amp
    return config, notes


def train_model(args, config, device, cache_dir: Optional[Path], log: Callable[[str], None]):
    """Train on the cell's first --train-samples good parts -> (detector, wall seconds)."""
    from ..training import train_detector

    train = [cell_sample("train", "good", i, args.resolution) for i in range(args.train_samples)]
    val = [cell_sample("validation", "good", i, args.resolution) for i in range(args.val_samples)] or None
    started = time.perf_counter()
    detector = train_detector(train, config, val_samples=val, cache_dir=cache_dir, device=str(device),
                              progress=not args.no_progress, log=log)
    return detector, time.perf_counter() - started


# ------------------------------------------------------------------------------------------ timing
class StageClock:
    """Per-frame accumulator of named stage seconds (synchronizing CUDA before every reading)."""

    def __init__(self, device):
        import torch

        self.sync = (lambda: torch.cuda.synchronize(device)) if device.type == "cuda" else (lambda: None)
        self.current: Dict[str, float] = {}

    def now(self) -> float:
        self.sync()
        return time.perf_counter()

    def add(self, key: str, seconds: float) -> None:
        self.current[key] = self.current.get(key, 0.0) + seconds

    def timed(self, key: str, function: Callable) -> Callable:
        """Wrap ``function`` so every call adds its duration to ``key``."""

        def wrapper(*a, **kw):
            started = self.now()
            try:
                return function(*a, **kw)
            finally:
                self.add(key, self.now() - started)

        return wrapper

    def hook_module(self, key: str, module) -> list:
        """Forward pre/post hooks that add every forward of ``module`` to ``key``; returns the handles."""
        starts: List[float] = []

        def pre(_module, _inputs):
            starts.append(self.now())

        def post(_module, _inputs, _output):
            self.add(key, self.now() - starts.pop())

        return [module.register_forward_pre_hook(pre), module.register_forward_hook(post)]


def instrument(detector, clock: StageClock) -> list:
    """Time the heads' modules (MFM / MGM / VM) and the post-processing steps from outside.

    Uses forward hooks and per-instance wrappers only: the detector's code is unchanged.
    """
    handles = []
    heads = detector.heads
    for key, name in (("heads_mfm", "mfm"), ("heads_mgm", "mgm"), ("heads_vm", "voting")):
        module = getattr(heads, name, None)
        if module is not None:
            handles += clock.hook_module(key, module)
    detector.postprocess = clock.timed("post_upsample", detector.postprocess)
    detector._prediction = clock.timed("post_regions", detector._prediction)
    return handles


class ResultPublisher:
    """Builds and serializes the inspector's three outputs for one prediction (no DDS involved)."""

    def __init__(self, model_id: str):
        from rclpy.serialization import serialize_message

        from ..ros.inspector_node import _image_msg, overlay_bgr
        from ..ros.result_msg import FAIL, PASS, build_result

        self.serialize, self.image_msg, self.overlay_bgr = serialize_message, _image_msg, overlay_bgr
        self.build_result, self.verdicts = build_result, (PASS, FAIL)
        self.model_id = model_id
        self.name = "/inspector/result"

    def publish(self, clock: StageClock, header, prediction, rgb, started: float) -> None:
        import numpy as np

        t0 = clock.now()
        verdict = self.verdicts[1] if prediction.is_anomalous else self.verdicts[0]
        result = self.build_result(header, verdict, self.name, score=float(prediction.score),
                                   threshold=float(prediction.threshold), latency_ms=(t0 - started) * 1e3,
                                   model=self.model_id, regions=list(prediction.regions))
        self.serialize(result)
        t1 = clock.now()
        self.serialize(self.image_msg(header, np.asarray(prediction.anomaly_map, np.float32), "32FC1"))
        t2 = clock.now()
        overlay = self.overlay_bgr(rgb, prediction.anomaly_map, float(prediction.threshold), prediction.regions)
        self.serialize(self.image_msg(header, overlay, "bgr8"))
        t3 = clock.now()
        clock.add("publish_result", t1 - t0)
        clock.add("publish_map", t2 - t1)
        clock.add("publish_overlay", t3 - t2)


def convert_points(messages: Dict[str, Any]):
    """What the inspector's worker does with an image + cloud pair -> (rgb, xyz)."""
    from .. import msgconv

    rgb = msgconv.image_to_rgb(messages["image"])
    xyz = msgconv.cloud_to_xyz(messages["points"])
    msgconv.check_aligned(rgb, xyz)
    msgconv.check_enough_valid_points(xyz, 16)
    return rgb, xyz


def convert_depth(messages: Dict[str, Any]):
    """Depth (32FC1) + CameraInfo -> organized XYZ, as the inspector's depth input mode does."""
    from .. import msgconv

    return msgconv.depth_to_xyz(messages["depth"], messages["camera_info"])


def run_in_process(detector, frames: Sequence[SerializedFrame], warmup: int, count: int, device,
                   publisher: Optional[ResultPublisher], progress: bool) -> Tuple[Dict[str, List[float]], float]:
    """Frame loop (batch 1) -> ({stage key: [seconds per timed frame]}, wall seconds of the timed frames)."""
    from tqdm import tqdm

    clock = StageClock(device)
    handles = instrument(detector, clock)
    series: Dict[str, List[float]] = {key: [] for key, _ in STAGES}
    timed_wall = 0.0
    try:
        for i in tqdm(range(warmup + count), desc="bench", disable=not progress, leave=False):
            frame = frames[i % len(frames)]
            messages = frame.messages()  # DDS delivery: not part of the pipeline
            clock.current = {}
            started = clock.now()
            rgb, xyz = convert_points(messages)
            converted = clock.now()
            prediction = detector.predict(rgb, xyz)
            predicted = clock.now()
            if publisher is not None:
                publisher.publish(clock, messages["image"].header, prediction, rgb, started)
            finished = clock.now()
            depth_started = clock.now()
            convert_depth(messages)
            clock.add("convert_depth", clock.now() - depth_started)
            if i < warmup:
                continue
            timed_wall += finished - started
            stage = dict(clock.current)
            stage["convert_points"] = converted - started
            stage["predict"] = predicted - started - stage["convert_points"]
            stage["end_to_end"] = finished - started
            timings = detector.timings()
            for name, key in EXTRACTOR_STAGES.items():
                if name in timings:
                    stage[key] = float(timings[name])
            if "features" in timings:
                stage["features_other"] = float(timings["features"]) - sum(
                    float(timings[n]) for n in EXTRACTOR_STAGES if n in timings)
            if "heads" in timings:
                stage["heads_other"] = float(timings["heads"]) - sum(
                    stage.get(k, 0.0) for k in ("heads_mfm", "heads_mgm", "heads_vm"))
            if "postprocess" in timings:
                stage["post_other"] = float(timings["postprocess"]) - stage.get("post_upsample", 0.0) - stage.get(
                    "post_regions", 0.0)
            if "total" in timings:
                stage["predict_other"] = stage["predict"] - float(timings["total"])
            for key in series:
                if key in stage:
                    series[key].append(stage[key])
    finally:
        for handle in handles:
            handle.remove()
        for name in ("postprocess", "_prediction"):
            detector.__dict__.pop(name, None)  # back to the class methods
    return series, timed_wall


# ------------------------------------------------------------------------------------------ ROS mode
def inspector_command() -> List[str]:
    """The inspector_node console script of this environment (else ``python -m``)."""
    from ..ros.testing import console_script

    found = console_script("inspector_node")
    return [found] if found else [sys.executable, "-m", "mentor3ad.ros.inspector_node"]


def run_ros(model_path: Path, frames: Sequence[SerializedFrame], warmup: int, count: int, device, threads: int,
            timeout: float, log: Callable[[str], None], input_qos: str = "reliable",
            dds_profile: Optional[Path] = None) -> Dict[str, Any]:
    """Publish pairs one at a time to a real inspector_node and time publish -> ~/result receipt.

    dds_profile: Fast DDS XML profile for both processes (ignored when FASTDDS_DEFAULT_PROFILES_FILE is set).
    The environment is restored afterwards.
    """
    from ..ros import configure_local_discovery

    os.environ["ROS_AUTOMATIC_DISCOVERY_RANGE"] = "LOCALHOST"
    configure_local_discovery()
    saved_env = {k: os.environ.get(k) for k in ("ROS_DOMAIN_ID", "FASTDDS_DEFAULT_PROFILES_FILE")}
    os.environ.setdefault("ROS_DOMAIN_ID", str(10 + os.getpid() % 150))  # keep apart from parallel runs
    if dds_profile is not None and not os.environ.get("FASTDDS_DEFAULT_PROFILES_FILE"):
        os.environ["FASTDDS_DEFAULT_PROFILES_FILE"] = str(dds_profile)  # read when the participant is created
    try:
        return _run_ros(model_path, frames, warmup, count, device, threads, timeout, log, input_qos)
    finally:
        for key, value in saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _run_ros(model_path, frames, warmup, count, device, threads, timeout, log, input_qos) -> Dict[str, Any]:
    """run_ros once the environment is set."""
    import rclpy
    from diagnostic_msgs.msg import DiagnosticArray
    from rclpy.executors import SingleThreadedExecutor
    from rclpy.qos import QoSProfile, ReliabilityPolicy
    from sensor_msgs.msg import Image, PointCloud2

    import mentor3ad
    from ..ros.result_msg import parse_result
    from ..ros.testing import NodeProcess

    namespace = f"/mentor3ad_bench_{os.getpid()}"
    package_root = str(Path(mentor3ad.__file__).resolve().parents[1])
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), PYTHONUNBUFFERED="1",
               PYTHONPATH=os.pathsep.join(p for p in (package_root, os.environ.get("PYTHONPATH")) if p))
    cmd = inspector_command() + ["--ros-args", "-r", f"__ns:={namespace}", "-p", f"model_path:={model_path}",
                                 "-p", f"device:={device}", "-p", "queue_policy:=all"]
    if input_qos == "reliable":
        for topic in ("image", "points"):
            cmd += ["-p", f"qos_overrides.{namespace}/{topic}.subscription.reliability:=reliable"]
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
            parsed = parse_result(msg)
            received[parsed["stamp_ns"]] = (now, parsed)

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
                if result["verdict"] not in ("PASS", "FAIL"):
                    raise SystemExit(f"bench --ros: frame {i} got {result['verdict']}: {result['reason']}")
                if i >= warmup:
                    round_trips.append(arrived - sent)
                    inspector_latency.append(result["latency_ms"] / 1e3)
            out["timed_wall_s"] = time.perf_counter() - timed_started if timed_started else float("nan")
            out["inspector_peak_rss_mb"] = peak_rss_mb(inspector.proc.pid)
        out["series"] = {"ros_round_trip": round_trips, "ros_inspector_latency": inspector_latency,
                         "ros_transport": [a - b for a, b in zip(round_trips, inspector_latency)]}
    finally:
        executor.shutdown()
        node.destroy_node()
        rclpy.try_shutdown(context=context)
    return out


# ------------------------------------------------------------------------------------------ output
def format_table(stats: Dict[str, Dict[str, float]], rows: Sequence[Tuple[str, str]]) -> str:
    lines = [f"{'stage':<50} {'median ms':>10} {'p95 ms':>10}", "-" * 72]
    for key, label in rows:
        s = stats.get(key)
        if s is None or not s["n"]:
            lines.append(f"{label:<50} {'n/a':>10} {'n/a':>10}")
        else:
            lines.append(f"{label:<50} {s['median_ms']:>10.2f} {s['p95_ms']:>10.2f}")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import torch

    if args.frames < 1 or args.warmup < 0:
        raise SystemExit(f"--frames must be >= 1 and --warmup >= 0, got {args.frames} and {args.warmup}")
    if args.resolution < 16:
        raise SystemExit(f"--resolution must be >= 16 pixels, got {args.resolution}")
    if args.train and args.model is not None:
        raise SystemExit("--train times training on the default data; it cannot be combined with --model")
    if args.train_samples < 1 or args.val_samples < 0:
        raise SystemExit("--train-samples must be >= 1 and --val-samples >= 0")
    try:
        device = torch.device(args.device)
    except RuntimeError as exc:
        raise SystemExit(f"--device {args.device!r}: {exc}") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device is available here (torch.cuda.is_available() is False)")
    if device.type not in ("cpu", "cuda"):
        raise SystemExit(f"--device must be cpu or cuda[:N], got {args.device!r}")
    if args.threads:
        torch.set_num_threads(args.threads)
    threads = torch.get_num_threads()
    log = (lambda message: None) if args.no_progress else (lambda message: print(f"  {message}", flush=True))
    report: Dict[str, Any] = {"args": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()
                                       if k != "func"}}

    config, notes = bench_config(args, device)
    for note in notes:
        print(f"NOTE: {note}")
    report["notes"] = notes
    print(f"machine: {os.cpu_count()} CPU(s), torch threads {threads}, device {device}, load average "
          f"{' '.join(f'{v:.2f}' for v in os.getloadavg())}", flush=True)

    # -- model: train on the embedded data (or load --model) ----------------------------------------
    peak_before_inference = None
    with tempfile.TemporaryDirectory(prefix="mentor3ad-bench-") as work:
        work_dir = Path(work)
        training: Dict[str, Any] = {}
        if args.model is not None:
            from ..detector import Detector

            if not args.model.is_file():
                raise SystemExit(f"--model {args.model}: no such file")
            detector = Detector.load(args.model, device=str(device))
            model_path = args.model
        else:
            if args.train:
                cache = work_dir / "features"
                print(f"training on {args.train_samples} good parts, cold feature cache ...", flush=True)
                _, training["train_cold_s"] = train_model(args, config, device, cache, log)
                print("training again, cached features ...", flush=True)
                detector, training["train_cached_s"] = train_model(args, config, device, cache, log)
            else:
                print(f"training on {args.train_samples} good parts (feature cache {args.cache_dir}) ...", flush=True)
                detector, training["train_s"] = train_model(args, config, device, args.cache_dir, log)
            training["heads_train_s"] = detector.training_info.get("train_seconds")
            model_path = work_dir / "bench_model.safetensors"
            detector.save(model_path)
            if args.save_model is not None:
                args.save_model.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(model_path, args.save_model)
        report["training"] = training
        report["model"] = {"model_id": detector.model_id, "threshold": detector.threshold,
                           "rgb_backbone": config.features.rgb_backbone, "rgb_weights": config.features.rgb_weights,
                           "point_weights": config.features.point_weights,
                           "precision": getattr(detector.config.features, "precision", "fp32"),
                           "features": detector.config.features.to_dict()}
        peak_before_inference = peak_rss_mb()

        # -- in-process pipeline ------------------------------------------------------------------
        unique = max(1, min(args.frames + args.warmup, 16))
        frames = [SerializedFrame(s, 1_000_000_000_000 + i * 100_000_000)
                  for i, s in enumerate(bench_frames(unique, args.resolution))]
        publisher = ResultPublisher(detector.model_id) if ros_messages_available() else None
        if publisher is None:
            print("NOTE: rclpy / message packages not importable: conversion uses plain field objects and the "
                  "publishing stage is not measured")
        rss_reset = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        print(f"running {args.warmup} warm-up + {args.frames} timed frames ({args.resolution}x{args.resolution}) "
              f"through the pipeline ...", flush=True)
        series, timed_wall = run_in_process(detector, frames, args.warmup, args.frames, device, publisher,
                                            not args.no_progress)
        memory = {"peak_rss_mb": peak_rss_mb(), "peak_rss_is_inference_only": rss_reset,
                  "peak_rss_before_inference_mb": peak_before_inference}
        if device.type == "cuda":
            memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        stats = {key: summarize(values) for key, values in series.items()}
        report["memory"] = memory
        report["throughput_fps"] = args.frames / timed_wall if timed_wall > 0 else float("nan")
        rows = list(STAGES)

        # -- ROS round trip -----------------------------------------------------------------------
        end_to_end_key = "end_to_end"
        if args.ros:
            if not ros_messages_available():
                raise SystemExit("--ros needs rclpy and sensor_msgs/diagnostic_msgs")
            print(f"--ros: starting inspector_node on the bench model, {args.warmup} warm-up + {args.frames} "
                  f"timed pairs one at a time ...", flush=True)
            del detector
            profile = None
            if args.dds_profile == "large-shm":
                from ..ros.testing import large_shm_profile_path

                profile = large_shm_profile_path()  # config/fastdds_large_shm.xml (16 MiB shared-memory segment)
            ros = run_ros(model_path, frames, args.warmup, args.frames, device, threads, args.ros_timeout, log,
                          args.ros_input_qos, profile)
            for key, values in ros.pop("series").items():
                series[key] = values
                stats[key] = summarize(values)
            ros["throughput_fps"] = args.frames / ros["timed_wall_s"] if ros.get("timed_wall_s") else float("nan")
            report["ros"] = ros
            rows += ROS_STAGES
            end_to_end_key = "ros_round_trip"

    rgb_median = stats["rgb_backbone"]["median_ms"] if "rgb_backbone" in stats else float("nan")
    ratio = stats[end_to_end_key]["median_ms"] / rgb_median if rgb_median and rgb_median > 0 else float("nan")
    report["series_ms"] = {k: [round(v * 1e3, 3) for v in values] for k, values in series.items()}
    report.update(stages={k: dict(v, label=dict(rows).get(k, k)) for k, v in stats.items()}, ratio=ratio,
                  ratio_end_to_end=end_to_end_key, machine=machine_info(device))

    print()
    print(format_table(stats, rows))
    print()
    print(f"throughput (in-process, batch 1): {report['throughput_fps']:.2f} frames/s")
    if args.ros:
        print(f"throughput (ROS, one pair at a time): {report['ros']['throughput_fps']:.2f} frames/s; "
              f"inspector start-up {report['ros']['inspector_startup_s']:.1f} s, "
              f"inspector peak RSS {report['ros']['inspector_peak_rss_mb']:.0f} MiB")
    print(f"peak RSS: {memory['peak_rss_mb']:.0f} MiB "
          f"({'inference only' if rss_reset else 'whole process'}; {peak_before_inference:.0f} MiB before inference)")
    if "cuda_max_allocated_mb" in memory:
        print(f"CUDA max allocated: {memory['cuda_max_allocated_mb']:.0f} MiB")
    if training:
        parts = [f"{k.removesuffix('_s').replace('_', ' ')} {v:.1f} s" for k, v in training.items() if v is not None]
        print("training: " + ", ".join(parts))
    print(RATIO_LINE.format(ratio) + f"   (end-to-end = {dict(rows)[end_to_end_key].lstrip('= ')})")
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, default=str, allow_nan=True))
        print(f"wrote {args.json_out}")
    return 0
