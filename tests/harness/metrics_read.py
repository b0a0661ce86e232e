"""Reading a node's metrics in tests: ``/metrics`` parsed with ``prometheus_client``'s own
parser (never a regex on the text), a sample looked up by name and labels, and a
metrics service of the test's own process."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client.parser import text_string_to_metric_families

from otpkit import metrics

#: Every sample of a ``/metrics`` text: ``(name, sorted labels) -> value``.
Series = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def parse(text: str | bytes) -> Series:
    if isinstance(text, bytes):
        text = text.decode()
    out: Series = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = float(s.value)
    return out


def value(series: Series, name: str, **labels: str) -> float | None:
    """The sample ``name{labels}`` (exactly those labels), or None."""
    return series.get((name, tuple(sorted(labels.items()))))


def read(svc: metrics.Service) -> Series:
    """The samples of ``svc`` once every update this process sent is applied."""
    assert svc.sync(), "the metrics service applied nothing for 5 s"
    return parse(svc.exposition())


def running_service() -> Iterator[metrics.Service]:
    """A metrics service in this process (its updates are this process's), closed after
    (a fixture's body: ``yield from running_service()``)."""
    svc = metrics.Service()
    try:
        yield svc
    finally:
        svc.close()
