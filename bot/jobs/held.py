"""What the runner holds of its jobs: each one handed to a backend (`Active`: its backend, its
prompt, how far it got there), the jobs taken off a backend and waiting for another, and those
whose result is being written; how much of a backend they take up. A held job's every change is
saved to the store before anything else happens (`Held.update`).
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from bot.comfy.pool import Backend
from bot.jobs.model import Job, JobState
from bot.jobs.progress import Emit
from bot.jobs.results import EarlyFetches, Writes
from bot.jobs.store import Store


@dataclass
class Active:
    """A job handed to a backend, and what the runner knows of it there."""

    job: Job
    backend: Backend
    task: asyncio.Task[None] | None = None
    cancel_by: str | None = None
    prompt: dict[str, Any] = field(default_factory=dict)
    handed_at: float = field(default_factory=time.monotonic)
    accepted: bool = False  # ComfyUI has queued its prompt
    moving_to: Backend | None = None  # being taken to an idle backend (see `bot.jobs.steal`)
    gpu_since: float | None = None  # when ComfyUI started running it
    ran: bool = False  # ComfyUI said its run succeeded: the GPU is done with it
    # images fetched as soon as ComfyUI says the run succeeded, while its history is read
    early: EarlyFetches = field(default_factory=EarlyFetches)

    @property
    def waiting_there(self) -> bool:
        """Queued in its ComfyUI behind another prompt (prefetched), not started."""
        return self.accepted and self.job.state is JobState.SUBMITTED


class Held:
    """The jobs the runner holds outside its queue, the store they are saved to, where their
    updates go (`emit`), and the event that wakes dispatch (`wake`)."""

    def __init__(self, store: Store, emit: Emit) -> None:
        self.store = store
        self.emit = emit
        self.active: dict[str, Active] = {}
        self.moved: list[Job] = []  # taken from a backend, waiting for another one
        self.writes: Writes[Active] = Writes()  # result announced, being written to disk
        self.wake = asyncio.Event()

    def save(self, job: Job) -> Job:
        self.store.save(job)
        return job

    def update(self, active: Active, **changes: Any) -> Job:
        active.job = self.save(active.job.evolve(**changes))
        return active.job

    def holder(self, job_id: str) -> Active | None:
        """What is held of a job handed to a backend, or whose result is being written."""
        return self.active.get(job_id) or self.writes.holder(job_id)

    def jobs(self) -> list[Job]:
        """Jobs handed to a backend (or being moved to another one)."""
        return [a.job for a in self.active.values()] + list(self.moved)

    def moved_job(self, job_id: str) -> Job | None:
        return next((j for j in self.moved if j.id == job_id), None)

    def load(self, backend: Backend) -> int:
        """Jobs a backend holds now (running and queued in its ComfyUI).

        A prompt orphaned by a websocket drop does not count: ComfyUI runs it anyway, and the
        next job waits in ComfyUI's own queue instead of leaving the GPU idle until the orphan's
        end is noticed. Nor does a job whose run succeeded while its result is being collected:
        the GPU is already on the next one, which the job behind it must not wait for. A job
        being moved to it (see `bot.jobs.steal`) counts.
        """
        return sum(
            1
            for a in self.active.values()
            if a.moving_to is backend
            or (
                a.backend is backend
                and not a.ran
                and not (a.job.prompt_id and backend.client.orphaned(a.job.prompt_id))
            )
        )

    def busy_since(self, backend: Backend) -> float:
        """When the oldest job a backend holds was handed to it (it should free up first)."""
        return min(
            (a.handed_at for a in self.active.values() if a.backend is backend and not a.ran),
            default=0.0,
        )
