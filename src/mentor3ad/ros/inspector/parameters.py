"""The inspector's own parameters (model, inputs, queue, judging, health); each output declares its own
(:mod:`mentor3ad.ros.inspector.outputs`). Validated at start-up and on ``ros2 param set``
(:mod:`mentor3ad.ros.params`); those whose plausible values depend on the serving model (:data:`MODEL_BOUND`:
the threshold override by the model's calibration scores, ``min_valid_points`` and ``working_volume`` by
its input profile) are checked against it by :func:`model_problem`, on every set and every model load."""
from __future__ import annotations

import math
import re
from typing import Optional

from ...errors import ConfigError, ModelLoadError
from ...io.inputs import INPUT_MODES, WorkingVolume, input_mode_help
from ...model.integrity import parse_pins
from ...model.threshold_bounds import plausible_range, threshold_problem
from ..params import ParamSpec, cpu_budget_parameters

_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")
RELIABILITIES = ("best_effort", "reliable", "best_available")
QUEUE_POLICIES = ("all", "latest")
TRIGGER_MODES = ("stream", "request")


def _pins_problem(text: str) -> Optional[str]:
    try:
        parse_pins(text)
    except ConfigError as exc:
        return str(exc)
    return None


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
    ParamSpec("model_sha256", "", "Allow-list of model files: the sha256 (as sha256sum prints it) of the only file "
              "that may be loaded or swapped in (several: comma-separated); empty: any file. Checked on every load "
              "(start-up, lifecycle configure, ~/reload_model); a file that differs is refused and the serving model "
              "stays.", read_only=True, check=_pins_problem),
    ParamSpec("model_directories", [""], "Directories model_path must lie in (symlinks resolved; decided from the "
              "name before the file is opened); empty: anywhere.", read_only=True),
    ParamSpec("device", "auto", "Inference device: auto (cuda when available, else cpu), cpu, cuda or cuda:N; a CUDA "
              "request without CUDA falls back to cpu once at start-up (logged, shown in diagnostics).",
              read_only=True, check=lambda v: None if _DEVICE.match(v or "") else "use auto, cpu, cuda or cuda:N"),
    *cpu_budget_parameters(0, 0, "the inference"),
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
              "model's calibrated threshold. Must lie in the serving model's plausible range (from its calibration "
              "scores, see README: Reliability); refused for a model without calibration scores.",
              check=lambda v: None if math.isfinite(v) else "must be finite"),
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
    ParamSpec("input_queue_mb", 256, "Most MiB of messages each input topic's pairing queue and subscription history "
              "hold: the queue drops its longest-waiting message beyond it (counted: queue_overflow_<topic>), the "
              "history depth is lowered to fit the first message's size (large clouds otherwise pin input_depth + "
              "sync_queue_size times their size).", read_only=True, minimum=1),
    ParamSpec("loss_error_rate", 0.05, "/diagnostics is WARN while input messages were lost within the last 60 s "
              "(reported by the middleware, gaps in a publisher's sequence numbers, queue overflow; logged once per "
              "burst), ERROR when more than this share of the input messages was lost.", minimum=0.0),
    ParamSpec("min_valid_points", 16, "Fewer valid 3D points (finite, z > 0, inside working_volume) than this "
              "gives an ERROR result. At most the fewest valid points of a training part of the serving model.",
              minimum=1),
    ParamSpec("working_volume", [-10.0, 10.0, -10.0, 10.0, 0.0, 10.0], "[x_min, x_max, y_min, y_max, z_min, z_max] "
              "in metres, in the 3D data's optical frame: points outside are invalid (a cell's table, walls or a "
              "misreported unit do not enter the features). Must contain the serving model's training points (1st-99th "
              "percentile per axis).", check=_volume_problem),
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


MODEL_BOUND = ("threshold", "min_valid_points", "working_volume")


def model_problem(name: str, value, detector) -> Optional[str]:
    """Why parameter ``name`` = ``value`` does not fit the model ``detector`` (None when it does, when the
    parameter is not in :data:`MODEL_BOUND`, or when there is no model to tell)."""
    if detector is None or name not in MODEL_BOUND or (name == "threshold" and value < 0):
        return None
    if name == "threshold":
        record = detector.threshold_record
        if plausible_range(record) is None:
            return (f"parameter threshold: model {detector.model_id} has no calibration scores to bound an override "
                    f"by (its threshold record was set by {getattr(record, 'set_by', 'nobody')}); re-calibrate it "
                    f"(mentor3ad calibrate) or keep threshold at -1")
        problem = threshold_problem(float(value), record, "the threshold override")
        return f"parameter threshold: {problem}" if problem else None
    try:
        profile = detector.input_profile
    except ModelLoadError:
        return None
    if profile is None:
        return None
    if name == "min_valid_points" and value > profile.valid_points_min:
        return (f"parameter min_valid_points: {value} is more than the {profile.valid_points_min} valid points of "
                f"model {detector.model_id}'s sparsest training part: parts like it would be ERROR")
    if name == "working_volume":
        volume = WorkingVolume.from_list(value)
        (x_lo, x_hi), (y_lo, y_hi), (z_lo, z_hi) = profile.xyz_range_m
        inside = (volume.x_min <= x_lo and x_hi <= volume.x_max and volume.y_min <= y_lo and y_hi <= volume.y_max
                  and volume.z_min < z_lo and z_hi <= volume.z_max)
        if not inside:
            return (f"parameter working_volume: {volume.describe()} does not contain model {detector.model_id}'s "
                    f"training points (x [{x_lo:.4g}, {x_hi:.4g}] m, y [{y_lo:.4g}, {y_hi:.4g}] m, z [{z_lo:.4g}, "
                    f"{z_hi:.4g}] m, 1st-99th percentile): its parts' points would be invalid")
    return None


def input_qos(reliability: str, depth: int):
    """QoS of the input subscriptions: KEEP_LAST ``depth`` with the ``input_reliability`` parameter's policy."""
    from rclpy.qos import HistoryPolicy, QoSProfile, ReliabilityPolicy

    policy = {"best_available": ReliabilityPolicy.BEST_AVAILABLE, "reliable": ReliabilityPolicy.RELIABLE,
              "best_effort": ReliabilityPolicy.BEST_EFFORT}[reliability]
    return QoSProfile(history=HistoryPolicy.KEEP_LAST, depth=int(depth), reliability=policy)


__all__ = ["CORE_PARAMETERS", "RELIABILITIES", "QUEUE_POLICIES", "TRIGGER_MODES", "MODEL_BOUND", "model_problem",
           "resolve_device", "input_qos"]
