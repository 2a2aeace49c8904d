"""The result of a reply, and its delivery: the message (what was made, with which values, the
buttons under it) and posting it, tried again on a server or network error.

The result goes where the reply is, through its interaction token while that works; otherwise
(or once Discord refuses the token) to the channel, as `cogs._reply.ReplyIO` does it. Repeating
a delivery is harmless, so a failed one is tried again after a restart.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

import aiohttp
import discord

from bot.app import ComfyBot
from bot.delivery import ready_words
from bot.followups import offered
from bot.jobs.model import Job, JobState
from cogs._common import clip
from cogs._components import result_view
from cogs._rendering import Prepared, result_files, with_texts
from cogs._reply import MAX_FILES, Reply, ReplyIO

log = logging.getLogger(__name__)

DELIVERY_ATTEMPTS = 4  # Discord unreachable or failing: tries before waiting for a restart


class Deliverer:
    """Posts the results of replies."""

    def __init__(self, bot: ComfyBot, reply_io: ReplyIO) -> None:
        self.engine = bot.engine
        self.policy = bot.policy
        self.reply_io = reply_io

    async def deliver(self, reply: Reply, sent: Callable[[], None]) -> int | None:
        """Deliver, tried again on a server or network error; the message id, None if it failed
        (it is tried again on restart). `sent()` is called once the first try is over."""
        if reply.coalescer is not None:
            await reply.coalescer.close()  # the result replaces the progress
        jobs = [j for j in (self._final_job(reply, i) for i in reply.job_ids) if j is not None]
        delay = 1.0
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                return await self._post(reply, jobs)
            except (discord.DiscordServerError, aiohttp.ClientError, OSError) as exc:
                sent()
                if attempt == DELIVERY_ATTEMPTS:
                    log.error(
                        "delivering %s failed (%s); it is tried again on restart", reply.key, exc
                    )
                    return None
                log.warning(
                    "delivering %s failed (%s); trying again in %.0f s", reply.key, exc, delay
                )
                await asyncio.sleep(delay)
                delay *= 2
            except Exception:
                log.exception("delivering %s failed; it is tried again on restart", reply.key)
                return None
        return None

    def _final_job(self, reply: Reply, job_id: str) -> Job | None:
        """A job as it ended: from its `result` or `finished` update (a `result` comes while its
        files are still being written, before the store has it), else as the engine has it."""
        update = reply.latest.get(job_id)
        if update is not None and update.job.state.finished:
            return update.job
        return self.engine.get_job(job_id)

    async def _post(self, reply: Reply, jobs: list[Job]) -> int:
        """Post the result (the reply itself, or a message in the channel); its message id.

        Repeating a delivery is harmless: an edit of the reply just happens again, and a channel
        post carries the reply's nonce, so Discord returns the message already posted.
        """
        held = {job_id: u.images for job_id, u in reply.latest.items() if u.images}
        prepared = await result_files(jobs, reply.size_limit, held)
        content, embed, view = self._result_message(jobs, prepared)
        files = prepared.discord_files()
        first_batch, rest = files[:MAX_FILES], files[MAX_FILES:]
        if reply.token_usable():
            try:
                message = await self.reply_io.edit(
                    reply, content=content, embed=embed, attachments=first_batch, view=view
                )
                if message is not None:
                    for start in range(0, len(rest), MAX_FILES):
                        await self.reply_io.followup(reply, rest[start : start + MAX_FILES])
                    return message.id
            except discord.HTTPException:
                if reply.token_usable():
                    raise
            if not reply.token_usable():
                log.info(
                    "interaction token of %s no longer works; posting to the channel", reply.key
                )
                files = prepared.discord_files()  # the first ones were read by the failed edit
                first_batch, rest = files[:MAX_FILES], files[MAX_FILES:]
        await self.reply_io.point_to_result(reply)
        message = await self.reply_io.send_to_channel(
            reply, content, embed, view, first_batch, rest
        )
        return message.id

    def _result_message(
        self, jobs: list[Job], prepared: Prepared
    ) -> tuple[str, discord.Embed, discord.ui.View]:
        first = jobs[0]
        done = [j for j in jobs if j.state is JobState.DONE]
        failed = [j for j in jobs if j.state is not JobState.DONE]
        workflow = self.engine.workflows.get(first.workflow)
        prompt_name = workflow.prompt_param.name if workflow and workflow.prompt_param else "prompt"
        seed_name = workflow.seed_param.name if workflow and workflow.seed_param else None
        if not done:
            job = failed[0]
            verb = "was cancelled" if job.state is JobState.CANCELLED else "failed"
            content = clip(f"❌ Job `{job.id}` {verb}: {job.error or 'no reason given'}", 2000)
            embed = discord.Embed(title=clip(f"{first.workflow} · {verb}", 256))
            return content, embed, self._result_view(first, [])
        prompt = str(first.values.get(prompt_name, ""))
        embed = discord.Embed(
            title=clip(f"{first.workflow} · job {first.group_id or first.id}", 256),
            description=clip(prompt, 4000),
            color=discord.Color.blurple(),
        )
        embed.add_field(name="Workflow", value=first.workflow)
        if seed_name:
            seeds = ", ".join(str(j.values.get(seed_name)) for j in done)
            embed.add_field(name="Seed" + ("s" if len(done) > 1 else ""), value=clip(seeds, 1024))
        out = done[0].outputs[0] if done[0].outputs else None
        if out is not None and out.width:
            embed.add_field(name="Size", value=f"{out.width}×{out.height}")
        if "steps" in first.values:
            embed.add_field(name="Steps", value=str(first.values["steps"]))
        elapsed = max((j.elapsed or 0.0) for j in jobs)
        embed.add_field(name="Time", value=f"{elapsed:.1f} s")
        made_on = sorted({j.backend for j in done if j.backend})
        if made_on and len(self.engine.pool) > 1:
            embed.add_field(name="Backend", value=clip(", ".join(made_on), 1024))
        source = first.meta.get("source") or {}
        if source.get("job_id"):
            embed.add_field(
                name="From",
                value=f"image {source.get('image', 1)} of <@{source.get('owner_id')}>'s job "
                f"`{source['job_id']}`",
            )
        elif source.get("owner_id"):
            embed.add_field(name="From", value=f"<@{source['owner_id']}>'s image")
        elif first.remix_of:
            original = self.engine.get_job(first.remix_of)
            if original is not None:
                embed.add_field(
                    name="Remix of", value=f"<@{original.owner_id}>'s job `{original.id}`"
                )
        embed.set_footer(text=f"by {first.owner_name or first.owner_id}")
        content = f"✅ <@{first.owner_id}>, {ready_words(done)}."
        if failed:
            content += f"\n{len(failed)} of {len(jobs)} did not finish: {failed[0].error}"
        notes = [n for j in done for n in j.meta.get("notes", [])][:3] + prepared.notes
        if notes:
            content += "\n" + "\n".join(f"ℹ️ {n}" for n in dict.fromkeys(notes))
        return with_texts(content, prepared.texts), embed, self._result_view(first, done)

    def _result_view(self, first: Job, done: list[Job]) -> discord.ui.View:
        """Reroll, Edit, Info, Delete, then per image Variations and the follow-ups."""
        offers = offered(self.engine.workflows, self.policy, first)
        return result_view(first.group_id or first.id, first, done, offers)
