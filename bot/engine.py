"""The engine: workflows + ComfyUI client + store + fair queue + runner, behind one object.

Discord (`bot/app.py`, `cogs/`) and the CLI are thin layers over this; nothing here imports
discord. What a member asks for is a `bot.job_request.JobRequest`; loading, importing and
removing workflows is the engine's `bot.engine_workflows` part. Typical use:

    async with aiohttp.ClientSession() as session:
        engine = Engine(session, settings)
        await engine.start()
        jobs = await engine.submit(JobRequest("sd15-txt2img", {"prompt": "a cat"}, owner_id="1"))
"""

from __future__ import annotations

import gc
import logging
import math
import random
import statistics
import time
from collections import Counter, deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Unpack

import aiohttp

from bot.backend_prompt import paths_for_uploads, substitute_models
from bot.comfy.client import ComfyClient
from bot.comfy.pool import Backend, BackendStatus, Pool
from bot.engine_workflows import WorkflowPacks
from bot.errors import InvalidValue, LimitReached, NoBackend, NotAllowed, NotFound
from bot.intake import Intake
from bot.job_request import ImageInput, JobOptions, JobRequest, seeds_around
from bot.jobs.db import is_postgres_url
from bot.jobs.dispatch import Needs
from bot.jobs.model import Job, JobState, new_job_id
from bot.jobs.runner import JobUpdate, Runner
from bot.jobs.scheduler import FairQueue
from bot.jobs.store import ProcessInfo, Store
from bot.media import MediaType
from bot.media.uploads import check_file
from bot.settings import LimitSettings, Settings
from bot.sharing import QueueView, Sharing
from bot.workflows import Workflow
from bot.workflows.patch import apply, coerce_values
from bot.workflows.repair import repair_graph

log = logging.getLogger(__name__)

Listener = Callable[[JobUpdate], None]


_frozen: list[bool] = []


def _freeze_startup_objects() -> None:
    """Keep what the first start-up loaded (node definitions of every backend, workflows,
    modules), which lives as long as the process, out of the collector's full passes: under
    load they otherwise walk it every second or two and stall the event loop for ~100 ms,
    longer than a fast GPU's run. Once per process (later starts, in tests, change nothing)."""
    if not _frozen:
        _frozen.append(True)
        gc.collect()
        gc.freeze()


@dataclass(frozen=True)
class QueueEntry:
    job: Job
    position: int  # 0: running; 1..: waiting, in fair order


class Engine(WorkflowPacks):
    """Everything below Discord. Start it once, submit jobs, listen to their updates."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        settings: Settings,
        *,
        pool: Pool | None = None,
        store: Store | None = None,
        workflows: Mapping[str, Workflow] | None = None,
        role: str = "api",
        detail: str = "",
    ) -> None:
        """`role` says what this process is (`bot` for a Discord process, else `api`) to the
        others sharing its store, when `storage.url` names a PostgreSQL database (see
        `bot.sharing`), and `detail` what it serves (a bot's Discord shard)."""
        self.settings = settings
        self.pool = pool or Pool.from_settings(session, settings.comfyui)
        self.store = store or Store.open(settings.storage)
        self._init_workflows(workflows)
        self.queue = FairQueue()
        # a burst of requests is worked on a few at a time, so the runner never waits on it
        self.intake = Intake()
        self._listeners: list[Listener] = []
        self._durations: deque[float] = deque(maxlen=50)  # seconds on ComfyUI of recent jobs
        # seconds on the GPU (start to result) of recent jobs, per workflow
        self._runs: dict[str, deque[float]] = {}
        self._run_since: dict[str, float] = {}
        self.runner = Runner(
            self.pool,
            self.store,
            self.queue,
            self._build_prompt,
            Path(settings.storage.outputs),
            self._emit,
            needs=self.needs,
            substitute_models=settings.comfyui.substitute_missing_models,
            prefetch=settings.comfyui.prefetch if len(self.pool) > 1 else 0,
            running_limit=self._running_limit,
            submit_retry_seconds=settings.comfyui.submit_retry_seconds,
            fetch_retry_seconds=settings.comfyui.fetch_retry_seconds,
        )
        self._limits_for: Callable[[Job], LimitSettings] = lambda job: settings.limits
        self._started = False
        url = settings.storage.url
        self.sharing = (
            Sharing(
                url,
                self.store,
                self.runner,
                role=role,
                detail=detail,
                emit_here=self._emit_here,
                cancel_here=self._cancel_here,
                update_meta_here=lambda job_id, meta: self._update_meta_here(job_id, meta),
                workflows_changed=self._workflows_changed_elsewhere,
            )
            if url and is_postgres_url(url)
            else None
        )

    def _workflows_changed(self) -> None:
        super()._workflows_changed()
        if self.sharing is not None:
            self.sharing.tell_workflows_changed()

    def _workflows_changed_elsewhere(self) -> None:
        """Another process sharing the store saved or removed a pack (in the same folder)."""
        self.reload_workflows()
        super()._workflows_changed()

    @property
    def holds_jobs(self) -> bool:
        """Whether this process runs the jobs: always, unless it shares its store with others
        and one of them holds the jobs now (`bot.sharing`)."""
        return self.sharing is None or self.sharing.leading

    def processes(self) -> list[ProcessInfo]:
        """The processes sharing the store (none when it is not shared)."""
        return self.sharing.processes() if self.sharing is not None else []

    def _view(self) -> QueueView | None:
        """The queue as the store has it, when another process holds the jobs."""
        return None if self.sharing is None or self.sharing.leading else self.sharing.view()

    @property
    def client(self) -> ComfyClient:
        """The client of the first backend (the only one with a single ComfyUI)."""
        return self.pool.backends[0].client

    @property
    def object_info(self) -> dict[str, Any] | None:
        """Node classes of every backend read so far, their model lists merged."""
        return self.pool.object_info()

    # lifecycle ------------------------------------------------------------------------------
    async def start(self) -> None:
        """Connect to ComfyUI, load workflows (unless given), resume unfinished jobs.

        ComfyUI's node definitions are read first: UI-format graphs need them to convert, and
        detection reads every node class through them.
        """
        await self.pool.start(ready_timeout=min(5.0, self.settings.comfyui.request_timeout))
        for backend in self.pool:
            if not backend.up:
                log.warning("ComfyUI %s not reachable at start; will keep trying", backend.name)
        if not self.workflows:
            self.reload_workflows()
        self.pool.object_info()  # merged now rather than on the first request
        if self.sharing is not None:
            await self.sharing.start()  # the runner starts once this process holds the jobs
        else:
            await self.runner.start()
        self._started = True
        _freeze_startup_objects()

    async def stop(self) -> None:
        if self.sharing is not None:
            await self.sharing.stop()
        await self.runner.stop()
        await self.pool.close()
        self._started = False

    def close_store(self) -> None:
        self.store.close()

    # listeners ------------------------------------------------------------------------------
    def listen(self, listener: Listener) -> Callable[[], None]:
        """Call `listener` with every JobUpdate. Returns a function that stops listening."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener) if listener in self._listeners else None

    def _emit(self, update: JobUpdate) -> None:
        self._emit_here(update)
        if self.sharing is not None:
            self.sharing.relay(update)

    def _emit_here(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "started":
            self._run_since.setdefault(job.id, time.monotonic())
        elif update.kind in ("result", "finished"):  # the first of them ends the run
            since = self._run_since.pop(job.id, None)
            done = job.state is JobState.DONE
            if update.kind == "finished" and done and job.elapsed is not None:
                self._durations.append(job.elapsed)
            if done and since is not None:
                runs = self._runs.setdefault(job.workflow, deque(maxlen=20))
                runs.append(time.monotonic() - since)
        for listener in list(self._listeners):
            try:
                listener(update)
            except Exception:
                log.exception("job listener failed on %s", update.kind)

    # limits ---------------------------------------------------------------------------------
    def set_limits_source(self, source: Callable[[Job], LimitSettings]) -> None:
        """Per-server limits (moderators can change them); the settings' limits by default."""
        self._limits_for = source

    def _running_limit(self, job: Job) -> int | None:
        if job.meta.get("exempt"):
            return None
        return self._limits_for(job).max_running_per_member

    # jobs -----------------------------------------------------------------------------------
    async def submit(self, request: JobRequest, **options: Unpack[JobOptions]) -> list[Job]:
        """Validate a request and queue it as `count` jobs (one group, consecutive seeds).

        `seeds`, when given, are the seeds of the `count` jobs instead (see `seeds_around`).
        The same as `prepare` then `enqueue`, with `prepare`'s keywords (`JobOptions`).

        Raises:
            NotFound: unknown workflow.
            InvalidValue: a value is wrong (names the parameter).
            NotAllowed: the member is over a limit or in cooldown.
        """
        return self.enqueue(self.prepare(request, **options))

    def prepare(
        self,
        request: JobRequest,
        *,
        count: int = 1,
        exempt: bool = False,
        seeds: Sequence[int] | None = None,
    ) -> list[Job]:
        """Validate a request and build its `count` jobs, without storing or queueing them.

        Raises:
            NotFound: unknown workflow.
            InvalidValue: a value is wrong (names the parameter).
            NotAllowed: the member is over a limit or in cooldown.
        """
        workflow = self.workflow(request.workflow)
        raw = dict(request.values)
        kinds: dict[str, MediaType] = {}
        for name, given in request.images.items():
            param = workflow.param(name)
            if param is None or not param.is_file:
                raise InvalidValue(name, "is not an image option (nor a video or audio one)")
            kinds[name] = check_file(name, param.type, given.data)  # the bytes have the last word
            raw[name] = "pending-upload.png"  # the real name comes from ComfyUI's upload
        values = coerce_values(workflow, raw, object_info=self.object_info)
        self.check_limits(request, count=count, exempt=exempt)
        if seeds is not None and len(seeds) != count:
            raise InvalidValue("count", f"{len(seeds)} seeds given for {count} images")

        probe = Job("", request.workflow, values, request.owner_id)
        if (reason := self.runner.refusal(probe)) is not None:
            raise NoBackend(reason)

        group_id = new_job_id() if count > 1 else None
        seed_param = workflow.seed_param
        jobs = []
        for index in range(count):
            job_values = dict(values)
            if seed_param is not None and seeds is not None:
                job_values[seed_param.name] = int(seeds[index]) % 2**32
            elif seed_param is not None and index:
                job_values[seed_param.name] = (int(values[seed_param.name]) + index) % 2**32
            job = request.job(
                job_values, group_id=group_id, exempt=exempt, index=index, count=count
            )
            if request.images:
                inputs = self._save_inputs(job.id, request.images, kinds)
                job = job.evolve(meta={**job.meta, "inputs": inputs})
            jobs.append(job)
        return jobs

    def enqueue(
        self,
        jobs: Sequence[Job],
        *,
        reply: Mapping[str, Any] | None = None,
        token: str | None = None,
        token_expires: float | None = None,
    ) -> list[Job]:
        """Store one request's jobs with where their reply lives, in one transaction; queue them.

        `reply` (kept in each job's meta as "reply", with a "key" naming the reply) says where the
        answer goes; `token` is the secret that edits it, kept apart and only until
        `token_expires`. After a crash the jobs resume and the reply is found again.
        """
        stored = []
        with self.store.transaction():
            for job in jobs:
                meta = {**job.meta, "reply": dict(reply)} if reply is not None else job.meta
                job = job.evolve(state=JobState.QUEUED, meta=meta)
                self.store.save(job)
                stored.append(job)
            if reply is not None and token and token_expires is not None:
                self.store.keep_token(str(reply["key"]), token, token_expires)
        if not self.holds_jobs:
            if reply is None:  # a reply is handed over once it is acknowledged
                self.hand_over([job.id for job in stored])
            return stored
        return [self.runner.enqueue(job, saved=True) for job in stored]

    def hand_over(self, job_ids: Sequence[str]) -> None:
        """Give stored jobs to the process that holds the jobs (when it is another one)."""
        if self.sharing is not None and not self.sharing.leading:
            self.sharing.hand_over(job_ids)

    def check_limits(self, request: JobRequest, *, count: int = 1, exempt: bool = False) -> None:
        """Whether the member may queue `count` more jobs now (`submit` checks this too).

        Raises:
            InvalidValue: `count` is over the limit.
            NotAllowed: the member has too many jobs queued or running, or is in cooldown.
        """
        probe = Job(
            "",
            request.workflow,
            {},
            request.owner_id,
            guild_id=request.guild_id,
            meta=dict(request.meta),
        )
        limits = self._limits_for(probe)
        if count < 1 or count > limits.max_count:
            raise InvalidValue("count", f"must be between 1 and {limits.max_count}")
        if not exempt:
            self._check_limits(request, limits, count)

    def _check_limits(self, request: JobRequest, limits: LimitSettings, count: int) -> None:
        owner = request.owner_id
        view = self._view()
        if view is not None:
            waiting, running = view.queue.waiting_of(owner), view.running_of(owner)
        else:
            waiting, running = self.queue.waiting_of(owner), self.runner.running_count(owner)
        if waiting + running + count > limits.max_queued_per_member + limits.max_running_per_member:
            raise LimitReached(
                f"You already have {waiting + running} job(s) queued or running; the limit is "
                f"{limits.max_queued_per_member} waiting and {limits.max_running_per_member} "
                "running. Wait for one to finish or cancel one with /cancel."
            )
        if limits.cooldown_seconds > 0:
            last = self.store.last_created(owner, request.guild_id)
            if last is not None:
                left = limits.cooldown_seconds - (time.time() - last)
                if left > 0:
                    raise LimitReached(f"Cooldown: you can start another job in {left:.0f} s.")

    def _save_inputs(
        self, job_id: str, images: Mapping[str, ImageInput], kinds: Mapping[str, MediaType]
    ) -> dict[str, str]:
        """Keep a job's input files, each named for what its bytes hold (it is uploaded to
        ComfyUI under that name)."""
        folder = Path(self.settings.storage.outputs).parent / "inputs"
        folder.mkdir(parents=True, exist_ok=True)
        saved = {}
        for param, image in images.items():
            path = folder / f"{job_id}-{param}.{kinds[param].ext}"
            path.write_bytes(image.data)
            saved[param] = str(path)
        return saved

    def needs(self, job: Job) -> Needs:
        """The node classes and model files a job's prompt needs from a backend.

        Raises:
            NotFound: its workflow is gone.
        """
        workflow = self.workflow(job.workflow)
        values = dict(job.values)
        for param in job.meta.get("inputs", {}):
            values[param] = "pending-upload.png"
        prompt = apply(workflow, values)
        explicit = {target for p in workflow.params for target in p.targets}
        return Needs.of(prompt, explicit)

    async def _build_prompt(self, job: Job, backend: Backend) -> dict[str, Any]:
        workflow = self.workflow(job.workflow)
        values = dict(job.values)
        for param, path in job.meta.get("inputs", {}).items():
            data = Path(path).read_bytes()
            values[param] = await backend.client.upload_image(data, Path(path).name)
        prompt = apply(workflow, values)
        if backend.object_info is not None:
            paths_for_uploads(workflow, prompt, backend.object_info, job.meta.get("inputs", {}))
            set_by_params = {target for p in workflow.params for target in p.targets}
            prompt, repairs = repair_graph(prompt, backend.object_info, keep=set_by_params)
            for repair in repairs:
                log.info("job %s on %s: %s", job.id, backend.name, repair)
        if self.settings.comfyui.substitute_missing_models:
            where = "ComfyUI" if len(self.pool) == 1 else backend.name
            notes = substitute_models(workflow, prompt, backend.object_info, where)
            if notes:
                self.update_meta(job.id, notes=notes)
        return prompt

    async def cancel(self, job_id: str, by: str) -> Job:
        """Cancel a queued or running job.

        Raises:
            NotFound: no such job.
            NotAllowed: the job has already finished.
        """
        job = self.store.get(job_id)
        if job is None:
            raise NotFound(f"There is no job `{job_id}`.")
        if self.runner.finishing(job_id):  # its result is out, its record follows at once
            job = job.evolve(state=JobState.DONE)
        if job.state.finished:
            raise NotAllowed(f"Job `{job_id}` has already finished ({job.state.value}).")
        if self.sharing is not None and not self.sharing.leading:
            return await self.sharing.cancel(job, by)
        result = await self.runner.cancel(job_id, by)
        return result or job

    async def _cancel_here(self, job_id: str, by: str) -> Job:
        return await self.cancel(job_id, by)

    def get_job(self, job_id: str) -> Job | None:
        return self.runner.job(job_id) or self.store.get(job_id)

    def queue_entries(self) -> list[QueueEntry]:
        """Running jobs (position 0) then waiting ones in fair order."""
        view = self._view()
        active = view.active if view is not None else self.runner.active_jobs()
        waiting = view.queue.order() if view is not None else self.queue.order()
        entries = [QueueEntry(j, 0) for j in active]
        entries += [QueueEntry(j, i) for i, j in enumerate(waiting, start=1)]
        return entries

    def position(self, job_id: str) -> int | None:
        view = self._view()
        return view.position(job_id) if view is not None else self.runner.position(job_id)

    def backends(self) -> list[BackendStatus]:
        """Every ComfyUI backend: busy, idle or down, jobs it holds, health, last error."""
        view = self._view()
        if view is not None:  # another process holds the jobs: what the store says it gave
            held = Counter(j.backend for j in view.active)
            return [b.status(held[b.name]) for b in self.pool]
        return [b.status(self.runner.load(b)) for b in self.pool]

    def typical_duration(self) -> float | None:
        """Median seconds on ComfyUI of recent jobs; None before the first one finished."""
        return statistics.median(self._durations) if self._durations else None

    def short_run(self, workflow: str) -> float | None:
        """Seconds on the GPU that recent jobs of `workflow` took at least; None before one
        finished.

        What a reply's Discord budget (one request per progress interval running, see
        `bot.delivery`) can be planned on before its own job has run.
        """
        runs = self._runs.get(workflow)
        if not runs:
            return None
        return min(runs)

    def expected_wait(self, job_id: str) -> float | None:
        """Seconds until a waiting job should start, from how long recent jobs took.

        None when the job is not waiting or no job has finished yet to measure by.
        """
        position = self.position(job_id)
        typical = self.typical_duration()
        if not position or typical is None:
            return None
        slots = max(1, self.runner.max_in_flight)
        # the running jobs are half done on average, then the ones ahead go `slots` at a time
        return typical * (0.5 + math.floor((position - 1) / slots))

    def recent(
        self, *, owner_id: str | None = None, guild_id: str | None = None, limit: int = 10
    ) -> list[Job]:
        return self.store.recent(owner_id=owner_id, guild_id=guild_id, limit=limit)

    def update_meta(self, job_id: str, **meta: Any) -> Job | None:
        if self.sharing is not None and not self.sharing.leading:
            return self.sharing.update_meta(job_id, meta)
        job = self.get_job(job_id)
        if job is None:
            return None
        job = job.evolve(meta={**job.meta, **meta})
        self.runner.replace(job)
        return job

    def _update_meta_here(self, job_id: str, meta: dict[str, Any]) -> None:
        """Another process changed a job's meta (this one holds the job)."""
        job = self.runner.job(job_id)
        if job is not None:
            self.runner.replace(job.evolve(meta={**job.meta, **meta}))

    async def saved(self, job_ids: Sequence[str]) -> None:
        """Wait until these jobs' final records are stored (their `result` update comes before
        that; mark them delivered only after it)."""
        await self.runner.saved(job_ids)

    def hold_saving(self, job_ids: Sequence[str]) -> Callable[[], None]:
        """Let a delivery of these jobs' `result` go out before their files are written: the
        write waits until the returned function is called (or a few seconds)."""
        return self.runner.hold_saving(job_ids)

    def mark_delivered(self, job_id: str, **meta: Any) -> None:
        """Record that a job's result reached its member (with `meta`, e.g. where it is)."""
        self.mark_all_delivered([job_id], **meta)

    def mark_all_delivered(self, job_ids: Sequence[str], **meta: Any) -> None:
        """Mark one reply's jobs delivered in one transaction and forget the reply's token."""
        with self.store.transaction():
            for job_id in job_ids:
                job = self.store.get(job_id)
                if job is None:
                    continue
                key = job.meta.get("reply", {}).get("key")
                if key:
                    self.store.forget_token(str(key))
                if not job.delivered or meta:
                    self.store.save(job.evolve(delivered=True, meta={**job.meta, **meta}))

    def reply_token(self, key: str) -> str | None:
        """The secret that edits reply `key`, while it is valid (None once it expired)."""
        return self.store.token(key)

    def forget_reply_token(self, key: str) -> None:
        self.store.forget_token(key)

    def forget_expired_tokens(self) -> None:
        self.store.forget_expired_tokens()

    def undelivered(self) -> list[Job]:
        return self.store.undelivered()

    def random_seed(self) -> int:
        return random.randrange(2**32)


__all__ = [
    "Engine",
    "ImageInput",
    "JobRequest",
    "JobState",
    "JobUpdate",
    "QueueEntry",
    "seeds_around",
]
