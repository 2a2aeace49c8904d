"""The last hour of the engine, sampled: each backend's busy share, the queue, job times.

    Sample    one moment: the share of the last interval each backend spent running a job,
              how many jobs waited and ran, how many finished done and their mean time
    History   a bounded ring of samples (one per `interval` seconds, `span` seconds' worth),
              fed from what the engine already knows: its queue, its job updates and the
              busy seconds the metrics count per backend

`History.sample()` takes one sample; `History.run()` takes one per interval until cancelled
(the HTTP server starts it for as long as it serves). Nothing here is stored: a restart begins
an empty hour.
"""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from bot.engine import Engine
from bot.jobs.model import JobState
from bot.jobs.runner import JobUpdate

INTERVAL = 10.0
SPAN = 3600.0


@dataclass(frozen=True)
class Sample:
    """The engine at one moment (`at`, Unix seconds), over the interval that ended then.

    Attributes:
        busy: backend name -> share of the interval it ran at least one job (0 to 1).
        queued: jobs waiting for their turn.
        running: jobs handed to a backend.
        jobs_done: jobs that finished done during the interval.
        job_seconds: their mean seconds on ComfyUI (None when none finished).
    """

    at: float
    busy: Mapping[str, float]
    queued: int
    running: int
    jobs_done: int
    job_seconds: float | None


class History:
    """A ring of the last `span` seconds of samples. `close()` stops following the engine."""

    def __init__(
        self,
        engine: Engine,
        busy_seconds: Callable[[], Mapping[str, float]],
        *,
        interval: float = INTERVAL,
        span: float = SPAN,
        clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if interval <= 0 or span < interval:
            raise ValueError("interval must be positive and at most the span")
        self.engine = engine
        self.interval = interval
        self.span = span
        self._busy_seconds = busy_seconds
        self._clock = clock
        self._monotonic = monotonic
        self._samples: deque[Sample] = deque(maxlen=int(span // interval))
        self._last_busy = dict(busy_seconds())
        self._last_at = monotonic()
        self._finished: list[float] = []
        self._unlisten = engine.listen(self._on_update)

    def close(self) -> None:
        self._unlisten()

    def _on_update(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "finished" and job.state is JobState.DONE and job.elapsed is not None:
            self._finished.append(job.elapsed)

    def sample(self) -> Sample:
        """Take a sample of the interval since the last one and keep it."""
        now = self._monotonic()
        elapsed = now - self._last_at
        totals = dict(self._busy_seconds())
        busy: dict[str, float] = {}
        for backend in [b.name for b in self.engine.pool] + sorted(totals):
            if backend in busy:
                continue
            spent = totals.get(backend, 0.0) - self._last_busy.get(backend, 0.0)
            busy[backend] = min(1.0, max(0.0, spent / elapsed)) if elapsed > 0 else 0.0
        entries = self.engine.queue_entries()
        finished, self._finished = self._finished, []
        sample = Sample(
            at=self._clock(),
            busy=busy,
            queued=sum(1 for e in entries if e.position > 0),
            running=sum(1 for e in entries if e.position == 0),
            jobs_done=len(finished),
            job_seconds=sum(finished) / len(finished) if finished else None,
        )
        self._samples.append(sample)
        self._last_busy, self._last_at = totals, now
        return sample

    def samples(self) -> list[Sample]:
        """The samples kept, oldest first."""
        return list(self._samples)

    async def run(self) -> None:
        """Take a sample every `interval` seconds until cancelled."""
        while True:
            await asyncio.sleep(self.interval)
            self.sample()
