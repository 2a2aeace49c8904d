"""/jam: a theme and a time limit; members generate in a thread, then everyone votes.

Moderators run `/jam start theme:<text> minutes:<n> [workflow] [channel] [entries]
[vote_minutes]`: the bot opens a thread with the theme; every `/imagine` result made there is an
entry (up to `entries` per member), whatever it is: an image, an animation, a video, a sound, a
3D model. When the time is up (or on `/jam end`), the entries are posted as a gallery with a
vote button each, each file as what it is. A result shown before the close is in the gallery
even while its files are still being stored (the gallery waits for them a while); one whose job
was made before the close but finishes after it is shown under the gallery when it is ready.
When the vote closes (its own time, or `/jam end` again) the winners are announced with their
prompts. The state lives in `bot/jams.py` (SQLite), so a jam goes on after a restart; the
buttons are dynamic items that need nothing in memory.
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
from bot.delivery import fit_file
from bot.errors import InvalidValue, NotAllowed, NotFound, UserError
from bot.jams import MAX_ENTRIES, MAX_MINUTES, Entry, Jam, Jams, JamState, Standing
from bot.jobs.model import Job, JobState, Output
from bot.jobs.runner import JobUpdate
from bot.media import Kind
from bot.media.fit import CannotFit
from bot.tasks import spawn
from cogs._autocomplete import allowed_workflows
from cogs._common import (
    actor,
    bot_of,
    clip,
    ids,
    require_moderator,
)

log = logging.getLogger(__name__)

JAM_RE = r"[0-9a-f]{6}"
JOB_RE = r"[0-9a-f]{8}"
GALLERY_SIZE = 10  # entries per gallery message
MAX_FILES = 10  # files per message (Discord's attachment limit)
UPLOAD_LIMIT = 10 * 1024 * 1024
MAX_WAIT = 60.0  # the clock looks again at least this often
#: How long a gallery waits for the files of entries whose results are out but not stored yet
#: (a second or so normally); those still not stored are shown under it once they are.
STORE_WAIT = 15.0
#: Which of an entry's files goes first in the gallery: what moves, then stills, then the rest.
SHOWN_FIRST = (Kind.VIDEO, Kind.ANIMATION, Kind.IMAGE, Kind.AUDIO, Kind.MODEL, Kind.FILE, Kind.TEXT)
TEXT_SHOWN = 300  # characters of a text output quoted under its entry
GALLERY_TEXT = 1900  # characters of entry lines per gallery message (Discord allows 2000)


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
        self.jams = Jams.open(bot.settings.storage)
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
        workflow="Only results of this workflow count (and it is the thread's default)",
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

    start.autocomplete("workflow")(allowed_workflows)

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
        if not job.channel_id:
            return
        if update.kind == "result" and job.state is JobState.DONE:
            # shown in the thread now: an entry now, while its files are still being stored
            self._enter(job)
        elif update.kind == "finished" and self.jams.in_thread(job.channel_id) is not None:
            entry = self.jams.entry_of(job.id)
            if entry is not None and not entry.posted:  # stored after the gallery went out
                self._show_late(entry.jam_id)

    def _enter(self, job: Job) -> None:
        result = self.jams.consider(job, self._prompt_of(job))
        if isinstance(result, Entry):
            if self.jams.get(result.jam_id).state is JamState.VOTING:  # made before the close
                self._show_late(result.jam_id)
        elif isinstance(result, str):
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
            if job.channel_id == jam.thread_id and job.created_at <= jam.entries_close:
                self.jams.consider(job, self._prompt_of(job))

    def _still_making(self, jam: Jam) -> int:
        """Jobs made in the thread before the entries closed that have no result yet."""
        return sum(
            1
            for q in self.bot.engine.queue_entries()
            if q.job.channel_id == jam.thread_id and q.job.created_at <= jam.entries_close
        )

    def _show_late(self, jam_id: str) -> None:
        spawn(self._post_late(jam_id), name=f"jam-late-{jam_id}")

    async def _post_late(self, jam_id: str) -> None:
        async with self._lock:  # after the gallery, if it is being posted
            jam = self.jams.get(jam_id)
            if jam.state is JamState.VOTING:
                await self._post_entries(jam, late=True)

    # the clock --------------------------------------------------------------------------------
    async def _run_clock(self) -> None:
        await self.bot.wait_until_ready()
        # what came in while the bot was away (the process holding the jobs sees to it)
        for jam in self.jams.active() if self.bot.engine.holds_jobs else ():
            if jam.state is JamState.VOTING:
                self._sweep(jam)
                self._show_late(jam.id)
        while True:
            self._wake.clear()
            for jam in self.jams.active() if self.bot.engine.holds_jobs else ():
                # with several processes on one store, the one holding the jobs moves jams on
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
                # The entries close first: from here on a result counts by when its job was
                # made, so one shown a moment ago (its files still being written) is in.
                jam = self.jams.start_voting(jam.id, now=self.now())
                self._sweep(jam)
                making = self._still_making(jam)
                if not self.jams.entries(jam.id) and not making:
                    self.jams.finish(jam.id)
                    await self._send(jam, f"🎨 **Jam: {jam.theme}** ended without entries.")
                    return f"Jam `{jam.id}` ended: it had no entries."
                await self._post_gallery(jam, making)
                self._wake.set()
                later = ""
                if making:
                    which = "entry is" if making == 1 else "entries are"
                    later = f" {making} {which} still being made: shown when ready."
                return f"Entries of jam `{jam.id}` are closed; the vote is open.{later}"
            if jam.state is JamState.VOTING:
                standings = self.jams.finish(jam.id)
                await self._announce(jam, standings)
                return f"Jam `{jam.id}` is over; the winners are announced."
            raise NotAllowed(f"Jam `{jam.id}` is already over.")

    async def _send(self, jam: Jam, text: str, **kwargs: Any) -> discord.Message:
        thread = self.bot.get_partial_messageable(int(jam.thread_id))
        return await thread.send(clip(text, 2000), **kwargs)

    async def _post_gallery(self, jam: Jam, making: int) -> None:
        closes = int(jam.vote_ends_at or self.now() + jam.vote_seconds)
        later = ""
        if making:
            later = (
                f"\n{making} more entr{'y is' if making == 1 else 'ies are'} still being made "
                "(started before the close): each is shown below when it is ready."
            )
        await self._send(
            jam,
            f"🗳️ **Jam: {jam.theme}**: entries are closed, voting is open until <t:{closes}:t> "
            f"(<t:{closes}:R>). One vote each, not for your own entry; you can change it until "
            f"the vote closes.{later}",
        )
        await self._post_entries(jam, late=False)

    async def _post_entries(self, jam: Jam, *, late: bool) -> None:
        """Show the entries not shown yet, each with its files and vote button. Those whose
        files are still being stored are waited for (up to `STORE_WAIT`); what is not stored
        by then is shown when it is (see `_on_update`)."""
        waited: set[str] = set()
        while True:
            entries = [e for e in self.jams.unposted(jam.id) if e.job_id not in waited]
            if not entries:
                return
            waited.update(e.job_id for e in entries)
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    self.bot.engine.saved([e.job_id for e in entries]), STORE_WAIT
                )
            ready = [e for e in entries if self._stored(e.job_id)]
            shown: list[tuple[Entry, list[discord.File], str]] = []
            for entry in ready:
                files, line = await self._entry_files(entry)
                count = sum(len(f) for _, f, _ in shown)
                length = sum(len(text) + 40 for _, _, text in shown)  # 40: number and mention
                if shown and (
                    len(shown) == GALLERY_SIZE
                    or count + len(files) > MAX_FILES
                    or length + len(line) + 40 > GALLERY_TEXT
                ):
                    await self._post_chunk(jam, shown, late=late)
                    shown = []
                shown.append((entry, files, line))
            if shown:
                await self._post_chunk(jam, shown, late=late)
            late = True

    def _stored(self, job_id: str) -> bool:
        """Whether the job's final record (and its files) are stored, or it is gone."""
        job = self.bot.engine.get_job(job_id)
        return job is None or job.state.finished

    async def _post_chunk(
        self, jam: Jam, shown: list[tuple[Entry, list[discord.File], str]], *, late: bool
    ) -> None:
        lines = ["More entries, made before the entries closed:"] if late else []
        files: list[discord.File] = []
        view = discord.ui.View(timeout=None)
        for entry, entry_files, line in shown:
            lines.append(f"`#{entry.number}` <@{entry.owner_id}>: {line}")
            files += entry_files
            view.add_item(VoteButton(jam.id, entry.job_id, entry.number))
        await self._send(
            jam,
            "\n".join(lines),
            files=files,
            view=view,
            allowed_mentions=discord.AllowedMentions.none(),
        )
        self.jams.mark_posted(jam.id, [entry.job_id for entry, _, _ in shown])

    async def _entry_files(self, entry: Entry) -> tuple[list[discord.File], str]:
        """An entry's files for the gallery, as what they are (fitted to the upload limit),
        and its line: the prompt, a text output, and what could not be attached and why."""
        job = self.bot.engine.get_job(entry.job_id)
        line = clip(entry.prompt, 150) or "(no prompt)"
        outputs = sorted(job.outputs, key=_shown_rank) if job else []
        if job is None or job.state is not JobState.DONE or not outputs:
            return [], f"{line} (its result is no longer kept)"
        files: list[discord.File] = []
        notes: list[str] = []
        for output in outputs:
            path = Path(output.path)
            if not path.is_file():
                notes.append(f"{output.filename} is no longer kept")
                continue
            data = await asyncio.to_thread(path.read_bytes)
            if output.kind == Kind.TEXT.value:
                text = data.decode("utf-8", "replace").strip()
                notes.append(f"“{clip(text, TEXT_SHOWN)}”")
                continue
            if len(files) == MAX_FILES:
                notes.append(f"{output.filename} not attached (too many files)")
                continue
            # named like a result's file, so Apps → (follow-up) finds the job behind it
            try:
                fitted = await fit_file(data, f"{job.id}-{output.filename}", UPLOAD_LIMIT)
            except CannotFit as exc:
                notes.append(exc.message)
                continue
            files.append(discord.File(io.BytesIO(fitted.data), filename=fitted.filename))
            if fitted.note:
                notes.append(f"{fitted.filename}: {fitted.note}")
        if notes:
            line += " (" + "; ".join(notes) + ")"
        return files, clip(line, GALLERY_TEXT - 100)

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


def _shown_rank(output: Output) -> int:
    """Where an output goes among its job's files in the gallery (see `SHOWN_FIRST`)."""
    kinds = [k.value for k in SHOWN_FIRST]
    return kinds.index(output.kind) if output.kind in kinds else len(kinds)


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
