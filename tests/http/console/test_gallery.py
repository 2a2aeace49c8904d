"""The console's gallery holds Discord's results too: where they were made (server, channel) and
who made them are shown to admins only, and a member key never sees them (issue 18)."""

from __future__ import annotations

import html
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.engine import JobRequest
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import browser, console_settings, sign_in
from tests.http_helpers import Served, served


@pytest.fixture
async def srv(tmp_path: Path, comfy: FakeComfyUI) -> AsyncIterator[Served]:
    async with served(console_settings(tmp_path, comfy)) as s:
        yield s


async def gallery_of(srv: Served, secret: str) -> str:
    async with browser() as http:
        await sign_in(srv, http, secret)
        async with http.get(f"{srv.url}/gallery") as r:
            assert r.status == 200
            return html.unescape(await r.text())


async def test_discord_results_show_their_server_and_channel_to_admins_only(srv: Served) -> None:
    (job,) = await srv.engine.submit(
        JobRequest(
            workflow="sd15-txt2img",
            values={"prompt": "a harbour at night", "steps": 2},
            owner_id="31337",
            owner_name="sailor",
            guild_id="4242",
            channel_id="78",
        )
    )
    await srv.recorder.finished(job.id, timeout=30)
    admin = await gallery_of(srv, srv.key("boss", role="admin").secret)
    assert "a harbour at night" in admin
    assert "sailor · server 4242, channel 78" in admin
    assert f"/v1/jobs/{job.id}/outputs/0" in admin
    member = await gallery_of(srv, srv.key("alice").secret)
    assert "a harbour at night" not in member and "4242" not in member
