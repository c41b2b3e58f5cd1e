"""The neuron's Prometheus metrics, in one `CollectorRegistry` per app (no globals).

Counters and histograms are updated as requests run; gauges (KV cache use, queue depth, running
requests, memory) are read from the harness when `/metrics` is scraped.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from cortex.build_info import register_process_metrics
from cortex.neuron.harness import Harness
from cortex.neuron.types import LoadEvent

__all__ = ["NeuronMetrics"]

_BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256)
TTFT_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 20, 30, 60, 120, 300, 600)
"""Past 10 s: a first token behind a cold load can take minutes."""
_ITL_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.15, 0.25, 0.5, 1, 2.5)
_LOAD_BUCKETS = (0.1, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600)


class NeuronMetrics:
    """The metrics of one neuron app.

    `cortex_neuron_requests_total{model,endpoint,status}`,
    `cortex_neuron_tokens_total{model,kind=prompt|completion}`,
    `cortex_neuron_time_to_first_token_seconds{model}`, `cortex_neuron_batch_size` (the batch
    each generated token came from), `cortex_neuron_model_loads_total{model,outcome}`,
    `cortex_neuron_model_load_seconds{model}`, and at scrape time
    `cortex_neuron_kv_cache_usage_ratio{model}`, `cortex_neuron_queue_depth{model}`,
    `cortex_neuron_running_requests{model}`, `cortex_neuron_memory_used_bytes`,
    `cortex_neuron_memory_free_bytes`, `cortex_neuron_load_cycles_total`,
    `cortex_neuron_template_folds_total{model}`, `cortex_neuron_preemptions_total{model}`,
    `cortex_neuron_queue_time_seconds{model}` (a request's wait for its first scheduled step;
    these three since the model loaded); and
    `cortex_neuron_inter_token_latency_seconds{model}`,
    `cortex_neuron_prefix_cache_queries_total{model}` / `..._hits_total{model}` (prompt tokens
    looked up in the prefix cache, and those found: their ratio is the hit rate),
    `cortex_build_info{version,python}` and the process's `process_*` metrics (CPU, memory,
    open files).
    """

    def __init__(self, harness: Harness) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cortex_neuron_requests",
            "Requests served, by model, endpoint and HTTP status.",
            ["model", "endpoint", "status"],
            registry=self.registry,
        )
        self.tokens = Counter(
            "cortex_neuron_tokens",
            "Tokens processed, by model and kind (prompt or completion).",
            ["model", "kind"],
            registry=self.registry,
        )
        self.time_to_first_token = Histogram(
            "cortex_neuron_time_to_first_token_seconds",
            "Seconds from a request's arrival to its first generated token.",
            ["model"],
            buckets=TTFT_BUCKETS,
            registry=self.registry,
        )
        self.inter_token_latency = Histogram(
            "cortex_neuron_inter_token_latency_seconds",
            "Seconds between consecutive generated tokens of a request.",
            ["model"],
            buckets=_ITL_BUCKETS,
            registry=self.registry,
        )
        self.prefix_cache_queries = Counter(
            "cortex_neuron_prefix_cache_queries",
            "Prompt tokens looked up in the prefix cache.",
            ["model"],
            registry=self.registry,
        )
        self.prefix_cache_hits = Counter(
            "cortex_neuron_prefix_cache_hits",
            "Prompt tokens found in the prefix cache (their KV reused, not recomputed).",
            ["model"],
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "cortex_neuron_batch_size",
            "Requests in the batch each generated token came from.",
            buckets=_BATCH_BUCKETS,
            registry=self.registry,
        )
        self.model_loads = Counter(
            "cortex_neuron_model_loads",
            "Model loads finished, by model and outcome (ok or error).",
            ["model", "outcome"],
            registry=self.registry,
        )
        self.model_load_seconds = Histogram(
            "cortex_neuron_model_load_seconds",
            "Seconds each model load took.",
            ["model"],
            buckets=_LOAD_BUCKETS,
            registry=self.registry,
        )
        self.registry.register(_HarnessCollector(harness))
        register_process_metrics(self.registry)
        harness.subscribe(self.observe_load)

    def observe_load(self, event: LoadEvent) -> None:
        """Count a finished load and its duration."""
        self.model_loads.labels(event.model, event.outcome).inc()
        self.model_load_seconds.labels(event.model).observe(event.seconds)

    def exposition(self) -> bytes:
        """The text format of every metric."""
        return bytes(generate_latest(self.registry))


def _le(bound: float) -> str:
    """A bucket's `le` label as prometheus_client writes its own histograms' (`1.0`, `+Inf`)."""
    return "+Inf" if math.isinf(bound) else repr(float(bound))


def _per_model_counter(name: str, documentation: str, counts: Mapping[str, int]) -> Metric:
    """A counter family with one sample per model."""
    family = CounterMetricFamily(name, documentation, labels=["model"])
    for model, count in sorted(counts.items()):
        family.add_metric([model], count)
    return family


class _HarnessCollector(Collector):
    """Gauges read from the harness at scrape time."""

    def __init__(self, harness: Harness) -> None:
        self._harness = harness

    def collect(self) -> Iterator[Metric]:
        stats = self._harness.stats()
        kv = GaugeMetricFamily(
            "cortex_neuron_kv_cache_usage_ratio",
            "Fraction of each loaded model's KV cache in use.",
            labels=["model"],
        )
        queue = GaugeMetricFamily(
            "cortex_neuron_queue_depth",
            "Requests waiting to be scheduled, by model.",
            labels=["model"],
        )
        running = GaugeMetricFamily(
            "cortex_neuron_running_requests",
            "Requests being generated, by model.",
            labels=["model"],
        )
        for model, usage in sorted(stats.kv_usage.items()):
            kv.add_metric([model], usage)
            queue.add_metric([model], stats.waiting_by_model.get(model, 0))
            running.add_metric([model], stats.batch_size.get(model, 0))
        yield kv
        yield queue
        yield running
        mb = 1024.0 * 1024.0
        yield GaugeMetricFamily(
            "cortex_neuron_memory_used_bytes",
            "Memory held by loading, loaded and unloading models.",
            value=stats.memory_used_mb * mb,
        )
        yield GaugeMetricFamily(
            "cortex_neuron_memory_free_bytes",
            "Memory left for another model.",
            value=stats.memory_free_mb * mb,
        )
        yield _per_model_counter(
            "cortex_neuron_template_folds",
            "Chats a model's template refused until their system turns were folded, since it "
            "loaded.",
            stats.template_folds,
        )
        yield _per_model_counter(
            "cortex_neuron_preemptions",
            "Running requests the engine preempted (their KV blocks taken back, recomputed "
            "later), since the model loaded.",
            stats.preemptions,
        )
        queue_time = HistogramMetricFamily(
            "cortex_neuron_queue_time_seconds",
            "Seconds from a request's arrival at the engine to its first scheduled step, since "
            "the model loaded.",
            labels=["model"],
        )
        for model, histogram in sorted(stats.queue_time.items()):
            buckets = [(_le(bound), count) for bound, count in histogram.cumulative()]
            queue_time.add_metric([model], buckets, sum_value=histogram.sum_s)
        yield queue_time
        yield CounterMetricFamily(
            "cortex_neuron_load_cycles",
            "Load/unload cycles completed since start.",
            value=stats.load_cycles,
        )
