"""pytest fixtures and helpers for running a real discord.py bot against ``FakeDiscord``.

Use from a test module (or a conftest) with::

    from tests.fakes.discord_fixtures import fake_discord, running_bot  # noqa: F401

or build your own fixture around ``installed_fake(**FakeDiscord kwargs)``. Either starts a fake,
points discord.py at it and restores discord.py afterwards, so other tests in the same process
are unaffected. ``running_bot`` logs a bot in, connects it to the gateway, optionally syncs its
command tree to the fake guild, and closes it on exit. Limits can be changed on a running fake
(``fake.ack_timeout = 0.3``, ``fake.rate_limits["channel_message_create"] = (3, 0.5)``).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import discord
import pytest_asyncio

from tests.fakes.discord import FakeDiscord


@contextlib.asynccontextmanager
async def installed_fake(**kwargs: Any) -> AsyncIterator[FakeDiscord]:
    """A started ``FakeDiscord(**kwargs)`` that discord.py points at, undone on exit."""
    fake = FakeDiscord(**kwargs)
    await fake.start()
    fake.install()
    try:
        yield fake
    finally:
        fake.uninstall()
        await fake.stop()


@pytest_asyncio.fixture
async def fake_discord() -> AsyncIterator[FakeDiscord]:
    """A started, installed ``FakeDiscord`` with default limits."""
    async with installed_fake() as fake:
        yield fake


@contextlib.asynccontextmanager
async def running_bot(
    bot: discord.Client,
    fake: FakeDiscord,
    *,
    sync: bool = True,
    timeout: float = 10.0,
    fast_reidentify: bool = True,
) -> AsyncIterator[Any]:
    """Log ``bot`` in to ``fake``, connect it and wait until it is ready; close it on exit.

    With ``sync`` and a bot that has a ``tree`` (``commands.Bot``), global commands are copied
    to the fake guild and synced there (as a dev-guild sync would do). With
    ``fast_reidentify`` the 5 s discord.py waits before every IDENTIFY after the first (its
    default ``before_identify_hook``) is skipped, so invalid-session tests stay fast.

    Raises:
        TimeoutError: the bot was not ready within ``timeout`` seconds.
    """
    if fast_reidentify and type(bot).before_identify_hook is discord.Client.before_identify_hook:

        async def no_identify_delay(shard_id: int | None, *, initial: bool = False) -> None:
            return None

        bot.before_identify_hook = no_identify_delay  # type: ignore[method-assign]
    await bot.login(fake.bot_token)
    connect = asyncio.create_task(bot.connect(), name="fake-discord-bot-connect")
    try:
        ready = asyncio.create_task(bot.wait_until_ready())
        done, _ = await asyncio.wait(
            {ready, connect}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if ready not in done:
            ready.cancel()
            if connect in done:
                connect.result()  # re-raise why the connection ended
            raise TimeoutError(f"bot not ready within {timeout} s")
        tree = getattr(bot, "tree", None)
        if sync and tree is not None:
            guild = discord.Object(id=fake.guild_id)
            tree.copy_global_to(guild=guild)
            await tree.sync(guild=guild)
        yield bot
    finally:
        await bot.close()
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(connect, timeout=5.0)
