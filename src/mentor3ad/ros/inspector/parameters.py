"""The inspector's own parameters (model, inputs, queue, judging, health); each output declares its own
(:mod:`mentor3ad.ros.inspector.outputs`). Validated at start-up and on ``ros2 param set``
(:mod:`mentor3ad.ros.params`)."""
from __future__ import annotations

import math
import re
from typing import Optional

from ...errors import ConfigError
from ...io.inputs import INPUT_MODES, WorkingVolume, input_mode_help
from ..params import ParamSpec

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
RELIABILITIES = ("best_effort", "reliable", "best_available")
QUEUE_POLICIES = ("all", "latest")
TRIGGER_MODES = ("stream", "request")


def _volume_problem(values) -> Optional[str]:
    """Why ``values`` is not a working volume (None when it is)."""
    try:
        WorkingVolume.from_list(values)
    except ConfigError as exc:
        return str(exc)
    return None


CORE_PARAMETERS = [
    ParamSpec("model_path", "", "Model file written by `mentor3ad train` / trainer_node (empty: no model; "
              "every result is ERROR until ~/reload_model loads one)."),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N; a CUDA "
              "request without CUDA falls back to cpu once at start-up (logged, shown in diagnostics).",
              read_only=True, check=lambda v: None if _DEVICE.match(v or "") else "use auto, cpu, cuda or cuda:N"),
    ParamSpec("input_mode", "points", f"3D input: {input_mode_help()}.", read_only=True, choices=tuple(INPUT_MODES)),
    ParamSpec("input_reliability", "best_effort", "Reliability of the input subscriptions: best_effort (matches "
              "every driver; with the node's Fast DDS profile, config/fastdds_inspector.xml, large clouds from a "
              "driver on defaults arrive), reliable (recorded or replayed data; never matches a best-effort driver) "
              "or best_available (decided when subscribing: reliable if no publisher is known yet). See README: "
              "large clouds.", read_only=True, choices=RELIABILITIES),
    ParamSpec("input_depth", 10, "History depth of the input subscriptions.", read_only=True, minimum=1),
    ParamSpec("pair_timeout", 2.0, "Seconds after an image without its 3D data before the image gets an ERROR "
              "result (no part goes without a result).", read_only=True, minimum=0.0, exclusive=True),
    ParamSpec("threshold", -1.0, "Decision threshold override on the image score; negative: use the "
              "model's calibrated threshold.", check=lambda v: None if math.isfinite(v) else "must be finite"),
    ParamSpec("trigger_mode", "stream", "stream: every complete pair is judged and answered (the ~/inspect action "
              "may claim any of them); request: only pairs claimed by an ~/inspect goal (the first pair stamped at or "
              "after the goal's min_stamp, one per goal, in goal order) are judged and answered, the others are "
              "dropped and counted (unrequested_pairs in /diagnostics), images without 3D data are counted, not "
              "answered.", read_only=True, choices=TRIGGER_MODES),
    ParamSpec("queue_policy", "all", "all: every pair is processed in order through a bounded queue, an "
              "overflowing pair gets a SKIPPED result; latest: only the newest pending pair is kept, "
              "stale pairs are dropped and counted.", read_only=True, choices=QUEUE_POLICIES),
    ParamSpec("queue_size", 8, "Inference queue capacity (pairs waiting for the worker).", read_only=True,
              minimum=1),
    ParamSpec("batch_size", 1, "Most waiting pairs the worker judges in one batch (one backbone and heads call; "
              "it never waits for a batch to fill). 1: one pair at a time.", read_only=True, minimum=1),
    ParamSpec("sync_slop", 0.05, "Approximate-time synchronization window in seconds.", read_only=True,
              minimum=0.0, exclusive=True),
    ParamSpec("sync_queue_size", 10, "Messages kept per input topic while waiting for partners.", read_only=True,
              minimum=1),
    ParamSpec("min_valid_points", 16, "Fewer valid 3D points (finite, z > 0, inside working_volume) than this "
              "gives an ERROR result.", minimum=1),
    ParamSpec("working_volume", [-10.0, 10.0, -10.0, 10.0, 0.0, 10.0], "[x_min, x_max, y_min, y_max, z_min, z_max] "
              "in metres, in the 3D data's optical frame: points outside are invalid (a cell's table, walls or a "
              "misreported unit do not enter the features).", check=_volume_problem),
    ParamSpec("require_same_frame", True, "The image and the cloud / depth image (and CameraInfo) must carry the "
              "same header.frame_id, else the pair gets an ERROR result (pixel-aligned data is in one frame); "
              "false for drivers that name the frames of aligned streams differently."),
    ParamSpec("diagnostics_period", 1.0, "Seconds between /diagnostics messages.", read_only=True, minimum=0.1),
]


def resolve_device(device: str) -> tuple:
    """auto|cpu|cuda|cuda:N -> (torch device string, note): auto picks cuda when available; a CUDA request
    without CUDA falls back to cpu with a note saying so."""
    if not _DEVICE.match(device or ""):
        raise ConfigError(f"parameter device must be auto, cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return "cpu", ""
    import torch

    if torch.cuda.is_available():
        return ("cuda" if device == "auto" else device), ""
    if device == "auto":
        return "cpu", ""
    return "cpu", f"{device} requested but CUDA is not available: running on cpu"


def input_qos(reliability: str, depth: int):
    """QoS of the input subscriptions: KEEP_LAST ``depth`` with the ``input_reliability`` parameter's policy."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    policy = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policy)


__all__ = ["CORE_PARAMETERS", "RELIABILITIES", "QUEUE_POLICIES", "TRIGGER_MODES", "resolve_device", "input_qos"]
