"""Prometheus metrics, served at /metrics.

With several daphne processes on one machine, set PROMETHEUS_MULTIPROC_DIR to a folder they
share (emptied before they start): each process writes its samples there and /metrics on
any of them adds up all of them. Without it, each process counts for itself.
"""

import os

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    multiprocess,
)

# Seconds; a request through a provider takes from a few ms to minutes.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)

REQUESTS = Counter(
    "gateway_requests_total",
    "HTTP requests answered, by endpoint and status.",
    ["endpoint", "status"],
)
REQUEST_SECONDS = Histogram(
    "gateway_request_duration_seconds",
    "Time to a response: the whole answer, or the start of a stream.",
    ["endpoint"],
    buckets=LATENCY_BUCKETS,
)
MODEL_REQUESTS = Counter(
    "gateway_model_requests_total",
    "Requests that reached a provider, by model and outcome.",
    ["endpoint", "model", "status"],
)
FIRST_TOKEN_SECONDS = Histogram(
    "gateway_time_to_first_token_seconds",
    "Time from request to the first token sent.",
    ["model"],
    buckets=LATENCY_BUCKETS,
)
TOKENS = Counter(
    "gateway_tokens_total",
    "Tokens reported by providers, by model and kind.",
    ["model", "kind"],
)
UPSTREAM_ERRORS = Counter(
    "gateway_upstream_errors_total",
    "Provider failures, by provider and error code.",
    ["provider", "code"],
)
GATEWAY_ERRORS = Counter(
    "gateway_internal_errors_total",
    "Failures of the gateway's own (not the provider's) in requests that reached a provider, "
    "by exception.",
    ["code"],
)
OPEN_STREAMS = Gauge(
    "gateway_open_streams",
    "Streams open to clients right now.",
    multiprocess_mode="livesum",
)


def render():
    """Return (body, content type) of the metrics of this process, or of all processes."""
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    from prometheus_client import REGISTRY

    return generate_latest(REGISTRY), CONTENT_TYPE_LATEST
