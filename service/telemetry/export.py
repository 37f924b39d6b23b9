"""``GET /metrics``: the fleet's counters, histograms and gauges from Redis, in Prometheus text format."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from service.store.metrics import MetricsSnapshot, MetricsStore
from service.telemetry.metrics import FAMILIES, PREFIX, parse_field

Labels = tuple[tuple[str, str], ...]


@dataclass
class Snapshot:
    """The scrape's figures: the fleet's counters, every live process's gauges, the queue."""

    counters: dict[str, float] = field(default_factory=dict)
    gauges: dict[str, float] = field(default_factory=dict)  # summed over instances' own label sets
    queued: dict[str, int] = field(default_factory=dict)
    running: dict[str, int] = field(default_factory=dict)
    retrying: int = 0
    workers: int = 0
    batch_pending: int = 0
    batch_open: int = 0


def snapshot_from(stored: MetricsSnapshot) -> Snapshot:
    snapshot = Snapshot(stored.counters, {}, stored.queued, stored.running, stored.retrying)
    snapshot.batch_pending, snapshot.batch_open = stored.batch_pending, stored.batch_open
    for instance in stored.instances:
        snapshot.gauges.update(instance)
        snapshot.workers += any(name.startswith("worker_jobs_in_flight") for name in instance)
    return snapshot


class FleetCollector(Collector):
    def __init__(self, snapshot: Snapshot) -> None:
        self.snapshot = snapshot

    def collect(self) -> Iterator[Metric]:
        yield from self._counters_and_histograms()
        yield from self._gauges()
        yield from self._queue()

    def _grouped(self, values: dict[str, float]) -> dict[str, dict[Labels, float]]:
        grouped: dict[str, dict[Labels, float]] = defaultdict(dict)
        for raw, value in values.items():
            name, labels = parse_field(raw)
            grouped[name][tuple(sorted(labels.items()))] = value
        return grouped

    def _counters_and_histograms(self) -> Iterator[Metric]:
        grouped = self._grouped(self.snapshot.counters)
        for family in FAMILIES.values():
            if family.kind == "counter":
                metric = CounterMetricFamily(PREFIX + family.name.removesuffix("_total"), family.help,
                                             labels=family.labels)  # fmt: skip
                for labels, value in grouped.get(family.name, {}).items():
                    metric.add_metric([dict(labels).get(n, "") for n in family.labels], value)
                yield metric
            elif family.kind == "histogram":
                yield _histogram(family.name, family.help, family.labels, grouped)

    def _gauges(self) -> Iterator[Metric]:
        grouped = self._grouped(self.snapshot.gauges)
        for family in FAMILIES.values():
            if family.kind == "gauge":
                metric = GaugeMetricFamily(PREFIX + family.name, family.help, labels=family.labels)
                for labels, value in grouped.get(family.name, {}).items():
                    metric.add_metric([dict(labels).get(n, "") for n in family.labels], value)
                yield metric

    def _queue(self) -> Iterator[Metric]:
        depth = GaugeMetricFamily(PREFIX + "queue_depth", "Jobs waiting, by lane", labels=("lane",))
        for plan in ("pro", "free"):
            depth.add_metric([plan], self.snapshot.queued.get(plan, 0))
        depth.add_metric(["retrying"], self.snapshot.retrying)
        depth.add_metric(["batch"], self.snapshot.batch_pending)  # waiting for their batch to be sent
        yield depth
        yield GaugeMetricFamily(
            PREFIX + "batches_open", "Provider batches sent and not yet ended", value=self.snapshot.batch_open
        )
        active = GaugeMetricFamily(PREFIX + "jobs_active", "Jobs running, by plan", labels=("plan",))
        for plan in ("pro", "free"):
            active.add_metric([plan], self.snapshot.running.get(plan, 0))
        yield active
        yield GaugeMetricFamily(PREFIX + "workers", "Worker processes reporting", value=self.snapshot.workers)


def _histogram(
    name: str, help_text: str, label_names: tuple[str, ...], grouped: dict[str, dict[Labels, float]]
) -> Metric:
    metric = HistogramMetricFamily(PREFIX + name, help_text, labels=label_names)
    buckets: dict[Labels, list[tuple[float, float]]] = defaultdict(list)
    for labels, count in grouped.get(name + "_bucket", {}).items():
        as_dict = dict(labels)
        le = as_dict.pop("le")
        buckets[tuple(sorted(as_dict.items()))].append((float(le), count))
    for labels, counts in buckets.items():
        cumulative: list[tuple[str, float]] = []
        running = 0.0
        for bound, count in sorted(counts):
            running += count
            cumulative.append(("+Inf" if bound == float("inf") else str(bound), running))
        if cumulative[-1][0] != "+Inf":
            cumulative.append(("+Inf", running))
        total = grouped.get(name + "_sum", {}).get(labels, 0.0)
        metric.add_metric([dict(labels).get(n, "") for n in label_names], cumulative, total)
    return metric


async def render(store: MetricsStore) -> tuple[bytes, str]:
    """The fleet's metrics as Prometheus text, and the content type to send them with."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(FleetCollector(snapshot_from(await store.snapshot())))
    return generate_latest(registry), CONTENT_TYPE_LATEST
