"""Helpers for end-to-end tests: the real bot against the fake Discord and fake ComfyUI."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import discord

from bot.app import ComfyBot
from bot.engine import Engine
from bot.jobs.model import Job
from bot.settings import Settings
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord import FakeDiscord, FakeInteraction, FakeMessage
from tests.fakes.discord_fixtures import running_bot


@contextlib.asynccontextmanager
async def comfybot(fake: FakeDiscord, settings: Settings) -> AsyncIterator[ComfyBot]:
    """A ComfyBot with its own engine, logged in to the fake Discord; closed on exit."""
    async with aiohttp.ClientSession() as session:
        engine = Engine(session, settings)
        bot = ComfyBot(engine, settings, guild_ready_timeout=0.1)
        try:
            async with running_bot(bot, fake) as ready:
                yield ready
        finally:
            engine.close_store()


def output_images(comfy: FakeComfyUI, prompt_id: str) -> list[bytes]:
    """The bytes of every image ComfyUI saved for a prompt."""
    outputs = comfy.history[prompt_id]["outputs"]
    return [
        comfy.read_output(img["filename"], img.get("subfolder", ""), img.get("type", "output"))
        for out in outputs.values()
        for img in out.get("images", [])
        if img.get("type", "output") == "output"
    ]


def has_files(message: FakeMessage | None) -> bool:
    return message is not None and bool(message.attachments) and "ready" in message.content


async def wait_result(fake: FakeDiscord, it: FakeInteraction, timeout: float = 15.0) -> FakeMessage:
    message = await it.wait_original(lambda m: has_files(m) or "❌" in m.content, timeout=timeout)
    assert message is not None
    return message


async def imagined(
    fake: FakeDiscord, bot: ComfyBot, options: dict[str, Any], timeout: float = 15.0
) -> tuple[FakeInteraction, FakeMessage, list[Job]]:
    """An /imagine with these options, its result, and its jobs in the order of the group."""
    it = await fake.slash("imagine", options)
    result = await wait_result(fake, it, timeout=timeout)
    count = int(options.get("count", 1))
    jobs = sorted(bot.engine.recent(limit=count), key=lambda j: j.meta.get("index", 0))
    return it, result, jobs


async def held_imagine(
    fake: FakeDiscord, comfy: FakeComfyUI, options: dict[str, Any]
) -> FakeInteraction:
    """An /imagine with these options whose job is running on ComfyUI, held at its first step."""
    comfy.hold_steps()
    it = await fake.slash("imagine", options)
    await comfy.wait_until_held()
    return it


async def stranger_click(
    fake: FakeDiscord, message_id: int, custom_id: str, name: str = "stranger"
) -> FakeInteraction:
    """A click on a button by a new member, `name`, acknowledged."""
    click = await fake.click(message_id, custom_id, user_id=fake.add_member(name))
    await click.wait_ack()
    return click


async def wait_stored(bot: ComfyBot, timeout: float = 10.0) -> None:
    """Wait until the jobs whose results were posted are stored as finished: a result goes out
    a moment before its files and record are written (and jams, /queue, /history see them)."""
    ids = [j.id for j in bot.engine.recent(limit=100)]
    await asyncio.wait_for(bot.engine.saved(ids), timeout)


def field(embed: dict[str, Any], name: str) -> str | None:
    for f in embed.get("fields", []):
        if f["name"] == name:
            return str(f["value"])
    return None


def contents(message: FakeMessage) -> list[str]:
    return [str(payload.get("content", "")) for _, payload in message.edits]


def find(messages: list[FakeMessage], pred: Callable[[FakeMessage], bool]) -> FakeMessage | None:
    return next((m for m in messages if pred(m)), None)


__all__ = ["comfybot", "discord", "find"]


async def answer(
    fake: FakeDiscord,
    name: str,
    options: dict[str, Any] | None = None,
    *,
    user_id: int | None = None,
    channel_id: int | None = None,
) -> tuple[FakeInteraction, FakeMessage]:
    """Run a slash command and wait for its first visible answer (not a "thinking…" one)."""
    it = await fake.slash(name, options or {}, user_id=user_id, channel_id=channel_id)
    await it.wait_ack()
    message = await it.wait_original(lambda m: not m.loading)
    return it, message


def prompt_text(body: dict[str, Any]) -> str:
    """The positive prompt of a `POST /prompt` body the fake ComfyUI received."""
    for node in body["prompt"].values():
        if node.get("_meta", {}).get("title") == "Positive":
            return str(node["inputs"]["text"])
    raise AssertionError("no Positive node in the prompt")
