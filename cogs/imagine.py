"""/imagine, one command per workflow that asks for it, live progress and results.

The flow of one request: validate (policy, caps, banned words, values) -> store its jobs with
where the reply lives (one transaction) -> defer publicly -> the engine's updates edit the reply
(coalesced) -> the final edit attaches the images -> the jobs are marked delivered.

The interaction token is stored with the jobs until it expires (15 minutes), so after a restart
the reply is followed again, progress and result included. Once the token can no longer be used,
the result goes to the channel as a reply that mentions the member, with a nonce derived from the
request (a repeated post after a crash returns the message already posted), and the old reply is
edited, when Discord allows it, to point to the result instead of showing a stale queue position.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import discord
from discord import app_commands
from discord.ext import commands

from bot import remix
from bot.admission import ImageOffer
from bot.app import ComfyBot, send_error
from bot.delivery import (
    POSITION_REFRESH,
    Coalescer,
    edit_budget,
    position_edit_due,
    ready_words,
    start_edit_due,
    waiting_allowance,
)
from bot.engine import ImageInput
from bot.errors import NotAllowed, NotFound, UserError
from bot.followups import offered
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.jobs.scheduler import band_of
from bot.tasks import spawn
from bot.workflows import Param, Workflow
from cogs._commands import Option, build_command, imagine_options, param_option
from cogs._common import clip, ids, is_moderator, is_nsfw_channel, requester_of
from cogs._components import REPLY_ITEMS, CancelButton, result_view
from cogs._rendering import Prepared, result_files, status_line, with_texts

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 30  # stop using an interaction token this long before it expires
SWEEP_INTERVAL = 20.0  # how often expired tokens are forgotten (must stay under TOKEN_MARGIN)
DELIVERY_ATTEMPTS = 4  # Discord unreachable or failing: tries before waiting for a restart
# An interaction webhook's "@original" message: the reply, when its message id is not known.
_ORIGINAL: Any = "@original"
MAX_FILES = 10
# `count` offered by Discord goes up to the largest limit a server may set (limits.max_count is
# at most 10); the limit in force in the server is checked on each request.
MAX_COUNT = 10


# the reply of one request ------------------------------------------------------------------------
@dataclass
class Reply:
    """The message that shows one request (a job or a group) from queue to result."""

    key: str
    job_ids: list[str]
    channel_id: int
    owner_id: int
    interaction: discord.Interaction | None = None
    webhook: discord.Webhook | None = None  # the token's webhook, for a reply restored from store
    message_id: int | None = None
    expires_at: float = 0.0
    size_limit: int = 10 * 1024 * 1024
    latest: dict[str, JobUpdate] = field(default_factory=dict)
    preview: tuple[bytes, str] | None = None
    coalescer: Coalescer[None] | None = None
    finalizing: bool = False
    # what it costs and shows: requests made, positions shown, when the jobs started to run
    sent: int = 0
    shown: dict[str, int] = field(default_factory=dict)
    shown_at: float = 0.0
    run_started: float | None = None
    running_edits: int = 0
    waiting_edits: int = 0
    start_skipped: bool = False
    acked: asyncio.Event = field(default_factory=asyncio.Event)

    def token_usable(self) -> bool:
        has_token = self.interaction is not None or self.webhook is not None
        return has_token and time.time() < self.expires_at - TOKEN_MARGIN

    def nonce(self, part: int = 0) -> str:
        """The nonce of this reply's `part`-th channel post: the same after any restart."""
        return f"cc:{self.key}:{part}"


# the cog ------------------------------------------------------------------------------------------
class Imagine(commands.Cog):
    """/imagine and the per-workflow commands; renders progress and delivers results."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.engine = bot.engine
        self.policy = bot.policy
        self.replies: dict[str, Reply] = {}
        self._by_job: dict[str, str] = {}
        self._commands: list[str] = []
        self._unlisten: Any = None
        self._sweeper: asyncio.Task[None] | None = None
        self._deliveries: set[asyncio.Task[None]] = set()

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*REPLY_ITEMS)
        self._unlisten = self.engine.listen(self._on_update)
        self._register_commands()
        spawn(self._resume_replies(), name="resume-replies")
        self._sweeper = spawn(self._sweep(), name="token-sweep")
        self.bot.shutdown_hooks.append(self._on_shutdown)

    async def cog_unload(self) -> None:
        if self._sweeper is not None:
            self._sweeper.cancel()
        if self._unlisten:
            self._unlisten()
        for name in self._commands:
            self.bot.tree.remove_command(name)
        self.bot.remove_dynamic_items(*REPLY_ITEMS)

    # commands -------------------------------------------------------------------------------
    def rebuild_commands(self) -> None:
        """Rebuild /imagine and the per-workflow commands from the workflows loaded now."""
        for name in self._commands:
            self.bot.tree.remove_command(name)
        self._commands.clear()
        self._register_commands()

    def _register_commands(self) -> None:
        workflows = self.engine.workflows
        max_count = MAX_COUNT
        default = self.bot.settings.workflows.default
        imagine = build_command(
            "imagine",
            "Generate images from a prompt",
            imagine_options(workflows, default, max_count),
            self._imagine,
            self._autocomplete,
        )
        self.bot.tree.add_command(imagine, override=True)
        self._commands.append("imagine")
        for workflow in workflows.values():
            name = workflow.spec.command
            if not name or name in self._commands:
                continue
            options = [param_option(p) for p in workflow.params][:24]
            options.append(
                Option(
                    "count",
                    int,
                    "How many images (one seed each)",
                    min_value=1,
                    max_value=max_count,
                )
            )

            async def handler(
                interaction: discord.Interaction, values: dict[str, Any], _wf: str = workflow.name
            ) -> None:
                await self._request(interaction, _wf, values)

            command = build_command(
                name,
                workflow.spec.description or workflow.spec.title,
                options,
                handler,
                self._autocomplete_for(workflow.name),
            )
            self.bot.tree.add_command(command, override=True)
            self._commands.append(name)

    async def _imagine(self, interaction: discord.Interaction, values: dict[str, Any]) -> None:
        workflow = values.pop("workflow", None)
        await self._request(interaction, workflow, values)

    def _autocomplete_for(self, workflow: str) -> Any:
        async def complete(
            interaction: discord.Interaction, name: str, current: str
        ) -> list[app_commands.Choice[str]]:
            return self._param_choices(self.engine.workflows.get(workflow), name, current)

        return complete

    async def _autocomplete(
        self, interaction: discord.Interaction, name: str, current: str
    ) -> list[app_commands.Choice[str]]:
        """Answers from memory only (never asks ComfyUI per keystroke)."""
        guild, channel = ids(interaction)
        if name == "workflow":
            allowed = self.policy.allowed(guild, channel, nsfw_channel=is_nsfw_channel(interaction))
            needle = current.lower()
            choices = []
            for wf_name in allowed:
                wf = self.engine.workflows[wf_name]
                if wf.spec.followup is not None:
                    continue  # offered on images (buttons, Apps menu) and as its own command
                label = f"{wf_name} — {wf.spec.title}"
                if needle in label.lower():
                    choices.append(app_commands.Choice(name=clip(label, 100), value=wf_name))
            return choices[:25]
        chosen = getattr(interaction.namespace, "workflow", None) or self.policy.default_workflow(
            guild, channel
        )
        return self._param_choices(self.engine.workflows.get(chosen), name, current)

    def _param_choices(
        self, workflow: Workflow | None, name: str, current: str
    ) -> list[app_commands.Choice[str]]:
        if workflow is None:
            return []
        param = workflow.param(name)
        if param is None:
            return []
        values = [str(c) for c in self._choices_of(workflow, param)]
        needle = current.lower()
        return [
            app_commands.Choice(name=clip(v, 100), value=v[:100])
            for v in values
            if needle in v.lower()
        ][:25]

    def _choices_of(self, workflow: Workflow, param: Param) -> list[Any]:
        if param.choices:
            return list(param.choices)
        info = self.engine.object_info or {}
        for node_id, input_name in param.targets:
            class_type = workflow.graph.get(node_id, {}).get("class_type")
            spec = info.get(class_type or "", {}).get("input", {})
            for section in ("required", "optional"):
                entry = spec.get(section, {}).get(input_name)
                if entry and isinstance(entry[0], list):
                    return list(entry[0])
        return []

    # requests -------------------------------------------------------------------------------
    async def _request(
        self, interaction: discord.Interaction, workflow_name: str | None, values: dict[str, Any]
    ) -> None:
        count = values.pop("count", None)
        given = {k: v for k, v in values.items() if v is not None}
        attachments = {k: v for k, v in given.items() if isinstance(v, discord.Attachment)}
        offers = {k: ImageOffer(a.filename, a.content_type, a.size) for k, a in attachments.items()}
        # refuse what may not run privately, before a public "thinking…" reply exists
        admitted = self.bot.admission.admit(
            requester_of(interaction), workflow_name, given, images=offers, count=count
        )
        images: dict[str, ImageInput] = {}
        if attachments:
            await interaction.response.defer(thinking=True)
            images = {
                key: ImageInput(attachment.filename, await attachment.read())
                for key, attachment in attachments.items()
            }
        try:
            jobs = self.bot.admission.prepare(admitted, images)
        except UserError as exc:
            if not interaction.response.is_done():
                raise
            # the public reply already exists: it says what went wrong instead of thinking forever
            await interaction.edit_original_response(content=f"❌ {clip(exc.message, 1900)}")
            return
        await self._start_reply(interaction, jobs)

    async def show(self, interaction: discord.Interaction, jobs: list[Job]) -> None:
        """Show new jobs in this interaction's reply: progress, then their result."""
        await self._start_reply(interaction, jobs)

    async def _start_reply(self, interaction: discord.Interaction, jobs: list[Job]) -> None:
        """Store the jobs with their reply, acknowledge (if not yet), show the first state.

        The jobs and where their reply lives (channel, server, the interaction token and its
        expiry) are written in one transaction before the acknowledgement: a crash at any moment
        leaves either nothing acknowledged, or a stored request whose reply a restart finds again
        (a reply Discord never saw acknowledged gets its result in the channel instead).
        """
        first = jobs[0]
        key = first.group_id or first.id
        created = interaction.created_at.timestamp()
        reply = Reply(
            key=key,
            job_ids=[j.id for j in jobs],
            channel_id=interaction.channel_id or 0,
            owner_id=interaction.user.id,
            interaction=interaction,
            expires_at=min(created, time.time()) + TOKEN_LIFETIME,
            size_limit=interaction.filesize_limit,
        )
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
                self._drop_token(reply)
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

    def _show(self, reply: Reply) -> None:
        """Render the reply's current state now, or deliver it if every job has finished."""
        if not reply.acked.is_set():
            return  # the acknowledgement (under way) shows the state, or the next update does
        if all(self._state(reply, j).finished for j in reply.job_ids):
            self._schedule_final(reply)
        elif reply.coalescer is not None and reply.token_usable():
            reply.coalescer.push(None)

    def _drop_token(self, reply: Reply) -> None:
        """The reply's token no longer works: forget it (results then go to the channel)."""
        reply.interaction = None
        reply.webhook = None
        self.engine.forget_reply_token(reply.key)

    async def _edit_reply(self, reply: Reply, **fields: Any) -> discord.Message | None:
        """Edit the reply through its interaction token (repeating an edit is harmless); None
        when there is no token any more.

        A token Discord refuses (expired, or the request was never acknowledged) is dropped.
        """
        await reply.acked.wait()
        try:
            if reply.interaction is not None:
                return await reply.interaction.edit_original_response(**fields)
            if reply.webhook is None:
                return None
            return await reply.webhook.edit_message(reply.message_id or _ORIGINAL, **fields)
        except discord.HTTPException as exc:
            if exc.status in (401, 404) or exc.code in (50027, 10015, 10008):
                self._drop_token(reply)
            raise

    async def _followup(self, reply: Reply, files: list[discord.File]) -> None:
        if reply.interaction is not None:
            await reply.interaction.followup.send(files=files)
        elif reply.webhook is not None:
            await reply.webhook.send(files=files)

    # updates from the engine ----------------------------------------------------------------
    def _on_update(self, update: JobUpdate) -> None:
        key = self._by_job.get(update.job.id)
        reply = self.replies.get(key) if key else None
        if reply is None:
            if update.job.meta.get("reply") and self.bot.is_ready():
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
        await self._edit_reply(
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
            message_id = await self._deliver_with_retries(reply, release)
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

    async def _deliver_with_retries(self, reply: Reply, sent: Callable[[], None]) -> int | None:
        """Deliver, tried again on a server or network error; the message id, None if it failed
        (it is tried again on restart). `sent()` is called once the first try is over."""
        if reply.coalescer is not None:
            await reply.coalescer.close()  # the result replaces the progress
        jobs = [j for j in (self._final_job(reply, i) for i in reply.job_ids) if j is not None]
        delay = 1.0
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                return await self._deliver(reply, jobs)
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

    async def _deliver(self, reply: Reply, jobs: list[Job]) -> int:
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
                message = await self._edit_reply(
                    reply, content=content, embed=embed, attachments=first_batch, view=view
                )
                if message is not None:
                    for start in range(0, len(rest), MAX_FILES):
                        await self._followup(reply, rest[start : start + MAX_FILES])
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
        await self._point_to_result(reply)
        message = await self._send_to_channel(reply, content, embed, view, first_batch, rest)
        return message.id

    async def _send_to_channel(
        self,
        reply: Reply,
        content: str,
        embed: discord.Embed,
        view: discord.ui.View,
        first_batch: list[discord.File],
        rest: list[discord.File],
    ) -> discord.Message:
        channel = self.bot.get_partial_messageable(reply.channel_id)
        mention = f"<@{reply.owner_id}>"
        text = clip(content if mention in content else f"{mention} {content}", 2000)
        mentions = discord.AllowedMentions(users=[discord.Object(reply.owner_id)])
        reference = None
        if reply.message_id:
            reference = discord.MessageReference(
                message_id=reply.message_id, channel_id=reply.channel_id, fail_if_not_exists=False
            )
        if reference is not None:
            message = await channel.send(
                content=text,
                embed=embed,
                files=first_batch,
                view=view,
                reference=reference,
                allowed_mentions=mentions,
                nonce=reply.nonce(0),
            )
        else:
            message = await channel.send(
                content=text,
                embed=embed,
                files=first_batch,
                view=view,
                allowed_mentions=mentions,
                nonce=reply.nonce(0),
            )
        for part, start in enumerate(range(0, len(rest), MAX_FILES), start=1):
            await channel.send(files=rest[start : start + MAX_FILES], nonce=reply.nonce(part))
        return message

    async def _point_to_result(self, reply: Reply) -> None:
        """Edit the old reply (with the bot token) so it no longer shows a queue or a Cancel
        button but points to the result, which answers it in the channel; done before that
        post, so a crash in between leaves nothing stale (both are repeated). Not every reply
        allows it, which is fine."""
        if not reply.message_id:
            return
        channel = self.bot.get_partial_messageable(reply.channel_id)
        try:
            await channel.get_partial_message(reply.message_id).edit(
                content="✅ Done: the result is posted in this channel as a reply to this message.",
                embed=None,
                attachments=[],
                view=None,
            )
        except discord.HTTPException as exc:
            log.info("could not edit the old reply of %s (%s)", reply.key, exc.status)

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

    # after a restart ----------------------------------------------------------------------------
    def _reply_from_meta(self, job: Job) -> Reply | None:
        """The reply of a stored job, with its token's webhook while the token is valid."""
        meta = job.meta.get("reply")
        if not meta:
            return None
        key = str(meta["key"])
        group = self.engine.store.group(job.group_id) if job.group_id else [job]
        message_id = meta.get("message_id")
        reply = Reply(
            key=key,
            job_ids=[j.id for j in group],
            channel_id=int(meta["channel_id"]),
            owner_id=int(meta["owner_id"]),
            message_id=int(message_id) if message_id else None,
            expires_at=float(meta.get("expires_at") or 0.0),
            size_limit=int(meta.get("size_limit") or 10 * 1024 * 1024),
        )
        token = self.engine.reply_token(key)
        application_id = meta.get("application_id")
        if token and application_id:
            reply.webhook = discord.Webhook.partial(int(application_id), token, client=self.bot)
        reply.acked.set()
        return reply

    def _follow_stored(self, job: Job) -> None:
        """Follow (or deliver) the reply of a job the store knows and this process does not."""
        reply = self._reply_from_meta(job)
        if reply is None or reply.key in self.replies:
            return
        jobs = [self.engine.get_job(j) for j in reply.job_ids]
        if all(j is not None and j.delivered for j in jobs):
            return
        self._register(reply)
        self._show(reply)

    async def _resume_replies(self) -> None:
        """After a restart: follow every stored reply again, deliver every undelivered result."""
        await self.bot.wait_until_ready()
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
            left = reply.expires_at - time.time()
            if reply.finalizing or not reply.token_usable() or left > 2 * TOKEN_MARGIN:
                continue
            view = discord.ui.View(timeout=None)
            view.add_item(CancelButton(reply.key))
            text = (
                self._progress_text(reply)
                + "\n⌛ This message stops updating here; the result will be posted in this "
                "channel."
            )
            with contextlib.suppress(discord.HTTPException):
                await self._edit_reply(reply, content=clip(text, 2000), view=view)
            self._drop_token(reply)

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
            notes.append(self._edit_reply(reply, content=clip(text, 2000), view=None))
        results = await asyncio.gather(*notes, return_exceptions=True)
        failed = [r for r in results if isinstance(r, BaseException)]
        if failed:
            log.info("could not tell %d member(s) about the restart", len(failed))

    # buttons ------------------------------------------------------------------------------------
    async def cancel_from_button(self, interaction: discord.Interaction, key: str) -> None:
        try:
            jobs = self._jobs_for_key(key)
            owner = jobs[0].owner_id
            if str(interaction.user.id) != owner and not is_moderator(interaction):
                raise NotAllowed(
                    "Only the member who asked for this job or a moderator can cancel it."
                )
            active = [j for j in jobs if not j.state.finished]
            if not active:
                raise NotAllowed("This job has already finished.")
            for job in active:
                await self.engine.cancel(job.id, by=interaction.user.display_name)
            await interaction.response.send_message(f"Cancelling job `{key}`…", ephemeral=True)
        except UserError as exc:
            await send_error(interaction, exc.message)

    def _jobs_for_key(self, key: str) -> list[Job]:
        job = self.engine.get_job(key)
        if job is not None:
            return [job]
        group = self.engine.store.group(key)
        if group:
            return [self.engine.get_job(j.id) or j for j in group]
        raise NotFound(f"There is no job `{key}`.")

    async def remix(
        self, interaction: discord.Interaction, job_id: str, *, variations: bool
    ) -> None:
        """Reroll (same values, new seeds) or Variations (seeds around this image's seed).

        Anyone allowed to use the workflow here may remix anyone's result; a remix of another
        member's job credits them ("Remix of").
        """
        try:
            original = remix.original(self.engine, job_id)
            admission = self.bot.admission
            again = remix.variations if variations else remix.reroll
            admitted = again(admission, requester_of(interaction), original)
            jobs = admission.prepare(admitted)
            await self._start_reply(interaction, jobs)
        except UserError as exc:
            await send_error(interaction, exc.message)
        except Exception:
            log.exception("remix of %s failed", job_id)
            await send_error(interaction, f"Something went wrong (job {job_id}).")


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Imagine(bot))
