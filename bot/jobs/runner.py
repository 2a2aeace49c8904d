"""Drives jobs on ComfyUI: takes them from the fair queue, hands each to a backend of the pool
that can run it, follows it there, collects the images. This is the job loop (admission to
dispatch to completion). Around it: what it holds of the jobs outside its queue
`bot.jobs.held`, what listeners are told of a run `bot.jobs.progress`, its results on their way
to disk and to delivery `bot.jobs.results`, the retries while a ComfyUI is unreachable
`bot.jobs.retry`, moving jobs off a backend that went down `bot.jobs.failover`, and a prefetched
job to an idle backend `bot.jobs.steal`.

Every state change is saved before anything else happens, so after a crash `Runner.start()`
resumes each unfinished job: a prompt ComfyUI already finished is collected from its history,
one it still runs is followed, and one it never got (or forgot in a restart) is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections.abc import Awaitable, Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

from bot.comfy.client import PromptResult
from bot.comfy.events import ImageRef
from bot.comfy.pool import Backend, Pool
from bot.errors import BackendUnavailable, Interrupted, OutputMissing, PromptRejected, UserError
from bot.jobs import retry
from bot.jobs.dispatch import Dispatcher, Needs
from bot.jobs.failover import WITHDRAW_SCOPE, Failover
from bot.jobs.follow import follow
from bot.jobs.held import Active, Held
from bot.jobs.model import Job, JobState, Output
from bot.jobs.progress import Emit, JobUpdate
from bot.jobs.results import collect, run_failure, write_files
from bot.jobs.scheduler import FairQueue
from bot.jobs.steal import Stealer
from bot.jobs.store import Store
from bot.tasks import spawn

log = logging.getLogger(__name__)

__all__ = ["MAX_ATTEMPTS", "WITHDRAW_SCOPE", "BuildPrompt", "Emit", "JobUpdate", "Runner"]

MAX_ATTEMPTS = 3
T = TypeVar("T")
BuildPrompt = Callable[[Job, Backend], Awaitable[dict[str, Any]]]


class Runner:
    """Moves jobs from the fair queue to the backends of the pool.

    Each backend gets `max_in_flight` jobs at once, plus `prefetch` more queued in ComfyUI
    behind them (so that the next one starts the moment the GPU frees up); every job is the
    next one in fair order that a free backend can run. Backend events (see `bot.comfy.pool`)
    drive failover: the jobs of a backend down past its grace period go to another capable
    backend, and what it still holds of them is withdrawn when it comes back.
    """

    def __init__(
        self,
        pool: Pool,
        store: Store,
        queue: FairQueue,
        build_prompt: BuildPrompt,
        outputs_dir: Path,
        emit: Emit,
        *,
        needs: Callable[[Job], Needs] | None = None,
        substitute_models: bool = True,
        prefetch: int = 0,
        running_limit: Callable[[Job], int | None] = lambda job: None,
        submit_retry_seconds: float = 60.0,
        fetch_retry_seconds: float = 30.0,
    ) -> None:
        self.pool = pool
        self.dispatcher = Dispatcher(pool, substitute=substitute_models)
        self.store = store
        self.queue = queue
        self.build_prompt = build_prompt
        self.outputs_dir = outputs_dir
        self.emit = emit
        self.needs_of = needs or (lambda job: Needs(frozenset()))
        self.prefetch = prefetch
        self.running_limit = running_limit
        self.submit_retry_seconds = submit_retry_seconds
        self.fetch_retry_seconds = fetch_retry_seconds
        self._held = Held(store, emit)
        self._needs: dict[str, Needs | None] = {}
        self._failover = Failover(
            self._held, pool, queue, self.dispatcher, self._needs_for, self.refusal
        )
        self._stealer = Stealer(
            self._held,
            self.dispatcher,
            self._capable,
            running_limit,
            lambda job, backend, resume: self._launch(job, backend, resume=resume),
        )
        self._loop_task: asyncio.Task[None] | None = None
        pool.listen(self._failover.on_backend)

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume unfinished jobs from the store, then start dispatching."""
        for job in self.store.unfinished():
            backend = self.pool.get(job.backend) if job.backend else self.pool.backends[0]
            if job.state is JobState.QUEUED or not job.prompt_id or backend is None:
                if job.state is not JobState.QUEUED or job.prompt_id:
                    job = self._held.save(job.evolve(state=JobState.QUEUED, prompt_id=None))
                self.queue.add(job)
            else:
                log.info("resuming job %s (prompt %s on %s)", job.id, job.prompt_id, backend.name)
                self._launch(job, backend, resume=True)
        self._failover.restore()
        self._loop_task = spawn(self._dispatch_loop(), name="dispatch")
        self._announce_positions()
        self._held.wake.set()

    async def stop(self) -> None:
        """Stop driving jobs. Their state stays in the store and resumes on the next start."""
        tasks = [a.task for a in self._held.active.values() if a.task is not None]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._held.active.clear()
        self._held.moved.clear()
        await self._held.writes.finish_all()  # results announced are written before stopping

    # public ---------------------------------------------------------------------------------
    def enqueue(self, job: Job, *, saved: bool = False) -> Job:
        """Queue a job (`saved`: the caller already stored it as queued)."""
        if not saved:
            job = self._held.save(job.evolve(state=JobState.QUEUED))
        self.queue.add(job)
        self.emit(JobUpdate(job, "queued", position=self.queue.position(job.id)))
        if self._loop_task is None:
            self._held.wake.set()  # handed out once the runner starts
        else:
            # handed out at once: a wake-up of the dispatch loop would wait behind all the loop
            # holds (in a burst, every command's next step), and a GPU with it
            self._dispatch()
        self._announce_positions()
        return job

    def replace(self, job: Job) -> None:
        """Save a changed copy of a job (e.g. its meta) wherever the runner holds it."""
        active = self._held.holder(job.id)
        if active is not None:  # kept there too, or its final record would write over it
            job = active.job.evolve(meta=job.meta)
            active.job = job
        elif job.id in self.queue:
            self.queue.add(job)
        else:
            for index, moved in enumerate(self._held.moved):
                if moved.id == job.id:
                    job = moved.evolve(meta=job.meta)
                    self._held.moved[index] = job
        self._held.save(job)

    def active_jobs(self) -> list[Job]:
        """Jobs handed to a backend (or being moved to another one)."""
        return self._held.jobs()

    def job(self, job_id: str) -> Job | None:
        """The job as the runner holds it (queued, handed to a backend, moved, or its result
        being written); None when it holds no such job (finished, or unknown)."""
        active = self._held.holder(job_id)
        if active is not None:
            return active.job
        queued = self.queue.get(job_id)
        if queued is not None:
            return queued
        return self._held.moved_job(job_id)

    def running_count(self, owner_id: str) -> int:
        return sum(1 for j in self.active_jobs() if j.owner_id == owner_id)

    @property
    def max_in_flight(self) -> int:
        """Jobs the pool runs at once: the sum over its backends that are up (or all)."""
        up = [b for b in self.pool if b.up] or list(self.pool)
        return sum(b.max_in_flight for b in up)

    def load(self, backend: Backend) -> int:
        """Jobs a backend holds now (running and queued in its ComfyUI; see `Held.load`)."""
        return self._held.load(backend)

    def finishing(self, job_id: str) -> bool:
        """The job's result is announced; its files and record are being written."""
        return job_id in self._held.writes

    def position(self, job_id: str) -> int | None:
        """1-based place among jobs waiting to start (0 if it has started, None if unknown)."""
        if job_id in self._held.active or self._held.moved_job(job_id) is not None:
            return 0
        return self.queue.position(job_id)

    async def saved(self, job_ids: Iterable[str]) -> None:
        """Wait until the final records of these jobs are stored (at once if they are).

        Between a job's `result` and its `finished` update its files and record are being
        written; whoever marks the job delivered waits for that first, so that the mark is
        never written over (and a crash in between delivers again after the restart).
        """
        await self._held.writes.saved(job_ids)

    def hold_saving(self, job_ids: Iterable[str]) -> Callable[[], None]:
        """Make the disk write of jobs whose `result` was just announced wait until the
        returned function is called (at most `SAVE_HOLD` seconds): a delivery that sends the
        bytes first is not slowed by it. Call it right after the result went out (or failed).
        Jobs not being saved are left alone.
        """
        return self._held.writes.hold(job_ids)

    def refusal(self, job: Job) -> str | None:
        """Why no backend can run this job (None: one can, or may once it is reachable)."""
        if len(self.pool) == 1:
            return None  # its ComfyUI answers for itself
        needs = self._needs_for(job)
        return None if needs is None else self.dispatcher.refusal(needs)

    async def cancel(self, job_id: str, by: str) -> Job | None:
        """Cancel a queued or running job. Returns the job as it now stands, None if unknown.

        A running job is interrupted on ComfyUI; it turns `cancelled` when ComfyUI confirms.
        """
        queued = self.queue.remove(job_id)
        moved = self._held.moved_job(job_id)
        if moved is not None:
            self._held.moved.remove(moved)
        queued = queued or moved
        if queued is not None:
            job = self._held.save(
                queued.evolve(
                    state=JobState.CANCELLED, error=f"Cancelled by {by}", finished_at=time.time()
                )
            )
            self._needs.pop(job_id, None)
            self.emit(JobUpdate(job, "finished"))
            self._announce_positions()
            return job
        active = self._held.active.get(job_id)
        if active is None:
            return self.store.get(job_id)
        active.cancel_by = by
        if active.job.prompt_id:
            await active.backend.client.cancel(active.job.prompt_id)
        return active.job

    # dispatch -------------------------------------------------------------------------------
    def _needs_for(self, job: Job) -> Needs | None:
        if job.id not in self._needs:
            try:
                self._needs[job.id] = self.needs_of(job)
            except UserError:
                self._needs[job.id] = None  # e.g. its workflow is gone: running it says so
        return self._needs[job.id]

    def _capable(self, job: Job, backends: list[Backend]) -> list[Backend]:
        if len(self.pool) == 1:
            return backends
        needs = self._needs_for(job)
        return backends if needs is None else self.dispatcher.capable(needs, backends)

    async def _dispatch_loop(self) -> None:
        while True:
            await self._held.wake.wait()
            self._held.wake.clear()
            if self._dispatch():
                self._announce_positions()

    def _dispatch(self) -> bool:
        """Hand out jobs while a backend has room; returns whether any was handed out.

        First to idle backends: a job prefetched on a busy backend moves to an idle one
        (it was picked before every waiting job), then the next jobs in fair order. Then one
        job more per busy backend (`prefetch`), soonest free first.
        """
        started = False
        while True:
            # With no backend up, jobs go to the backends as they are and wait there for one to
            # answer (up to `submit_retry_seconds`), as with a single ComfyUI.
            up = [b for b in self.pool if b.up] or list(self.pool)
            free = [b for b in up if self.load(b) < b.max_in_flight]
            if self._stealer.steal_for(free):
                continue
            picked = self._pick(free)
            if picked is None and self.prefetch:
                room = [b for b in up if self.load(b) < b.max_in_flight + self.prefetch]
                for backend in sorted(room, key=self._held.busy_since):
                    picked = self._pick([backend])
                    if picked is not None:
                        break
            if picked is None:
                return started
            job, backend = picked
            self._launch(job, backend, resume=False)
            started = True

    def _pick(self, backends: list[Backend]) -> tuple[Job, Backend] | None:
        """The next job in fair order that one of `backends` can run, and the one to run it.

        Jobs handed to a backend count towards their member's running limit, prefetched or not.
        """
        if not backends:
            return None
        for job in self._held.moved:  # already picked once: they go first
            backend = self.dispatcher.choose(self._capable(job, backends), self.load)
            if backend is not None:
                self._held.moved.remove(job)
                return job, backend
        running: dict[str, int] = {}
        for job in self.active_jobs():
            running[job.owner_id] = running.get(job.owner_id, 0) + 1
        chosen = self.queue.pop_next(
            running, self.running_limit, accept=lambda j: bool(self._capable(j, backends))
        )
        if chosen is None:
            return None
        backend = self.dispatcher.choose(self._capable(chosen, backends), self.load)
        assert backend is not None  # accepted above
        return chosen, backend

    def _launch(self, job: Job, backend: Backend, *, resume: bool) -> None:
        active = Active(job, backend)
        self._held.active[job.id] = active
        active.task = spawn(self._drive(active, resume=resume), name=f"job-{job.id}")

    def _announce_positions(self) -> None:
        """Tell listeners about the waiting jobs whose position entered another band.

        Only those: every position changes when the queue moves, but a member only cares
        about the band (1, 2, 3, 5, 10, 20, ...); `FairQueue` finds them without a full scan.
        """
        for job, position in self.queue.take_band_changes():
            self.emit(JobUpdate(job, "position", position=position))

    # driving one job ------------------------------------------------------------------------
    async def _drive(self, active: Active, *, resume: bool) -> None:
        job = active.job
        client = active.backend.client
        try:
            result: PromptResult | None = None
            if resume and job.prompt_id:
                active.accepted = True
                tracker = client.track(job.prompt_id, resume=True)
                await client.reconcile(job.prompt_id)
                result = await follow(self._held, active, tracker)
            while result is None or result.status == "lost":
                if active.cancel_by is not None:
                    raise Interrupted(f"Cancelled by {active.cancel_by}")
                if active.job.attempts >= MAX_ATTEMPTS:
                    raise OutputMissing(
                        f"ComfyUI lost this job {MAX_ATTEMPTS} times (restarts?); giving up"
                    )
                active.prompt = await self._retrying(
                    active,
                    "ComfyUI went away while receiving your image",
                    lambda: self.build_prompt(active.job, active.backend),
                )
                prompt_id = client.new_prompt_id()
                self._held.update(
                    active,
                    state=JobState.SUBMITTED,
                    prompt_id=prompt_id,
                    backend=active.backend.name,
                    attempts=active.job.attempts + 1,
                    started_at=active.job.started_at or time.time(),
                )
                self.emit(JobUpdate(active.job, "submitted"))
                tracker = client.track(prompt_id)
                try:
                    accepted = await retry.submit(
                        client,
                        active.prompt,
                        prompt_id,
                        seconds=self.submit_retry_seconds,
                        retried=lambda: self.emit(JobUpdate(active.job, "retrying")),
                    )
                except PromptRejected as exc:
                    if await self._failover.rejected_for_lack(active, exc):
                        return
                    raise
                if accepted != prompt_id:  # an older ComfyUI chose its own id
                    self._held.update(active, prompt_id=accepted)
                active.accepted = True
                if active.cancel_by is not None:
                    await client.cancel(accepted)
                result = await follow(self._held, active, tracker)
            await self._finish(active, result)
        except asyncio.CancelledError:
            raise
        except BackendUnavailable as exc:
            # the details (address, error) are for the log; the member gets plain words
            log.warning("job %s failed: %s", job.id, exc.message)
            active.backend.note_error(exc.message)
            self._fail(active, BackendUnavailable(retry.plain_unreachable(exc)))
        except UserError as exc:
            active.backend.note_error(exc.message)
            self._fail(active, exc)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            self._fail(active, None)
        finally:
            active.early.drop()
            if active.gpu_since is not None:
                active.backend.busy_seconds += time.monotonic() - active.gpu_since
                active.gpu_since = None
            if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                if self._held.active.get(job.id) is active:
                    del self._held.active[job.id]
                self._needs.pop(job.id, None)
                self._held.wake.set()

    async def _retrying(self, active: Active, note: str, call: Callable[[], Awaitable[T]]) -> T:
        """`call()`, tried again while ComfyUI is unreachable (see `retry.retrying`).

        Raises:
            BackendUnavailable: still unreachable after `fetch_retry_seconds`.
        """
        return await retry.retrying(
            call,
            job_id=active.job.id,
            note=note,
            seconds=self.fetch_retry_seconds,
            retried=lambda: self.emit(JobUpdate(active.job, "retrying", note=note)),
        )

    async def _image(self, active: Active, ref: ImageRef) -> bytes:
        early = await active.early.take(ref)
        if early is not None:
            return early
        return await self._retrying(  # fetched again, with retries
            active,
            "ComfyUI went away while sending your image",
            functools.partial(active.backend.client.fetch_image, ref),
        )

    async def _finish(self, active: Active, result: PromptResult) -> None:
        failure = run_failure(result, active.prompt, active.cancel_by)
        if failure is not None:
            raise failure
        folder = self.outputs_dir / active.job.id
        outputs, images = await collect(
            result.outputs, folder, functools.partial(self._image, active)
        )
        done = {
            "state": JobState.DONE,
            "outputs": tuple(outputs),
            "finished_at": time.time(),
            "error": None,
        }
        # The bytes are announced first, so that a delivery can go out before they are written
        # (a listener that sends them may hold the write until then, see `hold_saving`); the
        # backend is free for the next job meanwhile. A crash before the record is saved
        # leaves the job running in the store: after the restart it is collected from ComfyUI
        # again and delivered again, which repeats the same result (harmless).
        job_id = active.job.id
        self._held.writes.begin(
            job_id, active, self._persist(active, folder, outputs, images, done)
        )
        self.emit(JobUpdate(active.job.evolve(**done), "result", images=tuple(images)))

    async def _persist(
        self,
        active: Active,
        folder: Path,
        outputs: list[Output],
        images: list[bytes],
        done: dict[str, Any],
    ) -> None:
        """Write a finished job's files and record, then announce it `finished`."""
        job_id = active.job.id
        try:
            await self._held.writes.held(job_id)
            try:
                await write_files(folder, outputs, images)
            except Exception:
                log.exception("job %s: its images could not be written", job_id)
                self._fail(active, None)
                return
            active.backend.jobs_done += 1
            self._held.update(active, **done)
            self.emit(JobUpdate(active.job, "finished", images=tuple(images)))
        finally:
            self._held.writes.done(job_id)

    def _fail(self, active: Active, exc: UserError | None) -> None:
        state = JobState.CANCELLED if isinstance(exc, Interrupted) else JobState.FAILED
        message = exc.message if exc else f"Something went wrong (job {active.job.id})"
        self._held.update(active, state=state, error=message, finished_at=time.time())
        self.emit(JobUpdate(active.job, "finished"))
