"""Prometheus metrics of the model server: requests by route and status, latency, predictions by class,
the model served, and drift (:class:`DriftWindow`).

With ``PROMETHEUS_MULTIPROC_DIR`` set (``mmp serve-api`` sets it to a fresh folder before gunicorn starts
its workers), every worker writes its samples there and ``/metrics`` answers the sum over all workers,
living or gone. Without it (a test client, a single process), the metrics live in the app's own registry.
"""

from __future__ import annotations

import os
import threading
from collections import Counter as Tally
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric

from mmp.evaluation import drift

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Serving one row takes about a millisecond; SHAP and large bodies take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER_ROUTE = "other"  # every path the app has no route for: bounded label values
DRIFT_ROWS = "mmp_drift_bucket_rows"  # the workers' window counts (the transport; not exposed as such)
SMALL_REQUEST = 16  # rows bucketed one value at a time; larger requests column by column


class Metrics:
    """The server's metrics; one per app (so per worker)."""

    def __init__(
        self,
        routes: set[str],
        model: dict[str, str],
        drift_reference: Mapping[str, Any] | None = None,
        drift_window: int = drift.DEFAULT_WINDOW,
        drift_threshold: float = drift.DEFAULT_THRESHOLD,
    ) -> None:
        self.directory = os.environ.get(MULTIPROC_ENV) or None
        if self.directory:
            os.makedirs(self.directory, exist_ok=True)
            from prometheus_client import values

            # prometheus_client picks its value class when first imported: if that was before the variable
            # was set (the gunicorn master importing mmp), pick again, so that samples go to the folder.
            if values.ValueClass is values.MutexValue:
                values.ValueClass = values.get_value_class()
        # Multiprocess: samples go to the folder's files, and a fresh collector reads them all per scrape.
        self.registry = None if self.directory else CollectorRegistry()
        self.routes = frozenset(routes)
        self._children: dict[tuple[str, str, int | None], tuple[Any, Any]] = {}
        self._classes: dict[Any, Any] = {}  # predicted label -> its counter child
        self.requests = Counter(
            "mmp_http_requests",
            "HTTP requests answered, by route and status code",
            ["method", "route", "status"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "mmp_http_request_duration_seconds",
            "Time to answer a request, by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.predictions = Counter(
            "mmp_predictions",
            "Rows predicted, by predicted class (regression: 'value')",
            ["class"],
            registry=self.registry,
        )
        info = Gauge(
            "mmp_model_info",
            "The model served (always 1; the labels say which)",
            list(model),
            registry=self.registry,
            multiprocess_mode="max",
        )
        info.labels(**model).set(1)
        self.drift: DriftWindow | None = None
        self.drift_threshold = drift_threshold
        if drift_reference is not None:
            gauge = Gauge(
                DRIFT_ROWS,
                "Rows of this worker's drift window in each bucket (internal: /drift and mmp_drift_psi sum them)",
                ["column", "bucket"],
                registry=self.registry,
                multiprocess_mode="liveall",  # per pid: a dead worker's window is left out by pid
            )
            self.drift = DriftWindow(drift_reference, drift_window, gauge)

    def route(self, path: str) -> str:
        return path if path in self.routes else OTHER_ROUTE

    def observe(self, method: str, path: str, status: int | None, seconds: float) -> None:
        key = (method, path, status)
        children = self._children.get(key)
        if children is None:  # label values are bounded: known routes, methods and status codes
            route = self.route(path)
            children = (
                self.requests.labels(method if method in _METHODS else "OTHER", route, str(status or 0)),
                self.latency.labels(route),
            )
            if route != OTHER_ROUTE and method in _METHODS:
                self._children[key] = children
        children[0].inc()
        children[1].observe(seconds)

    def count(self, labels: Any, regression: bool) -> None:
        """Predicted labels of one request (class names, or values for regression)."""
        if regression:
            self._prediction_child("value").inc(len(labels))
        elif len(labels) == 1:
            self._prediction_child(labels[0]).inc()
        else:
            for label, n in Tally(labels).items():
                self._prediction_child(label).inc(n)

    def _prediction_child(self, label: Any) -> Any:
        child = self._classes.get(label)
        if child is None:  # the model's classes: bounded
            child = self._classes[label] = self.predictions.labels(str(label))
        return child

    def exposition(self) -> tuple[bytes, str]:
        families = self._families()
        if self.drift is not None:
            counts = self._drift_counts(families)
            families = [f for f in families if f.name != DRIFT_ROWS] + self.drift.families(counts)
        return generate_latest(_Families(families)), CONTENT_TYPE_LATEST  # type: ignore[arg-type]

    def drift_report(self) -> dict[str, Any] | None:
        """PSI per column and for the prediction over the live workers' windows (None: no training distribution)."""
        if self.drift is None:
            return None
        report = drift.drift_report(self.drift.reference, self._drift_counts(self._families()), self.drift_threshold)
        report["window"] = {"rows_per_worker": self.drift.size, "workers": self._workers()}
        return report

    def _families(self) -> list[Metric]:
        if self.registry is not None:
            return list(self.registry.collect())
        from prometheus_client import multiprocess

        return list(multiprocess.MultiProcessCollector(None, path=self.directory).collect())

    def _drift_counts(self, families: Iterable[Metric]) -> dict[str, np.ndarray]:
        """Every live worker's window summed (one process: its own window)."""
        assert self.drift is not None
        if self.registry is not None:
            return self.drift.snapshot()
        samples = [
            (s.labels["column"], s.labels["bucket"], s.value)
            for family in families
            if family.name == DRIFT_ROWS
            for s in family.samples
            if _alive(s.labels.get("pid", ""))
        ]
        return self.drift.sum_samples(samples)

    def _workers(self) -> int:
        if self.registry is not None:
            return 1
        pids = {name.rsplit("_", 1)[-1].removesuffix(".db") for name in os.listdir(self.directory)}
        return sum(_alive(pid) for pid in pids if pid.isdigit()) or 1


class DriftWindow:
    """This worker's sliding window: the bucket of each input column and of the prediction for its last
    ``size`` rows, compared with the training distribution saved with the model (:mod:`mmp.evaluation.drift`).

    Gunicorn runs several workers, each with its own window. Each publishes its window's bucket counts as the
    gauge ``mmp_drift_window_rows`` (one file per pid in the multiprocess folder); ``/drift`` and
    ``mmp_drift_psi`` sum the live workers' counts. So the statistics describe the last ``size`` rows of
    each live worker: up to workers x ``size`` rows, all recent, but not exactly the server's last rows.
    """

    def __init__(self, reference: Mapping[str, Any], size: int, gauge: Gauge) -> None:
        self.reference = reference
        self.size = size
        self.names = [*reference["features"], drift.PREDICTION]
        self.specs = [*reference["features"].values(), reference[drift.PREDICTION]]
        self.labels = [drift.bucket_labels(spec) for spec in self.specs]
        self._index = [{label: i for i, label in enumerate(labels)} for labels in self.labels]
        self.counts = [np.zeros(drift.n_buckets(spec), dtype=np.int64) for spec in self.specs]
        self._blocks: deque[np.ndarray] = deque()  # (rows, columns) bucket indices, oldest first
        self._rows = 0
        self._gauge = gauge
        self._children: dict[tuple[int, int], Any] = {}
        self._lock = threading.Lock()  # gthread workers serve requests on several threads

    def add(self, rows: Sequence[Mapping[str, Any]], predicted: Any) -> None:
        """One request's validated rows and the prediction's values (:func:`drift.prediction_values`)."""
        if len(rows) > SMALL_REQUEST:
            self.add_columns({name: [row.get(name) for row in rows] for name in self.names[:-1]}, predicted)
        elif len(rows):
            self._count(self._row_buckets(rows, predicted))

    def add_columns(self, columns: Mapping[str, Sequence[Any]], predicted: Any) -> None:
        """A request's values column by column (a ``dataframe_split`` body: no row dicts to build)."""
        if len(predicted):
            self._count(self._column_buckets(columns, predicted))

    def _count(self, block: np.ndarray) -> None:
        with self._lock:
            self._blocks.append(block)
            self._rows += len(block)
            gone = []
            while self._rows > self.size:  # drop the oldest rows beyond the window
                oldest = self._blocks[0]
                excess = self._rows - self.size
                if len(oldest) <= excess:
                    gone.append(self._blocks.popleft())
                else:
                    gone.append(oldest[:excess])
                    self._blocks[0] = oldest[excess:]
                self._rows -= len(gone[-1])
            self._apply(block, gone)

    def _row_buckets(self, rows: Sequence[Mapping[str, Any]], predicted: Any) -> np.ndarray:
        """A few values: one bisect or dict lookup each."""
        features = list(zip(self.names[:-1], self.specs[:-1], strict=True))
        matrix = [
            [drift.value_bucket(spec, row.get(name)) for name, spec in features]
            + [drift.value_bucket(self.specs[-1], value)]
            for row, value in zip(rows, predicted, strict=True)
        ]
        return np.asarray(matrix, dtype=np.int64)

    def _column_buckets(self, columns: Mapping[str, Sequence[Any]], predicted: Any) -> np.ndarray:
        import polars as pl

        buckets = []
        for name, spec in zip(self.names[:-1], self.specs[:-1], strict=True):
            values = columns.get(name)
            series = pl.Series(name, [None] * len(predicted) if values is None else values, strict=False)
            buckets.append(drift.spec_buckets(spec, drift.column_values(series, spec["kind"])))
        buckets.append(drift.spec_buckets(self.specs[-1], predicted))
        return np.stack(buckets, axis=1).astype(np.int64)

    def _apply(self, added: np.ndarray, removed: list[np.ndarray]) -> None:
        """Count the rows ``added`` and uncount those ``removed``; publish only the buckets whose count changed.

        A full window drops a row for each row it takes, often in the same buckets: netting the two first
        spares most of the gauge writes (each one a locked write to the worker's metrics file).
        """
        if len(added) + sum(len(block) for block in removed) <= SMALL_REQUEST:  # a few rows: Python counting
            deltas: list[Tally[int]] = [Tally() for _ in self.counts]
            for sign, block in ((1, added), *((-1, block) for block in removed)):
                for row in block.tolist():
                    for j, bucket in enumerate(row):
                        deltas[j][bucket] += sign
            changes = [(j, bucket, n) for j, delta in enumerate(deltas) for bucket, n in delta.items() if n]
        else:
            changes = []
            for j, counts in enumerate(self.counts):
                delta = np.bincount(added[:, j], minlength=len(counts))
                for block in removed:
                    delta -= np.bincount(block[:, j], minlength=len(counts))
                changes.extend((j, int(bucket), int(delta[bucket])) for bucket in np.flatnonzero(delta))
        for j, bucket, n in changes:
            self.counts[j][bucket] += n
            child = self._children.get((j, bucket))
            if child is None:
                child = self._children[(j, bucket)] = self._gauge.labels(self.names[j], self.labels[j][bucket])
            child.inc(n)

    def snapshot(self) -> dict[str, np.ndarray]:
        with self._lock:
            return {name: counts.copy() for name, counts in zip(self.names, self.counts, strict=True)}

    def sum_samples(self, samples: Iterable[tuple[str, str, float]]) -> dict[str, np.ndarray]:
        """Counts from (column, bucket label, rows) samples of several workers."""
        position = {name: j for j, name in enumerate(self.names)}
        totals = {
            name: np.zeros(len(counts), dtype=np.int64) for name, counts in zip(self.names, self.counts, strict=True)
        }
        for column, bucket, value in samples:
            j = position.get(column)
            i = None if j is None else self._index[j].get(bucket)
            if i is not None:
                totals[column][i] += int(value)
        return totals

    def families(self, counts: Mapping[str, np.ndarray]) -> list[Metric]:
        """``mmp_drift_psi`` per column and ``mmp_drift_window_rows_total``, from summed counts."""
        psi = GaugeMetricFamily(
            "mmp_drift_psi",
            "PSI of the recent rows (every live worker's window) against the training data",
            labels=["column"],
        )
        for name, spec in zip(self.names, self.specs, strict=True):
            value = drift.psi(spec["expected"], counts[name])
            if value is not None:
                psi.add_metric([name], value)
        rows = GaugeMetricFamily("mmp_drift_window_rows", "Rows in the drift windows of the live workers")
        rows.add_metric([], float(counts[drift.PREDICTION].sum()))
        return [psi, rows]


class _Families:
    """Already collected metric families, as a registry-like object for ``generate_latest``."""

    def __init__(self, families: list[Metric]) -> None:
        self._families = families

    def collect(self) -> Iterable[Metric]:
        return iter(self._families)


def _alive(pid: str) -> bool:
    try:
        os.kill(int(pid), 0)
    except (ValueError, ProcessLookupError):
        return False
    except PermissionError:
        return True
    return True


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
