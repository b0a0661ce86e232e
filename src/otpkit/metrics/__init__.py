"""Prometheus metrics of a node: a send-only API for its processes, one service per node.

Every process of a node reports through :func:`inc`, :func:`gauge`, :func:`observe` and
:func:`forget` - one datagram each, never blocking, a no-op outside a node. The node's
starting program runs the :class:`Service` that keeps the values in a
``prometheus_client`` registry; ``otpkit run`` serves it as ``/metrics`` on the probe
port, and a program that starts a :class:`~otpkit.Node` itself can expose
``node.metrics.registry`` with any of ``prometheus_client``'s exposition helpers.
The metrics, their labels and help texts are :data:`METRICS`.
"""

from otpkit.metrics._catalog import (
    MAX_JOB_LABELS,
    METRICS,
    OTHER_JOBS,
    RUNTIME_JOBS,
    Metric,
)
from otpkit.metrics._send import enabled, forget, forget_all, gauge, inc, observe
from otpkit.metrics._service import MAX_SERIES, Service

__all__ = ["METRICS", "Metric", "Service"]

# the internal surface: what the layers above send through
__all__ += [
    "MAX_JOB_LABELS",
    "MAX_SERIES",
    "OTHER_JOBS",
    "RUNTIME_JOBS",
    "enabled",
    "forget",
    "forget_all",
    "gauge",
    "inc",
    "observe",
]
