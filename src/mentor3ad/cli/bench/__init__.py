"""``mentor3ad bench``: where every millisecond of a frame goes, on the embedded default data.

Runs N frames of the synthetic inspection cell (:mod:`mentor3ad.data.synthetic`, 224x224 by default)
through the real pipeline, frame by frame (batch 1), and prints per stage the median and p95 latency
in milliseconds:

- message conversion: deserialized ``sensor_msgs/Image`` + organized ``PointCloud2`` -> numpy, and
  depth ``Image`` + ``CameraInfo`` -> XYZ (the input modes of :mod:`mentor3ad.io.inputs`);
- ``Detector.predict``: preprocessing, plane removal, RGB backbone, point backbone (FPS + k-NN,
  transformer), projection, the heads (MFM / MGM / VM) and post-processing (upsampling + smoothing,
  verdict + regions), all from the detector's own ``timings()``;
- result publishing: building and serializing ``~/result``, ``~/anomaly_map`` and ``~/overlay`` with the
  inspector's own outputs (:mod:`mentor3ad.ros.inspector.outputs`, timed in :mod:`.stages`).

``--ros`` (:mod:`.ros_mode`) additionally starts the real ``inspector_node`` (console script, local-only discovery) on a
model the bench trained first, publishes the pairs one at a time from this process and times publish
-> receipt of ``~/result``. The summary line ``ratio end-to-end / RGB-backbone-forward = X.XX`` uses
the in-process end-to-end latency (conversion + predict + publishing) by default and the ROS round
trip with ``--ros``; both medians come from the same run. ``--train`` also times training on the
embedded data with a cold and with a warm feature cache. ``--json OUT`` writes every number.

In the same run: the same-features PatchCore yardsticks next to the heads, per part (:mod:`.yardstick`;
``--no-patchcore`` skips them), ``--cost-table`` (:mod:`.cost`: latency at camera sizes, training time at
numbers of parts) and ``--while-training`` (:mod:`.while_training`: a camera at 1 part/s into a real
``inspector_node``, idle and while a real ``trainer_node`` trains beside it).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import tempfile
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Tuple

from ..common import add_config_arguments, config_from_args
from ...ros.messages import available as ros_messages_available
from . import cost, while_training, yardstick
from .frames import SerializedFrame, bench_frames
from .stages import ROS_STAGES, STAGES, format_table, run_in_process, summarize
from ...eval.resources import machine_info, peak_rss_mb, reset_peak_rss

RATIO_LINE = "ratio end-to-end / RGB-backbone-forward = {:.2f}"


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("bench", help="per-stage latency, throughput, memory and training time on the embedded data",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--frames", type=int, default=20, help="timed frames (after the warm-up)")
    p.add_argument("--warmup", type=int, default=2, help="untimed warm-up frames")
    p.add_argument("--device", default="cpu", help="cpu | cuda | cuda:N")
    p.add_argument("--amp", choices=("fp32", "bf16", "fp16"), default=None,
                   help="the backbones' arithmetic (features.precision; default: the config's, auto = bf16 where the "
                        "device computes it natively); fp16 needs CUDA")
    p.add_argument("--threads", type=int, default=None,
                   help="torch intra-op threads (also OMP_NUM_THREADS of the --ros inspector); default: torch's")
    p.add_argument("--ros", action="store_true", help="also measure publish -> ~/result through a real inspector_node")
    p.add_argument("--train", action="store_true", help="time training on the default data (cold and cached features)")
    p.add_argument("--model", type=Path, default=None, help="use this checkpoint instead of training one")
    p.add_argument("--json", dest="json_out", type=Path, default=None, help="write every number to this JSON file")
    add_config_arguments(p)
    p.add_argument("--models-dir", type=Path, default=Path("models"), help="where local backbone weights are looked up")
    p.add_argument("--cache-dir", type=Path, default=Path("cache/features"),
                   help="feature cache of the training run (shared with `mentor3ad demo`)")
    p.add_argument("--resolution", type=int, default=224, help="frame size in pixels (square)")
    p.add_argument("--train-samples", type=int, default=20, help="good samples to train on")
    p.add_argument("--val-samples", type=int, default=5, help="held-out good samples for the threshold")
    p.add_argument("--ros-timeout", type=float, default=120.0, help="seconds to wait for one ROS result / start-up")
    p.add_argument("--ros-input-qos", choices=("reliable", "sensor"), default="reliable",
                   help="inspector input subscriptions: reliable (qos_overrides parameters) or the node's "
                        "best-effort default")
    p.add_argument("--dds-profile", choices=("inspector", "large-shm", "none"), default="inspector",
                   help="Fast DDS profile of both ROS processes: inspector (config/fastdds_inspector.xml, the "
                        "inspector's default: inputs over UDP), large-shm (config/fastdds_large_shm.xml: a 16 MiB "
                        "shared-memory segment) or none (the inspector still loads its own; an existing "
                        "FASTDDS_DEFAULT_PROFILES_FILE is always kept)")
    p.add_argument("--save-model", type=Path, default=None, help="also save the trained bench model here")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    yardstick.add_arguments(p)
    cost.add_arguments(p)
    while_training.add_arguments(p)
    p.set_defaults(func=run)


def bench_config(args: argparse.Namespace, device) -> Tuple[Any, List[str]]:
    """Config (default YAML + --set), --amp applied -> (config, notes: where the backbone weights come from)."""
    from ... import backbones

    os.environ["MENTOR3AD_MODELS_DIR"] = str(args.models_dir)  # where rgb/point_weights "auto" look first
    config = config_from_args(args)
    notes = [f"{kind} weights: {backbones.resolve_weights_of(kind, config.features)[1]}" for kind in backbones.KINDS]
    if args.amp:
        if args.amp == "fp16" and device.type != "cuda":
            raise SystemExit("--amp fp16 needs --device cuda; on CPU use --amp bf16")
        config = config.replace(features={"precision": args.amp})
    return config, notes


def bench_parts(args) -> Tuple[list, list]:
    """The cell's first --train-samples good training parts and --val-samples held-out good parts."""
    from ...io.datasets.synthetic import cell_sample

    size = (args.resolution, args.resolution)
    return ([cell_sample("train", "good", i, size) for i in range(args.train_samples)],
            [cell_sample("validation", "good", i, size) for i in range(args.val_samples)])


def train_model(args, config, device, cache_dir: Optional[Path], log: Callable[[str], None]):
    """Train on :func:`bench_parts` -> (detector, wall seconds)."""
    from ...model.training import train_detector

    train, val = bench_parts(args)
    started = time.perf_counter()
    detector = train_detector(train, config, val_samples=val or None, cache_dir=cache_dir, device=str(device),
                              progress=not args.no_progress, log=log)
    return detector, time.perf_counter() - started


def dds_profile(args) -> Optional[Path]:
    """The --dds-profile file (None for 'none')."""
    from ...ros.dds import inspector_profile_path, large_shm_profile_path

    return {"inspector": inspector_profile_path, "large-shm": large_shm_profile_path,
            "none": lambda: None}[args.dds_profile]()


def same_run_modes(args, config, detector, frame_samples, feature_cache, device, with_messages: bool,
                   work_dir: Path, log: Callable[[str], None]) -> Dict[str, Any]:
    """The in-process modes after the stage table: PatchCore beside the heads, --cost-table -> report sections."""
    out: Dict[str, Any] = {}
    if not args.no_patchcore:
        print(f"PatchCore yardsticks on the same features (coreset {args.coreset_ratio:g}) ...", flush=True)
        train, val = bench_parts(args)
        cores, info = yardstick.fit_yardsticks(detector, train, val, feature_cache, args.coreset_ratio, device, log)
        series = yardstick.time_scorers(detector, cores, frame_samples, args.warmup, args.frames, device)
        out["patchcore"] = {"scorers": yardstick.summarize_scorers(series, info, detector),
                            "coreset_ratio": args.coreset_ratio}
    if args.cost_table:
        print("cost vs work: latency per input size ...", flush=True)
        latency = cost.latency_rows(detector, args, device, with_messages, log)
        print(f"cost vs work: training time at {args.cost_parts} good parts ...", flush=True)
        out["cost"] = {"latency": latency, "training": cost.training_rows(config, args, device, work_dir, log)}
    return out


def print_same_run_modes(report: Dict[str, Any]) -> None:
    if "patchcore" in report:
        print("\nMentor3AD vs the same-features PatchCore yardsticks (median of the timed parts):\n")
        print(yardstick.format_yardsticks(report["patchcore"]["scorers"]))
    if "cost" in report:
        print("\ncost vs work (in-process, batch 1; training from cached features):\n")
        print(cost.format_cost(report["cost"]["latency"], report["cost"]["training"]))
    if "while_training" in report:
        print()
        print(while_training.format_while_training(report["while_training"]))


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
    for mode in (yardstick, cost, while_training):
        mode.check_arguments(args)
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
            from ...model.detector import Detector

            if not args.model.is_file():
                raise SystemExit(f"--model {args.model}: no such file")
            detector = Detector.load(args.model, device=str(device), precision=args.amp)
            if args.amp and args.ros:
                print(f"NOTE: --amp {args.amp} applies in-process; the --ros inspector runs the model's own "
                      f"features.precision ({detector.config.features.precision} in the file)", flush=True)
            model_path, feature_cache = args.model, work_dir / "features"
        else:
            feature_cache = work_dir / "features" if args.train else args.cache_dir
            if args.train:
                cache = feature_cache
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
                           "precision": detector.feature_precision, "head_precision": detector.heads.precision,
                           "features": dataclasses.asdict(detector.config.features)}
        print(f"arithmetic: backbones {detector.feature_precision}, heads {detector.heads.precision}", flush=True)
        peak_before_inference = peak_rss_mb()

        # -- in-process pipeline ------------------------------------------------------------------
        unique = max(1, min(args.frames + args.warmup, 16))
        frame_samples = bench_frames(unique, args.resolution)
        frames = [SerializedFrame(s, 1_000_000_000_000 + i * 100_000_000) for i, s in enumerate(frame_samples)]
        with_messages = ros_messages_available()
        if not with_messages:
            print("NOTE: rclpy / message packages not importable: conversion uses plain field objects and the "
                  "publishing stage is not measured")
        rss_reset = reset_peak_rss()
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(device)
        print(f"running {args.warmup} warm-up + {args.frames} timed frames ({args.resolution}x{args.resolution}) "
              f"through the pipeline ...", flush=True)
        series, timed_wall = run_in_process(detector, frames, args.warmup, args.frames, device, with_messages,
                                            not args.no_progress)
        memory = {"peak_rss_mb": peak_rss_mb(), "peak_rss_is_inference_only": rss_reset,
                  "peak_rss_before_inference_mb": peak_before_inference}
        if device.type == "cuda":
            memory["cuda_max_allocated_mb"] = torch.cuda.max_memory_allocated(device) / 2 ** 20
        stats = {key: summarize(values) for key, values in series.items()}
        report["memory"] = memory
        report["throughput_fps"] = args.frames / timed_wall if timed_wall > 0 else float("nan")
        rows = list(STAGES)
        report.update(same_run_modes(args, config, detector, frame_samples, feature_cache, device, with_messages,
                                     work_dir, log))

        # -- ROS round trip -----------------------------------------------------------------------
        end_to_end_key = "end_to_end"
        if (args.ros or args.while_training) and not ros_messages_available():
            raise SystemExit("--ros and --while-training need rclpy and sensor_msgs/diagnostic_msgs")
        del detector
        if args.ros:
            print(f"--ros: starting inspector_node on the bench model, {args.warmup} warm-up + {args.frames} "
                  f"timed pairs one at a time ...", flush=True)
            from ...ros.tooling.round_trip import run_ros

            ros = run_ros(model_path, frames, args.warmup, args.frames, device, args.threads, args.ros_timeout, log,
                          args.ros_input_qos, dds_profile(args))
            for key, values in ros.pop("series").items():
                series[key] = values
                stats[key] = summarize(values)
            ros["throughput_fps"] = args.frames / ros["timed_wall_s"] if ros.get("timed_wall_s") else float("nan")
            report["ros"] = ros
            rows += ROS_STAGES
            end_to_end_key = "ros_round_trip"
        if args.while_training:
            print(f"--while-training: camera at {args.rate:g} parts/s into inspector_node, {args.idle_parts} parts "
                  "idle, then while trainer_node trains ...", flush=True)
            report["while_training"] = while_training.run_while_training(
                args, config, model_path, frames, sum(bench_parts(args), []), device, work_dir, dds_profile(args), log)

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
    print_same_run_modes(report)
    if args.json_out is not None:
        args.json_out.parent.mkdir(parents=True, exist_ok=True)
        args.json_out.write_text(json.dumps(report, indent=2, default=str, allow_nan=True))
        print(f"wrote {args.json_out}")
    return 0


__all__ = ["register", "run", "STAGES", "ROS_STAGES", "summarize", "peak_rss_mb", "RATIO_LINE"]
