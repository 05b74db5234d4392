"""Arguments shared by several commands, and their conversion (config, topics, input mode)."""
from __future__ import annotations

import argparse
from pathlib import Path
from typing import Dict

from ..io.inputs import INPUT_MODES, TOPICS, recorded_topics


def add_config_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--config", type=Path, default=None, help="model YAML (default: the packaged config/model.yaml)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="override a config value (YAML syntax), e.g. --set train.mgm_epochs=20; repeatable")


def add_common_arguments(p: argparse.ArgumentParser, data_required: bool = True) -> None:
    """Arguments shared by ``train`` and ``ablate``."""
    p.add_argument("--data", type=Path, required=data_required,
                   help="MVTec 3D-AD category folder (train/, validation/, test/)")
    add_config_arguments(p)
    p.add_argument("--cache-dir", type=Path, default=None, help="feature cache folder (second runs skip the backbones)")
    p.add_argument("--shots", type=int, default=None, help="train on the first K training samples only (few-shot)")
    p.add_argument("--device", default="cpu", help="torch device (cpu, cuda, cuda:0)")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")


def add_recording_arguments(p: argparse.ArgumentParser) -> None:
    """--input-mode, one --<key>-topic per input topic, --slop-ms (reading rosbag2 recordings)."""
    p.add_argument("--input-mode", default="points", choices=list(INPUT_MODES),
                   help="; ".join(f"{m.name}: {m.description}" for m in INPUT_MODES.values()))
    for key, topic in TOPICS.items():
        p.add_argument(f"--{key.replace('_', '-')}-topic", default=topic.recorded, metavar="TOPIC",
                       help=f"{topic.description} (default {topic.recorded})")
    p.add_argument("--slop-ms", type=float, default=20.0, help="image to 3D data pairing tolerance, ms")


def topics_from_args(args: argparse.Namespace) -> Dict[str, str]:
    return recorded_topics({key: getattr(args, f"{key}_topic", "") for key in TOPICS})


def config_from_args(args: argparse.Namespace):
    """Config from --config (or the packaged default) with --set overrides (ConfigError on bad keys)."""
    from ..config import load_config

    return load_config(args.config, args.overrides)
