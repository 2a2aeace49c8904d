"""Webhooks kept in the store: sent after a restart that cut a try short, and once among several
API processes on one PostgreSQL store."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from aiohttp import web

from bot.http.webhooks import HEADER, verify
from bot.settings import Settings
from tests.conftest import make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http_helpers import Served, http_settings, loopback, served


async def submit_with_webhook(srv: Served, secret: str, port: int) -> str:
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    body = {"prompt": "x", "steps": 2, "webhook": f"http://127.0.0.1:{port}/hook"}
    async with srv.http.post(url, json=body, headers=srv.auth(secret)) as r:
        assert r.status == 202, await r.text()
        [job] = (await r.json())["jobs"]
    return str(job["id"])


async def test_a_webhook_cut_short_by_a_stop_is_sent_by_the_next_start(
    settings: Settings,
) -> None:
    config = http_settings(settings, allow_private_urls=True, webhook_backoff=0.05, url_timeout=1)
    received: list[tuple[bytes, str]] = []
    first_try = asyncio.Event()
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        if not first_try.is_set():
            first_try.set()
            await asyncio.sleep(30)  # the process stops while this try waits
        received.append((await request.read(), request.headers.get(HEADER, "")))
        got.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with loopback(receiver) as port:
        async with served(config) as srv:
            key = srv.key()
            job_id = await submit_with_webhook(srv, key.secret, port)
            await asyncio.wait_for(first_try.wait(), 15)
        async with served(config) as again:  # the same store: its lease runs out, it is sent
            await asyncio.wait_for(got.wait(), 15)
            assert again.engine.store.webhook_state(job_id) == ("sent", 1)
    [(payload, signature)] = received
    assert verify(key.webhook_secret, payload, signature)
    assert json.loads(payload)["job"]["id"] == job_id


@pytest.mark.usefixtures("pg_cluster")
async def test_several_api_processes_on_one_database_send_each_webhook_once(
    tmp_path: Path, comfy: FakeComfyUI, pg_url: str
) -> None:
    shared = make_settings(tmp_path, comfy.url, storage={"url": pg_url})
    config = http_settings(shared, allow_private_urls=True, webhook_backoff=0.05)
    received: list[str] = []

    async def hook(request: web.Request) -> web.Response:
        received.append(json.loads(await request.read())["job"]["id"])
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with (
        loopback(receiver) as port,
        served(config) as one,
        served(config) as two,
        served(config) as three,
    ):
        key = one.key()
        jobs = [await submit_with_webhook(srv, key.secret, port) for srv in (one, two, three)]
        for _ in range(200):
            if len(received) >= 3:
                break
            await asyncio.sleep(0.05)
        await asyncio.sleep(1.5)  # a second delivery would come now
        assert sorted(received) == sorted(jobs)
        for job_id in jobs:
            assert one.engine.store.webhook_state(job_id) == ("sent", 1)
