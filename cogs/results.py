"""What members can do with a result: follow-ups (Upscale…), Edit, Info, Delete, and Apps menus.

A result message carries Reroll, Edit, Info and Delete, then per image its Variations and one
button per follow-up workflow, laid out within Discord's 5 rows of 5 (a select menu per action
when they do not fit). Every custom_id holds ids only; the state is in the store, so the buttons
work after a restart. The same follow-ups are message context-menu commands ("Apps → Upscale")
on any message with an image. Requests go through `bot/admission.py` like `/imagine`, and the
reply is shown and delivered by the Imagine cog.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import remix
from bot.app import ComfyBot, send_error
from bot.engine import ImageInput
from bot.errors import NotAllowed, NotFound, UserError
from bot.followups import (
    Followup,
    Source,
    admit_followup,
    followups,
    offered,
    output_image,
    submit_followup,
)
from bot.jobs.model import Job
from bot.media import Kind
from bot.media.uploads import check_declared
from bot.workflows import Workflow
from cogs._common import bot_of, clip, is_moderator, requester_of

if TYPE_CHECKING:
    from cogs.imagine import Imagine

log = logging.getLogger(__name__)

JOB_RE = r"[0-9a-f]{8}"
WF_RE = r"[^:]{1,64}"
ROWS, PER_ROW, OPTIONS = 5, 5, 25
TEXT_INPUT_MAX = 4000  # Discord's limit for a modal's text input
MAX_MENUS = 5  # message commands of an app (Discord allows a few; keep room for others)


# the items ----------------------------------------------------------------------------------------
def _button(custom_id: str, label: str, emoji: str | None, style: discord.ButtonStyle) -> Any:
    return discord.ui.Button(label=clip(label, 80), emoji=emoji, style=style, custom_id=custom_id)


class EditButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:edit:(?P<job>{JOB_RE})"
):
    """Opens a modal with the prompt (and negative) filled in; submitting runs it again."""

    def __init__(self, job_id: str) -> None:
        super().__init__(_button(f"cc:edit:{job_id}", "Edit", "✏️", discord.ButtonStyle.secondary))
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> EditButton:
        return cls(match["job"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).open_edit(interaction, self.job_id)


class InfoButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:info:(?P<key>{JOB_RE})"
):
    """Answers privately with every value the job used."""

    def __init__(self, key: str) -> None:
        super().__init__(_button(f"cc:info:{key}", "Info", "ℹ️", discord.ButtonStyle.secondary))
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> InfoButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).info(interaction, self.key)


class DeleteButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:del:(?P<key>{JOB_RE})"
):
    """Deletes the result message: its author and moderators only."""

    def __init__(self, key: str) -> None:
        super().__init__(_button(f"cc:del:{key}", "Delete", "🗑️", discord.ButtonStyle.danger))
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> DeleteButton:
        return cls(match["key"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).delete(interaction, self.key)


class FollowupButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]],
    template=rf"cc:fu:(?P<job>{JOB_RE}):(?P<i>\d+):(?P<n>\d+):(?P<wf>{WF_RE})",
):
    """One follow-up of one image: `i` is the image's index in its job, `n` its number shown."""

    def __init__(
        self, job_id: str, index: int, number: int, workflow: str, label: str = ""
    ) -> None:
        text = f"{label} {number}" if number else label
        custom_id = f"cc:fu:{job_id}:{index}:{number}:{workflow}"
        super().__init__(_button(custom_id, text or workflow, None, discord.ButtonStyle.secondary))
        self.job_id, self.index, self.workflow = job_id, index, workflow

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> FollowupButton:
        return cls(match["job"], int(match["i"]), int(match["n"]), match["wf"])

    async def callback(self, interaction: discord.Interaction) -> None:
        await _cog(interaction).followup(interaction, self.job_id, self.index, self.workflow)


class ActionSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]], template=rf"cc:pick:(?P<key>{JOB_RE}):(?P<n>\d)"
):
    """The actions of a result that did not fit as buttons. Option values:
    `var:JOB` (Variations) or `fu:JOB:INDEX:WORKFLOW` (a follow-up)."""

    def __init__(
        self,
        key: str,
        number: int,
        options: Sequence[discord.SelectOption] = (),
        placeholder: str = "More…",
    ) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"cc:pick:{key}:{number}",
                placeholder=clip(placeholder, 150),
                options=list(options) or [discord.SelectOption(label="-", value="-")],
                min_values=1,
                max_values=1,
            )
        )

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> ActionSelect:
        return cls(match["key"], int(match["n"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        choice = self.item.values[0] if self.item.values else ""
        cog = _cog(interaction)
        parts = choice.split(":")
        if parts[0] == "var" and len(parts) == 2 and re.fullmatch(JOB_RE, parts[1]):
            await cog.imagine.remix(interaction, parts[1], variations=True)
        elif parts[0] == "fu" and len(parts) == 4 and re.fullmatch(JOB_RE, parts[1]):
            await cog.followup(interaction, parts[1], int(parts[2]), parts[3])
        else:
            await send_error(interaction, "That choice is not known any more.")


class ImageSelect(
    discord.ui.DynamicItem[discord.ui.Select[Any]],
    template=r"cc:img:(?P<channel>\d+):(?P<message>\d+):(?P<wf>[^:]{1,64})",
):
    """Which image of a message the Apps-menu follow-up should take (sent privately)."""

    def __init__(
        self,
        channel_id: int,
        message_id: int,
        workflow: str,
        options: Sequence[discord.SelectOption] = (),
    ) -> None:
        super().__init__(
            discord.ui.Select(
                custom_id=f"cc:img:{channel_id}:{message_id}:{workflow}",
                placeholder="Which image?",
                options=list(options) or [discord.SelectOption(label="-", value="0")],
            )
        )
        self.channel_id, self.message_id, self.workflow = channel_id, message_id, workflow

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> ImageSelect:
        return cls(int(match["channel"]), int(match["message"]), match["wf"])

    async def callback(self, interaction: discord.Interaction) -> None:
        value = self.item.values[0] if self.item.values else "0"
        await _cog(interaction).chosen_image(
            interaction, self.channel_id, self.message_id, self.workflow, int(value)
        )


ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    ImageSelect,
    EditButton,
    InfoButton,
    DeleteButton,
    FollowupButton,
    ActionSelect,
)


class EditModal(discord.ui.Modal):
    """The prompt (and negative) of a job, to change and run again."""

    def __init__(self, job: Job, prompt: tuple[str, str], negative: tuple[str, str] | None) -> None:
        super().__init__(title="Edit and run again", custom_id=f"cc:editm:{job.id}", timeout=900)
        self.job_id = job.id
        self.fields: dict[str, discord.ui.TextInput[Any]] = {}
        name, value = prompt
        self.fields[name] = discord.ui.TextInput(
            label="Prompt",
            style=discord.TextStyle.paragraph,
            default=value[:TEXT_INPUT_MAX],
            max_length=TEXT_INPUT_MAX,
            required=True,
            custom_id=f"cc:edit:{name}",
        )
        if negative is not None:
            name, value = negative
            self.fields[name] = discord.ui.TextInput(
                label="Negative prompt",
                style=discord.TextStyle.paragraph,
                default=value[:TEXT_INPUT_MAX],
                max_length=TEXT_INPUT_MAX,
                required=False,
                custom_id=f"cc:edit:{name}",
            )
        for field in self.fields.values():
            self.add_item(field)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        values = {name: field.value for name, field in self.fields.items()}
        await _cog(interaction).edit_submit(interaction, self.job_id, values)

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        log.error("edit of %s failed", self.job_id, exc_info=error)
        await send_error(interaction, f"Something went wrong (job {self.job_id}).")


def _cog(interaction: discord.Interaction) -> Results:
    cog = bot_of(interaction).get_cog("Results")
    assert isinstance(cog, Results)
    return cog


# the layout ---------------------------------------------------------------------------------------
def result_view(
    key: str, first: Job, done: Sequence[Job], offered: Sequence[Followup]
) -> discord.ui.View:
    """The components of a result: within 5 rows of 5 buttons, whatever the count and the
    number of follow-ups (select menus take over what does not fit as buttons)."""
    from cogs.imagine import RerollButton, VariationsButton

    view = discord.ui.View(timeout=None)
    general: list[discord.ui.Item[Any]] = [
        RerollButton(first.id),
        EditButton(first.id),
        InfoButton(key),
        DeleteButton(key),
    ]
    images = [
        (job, index)
        for job in done
        for index, output in enumerate(job.outputs)
        if output.kind != Kind.TEXT
    ][:10]
    if not done:
        for item in general:
            view.add_item(item)
        return view
    single = len(images) == 1
    if len(done) == 1:
        general.append(VariationsButton(done[0].id, 0))
    # per image: its actions (Variations when there are several jobs, then each follow-up)
    rows: list[list[discord.ui.Item[Any]]] = []
    for number, (job, index) in enumerate(images, start=1):
        shown = 0 if single else number
        row: list[discord.ui.Item[Any]] = []
        if len(done) > 1 and index == 0:
            row.append(VariationsButton(job.id, number))
        for followup in offered:
            if not followup.takes(job.outputs[index].kind):
                continue
            button = FollowupButton(job.id, index, shown, followup.workflow, followup.label)
            if followup.emoji:
                button.item.emoji = followup.emoji
            row.append(button)
        rows.append(row)
    if single or all(len(row) <= 1 for row in rows):
        flat = [item for row in rows for item in row]
        rows = [flat[i : i + PER_ROW] for i in range(0, len(flat), PER_ROW)]
    rows = [row for row in rows if row]
    fits = len(rows) <= ROWS - 1 and all(len(row) <= PER_ROW for row in rows)
    for item in general:
        item.row = 0
        view.add_item(item)
    if fits:
        for number, row in enumerate(rows, start=1):
            for item in row:
                item.row = number
                view.add_item(item)
        return view
    for number, select in enumerate(_selects(key, done, images, offered), start=1):
        select.row = number
        view.add_item(select)
    return view


def _selects(
    key: str, done: Sequence[Job], images: Sequence[tuple[Job, int]], offered: Sequence[Followup]
) -> list[ActionSelect]:
    """One select per action (Variations, each follow-up) when four fit, else the actions of
    every image in as few selects as they fill (25 options each, four at most)."""
    kinds: list[tuple[str, list[discord.SelectOption]]] = []
    if len(done) > 1:
        options = [
            discord.SelectOption(label=f"Variations of image {n}", value=f"var:{job.id}")
            for n, (job, index) in enumerate(images, start=1)
            if index == 0
        ]
        kinds.append(("Variations of image…", options))
    for followup in offered:
        options = [
            discord.SelectOption(
                label=clip(f"{followup.label} image {n}", 100),
                value=f"fu:{job.id}:{index}:{followup.workflow}",
                emoji=followup.emoji,
            )
            for n, (job, index) in enumerate(images, start=1)
            if followup.takes(job.outputs[index].kind)
        ]
        if options:
            kinds.append((f"{followup.label} image…", options))
    if len(kinds) <= ROWS - 1:
        return [
            ActionSelect(key, number, options[:OPTIONS], placeholder)
            for number, (placeholder, options) in enumerate(kinds)
        ]
    flat = [option for _, options in kinds for option in options]
    chunks = [flat[i : i + OPTIONS] for i in range(0, len(flat), OPTIONS)][: ROWS - 1]
    if len(flat) > OPTIONS * (ROWS - 1):
        log.warning("result %s has %d actions; only %d are offered", key, len(flat), 100)
    return [ActionSelect(key, n, chunk, "More actions…") for n, chunk in enumerate(chunks)]


# info ---------------------------------------------------------------------------------------------
def _show(value: Any) -> str:
    return str(value).replace("\n", " ")


def info_text(jobs: Sequence[Job], workflow: Workflow | None) -> str:
    """Every value the jobs used, with seeds, backend and timings, and a line to paste back."""
    first = jobs[0]
    values = first.values
    lines = [f"**Workflow** `{first.workflow}`" + (f" — {workflow.title}" if workflow else "")]
    params = list(workflow.params) if workflow else []
    names = [p.name for p in params] + [k for k in values if k not in {p.name for p in params}]
    seed = workflow.seed_param.name if workflow and workflow.seed_param else None
    images = first.meta.get("inputs", {})
    for name in names:
        if name == seed:
            seeds = ", ".join(str(j.values.get(name)) for j in jobs)
            lines.append(f"`{name}`: {seeds}")
        elif name in images:
            lines.append(f"`{name}`: (an image: {Path(images[name]).name})")
        elif name in values:
            lines.append(f"`{name}`: {clip(_show(values[name]), 300)}")
    backends = sorted({j.backend for j in jobs if j.backend})
    lines.append(f"**Backend** {', '.join(backends) or 'ComfyUI'}")
    lines.append(
        f"**Job** `{first.id}`" + (f" (group `{first.group_id}`)" if first.group_id else "")
    )
    queued = min(j.created_at for j in jobs)
    started = [j.started_at for j in jobs if j.started_at is not None]
    finished = [j.finished_at for j in jobs if j.finished_at is not None]
    timing = f"**Timings** queued <t:{int(queued)}:T>"
    if started:
        timing += f" · waited {min(started) - queued:.1f} s"
        if finished:
            timing += f" · ran {max(finished) - min(started):.1f} s"
    lines.append(timing)
    lines.append("Paste to run it again:\n```\n" + paste_line(first, workflow) + "\n```")
    return "\n".join(lines)


def paste_line(job: Job, workflow: Workflow | None) -> str:
    """`/imagine prompt:… workflow:… seed:…` (or the workflow's own command) for this job."""
    command = workflow.spec.command if workflow and workflow.spec.command else None
    prompt = workflow.prompt_param.name if workflow and workflow.prompt_param else None
    parts = [f"/{command}" if command else "/imagine"]
    images = set(job.meta.get("inputs", {}))
    if prompt is not None and prompt in job.values:
        parts.append(f"prompt:{_show(job.values[prompt])}")
    if command is None:
        parts.append(f"workflow:{job.workflow}")
    for name, value in job.values.items():
        if name in images or name == prompt or value is None or value == "":
            continue
        parts.append(f"{name}:{_show(value)}")
    return clip(" ".join(parts), 1500)


# the cog ------------------------------------------------------------------------------------------
class Results(commands.Cog):
    """Follow-ups, Edit, Info and Delete on results; follow-ups in the Apps menu."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.engine = bot.engine
        self._menus: list[str] = []

    @property
    def imagine(self) -> Imagine:
        from cogs.imagine import Imagine

        cog = self.bot.get_cog("Imagine")
        assert isinstance(cog, Imagine)
        return cog

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*ITEMS)
        self.rebuild_commands()

    async def cog_unload(self) -> None:
        self._remove_menus()
        self.bot.remove_dynamic_items(*ITEMS)

    def rebuild_commands(self) -> None:
        """One Apps-menu command per follow-up workflow loaded now (Discord allows a few)."""
        self._remove_menus()
        for followup in followups(self.engine.workflows):
            if followup.label in self._menus or len(self._menus) >= MAX_MENUS:
                continue
            menu = app_commands.ContextMenu(
                name=followup.label, callback=self._menu_callback(followup)
            )
            self.bot.tree.add_command(menu, override=True)
            self._menus.append(followup.label)

    def _remove_menus(self) -> None:
        for name in self._menus:
            self.bot.tree.remove_command(name, type=discord.AppCommandType.message)
        self._menus.clear()

    def offered(self, first: Job) -> list[Followup]:
        """The follow-ups the result's channel allows (checked again when clicked)."""
        return offered(self.engine.workflows, self.bot.policy, first)

    # follow-ups -----------------------------------------------------------------------------
    def _followup(self, name: str) -> Followup:
        for followup in followups(self.engine.workflows):
            if followup.workflow == name:
                return followup
        raise NotFound(f"`{name}` is no longer offered on images.")

    async def followup(
        self, interaction: discord.Interaction, job_id: str, index: int, workflow: str
    ) -> None:
        """A follow-up button: exactly that image of that job, into the follow-up workflow."""
        try:
            await self.engine.saved([job_id])  # its files are written just after it was posted
            job = remix.original(self.engine, job_id)
            source = Source(
                output_image(job, index),
                job=job,
                index=index,
                message_id=str(interaction.message.id) if interaction.message else None,
            )
            await self._run(interaction, self._followup(workflow), source)
        except UserError as exc:
            await _fail(interaction, exc.message)
        except Exception:
            log.exception("follow-up %s of %s failed", workflow, job_id)
            await _fail(interaction, f"Something went wrong (job {job_id}).")

    def _menu_callback(self, followup: Followup) -> Any:
        async def run(interaction: discord.Interaction, message: discord.Message) -> None:
            await self.from_message(interaction, message, followup)

        return run

    async def from_message(
        self, interaction: discord.Interaction, message: discord.Message, followup: Followup
    ) -> None:
        """Apps → LABEL on a message: its image (asked which, privately, when it has several)."""
        try:
            images = _images(message, followup)
            if len(images) > 1:
                # refuse what may not run here before asking anything
                self.bot.admission.workflow_for(requester_of(interaction), followup.workflow)
                chooser = ImageSelect(
                    message.channel.id,
                    message.id,
                    followup.workflow,
                    [
                        discord.SelectOption(
                            label=f"Image {n}", description=clip(a.filename, 100), value=str(i)
                        )
                        for i, (n, a) in enumerate(enumerate(images[:OPTIONS], start=1))
                    ],
                )
                if len(chooser.item.custom_id or "") <= 100:
                    view = discord.ui.View(timeout=None)
                    view.add_item(chooser)
                    await interaction.response.send_message(
                        f"Which image should {followup.label} take?", view=view, ephemeral=True
                    )
                    return
            await self._from_attachment(interaction, message, followup, images[0])
        except UserError as exc:
            await _fail(interaction, exc.message)
        except discord.HTTPException:
            log.warning("could not read the image of message %s", message.id)
            await _fail(interaction, "Discord did not let me read that image; try again.")
        except Exception:
            log.exception("%s from message %s failed", followup.label, message.id)
            await _fail(interaction, "Something went wrong; the bot's log says more.")

    async def chosen_image(
        self,
        interaction: discord.Interaction,
        channel_id: int,
        message_id: int,
        workflow: str,
        index: int,
    ) -> None:
        """The image picked in the private chooser: the message is read again."""
        try:
            followup = self._followup(workflow)
            channel = self.bot.get_partial_messageable(channel_id)
            try:
                message = await channel.fetch_message(message_id)
            except discord.NotFound:
                raise NotFound("That message is gone.") from None
            images = _images(message, followup)
            if not 0 <= index < len(images):
                raise NotFound("That image is gone from the message.")
            await self._from_attachment(interaction, message, followup, images[index])
        except UserError as exc:
            await _fail(interaction, exc.message)
        except discord.HTTPException:
            log.warning("could not read message %s", message_id)
            await _fail(interaction, "Discord did not let me read that image; try again.")
        except Exception:
            log.exception("%s from message %s failed", workflow, message_id)
            await _fail(interaction, "Something went wrong; the bot's log says more.")

    async def _from_attachment(
        self,
        interaction: discord.Interaction,
        message: discord.Message,
        followup: Followup,
        attachment: discord.Attachment,
    ) -> None:
        """One image of a message (a comfycord result's own file when it is one) into the
        follow-up workflow."""
        found = re.match(rf"^({JOB_RE})-", attachment.filename)
        if found:
            await self.engine.saved([found.group(1)])  # written just after it was posted
        source = self._result_source(message, attachment)
        if source is None:
            # checked before anything is read or shown
            self.bot.admission.workflow_for(requester_of(interaction), followup.workflow)
            workflow = self.engine.workflows.get(followup.workflow)
            param = workflow.param(followup.param) if workflow else None
            if param is not None:
                check_declared(followup.param, param.type, attachment.content_type, attachment.size)
            await interaction.response.defer(thinking=True)
            data = await attachment.read()
            source = Source(
                ImageInput(attachment.filename, data),
                author_id=str(message.author.id),
                message_id=str(message.id),
            )
        await self._run(interaction, followup, source)

    def _result_source(
        self, message: discord.Message, attachment: discord.Attachment
    ) -> Source | None:
        """A comfycord result's image as the exact file its job produced, when it is one."""
        if self.bot.user is None or message.author.id != self.bot.user.id:
            return None
        found = re.match(rf"^({JOB_RE})-(.+)$", attachment.filename)
        job = self.engine.get_job(found.group(1)) if found else None
        if job is None or found is None:
            return None
        names = [Path(o.filename).stem for o in job.outputs]
        stem = Path(found.group(2)).stem
        if stem not in names:
            return None
        index = names.index(stem)
        return Source(output_image(job, index), job=job, index=index, message_id=str(message.id))

    async def _run(
        self, interaction: discord.Interaction, followup: Followup, source: Source
    ) -> None:
        admission = self.bot.admission
        admitted = admit_followup(admission, requester_of(interaction), followup, source)
        jobs = await submit_followup(admission, admitted, followup, source)
        await self.imagine.show(interaction, jobs)

    # edit -----------------------------------------------------------------------------------
    async def open_edit(self, interaction: discord.Interaction, job_id: str) -> None:
        try:
            job = remix.original(self.engine, job_id)
            fields, other = remix.edit_fields(self.engine.workflow(job.workflow), job)
            await interaction.response.send_modal(EditModal(job, fields, other))
        except UserError as exc:
            await send_error(interaction, exc.message)

    async def edit_submit(
        self, interaction: discord.Interaction, job_id: str, edited: dict[str, str]
    ) -> None:
        """The same values (and seeds, and input images) with the edited prompt."""
        try:
            original = remix.original(self.engine, job_id)
            admission = self.bot.admission
            admitted = remix.edit(admission, requester_of(interaction), original, edited)
            jobs = await admission.submit(admitted)
            await self.imagine.show(interaction, jobs)
        except UserError as exc:
            await send_error(interaction, exc.message)

    # info and delete ------------------------------------------------------------------------
    async def info(self, interaction: discord.Interaction, key: str) -> None:
        try:
            jobs = self.imagine._jobs_for_key(key)
            await self.engine.saved([j.id for j in jobs])  # written just after it was posted
            jobs = self.imagine._jobs_for_key(key)
            workflow = self.engine.workflows.get(jobs[0].workflow)
            await interaction.response.send_message(
                clip(info_text(jobs, workflow), 2000),
                ephemeral=True,
                allowed_mentions=discord.AllowedMentions.none(),
            )
        except UserError as exc:
            await send_error(interaction, exc.message)

    async def delete(self, interaction: discord.Interaction, key: str) -> None:
        try:
            jobs = self.imagine._jobs_for_key(key)
            if str(interaction.user.id) != jobs[0].owner_id and not is_moderator(interaction):
                raise NotAllowed(
                    "Only the member who asked for these images or a moderator can delete them."
                )
            if interaction.message is None:
                raise NotFound("That message is gone already.")
            await interaction.message.delete()
            await self.engine.saved([j.id for j in jobs])  # its record, written over otherwise
            for job in jobs:
                self.engine.update_meta(job.id, deleted_by=str(interaction.user.id))
            await interaction.response.send_message("Deleted.", ephemeral=True)
        except UserError as exc:
            await send_error(interaction, exc.message)


def _images(message: discord.Message, followup: Followup) -> list[discord.Attachment]:
    """The message's attachments the follow-up takes (images; videos or sounds where it
    declares them), by the type Discord gives; the bytes are checked when read.

    Raises:
        NotFound: it has none.
    """
    images = [a for a in message.attachments if followup.takes_declared(a.content_type)]
    if not images:
        raise NotFound(f"That message has no {followup.what} attached.")
    return images


async def _fail(interaction: discord.Interaction, message: str) -> None:
    """Say what went wrong: privately, or in the public reply when it exists already."""
    if interaction.response.is_done():
        try:
            await interaction.edit_original_response(content=f"❌ {clip(message, 1900)}")
            return
        except discord.HTTPException:
            pass
    await send_error(interaction, message)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Results(bot))
