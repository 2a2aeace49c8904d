"""The replies the Imagine cog follows, from the acknowledgement to the result.

The flow of one request's reply: its jobs are stored with where the reply lives (one
transaction) -> it is acknowledged publicly -> the engine's updates edit it (coalesced, within
an edit budget: a queue position only when it enters another band, the run's progress and
previews at most once per interval) -> once every job has finished, the result is delivered
(`cogs._delivery`) and the jobs are marked delivered.

The interaction token is stored with the jobs until it expires, so after a restart the reply is
followed again, progress and result included. A reply about to lose its token is told, in a
last edit, that its result will be posted in the channel (`cogs._reply`).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable

import discord

from bot.app import ComfyBot
from bot.delivery import (
    POSITION_REFRESH,
    Coalescer,
    edit_budget,
    position_edit_due,
    start_edit_due,
    waiting_allowance,
)
from bot.intake import NETWORK_HOLD, Turn
from bot.jobs.model import Job, JobState
from bot.jobs.progress import JobUpdate
from bot.jobs.scheduler import band_of
from bot.tasks import spawn
from cogs._common import clip
from cogs._components import CancelButton
from cogs._delivery import Deliverer
from cogs._rendering import status_line
from cogs._reply import Reply, ReplyIO

log = logging.getLogger(__name__)

SWEEP_INTERVAL = 20.0  # how often expired tokens are forgotten (must stay under TOKEN_MARGIN)


class Replies:
    """The replies being followed (by their key), their jobs' updates, their deliveries."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.engine = bot.engine
        self.reply_io = ReplyIO(bot)
        self.deliverer = Deliverer(bot, self.reply_io)
        self.replies: dict[str, Reply] = {}
        self._by_job: dict[str, str] = {}
        self._unlisten: Callable[[], None] | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    def open(self) -> None:
        """Follow the engine's updates, the replies stored before a restart, the tokens' ends."""
        self._unlisten = self.engine.listen(self._on_update)
        if self.engine.sharing is not None:
            self.engine.sharing.watch(self._on_holder)
        spawn(self._resume(), name="resume-replies")
        self._sweeper = spawn(self._sweep(), name="token-sweep")
        self.bot.shutdown_hooks.append(self._on_shutdown)

    def close(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._unlisten:
            self._unlisten()

    async def start(
        self, interaction: discord.Interaction, jobs: list[Job], *, turn: Turn | None = None
    ) -> None:
        """Store the jobs with their reply, acknowledge (if not yet), show the first state.
        A request's `turn` of the engine's intake is kept for a quick acknowledgement only.

        The jobs and where their reply lives (channel, server, the interaction token and its
        expiry) are written in one transaction before the acknowledgement: a crash at any moment
        leaves either nothing acknowledged, or a stored request whose reply a restart finds again
        (a reply Discord never saw acknowledged gets its result in the channel instead).
        """
        reply = Reply.of(interaction, jobs)
        key = reply.key
        if interaction.response.is_done():
            reply.acked.set()
        self._register(reply)  # updates before the acknowledgement only fill `latest`
        location = {
            "key": key,
            "channel_id": reply.channel_id,
            "guild_id": interaction.guild_id,
            "application_id": interaction.application_id,
            "message_id": None,
            "owner_id": reply.owner_id,
            "expires_at": reply.expires_at,
            "size_limit": reply.size_limit,
        }
        self.engine.enqueue(
            jobs, reply=location, token=interaction.token, token_expires=reply.expires_at
        )
        for job in jobs:
            current = self.engine.get_job(job.id) or job
            reply.latest[job.id] = JobUpdate(
                current, "position", position=self.engine.position(job.id)
            )
        shown = False
        message_id: int | None = None
        if turn is not None:
            turn.release_within(NETWORK_HOLD)
        try:
            if not interaction.response.is_done():
                view = discord.ui.View(timeout=None)
                view.add_item(CancelButton(key))
                response = await interaction.response.send_message(
                    content=self._progress_text(reply), view=view
                )
                reply.sent += 1
                reply.shown_at = time.monotonic()
                shown = True
                message_id = response.message_id if response is not None else None
            if message_id is None:
                reply.sent += 1
                message_id = (await interaction.original_response()).id
        except discord.HTTPException as exc:
            if not shown and not interaction.response.is_done():
                log.warning(
                    "could not acknowledge request %s (%s); its result goes to the channel",
                    key,
                    exc.status,
                )
                self.reply_io.drop_token(reply)
            else:
                log.info("could not look up the reply of %s", interaction.id)
        finally:
            reply.acked.set()
        if shown and reply.coalescer is not None:
            reply.coalescer.mark_sent()
        if message_id is not None:
            reply.message_id = message_id
            for job_id in reply.job_ids:
                stored = self.engine.get_job(job_id)
                if stored is not None and stored.meta.get("reply"):
                    self.engine.update_meta(
                        job_id, reply={**stored.meta["reply"], "message_id": message_id}
                    )
        if not self.engine.holds_jobs:
            # another process holds the jobs: it runs them and follows their reply from here on
            self._unregister(reply)
            self.engine.hand_over(reply.job_ids)
            return
        moved = False  # what happened while the acknowledgement was on its way
        for job in jobs:
            current = self.engine.get_job(job.id) or job
            if current.state is JobState.QUEUED:
                continue
            latest = reply.latest.get(job.id)
            if current.state.active and (latest is None or latest.kind == "position"):
                reply.latest[job.id] = JobUpdate(current, "submitted")
            if current.state is JobState.SUBMITTED:
                moved = moved or self._submit_due(reply, job.id)
            else:
                moved = True
                if reply.run_started is None:
                    reply.run_started = time.monotonic()
        if all(self._state(reply, j).finished for j in reply.job_ids):
            self._schedule_final(reply)
        elif (not shown or moved) and reply.coalescer is not None:
            reply.coalescer.push(None)

    def _register(self, reply: Reply) -> None:
        """Follow a reply: the engine's updates of its jobs now edit it."""
        reply.coalescer = Coalescer(
            lambda _: self._render_progress(reply), self.bot.settings.discord.progress_interval
        )
        self.replies[reply.key] = reply
        for job_id in reply.job_ids:
            self._by_job[job_id] = reply.key

    def _unregister(self, reply: Reply) -> None:
        """Stop following a reply (another process follows it)."""
        if reply.coalescer is not None:
            spawn(reply.coalescer.close(), name=f"unfollow-{reply.key}")
        if self.replies.get(reply.key) is reply:
            del self.replies[reply.key]
        for job_id in reply.job_ids:
            if self._by_job.get(job_id) == reply.key:
                del self._by_job[job_id]

    def _on_holder(self, holding: bool) -> None:
        """This process took the jobs (follow every stored reply) or let go of them (another
        process follows them now)."""
        if holding:
            spawn(self._resume(), name="resume-replies")
            return
        for reply in list(self.replies.values()):
            if not reply.finalizing:
                self._unregister(reply)

    def _show(self, reply: Reply) -> None:
        """Render the reply's current state now, or deliver it if every job has finished."""
        if not reply.acked.is_set():
            return  # the acknowledgement (under way) shows the state, or the next update does
        if all(self._state(reply, j).finished for j in reply.job_ids):
            self._schedule_final(reply)
        elif reply.coalescer is not None and reply.token_usable():
            reply.coalescer.push(None)

    # updates from the engine ----------------------------------------------------------------
    def _on_update(self, update: JobUpdate) -> None:
        key = self._by_job.get(update.job.id)
        reply = self.replies.get(key) if key else None
        if reply is None:
            if update.job.meta.get("reply") and self.bot.is_ready() and self.engine.holds_jobs:
                self._follow_stored(update.job)
            return
        reply.latest[update.job.id] = update
        if update.kind == "position":
            if not self._position_due(reply, update):
                return  # a move within its band (or soon after the last edit): not worth an edit
        elif update.kind == "submitted":
            if not self._submit_due(reply, update.job.id):
                return  # still waiting, now on ComfyUI: what the reply shows is close enough
        elif update.kind != "queued" and reply.run_started is None:
            reply.run_started = time.monotonic()
        if update.kind == "preview" and update.preview:
            reply.preview = (update.preview, update.preview_mime or "image/jpeg")
        self._show(reply)

    def _allowance(self, reply: Reply) -> int | None:
        """The reply's slack: edits besides the acknowledgement, start and result it can
        afford, from how long its workflow's recent runs took at least."""
        first = reply.latest.get(reply.job_ids[0])
        job = first.job if first is not None else self.engine.get_job(reply.job_ids[0])
        run = self.engine.short_run(job.workflow) if job is not None else None
        interval = self.bot.settings.discord.progress_interval
        return waiting_allowance(len(reply.job_ids), run, interval)

    def _edit_due(self, reply: Reply, job_id: str, position: int) -> bool:
        interval = self.bot.settings.discord.progress_interval
        return position_edit_due(
            reply.shown.get(job_id),
            position,
            time.monotonic() - reply.shown_at,
            edits=reply.waiting_edits,
            allowance=self._allowance(reply),
            refresh=POSITION_REFRESH * interval,
        )

    def _position_due(self, reply: Reply, update: JobUpdate) -> bool:
        if update.position is None or update.job.state is not JobState.QUEUED:
            return False
        return self._edit_due(reply, update.job.id, update.position)

    def _submit_due(self, reply: Reply, job_id: str) -> bool:
        """A job went to ComfyUI's own queue: it is next. Worth an edit only when the reply
        shows it two bands or more further back (#3 or beyond)."""
        shown = reply.shown.get(job_id)
        return shown is not None and band_of(shown) >= 2 and self._edit_due(reply, job_id, 1)

    def _state(self, reply: Reply, job_id: str) -> JobState:
        update = reply.latest.get(job_id)
        if update is not None:
            return update.job.state
        job = self.engine.get_job(job_id)
        return job.state if job else JobState.QUEUED

    def _schedule_final(self, reply: Reply) -> None:
        if reply.finalizing:
            return
        reply.finalizing = True
        task = spawn(self._finalize(reply), name=f"deliver-{reply.key}")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    # progress ---------------------------------------------------------------------------------
    def _progress_text(self, reply: Reply) -> str:
        lines = []
        multi = len(reply.job_ids) > 1
        for index, job_id in enumerate(reply.job_ids, start=1):
            update = reply.latest.get(job_id)
            job = update.job if update else self.engine.get_job(job_id)
            if job is None:
                continue
            prefix = f"`{index}` " if multi else ""
            position = self.engine.position(job_id)
            wait = None
            if job.state is JobState.QUEUED and position:
                reply.shown[job_id] = position
                wait = self.engine.expected_wait(job_id)
            elif job.state is JobState.SUBMITTED:
                reply.shown[job_id] = 1  # next: only what runs on ComfyUI is ahead
            lines.append(prefix + status_line(job, update, position, wait))
        first = self.engine.get_job(reply.job_ids[0])
        head = ""
        if first is not None:
            head = f"**{first.workflow}** · job `{reply.key}`\n"
        return clip(head + "\n".join(lines), 2000)

    async def _render_progress(self, reply: Reply) -> None:
        if not reply.token_usable() or reply.finalizing:
            return
        now = time.monotonic()
        if reply.run_started is not None:
            # running: the start edit if the waiting left room for it, then at most one edit per
            # interval in all, the result always kept in reserve
            interval = self.bot.settings.discord.progress_interval
            budget = edit_budget(len(reply.job_ids), now - reply.run_started, interval)
            start = reply.running_edits == 0 and not reply.start_skipped
            if start and not start_edit_due(reply.waiting_edits, self._allowance(reply)):
                reply.start_skipped, start = True, False
            if not start and reply.sent + 2 > budget:
                return
            reply.running_edits += 1
        else:
            reply.waiting_edits += 1
        reply.sent += 1
        reply.shown_at = now
        view = discord.ui.View(timeout=None)
        view.add_item(CancelButton(reply.key))
        attachments: list[discord.File] = []
        embed = None
        if reply.preview is not None:
            data, mime = reply.preview
            ext = "png" if "png" in mime else "jpg"
            attachments.append(discord.File(io.BytesIO(data), filename=f"preview.{ext}"))
            embed = discord.Embed().set_image(url=f"attachment://preview.{ext}")
        await self.reply_io.edit(
            reply,
            content=self._progress_text(reply),
            embed=embed,
            attachments=attachments,
            view=view,
        )

    # results ----------------------------------------------------------------------------------
    async def _finalize(self, reply: Reply) -> None:
        # the result's files are written once it went out (they are not needed to send it)
        release = self.engine.hold_saving(reply.job_ids)
        try:
            message_id = await self.deliverer.deliver(reply, release)
        finally:
            release()
        if message_id is None:
            return
        # right after Discord answered (and the records, written beside the delivery, are
        # stored): the delivered mark and where the result is (for /history)
        await self.engine.saved(reply.job_ids)
        result = {"channel_id": reply.channel_id, "message_id": message_id}
        self.engine.mark_all_delivered(reply.job_ids, result=result)
        self.replies.pop(reply.key, None)
        for job_id in reply.job_ids:
            self._by_job.pop(job_id, None)

    def _follow_stored(self, job: Job) -> None:
        """Follow (or deliver) the reply of a job the store knows and this process does not."""
        reply = self.reply_io.restore(job)
        if reply is None or reply.key in self.replies:
            return
        jobs = [self.engine.get_job(j) for j in reply.job_ids]
        if all(j is not None and j.delivered for j in jobs):
            return
        self._register(reply)
        self._show(reply)

    async def _resume(self) -> None:
        """After a restart: follow every stored reply again, deliver every undelivered result."""
        await self.bot.wait_until_ready()
        if not self.engine.holds_jobs:
            return  # the process that holds the jobs follows their replies
        self.engine.forget_expired_tokens()
        for job in self.engine.store.unfinished() + self.engine.undelivered():
            if job.meta.get("reply"):
                self._follow_stored(job)
            elif job.state.finished:
                self.engine.mark_delivered(job.id)  # not a Discord request (the CLI's)
        log.info("following %d stored replies", len(self.replies))

    async def _sweep(self) -> None:
        while True:
            await asyncio.sleep(SWEEP_INTERVAL)
            await self.sweep_once()

    async def sweep_once(self) -> None:
        """Forget expired tokens; give a reply about to lose its token a last, true word (its
        result will be posted in the channel). Runs every `SWEEP_INTERVAL` seconds."""
        self.engine.forget_expired_tokens()
        for reply in list(self.replies.values()):
            if reply.finalizing or not reply.token_usable() or not reply.token_ending():
                continue
            view = discord.ui.View(timeout=None)
            view.add_item(CancelButton(reply.key))
            text = (
                self._progress_text(reply)
                + "\n⌛ This message stops updating here; the result will be posted in this "
                "channel."
            )
            with contextlib.suppress(discord.HTTPException):
                await self.reply_io.edit(reply, content=clip(text, 2000), view=view)
            self.reply_io.drop_token(reply)

    async def _on_shutdown(self) -> None:
        """Finish the deliveries under way and tell waiting members about the restart."""
        if self._sweeper is not None:
            self._sweeper.cancel()
        await asyncio.gather(
            self.announce_restart(), *list(self._deliveries), return_exceptions=True
        )

    async def announce_restart(self) -> None:
        """Tell members whose jobs wait or run that the bot restarts (their jobs stay queued)."""
        notes = []
        for reply in list(self.replies.values()):
            if reply.finalizing or not reply.token_usable():
                continue
            text = (
                self._progress_text(reply)
                + "\n🔄 The bot is restarting: your job keeps its place and continues when it "
                "is back."
            )
            notes.append(self.reply_io.edit(reply, content=clip(text, 2000), view=None))
        results = await asyncio.gather(*notes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.info("could not tell %d member(s) about the restart", len(failed))
