"""The inspector, built from parts (:mod:`.inspector` composes them; the node classes are in
:mod:`mentor3ad.ros.nodes.inspector`):

* :mod:`.parameters`: the core parameters, device resolution, input QoS;
* :mod:`.model_service`: the model slot, loads and ``~/reload_model``;
* :mod:`.intake`: subscriptions and pairing, one outcome per image;
* :mod:`.worker`: the bounded queue and the inference thread (queue policies, batches);
* :mod:`.pipeline`: convert and judge (also timed by ``mentor3ad bench``);
* :mod:`.part`: :class:`~.part.Pair` (waiting) and :class:`~.part.JudgedPart` (what outputs receive);
* :mod:`.outputs`: the outputs registry, one file per output (contract in its docstring);
* :mod:`.health`: counters and ``/diagnostics``.
"""
from .inspector import INSPECTOR_PARAMETERS, Inspector
from .parameters import RELIABILITIES, resolve_device

__all__ = ["Inspector", "INSPECTOR_PARAMETERS", "RELIABILITIES", "resolve_device"]
