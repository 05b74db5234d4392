"""The inspector node's behaviour, composed of parts; the plain and the lifecycle node
(:mod:`mentor3ad.ros.nodes.inspector`) each own one :class:`Inspector`:

* parameters: :data:`INSPECTOR_PARAMETERS`, the core ones (:mod:`.parameters`) and each output's;
* model: :class:`.model_service.ModelService` (device, ModelSlot, ``~/reload_model``, log routing);
* intake: :class:`.intake.Intake` (subscriptions, pairing; every image ends in exactly one answer);
* worker: :class:`.worker.Worker` (bounded queue, queue policy, batches of up to ``batch_size``) judging
  with :class:`.pipeline.InspectionPipeline` on its own thread;
* outputs: :class:`.outputs.Outputs` (``~/inspection``, ``~/result``, the ``~/inspect`` action, ``~/part_id``,
  ``~/anomaly_map``, ``~/overlay``, ``~/markers`` and whatever else :mod:`.outputs` holds), each fed every
  :class:`.part.JudgedPart`;
* health: :class:`.health.Health` (counters, ``/diagnostics``); the ``~/enable`` service.

Every answer goes through :meth:`Inspector.answer`: judged (PASS / FAIL / ERROR), SKIPPED (disabled,
queue full) or ERROR (lone image, internal error). ``trigger_mode: request``: only the sets an output claims
(``Pair.requested``: the ``~/inspect`` action's goals) are judged and answered; the others are handed to
``Outputs.dropped`` (counted there), lone images only counted by the intake.
"""
from __future__ import annotations

import os
import time
from typing import Any, Dict, List, Optional

from ...cpu_budget import parallel_torch_thread
from ...errors import ConfigError
from ...io.inputs import InputChecks, WorkingVolume, input_mode
from ...types import InspectionResult
from ..params import declare_parameters, install_validation
from .health import Health
from .model_service import ModelService
from .outputs import Outputs, collect_parameters, output_classes
from .parameters import CORE_PARAMETERS, input_qos
from .part import JudgedPart, Pair
from .pipeline import InspectionPipeline
from .worker import Worker

INSPECTOR_PARAMETERS = collect_parameters(CORE_PARAMETERS, output_classes())


class Inspector:
    """The parts of one inspector node (see the module docstring). ``node``: rclpy Node or LifecycleNode.
    The node calls :meth:`create_outputs` once, then :meth:`start_listening` / :meth:`stop_listening`, and
    :meth:`stop` before it is destroyed."""

    def __init__(self, node: Any) -> None:
        self.node = node
        self.p = declare_parameters(node, INSPECTOR_PARAMETERS)
        install_validation(node, INSPECTOR_PARAMETERS)
        self.mode = input_mode(self.p["input_mode"])
        self.on_request = self.p["trigger_mode"] == "request"
        self.model = ModelService(node, self.p["device"], loaded=lambda: self.worker.wake())
        self.pipeline = InspectionPipeline(self.mode, int(self.p["min_valid_points"]))
        self.worker = Worker(self.judge, self._refuse, self.p["queue_policy"], int(self.p["queue_size"]),
                             int(self.p["batch_size"]), drop=self._dropped,
                             ready=lambda: not self.model.waiting_for_first(), on_crash=self._crashed,
                             setup=self._own_torch_threads)
        self.health = Health(self)
        self.outputs: Optional[Outputs] = None
        self.intake = None
        self.enabled = True
        self.started = time.monotonic()
        self.unconfigured = False  # a lifecycle node before configure / after cleanup: no model, no outputs
        self._services = False
        self._judging = 0
        self._checks_key: Optional[tuple] = None

    # ------------------------------------------------------------------ outputs and services
    def create_outputs(self) -> None:
        """The outputs; the first time also ``~/reload_model``, ``~/enable``, ``/diagnostics`` and the worker
        thread. A lifecycle node calls it on every configure (after :meth:`destroy_outputs` on cleanup)."""
        from rclpy.callback_groups import MutuallyExclusiveCallbackGroup
        from std_srvs.srv import SetBool

        from .lifecycle import created_entities

        with created_entities(self.node) as self._output_entities:
            outputs = Outputs(self.node)
        if self.on_request and "inspect" not in outputs.active:
            raise ConfigError("trigger_mode: request needs the ~/inspect action, which is unavailable: "
                              f"{outputs.unavailable.get('inspect', 'not registered')}")
        self.outputs, self.unconfigured = outputs, False
        if self._services:
            return
        self._services = True
        services = MutuallyExclusiveCallbackGroup()
        self.model.create_service(services)
        self.node.create_service(SetBool, "~/enable", self._on_enable, callback_group=services)
        self.health.start(float(self.p["diagnostics_period"]))
        self.worker.start()

    def _on_enable(self, request, response):
        self.enabled = bool(request.data)
        response.success = True
        response.message = "inspection enabled" if self.enabled else "inspection disabled (pairs get SKIPPED)"
        self.node.get_logger().info(response.message)
        return response

    # ------------------------------------------------------------------ input
    def start_listening(self) -> None:
        """Subscribe to the inputs (and answer every image from now on)."""
        from rclpy.qos_overriding_options import QoSOverridingOptions

        from .intake import Intake

        if self.intake is None:
            self.intake = Intake(self.node, self.mode, input_qos(self.p["input_reliability"], self.p["input_depth"]),
                                 self._on_pair, self._on_lone, int(self.p["sync_queue_size"]),
                                 float(self.p["sync_slop"]), float(self.node.get_parameter("pair_timeout").value),
                                 QoSOverridingOptions.with_default_policies(),
                                 max_bytes=int(self.p["input_queue_mb"]) * 2 ** 20)

    def stop_listening(self) -> None:
        if self.intake is not None:
            self.intake.close()
            self.intake = None

    def _on_pair(self, messages: Dict[str, Any], received: float) -> None:
        """Intake callback (executor thread): queue, never infer here."""
        self.health.received(received)
        pair = Pair(messages, received)
        self.outputs.observe(pair)
        if self.on_request and not pair.requested:
            self.outputs.dropped(pair)  # no goal asked for it
            return
        if not self.enabled:
            self.answer(pair, InspectionResult.skipped("inspection disabled (~/enable)"))
            return
        self.worker.submit(pair)

    def _on_lone(self, image: Any, reason: str) -> None:
        """Intake callback: an image whose 3D data never came (request mode: no goal can claim it; counted
        by the intake as ``lone_images``)."""
        self.health.received()
        if self.on_request:
            return
        self.answer(Pair({"image": image}, time.monotonic()), InspectionResult.error(reason))

    def _refuse(self, pair: Pair, reason: str) -> None:
        self.answer(pair, InspectionResult.skipped(reason))

    def _dropped(self, pair: Pair) -> None:
        self.outputs.dropped(pair)

    # ------------------------------------------------------------------ judging (worker thread)
    def _input_checks(self) -> InputChecks:
        """The current working_volume / require_same_frame parameters as InputChecks (cached by value)."""
        key = (tuple(self.node.get_parameter("working_volume").value),
               bool(self.node.get_parameter("require_same_frame").value))
        if self._checks_key != key:
            self._checks_key, self._checks = key, InputChecks(WorkingVolume.from_list(key[0]), key[1])
        return self._checks

    def judge(self, batch: List[Pair]) -> None:
        """Judge ``batch`` with the current model and answer each pair (the worker's task)."""
        self._judging += 1
        try:
            self._judge(batch)
        finally:
            self._judging -= 1

    @property
    def idle(self) -> bool:
        """No pair waiting for or in the worker."""
        return self.worker.queued == 0 and self._judging == 0

    def _judge(self, batch: List[Pair]) -> None:
        detector, model_id, model_error = self.model.slot.current()
        override = float(self.node.get_parameter("threshold").value)
        self.pipeline.min_valid_points = int(self.node.get_parameter("min_valid_points").value)
        self.pipeline.checks = self._input_checks()
        for pair in batch:
            self.outputs.judging(pair)
        judged = self.pipeline.judge(detector, [pair.messages for pair in batch],
                                     override if override >= 0.0 else None, model_error)
        for pair, (result, rgb) in zip(batch, judged):
            self.answer(pair, result.replace(model_id=result.model_id or model_id), rgb)

    def _own_torch_threads(self) -> None:
        """First thing on the inference thread: it runs torch with the node's CPU budget, the only OpenMP team
        of the process (model loads run torch serially: :func:`mentor3ad.cpu_budget.serial_torch`)."""
        budget = getattr(self.node, "cpu_budget", None)
        threads = budget.threads if budget is not None else (os.cpu_count() or 1)
        try:
            parallel_torch_thread(threads)
        except Exception as exc:  # noqa: BLE001 - a thread setting must never stop the inference thread
            self.node.get_logger().warning(f"inference thread: torch threads not set ({exc}); parts are judged "
                                           "with torch's default")
            return
        self.node.get_logger().info(f"inference thread: torch threads {threads} (model loads run torch on 1: "
                                    "one OpenMP team in the process)")

    def _crashed(self, batch: List[Pair], exc: Exception) -> None:
        self.node.get_logger().error(f"processing failed: {type(exc).__name__}: {exc}")
        for pair in batch:
            self.answer(pair, InspectionResult.error(f"internal error: {type(exc).__name__}: {exc}"))

    # ------------------------------------------------------------------ answers
    def answer(self, pair: Pair, result: InspectionResult, rgb=None) -> None:
        """The one way a part is answered: transport fields set, counted, handed to every output."""
        result = result.replace(latency_ms=(time.monotonic() - pair.received) * 1e3,
                                model_id=result.model_id or self.model.slot.current()[1],
                                part_id=result.part_id or pair.part_id)
        self.health.answered(result)
        key_3d = self.mode.topic_keys[0]
        header_3d = pair.messages[key_3d].header if key_3d in pair.messages else None
        self.outputs.publish(JudgedPart(result, pair.header, pair.messages, rgb, header_3d, pair.received))

    def destroy_outputs(self, reason: str) -> None:
        """Lifecycle cleanup: wait (up to 10 s) until the worker has answered what it holds, close the outputs
        and destroy the publishers, services and actions they created (``~/result``, the "ready" signal, goes
        with the model); until the next :meth:`create_outputs` nothing is published but /diagnostics."""
        from .lifecycle import Unconfigured, destroy_entities

        deadline = time.monotonic() + 10.0
        while not self.idle and time.monotonic() < deadline:
            time.sleep(0.02)
        if self.outputs is not None:
            self.outputs.close()
        self.model.forget_listeners()
        destroy_entities(self.node, getattr(self, "_output_entities", []))
        self.outputs, self.unconfigured = Unconfigured(self.node.get_logger(), reason), True

    def stop(self) -> None:
        """Stop the worker (after the batch in flight), tell the outputs, stop routing log records."""
        self.worker.stop()
        if self.outputs is not None:
            self.outputs.close()
        self.model.close()


__all__ = ["Inspector", "INSPECTOR_PARAMETERS"]
