"""End to end: a workflow added or removed over HTTP (or in the console) changes Discord's
commands at once, with the bot and the API on one engine as `comfycord run` with `http.enabled`
serves them (issue 18)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import aiohttp
import pytest

from bot.http.server import serving
from tests.cogs.test_e2e_import import NIGHT_SKY_YAML, settings_for
from tests.conftest import WORKFLOWS
from tests.e2e import comfybot, wait_result
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeDiscordError
from tests.http_helpers import http_settings
from tests.workflows.test_graph import txt2img_ui_export


@pytest.fixture
def packs(tmp_path: Path) -> Path:
    folder = tmp_path / "packs"
    shutil.copytree(WORKFLOWS, folder)
    return folder


def night_sky() -> aiohttp.FormData:
    form = aiohttp.FormData()
    graph = json.dumps(txt2img_ui_export()).encode()
    form.add_field("workflow", graph, filename="Night Sky.json", content_type="application/json")
    form.add_field("yaml", NIGHT_SKY_YAML, filename="night.yaml", content_type="application/yaml")
    form.add_field("name", "night-sky")
    return form


async def test_a_workflow_added_over_http_becomes_a_command_and_leaves_with_it(
    fake: FakeDiscord, comfy: FakeComfyUI, tmp_path: Path, packs: Path
) -> None:
    settings = http_settings(settings_for(tmp_path, comfy, fake, packs))
    async with (
        comfybot(fake, settings) as bot,
        serving(bot.engine, bot.admission, settings, bot.metrics) as api,
        aiohttp.ClientSession() as http,
    ):
        admin = {"Authorization": f"Bearer {api.keys.create('boss', role='admin').secret}"}
        with pytest.raises(FakeDiscordError):
            fake.command("nightsky")
        async with http.post(f"{api.address}/v1/workflows", data=night_sky(), headers=admin) as r:
            assert r.status == 201, await r.text()
        await bot.commands_followed()
        assert fake.command("nightsky")["name"] == "nightsky"

        run = await fake.slash("nightsky", {"prompt": "stars over a lake", "steps": 1})
        result = await wait_result(fake, run)
        assert result.attachments and "ready" in result.content
        assert comfy.prompts_received[-1]["prompt"]["6"]["inputs"]["text"] == "stars over a lake"

        async with http.delete(f"{api.address}/v1/workflows/night-sky", headers=admin) as r:
            assert r.status == 204, await r.text()
        await bot.commands_followed()
        with pytest.raises(FakeDiscordError):
            fake.command("nightsky")
        assert "imagine" in {c["name"] for c in fake.commands}
