"""Opt-in per-stage wall-clock timing (seconds): a :class:`StageTimer` passed in, or :data:`NO_TIMER`.

Lower layers (backbones, the feature extractor, the scoring loop) take ``timer=NO_TIMER`` and tick their
stages into whatever timer they are given; only a caller that wants timings (the
:class:`~mentor3ad.model.detector.Detector`, hence ``mentor3ad bench``) passes a real one. On a CUDA
device a :class:`StageTimer` synchronises before every reading, so nobody pays for that unasked.
No torch import unless the device is CUDA.
"""
from __future__ import annotations

import time
from typing import Dict, Optional


class StageTimer:
    """``timer.tick(stage, start) -> now`` adds ``now - start`` to ``timer.seconds[stage]``.

    device: a torch device (or its name); CUDA devices are synchronised before each reading.
    :meth:`prefixed` gives a view that writes ``prefix + stage`` into the same ``seconds``."""

    def __init__(self, device=None, prefix: str = "", seconds: Optional[Dict[str, float]] = None) -> None:
        self.device = device
        self._cuda = str(getattr(device, "type", device) or "").startswith("cuda")
        self.prefix = prefix
        self.seconds: Dict[str, float] = {} if seconds is None else seconds

    def now(self) -> float:
        if self._cuda:
            import torch

            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def tick(self, stage: str, start: float) -> float:
        now = self.now()
        self.add(stage, now - start)
        return now

    def add(self, stage: str, seconds: float) -> None:
        key = self.prefix + stage
        self.seconds[key] = self.seconds.get(key, 0.0) + seconds

    def reset(self) -> None:
        self.seconds.clear()

    def prefixed(self, prefix: str) -> "StageTimer":
        """A view writing ``prefix + stage`` keys into this timer's ``seconds``."""
        return StageTimer(self.device, self.prefix + prefix, self.seconds)


class _NoTimer(StageTimer):
    """Records nothing and reads no clock."""

    def now(self) -> float:
        return 0.0

    def tick(self, stage: str, start: float) -> float:
        return 0.0

    def add(self, stage: str, seconds: float) -> None:
        return None

    def prefixed(self, prefix: str) -> "StageTimer":
        return self


NO_TIMER: StageTimer = _NoTimer()

__all__ = ["StageTimer", "NO_TIMER"]
