"""Prometheus metrics of the model server: requests by route and status, latency, predictions by class,
and the model served.

With ``PROMETHEUS_MULTIPROC_DIR`` set (``mmp serve-api`` sets it to a fresh folder before gunicorn starts
its workers), every worker writes its samples there and ``/metrics`` answers the sum over all workers,
living or gone. Without it (a test client, a single process), the metrics live in the app's own registry.
"""

from __future__ import annotations

import os
from collections import Counter as Tally
from typing import Any

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Gauge, Histogram, generate_latest

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"
# Serving one row takes about a millisecond; SHAP and large bodies take longer.
LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
OTHER_ROUTE = "other"  # every path the app has no route for: bounded label values


class Metrics:
    """The server's metrics; one per app (so per worker)."""

    def __init__(self, routes: set[str], model: dict[str, str]) -> None:
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
            self.predictions.labels("value").inc(len(labels))
        elif len(labels) == 1:
            self.predictions.labels(str(labels[0])).inc()
        else:
            for label, n in Tally(labels).items():
                self.predictions.labels(str(label)).inc(n)

    def exposition(self) -> tuple[bytes, str]:
        if self.registry is not None:
            return generate_latest(self.registry), CONTENT_TYPE_LATEST
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry, path=self.directory)
        return generate_latest(registry), CONTENT_TYPE_LATEST


_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
