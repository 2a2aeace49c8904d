"""Moving a job prefetched on a busy backend to one that became idle: its prompt is withdrawn
from the busy ComfyUI's queue and the job runs on the idle one. A job that started meanwhile (or
is being cancelled) stays where it is and is followed there again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass

from bot.comfy.pool import Backend
from bot.errors import BackendUnavailable
from bot.jobs.dispatch import Dispatcher
from bot.jobs.held import Active, Held
from bot.jobs.model import Job, JobState
from bot.tasks import spawn

log = logging.getLogger(__name__)

Capable = Callable[[Job, list[Backend]], list[Backend]]
Launch = Callable[[Job, Backend, bool], None]  # (job, backend, resume)


@dataclass(eq=False)
class Stealer:
    """Takes prefetched jobs to idle backends, for the runner's dispatch."""

    held: Held
    dispatcher: Dispatcher
    capable: Capable  # the backends among these that can run the job
    running_limit: Callable[[Job], int | None]  # how many jobs its member may run at once
    launch: Launch

    def steal_for(self, free: list[Backend]) -> bool:
        """Move a job prefetched on a busy backend to an idle one; returns whether it did."""
        held = self.held
        waiting = sorted(
            (
                a
                for a in held.active.values()
                if a.waiting_there and a.moving_to is None and a.backend.up
            ),
            key=lambda a: a.handed_at,
        )
        for active in waiting:
            if held.load(active.backend) <= active.backend.max_in_flight:
                continue  # next in line there: it starts as soon as that backend can
            others = sum(
                1
                for a in held.active.values()
                if a.job.owner_id == active.job.owner_id and a is not active
            )
            cap = self.running_limit(active.job)
            if cap is not None and others >= cap:
                continue  # it waits behind its member's own job
            targets = self.capable(active.job, [b for b in free if b is not active.backend])
            target = self.dispatcher.choose(targets, held.load)
            if target is not None:
                active.moving_to = target
                spawn(self._steal(active, target), name=f"steal-{active.job.id}")
                return True
        return False

    async def _steal(self, active: Active, target: Backend) -> None:
        """Withdraw a prefetched prompt from its backend and run the job on `target`."""
        held = self.held
        job, source = active.job, active.backend
        prompt_id = job.prompt_id
        task = active.task
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        withdrawn = False
        if prompt_id:
            try:
                withdrawn = await source.client.delete_pending(prompt_id)
            except BackendUnavailable as exc:
                log.info("could not withdraw %s from %s: %s", prompt_id, source.name, exc)
        if held.active.get(job.id) is not active:
            return  # cancelled meanwhile
        del held.active[job.id]
        if withdrawn and active.cancel_by is None:
            log.info("job %s moves from %s to idle %s", job.id, source.name, target.name)
            job = held.save(job.evolve(state=JobState.QUEUED, prompt_id=None, backend=None))
            self.launch(job, target, False)
        else:  # it started there after all (or is being cancelled): follow it again
            self.launch(active.job, source, True)
            held.active[job.id].cancel_by = active.cancel_by
        held.wake.set()
