"""The inspector's outputs: one file each in this package, every one fed every answered part.

A new output (a typed result message, an action server, a recorder, ...) is one module here with one
:class:`Output` subclass decorated with :func:`register_output`; it is found by importing this package's
modules, its ``PARAMETERS`` become node parameters (``--help``, validation, the README table), and from
then on it receives every :class:`~mentor3ad.ros.inspector.part.JudgedPart`. The contract:

* ``name`` (unique, for logs and diagnostics), ``order`` (dispatch order, lower first; ``~/result`` is 0),
  ``PARAMETERS``: list of :class:`~mentor3ad.ros.params.ParamSpec` (read them with :meth:`Output.param`;
  names must not clash with other outputs' or the core's).
* ``__init__(node)``: create publishers, services, action servers, threads. Called when the node creates
  its outputs (plain node: start-up; lifecycle node: configure). Import ROS message packages here or in
  methods, never at module level: the module is imported for its parameters also where a message package
  is missing. A ModuleNotFoundError raised here leaves the output unavailable (logged once, listed in the
  diagnostics' ``outputs`` value) instead of stopping the node.
* ``publish(part)``: every answered part exactly once, PASS / FAIL / ERROR / SKIPPED alike (``part.is_decision``
  tells whether an anomaly map exists). Runs on the inference thread, or on the executor thread for parts
  answered without judging (SKIPPED while disabled or when the queue is full, ERROR for a lone image): keep
  it quick and thread-safe; slow work (disk, network) belongs on the output's own thread. Build costly
  messages only while someone listens (:func:`subscribed`; :class:`ViewOutput` does it for a topic).
* ``observe(pair)`` (optional): every complete input set on arrival, before it is queued (executor thread);
  may set ``pair.part_id``, which the part's result then carries.
* ``dropped(pair)`` (optional): an observed set that will never be answered (``queue_policy: latest``
  replaced it with a newer one, or ``trigger_mode: request`` and no output claimed it: ``pair.requested``).
* ``judging(pair)`` (optional): the worker starts judging an observed set (inference thread; keep it quick).
* ``close()`` (optional): the node shuts down: answer what is pending, stop threads.
* ``diagnostics()`` (optional): ``(level, message, {key: value})`` for the node's ``/diagnostics`` entry
  (level "OK", "WARN" or "ERROR"; the worst level of the node and its outputs wins, a message of a WARN or
  ERROR joins the node's), or None; called on the executor thread every ``diagnostics_period``: keep it quick.

An exception in one output's call is logged and does not keep the part from the other outputs.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import Any, ClassVar, Dict, List, Mapping, Optional, Sequence, Tuple

from ...params import ParamSpec
from ..part import JudgedPart, Pair

_REGISTRY: Dict[str, type] = {}
_BROKEN: Dict[str, str] = {}  # module -> why it could not be imported
_DISCOVERED = False


class Output:
    """Base of an inspector output (see the module docstring for the contract)."""

    name: ClassVar[str] = ""
    order: ClassVar[int] = 50
    PARAMETERS: ClassVar[Sequence[ParamSpec]] = ()

    def __init__(self, node: Any) -> None:
        self.node = node

    def param(self, name: str) -> Any:
        """The current value of parameter ``name`` (follows ``ros2 param set``)."""
        return self.node.get_parameter(name).value

    def observe(self, pair: Pair) -> None:
        """A complete input set arrived (executor thread)."""

    def publish(self, part: JudgedPart) -> None:
        """A part was answered (inference or executor thread)."""
        raise NotImplementedError

    def dropped(self, pair: Pair) -> None:
        """An observed set will never be answered (replaced under ``queue_policy: latest``, or not requested
        under ``trigger_mode: request``)."""

    def judging(self, pair: Pair) -> None:
        """The worker starts judging an observed set (inference thread)."""

    def close(self) -> None:
        """The node shuts down."""

    def diagnostics(self) -> Optional[Tuple[str, str, Mapping[str, Any]]]:
        """(level "OK" | "WARN" | "ERROR", message, {key: value}) for /diagnostics, or None."""
        return None


LEVELS = ("OK", "WARN", "ERROR")  # the levels of Output.diagnostics, least severe first


class ViewOutput(Output):
    """An output built for PASS / FAIL parts only (they have an anomaly map), while its on/off parameter
    ``switch`` is true and someone subscribes: a subclass creates ``self.publisher`` in ``__init__`` and
    builds the message in :meth:`message`."""

    switch: ClassVar[str] = ""
    publisher: Any = None

    def message(self, part: JudgedPart) -> Any:
        raise NotImplementedError

    def publish(self, part: JudgedPart) -> None:
        if part.is_decision and self.param(self.switch) and subscribed(self.publisher):
            self.publisher.publish(self.message(part))


def subscribed(publisher: Any) -> bool:
    """Someone listens to ``publisher`` (volatile outputs with no reader are not built at all)."""
    return publisher.get_subscription_count() > 0


def register_output(cls: type) -> type:
    """Class decorator: make ``cls`` (an :class:`Output` with a unique ``name``) one of the node's outputs."""
    if not (isinstance(cls, type) and issubclass(cls, Output) and cls.name):
        raise TypeError(f"{cls!r} must be an Output subclass with a name")
    if _REGISTRY.get(cls.name, cls) is not cls:
        raise ValueError(f"two inspector outputs are named {cls.name!r}")
    _REGISTRY[cls.name] = cls
    return cls


def output_classes() -> List[type]:
    """Every registered output class, in dispatch order (``order``, then ``name``)."""
    global _DISCOVERED
    if not _DISCOVERED:
        for module in pkgutil.iter_modules(__path__):
            try:
                importlib.import_module(f"{__name__}.{module.name}")
            except Exception as exc:  # noqa: BLE001 - reported by Outputs, the other outputs still work
                _BROKEN[module.name] = f"{type(exc).__name__}: {exc}"
        _DISCOVERED = True
    return sorted(_REGISTRY.values(), key=lambda cls: (cls.order, cls.name))


def collect_parameters(core: Sequence[ParamSpec], classes: Sequence[type]) -> List[ParamSpec]:
    """``core`` + every output's PARAMETERS, in order; ValueError naming a parameter declared twice."""
    specs = list(core)
    for cls in classes:
        specs += list(cls.PARAMETERS)
    names = [spec.name for spec in specs]
    twice = sorted({name for name in names if names.count(name) > 1})
    if twice:
        raise ValueError(f"inspector parameter(s) declared twice (core or outputs): {', '.join(twice)}")
    return specs


class Outputs:
    """The node's outputs, created together; each call reaches every output (see the module docstring)."""

    def __init__(self, node: Any, classes: Sequence[type] = ()) -> None:
        self.logger = node.get_logger()
        self.active: Dict[str, Output] = {}
        self.unavailable: Dict[str, str] = {f"module {name}": why for name, why in _BROKEN.items()}
        for cls in classes or output_classes():
            try:
                self.active[cls.name] = cls(node)
            except ModuleNotFoundError as exc:
                self.unavailable[cls.name] = str(exc)
        for name, why in self.unavailable.items():
            self.logger.warning(f"inspector output {name} unavailable: {why}")

    def __getitem__(self, name: str) -> Output:
        return self.active[name]

    def _each(self, method: str, argument: Any = None) -> None:
        for name, output in self.active.items():
            try:
                getattr(output, method)(*([] if argument is None else [argument]))
            except Exception as exc:  # noqa: BLE001 - one failing output must not cost the others the part
                self.logger.error(f"inspector output {name}: {method} failed: {type(exc).__name__}: {exc}")

    def observe(self, pair: Pair) -> None:
        self._each("observe", pair)

    def publish(self, part: JudgedPart) -> None:
        self._each("publish", part)

    def dropped(self, pair: Pair) -> None:
        self._each("dropped", pair)

    def judging(self, pair: Pair) -> None:
        self._each("judging", pair)

    def close(self) -> None:
        self._each("close")

    def diagnostics(self) -> List[Tuple[str, str, str, Mapping[str, Any]]]:
        """[(output name, level, message, values)] of the outputs that report; an output whose
        diagnostics() fails reports ERROR with the exception."""
        out = []
        for name, output in self.active.items():
            try:
                report = output.diagnostics()
                if report is not None:
                    level, message, values = report
                    out.append((name, level if level in LEVELS else "ERROR", str(message), dict(values)))
            except Exception as exc:  # noqa: BLE001 - one output must not cost the node its diagnostics
                out.append((name, "ERROR", f"diagnostics failed: {type(exc).__name__}: {exc}", {}))
        return out

    def describe(self) -> str:
        """Active outputs, and unavailable ones with the reason (the diagnostics' ``outputs`` value)."""
        text = ", ".join(self.active)
        return text + "".join(f"; unavailable: {name} ({why})" for name, why in self.unavailable.items())


__all__ = ["Output", "ViewOutput", "Outputs", "LEVELS", "register_output", "output_classes", "collect_parameters",
           "subscribed"]
