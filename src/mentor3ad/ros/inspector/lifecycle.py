"""What a lifecycle cleanup takes down with the model: the outputs' publishers, services and actions.

A managed inspector that was cleaned up has no model, so it must not look ready: ``~/result`` (the launch
files' and the README's "ready" signal), ``~/inspection``, the ``~/inspect`` action and the other outputs are
destroyed on cleanup and created again on configure (:meth:`Inspector.destroy_outputs
<mentor3ad.ros.inspector.Inspector.destroy_outputs>`). Outputs do not track what they create, so
:func:`created_entities` records every entity the node gained while they were built and
:func:`destroy_entities` destroys exactly those. :class:`Unconfigured` stands in for the outputs meanwhile.
"""
from __future__ import annotations

import contextlib
from typing import Any, Iterator, List, Tuple

KINDS = ("publishers", "subscriptions", "services", "clients", "timers", "waitables")


def _entities(node: Any) -> List[Tuple[str, Any]]:
    return [(kind, entity) for kind in KINDS for entity in list(getattr(node, kind))]


@contextlib.contextmanager
def created_entities(node: Any) -> Iterator[List[Tuple[str, Any]]]:
    """``with created_entities(node) as created: ...``: ``created`` holds (kind, entity) of every publisher,
    subscription, service, client, timer and waitable (action server) the node gained inside the block."""
    before = {id(entity) for _, entity in _entities(node)}
    created: List[Tuple[str, Any]] = []
    try:
        yield created
    finally:
        created.extend((kind, entity) for kind, entity in _entities(node) if id(entity) not in before)


def destroy_entities(node: Any, entities: List[Tuple[str, Any]]) -> None:
    """Destroy what :func:`created_entities` recorded (an action server through its own ``destroy``)."""
    destroy = {"publishers": node.destroy_publisher, "subscriptions": node.destroy_subscription,
               "services": node.destroy_service, "clients": node.destroy_client, "timers": node.destroy_timer}
    for kind, entity in entities:
        if kind == "waitables":
            if hasattr(entity, "destroy"):
                entity.destroy()
            else:
                node.remove_waitable(entity)
        else:
            destroy[kind](entity)
    entities.clear()


class Unconfigured:
    """The outputs of an unconfigured inspector: nothing is published; a part answered meanwhile (none
    should be: nothing is listening) is logged as an error with its verdict."""

    active: dict = {}
    unavailable: dict = {}

    def __init__(self, logger: Any, reason: str) -> None:
        self.logger, self.reason = logger, reason

    def publish(self, part: Any) -> None:
        self.logger.error(f"a part was answered while unconfigured ({self.reason}): {part.result.verdict} "
                          f"not published")

    def observe(self, pair: Any) -> None:
        pass

    def dropped(self, pair: Any) -> None:
        pass

    def judging(self, pair: Any) -> None:
        pass

    def close(self) -> None:
        pass

    def diagnostics(self) -> list:
        return []

    def describe(self) -> str:
        return f"none ({self.reason})"


__all__ = ["created_entities", "destroy_entities", "Unconfigured"]
