"""Prometheus metrics of one comfycord process (served by the HTTP API at /metrics).

Jobs by state and workflow, the queue's length, busy seconds per ComfyUI backend, job
durations, Discord edits and rate limits, HTTP requests by route and status. Each `Metrics` has
its own registry, so several engines in one process (tests) never collide.
"""

from __future__ import annotations

import time
from collections import Counter as Tally
from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

from bot.engine import Engine
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
DURATION_BUCKETS = (0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300, 600, float("inf"))


def backend_of(engine: Engine, job: Job) -> str:
    """The backend label of a job: the pool's name of the backend it ran on."""
    if job.backend:
        return job.backend
    backends = list(engine.pool)
    return backends[0].name if backends else "unknown"


class Metrics:
    """The registry and the counters; follows the engine's updates."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self.registry = CollectorRegistry()
        r = self.registry
        self.jobs_created = Counter(
            "comfycord_jobs_created", "Jobs queued", ["workflow"], registry=r
        )
        self.jobs_finished = Counter(
            "comfycord_jobs_finished", "Jobs finished", ["workflow", "state"], registry=r
        )
        self.duration = Histogram(
            "comfycord_job_duration_seconds",
            "Time from start on ComfyUI to the end of done jobs",
            ["workflow"],
            buckets=DURATION_BUCKETS,
            registry=r,
        )
        self.discord_edits = Counter(
            "comfycord_discord_edits", "Messages the bot edited on Discord", registry=r
        )
        self.discord_rate_limited = Counter(
            "comfycord_discord_rate_limited", "Discord answers with HTTP 429", registry=r
        )
        self.http_requests = Counter(
            "comfycord_http_requests",
            "HTTP API requests",
            ["route", "method", "status"],
            registry=r,
        )
        self._running: dict[str, set[str]] = {}
        self._busy_since: dict[str, float] = {}
        self._busy_total: dict[str, float] = {}
        r.register(_EngineCollector(self))
        self._unlisten = engine.listen(self._on_update)

    def close(self) -> None:
        self._unlisten()

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def _on_update(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "queued":
            self.jobs_created.labels(job.workflow).inc()
        elif update.kind == "started":
            self._busy(job, True)
        elif update.kind == "finished":
            self._busy(job, False)
            self.jobs_finished.labels(job.workflow, job.state.value).inc()
            if job.state is JobState.DONE and job.elapsed is not None:
                self.duration.labels(job.workflow).observe(job.elapsed)

    def _busy(self, job: Job, running: bool) -> None:
        backend = backend_of(self.engine, job)
        jobs = self._running.setdefault(backend, set())
        now = time.monotonic()
        if running:
            if not jobs:
                self._busy_since[backend] = now
            jobs.add(job.id)
        elif job.id in jobs:
            jobs.discard(job.id)
            if not jobs:
                self._busy_total[backend] = self._busy_total.get(backend, 0.0) + (
                    now - self._busy_since.pop(backend, now)
                )

    def busy_seconds(self) -> dict[str, float]:
        now = time.monotonic()
        totals: dict[str, float] = dict(self._busy_total)
        for backend, since in self._busy_since.items():
            totals[backend] = totals.get(backend, 0.0) + now - since
        for backend in self.engine.pool:
            totals.setdefault(backend.name, 0.0)
        return totals


class _EngineCollector(Collector):
    """What is read from the engine at scrape time: active jobs, the queue, busy seconds."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def collect(self) -> Iterator[Metric]:
        engine = self.metrics.engine
        active = GaugeMetricFamily(
            "comfycord_jobs", "Unfinished jobs by state and workflow", labels=["state", "workflow"]
        )
        tally: Tally[tuple[str, str]] = Tally()
        entries = engine.queue_entries()
        for entry in entries:
            tally[(entry.job.state.value, entry.job.workflow)] += 1
        for (state, workflow), n in sorted(tally.items()):
            active.add_metric([state, workflow], n)
        yield active
        queue = GaugeMetricFamily("comfycord_queue_length", "Jobs waiting for their turn")
        queue.add_metric([], sum(1 for e in entries if e.position > 0))
        yield queue
        busy = CounterMetricFamily(
            "comfycord_backend_busy_seconds",
            "Seconds a ComfyUI backend spent running at least one job",
            labels=["backend"],
        )
        for backend, seconds in sorted(self.metrics.busy_seconds().items()):
            busy.add_metric([backend], seconds)
        yield busy
