"""Every metric otpkit exports: its kind, help text, labels and buckets.

The node's processes name a metric of this table when they send an update
(:mod:`otpkit.metrics._send`); the node's service (:mod:`otpkit.metrics._service`)
builds its ``prometheus_client`` collectors from it. A metric not listed here cannot be
sent, so the table is the whole contract with dashboards and alert rules.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

Kind = Literal["counter", "gauge", "histogram"]

#: Run durations: from a second's fraction to an hour.
DURATION_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300, 900, 3600)
#: How late a tick's first attempt started: a timer's jitter up to a fail-over's wait.
LATENESS_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60)

#: The ``job`` label of a job added at run time (its name is not bounded), and of the
#: configuration jobs past the first :data:`MAX_JOB_LABELS` of a scheduler.
RUNTIME_JOBS = "(runtime)"
OTHER_JOBS = "(other)"
MAX_JOB_LABELS = 1000


@dataclass(frozen=True)
class Metric:
    kind: Kind
    help: str
    labels: tuple[str, ...] = ()
    buckets: tuple[float, ...] = ()


_JOB = ("scheduler", "job")

METRICS: dict[str, Metric] = {
    # the scheduler (sent by the holder: one node counts each run)
    "otpkit_job_runs_total": Metric(
        "counter",
        "Runs of a job's ticks that ended, by outcome (finished, failed, interrupted, "
        "timed_out); a retried tick counts once, when it ends",
        (*_JOB, "outcome"),
    ),
    "otpkit_job_run_duration_seconds": Metric(
        "histogram", "How long a job's attempts ran", _JOB, DURATION_BUCKETS
    ),
    "otpkit_job_fire_lateness_seconds": Metric(
        "histogram",
        "How long after its tick's time a tick's first attempt started",
        _JOB,
        LATENESS_BUCKETS,
    ),
    "otpkit_job_ticks_missed_total": Metric(
        "counter", "Ticks that were not run (no holder at their time, misfire policy)", _JOB
    ),
    "otpkit_job_ticks_skipped_total": Metric(
        "counter", "Ticks skipped because the job's previous run was still going", _JOB
    ),
    "otpkit_job_retries_total": Metric(
        "counter", "Attempts of a job that failed and were retried", _JOB
    ),
    "otpkit_pool_queue_depth": Metric(
        "gauge", "Runs waiting in this node's task pool for a free worker", ("scheduler",)
    ),
    "otpkit_pool_running": Metric(
        "gauge", "Runs this node's task pool is running now", ("scheduler",)
    ),
    # singletons and their watchdog
    "otpkit_singleton_holder": Metric(
        "gauge", "1 while this node runs the singleton's child, else 0", ("singleton",)
    ),
    "otpkit_singleton_no_holder": Metric(
        "gauge",
        "1 while this node's watchdog sees no holder of the singleton past its grace",
        ("singleton",),
    ),
    # the quorum of the majority policy
    "otpkit_quorum_members": Metric("gauge", "Members of the quorum's membership"),
    "otpkit_quorum_membership_version": Metric("gauge", "Version of the membership this node has"),
    "otpkit_quorum_has_majority": Metric(
        "gauge", "1 while this node reaches a majority of the members, else 0"
    ),
    "otpkit_quorum_lease_epoch": Metric(
        "gauge", "The newest epoch of a lease this node knows", ("key",)
    ),
    "otpkit_quorum_lease_held": Metric(
        "gauge", "1 while this node holds the lease, else 0", ("key",)
    ),
    # node-to-node links
    "otpkit_dist_link_up": Metric("gauge", "1 while the link to the peer is up", ("peer",)),
    "otpkit_dist_link_changes_total": Metric(
        "counter", "Links to the peer that came up or went down", ("peer", "state")
    ),
    "otpkit_dist_sent_bytes_total": Metric("counter", "Bytes sent to the peer", ("peer",)),
    "otpkit_dist_received_bytes_total": Metric(
        "counter", "Bytes received from the peer", ("peer",)
    ),
    "otpkit_dist_sent_frames_total": Metric("counter", "Frames sent to the peer", ("peer",)),
    "otpkit_dist_received_frames_total": Metric(
        "counter", "Frames received from the peer", ("peer",)
    ),
    # supervision and the registry
    "otpkit_supervisor_restarts_total": Metric(
        "counter", "Children a supervisor restarted", ("supervisor", "child")
    ),
    "otpkit_registry_names": Metric("gauge", "Names in this node's copy of the global registry"),
    # the pipes themselves
    "otpkit_metrics_dropped_total": Metric(
        "counter", "Metric updates the node's service dropped", ("reason",)
    ),
    "otpkit_log_records_dropped_total": Metric(
        "counter", "Log records a process dropped because the node's log writer was full"
    ),
}


def problem(name: str, labels: dict[str, str] | None) -> str | None:
    """Why an update of ``name`` with ``labels`` does not fit the table, or None."""
    metric = METRICS.get(name)
    if metric is None:
        return f"unknown metric {name!r}"
    given = tuple(sorted(labels or ()))
    if given != tuple(sorted(metric.labels)):
        return f"{name}: labels {list(given)}, expected {list(metric.labels)}"
    return None
