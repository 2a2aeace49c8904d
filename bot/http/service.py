"""What the HTTP routes share: the engine, admission, keys, webhooks, metrics, live updates."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import functools
import logging
import time
from collections.abc import Iterator

import aiohttp
from aiohttp import web

from bot.admission import Admission
from bot.engine import Engine
from bot.history import History
from bot.http.fields import filled
from bot.http.keys import ApiKey, KeyStore
from bot.http.models import JobInfo, OutputInfo, Progress
from bot.http.urls import guarded_session
from bot.http.webhooks import Webhooks
from bot.jams import Jams
from bot.jobs.cluster import new_process_id
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.metrics import Metrics
from bot.settings import Settings

log = logging.getLogger(__name__)

PROGRESS_KINDS = ("submitted", "retrying", "started", "progress")
WEBHOOKS_LOOK_BACK = 86400.0  # seconds: jobs finished this recently get their webhook at start


class HttpApi:
    """State of the API beside the engine. `close()` stops its listener and webhooks."""

    def __init__(
        self, engine: Engine, admission: Admission, settings: Settings, metrics: Metrics
    ) -> None:
        self.engine = engine
        self.admission = admission
        self.settings = settings
        self.metrics = metrics
        self.keys = KeyStore(engine.store)
        self.outbound: aiohttp.ClientSession = guarded_session(
            settings.http.allow_private_urls, settings.http.url_timeout
        )
        self.webhooks = Webhooks(
            self.outbound,
            engine.store,
            self._webhook_secret,
            attempts=settings.http.webhook_attempts,
            backoff=settings.http.webhook_backoff,
            timeout=settings.http.url_timeout,
            holder=engine.sharing.process_id if engine.sharing is not None else new_process_id(),
        )
        self.address: str | None = None  # where it listens, once serving
        self.latest: dict[str, JobUpdate] = {}
        self._subscribers: dict[str, set[asyncio.Queue[JobUpdate]]] = {}
        self._unlisten = engine.listen(self._on_update)
        # the last hour, for the operations view (sampled while the server serves)
        self.history = History(engine, metrics.busy_seconds)

    def start(self) -> None:
        """Send the webhooks kept in the store, and keep those of jobs that finished while no
        API listened (e.g. during a restart, or on another process without the API)."""
        for job in self.engine.store.finished_without_webhook(time.time() - WEBHOOKS_LOOK_BACK):
            self._send_webhook(job)
        self.webhooks.start()

    def _webhook_secret(self, key_name: str) -> str | None:
        key = self.keys.get(key_name)
        return key.webhook_secret if key is not None else None

    async def close(self) -> None:
        self._unlisten()
        self.history.close()
        if "jams" in self.__dict__:
            self.jams.close()
        await self.webhooks.close()
        await self.outbound.close()

    @functools.cached_property
    def jams(self) -> Jams:
        """The jams of every server (the bot's book, in the same database file), opened when
        first asked for."""
        return Jams.open(self.settings.storage)

    # urls -------------------------------------------------------------------------------------
    def base_url(self, request: web.Request | None) -> str:
        if self.settings.http.public_url:
            return self.settings.http.public_url
        if request is not None:
            return str(request.url.origin())
        if self.address:
            return self.address
        http = self.settings.http
        return f"http://{http.host}:{http.port}"

    # jobs -------------------------------------------------------------------------------------
    def job_for(self, key: ApiKey, job_id: str) -> Job | None:
        """The job, if it is this key's."""
        job = self.engine.get_job(job_id)
        if job is None or job.owner_id != key.member_id:
            return None
        return job

    def job_info(
        self,
        job: Job,
        base: str,
        *,
        position: int | None = None,
        update: JobUpdate | None = None,
    ) -> JobInfo:
        """The job as the API shows it; `update` gives its progress at that moment."""
        url = f"{base}/v1/jobs/{job.id}"
        progress = None
        latest = update if update is not None else self.latest.get(job.id)
        if (
            latest is not None
            and not job.state.finished
            and latest.kind
            in (
                *PROGRESS_KINDS,
                "preview",
            )
        ):
            progress = filled(Progress, latest, node=latest.node_title)
        if position is None and not job.state.finished:
            position = self.engine.position(job.id)
        outputs = [
            filled(
                OutputInfo, o, index=i, url=f"{url}/outputs/{i}", content_type=o.media.content_type
            )
            for i, o in enumerate(job.outputs)
        ]
        return filled(
            JobInfo,
            job,
            state=job.state.value,
            position=position,
            progress=progress,
            outputs=outputs,
            url=url,
            events_url=f"{url}/events",
        )

    # live updates -----------------------------------------------------------------------------
    @contextlib.contextmanager
    def subscribe(self, job_id: str) -> Iterator[asyncio.Queue[JobUpdate]]:
        """A queue of the job's updates from now on, while the `with` block lasts."""
        queue: asyncio.Queue[JobUpdate] = asyncio.Queue()
        self._subscribers.setdefault(job_id, set()).add(queue)
        try:
            yield queue
        finally:
            subscribers = self._subscribers.get(job_id)
            if subscribers is not None:
                subscribers.discard(queue)
                if not subscribers:
                    self._subscribers.pop(job_id, None)

    def _on_update(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind == "finished":
            self.latest.pop(job.id, None)
        elif update.kind in PROGRESS_KINDS or (update.kind == "preview" and update.steps):
            self.latest[job.id] = update
        for queue in self._subscribers.get(job.id, ()):
            queue.put_nowait(update)
        if update.kind == "finished" and job.meta.get("webhook"):
            self._send_webhook(job)

    def _send_webhook(self, job: Job) -> None:
        key = self.keys.get(str(job.meta.get("api_key", "")))
        if key is None:
            log.warning("job %s has a webhook but its key is gone; not sent", job.id)
            return
        info = self.job_info(job, self.base_url(None))
        event = "done" if job.state is JobState.DONE else "failed"
        payload = {"event": event, "job": info.model_dump(mode="json")}
        self.webhooks.send(str(job.meta["webhook"]), key.name, payload, job.id)


def data_url(data: bytes, mime: str) -> str:
    return f"data:{mime};base64,{base64.b64encode(data).decode()}"
