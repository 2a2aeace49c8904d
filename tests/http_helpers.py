"""Helpers for the HTTP API tests: the engine and the API served on a real socket, and small
servers of the tests' own on loopback."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

from bot.admission import Admission
from bot.engine import Engine
from bot.http.keys import CreatedKey
from bot.http.server import serving
from bot.http.service import HttpApi
from bot.metrics import Metrics
from bot.policy import Policy
from bot.settings import Settings
from tests.conftest import Recorder


@dataclass
class Served:
    api: HttpApi
    engine: Engine
    recorder: Recorder
    url: str
    http: aiohttp.ClientSession

    def key(self, name: str = "app", **kwargs: Any) -> CreatedKey:
        return self.api.keys.create(name, **kwargs)

    @staticmethod
    def auth(key: CreatedKey | str) -> dict[str, str]:
        secret = key if isinstance(key, str) else key.secret
        return {"Authorization": f"Bearer {secret}"}


def http_settings(settings: Settings, **http: Any) -> Settings:
    """The test settings with the API on a free port (and whatever else is given)."""
    values = {"enabled": True, "port": 0, **http}
    return settings.model_copy(update={"http": settings.http.model_copy(update=values)})


@contextlib.asynccontextmanager
async def served(settings: Settings) -> AsyncIterator[Served]:
    """A started engine with the HTTP API listening on 127.0.0.1, and a client session."""
    async with aiohttp.ClientSession() as session, aiohttp.ClientSession() as http:
        engine = Engine(session, settings)
        admission = Admission(engine, Policy(engine.store, settings, lambda: engine.workflows))
        metrics = Metrics(engine)
        recorder = Recorder()
        engine.listen(recorder)
        await engine.start()
        try:
            async with serving(engine, admission, settings, metrics) as api:
                assert api.address is not None
                yield Served(api, engine, recorder, api.address, http)
        finally:
            await engine.stop()
            metrics.close()
            engine.close_store()


async def read_events(
    response: aiohttp.ClientResponse,
) -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """(event, data) pairs of a server-sent event stream, until it ends."""
    event, data = "message", []
    async for raw in response.content:
        line = raw.decode().rstrip("\r\n")
        if not line:
            if data:
                yield event, json.loads("\n".join(data))
            event, data = "message", []
        elif line.startswith("event:"):
            event = line[6:].strip()
        elif line.startswith("data:"):
            data.append(line[5:].lstrip())


@contextlib.asynccontextmanager
async def loopback(app: web.Application) -> AsyncIterator[int]:
    """`app` served on 127.0.0.1 at a free port, which it yields; stopped on exit."""
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        yield runner.addresses[0][1]
    finally:
        await runner.cleanup()
