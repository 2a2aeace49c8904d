"""/queue, /cancel and /history: the shared queue as members see it."""

from __future__ import annotations

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ComfyBot
from bot.errors import NotAllowed, NotFound
from bot.jobs.model import Job, JobState
from cogs._common import clip, ids, is_moderator

STATE_ICONS = {
    JobState.QUEUED: "⏳",
    JobState.SUBMITTED: "📨",
    JobState.RUNNING: "⚙️",
    JobState.DONE: "✅",
    JobState.FAILED: "❌",
    JobState.CANCELLED: "🚫",
}


def _link(job: Job) -> str:
    reply = job.meta.get("reply") or {}
    if job.guild_id and reply.get("channel_id") and reply.get("message_id"):
        return (
            f" [result](https://discord.com/channels/{job.guild_id}/"
            f"{reply['channel_id']}/{reply['message_id']})"
        )
    return ""


class Queue(commands.Cog):
    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot

    @app_commands.command(name="queue", description="What is running and waiting, in order")
    async def queue(self, interaction: discord.Interaction) -> None:
        me = str(interaction.user.id)
        entries = self.bot.engine.queue_entries()
        if not entries:
            await interaction.response.send_message("The queue is empty.", ephemeral=True)
            return
        lines = []
        for entry in entries[:30]:
            job = entry.job
            where = "running" if entry.position == 0 else f"#{entry.position}"
            line = (
                f"{STATE_ICONS[job.state]} {where} · `{job.id}` · <@{job.owner_id}> · "
                f"{job.workflow} · {job.state.value}"
            )
            lines.append(f"**{line} ← you**" if job.owner_id == me else line)
        if len(entries) > 30:
            lines.append(f"… and {len(entries) - 30} more")
        await interaction.response.send_message(
            clip("\n".join(lines), 2000),
            ephemeral=True,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    @app_commands.command(name="cancel", description="Cancel your job (moderators: anyone's)")
    @app_commands.describe(job="Job id (default: your latest unfinished job)")
    async def cancel(self, interaction: discord.Interaction, job: str | None = None) -> None:
        engine = self.bot.engine
        me = str(interaction.user.id)
        if job is None:
            mine = [e.job for e in engine.queue_entries() if e.job.owner_id == me]
            if not mine:
                raise NotFound("You have no job queued or running.")
            target = mine[-1]
        else:
            found = engine.get_job(job.strip())
            if found is None:
                raise NotFound(f"There is no job `{job}`.")
            target = found
        if target.owner_id != me and not is_moderator(interaction):
            raise NotAllowed("You can only cancel your own jobs.")
        await engine.cancel(target.id, by=interaction.user.display_name)
        await interaction.response.send_message(f"Cancelling job `{target.id}`.", ephemeral=True)

    @cancel.autocomplete("job")
    async def _cancel_choices(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        me = str(interaction.user.id)
        mod = is_moderator(interaction)
        return [
            app_commands.Choice(
                name=clip(f"{e.job.id} · {e.job.workflow} · {e.job.state.value}", 100),
                value=e.job.id,
            )
            for e in self.bot.engine.queue_entries()
            if (mod or e.job.owner_id == me) and current in e.job.id
        ][:25]

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
