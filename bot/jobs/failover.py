"""Failover: taking jobs off a backend that cannot run them, for another that can.

A job moves when its backend stays down past its grace period (the pool's `expired` event), or
when its backend rejects the prompt for lack of a node or model another backend has. What the
old backend may still hold of a moved job is withdrawn when it comes back (`connected`); the
prompts still to withdraw are kept in the store (`WITHDRAW_SCOPE`), so a restart of the bot does
not forget them. When the backends change (`up`, `refreshed`), waiting jobs that none of them can
run any more fail with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from bot.comfy.pool import Backend, BackendEvent, Pool
from bot.errors import BackendUnavailable, PromptRejected
from bot.jobs.dispatch import Dispatcher, Needs
from bot.jobs.held import Active, Held
from bot.jobs.model import Job, JobState
from bot.jobs.progress import JobUpdate
from bot.jobs.scheduler import FairQueue
from bot.tasks import spawn

log = logging.getLogger(__name__)

#: Store scope of the prompts to withdraw from a backend when it comes back (by backend name).
WITHDRAW_SCOPE = "pool.withdraw"


@dataclass(eq=False)
class Failover:
    """Moves the runner's jobs between backends as the pool's events say, and withdraws what a
    returning backend still holds of them."""

    held: Held
    pool: Pool
    queue: FairQueue
    dispatcher: Dispatcher
    needs_for: Callable[[Job], Needs | None]
    refusal: Callable[[Job], str | None]  # why no backend can run a job (None: one can)
    # backend name -> prompt ids to withdraw there
    _abandoned: dict[str, set[str]] = field(default_factory=dict, init=False)

    def restore(self) -> None:
        """Read the prompts still to withdraw from the store; withdraw them where connected."""
        for (scope, name), prompt_ids in self.held.store.settings_in(WITHDRAW_SCOPE).items():
            backend = self.pool.get(name)
            if scope != WITHDRAW_SCOPE or backend is None or not isinstance(prompt_ids, list):
                continue
            self._abandoned[name] = {str(p) for p in prompt_ids}
            if backend.client.connected:
                spawn(self._withdraw(backend), name=f"withdraw:{name}")

    def on_backend(self, event: BackendEvent) -> None:
        backend = event.backend
        if event.kind == "connected":
            if self._abandoned.get(backend.name):
                spawn(self._withdraw(backend), name=f"withdraw:{backend.name}")
            self.held.wake.set()  # prompts orphaned by the drop no longer hold their slots
        elif event.kind in ("up", "refreshed"):
            self.refuse_unrunnable()
            self.held.wake.set()
        elif event.kind == "expired":
            for active in [a for a in self.held.active.values() if a.backend is backend]:
                needs = self.needs_for(active.job)
                others = [b for b in self.pool if b is not backend]
                if needs is not None and not self.dispatcher.capable(needs, others):
                    continue  # nowhere else to go: it waits for its backend
                spawn(self._move(active, "its backend is down"), name=f"move-{active.job.id}")

    async def rejected_for_lack(self, active: Active, exc: PromptRejected) -> bool:
        """After a rejection, read the backend's nodes again: if it lacks what the job needs
        and another backend has it, move the job there (True). Else the rejection stands."""
        backend = active.backend
        await backend.refresh()
        needs = self.needs_for(active.job)
        if needs is None or not self.dispatcher.missing(needs, backend):
            return False
        others = [b for b in self.pool if b is not backend]
        if not self.dispatcher.capable(needs, others):
            return False
        del self.held.active[active.job.id]
        self._requeue_moved(active, f"rejected: {exc.message}")
        return True

    def refuse_unrunnable(self) -> None:
        """Fail the waiting jobs that no backend can run any more (their needs are gone)."""
        held = self.held
        for job in list(self.queue.order()) + list(held.moved):
            reason = self.refusal(job)
            if reason is None:
                continue
            if self.queue.remove(job.id) is None and job in held.moved:
                held.moved.remove(job)
            failed = held.save(
                job.evolve(state=JobState.FAILED, error=reason, finished_at=time.time())
            )
            held.emit(JobUpdate(failed, "finished"))

    async def _withdraw(self, backend: Backend) -> None:
        """Delete (or interrupt) on a returning backend the prompts moved elsewhere."""
        pending = self._abandoned.get(backend.name, set())
        for prompt_id in sorted(pending):
            try:
                await backend.client.cancel(prompt_id)
            except BackendUnavailable as exc:
                log.warning(
                    "cannot withdraw prompt %s from %s yet: %s", prompt_id, backend.name, exc
                )
                return
            log.info("withdrew prompt %s from %s (its job ran elsewhere)", prompt_id, backend.name)
            pending.discard(prompt_id)
            self._keep_abandoned(backend.name)

    def _keep_abandoned(self, backend: str) -> None:
        """Store the prompts still to withdraw from a backend (a restart must not forget them)."""
        pending = sorted(self._abandoned.get(backend, ()))
        self.held.store.set_setting(WITHDRAW_SCOPE, backend, pending or None)

    async def _move(self, active: Active, why: str) -> None:
        """Take a job from its backend and give it to the next capable one."""
        job = active.job
        if self.held.active.get(job.id) is not active:
            return
        del self.held.active[job.id]
        task = active.task
        if task is not None and task is not asyncio.current_task():
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._requeue_moved(active, why)

    def _requeue_moved(self, active: Active, why: str) -> None:
        job, backend = active.job, active.backend
        if job.prompt_id:
            self._abandoned.setdefault(backend.name, set()).add(job.prompt_id)
            self._keep_abandoned(backend.name)
            backend.client.untrack(job.prompt_id)
        log.warning("job %s moves away from %s: %s", job.id, backend.name, why)
        moved = self.held.save(job.evolve(state=JobState.QUEUED, prompt_id=None, backend=None))
        self.held.moved.append(moved)
        self.held.emit(JobUpdate(moved, "retrying"))
        self.held.wake.set()
