"""Per-stage wall-clock timings of the pipeline (seconds), synchronising CUDA before every reading."""
from __future__ import annotations

import time
from typing import Dict

import torch


class StageTimer:
    """``timer.tick(stage, start) -> now`` adds ``now - start`` to ``timer.seconds[stage]``."""

    def __init__(self, device) -> None:
        self.device = torch.device(device)
        self.seconds: Dict[str, float] = {}

    def now(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self, stage: str, start: float) -> float:
        now = self.now()
        self.add(stage, now - start)
        return now

    def add(self, stage: str, seconds: float) -> None:
        self.seconds[stage] = self.seconds.get(stage, 0.0) + seconds

    def reset(self) -> None:
        self.seconds = {}
