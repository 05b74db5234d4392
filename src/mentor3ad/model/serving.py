"""Serving a model that can be replaced while it answers: load off the caller's thread, prove it, swap.

:class:`ModelSlot` holds the detector an inspector uses. :meth:`ModelSlot.load_async` loads a model file
on a background thread (:meth:`mentor3ad.model.detector.Detector.load`: header-first validation, feature
identity, self-test prediction), and only a model that passed all of it replaces the current one, in
one assignment under a lock; a refused file leaves the current model serving. Callers take
``slot.current()`` once per part, so a part in flight finishes on the model it started with.

Warnings emitted while loading (random-init backbones, ...) are collected and reported as ONE line per
load (``LoadOutcome.warning``) instead of one log line per backbone and reload.
"""
from __future__ import annotations

import logging
import threading
import time
from dataclasses import dataclass
from typing import Callable, List, Optional, Tuple

from ..cpu_budget import serial_torch
from ..errors import Mentor3ADError


@dataclass
class LoadOutcome:
    """ok: the model was swapped in; message: one line for a log or a service response; warning: the
    load's collected warnings in one line ("" when none); seconds: load + self-test time."""

    ok: bool
    message: str
    warning: str = ""
    seconds: float = 0.0


_THREAD = threading.local()


class _Collect(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.messages: List[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if getattr(_THREAD, "loading", False):
            self.messages.append(record.getMessage())


class OutsideLoads(logging.Filter):
    """Drops warnings emitted by a loading thread (a handler that forwards the package's log records, e.g.
    to the ROS logger, adds it: those warnings come back once, in ``LoadOutcome.warning``)."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not (getattr(_THREAD, "loading", False) and record.levelno == logging.WARNING)


class ModelSlot:
    """The current detector (or None) and the reason it is missing; thread-safe loads and swaps.

    loader: ``loader(path, device) -> detector`` (default :meth:`Detector.load`, which self-tests).
    """

    def __init__(self, device: str, loader: Optional[Callable] = None) -> None:
        self.device = device
        self._loader = loader
        self._lock = threading.Lock()
        self._detector = None
        self._model_id = ""
        self._path = ""
        self._error = "no model loaded yet"
        self._loading: Optional[threading.Thread] = None

    def current(self) -> Tuple[object, str, str]:
        """(detector or None, model id or "", why there is no model or "")."""
        with self._lock:
            return self._detector, self._model_id, self._error

    @property
    def loading(self) -> bool:
        return self._loading is not None and self._loading.is_alive()

    def clear(self, reason: str) -> None:
        """Drop the current model (e.g. a lifecycle cleanup); ``reason`` is reported until the next load."""
        with self._lock:
            self._detector, self._model_id, self._path, self._error = None, "", "", reason

    def set_missing(self, reason: str) -> None:
        """No model to load (e.g. an empty model_path): record why, keep a model already serving."""
        with self._lock:
            if self._detector is None:
                self._error = reason

    def load(self, path: str) -> LoadOutcome:
        """Load ``path`` on this thread; swap it in when it passed validation and its self-test. The load runs
        torch on this thread alone (:func:`mentor3ad.cpu_budget.serial_torch`)."""
        started = time.perf_counter()
        collector = _Collect()
        package_logger = logging.getLogger("mentor3ad")
        package_logger.addHandler(collector)
        _THREAD.loading = True
        try:
            loader = self._loader
            if loader is None:
                from .detector import Detector

                loader = Detector.load
            with serial_torch():  # a load never starts a second OpenMP team beside the inference thread's
                detector = loader(path, self.device)
        except Exception as exc:  # noqa: BLE001 - a bad file must never take the caller down
            reason = str(exc) if isinstance(exc, Mentor3ADError) else f"{type(exc).__name__}: {exc}"
            message = f"cannot load model {path!r}: {reason}"
            with self._lock:
                keeping = self._model_id
                if self._detector is None:
                    self._error = f"no model loaded: {message}"
            return LoadOutcome(False, message + (f"; keeping model {keeping}" if keeping else ""),
                               seconds=time.perf_counter() - started)
        finally:
            _THREAD.loading = False
            package_logger.removeHandler(collector)
        model_id = detector.model_id
        with self._lock:
            self._detector, self._model_id, self._path, self._error = detector, model_id, path, ""
        warning = ""
        if collector.messages:
            warning = f"model {model_id}: " + "; ".join(dict.fromkeys(collector.messages))
        return LoadOutcome(True, f"loaded model {model_id} from {path} on {self.device}", warning,
                           time.perf_counter() - started)

    def load_async(self, path: str, done: Callable[[LoadOutcome], None]) -> bool:
        """Start :meth:`load` on a background thread and call ``done(outcome)`` from it; False (and no
        call) when a load is already running."""
        with self._lock:
            if self.loading:
                return False

            def run() -> None:
                done(self.load(path))

            self._loading = threading.Thread(target=run, name="model-load", daemon=True)
            self._loading.start()
        return True

    def wait(self, timeout: Optional[float] = None) -> None:
        """Block until a running background load has finished."""
        thread = self._loading
        if thread is not None:
            thread.join(timeout)


__all__ = ["ModelSlot", "LoadOutcome", "OutsideLoads"]
