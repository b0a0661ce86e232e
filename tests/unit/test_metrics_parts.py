"""What the cluster's parts send to the node's metrics: the supervisors' restart labels,
the singleton's holder and no-holder gauges, and the quorum's membership and leases.

The pure parts are driven directly (the quorum's cores on the simulated network of
``test_quorum``, the singleton's watchdog), and the shells' send steps on them read
through a real :class:`otpkit.metrics.Service` in this process with
``prometheus_client``'s own parser, as Prometheus reads ``/metrics``. The dist links,
the registry and the supervisors' restarts on real processes are
``tests/cluster/test_metrics_parts_loopback.py``'s.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest

from otpkit import metrics
from otpkit.quorum._actor import Quorum, metric_values
from otpkit.quorum._core import QuorumCore
from otpkit.registry._singleton import SingletonManager
from otpkit.registry._watchdog import ReportBack, ReportMissing, Watch, watch_step
from otpkit.supervision._supervisor import DYNAMIC_CHILD, restart_labels
from tests.harness import metrics_read
from tests.harness.polling import wait_for
from tests.unit.test_quorum import FAST, NAMES, Sim, formed

BOUND = 20.0  # seconds: a loaded 2-core machine


@pytest.fixture
def service() -> Iterator[metrics.Service]:
    yield from metrics_read.running_service()


def value(svc: metrics.Service, name: str, **labels: str) -> float | None:
    return metrics_read.value(metrics_read.read(svc), name, **labels)


def wait_value(svc: metrics.Service, name: str, want: float, **labels: str) -> None:
    wait_for(
        lambda: value(svc, name, **labels) == want,
        BOUND,
        f"{name}{labels} == {want}",
        diagnose=lambda: f"it is {value(svc, name, **labels)}",
    )


# ---------------------------------------------------------------------- supervision


def test_restart_labels_name_the_supervisor_by_name_then_id_then_class() -> None:
    assert restart_labels(["app_sup"], "app", "Supervisor", "worker", False) == {
        "supervisor": "app_sup",
        "child": "worker",
    }
    assert restart_labels([], ("scheduler", "jobs"), "Supervisor", "pool", False) == {
        "supervisor": "('scheduler', 'jobs')",
        "child": "pool",
    }
    # started by no supervisor (the kernel): its class
    assert restart_labels([], None, "Kernel", "global", False) == {
        "supervisor": "Kernel",
        "child": "global",
    }


def test_restart_labels_are_bounded() -> None:
    """A DynamicSupervisor's children (ids of the caller's choosing, maybe one per
    request) share one label; any value is cut to fit the service's 256 characters."""
    labels = {
        restart_labels([], "conns", "DynamicSupervisor", ("conn", i), True)["child"]
        for i in range(1000)
    }
    assert labels == {DYNAMIC_CHILD}
    long = restart_labels([], "x" * 1000, "Supervisor", ("y",) * 500, False)
    assert len(long["supervisor"]) == 200 and len(long["child"]) == 200


# ---------------------------------------------------------------------- singleton


def test_watch_misses_a_holder_from_the_error_until_one_is_seen() -> None:
    term = 3.5
    watch = Watch(0.0, not_before=5.0)
    watch, report = watch_step(watch, 5.0, False, 3, 2, term)
    assert report is None and not watch.missing
    watch, report = watch_step(watch, 5.0 + 2 * term, False, 3, 2, term)
    assert report is None and not watch.missing  # within the grace
    watch, report = watch_step(watch, 5.1 + 2 * term, False, 3, 2, term)
    assert isinstance(report, ReportMissing) and watch.missing
    # the majority goes: no more lines, but the holder is still missing
    watch, report = watch_step(watch, 20.0, False, 1, 2, term)
    assert report is None and watch.missing
    watch, report = watch_step(watch, 21.0, True, 3, 2, term)
    assert isinstance(report, ReportBack) and not watch.missing


def manager(name: object) -> SingletonManager:
    """A manager's state as its ``setup`` makes it (no process: its gauges only)."""
    m = SingletonManager.__new__(SingletonManager)
    m.active = False
    m.watch = Watch(0.0)
    m.label = name if isinstance(name, str) else repr(name)
    m.sent = {}
    return m


def test_singleton_gauges_follow_the_manager(service: metrics.Service) -> None:
    m = manager("jobs")
    m._send_gauges()
    wait_value(service, "otpkit_singleton_holder", 0, singleton="jobs")
    assert value(service, "otpkit_singleton_no_holder", singleton="jobs") == 0
    m.watch = replace(m.watch, reported=12.0)  # the watchdog's ERROR line
    m._send_gauges()
    wait_value(service, "otpkit_singleton_no_holder", 1, singleton="jobs")
    m.active, m.watch = True, Watch(13.0)  # elected here: a holder is seen
    m._send_gauges()
    wait_value(service, "otpkit_singleton_holder", 1, singleton="jobs")
    wait_value(service, "otpkit_singleton_no_holder", 0, singleton="jobs")
    assert m.sent == {"otpkit_singleton_holder": 1.0, "otpkit_singleton_no_holder": 0.0}
    m._send_gauges(stopped=True)  # the manager stops: it holds nothing
    wait_value(service, "otpkit_singleton_holder", 0, singleton="jobs")


# ---------------------------------------------------------------------- quorum


def test_quorum_values_show_membership_majority_and_leases() -> None:
    sim = formed()
    a = sim.cores["a@h"]
    values = metric_values(a)
    assert values[("otpkit_quorum_members", None)] == 3
    assert a.version >= 1
    assert values[("otpkit_quorum_membership_version", None)] == a.version
    assert values[("otpkit_quorum_has_majority", None)] == 1
    assert not [k for k in values if k[1] is not None]  # no lease yet
    token = sim.acquire("a@h", "singleton/jobs")
    sim.settle(0.3)
    epoch = sim.replies[token].epoch
    holder, member = metric_values(a), metric_values(sim.cores["b@h"])
    assert holder[("otpkit_quorum_lease_held", "singleton/jobs")] == 1
    assert holder[("otpkit_quorum_lease_epoch", "singleton/jobs")] == epoch
    assert member[("otpkit_quorum_lease_held", "singleton/jobs")] == 0  # it granted it
    assert member[("otpkit_quorum_lease_epoch", "singleton/jobs")] == epoch
    # cut off from both others: no majority, and the lease runs out
    sim.set_link("a@h", "b@h", False)
    sim.set_link("a@h", "c@h", False)
    sim.settle(2 * (FAST.term + FAST.margin))
    cut = metric_values(a)
    assert cut[("otpkit_quorum_has_majority", None)] == 0
    assert cut[("otpkit_quorum_lease_held", "singleton/jobs")] == 0


def test_quorum_sends_what_changed_and_forgets_unknown_keys(service: metrics.Service) -> None:
    sim = formed()
    quorum = Quorum.__new__(Quorum)  # the actor's send step on a live core
    quorum.core, quorum.sent = sim.cores["a@h"], {}
    quorum._send_metrics()
    wait_value(service, "otpkit_quorum_members", 3)
    wait_value(service, "otpkit_quorum_has_majority", 1)
    sim.acquire("a@h", "singleton/jobs")
    sim.settle(0.3)
    quorum._send_metrics()
    wait_value(service, "otpkit_quorum_lease_held", 1, key="singleton/jobs")
    assert quorum.sent == metric_values(quorum.core)
    # a new member without a store (a restart) knows no lease: the key's series go
    quorum.core = QuorumCore(("a@h", 2), FAST, sim.now, state=None)
    quorum._send_metrics()
    wait_value(service, "otpkit_quorum_members", 0)
    assert value(service, "otpkit_quorum_lease_held", key="singleton/jobs") is None
    assert value(service, "otpkit_quorum_lease_epoch", key="singleton/jobs") is None


def test_quorum_values_of_a_lone_node_before_a_configuration() -> None:
    sim = Sim(NAMES[:1], FAST)
    values = metric_values(sim.cores["a@h"])
    assert values[("otpkit_quorum_members", None)] == 0
    assert values[("otpkit_quorum_has_majority", None)] == 0
