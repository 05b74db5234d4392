"""The inspector's model: the device, the :class:`~mentor3ad.model.serving.ModelSlot`, loads at start-up and
through ``~/reload_model`` (off the executor thread: parts keep being answered while a model loads), and the
package's Python log records routed to the node's ROS logger (a load's warnings once, in its outcome).
Parts that need to know each model served (the record) register with :meth:`ModelService.on_loaded`.

Who may change what the inspector judges with: every load checks, in this order and before the model
serves, that ``model_path`` lies in ``model_directories`` (from the name alone), that the file's sha256 is
in ``model_sha256`` (and still is after the load), :meth:`Detector.load <mentor3ad.model.detector.Detector.load>`'s
own checks (content digest, plausible threshold, self-test), and that the current model-bound parameters
(threshold override, ``min_valid_points``, ``working_volume``) fit the new model
(:func:`~.parameters.model_problem`); a refused file keeps the serving model. ``ros2 param set`` of a
model-bound parameter is refused with the reason when it does not fit the serving model. Every model change
and every change of ``threshold``, ``model_path``, ``min_valid_points`` and ``working_volume`` is logged at
WARN with its source and old -> new."""
from __future__ import annotations

import logging
import threading
from typing import Any, Callable, Dict, List, Optional

from ...errors import ModelLoadError
from ...model.checkpoint import check_model_location
from ...model.integrity import check_pin, file_sha256, parse_pins
from ...model.serving import LoadOutcome, ModelSlot, OutsideLoads
from .. import log_outcome
from .parameters import MODEL_BOUND, model_problem, resolve_device

EMPTY_PATH = "model_path is empty; set it (ros2 param set) and call ~/reload_model"
LOGGED_PARAMETERS = ("threshold", "model_path", "min_valid_points", "working_volume")
PARAMETER_SOURCE = "the parameter service (ros2 param set, a launch file or a node's set_parameters)"


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


_PROPAGATE_BEFORE: List[bool] = []  # the package logger's propagate flag before the first RosLogHandler
_ROUTE_LOCK = threading.Lock()


def route_package_logs(handler: RosLogHandler) -> None:
    """Send the package's Python log records to a node's ROS logger and no longer to the root logger's
    handlers (which would print them a second time); the flag this replaces is kept for
    :func:`unroute_package_logs`."""
    package_logger = logging.getLogger("mentor3ad")
    with _ROUTE_LOCK:
        if not any(isinstance(h, RosLogHandler) for h in package_logger.handlers):
            _PROPAGATE_BEFORE[:] = [package_logger.propagate]
        package_logger.addHandler(handler)
        package_logger.propagate = False


def unroute_package_logs(handler: RosLogHandler) -> None:
    """Undo :func:`route_package_logs` for one node; when no node routes them any more the package's records
    propagate as before (a process that outlives its inspector keeps its logs: nothing is dropped)."""
    package_logger = logging.getLogger("mentor3ad")
    with _ROUTE_LOCK:
        package_logger.removeHandler(handler)
        if not any(isinstance(h, RosLogHandler) for h in package_logger.handlers) and _PROPAGATE_BEFORE:
            package_logger.propagate = _PROPAGATE_BEFORE.pop()


class ModelService:
    """Device + model slot of an inspector node; ``loaded()`` runs after every background load."""

    def __init__(self, node: Any, device: str, loaded: Callable[[], None] = lambda: None) -> None:
        self.node = node
        self.device, self.device_note = resolve_device(device)
        if self.device_note:
            node.get_logger().warning(self.device_note)
        self.slot = ModelSlot(self.device, loader=self._load_checked)
        self._loaded = loaded
        self._listeners: List[Callable[[Any, str], None]] = []
        self._path = ""
        self.sha256 = ""  # of the serving model's file
        self._log_handler = RosLogHandler(node.get_logger())
        route_package_logs(self._log_handler)
        self._values: Dict[str, Any] = {name: node.get_parameter(name).value for name in LOGGED_PARAMETERS}
        if self._values["threshold"] >= 0:
            node.get_logger().warning(f"threshold override {self._values['threshold']:.6g} set by the start-up "
                                      f"parameters: it replaces the model's calibrated threshold")
        node.add_on_set_parameters_callback(self._check_parameters)
        node.add_post_set_parameters_callback(self._log_parameters)

    # ------------------------------------------------------------------ who may change the model
    def _load_checked(self, path: str, device: str) -> Any:
        """ModelSlot's loader: location, pin, Detector.load, the pin again, the parameters' fit."""
        from ...model.detector import Detector

        directories = [d for d in self.node.get_parameter("model_directories").value if d]
        path = str(check_model_location(path, directories))
        pins = parse_pins(self.node.get_parameter("model_sha256").value)
        digest = check_pin(path, pins)
        detector = Detector.load(path, device)
        if pins and file_sha256(path) != digest:
            raise ModelLoadError(f"{path} changed while it was being loaded; load it again")
        problems = [model_problem(name, self.node.get_parameter(name).value, detector) for name in MODEL_BOUND]
        problems = [problem for problem in problems if problem]
        if problems:
            raise ModelLoadError(f"model {detector.model_id} does not fit the inspector's current parameters: "
                                 f"{'; '.join(problems)} (change them first)")
        detector.file_sha256 = digest
        return detector

    def _check_parameters(self, parameters) -> Any:
        """on-set callback: a model-bound parameter must fit the serving model."""
        from rcl_interfaces.msg import SetParametersResult

        detector = self.slot.current()[0]
        for parameter in parameters:
            problem = model_problem(parameter.name, parameter.value, detector)
            if problem:
                self.node.get_logger().warning(f"refused: {problem}")
                return SetParametersResult(successful=False, reason=problem)
        return SetParametersResult(successful=True)

    def _log_parameters(self, parameters) -> None:
        """post-set callback: WARN for every change of what the inspector judges with (old -> new, source)."""
        for parameter in parameters:
            if parameter.name not in self._values:
                continue
            old, new = self._values[parameter.name], parameter.value
            self._values[parameter.name] = new
            if _shown(old) != _shown(new):
                self.node.get_logger().warning(f"parameter {parameter.name} changed: {_shown(old)} -> {_shown(new)} by "
                                               f"{PARAMETER_SOURCE}{self._effect(parameter.name, new)}")

    def _effect(self, name: str, value: Any) -> str:
        detector = self.slot.current()[0]
        if name == "threshold" and detector is not None:
            return (f"; model {detector.model_id}'s calibrated threshold {detector.threshold:.6g} is "
                    f"{'overridden' if value >= 0 else 'in use again'}")
        return "; takes effect at the next ~/reload_model" if name == "model_path" else ""

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

    def forget_listeners(self) -> None:
        """Drop every ``on_loaded`` listener (the outputs that registered them were destroyed)."""
        self._listeners.clear()

    def _tell(self, listener: Callable[[Any, str], None], detector: Any, path: str) -> None:
        try:
            listener(detector, path)
        except Exception as exc:  # noqa: BLE001 - a listener must not fail a load
            self.node.get_logger().error(f"model load listener failed: {type(exc).__name__}: {exc}")

    def waiting_for_first(self) -> bool:
        """The first model is loading (parts wait for it instead of getting ERROR)."""
        return self.slot.loading and self.slot.current()[0] is None

    def load_now(self, path: str, source: str = "start-up") -> LoadOutcome:
        """Load ``path`` on this thread (start-up, lifecycle configure: ``source``); logs the outcome."""
        if not path:
            self.slot.set_missing("no model loaded: parameter model_path is empty")
            outcome = LoadOutcome(False, EMPTY_PATH)
        else:
            before = self.slot.current()[1]
            outcome = self.slot.load(path)
            self._report(outcome, path, before, source)
            return outcome
        self._report(outcome, path)
        return outcome

    def load_in_background(self, path: str, done: Optional[Callable[[LoadOutcome], None]] = None,
                           source: str = "the ~/reload_model service") -> bool:
        """Start loading ``path`` off the executor thread; ``done(outcome)`` runs on the loading thread.
        False when a load is already running."""
        if not path:
            self.load_now(path)
            if done is not None:
                done(LoadOutcome(False, EMPTY_PATH))
            return True
        before = self.slot.current()[1]

        def finished(outcome: LoadOutcome) -> None:
            self._report(outcome, path, before, source)
            self._loaded()
            if done is not None:
                done(outcome)

        return self.slot.load_async(path, finished)

    def _report(self, outcome: LoadOutcome, path: str, before: str = "", source: str = "") -> None:
        log_outcome(self.node.get_logger(), outcome.ok, f"{outcome.message} ({outcome.seconds:.1f} s incl. "
                    f"self-test)" if outcome.ok else outcome.message)
        if outcome.warning:
            self.node.get_logger().warning(outcome.warning)
        detector = self.slot.current()[0] if outcome.ok else None
        if detector is not None:
            self._path = path
            self.sha256 = getattr(detector, "file_sha256", "") or file_sha256(path)
            record = detector.threshold_record
            self.node.get_logger().warning(
                f"model changed: {before or 'none'} -> {detector.model_id} (file {path}, sha256 {self.sha256}, "
                f"threshold {detector.threshold:.6g}: {record.describe() if record is not None else 'no record'}) "
                f"by {source}")
            for listener in list(self._listeners):
                self._tell(listener, detector, path)

    async def _on_reload(self, request, response):
        """~/reload_model: load the current ``model_path`` off the executor thread; answer when done."""
        from rclpy.task import Future

        future = Future(executor=self.node.executor)
        started = self.load_in_background(self.node.get_parameter("model_path").value, future.set_result,
                                          source="the ~/reload_model service")
        if not started:
            response.success, response.message = False, "a model load is already running; try again when it ends"
            return response
        outcome = await future
        response.success, response.message = outcome.ok, outcome.message
        return response

    def close(self) -> None:
        """Stop routing the package's log records to this node (:func:`unroute_package_logs`)."""
        unroute_package_logs(self._log_handler)


def _shown(value: Any) -> str:
    """A parameter value for a log line (lists and rclpy's arrays as lists)."""
    return repr(list(value)) if hasattr(value, "__len__") and not isinstance(value, str) else repr(value)


__all__ = ["ModelService", "RosLogHandler", "route_package_logs", "unroute_package_logs"]
