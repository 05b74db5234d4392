"""The inspector's model: the device, the :class:`~mentor3ad.model.serving.ModelSlot`, loads at start-up and
through ``~/reload_model`` (off the executor thread: parts keep being answered while a model loads), and the
package's Python log records routed to the node's ROS logger (a load's warnings once, in its outcome).
Parts that need to know each model served (the record) register with :meth:`ModelService.on_loaded`."""
from __future__ import annotations

import logging
from typing import Any, Callable, List, Optional

from ...model.serving import LoadOutcome, ModelSlot, OutsideLoads
from .. import log_outcome
from .parameters import resolve_device

EMPTY_PATH = "model_path is empty; set it (ros2 param set) and call ~/reload_model"


class RosLogHandler(logging.Handler):
    """Python log records of the package -> the node's ROS logger (one call site per severity)."""

    def __init__(self, logger: Any) -> None:
        super().__init__(logging.INFO)
        self.ros_logger = logger
        self.addFilter(OutsideLoads())

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if record.levelno >= logging.ERROR:
            self.ros_logger.error(text)
        elif record.levelno >= logging.WARNING:
            self.ros_logger.warning(text)
        else:
            self.ros_logger.debug(text)


class ModelService:
    """Device + model slot of an inspector node; ``loaded()`` runs after every background load."""

    def __init__(self, node: Any, device: str, loaded: Callable[[], None] = lambda: None) -> None:
        self.node = node
        self.device, self.device_note = resolve_device(device)
        if self.device_note:
            node.get_logger().warning(self.device_note)
        self.slot = ModelSlot(self.device)
        self._loaded = loaded
        self._listeners: List[Callable[[Any, str], None]] = []
        self._path = ""
        self._log_handler = RosLogHandler(node.get_logger())
        package_logger = logging.getLogger("mentor3ad")
        package_logger.addHandler(self._log_handler)
        package_logger.propagate = False

    def create_service(self, callback_group: Any = None) -> None:
        """``~/reload_model`` (std_srvs/Trigger)."""
        from std_srvs.srv import Trigger

        self.node.create_service(Trigger, "~/reload_model", self._on_reload, callback_group=callback_group)

    def on_loaded(self, listener: Callable[[Any, str], None]) -> None:
        """``listener(detector, path)`` after every successful load from now on (on the loading thread), and
        at once for the model serving now."""
        self._listeners.append(listener)
        detector = self.slot.current()[0]
        if detector is not None:
            self._tell(listener, detector, self._path)

    def _tell(self, listener: Callable[[Any, str], None], detector: Any, path: str) -> None:
        try:
            listener(detector, path)
        except Exception as exc:  # noqa: BLE001 - a listener must not fail a load
            self.node.get_logger().error(f"model load listener failed: {type(exc).__name__}: {exc}")

    def waiting_for_first(self) -> bool:
        """The first model is loading (parts wait for it instead of getting ERROR)."""
        return self.slot.loading and self.slot.current()[0] is None

    def load_now(self, path: str) -> LoadOutcome:
        """Load ``path`` on this thread (start-up, lifecycle configure); logs the outcome."""
        if not path:
            self.slot.set_missing("no model loaded: parameter model_path is empty")
            outcome = LoadOutcome(False, EMPTY_PATH)
        else:
            outcome = self.slot.load(path)
        self._report(outcome, path)
        return outcome

    def load_in_background(self, path: str, done: Optional[Callable[[LoadOutcome], None]] = None) -> bool:
        """Start loading ``path`` off the executor thread; ``done(outcome)`` runs on the loading thread.
        False when a load is already running."""
        if not path:
            self.load_now(path)
            if done is not None:
                done(LoadOutcome(False, EMPTY_PATH))
            return True

        def finished(outcome: LoadOutcome) -> None:
            self._report(outcome, path)
            self._loaded()
            if done is not None:
                done(outcome)

        return self.slot.load_async(path, finished)

    def _report(self, outcome: LoadOutcome, path: str) -> None:
        log_outcome(self.node.get_logger(), outcome.ok, f"{outcome.message} ({outcome.seconds:.1f} s incl. "
                    f"self-test)" if outcome.ok else outcome.message)
        if outcome.warning:
            self.node.get_logger().warning(outcome.warning)
        detector = self.slot.current()[0] if outcome.ok else None
        if detector is not None:
            self._path = path
            for listener in list(self._listeners):
                self._tell(listener, detector, path)

    async def _on_reload(self, request, response):
        """~/reload_model: load the current ``model_path`` off the executor thread; answer when done."""
        from rclpy.task import Future

        future = Future(executor=self.node.executor)
        started = self.load_in_background(self.node.get_parameter("model_path").value, future.set_result)
        if not started:
            response.success, response.message = False, "a model load is already running; try again when it ends"
            return response
        outcome = await future
        response.success, response.message = outcome.ok, outcome.message
        return response

    def close(self) -> None:
        """Stop routing the package's log records to this node."""
        logging.getLogger("mentor3ad").removeHandler(self._log_handler)


__all__ = ["ModelService", "RosLogHandler"]
