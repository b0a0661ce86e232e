"""The node's metrics service and the send-only API (``otpkit.metrics``): updates from
any process land in a ``prometheus_client`` registry; what is not an update of a listed
metric is dropped and counted, never applied; the series of one metric are bounded."""

from __future__ import annotations

import socket

import msgpack
import pytest

from otpkit import metrics
from otpkit.metrics import _send, _service
from tests.harness import metrics_read
from tests.harness.polling import wait_for


def samples(service: metrics.Service) -> metrics_read.Series:
    return metrics_read.read(service)


def value(service: metrics.Service, name: str, **labels: str) -> float | None:
    return metrics_read.value(samples(service), name, **labels)


@pytest.fixture
def service():
    yield from metrics_read.running_service()


def test_updates_reach_the_registry(service):
    metrics.inc("otpkit_job_runs_total", {"scheduler": "s", "job": "j", "outcome": "finished"}, 2)
    metrics.gauge("otpkit_quorum_members", None, 3)
    metrics.observe("otpkit_job_run_duration_seconds", {"scheduler": "s", "job": "j"}, 0.3)
    wait_for(lambda: value(service, "otpkit_quorum_members") == 3.0, 5, "the gauge", interval=0.01)
    assert value(service, "otpkit_job_runs_total", scheduler="s", job="j", outcome="finished") == 2
    assert value(service, "otpkit_job_run_duration_seconds_count", scheduler="s", job="j") == 1
    metrics.forget("otpkit_job_run_duration_seconds", {"scheduler": "s", "job": "j"})
    wait_for(
        lambda: (
            value(service, "otpkit_job_run_duration_seconds_count", scheduler="s", job="j") is None
        ),
        5,
        "the series gone",
    )


def test_a_mistake_of_the_caller_raises_and_no_service_is_a_no_op():
    assert not metrics.enabled()
    metrics.inc("otpkit_job_runs_total", {"scheduler": "s", "job": "j", "outcome": "x"})
    with pytest.raises(ValueError, match="unknown metric"):
        _send.attach(socket.socketpair()[0])
        try:
            metrics.inc("no_such_metric")
        finally:
            _send.attach(None)
    svc = metrics.Service()
    try:
        with pytest.raises(ValueError, match="labels"):
            metrics.gauge("otpkit_singleton_holder", {"name": "x"}, 1)
    finally:
        svc.close()


@pytest.mark.parametrize(
    "data",
    [
        b"\xc1",
        msgpack.packb([1, "otpkit_quorum_members", []]),
        msgpack.packb([9, "otpkit_quorum_members", [], 1.0]),
        msgpack.packb([1, "nope", [], 1.0]),
        msgpack.packb([1, "otpkit_singleton_holder", [], 1.0]),
        msgpack.packb([1, "otpkit_singleton_holder", [1], 1.0]),
        msgpack.packb([2, "otpkit_quorum_members", [], float("nan")]),
        msgpack.packb([2, "otpkit_quorum_members", [], "3"]),
    ],
)
def test_a_malformed_update_is_dropped_and_counted(service, data):
    assert service.apply(data) is False
    assert value(service, "otpkit_metrics_dropped_total", reason="malformed") == 1


def test_a_counter_never_goes_down_and_only_a_gauge_is_set(service):
    assert not service.apply(msgpack.packb([1, "otpkit_dist_sent_bytes_total", ["p"], -5.0]))
    assert not service.apply(msgpack.packb([2, "otpkit_dist_sent_bytes_total", ["p"], 5.0]))
    assert not service.apply(msgpack.packb([3, "otpkit_quorum_members", [], 5.0]))
    assert value(service, "otpkit_metrics_dropped_total", reason="malformed") == 3


def test_the_series_of_one_metric_are_bounded(service, monkeypatch):
    monkeypatch.setattr(_service, "MAX_SERIES", 3)
    for i in range(5):
        service.apply(msgpack.packb([2, "otpkit_dist_link_up", [f"p{i}"], 1.0]))
    got = [k for k in samples(service) if k[0] == "otpkit_dist_link_up"]
    assert len(got) == 3
    assert value(service, "otpkit_metrics_dropped_total", reason="series") == 2
    # a known series still updates
    assert service.apply(msgpack.packb([2, "otpkit_dist_link_up", ["p0"], 0.0]))
    assert value(service, "otpkit_dist_link_up", peer="p0") == 0.0


def test_a_restarted_owner_clears_what_its_previous_incarnation_set(service):
    for peer in ("a", "b"):
        metrics.gauge("otpkit_dist_link_up", {"peer": peer}, 1)
    wait_for(lambda: value(service, "otpkit_dist_link_up", peer="b") == 1, 5, "two links")
    assert metrics.forget_all("otpkit_dist_link_up")
    metrics.gauge("otpkit_dist_link_up", {"peer": "c"}, 1)
    wait_for(lambda: value(service, "otpkit_dist_link_up", peer="c") == 1, 5, "the new link")
    assert value(service, "otpkit_dist_link_up", peer="a") is None
    assert value(service, "otpkit_dist_link_up", peer="b") is None


def test_a_dropped_update_is_reported_to_the_sender_and_counted(service):
    # the service stops reading: the socket's queue fills, then sends fail at once (no
    # sync from here on: the service's thread is gone; the registry is read as it is)
    service._stopping = True
    service._thread.join(2)
    sent = [metrics.gauge("otpkit_quorum_members", None, i) for i in range(20_000)]
    assert sent[0] and not sent[-1]
    dropped = sent.count(False)
    # reading again: the count of dropped updates arrives with the next one that fits
    while service._recv.recv(8192, socket.MSG_DONTWAIT) if _pending(service) else False:
        pass
    assert metrics.gauge("otpkit_quorum_members", None, 7)
    while _pending(service):
        service.apply(service._recv.recv(8192))
    assert (
        metrics_read.value(
            metrics_read.parse(service.exposition()), "otpkit_metrics_dropped_total", reason="full"
        )
        == dropped
    )
    assert (
        metrics_read.value(metrics_read.parse(service.exposition()), "otpkit_quorum_members") == 7
    )


def _pending(service: metrics.Service) -> bool:
    import select  # noqa: PLC0415

    return bool(select.select([service._recv], [], [], 0)[0])


def test_sync_waits_for_what_was_sent_before(service):
    for i in range(500):
        metrics.gauge("otpkit_quorum_members", None, i)
    assert service.sync()
    assert value(service, "otpkit_quorum_members") == 499
    # a malformed sync is a malformed update
    assert not service.apply(msgpack.packb([6, "x", [], 1.0]))
