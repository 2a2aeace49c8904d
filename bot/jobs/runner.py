"""Drives jobs on ComfyUI: takes them from the fair queue, follows them, collects the images.

Every state change is saved before anything else happens, so after a crash `Runner.start()`
resumes each unfinished job: a prompt ComfyUI already finished is collected from its history,
one it still runs is followed, and one it never got (or forgot in a restart) is sent again.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from PIL import Image

from bot.comfy.client import ComfyClient, PromptResult, PromptTracker
from bot.comfy.events import (
    Event,
    Executing,
    ExecutionCached,
    ExecutionStart,
    Preview,
    Progress,
)
from bot.errors import (
    BackendUnavailable,
    ExecutionFailed,
    Interrupted,
    OutputMissing,
    UserError,
)
from bot.jobs.model import Job, JobState, Output
from bot.jobs.scheduler import FairQueue
from bot.jobs.store import Store
from bot.tasks import spawn

log = logging.getLogger(__name__)

MAX_ATTEMPTS = 3
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".gif"}


@dataclass(frozen=True)
class JobUpdate:
    """Something happened to a job: what listeners (Discord, the CLI) are told.

    kind is one of: queued, position, submitted, retrying (ComfyUI unreachable), started,
    progress, preview, finished.
    """

    job: Job
    kind: str
    position: int | None = None
    node_index: int = 0
    node_count: int = 0
    node_title: str | None = None
    step: int = 0
    steps: int = 0
    preview: bytes | None = None
    preview_mime: str | None = None


Emit = Callable[[JobUpdate], None]
BuildPrompt = Callable[[Job], Awaitable[dict[str, Any]]]


@dataclass
class _Active:
    job: Job
    task: asyncio.Task[None] | None = None
    cancel_by: str | None = None
    prompt: dict[str, Any] = field(default_factory=dict)


class Runner:
    """Moves jobs from the queue to ComfyUI, `max_in_flight` at a time."""

    def __init__(
        self,
        client: ComfyClient,
        store: Store,
        queue: FairQueue,
        build_prompt: BuildPrompt,
        outputs_dir: Path,
        emit: Emit,
        *,
        max_in_flight: int = 1,
        running_limit: Callable[[Job], int | None] = lambda job: None,
        submit_retry_seconds: float = 60.0,
    ) -> None:
        self.client = client
        self.store = store
        self.queue = queue
        self.build_prompt = build_prompt
        self.outputs_dir = outputs_dir
        self.emit = emit
        self.max_in_flight = max_in_flight
        self.running_limit = running_limit
        self.submit_retry_seconds = submit_retry_seconds
        self._active: dict[str, _Active] = {}
        self._wake = asyncio.Event()
        self._loop_task: asyncio.Task[None] | None = None

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Resume unfinished jobs from the store, then start dispatching."""
        for job in self.store.unfinished():
            if job.state is JobState.QUEUED or not job.prompt_id:
                if job.state is not JobState.QUEUED:
                    job = self._save(job.evolve(state=JobState.QUEUED))
                self.queue.add(job)
            else:
                log.info("resuming job %s (prompt %s)", job.id, job.prompt_id)
                self._launch(job, resume=True)
        self._loop_task = spawn(self._dispatch_loop(), name="dispatch")
        self._announce_positions()

    async def stop(self) -> None:
        """Stop driving jobs. Their state stays in the store and resumes on the next start."""
        tasks = [a.task for a in self._active.values() if a.task is not None]
        if self._loop_task is not None:
            tasks.append(self._loop_task)
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._active.clear()

    # public ---------------------------------------------------------------------------------
    def enqueue(self, job: Job) -> Job:
        job = self._save(job.evolve(state=JobState.QUEUED))
        self.queue.add(job)
        self.emit(JobUpdate(job, "queued", position=self.queue.position(job.id)))
        self._announce_positions()
        self._wake.set()
        return job

    def replace(self, job: Job) -> None:
        """Save a changed copy of a job (e.g. its meta) wherever the runner holds it."""
        active = self._active.get(job.id)
        if active is not None:
            job = active.job.evolve(meta=job.meta)
            active.job = job
        elif job.id in self.queue:
            self.queue.add(job)
        self._save(job)

    def active_jobs(self) -> list[Job]:
        return [a.job for a in self._active.values()]

    def running_count(self, owner_id: str) -> int:
        return sum(1 for a in self._active.values() if a.job.owner_id == owner_id)

    def position(self, job_id: str) -> int | None:
        """1-based place among jobs waiting to start (0 if it has started, None if unknown)."""
        if job_id in self._active:
            return 0
        return self.queue.position(job_id)

    async def cancel(self, job_id: str, by: str) -> Job | None:
        """Cancel a queued or running job. Returns the job as it now stands, None if unknown.

        A running job is interrupted on ComfyUI; it turns `cancelled` when ComfyUI confirms.
        """
        queued = self.queue.remove(job_id)
        if queued is not None:
            job = self._save(
                queued.evolve(
                    state=JobState.CANCELLED, error=f"Cancelled by {by}", finished_at=time.time()
                )
            )
            self.emit(JobUpdate(job, "finished"))
            self._announce_positions()
            return job
        active = self._active.get(job_id)
        if active is None:
            return self.store.get(job_id)
        active.cancel_by = by
        if active.job.prompt_id:
            await self.client.cancel(active.job.prompt_id)
        return active.job

    # dispatch -------------------------------------------------------------------------------
    async def _dispatch_loop(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            started = False
            while len(self._active) < self.max_in_flight:
                running: dict[str, int] = {}
                for a in self._active.values():
                    running[a.job.owner_id] = running.get(a.job.owner_id, 0) + 1
                job = self.queue.pop_next(running, self.running_limit)
                if job is None:
                    break
                self._launch(job, resume=False)
                started = True
            if started:
                self._announce_positions()

    def _launch(self, job: Job, *, resume: bool) -> None:
        active = _Active(job)
        self._active[job.id] = active
        active.task = spawn(self._drive(active, resume=resume), name=f"job-{job.id}")

    def _announce_positions(self) -> None:
        """Tell listeners about the waiting jobs whose position entered another band.

        Only those: every position changes when the queue moves, but a member only cares
        about the band (1, 2, 3, 5, 10, 20, ...); `FairQueue` finds them without a full scan.
        """
        for job, position in self.queue.take_band_changes():
            self.emit(JobUpdate(job, "position", position=position))

    # driving one job ------------------------------------------------------------------------
    async def _drive(self, active: _Active, *, resume: bool) -> None:
        job = active.job
        try:
            result: PromptResult | None = None
            if resume and job.prompt_id:
                tracker = self.client.track(job.prompt_id, resume=True)
                await self.client.reconcile(job.prompt_id)
                result = await self._follow(active, tracker)
            while result is None or result.status == "lost":
                if active.cancel_by is not None:
                    raise Interrupted(f"Cancelled by {active.cancel_by}")
                if active.job.attempts >= MAX_ATTEMPTS:
                    raise OutputMissing(
                        f"ComfyUI lost this job {MAX_ATTEMPTS} times (restarts?); giving up"
                    )
                active.prompt = await self.build_prompt(active.job)
                prompt_id = self.client.new_prompt_id()
                self._update(
                    active,
                    state=JobState.SUBMITTED,
                    prompt_id=prompt_id,
                    attempts=active.job.attempts + 1,
                    started_at=active.job.started_at or time.time(),
                )
                self.emit(JobUpdate(active.job, "submitted"))
                tracker = self.client.track(prompt_id)
                accepted = await self._submit(active, prompt_id)
                if accepted != prompt_id:  # an older ComfyUI chose its own id
                    self._update(active, prompt_id=accepted)
                if active.cancel_by is not None:
                    await self.client.cancel(accepted)
                result = await self._follow(active, tracker)
            await self._finish(active, result)
        except asyncio.CancelledError:
            raise
        except UserError as exc:
            self._fail(active, exc)
        except Exception:
            log.exception("job %s failed unexpectedly", job.id)
            self._fail(active, None)
        finally:
            if not asyncio.current_task().cancelling():  # type: ignore[union-attr]
                self._active.pop(job.id, None)
                self._wake.set()

    async def _submit(self, active: _Active, prompt_id: str) -> str:
        """POST the prompt, retrying while ComfyUI is unreachable; the id ComfyUI queued it as."""
        deadline = time.monotonic() + self.submit_retry_seconds
        delay = 0.5
        while True:
            try:
                return await self.client.submit(active.prompt, prompt_id=prompt_id)
            except BackendUnavailable:
                if time.monotonic() + delay > deadline:
                    raise
                log.warning("ComfyUI unreachable; retrying prompt %s in %.1fs", prompt_id, delay)
                self.emit(JobUpdate(active.job, "retrying"))
                await asyncio.sleep(delay)
                delay = min(delay * 2, 5.0)
                with contextlib.suppress(BackendUnavailable):
                    if await self.client.queue_position(prompt_id) is not None:
                        return prompt_id  # the earlier POST did arrive

    async def _follow(self, active: _Active, tracker: PromptTracker) -> PromptResult:
        progress = _Progress(active.prompt)
        consumer = asyncio.create_task(self._consume(active, tracker, progress))
        try:
            return await tracker.result()
        finally:
            consumer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consumer
            self.client.untrack(tracker.prompt_id)

    async def _consume(self, active: _Active, tracker: PromptTracker, progress: _Progress) -> None:
        async for event in tracker:
            update = progress.feed(event)
            if isinstance(event, ExecutionStart) and active.job.state is not JobState.RUNNING:
                self._update(active, state=JobState.RUNNING)
                self.emit(JobUpdate(active.job, "started"))
            if update is not None:
                self.emit(progress.update(active.job, update))

    async def _finish(self, active: _Active, result: PromptResult) -> None:
        if result.status == "interrupted" or active.cancel_by is not None:
            who = active.cancel_by or "ComfyUI (interrupted)"
            raise Interrupted(f"Cancelled by {who}")
        if result.status == "error":
            err = result.error
            title = _node_title(active.prompt, err.node_id if err else None, err)
            detail = (err.exception_message if err else "") or "no details"
            kind = err.exception_type if err else "Error"
            raise ExecutionFailed(
                _trim(f"{title} failed: {kind}: {detail.strip()}", 400),
                node_id=err.node_id if err else None,
                node_type=err.node_type if err else None,
                exception_type=kind,
            )
        refs = [r for refs in result.outputs.values() for r in refs if r.type == "output"]
        if not refs:
            refs = [r for refs in result.outputs.values() for r in refs]
        nodes = [n for n, rs in result.outputs.items() for r in rs if r in refs]
        if not refs:
            raise OutputMissing("The workflow finished but produced no images")
        folder = self.outputs_dir / active.job.id
        folder.mkdir(parents=True, exist_ok=True)
        outputs = []
        for index, (node, ref) in enumerate(zip(nodes, refs, strict=True), start=1):
            data = await self.client.fetch_image(ref)
            suffix = Path(ref.filename).suffix.lower()
            suffix = suffix if suffix in IMAGE_SUFFIXES else ".png"
            path = folder / f"{index:02d}{suffix}"
            path.write_bytes(data)
            width, height = _size(data)
            outputs.append(Output(str(path), path.name, node, width, height))
        self._update(
            active,
            state=JobState.DONE,
            outputs=tuple(outputs),
            finished_at=time.time(),
            error=None,
        )
        self.emit(JobUpdate(active.job, "finished"))

    def _fail(self, active: _Active, exc: UserError | None) -> None:
        state = JobState.CANCELLED if isinstance(exc, Interrupted) else JobState.FAILED
        message = exc.message if exc else f"Something went wrong (job {active.job.id})"
        self._update(active, state=state, error=message, finished_at=time.time())
        self.emit(JobUpdate(active.job, "finished"))

    def _update(self, active: _Active, **changes: Any) -> Job:
        active.job = self._save(active.job.evolve(**changes))
        return active.job

    def _save(self, job: Job) -> Job:
        self.store.save(job)
        return job


class _Progress:
    """Turns ComfyUI events into "node k of n, step x of y" for one run."""

    def __init__(self, prompt: dict[str, Any]) -> None:
        self.prompt = prompt
        self.node_count = len(prompt)
        self.node_index = 0
        self.node_title: str | None = None
        self.step = 0
        self.steps = 0

    def feed(self, event: Event) -> Preview | str | None:
        if isinstance(event, ExecutionCached):
            self.node_count = max(0, self.node_count - len(event.nodes))
            return None
        if isinstance(event, Executing) and event.node is not None:
            self.node_index += 1
            self.node_count = max(self.node_count, self.node_index)
            self.node_title = _node_title(self.prompt, event.node, None)
            self.step = self.steps = 0
            return "progress"
        if isinstance(event, Progress):
            self.step, self.steps = int(event.value), int(event.max)
            return "progress"
        if isinstance(event, Preview):
            return event
        return None

    def update(self, job: Job, what: Preview | str) -> JobUpdate:
        common: dict[str, Any] = {
            "node_index": self.node_index,
            "node_count": self.node_count,
            "node_title": self.node_title,
            "step": self.step,
            "steps": self.steps,
        }
        if isinstance(what, Preview):
            return JobUpdate(job, "preview", preview=what.data, preview_mime=what.mime, **common)
        return JobUpdate(job, "progress", **common)


def _node_title(prompt: dict[str, Any], node_id: str | None, err: Any) -> str:
    node = prompt.get(node_id or "", {}) if node_id else {}
    title = node.get("_meta", {}).get("title") or node.get("class_type")
    if not title and err is not None:
        title = getattr(err, "node_type", None)
    title = title or "a node"
    return f"{title} (#{node_id})" if node_id else str(title)


def _size(data: bytes) -> tuple[int, int]:
    try:
        with Image.open(io.BytesIO(data)) as img:
            return img.size
    except Exception:
        return (0, 0)


def _trim(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"
