"""The discord.py bot: wires the engine and the cogs, syncs commands, handles errors.

This module and `cogs/` are the only places that import discord.

`COMFYCORD_DISCORD_API` and `COMFYCORD_DISCORD_GATEWAY` (environment) point the bot at another
Discord API base and gateway URL (a proxy, or the fake Discord the tests serve on loopback).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

import aiohttp
import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.admission import Admission
from bot.engine import Engine
from bot.errors import ConfigError, UserError
from bot.lifecycle import SHUTDOWN_SECONDS, stop_requested
from bot.metrics import Metrics
from bot.policy import Policy
from bot.settings import Settings

log = logging.getLogger(__name__)

COGS: tuple[str, ...] = (
    "cogs.imagine",
    "cogs.results",
    "cogs.workflows",
    "cogs.queue",
    "cogs.jam",
    "cogs.admin",
)

# comfycord never joins voice channels: don't warn about missing voice libraries.
discord.VoiceClient.warn_nacl = False
discord.VoiceClient.warn_dave = False

RESTARTING = "The bot is restarting; try again in a minute."


def use_discord_endpoints(env: Mapping[str, str] | None = None) -> None:
    """Point discord.py at `COMFYCORD_DISCORD_API` / `COMFYCORD_DISCORD_GATEWAY` when set."""
    env = os.environ if env is None else env
    if api := env.get("COMFYCORD_DISCORD_API"):
        discord.http.Route.BASE = api.rstrip("/")
    if gateway := env.get("COMFYCORD_DISCORD_GATEWAY"):
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(gateway)


class ComfyTree(app_commands.CommandTree["ComfyBot"]):
    """The command tree: refuses new commands once the bot is shutting down."""

    async def interaction_check(self, interaction: discord.Interaction[ComfyBot]) -> bool:
        if not self.client.stopping:
            return True
        with contextlib.suppress(discord.HTTPException):
            await interaction.response.send_message(RESTARTING, ephemeral=True)
        return False


@runtime_checkable
class BuildsWorkflowCommands(Protocol):
    """A cog whose slash commands are built from the loaded workflows."""

    def rebuild_commands(self) -> None:
        """Replace its commands with ones built from the workflows loaded now."""


class ComfyBot(commands.Bot):
    """The bot. The engine is built outside and injected (it owns the aiohttp session)."""

    def __init__(
        self,
        engine: Engine,
        settings: Settings,
        *,
        cogs: Sequence[str] = COGS,
        start_engine: bool = True,
        **options: Any,
    ) -> None:
        options.setdefault("intents", discord.Intents.default())
        options.setdefault(
            "allowed_mentions", discord.AllowedMentions(users=True, roles=False, everyone=False)
        )
        # Every command works in servers only: policy, limits and the queue are per server.
        options.setdefault(
            "allowed_contexts",
            app_commands.AppCommandContext(guild=True, dm_channel=False, private_channel=False),
        )
        options.setdefault("allowed_installs", app_commands.AppInstallationType(guild=True))
        options.setdefault("tree_cls", ComfyTree)
        metrics = Metrics(engine)
        options.setdefault("http_trace", _discord_trace(metrics))
        super().__init__(command_prefix=commands.when_mentioned, **options)
        self.metrics = metrics
        self.engine = engine
        self.settings = settings
        self.policy = Policy(engine.store, settings, lambda: engine.workflows)
        self.policy.set_parent_lookup(self._thread_parent)
        self.admission = Admission(engine, self.policy)
        self.cog_names = tuple(cogs)
        self.start_engine = start_engine
        self.stopping = False
        # called first on shutdown (e.g. to tell members waiting for a job); bounded in time
        self.shutdown_hooks: list[Callable[[], Awaitable[None]]] = []
        self.tree.error(self.on_app_command_error)
        # the commands follow the workflows whichever way a pack is saved or removed
        self._command_sync: asyncio.Task[None] | None = None
        self._unwatch = engine.watch_workflows(self._follow_workflows)

    def _thread_parent(self, channel_id: str) -> str | None:
        """The channel a thread belongs to (None for anything else)."""
        channel = self.get_channel(int(channel_id)) if channel_id.isdigit() else None
        if isinstance(channel, discord.Thread):
            return str(channel.parent_id)
        return None

    async def setup_hook(self) -> None:
        if not self.engine.workflows:
            self.engine.reload_workflows()
        for name in self.cog_names:
            try:
                await self.load_extension(name)
            except Exception:
                log.exception("could not load cog %s", name)
        if self.start_engine:
            await self.engine.start()
        dev_guild = self.settings.discord.dev_guild
        if dev_guild is not None:
            guild = discord.Object(id=dev_guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("synced %d commands to the dev guild %s", len(synced), dev_guild)
        elif self.settings.discord.sync_on_start:
            synced = await self.tree.sync()
            log.info("synced %d global commands", len(synced))

    def _follow_workflows(self) -> None:
        """A pack was saved or removed (in Discord, over HTTP or in the console): rebuild and
        push the commands once the bot is connected, one change after the other."""
        if self.stopping or self.is_closed():
            return
        previous = self._command_sync
        self._command_sync = asyncio.get_running_loop().create_task(self._resync_after(previous))

    async def _resync_after(self, previous: asyncio.Task[None] | None) -> None:
        if previous is not None:
            await asyncio.wait({previous})
        await self.wait_until_ready()
        try:
            await self.workflows_changed()
        except discord.DiscordException:
            log.exception("could not push the commands after the workflows changed")

    async def commands_followed(self) -> None:
        """Wait until Discord's commands follow the workflows' last change."""
        if self._command_sync is not None:
            await asyncio.shield(self._command_sync)

    async def workflows_changed(self) -> None:
        """Rebuild the commands made from the workflows and push them to Discord at once.

        Called after the engine's workflows changed (an imported pack was saved): every cog
        that builds commands from workflows rebuilds them, then the tree is synced where it
        lives (the dev guild, and any server holding copies of the global commands; else
        globally), so a new pack's command and options show up without a restart.
        """
        for cog in self.cogs.values():
            if isinstance(cog, BuildsWorkflowCommands):
                cog.rebuild_commands()
        guild_ids = {g.id for g in self.guilds if self.tree.get_commands(guild=g)}
        if self.settings.discord.dev_guild is not None:
            guild_ids.add(self.settings.discord.dev_guild)
        for guild_id in sorted(guild_ids):
            guild = discord.Object(id=guild_id)
            self.tree.clear_commands(guild=guild)
            self.tree.copy_global_to(guild=guild)
            synced = await self.tree.sync(guild=guild)
            log.info("re-synced %d commands to server %s", len(synced), guild_id)
        if not guild_ids:
            synced = await self.tree.sync()
            log.info("re-synced %d global commands", len(synced))

    async def shutdown(self, timeout: float = SHUTDOWN_SECONDS) -> None:
        """Stop in order: refuse new commands, run the shutdown hooks, stop the engine (queued
        and running jobs stay in the store; running ones keep running on ComfyUI and are
        collected after the restart), close the ComfyUI and Discord connections."""
        self.stopping = True
        hooks = [hook() for hook in self.shutdown_hooks]
        if hooks:
            try:
                await asyncio.wait_for(asyncio.gather(*hooks, return_exceptions=True), timeout / 2)
            except TimeoutError:
                log.warning("shutdown hooks took longer than %.0f s; going on", timeout / 2)
        try:
            await asyncio.wait_for(self.close(), timeout / 2)
        except TimeoutError:
            log.warning("closing took longer than %.0f s", timeout / 2)

    async def close(self) -> None:
        self._unwatch()
        if self._command_sync is not None:
            self._command_sync.cancel()
        self.metrics.close()
        try:
            if self.start_engine:
                await self.engine.stop()
        finally:
            await super().close()

    async def on_app_command_error(
        self, interaction: discord.Interaction, error: app_commands.AppCommandError
    ) -> None:
        """One error handler: user errors are shown as is, anything else gets a reference."""
        original = getattr(error, "original", error)
        if isinstance(original, UserError):
            message = original.message
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You are not allowed to use this command here."
        else:
            ref = secrets.token_hex(3)
            log.error("command failed (ref %s)", ref, exc_info=original)
            message = f"Something went wrong (ref {ref}). The bot's owner can find it in the log."
        await send_error(interaction, message)


def _discord_trace(metrics: Metrics) -> aiohttp.TraceConfig:
    """Counts message edits and 429 answers on the bot's Discord session, for /metrics."""

    async def on_end(
        session: aiohttp.ClientSession, context: Any, params: aiohttp.TraceRequestEndParams
    ) -> None:
        if params.method == "PATCH" and "/messages/" in params.url.path:
            metrics.discord_edits.inc()
        if params.response.status == 429:
            metrics.discord_rate_limited.inc()

    trace = aiohttp.TraceConfig()
    trace.on_request_end.append(on_end)
    return trace


async def send_error(interaction: discord.Interaction, message: str) -> None:
    """Tell the member what went wrong, ephemeral when still possible; never raises."""
    try:
        if interaction.response.is_done():
            await interaction.followup.send(message[:2000], ephemeral=True)
        else:
            await interaction.response.send_message(message[:2000], ephemeral=True)
    except discord.HTTPException:
        log.warning("could not tell the member about an error: %s", message)


async def run_bot(settings: Settings) -> int:
    """Run the bot until it is stopped.

    Raises:
        ConfigError: Discord refused the token or could not be reached (said in plain words).
    """
    assert settings.discord_token
    use_discord_endpoints()
    async with aiohttp.ClientSession() as session:
        # one shard of several when the settings say so (`sync` needs no shard)
        shard_id, shard_count = settings.discord.shard_id, settings.discord.shard_count
        detail = "Discord" if shard_count is None else f"Discord shard {shard_id}"
        engine = Engine(session, settings, role="bot", detail=detail)
        try:
            bot = ComfyBot(engine, settings, shard_id=shard_id, shard_count=shard_count)
            async with bot, contextlib.AsyncExitStack() as http:
                if settings.http.enabled:
                    from bot.http.server import serving

                    # the API is up with the engine, before Discord; it stops after the bot
                    await engine.start()
                    http.push_async_callback(engine.stop)
                    bot.start_engine = False
                    await http.enter_async_context(
                        serving(engine, bot.admission, settings, bot.metrics)
                    )
                with stop_requested() as stop:
                    running = asyncio.ensure_future(bot.start(settings.discord_token))
                    stopping = asyncio.ensure_future(stop.wait())
                    await asyncio.wait({running, stopping}, return_when=asyncio.FIRST_COMPLETED)
                    stopping.cancel()
                    if not running.done():
                        await bot.shutdown()
                        with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                            await asyncio.wait_for(running, 1.0)
                    if running.done() and not running.cancelled():
                        running.result()  # why it ended, when it did on its own
                log.info("stopped")
        except discord.LoginFailure:
            raise ConfigError(
                "Discord refused the token in DISCORD_TOKEN: copy it again from the developer "
                "portal (Bot > Reset Token)."
            ) from None
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(
                "Discord refused an intent this bot asked for; see README (Set up the Discord bot)."
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise ConfigError(f"Cannot reach Discord: {exc}") from None
        finally:
            engine.close_store()
    return 0


async def sync_commands(settings: Settings, guild_id: int | None) -> int:
    """Register the slash commands (globally, or to one server) and exit."""
    assert settings.discord_token
    use_discord_endpoints()
    async with aiohttp.ClientSession() as session:
        engine = Engine(session, settings)
        bot = ComfyBot(engine, settings, start_engine=False)
        async with bot:
            try:
                await bot.login(settings.discord_token)  # runs setup_hook: loads the cogs
            except discord.LoginFailure:
                raise ConfigError("Discord refused the token in DISCORD_TOKEN.") from None
            except (aiohttp.ClientError, OSError) as exc:
                raise ConfigError(f"Cannot reach Discord: {exc}") from None
            if guild_id is not None:
                guild = discord.Object(id=guild_id)
                bot.tree.copy_global_to(guild=guild)
                synced = await bot.tree.sync(guild=guild)
            else:
                synced = await bot.tree.sync()
        engine.close_store()
    print(f"synced {len(synced)} commands" + (f" to server {guild_id}" if guild_id else ""))
    return 0
