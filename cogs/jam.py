"""/jam: a theme and a time limit; members generate in a thread, then everyone votes.

Moderators run `/jam start theme:<text> minutes:<n> [workflow] [channel] [entries]
[vote_minutes]`: the bot opens a thread with the theme; every `/imagine` result made there is an
entry (up to `entries` per member). When the time is up (or on `/jam end`), the entries are
posted as a gallery with a vote button each; when the vote closes (its own time, or `/jam end`
again) the winners are announced with their prompts. The state lives in `bot/jams.py` (SQLite),
so a jam goes on after a restart; the buttons are dynamic items that need nothing in memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ComfyBot, send_error
from bot.delivery import fit_image
from bot.errors import InvalidValue, NotAllowed, NotFound, UserError
from bot.jams import MAX_ENTRIES, MAX_MINUTES, Entry, Jam, Jams, JamState, Standing
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.tasks import spawn
from cogs._common import (
    actor,
    allowed_workflow_choices,
    bot_of,
    clip,
    ids,
    require_moderator,
)

log = logging.getLogger(__name__)

JAM_RE = r"[0-9a-f]{6}"
JOB_RE = r"[0-9a-f]{8}"
GALLERY_SIZE = 10  # images per gallery message (Discord's attachment limit)
UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_WAIT = 60.0  # the clock looks again at least this often


class VoteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"cc:jv:(?P<jam>{JAM_RE}):(?P<job>{JOB_RE}):(?P<n>\d+)",
):
    """One entry's vote button under the gallery; works after a restart."""

    def __init__(self, jam_id: str, job_id: str, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Vote #{number}",
                emoji="🗳️",
                style=discord.ButtonStyle.secondary,
                custom_id=f"cc:jv:{jam_id}:{job_id}:{number}",
            )
        )
        self.jam_id, self.job_id = jam_id, job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> VoteButton:
        return cls(match["jam"], match["job"], int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        cog = bot_of(interaction).get_cog("JamCog")
        assert isinstance(cog, JamCog)
        await cog.vote(interaction, self.jam_id, self.job_id)


@app_commands.default_permissions(manage_guild=True)
class JamCog(
    commands.GroupCog,
    group_name="jam",
    group_description="Moderators: themed contests where members generate, then vote",
):
    """Jams: start, list, end; the clock that moves them on; the gallery and the votes."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.jams = Jams(bot.settings.storage.path)
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        self._clock: asyncio.Task[None] | None = None
        self._unlisten: Any = None
        self.now = time.time  # the clock (tests move it forward)
        self._told: set[str] = set()  # groups whose owner was told about a refusal
        super().__init__()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(VoteButton)
        self._unlisten = self.bot.engine.listen(self._on_update)
        self._clock = spawn(self._run_clock(), name="jam-clock")

    async def cog_unload(self) -> None:
        if self._unlisten:
            self._unlisten()
        if self._clock is not None:
            self._clock.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._clock
        self.bot.remove_dynamic_items(VoteButton)
        self.jams.close()

    def wake(self) -> None:
        """Look at the deadlines again now (after a change, or when the clock moved)."""
        self._wake.set()

    # commands ---------------------------------------------------------------------------------
    @app_commands.command(name="start", description="Open a jam: a theme, a thread, a vote")
    @app_commands.describe(
        theme="What everyone should make",
        minutes="How long members may enter",
        workflow="Only images of this workflow count (and it is the thread's default)",
        channel="Where to open the jam's thread (default: here)",
        entries="How many entries each member may have (default 1)",
        vote_minutes="How long the vote lasts (default 15)",
    )
    async def start(
        self,
        interaction: discord.Interaction,
        theme: app_commands.Range[str, 1, 90],
        minutes: app_commands.Range[int, 1, MAX_MINUTES],
        workflow: str | None = None,
        channel: discord.TextChannel | None = None,
        entries: app_commands.Range[int, 1, MAX_ENTRIES] = 1,
        vote_minutes: app_commands.Range[int, 1, MAX_MINUTES] = 15,
    ) -> None:
        require_moderator(interaction)
        guild, _ = ids(interaction)
        if guild is None:
            raise NotAllowed("Jams happen in servers.")
        target = self.bot.get_channel(channel.id) if channel else interaction.channel
        if not isinstance(target, discord.TextChannel):
            raise InvalidValue("channel", "must be a text channel (a jam opens a thread there)")
        if workflow:
            self.bot.policy.check_allowed(
                workflow, guild, str(target.id), nsfw_channel=target.is_nsfw()
            )
        await interaction.response.defer(ephemeral=True, thinking=True)
        thread = await target.create_thread(
            name=clip(f"Jam: {theme}", 100),
            type=discord.ChannelType.public_thread,
            auto_archive_duration=10080,
        )
        jam = self.jams.start(
            guild_id=guild,
            channel_id=str(target.id),
            thread_id=str(thread.id),
            theme=theme,
            minutes=minutes,
            workflow=workflow,
            max_entries=entries,
            vote_minutes=vote_minutes,
            created_by=str(interaction.user.id),
            now=self.now(),
        )
        if workflow:
            self.bot.policy.set_default(
                guild, str(thread.id), workflow, actor(interaction), nsfw_channel=target.is_nsfw()
            )
        each = "one entry" if entries == 1 else f"up to {entries} entries"
        made_with = f" with `{workflow}`" if workflow else ""
        await thread.send(
            f"🎨 **Jam: {theme}**\nUse `/imagine` in this thread{made_with}: your results are "
            f"your entries ({each} each). Entries close <t:{int(jam.ends_at)}:R>; then everyone "
            f"votes for {vote_minutes} minute(s)."
        )
        await target.send(f"🎨 A jam has started: **{theme}**, in {thread.mention}.")
        await interaction.followup.send(
            f"Jam `{jam.id}` started in {thread.mention}.", ephemeral=True
        )
        self._wake.set()

    @start.autocomplete("workflow")
    async def _workflows(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        return allowed_workflow_choices(interaction, current)

    @app_commands.command(name="list", description="Jams of this server: running and recent")
    async def list_(self, interaction: discord.Interaction) -> None:
        require_moderator(interaction)
        guild, _ = ids(interaction)
        jams = self.jams.recent(guild or "", limit=10)
        if not jams:
            await interaction.response.send_message("No jams yet.", ephemeral=True)
            return
        lines = []
        for jam in jams:
            count = len(self.jams.entries(jam.id))
            when = ""
            if jam.deadline is not None:
                verb = "entries close" if jam.state is JamState.OPEN else "vote closes"
                when = f" · {verb} <t:{int(jam.deadline)}:R>"
            lines.append(
                f"`{jam.id}` **{clip(jam.theme, 80)}** · {jam.state.value} · <#{jam.thread_id}>"
                f" · {count} entr{'y' if count == 1 else 'ies'}{when}"
            )
        await interaction.response.send_message(clip("\n".join(lines), 2000), ephemeral=True)

    @app_commands.command(name="end", description="Close a jam's entries now, or its vote")
    @app_commands.describe(jam="The jam's id (default: the jam of this thread, or the only one)")
    async def end(self, interaction: discord.Interaction, jam: str | None = None) -> None:
        require_moderator(interaction)
        guild, channel = ids(interaction)
        found = self._pick(guild, channel, jam)
        await interaction.response.defer(ephemeral=True, thinking=True)
        done = await self._advance(found.id)
        await interaction.followup.send(done, ephemeral=True)

    def _pick(self, guild: str | None, channel: str | None, jam_id: str | None) -> Jam:
        if jam_id:
            found = self.jams.get(jam_id.strip())
            if found.guild_id != guild:
                raise NotFound(f"There is no jam `{jam_id}` in this server.")
            return found
        here = self.jams.in_thread(channel or "")
        if here is not None:
            return here
        active = self.jams.active(guild)
        if len(active) == 1:
            return active[0]
        if not active:
            raise NotFound("No jam is running in this server.")
        raise InvalidValue("jam", "several jams are running: say which (see `/jam list`)")

    # votes ------------------------------------------------------------------------------------
    async def vote(self, interaction: discord.Interaction, jam_id: str, job_id: str) -> None:
        try:
            entry = self.jams.vote(jam_id, str(interaction.user.id), job_id)
            jam = self.jams.get(jam_id)
            until = f" until <t:{int(jam.vote_ends_at)}:R>" if jam.vote_ends_at else ""
            await interaction.response.send_message(
                f"🗳️ Your vote goes to entry #{entry.number}. You can change it{until}.",
                ephemeral=True,
            )
        except UserError as exc:
            await send_error(interaction, exc.message)

    # entries ----------------------------------------------------------------------------------
    def _on_update(self, update: JobUpdate) -> None:
        job = update.job
        if update.kind != "finished" or job.state is not JobState.DONE or not job.channel_id:
            return
        if self.jams.in_thread(job.channel_id) is None:
            return
        result = self.jams.consider(job, self._prompt_of(job))
        if isinstance(result, str):
            if job.group_id is not None:  # one note for a whole `count:N` request
                if job.group_id in self._told:
                    return
                self._told.add(job.group_id)
            spawn(self._tell(job, result), name=f"jam-refusal-{job.id}")

    def _prompt_of(self, job: Job) -> str:
        workflow = self.bot.engine.workflows.get(job.workflow)
        param = workflow.prompt_param if workflow else None
        return str(job.values.get(param.name if param else "prompt", "") or "")

    async def _tell(self, job: Job, text: str) -> None:
        channel = self.bot.get_partial_messageable(int(job.channel_id or 0))
        mentions = discord.AllowedMentions(users=[discord.Object(int(job.owner_id))])
        await channel.send(f"<@{job.owner_id}> {text}.", allowed_mentions=mentions)

    def _sweep(self, jam: Jam) -> None:
        """Enter what finished in the thread while nobody listened (e.g. during a restart)."""
        for job in reversed(self.bot.engine.recent(guild_id=jam.guild_id, limit=500)):
            if job.channel_id == jam.thread_id and job.created_at <= jam.ends_at:
                self.jams.consider(job, self._prompt_of(job))

    # the clock --------------------------------------------------------------------------------
    async def _run_clock(self) -> None:
        await self.bot.wait_until_ready()
        while True:
            self._wake.clear()
            for jam in self.jams.active():
                if jam.deadline is not None and jam.deadline <= self.now():
                    try:
                        await self._advance(jam.id)
                    except Exception:
                        log.exception("jam %s could not move on; trying again later", jam.id)
            deadlines = [j.deadline for j in self.jams.active() if j.deadline is not None]
            wait = min([MAX_WAIT, *(d - self.now() for d in deadlines)])
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=max(0.05, wait))

    async def _advance(self, jam_id: str) -> str:
        """Open the vote of an open jam, or close the vote of a voting one; says which."""
        async with self._lock:
            jam = self.jams.get(jam_id)
            if jam.state is JamState.OPEN:
                self._sweep(jam)
                entries = self.jams.entries(jam.id)
                if entries:
                    await self._post_gallery(jam, entries)
                jam = self.jams.start_voting(jam.id, now=self.now())
                if not entries:
                    self.jams.finish(jam.id)
                    await self._send(jam, f"🎨 **Jam: {jam.theme}** ended without entries.")
                    return f"Jam `{jam.id}` ended: it had no entries."
                self._wake.set()
                return f"Entries of jam `{jam.id}` are closed; the vote is open."
            if jam.state is JamState.VOTING:
                standings = self.jams.finish(jam.id)
                await self._announce(jam, standings)
                return f"Jam `{jam.id}` is over; the winners are announced."
            raise NotAllowed(f"Jam `{jam.id}` is already over.")

    async def _send(self, jam: Jam, text: str, **kwargs: Any) -> discord.Message:
        thread = self.bot.get_partial_messageable(int(jam.thread_id))
        return await thread.send(clip(text, 2000), **kwargs)

    async def _post_gallery(self, jam: Jam, entries: list[Entry]) -> None:
        closes = int(self.now() + jam.vote_seconds)
        await self._send(
            jam,
            f"🗳️ **Jam: {jam.theme}**: entries are closed, voting is open until <t:{closes}:t> "
            f"(<t:{closes}:R>). One vote each, not for your own entry; you can change it until "
            "the vote closes.",
        )
        for start in range(0, len(entries), GALLERY_SIZE):
            chunk = entries[start : start + GALLERY_SIZE]
            files, lines = [], []
            view = discord.ui.View(timeout=None)
            for entry in chunk:
                job = self.bot.engine.get_job(entry.job_id)
                if job is None or not job.outputs or not Path(job.outputs[0].path).is_file():
                    lines.append(f"`#{entry.number}` <@{entry.owner_id}>: (image no longer kept)")
                else:
                    # named like a result's file, so Apps → Upscale finds the job behind it
                    name = f"{job.id}-{job.outputs[0].filename}"
                    data = Path(job.outputs[0].path).read_bytes()
                    fitted = fit_image(data, name, UPLOAD_LIMIT)
                    files.append(discord.File(io.BytesIO(fitted.data), filename=fitted.filename))
                    lines.append(
                        f"`#{entry.number}` <@{entry.owner_id}>: {clip(entry.prompt, 150)}"
                    )
                view.add_item(VoteButton(jam.id, entry.job_id, entry.number))
            await self._send(
                jam,
                "\n".join(lines),
                files=files,
                view=view,
                allowed_mentions=discord.AllowedMentions.none(),
            )

    async def _announce(self, jam: Jam, standings: list[Standing]) -> None:
        winners = [s for s in standings if s.rank == 1 and s.votes > 0]
        if not winners:
            text = f"🏁 **Jam: {jam.theme}** is over. No votes were cast."
        else:
            lines = [f"🏆 **Jam: {jam.theme}** is over. The winner{'s' * (len(winners) > 1)}:"]
            lines += [_standing_line(s) for s in winners]
            others = [s for s in standings if s.rank > 1 and s.votes > 0][:5]
            if others:
                lines.append("Also voted for:")
                lines += [_standing_line(s) for s in others]
            text = "\n".join(lines)
        mentions = discord.AllowedMentions(
            users=[discord.Object(int(s.entry.owner_id)) for s in standings if s.rank == 1]
        )
        await self._send(jam, text, allowed_mentions=mentions)
        parent = self.bot.get_partial_messageable(int(jam.channel_id))
        await parent.send(
            clip(text + f"\n(in <#{jam.thread_id}>)", 2000), allowed_mentions=mentions
        )


def _standing_line(standing: Standing) -> str:
    entry = standing.entry
    votes = f"{standing.votes} vote{'s' * (standing.votes != 1)}"
    return (
        f"**{standing.rank}.** `#{entry.number}` <@{entry.owner_id}> ({votes}, {entry.workflow}):"
        f" {clip(entry.prompt, 300)}"
    )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(JamCog(bot))
