"""``mentor3ad bench --while-training``: does the inspector keep pace while the trainer trains beside it?

A real ``trainer_node`` (its default CPU budget unless ``--trainer-threads`` / ``--trainer-nice``) trains on a
recording of the bench's good parts (the embedded synthetic cell, written as a rosbag2 with the bench's
config) while a real ``inspector_node`` (its default budget unless ``--threads``) answers a camera at
``--rate`` parts/s; before that the same camera runs on the idle machine (``--idle-parts``). The ROS side is
:mod:`mentor3ad.ros.tooling.camera_load`. Printed: SKIPPED and answered counts and latency p50 / p99 idle vs
during training (same run), and the trainer's time.
"""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any, Callable, Dict, List, Sequence


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("--while-training: a camera into inspector_node while trainer_node trains")
    g.add_argument("--while-training", action="store_true",
                   help="camera at --rate into a real inspector_node, idle and while a real trainer_node trains "
                        "on the bench's parts on the same machine")
    g.add_argument("--rate", type=float, default=1.0, help="camera rate, parts/s")
    g.add_argument("--idle-parts", type=int, default=20, help="parts the camera sends before the trainer starts")
    g.add_argument("--trainer-threads", type=int, default=None,
                   help="trainer_node's threads parameter (default: the node's own)")
    g.add_argument("--trainer-nice", type=int, default=None,
                   help="trainer_node's nice parameter (default: the node's own)")
    g.add_argument("--max-training-s", type=float, default=3600.0,
                   help="stop the trainer (and the phase) after this many seconds")


def check_arguments(args: argparse.Namespace) -> None:
    if args.while_training and (args.rate <= 0 or args.idle_parts < 1 or args.max_training_s <= 0):
        raise SystemExit("--while-training needs --rate > 0, --idle-parts >= 1 and --max-training-s > 0")


def trainer_command(bag: Path, config_file: Path, out: Path, device: str, args: argparse.Namespace) -> List[str]:
    """trainer_node's command line: the bag, the bench config, cpu/cuda, no cache, the budget options given."""
    from ...ros.tooling.graph import executable

    cmd = [executable("trainer_node"), "--ros-args", "-p", f"bag_paths:=['{bag}']", "-p",
           f"output_model_path:={out}", "-p", f"config_file:={config_file}", "-p", f"device:={device}"]
    for name, value in (("threads", args.trainer_threads), ("nice", args.trainer_nice)):
        if value is not None:
            cmd += ["-p", f"{name}:={value}"]
    return cmd


def run_while_training(args: argparse.Namespace, config, model_path: Path, frames: Sequence, parts: Sequence,
                       device, work_dir: Path, dds_profile, log: Callable[[str], None]) -> Dict[str, Any]:
    """Write the parts as a recording and the config as YAML, run the camera phases -> the report section."""
    import yaml

    from ...io.bags import write_dataset_bag
    from ...io.datasets.synthetic import camera_matrix
    from ...ros.tooling.camera_load import run_while_training as run_phases

    size = parts[0].rgb.shape[:2]
    bag = write_dataset_bag(parts, work_dir / "trainer_bag", camera_info=camera_matrix(size), overwrite=True)
    config_file = work_dir / "trainer_config.yaml"
    config_file.write_text(yaml.safe_dump(config.to_dict(), sort_keys=False))
    cmd = trainer_command(bag, config_file, work_dir / "trainer_model.safetensors", device.type, args)
    inspector_params = {} if args.threads is None else {"threads": args.threads}
    result = run_phases(model_path, frames, cmd, rate=args.rate, idle_parts=args.idle_parts, warmup=args.warmup,
                        device=str(device), inspector_params=inspector_params, timeout=args.ros_timeout,
                        max_training_s=args.max_training_s, log=log, dds_profile=dds_profile)
    for phase in ("idle", "training"):
        section = result[phase]
        section["round_trip"] = latency_summary(section.pop("round_trip_s"))
        section["inspector"] = latency_summary(section.pop("inspector_s"))
    idle, busy = result["idle"]["round_trip"]["p99_ms"], result["training"]["round_trip"]["p99_ms"]
    result["p99_ratio"] = busy / idle if idle > 0 else float("nan")  # NaN stays NaN
    result["training_parts"] = len(parts)
    return result


def latency_summary(series_s: Sequence[float]) -> Dict[str, Any]:
    """:func:`.stages.summarize` plus the 99th percentile (ms; NaN without values) and the raw series (ms)."""
    import numpy as np

    from .stages import summarize

    summary = summarize(series_s)
    summary["p99_ms"] = float(np.percentile(np.asarray(series_s) * 1e3, 99)) if len(series_s) else float("nan")
    summary["series_ms"] = [round(v * 1e3, 3) for v in series_s]
    return summary


def format_while_training(result: Dict[str, Any]) -> str:
    """The printed section: one row per phase, then the goal lines and the trainer's figures."""
    lines = [f"while training: camera at {result['rate']:g} parts/s into inspector_node "
             f"({result['inspector'].get('budget_line') or 'budget not logged'}); trainer_node on "
             f"{result['training_parts']} parts ({result['trainer'].get('budget_line') or 'budget not logged'})",
             "", "| phase | published | answered | PASS | FAIL | ERROR | SKIPPED | unanswered | p50 ms | p99 ms "
             "| max ms | inspector p50 ms |", "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for phase in ("idle", "training"):
        s = result[phase]
        trip = s["round_trip"]
        lines.append(f"| {phase} | {s['published']} | {s['answered']} | {s['PASS']} | {s['FAIL']} | {s['ERROR']} | "
                     f"{s['SKIPPED']} | {s['unanswered']} | {trip['median_ms']:.1f} | {trip['p99_ms']:.1f} | "
                     f"{trip['max_ms']:.1f} | {s['inspector']['median_ms']:.1f} |")
    trainer = result["trainer"]
    job = "n/a" if trainer.get("job_s") is None else f"{trainer['job_s']:.1f} s"
    stopped = ", stopped at --max-training-s" if trainer["stopped"] else ""
    lines += ["", f"SKIPPED while training: {result['training']['SKIPPED']} (goal 0); p99 while training / idle = "
              f"{result['p99_ratio']:.2f}x (goal <= 2x)",
              f"trainer: {trainer['wall_s']:.1f} s wall from process start (exit code {trainer['exit_code']}"
              f"{stopped}), {job} reading + training + saving (its log), nice {trainer.get('nice', 'n/a')}, at most "
              f"{trainer.get('threads', 'n/a')} OS threads"]
    return "\n".join(lines)


__all__ = ["add_arguments", "check_arguments", "run_while_training", "format_while_training", "trainer_command"]
