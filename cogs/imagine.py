"""/imagine, one command per workflow that asks for it, live progress, results and their buttons.

The flow of one request: validate (policy, caps, banned words, values) -> submit to the engine ->
defer publicly -> the engine's updates edit the reply (coalesced) -> the final edit attaches the
images. When the interaction token can no longer be used (15 minutes, or a bot restart) the
result goes to the channel as a reply that mentions the member.
"""

from __future__ import annotations

import inspect
import io
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.admission import ImageOffer
from bot.app import ComfyBot, send_error
from bot.delivery import (
    POSITION_REFRESH,
    Coalescer,
    edit_budget,
    fit_image,
    format_wait,
    position_edit_due,
    progress_bar,
    waiting_allowance,
)
from bot.engine import ImageInput
from bot.errors import NotAllowed, NotFound, UserError
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.tasks import spawn
from bot.workflows import Param, Workflow
from cogs._common import bot_of, clip, ids, is_moderator, is_nsfw_channel, requester_of

log = logging.getLogger(__name__)

TOKEN_LIFETIME = 15 * 60
TOKEN_MARGIN = 30  # stop using an interaction token this long before it expires
MAX_ATTACHMENT_INPUT = 25 * 1024 * 1024
MAX_FILES = 10
# `count` offered by Discord goes up to the largest limit a server may set (limits.max_count is
# at most 10); the limit in force in the server is checked on each request.
MAX_COUNT = 10
JOB_RE = r"[0-9a-f]{8}"


# building the commands -------------------------------------------------------------------------
@dataclass
class Option:
    name: str
    annotation: Any
    description: str
    required: bool = False
    min_value: float | None = None
    max_value: float | None = None
    choices: list[str] = field(default_factory=list)
    autocomplete: bool = False


def _param_option(param: Param, *, required: bool | None = None) -> Option:
    description = clip(param.description or f"{param.type} parameter", 100)
    option = Option(param.name, str, description, param.required if required is None else required)
    if param.type == "text":
        option.max_value = param.max_length or 6000
    elif param.type in ("int", "seed"):
        option.annotation = int
        option.min_value = (
            param.min if param.min is not None else (0 if param.type == "seed" else None)
        )
        option.max_value = (
            param.max if param.max is not None else (2**32 - 1 if param.type == "seed" else None)
        )
    elif param.type == "float":
        option.annotation = float
        option.min_value, option.max_value = param.min, param.max
    elif param.type == "bool":
        option.annotation = bool
    elif param.type == "image":
        option.annotation = discord.Attachment
    elif param.type in ("choice", "enum"):
        labels = [str(c) for c in (param.choices or ())]
        if labels and len(labels) <= 25 and param.type == "choice":
            option.choices = labels
        else:
            option.autocomplete = True
    return option


def _signature(options: list[Option]) -> inspect.Signature:
    params = [
        inspect.Parameter(
            "interaction", inspect.Parameter.POSITIONAL_OR_KEYWORD, annotation=discord.Interaction
        )
    ]
    for opt in options:
        params.append(
            inspect.Parameter(
                opt.name,
                inspect.Parameter.KEYWORD_ONLY,
                annotation=opt.annotation,
                default=inspect.Parameter.empty if opt.required else None,
            )
        )
    return inspect.Signature(params)


def build_command(
    name: str,
    description: str,
    options: list[Option],
    handler: Any,
    autocompleter: Any,
) -> app_commands.Command[Any, ..., None]:
    """A slash command whose options are only known at run time (from the workflows)."""

    async def callback(interaction: discord.Interaction, **values: Any) -> None:
        await handler(interaction, values)

    callback.__signature__ = _signature(options)  # type: ignore[attr-defined]
    callback.__discord_app_commands_param_description__ = {  # type: ignore[attr-defined]
        o.name: o.description for o in options
    }
    command: app_commands.Command[Any, ..., None] = app_commands.Command(
        name=name, description=clip(description, 100), callback=callback
    )
    for opt in options:
        param = command._params[opt.name]
        if opt.min_value is not None:
            param.min_value = opt.min_value
        if opt.max_value is not None:
            param.max_value = opt.max_value
        if opt.choices:
            param.choices = [app_commands.Choice(name=c[:100], value=c) for c in opt.choices]
        if opt.autocomplete:
            command.autocomplete(opt.name)(_completer(autocompleter, opt.name))
    return command


def _completer(autocompleter: Any, name: str) -> Any:
    async def complete(
        interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        choices: list[app_commands.Choice[str]] = await autocompleter(interaction, name, current)
        return choices

    return complete


def imagine_options(workflows: dict[str, Workflow], default: str, max_count: int) -> list[Option]:
    """`prompt`, `workflow`, `count`, then every other parameter of every workflow (first wins)."""
    options = [
        Option("prompt", str, "What to generate", required=True, max_value=6000),
        Option("workflow", str, "Which workflow (default: the channel's)", autocomplete=True),
        Option("count", int, "How many images (one seed each)", min_value=1, max_value=max_count),
    ]
    seen = {o.name for o in options}
    ordered = sorted(workflows.values(), key=lambda w: (w.name != default, w.name))
    for workflow in ordered:
        prompt = workflow.prompt_param
        for param in workflow.params:
            if param.name in seen or (prompt is not None and param.name == prompt.name):
                continue
            if len(options) >= 25:
                log.warning("/imagine has 25 options; `%s` is left out", param.name)
                continue
            option = _param_option(param, required=False)
            # other workflows may take other ranges and choices: validate per workflow instead
            shared = [w.param(param.name) for w in workflows.values() if w.param(param.name)]
            if any(_bounds(p) != _bounds(param) for p in shared if p is not None):
                option.min_value = option.max_value = None
                if option.choices:
                    option.choices, option.autocomplete = [], True
            seen.add(param.name)
            options.append(option)
    return options


def _bounds(param: Param) -> tuple[Any, ...]:
    return (param.type, param.min, param.max, tuple(param.choices or ()))


# the reply of one request ------------------------------------------------------------------------
@dataclass
class Reply:
    """The message that shows one request (a job or a group) from queue to result."""

    key: str
    job_ids: list[str]
    channel_id: int
    owner_id: int
    interaction: discord.Interaction | None = None
    message_id: int | None = None
    token_at: float = 0.0
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

    def token_usable(self) -> bool:
        return (
            self.interaction is not None
            and time.time() - self.token_at < TOKEN_LIFETIME - TOKEN_MARGIN
        )


class CancelButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:cancel:(?P<key>{JOB_RE})"
):
    def __init__(self, key: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Cancel", style=discord.ButtonStyle.danger, custom_id=f"cc:cancel:{key}"
            )
        )
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> CancelButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).cancel_from_button(interaction, self.key)


class RerollButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:reroll:(?P<job>{JOB_RE})"
):
    def __init__(self, job_id: str) -> None:
        super().__init__(
            discord.ui.Button(
                label="Reroll",
                emoji="🎲",
                style=discord.ButtonStyle.primary,
                custom_id=f"cc:reroll:{job_id}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> RerollButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).remix(interaction, self.job_id, variations=False)


class VariationsButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:var:(?P<job>{JOB_RE}):(?P<n>\d+)"
):
    def __init__(self, job_id: str, number: int) -> None:
        super().__init__(
            discord.ui.Button(
                label=f"Variations {number}" if number else "Variations",
                style=discord.ButtonStyle.secondary,
                custom_id=f"cc:var:{job_id}:{number}",
            )
        )
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> VariationsButton:
        return cls(match["job"], int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).remix(interaction, self.job_id, variations=True)


def _cog(interaction: discord.Interaction) -> Imagine:
    cog = bot_of(interaction).get_cog("Imagine")
    assert isinstance(cog, Imagine)
    return cog


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

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(CancelButton, RerollButton, VariationsButton)
        self._unlisten = self.engine.listen(self._on_update)
        self._register_commands()
        spawn(self._deliver_pending(), name="redeliver")

    async def cog_unload(self) -> None:
        if self._unlisten:
            self._unlisten()
        for name in self._commands:
            self.bot.tree.remove_command(name)
        self.bot.remove_dynamic_items(CancelButton, RerollButton, VariationsButton)

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
            options = [_param_option(p) for p in workflow.params][:24]
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
            jobs = await self.bot.admission.submit(admitted, images)
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
        """Acknowledge with the first state (one request), remember where the reply is."""
        first = jobs[0]
        key = first.group_id or first.id
        reply = Reply(
            key=key,
            job_ids=[j.id for j in jobs],
            channel_id=interaction.channel_id or 0,
            owner_id=interaction.user.id,
            interaction=interaction,
            token_at=time.time(),
            size_limit=interaction.filesize_limit,
        )
        for job in jobs:
            current = self.engine.get_job(job.id) or job
            reply.latest[job.id] = JobUpdate(
                current, "position", position=self.engine.position(job.id)
            )
        shown = False
        message_id: int | None = None
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
            try:
                reply.sent += 1
                message_id = (await interaction.original_response()).id
            except discord.HTTPException:
                log.info("could not look up the reply of %s", interaction.id)
        reply.message_id = message_id
        reply.coalescer = Coalescer(
            lambda _: self._render_progress(reply), self.bot.settings.discord.progress_interval
        )
        if shown:
            reply.coalescer.mark_sent()
        self.replies[key] = reply
        for job in jobs:
            self._by_job[job.id] = key
            self.engine.update_meta(
                job.id,
                reply={
                    "key": key,
                    "channel_id": reply.channel_id,
                    "message_id": message_id,
                    "owner_id": reply.owner_id,
                    "token_at": reply.token_at,
                    "size_limit": reply.size_limit,
                },
            )
        moved = False  # what happened while the acknowledgement was on its way
        for job in jobs:
            current = self.engine.get_job(job.id) or job
            if current.state is not JobState.QUEUED:
                moved = True
                reply.latest[job.id] = JobUpdate(current, "submitted")
                if reply.run_started is None:
                    reply.run_started = time.monotonic()
        if not shown or moved:
            reply.coalescer.push(None)
        if all((self.engine.get_job(j) or first).state.finished for j in reply.job_ids):
            self._schedule_final(reply)

    # updates from the engine ----------------------------------------------------------------
    def _on_update(self, update: JobUpdate) -> None:
        key = self._by_job.get(update.job.id)
        reply = self.replies.get(key) if key else None
        if reply is None:
            if update.kind == "finished" and update.job.meta.get("reply"):
                self._deliver_orphan(update.job)
            return
        reply.latest[update.job.id] = update
        if update.kind == "position" and not self._position_due(reply, update):
            return  # a move within its band (or soon after the last edit): not worth an edit
        if update.kind not in ("queued", "position") and reply.run_started is None:
            reply.run_started = time.monotonic()
        if update.kind == "preview" and update.preview:
            reply.preview = (update.preview, update.preview_mime or "image/jpeg")
        if update.kind == "finished" and all(self._state(reply, j).finished for j in reply.job_ids):
            self._schedule_final(reply)
            return
        if reply.coalescer is not None and reply.token_usable():
            reply.coalescer.push(None)

    def _position_due(self, reply: Reply, update: JobUpdate) -> bool:
        if update.position is None or update.job.state is not JobState.QUEUED:
            return False
        interval = self.bot.settings.discord.progress_interval
        allowance = waiting_allowance(len(reply.job_ids), self.engine.typical_duration(), interval)
        return position_edit_due(
            reply.shown.get(update.job.id),
            update.position,
            time.monotonic() - reply.shown_at,
            edits=reply.waiting_edits,
            allowance=allowance,
            refresh=POSITION_REFRESH * interval,
        )

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
        spawn(self._finalize(reply), name=f"deliver-{reply.key}")

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
            lines.append(prefix + _status_line(job, update, position, wait))
        first = self.engine.get_job(reply.job_ids[0])
        head = ""
        if first is not None:
            head = f"**{first.workflow}** · job `{reply.key}`\n"
        return clip(head + "\n".join(lines), 2000)

    async def _render_progress(self, reply: Reply) -> None:
        if not reply.token_usable() or reply.finalizing or reply.interaction is None:
            return
        now = time.monotonic()
        if reply.run_started is not None:
            # running: at most one edit per interval in all, the result always kept in reserve
            interval = self.bot.settings.discord.progress_interval
            budget = edit_budget(len(reply.job_ids), now - reply.run_started, interval)
            if reply.running_edits and reply.sent + 2 > budget:
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
        try:
            await reply.interaction.edit_original_response(
                content=self._progress_text(reply),
                embed=embed,
                attachments=attachments,
                view=view,
            )
        except discord.HTTPException as exc:
            if exc.status == 401 or getattr(exc, "code", 0) == 50027:
                reply.interaction = None
            raise

    # results ----------------------------------------------------------------------------------
    async def _finalize(self, reply: Reply) -> None:
        if reply.coalescer is not None:
            await reply.coalescer.close()  # the result replaces the progress
        jobs = [j for j in (self.engine.get_job(i) for i in reply.job_ids) if j is not None]
        try:
            message_id = await self._deliver(reply, jobs)
        except Exception:
            log.exception("delivering %s failed; it will be tried again on restart", reply.key)
            return
        for job in jobs:
            # where the result is, for /history's links
            result = {"channel_id": reply.channel_id, "message_id": message_id}
            self.engine.update_meta(job.id, result=result)
            self.engine.mark_delivered(job.id)
        self.replies.pop(reply.key, None)
        for job_id in reply.job_ids:
            self._by_job.pop(job_id, None)

    async def _deliver(self, reply: Reply, jobs: list[Job]) -> int:
        """Post the result (the reply itself, or a message in the channel); its message id."""
        files, notes = self._result_files(jobs, reply.size_limit)
        content, embed, view = self._result_message(jobs, notes)
        first_batch, rest = files[:MAX_FILES], files[MAX_FILES:]
        if reply.token_usable() and reply.interaction is not None:
            try:
                message = await reply.interaction.edit_original_response(
                    content=content, embed=embed, attachments=first_batch, view=view
                )
                for start in range(0, len(rest), MAX_FILES):
                    await reply.interaction.followup.send(files=rest[start : start + MAX_FILES])
                return message.id
            except discord.HTTPException as exc:
                if exc.status not in (401, 404):
                    raise
                log.info(
                    "interaction token of %s no longer works; posting to the channel", reply.key
                )
                files, notes = self._result_files(jobs, reply.size_limit)
                first_batch, rest = files[:MAX_FILES], files[MAX_FILES:]
        return await self._send_to_channel(reply, content, embed, view, first_batch, rest)

    async def _send_to_channel(
        self,
        reply: Reply,
        content: str,
        embed: discord.Embed,
        view: discord.ui.View,
        first_batch: list[discord.File],
        rest: list[discord.File],
    ) -> int:
        channel = self.bot.get_partial_messageable(reply.channel_id)
        text = clip(f"<@{reply.owner_id}> {content}", 2000)
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
            )
        else:
            message = await channel.send(
                content=text, embed=embed, files=first_batch, view=view, allowed_mentions=mentions
            )
        for start in range(0, len(rest), MAX_FILES):
            await channel.send(files=rest[start : start + MAX_FILES])
        return message.id

    def _result_files(self, jobs: list[Job], limit: int) -> tuple[list[discord.File], list[str]]:
        files, notes = [], []
        for job in jobs:
            for output in job.outputs:
                path = Path(output.path)
                if not path.is_file():
                    notes.append(f"image {output.filename} of job {job.id} is missing on disk")
                    continue
                name = f"{job.id}-{output.filename}"
                fitted = fit_image(path.read_bytes(), name, limit)
                if fitted.note:
                    notes.append(f"{name} was {fitted.note} to fit Discord's upload limit")
                files.append(discord.File(io.BytesIO(fitted.data), filename=fitted.filename))
        return files, notes

    def _result_message(
        self, jobs: list[Job], notes: list[str]
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
        content = f"✅ <@{first.owner_id}>, your images are ready."
        if failed:
            content += f"\n{len(failed)} of {len(jobs)} did not finish: {failed[0].error}"
        notes = [n for j in done for n in j.meta.get("notes", [])][:3] + notes
        if notes:
            content += "\n" + "\n".join(f"ℹ️ {n}" for n in dict.fromkeys(notes))
        return clip(content, 2000), embed, self._result_view(first, done)

    def _result_view(self, first: Job, done: list[Job]) -> discord.ui.View:
        """Reroll, Edit, Info, Delete, then per image Variations and the follow-ups."""
        from cogs.results import Results, result_view

        results = self.bot.get_cog("Results")
        offered = results.offered(first) if isinstance(results, Results) else []
        return result_view(first.group_id or first.id, first, done, offered)

    # after a restart ----------------------------------------------------------------------------
    def _reply_from_meta(self, job: Job) -> Reply | None:
        meta = job.meta.get("reply")
        if not meta:
            return None
        key = meta["key"]
        group = self.engine.store.group(job.group_id) if job.group_id else [job]
        return Reply(
            key=key,
            job_ids=[j.id for j in group],
            channel_id=int(meta["channel_id"]),
            owner_id=int(meta["owner_id"]),
            message_id=meta.get("message_id"),
            size_limit=int(meta.get("size_limit") or 10 * 1024 * 1024),
        )

    def _deliver_orphan(self, job: Job) -> None:
        reply = self._reply_from_meta(job)
        if reply is None or reply.key in self.replies:
            return
        jobs = [self.engine.get_job(j) for j in reply.job_ids]
        if all(j is not None and j.state.finished for j in jobs):
            self.replies[reply.key] = reply
            self._schedule_final(reply)

    async def _deliver_pending(self) -> None:
        await self.bot.wait_until_ready()
        for job in self.engine.undelivered():
            if job.meta.get("reply"):
                self._deliver_orphan(job)
            else:
                self.engine.mark_delivered(job.id)

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
            original = self.engine.get_job(job_id)
            if original is None:
                raise NotFound(f"There is no job `{job_id}` any more.")
            admission = self.bot.admission
            admitted = admission.remix(requester_of(interaction), original, variations=variations)
            jobs = await admission.submit(admitted)
            await self._start_reply(interaction, jobs)
        except UserError as exc:
            await send_error(interaction, exc.message)
        except Exception:
            log.exception("remix of %s failed", job_id)
            await send_error(interaction, f"Something went wrong (job {job_id}).")


def _status_line(
    job: Job, update: JobUpdate | None, position: int | None, wait: float | None = None
) -> str:
    if job.state is JobState.QUEUED:
        where = f"#{position}" if position else "…"
        eta = f" · starts in {format_wait(wait)}" if wait is not None else ""
        return f"⏳ Queued · position {where}{eta}"
    if job.state is JobState.DONE:
        return "✅ Done"
    if job.state is JobState.FAILED:
        return f"❌ Failed: {job.error}"
    if job.state is JobState.CANCELLED:
        return f"🚫 {job.error or 'Cancelled'}"
    if update is not None and update.kind == "retrying":
        return "⚠️ ComfyUI is not reachable right now; retrying…"
    if update is None or update.kind in ("submitted", "position", "queued"):
        return "📨 Sent to ComfyUI, waiting to start…"
    parts = ["⚙️ Running"]
    if update.node_title:
        parts.append(f"`{update.node_title}`")
    if update.node_count:
        parts.append(f"node {update.node_index}/{update.node_count}")
    line = " · ".join(parts)
    if update.steps:
        line += f" · step {update.step}/{update.steps}\n{progress_bar(update.step, update.steps)}"
    return line


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Imagine(bot))
