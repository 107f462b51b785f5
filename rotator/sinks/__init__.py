"""Sinks: deliver each promoted, rolled-back or revoked keyset to where applications read it.

``file`` ships in core; ``kubernetes`` in ``providers/kubernetes`` (``rotator-kubernetes``). Third-party
sinks register in the ``rotator.sinks`` entry-point group. See :mod:`rotator.sinks.base` for the protocol
and :func:`rotator.sinks.reconcile.deliver` for how delivery runs after every engine operation.
"""

from __future__ import annotations

from rotator.sinks.base import (
    ENTRY_POINT_GROUP,
    Content,
    Delivery,
    Sink,
    SinkConfig,
    SinkError,
    SinkSpec,
    build_sink,
    installed_sinks,
    load_sink_class,
)

__all__ = [
    "ENTRY_POINT_GROUP",
    "Content",
    "Delivery",
    "Sink",
    "SinkConfig",
    "SinkError",
    "SinkSpec",
    "build_sink",
    "installed_sinks",
    "load_sink_class",
]

