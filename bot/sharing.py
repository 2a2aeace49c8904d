"""The engine's side of several processes on one PostgreSQL store (`bot.jobs.cluster`).

While this process holds the jobs, its engine is the one that runs them: it takes the jobs the
others hand over, cancels and annotates them at their request, and tells them what happens to
every job (`RELAYED` kinds of update). While another process holds them, this engine stores the
jobs of its requests and hands them over; its listeners (the HTTP API's live updates and
webhooks, a `generate` waiting for its result) hear of them from the holder; and what it says of
the queue (positions, `/queue`, the members' limits) is read from the store.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from bot.jobs.cluster import SWEEP, Cluster, Message
from bot.jobs.model import Job, JobState
from bot.jobs.progress import JobUpdate
from bot.jobs.runner import Runner
from bot.jobs.scheduler import FairQueue
from bot.jobs.store import ProcessInfo, Store
from bot.tasks import spawn

log = logging.getLogger(__name__)

#: what the holder tells the others (positions follow from the store; previews and the
#: result's bytes stay with the holder, which delivers them)
RELAYED = frozenset({"queued", "submitted", "retrying", "started", "progress", "finished"})
VIEW_FRESH = 0.5  # seconds a follower's view of the queue is kept
HANDED_OVER_AFTER = 5.0  # a queued job nobody handed over is taken once this old
CANCEL_WAIT = 3.0  # seconds a follower waits for the holder to confirm a cancel
MAX_RECORD = 5000  # bytes of a job's record sent along with its update


@dataclass
class QueueView:
    """The queue as the store has it: waiting jobs in fair order, and those on a backend."""

    queue: FairQueue
    active: list[Job]

    def position(self, job_id: str) -> int | None:
        if any(j.id == job_id for j in self.active):
            return 0
        return self.queue.position(job_id)

    def running_of(self, owner_id: str) -> int:
        return sum(1 for j in self.active if j.owner_id == owner_id)


class Sharing:
    """This engine among the processes sharing its store (see the module's docstring)."""

    def __init__(
        self,
        url: str,
        store: Store,
        runner: Runner,
        *,
        role: str,
        detail: str,
        emit_here: Callable[[JobUpdate], None],
        cancel_here: Callable[[str, str], Awaitable[Job]],
        update_meta_here: Callable[[str, dict[str, Any]], None],
        workflows_changed: Callable[[], None],
    ) -> None:
        self.store = store
        self.runner = runner
        self._emit_here = emit_here
        self._cancel_here = cancel_here
        self._update_meta_here = update_meta_here
        self._workflows_changed = workflows_changed
        self.cluster = Cluster(
            url,
            store,
            role=role,
            detail=detail,
            on_message=self._on_message,
            on_lead=self._lead,
            on_demote=self._demote,
        )
        self._watchers: list[Callable[[bool], None]] = []
        self._sweeper: asyncio.Task[None] | None = None
        self._view: tuple[float, QueueView] | None = None
        self._followed: dict[str, Job] = {}  # relayed jobs: their latest record

    @property
    def leading(self) -> bool:
        return self.cluster.leading

    @property
    def process_id(self) -> str:
        return self.cluster.id

    def processes(self) -> list[ProcessInfo]:
        return self.cluster.processes()

    def watch(self, watcher: Callable[[bool], None]) -> None:
        """Call `watcher(True)` when this process takes the jobs, `watcher(False)` when it lets
        go of them."""
        self._watchers.append(watcher)

    async def start(self) -> None:
        await self.cluster.start()

    async def stop(self) -> None:
        await self.cluster.stop()

    # holding the jobs -----------------------------------------------------------------------
    async def _lead(self) -> None:
        self._followed.clear()
        await self.runner.start()  # every unfinished job in the store, as after a restart
        self._sweeper = spawn(self._sweep(), name="take-queued")
        self._tell(True)

    async def _demote(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
            self._sweeper = None
        await self.runner.stop()  # their state stays in the store: the next holder resumes them
        for job in list(self.runner.queue):
            self.runner.queue.remove(job.id)
        self._tell(False)

    def _tell(self, leading: bool) -> None:
        for watcher in list(self._watchers):
            try:
                watcher(leading)
            except Exception:
                log.exception("a watcher of the jobs' holder failed")

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP)
            try:
                self.take(self.store.queued_before(time.time() - HANDED_OVER_AFTER))
            except Exception as exc:
                log.warning("could not look for jobs handed over: %s", exc)

    def take(self, jobs: Iterable[Job]) -> None:
        """Queue stored jobs this process does not hold yet (it holds the jobs)."""
        for job in jobs:
            if job.state is JobState.QUEUED and self.runner.job(job.id) is None:
                self.runner.enqueue(job, saved=True)

    # handing over ---------------------------------------------------------------------------
    def hand_over(self, job_ids: Sequence[str]) -> None:
        """Give the holder these stored, queued jobs (or queue them, when this process holds
        the jobs now)."""
        if not job_ids:
            return
        if self.leading:
            self.take(j for j in map(self.store.get, job_ids) if j is not None)
        else:
            self.cluster.send({"k": "queued", "ids": list(job_ids)})

    def update_meta(self, job_id: str, meta: dict[str, Any]) -> Job | None:
        """A follower's change of a job's meta: added to the stored record now, and sent to the
        holder, whose copy would otherwise write over it."""
        job = self.store.merge_meta(job_id, meta)
        if job is not None:
            self.cluster.send({"k": "meta", "id": job_id, "meta": meta})
        return job

    async def cancel(self, job: Job, by: str) -> Job:
        """Ask the holder to cancel a job; the job as the store has it once it did (or after
        `CANCEL_WAIT` seconds)."""
        self.cluster.send({"k": "cancel", "id": job.id, "by": by})
        deadline = time.monotonic() + CANCEL_WAIT
        while time.monotonic() < deadline:
            await asyncio.sleep(0.05)
            stored = self.store.get(job.id)
            if stored is not None and stored.state.finished:
                return stored
        return self.store.get(job.id) or job

    # telling --------------------------------------------------------------------------------
    def relay(self, update: JobUpdate) -> None:
        """Tell the others what happened to a job this process holds."""
        if not self.leading or update.kind not in RELAYED:
            return
        message: Message = {"k": "update", "id": update.job.id, "kind": update.kind}
        for name in ("position", "node_index", "node_count", "node_title", "step", "steps"):
            value = getattr(update, name)
            if value:
                message[name] = value
        if update.note:
            message["note"] = update.note
        if update.kind != "progress":
            record = update.job.to_dict()
            if len(json.dumps(record)) < MAX_RECORD:  # else the others read it from the store
                message["job"] = record
        self.cluster.send(message)

    def tell_workflows_changed(self) -> None:
        """A pack was saved or removed here: the others load the workflows folder again."""
        self.cluster.send({"k": "workflows"})

    def _on_message(self, message: Message) -> None:
        kind = message.get("k")
        if kind == "workflows":
            self._workflows_changed()
            return
        if kind == "update":
            if not self.leading:
                self._relayed(message)
            return
        if not self.leading:
            return
        job_id = str(message.get("id", ""))
        if kind == "queued":
            ids = [str(i) for i in message.get("ids", ())]
            self.take(j for j in map(self.store.get, ids) if j is not None)
        elif kind == "meta" and isinstance(message.get("meta"), dict):
            self._update_meta_here(job_id, message["meta"])
        elif kind == "cancel":
            spawn(self._cancel_for_other(job_id, str(message.get("by", "?"))), name="cancel")

    async def _cancel_for_other(self, job_id: str, by: str) -> None:
        with contextlib.suppress(Exception):  # finished meanwhile, or unknown: nothing to do
            await self._cancel_here(job_id, by)

    def _relayed(self, message: Message) -> None:
        job_id = str(message.get("id", ""))
        if isinstance(message.get("job"), dict):
            job = Job.from_dict(message["job"])
        else:
            known = self._followed.get(job_id) if message.get("kind") == "progress" else None
            known = known or self.store.get(job_id)
            if known is None:
                return
            job = known
        kind = str(message.get("kind"))
        if kind == "finished":
            self._followed.pop(job_id, None)
        else:
            self._followed[job_id] = job
        fields = {
            name: message[name]
            for name in ("position", "node_index", "node_count", "node_title", "step", "steps")
            if name in message
        }
        self._emit_here(JobUpdate(job, kind, note=message.get("note"), **fields))

    # the queue as the store has it ----------------------------------------------------------
    def view(self) -> QueueView:
        """The queue read from the store (kept `VIEW_FRESH` seconds): for a process that does
        not hold the jobs."""
        now = time.monotonic()
        if self._view is not None and now - self._view[0] < VIEW_FRESH:
            return self._view[1]
        queue = FairQueue()
        active = []
        for job in self.store.unfinished():
            if job.state is JobState.QUEUED:
                queue.add(job)
            else:
                active.append(job)
        view = QueueView(queue, active)
        self._view = (now, view)
        return view

    def forget_view(self) -> None:
        self._view = None
