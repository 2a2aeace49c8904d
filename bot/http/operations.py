"""The operations view over the API (admin): backends, the queue and the last hour's samples.

`GET /v1/stats` answers it as JSON; the console's Operations page draws the same `Stats`.
The samples come from `bot.history.History`, which the server samples while it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator

from aiohttp import web

from bot.http.admin_models import BackendInfo, QueueItem, Stats, StatsSample
from bot.http.fields import filled
from bot.http.routes import API, admin_of, api_of, json_response
from bot.http.service import HttpApi
from bot.tasks import TaskGroup

ops_routes = web.RouteTableDef()


def stats_of(api: HttpApi) -> Stats:
    """What the engine and the history say now."""
    history = api.history
    samples = history.samples()
    last = samples[-1] if samples else None
    backends = [
        filled(
            BackendInfo,
            b,
            vram_total=b.health.vram_total if b.health else 0,
            vram_free=b.health.vram_free if b.health else 0,
            busy_seconds=round(api.metrics.busy_seconds().get(b.name, b.busy_seconds), 3),
            busy_share=last.busy.get(b.name) if last is not None else None,
        )
        for b in api.engine.backends()
    ]
    queue = [
        filled(
            QueueItem,
            e.job,
            job_id=e.job.id,
            state=e.job.state.value,
            position=e.position,
            owner=e.job.owner_name or e.job.owner_id,
        )
        for e in api.engine.queue_entries()
    ]
    return Stats(
        interval=history.interval,
        span=history.span,
        backends=backends,
        queue=queue,
        samples=[filled(StatsSample, s, busy=dict(s.busy)) for s in samples],
    )


@ops_routes.get("/v1/stats")
async def get_stats(request: web.Request) -> web.StreamResponse:
    admin_of(request)
    return json_response(stats_of(api_of(request)))


async def sampling(app: web.Application) -> AsyncIterator[None]:
    """While the app serves, sample the engine every interval (`cleanup_ctx` of the app)."""
    tasks = TaskGroup("http")
    history = app[API].history
    tasks.spawn(history.run(), name="history")
    try:
        yield
    finally:
        with contextlib.suppress(asyncio.CancelledError):
            await tasks.cancel_all()
