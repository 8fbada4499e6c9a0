"""Every Prometheus metric statnet exports, declared once (CONTRACT section 8).

All services of a process register into the one default registry, so
``statnet run`` serves them together on ``/metrics`` with no duplicated
series, and a service running alone serves its own on ``STATNET_METRICS_PORT``.
Domain metrics (returns, values, violations, late returns, completeness) are
first class: they are what DHIS2 does not give an operator.
"""
from prometheus_client import Counter, Histogram

# --- domain: CONTRACT 8 -----------------------------------------------------
submissions_total = Counter(
    "statnet_submissions", "Returns by the status they reached (counted once per return and status)",
    ["status"])
data_values_total = Counter(
    "statnet_data_values", "Data values of returns by what happened to them, as importCount says "
    "(every value of a rejected return ignored)",
    ["result"])  # imported | updated | ignored | deleted
validation_violations_total = Counter(
    "statnet_validation_violations", "Validation rule violations found", ["importance"])
outliers_total = Counter(
    "statnet_outliers", "Values outside their expected range (LOW warnings, apart from rule violations)")
# statnet_late_returns{dataset}: read from notify's table at each scrape (notify.service)
notifications_total = Counter(
    "statnet_notifications", "Alert deliveries by type, channel and outcome",
    ["type", "channel", "status"])
returns_received_total = Counter(
    "statnet_returns_received", "Returns received (stored, before validation) by data set and period",
    ["dataset", "period"])
dead_letters_total = Counter(
    "statnet_dead_letters", "Messages a service parked in its dead-letter queue", ["service"])
# Series of a closed set of labels exist from the start, at 0: a counter that appears
# only at its first increment has no rate() to alert on before it, and a scrape cannot
# tell "none yet" from "not exported". (dead_letters_total: each service's own, when its
# Bouncer is set up.)
for _status in ("RECEIVED", "VALIDATED", "REJECTED", "AGGREGATED"):
    submissions_total.labels(status=_status)
for _result in ("imported", "updated", "ignored", "deleted"):
    data_values_total.labels(result=_result)
for _importance in ("HIGH", "MEDIUM", "LOW"):
    validation_violations_total.labels(importance=_importance)

# --- plumbing -----------------------------------------------------------------
event_handler_seconds = Histogram(
    "statnet_event_handler_seconds", "Time an event handler took, by service and event",
    ["service", "event"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
event_batch_size = Histogram(
    "statnet_event_batch_size", "Events handled together in one transaction by a batched handler",
    ["service", "event"], buckets=(1, 2, 5, 10, 25, 50, 100))
event_handler_failures = Counter(
    "statnet_event_handler_failures", "Event handler runs that raised",
    ["service", "event", "transient"])
rpc_seconds = Histogram(
    "statnet_rpc_seconds", "Time an RPC method took in the serving service",
    ["service", "method"],
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
rpc_errors_total = Counter(
    "statnet_rpc_errors", "RPC methods that raised", ["service", "method"])
http_requests_total = Counter(
    "statnet_http_requests", "HTTP requests by route and status", ["method", "route", "status"])
http_request_seconds = Histogram(
    "statnet_http_request_seconds", "HTTP request latency by route", ["method", "route"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30))
outbox_published_total = Counter(
    "statnet_outbox_published", "Events relayed from a service's outbox to the broker", ["service"])
