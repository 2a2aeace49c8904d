"""/queue, /cancel and /history: the shared queue as members see it."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ComfyBot
from bot.engine import QueueEntry
from bot.errors import NotAllowed, NotFound
from bot.jobs.model import Job, JobState
from cogs._common import clip, ids, is_moderator

MAX_LINES = 30
STATE_ICONS = {
    JobState.QUEUED: "⏳",
    JobState.SUBMITTED: "📨",
    JobState.RUNNING: "⚙️",
    JobState.DONE: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "🚫",
}


BACKEND_ICONS = {"busy": "🟢", "idle": "⚪", "down": "🔴"}


def _link(job: Job) -> str:
    """A link to the message with the job's result (or its reply while it had none)."""
    where = job.meta.get("result") or job.meta.get("reply") or {}
    if job.guild_id and where.get("channel_id") and where.get("message_id"):
        return (
            f" [result](https://discord.com/channels/{job.guild_id}/"
            f"{where['channel_id']}/{where['message_id']})"
        )
    return ""


class Queue(commands.Cog):
    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="What is running and waiting, in order")
    async def queue(self, interaction: discord.Interaction) -> None:
        me = str(interaction.user.id)
        guild, _ = ids(interaction)
        entries = self.bot.engine.queue_entries()
        here = [e for e in entries if e.job.guild_id == guild]
        elsewhere = len(entries) - len(here)
        pool = self._backend_lines(entries) + self._process_lines()
        if not entries:
            empty = "\n".join([*pool, "The queue is empty."])
            await interaction.response.send_message(empty, ephemeral=True)
            return
        lines = list(pool)
        for entry in here[:MAX_LINES]:
            job = entry.job
            where = "running" if entry.position == 0 else f"#{entry.position}"
            if entry.position == 0 and pool and job.backend:
                where = f"running on {job.backend}"
            line = (
                f"{STATE_ICONS[job.state]} {where} · `{job.id}` · <@{job.owner_id}> · "
                f"{job.workflow} · {job.state.value}"
            )
            lines.append(f"**{line}** ← you" if job.owner_id == me else line)
        if len(here) > MAX_LINES:
            lines.append(f"… and {len(here) - MAX_LINES} more")
        if elsewhere:
            lines.append(f"({elsewhere} job(s) from other servers share the queue)")
        await interaction.response.send_message(
            clip("\n".join(lines), 2000),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    def _backend_lines(self, entries: list[QueueEntry]) -> list[str]:
        """With several ComfyUI backends, one line each: busy, idle or down, jobs it holds."""
        backends = self.bot.engine.backends()
        if len(backends) < 2:
            return []
        lines = []
        for backend in backends:
            held = f" · {backend.running} job(s)" if backend.running else ""
            lines.append(
                f"{BACKEND_ICONS[backend.state]} **{backend.name}** · {backend.state}{held}"
            )
        waiting = sum(1 for e in entries if e.position > 0)
        lines.append(f"{waiting} job(s) waiting for a backend")
        return lines

    def _process_lines(self) -> list[str]:
        """With several processes on one store: how many, and which one holds the jobs."""
        processes = self.bot.engine.processes()
        if len(processes) < 2:
            return []
        line = f"🗄️ {len(processes)} processes share this queue"
        holder = next((p for p in processes if p.leading), None)
        if holder is not None:
            line += f"; the jobs are held by {holder.detail or holder.role} (`{holder.id}`)"
        return [line]

    @app_commands.command(name="cancel", description="Cancel your job (moderators: anyone's)")
    @app_commands.describe(job="Job id, or the id a group's reply shows (default: your latest)")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        engine = self.bot.engine
        me = str(interaction.user.id)
        guild, _ = ids(interaction)
        if job is None:
            mine = [e.job for e in engine.queue_entries() if e.job.owner_id == me]
            if not mine:
                raise NotFound("You have no job queued or running.")
            latest = max(mine, key=lambda j: j.created_at)
            key = latest.group_id or latest.id
        else:
            key = job.strip()
        targets = self._jobs_for(key)
        if not targets:
            raise NotFound(f"There is no job `{clip(key, 40)}`.")
        owner = targets[0].owner_id
        moderates = is_moderator(interaction) and targets[0].guild_id == guild
        if owner != me and not moderates:
            raise NotAllowed("You can only cancel your own jobs.")
        active = [j for j in targets if not j.state.finished]
        if not active:
            raise NotAllowed(f"Job `{key}` has already finished.")
        for target in active:
            await engine.cancel(target.id, by=interaction.user.display_name)
        await interaction.response.send_message(f"Cancelling job `{key}`.", ephemeral=True)

    def _jobs_for(self, key: str) -> list[Job]:
        """The job with this id, or every job of the group with this id."""
        engine = self.bot.engine
        found = engine.get_job(key)
        if found is not None:
            return [found]
        return [engine.get_job(j.id) or j for j in engine.store.group(key)]

    @cancel.autocomplete("job")
    async def _cancel_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        me = str(interaction.user.id)
        guild, _ = ids(interaction)
        mod = is_moderator(interaction)
        choices = []
        for entry in self.bot.engine.queue_entries():
            job = entry.job
            if job.owner_id != me and not (mod and job.guild_id == guild):
                continue
            if current.lower() not in job.id:
                continue
            who = job.owner_name or job.owner_id
            label = f"{job.id} · {job.workflow} · {job.state.value} · {who}"
            choices.append(app_commands.Choice(name=clip(label, 100), value=job.id))
        return choices[:25]

    @app_commands.command(name="history", description="Recent jobs, with links to their results")
    @app_commands.describe(member="Whose jobs (default: everyone's in this server)")
    async def history(
        self, interaction: discord.Interaction, member: discord.User | None = None
    ) -> None:
        guild, _ = ids(interaction)
        jobs = self.bot.engine.recent(
            owner_id=str(member.id) if member else None, guild_id=guild, limit=15
        )
        if not jobs:
            await interaction.response.send_message("No jobs yet.", ephemeral=True)
            return
        lines = []
        for job in jobs:
            credit = f" (remix of `{job.remix_of}`)" if job.remix_of else ""
            lines.append(
                f"{STATE_ICONS[job.state]} <t:{int(job.created_at)}:R> `{job.id}` "
                f"<@{job.owner_id}> · {job.workflow}{credit}{_link(job)}"
            )
        await interaction.response.send_message(
            clip("\n".join(lines), 2000),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Queue(bot))
