"""Kyma's function metrics (python312 server.py): function_calls_total, function_failures_total and
the function_duration_seconds histogram, each by `method`, next to prometheus_client's process_*,
python_gc_* and python_info.

Counting is ours (a lock and a few additions per request: prometheus_client's three labelled
metrics cost several times that); /metrics is written by prometheus_client itself, imported at the
first scrape, so the text, the `_created` samples and the default collectors are its own.
"""
import threading
import time

# prometheus_client's default histogram buckets (Kyma's histogram has no others).
BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0)
_N = len(BUCKETS)
_lock = threading.Lock()
_by_method = {}  # method → [calls, failures, duration sum, counts per bucket (not cumulative; +Inf last), created]
_registry = None
_register_lock = threading.Lock()


def _entry(method):
    m = _by_method.get(method)
    if m is None:
        m = _by_method[method] = [0, 0, 0.0, [0] * (_N + 1), time.time()]
    return m


def called(method):
    """A call to the function (counted before it runs, as Kyma's counter)."""
    with _lock:
        _entry(method)[0] += 1


def finished(method, seconds, failed):
    i = 0
    while i < _N and seconds > BUCKETS[i]:
        i += 1
    with _lock:
        m = _entry(method)
        m[2] += seconds
        m[3][i] += 1
        if failed:
            m[1] += 1


class _Collector:
    def collect(self):
        from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

        with _lock:
            rows = [(k, v[0], v[1], v[2], list(v[3]), v[4]) for k, v in sorted(_by_method.items())]
        calls = CounterMetricFamily("function_calls", "Number of calls to user function", labels=["method"])
        failures = CounterMetricFamily("function_failures", "Number of exceptions in user function", labels=["method"])
        duration = HistogramMetricFamily("function_duration_seconds", "Duration of user function in seconds", labels=["method"])
        for method, n, failed, total, counts, created in rows:
            calls.add_metric([method], n, created=created)
            failures.add_metric([method], failed, created=created)
            cumulative, buckets = 0, []
            for le, c in zip(BUCKETS + (float("inf"),), counts):
                cumulative += c
                buckets.append(("+Inf" if le == float("inf") else repr(le), cumulative))
            duration.add_metric([method], buckets, total)
            duration.samples.append(type(duration.samples[0])(
                "function_duration_seconds_created", {"method": method}, created, None, None))
        yield calls
        yield failures
        yield duration


def render():
    """(Content-Type, body) of /metrics."""
    global _registry
    import prometheus_client as prom

    with _register_lock:  # not _lock: register() collects once, and collect() takes _lock
        if _registry is None:
            prom.REGISTRY.register(_Collector())
            _registry = prom.REGISTRY
    return prom.CONTENT_TYPE_LATEST, prom.generate_latest(_registry)
