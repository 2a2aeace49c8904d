"""`comfycord run` and `comfycord sync` against the fake Discord: login, sync, clear failures."""

from __future__ import annotations

import asyncio
import contextlib
from pathlib import Path

import pytest

from bot.app import run_bot, sync_commands
from bot.errors import ConfigError
from tests.conftest import make_settings
from tests.e2e import has_files
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord_fixtures import installed_fake


async def test_run_logs_in_and_syncs_the_dev_guild(comfy: FakeComfyUI, tmp_path: Path) -> None:
    async with installed_fake() as fake:
        settings = make_settings(tmp_path, comfy.url).model_copy(
            update={"discord_token": fake.bot_token}
        )
        settings = settings.model_copy(
            update={"discord": settings.discord.model_copy(update={"dev_guild": fake.guild_id})}
        )
        task = asyncio.create_task(run_bot(settings))
        try:
            await fake.wait_for(lambda: fake.identify_count == 1 and fake.gateway_connected)
            await fake.wait_for(lambda: any(c["name"] == "imagine" for c in fake.commands))
            names = {c["name"] for c in fake.commands if c.get("guild_id")}
            assert {"imagine", "img2img", "workflows", "queue", "cancel", "history"} <= names
            assert not [c for c in fake.commands if not c.get("guild_id")]  # no global sync
            it = await fake.slash("imagine", {"prompt": "a cat", "steps": 2})
            message = await it.wait_original(has_files, timeout=15)
            assert message.attachments[0].data.startswith(b"\x89PNG")
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task


async def test_run_with_a_wrong_token_says_so(comfy: FakeComfyUI, tmp_path: Path) -> None:
    async with installed_fake():
        settings = make_settings(tmp_path, comfy.url).model_copy(
            update={"discord_token": "not-the-token"}
        )
        with pytest.raises(ConfigError, match="refused the token"):
            await run_bot(settings)


async def test_sync_registers_global_commands_once(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with installed_fake() as fake:
        settings = make_settings(tmp_path, comfy.url).model_copy(
            update={"discord_token": fake.bot_token}
        )
        assert await sync_commands(settings, None) == 0
        names = {c["name"] for c in fake.commands if not c.get("guild_id")}
        assert {"imagine", "workflows", "queue"} <= names
        assert "synced" in capsys.readouterr().out
