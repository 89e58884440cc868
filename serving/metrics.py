"""Serving metrics in Prometheus' text format, under TF Serving's metric names.

TF Serving exports its TensorFlow monitoring metrics at
``/monitoring/prometheus/metrics`` when ``--monitoring_config_file`` turns
Prometheus on (``tensorflow_serving/util/prometheus_exporter.cc``: ``/`` in a
metric name becomes ``:``, histograms get cumulative ``_bucket{le=...}``,
``_sum`` and ``_count`` lines). The names and buckets here are TF Serving's
(``servables/tensorflow/util.cc``, ``batching/batching_util.h``), so its
dashboards and alerts read `doctags serve` unchanged:

- ``:tensorflow:serving:request_count{model_name,status}``: every request,
  by canonical status code;
- ``:tensorflow:serving:request_latency{model_name,API,entrypoint}``: wall
  time in microseconds of successful requests (``REST``/``GRPC``);
- ``:tensorflow:serving:batching_session:input_batch_size`` and
  ``...:processed_batch_size``: rows per request and per model call.

TF Serving has no metric for version states or for connections, so those
are doctags' own, under ``:doctags:serving:``: the state of each version
(1 per version, labelled with its state), load attempts by outcome, open
REST connections and dropped connections by reason. Written by hand: a
few counters and histograms, and the exact names and line format of TF
Serving's exporter (a client library would append ``_total`` to counters).
"""

from __future__ import annotations

import bisect
import collections
import threading


def exponential_buckets(scale: float, growth: float, count: int) -> list[float]:
    """TensorFlow's ``Buckets::Exponential``: ``count - 1`` finite limits, then +Inf."""
    return [scale * growth**i for i in range(count - 1)]


LATENCY_BUCKETS_US = exponential_buckets(10, 1.8, 33)  # util.cc: ~20 minutes
BATCH_SIZE_BUCKETS = exponential_buckets(1, 2, 14)  # batching_util.h: 1 .. 8192


class Histogram:
    """Counts per bucket (value <= limit, Prometheus' ``le``), plus sum and count."""

    def __init__(self, limits: list[float]):
        self.limits = limits
        self.counts = [0] * (len(limits) + 1)
        self.sum = 0.0

    def add(self, value: float, times: int = 1) -> None:
        self.counts[bisect.bisect_left(self.limits, value)] += times
        self.sum += value * times


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def _labels(pairs) -> str:
    def escape(value) -> str:
        return str(value).replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")

    return ",".join(f'{name}="{escape(value)}"' for name, value in pairs)


def scalar_lines(name: str, kind: str, points: dict[tuple, float]) -> list[str]:
    """A counter or gauge: ``# TYPE`` and one line per label set."""
    lines = [f"# TYPE {name} {kind}"]
    for labels, value in sorted(points.items(), key=lambda kv: str(kv[0])):
        lines.append(f"{name}{{{_labels(labels)}}} {_number(value)}")
    return lines


def histogram_lines(name: str, points: dict[tuple, Histogram]) -> list[str]:
    """A histogram as TF Serving's exporter writes it: cumulative buckets, sum, count."""
    lines = [f"# TYPE {name} histogram"]
    for labels, histogram in sorted(points.items(), key=lambda kv: str(kv[0])):
        prefix = _labels(labels)
        prefix = f"{prefix}," if prefix else ""
        cumulative = 0
        for i, count in enumerate(histogram.counts):
            cumulative += count
            limit = "+Inf" if i == len(histogram.limits) else _number(histogram.limits[i])
            lines.append(f'{name}_bucket{{{prefix}le="{limit}"}} {cumulative}')
        lines.append(f"{name}_sum{{{_labels(labels)}}} {_number(histogram.sum)}")
        lines.append(f"{name}_count{{{_labels(labels)}}} {cumulative}")
    return lines


class ServingMetrics:
    """Request counters and histograms the front ends record into (thread-safe)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.request_count: collections.Counter[tuple] = collections.Counter()
        self.request_latency: dict[tuple, Histogram] = {}
        self.input_batch_size = Histogram(BATCH_SIZE_BUCKETS)

    def record(
        self,
        model_name: str,
        api: str,
        entrypoint: str,
        status: str,
        seconds: float,
        rows: int | None = None,
    ) -> None:
        """One finished request; latency and rows count only when it succeeded, as in TF Serving."""
        with self._lock:
            self.request_count[(("model_name", model_name), ("status", status))] += 1
            if status != "OK":
                return
            key = (("model_name", model_name), ("API", api), ("entrypoint", entrypoint))
            histogram = self.request_latency.setdefault(key, Histogram(LATENCY_BUCKETS_US))
            histogram.add(seconds * 1e6)
            if rows:
                self.input_batch_size.add(rows)

    def render(self, manager, http_server=None) -> str:
        """The whole page: request metrics, batch sizes, versions, connections."""
        with self._lock:
            lines = scalar_lines(
                ":tensorflow:serving:request_count", "counter", dict(self.request_count)
            )
            lines += histogram_lines(
                ":tensorflow:serving:request_latency", dict(self.request_latency)
            )
            lines += histogram_lines(
                ":tensorflow:serving:batching_session:input_batch_size",
                {(): self.input_batch_size},
            )
        processed = Histogram(BATCH_SIZE_BUCKETS)
        for rows, calls in manager.batch_sizes().items():
            processed.add(rows, calls)
        lines += histogram_lines(
            ":tensorflow:serving:batching_session:processed_batch_size", {(): processed}
        )
        lines += _version_lines(manager)
        if http_server is not None:
            lines += _connection_lines(http_server)
        return "\n".join(lines) + "\n"


def _version_lines(manager) -> list[str]:
    name = manager.model_name
    states = {
        (("model_name", name), ("version", s.version), ("state", s.state)): 1
        for s in manager.all_statuses()
    }
    attempts = {
        (("model_name", name), ("version", version), ("status", status)): count
        for (version, status), count in manager.load_counts.items()
    }
    return scalar_lines(":doctags:serving:model_version_state", "gauge", states) + scalar_lines(
        ":doctags:serving:load_attempt_count", "counter", attempts
    )


def _connection_lines(http_server) -> list[str]:
    dropped = {(("reason", r),): n for r, n in dict(http_server.dropped).items()}
    refused = {(("reason", r),): n for r, n in dict(http_server.refused).items()}
    return (
        scalar_lines(
            ":doctags:serving:rest:open_connections",
            "gauge",
            {(): len(http_server.connections)},
        )
        + scalar_lines(":doctags:serving:rest:dropped_connections", "counter", dropped)
        + scalar_lines(":doctags:serving:rest:refused_requests", "counter", refused)
    )
