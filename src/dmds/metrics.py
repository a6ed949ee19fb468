"""What a server counts for Prometheus: plain counters on the hot paths, exposed at scrape time.

Theory of operation
-------------------
The message path costs 20-40 µs per message on the event loop; prometheus-client's `Counter.inc()`
takes a lock and costs about 0.5 µs. So the code that serves requests never calls prometheus-client:
it adds to plain attributes of one `Metrics` object per server (an int add, ~30 ns; the event loop is
the only writer, so no lock is needed), and `MetricsCollector` turns them into metric families
when Prometheus scrapes. Counts are made at the level of a batch where one exists (deliveries per
ack batch, store batch sizes per batch). Histograms are `Histogram` below: bucket counts in a list,
one `bisect` per observation. The few observed off the loop (the SQLite commit, on its committer
thread) have that thread as their only writer; a scrape may read a count a moment old, never a
torn one (the GIL).

Gauges that describe state rather than events (connections, messages waiting, the drain backlog,
PostgreSQL connections) are not maintained: `gauges` holds functions that compute them at scrape
time, which costs nothing between scrapes.

Every server has its own `Metrics` and its own `CollectorRegistry` (never prometheus-client's global
one), so tests can run several servers in one process. With the admin port off there is no `Metrics`
at all (`None`), and the instrumented code skips even the int adds.
"""

from __future__ import annotations

import bisect
import math
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

#: Latency buckets (seconds): 100 µs (a request on a warm loop) to 10 s (a store outage).
LATENCY_S = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 10.0)
#: Batch size buckets (jobs per store batch, up to max_batch's default of 512).
BATCH_SIZES = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512)
#: Event-loop lag buckets (seconds late): a healthy loop is well under a millisecond.
LAG_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)


class Histogram:
    """Prometheus-style buckets (`le` bounds, cumulative at exposition) without a lock: one writer."""

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last: above every bound (+Inf)
        self.sum = 0.0

    def observe(self, value: float, _at: Callable[..., int] = bisect.bisect_left) -> None:
        # ~270 ns here (the bound default saves a global lookup); prometheus-client's: ~1.2 µs
        self.counts[_at(self.bounds, value)] += 1
        self.sum += value

    @property
    def count(self) -> int:
        return sum(self.counts)

    def buckets(self) -> list[tuple[str, float]]:
        """Cumulative (le, count) pairs, ending with +Inf, as HistogramMetricFamily takes them."""
        out, total = [], 0
        for bound, n in zip((*self.bounds, math.inf), self.counts, strict=True):
            total += n
            out.append(("+Inf" if bound == math.inf else repr(float(bound)), float(total)))
        return out


#: A gauge computed at scrape time: (name, help, label names) and its samples (label values, value).
Gauge = tuple[str, str, tuple[str, ...], Callable[[], Iterable[tuple[tuple[str, ...], float]]]]


@dataclass(eq=False)
class Metrics:
    """One server's counts. Attributes are added to directly by the code that sees the events."""

    #: messages committed by the store (a resend with a used key is not counted again)
    accepted: int = 0
    #: messages marked delivered (acknowledged by a session client, written to a classic listener)
    delivered: int = 0
    #: messages marked read
    read: int = 0
    #: sends refused, by the domain error's class name (UnknownUser, LimitExceeded, StoreError...)
    refused: Counter[str] = field(default_factory=Counter)
    #: (method, result) of logins: method password or token; result ok, failed or rate_limited
    logins: Counter[tuple[str, str]] = field(default_factory=Counter)
    #: requests refused by a rate limit, by which: send, login, register
    rate_limited: Counter[str] = field(default_factory=Counter)
    #: pushes that could not be written (the recipient is then disconnected)
    pushes_failed: int = 0
    #: seconds from request to answer, by (protocol, operation)
    requests: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    #: jobs per store batch (one transaction, one commit)
    batch_size: Histogram = field(default_factory=lambda: Histogram(BATCH_SIZES))
    #: seconds of the store's COMMIT: with SQLite on its committer thread, the WAL fsync included
    #: (sync=full); with PostgreSQL the round trip of COMMIT, the server's WAL flush included
    commit_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_S))
    #: seconds a store batch takes from its first statement to its commit returning
    batch_seconds: Histogram = field(default_factory=lambda: Histogram(LATENCY_S))
    #: store batches that failed (rolled back, every request in them answered with a store error)
    batches_failed: int = 0
    #: how late the event loop ran a timer (see `dmds.admin.lag`)
    loop_lag: Histogram = field(default_factory=lambda: Histogram(LAG_S))
    loop_lag_last_s: float = 0.0
    #: the store is PostgreSQL: its metrics are exposed
    postgres: bool = False
    #: PostgreSQL: times the LISTEN connection was lost and opened again
    listen_reconnects: int = 0
    #: PostgreSQL: times the writing connection was opened again after being lost
    store_reconnects: int = 0
    #: state read at scrape time
    gauges: list[Gauge] = field(default_factory=list)

    def request(self, protocol: str, operation: str) -> Histogram:
        """The latency histogram of one operation (made on first use; hot paths keep a reference)."""
        key = (protocol, operation)
        found = self.requests.get(key)
        if found is None:
            found = self.requests[key] = Histogram(LATENCY_S)
        return found

    def registry(self) -> CollectorRegistry:
        """A registry of this server's alone (never the process-wide default)."""
        registry = CollectorRegistry(auto_describe=False)
        registry.register(MetricsCollector(self))
        return registry


def _histogram(name: str, help: str, labels: list[str]) -> HistogramMetricFamily:
    return HistogramMetricFamily(name, help, labels=labels)


class MetricsCollector(Collector):
    """`Metrics` as Prometheus metric families, built at each scrape."""

    def __init__(self, metrics: Metrics) -> None:
        self.m = metrics

    def collect(self) -> Iterator[Metric]:
        m = self.m
        yield CounterMetricFamily("dmds_messages_accepted", "Messages committed by the store.", m.accepted)
        yield CounterMetricFamily(
            "dmds_messages_delivered", "Messages marked delivered (acked, or written to a classic listener).",
            m.delivered,
        )  # fmt: skip
        yield CounterMetricFamily("dmds_messages_read", "Messages marked read by their recipient.", m.read)
        refused = CounterMetricFamily(
            "dmds_messages_refused", "Sends refused, by reason (the domain error).", labels=["reason"]
        )
        for reason, n in sorted(m.refused.items()):
            refused.add_metric([reason], n)
        yield refused
        logins = CounterMetricFamily(
            "dmds_logins", "Logins by method (password, token) and result.", labels=["method", "result"]
        )
        for (method, result), n in sorted(m.logins.items()):
            logins.add_metric([method, result], n)
        yield logins
        limited = CounterMetricFamily(
            "dmds_rate_limited", "Requests refused by a rate limit, by limit.", labels=["limit"]
        )
        for limit, n in sorted(m.rate_limited.items()):
            limited.add_metric([limit], n)
        yield limited
        yield CounterMetricFamily(
            "dmds_pushes_failed", "Pushes that could not be written (the recipient is disconnected).",
            m.pushes_failed,
        )  # fmt: skip
        requests = _histogram(
            "dmds_request_duration_seconds", "Seconds from request to answer.", ["protocol", "operation"]
        )
        for (protocol, operation), h in sorted(m.requests.items()):
            requests.add_metric([protocol, operation], h.buckets(), h.sum)
        yield requests
        for name, help, h in (
            ("dmds_store_batch_size", "Jobs per store batch (one transaction, one commit).", m.batch_size),
            ("dmds_store_commit_seconds", "Seconds of the store's COMMIT (its fsync too).", m.commit_seconds),
            ("dmds_store_batch_seconds", "Seconds of a store batch, start to commit.", m.batch_seconds),
            ("dmds_event_loop_lag_seconds", "How late the event loop ran a periodic timer.", m.loop_lag),
        ):
            family = _histogram(name, help, [])
            family.add_metric([], h.buckets(), h.sum)
            yield family
        yield CounterMetricFamily(
            "dmds_store_batches_failed", "Store batches rolled back (their requests got a store error).",
            m.batches_failed,
        )  # fmt: skip
        yield GaugeMetricFamily(
            "dmds_event_loop_lag_last_seconds", "The latest event-loop lag measured.", m.loop_lag_last_s
        )  # fmt: skip
        if m.postgres:
            yield from self._postgres()
        for name, help, labels, samples in m.gauges:
            gauge = GaugeMetricFamily(name, help, labels=list(labels))
            for values, value in samples():
                gauge.add_metric(list(values), value)
            yield gauge

    def _postgres(self) -> Iterator[Metric]:
        m = self.m
        yield CounterMetricFamily(
            "dmds_pg_listen_reconnects", "PostgreSQL: LISTEN connections opened again after a loss.",
            m.listen_reconnects,
        )  # fmt: skip
        yield CounterMetricFamily(
            "dmds_pg_store_reconnects", "PostgreSQL: writing connections opened again after a loss.",
            m.store_reconnects,
        )  # fmt: skip
