"""In-process timing of the inspector's per-pair work, stage by stage (batch 1).

The frame loop runs exactly what ``inspector_node``'s worker runs, the
:class:`~mentor3ad.ros.inspector.pipeline.InspectionPipeline` (convert -> judge) and the message builders of
the ``~/result``, ``~/anomaly_map`` and ``~/overlay`` outputs, and reads the detector's own stage timings (:meth:`mentor3ad.model.detector.Detector.timings`); nothing
of the detector is patched.
"""
from __future__ import annotations

import math
from typing import Dict, List, Sequence, Tuple

# (key, label) in print order; rows starting with "=" are sums/spans, not part of the stage sum
STAGES: List[Tuple[str, str]] = [
    ("convert_points", "msg conversion: Image + PointCloud2 -> numpy"),
    ("convert_depth", "msg conversion: depth + CameraInfo -> XYZ (info)"),
    ("preprocess", "preprocessing: upload + resize"),
    ("plane_removal", "preprocessing: plane removal + cluster"),
    ("rgb_backbone", "RGB backbone forward"),
    ("point_neighbourhoods", "point backbone: neighbourhoods (normal image | k-NN | FPS)"),
    ("point_descriptors", "point backbone: descriptors (CNN of the normal image | FPFH | transformer)"),
    ("projection", "projection (points -> grid, RGB -> R)"),
    ("features_other", "feature extraction: untimed rest"),
    ("heads_mfm", "heads: MFM"),
    ("heads_mgm", "heads: MGM"),
    ("heads_vm", "heads: VM"),
    ("heads_other", "heads: score maps + rest"),
    ("post_upsample", "post: upsample + smoothing"),
    ("post_regions", "post: regions + verdict"),
    ("post_other", "post: download + rest"),
    ("rgb_bank", "RGB bank: nearest rows + its map (models that keep one)"),
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
# Detector.timings() key -> row key
EXTRACTOR_STAGES = {
    "features_preprocess": "preprocess",
    "features_plane_removal": "plane_removal",
    "features_rgb_backbone": "rgb_backbone",
    "features_point_neighbourhoods": "point_neighbourhoods",
    "features_point_descriptors": "point_descriptors",
    "features_projection": "projection",
}
HEAD_STAGES = ("heads_mfm", "heads_mgm", "heads_vm")


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


def format_table(stats: Dict[str, Dict[str, float]], rows: Sequence[Tuple[str, str]]) -> str:
    lines = [f"{'stage':<50} {'median ms':>10} {'p95 ms':>10}", "-" * 72]
    for key, label in rows:
        s = stats.get(key)
        if s is None or not s["n"]:
            lines.append(f"{label:<50} {'n/a':>10} {'n/a':>10}")
        else:
            lines.append(f"{label:<50} {s['median_ms']:>10.2f} {s['p95_ms']:>10.2f}")
    return "\n".join(lines)


def detector_stages(timings: Dict[str, float], predict_s: float) -> Dict[str, float]:
    """Detector.timings() of one predict call -> the table's detector rows (they sum to ``predict_s``)."""
    stage = {key: float(timings.get(name, 0.0)) for name, key in EXTRACTOR_STAGES.items()}
    stage["features_other"] = float(timings.get("features", 0.0)) - sum(stage.values())
    for key in HEAD_STAGES:
        stage[key] = float(timings.get(key, 0.0))
    stage["heads_other"] = float(timings.get("heads", 0.0)) - sum(stage[k] for k in HEAD_STAGES)
    stage["post_upsample"] = float(timings.get("post_upsample", 0.0))
    stage["post_regions"] = float(timings.get("post_decide", 0.0))
    stage["post_other"] = float(timings.get("postprocess", 0.0)) - stage["post_upsample"] - stage["post_regions"]
    stage["rgb_bank"] = float(timings.get("rgb_bank", 0.0))
    accounted = float(timings.get("features", 0.0)) + float(timings.get("heads", 0.0)) + float(
        timings.get("postprocess", 0.0)) + stage["rgb_bank"]
    stage["predict_other"] = predict_s - accounted
    return stage


def run_in_process(detector, frames: Sequence, warmup: int, count: int, device, with_messages: bool,
                   progress: bool) -> Tuple[Dict[str, List[float]], float]:
    """Frame loop -> ({stage key: [seconds per timed frame]}, wall seconds of the timed frames).

    with_messages: also build and serialize the result, map and overlay messages (needs rclpy)."""
    import time

    from tqdm import tqdm

    from ...io.inputs import input_mode
    from ...ros.inspector.outputs.anomaly_map import map_message
    from ...ros.inspector.outputs.overlay import overlay_message
    from ...ros.inspector.pipeline import InspectionPipeline
    from ...ros.result_codec import encode

    def now() -> float:
        if device.type == "cuda":
            import torch

            torch.cuda.synchronize(device)
        return time.perf_counter()

    from ...ros.messages import serialize
    points, depth = InspectionPipeline(input_mode("points")), input_mode("depth")
    series: Dict[str, List[float]] = {key: [] for key, _ in STAGES}
    timed_wall = 0.0
    for i in tqdm(range(warmup + count), desc="bench", disable=not progress, leave=False):
        frame = frames[i % len(frames)]
        messages = frame.messages()  # DDS delivery: not part of the pipeline
        started = now()
        rgb, xyz = points.convert(messages)
        converted = now()
        result = detector.predict(rgb, xyz)
        predicted = now()
        stage = {"convert_points": converted - started, "predict": predicted - converted}
        if with_messages:
            header = messages["image"].header
            serialize(encode(result, header, "/inspector/result"))
            t1 = now()
            serialize(map_message(result, header))
            t2 = now()
            serialize(overlay_message(result, rgb, header))
            t3 = now()
            stage.update(publish_result=t1 - predicted, publish_map=t2 - t1, publish_overlay=t3 - t2)
        finished = now()
        depth.to_xyz(messages)
        stage["convert_depth"] = now() - finished
        if i < warmup:
            continue
        timed_wall += finished - started
        stage["end_to_end"] = finished - started
        stage.update(detector_stages(detector.timings(), stage["predict"]))
        for key in series:
            if key in stage:
                series[key].append(stage[key])
    return series, timed_wall


__all__ = ["STAGES", "ROS_STAGES", "summarize", "format_table", "detector_stages", "run_in_process"]
