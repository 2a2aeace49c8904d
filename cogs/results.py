"""What members can do with a result: follow-ups (Upscale…), Edit, Info, Delete, and Apps menus.

A result message carries Reroll, Edit, Info and Delete, then per image its Variations and one
button per follow-up workflow, laid out within Discord's 5 rows of 5 (a select menu per action
when they do not fit; the components are in `cogs._components`). Every custom_id holds ids only;
the state is in the store, so the buttons work after a restart. The same follow-ups are message
context-menu commands ("Apps → Upscale") on any message with an image. Requests go through
`bot/admission.py` like `/imagine`, and the reply is shown and delivered by the Imagine cog.
"""

from __future__ import annotations

import contextlib
import logging
import re
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any

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
    output_image,
    prepare_followup,
)
from bot.jobs.model import Job
from bot.media.uploads import check_declared
from bot.workflows import Workflow
from cogs._common import clip, is_moderator, requester_of
from cogs._components import JOB_RE, OPTIONS, RESULT_ITEMS, EditModal, ImageSelect, PickedImage
from cogs.imagine import Imagine

log = logging.getLogger(__name__)

MAX_MENUS = 5  # message commands of an app (Discord allows a few; keep room for others)


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
        cog = self.bot.get_cog("Imagine")
        assert isinstance(cog, Imagine)
        return cog

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*RESULT_ITEMS)
        self.rebuild_commands()

    async def cog_unload(self) -> None:
        self._remove_menus()
        self.bot.remove_dynamic_items(*RESULT_ITEMS)

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
        async with _told_privately(interaction, followup.label, message.id):
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

    async def chosen_image(self, interaction: discord.Interaction, picked: PickedImage) -> None:
        """The image picked in the private chooser: the message is read again."""
        async with _told_privately(interaction, picked.workflow, picked.message_id):
            followup = self._followup(picked.workflow)
            channel = self.bot.get_partial_messageable(picked.channel_id)
            try:
                message = await channel.fetch_message(picked.message_id)
            except discord.NotFound:
                raise NotFound("That message is gone.") from None
            images = _images(message, followup)
            if not 0 <= picked.index < len(images):
                raise NotFound("That image is gone from the message.")
            await self._from_attachment(interaction, message, followup, images[picked.index])

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
        jobs = prepare_followup(admission, admitted, followup, source)
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
            jobs = admission.prepare(admitted)
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


@contextlib.asynccontextmanager
async def _told_privately(
    interaction: discord.Interaction, what: str, message_id: int
) -> AsyncIterator[None]:
    """A follow-up from a message's image: whatever fails inside is said to the member (a
    `UserError` as itself, anything else in general words, logged) and goes no further."""
    try:
        yield
    except UserError as exc:
        await _fail(interaction, exc.message)
    except discord.HTTPException:
        log.warning("could not read message %s or its image", message_id)
        await _fail(interaction, "Discord did not let me read that image; try again.")
    except Exception:
        log.exception("%s from message %s failed", what, message_id)
        await _fail(interaction, "Something went wrong; the bot's log says more.")


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
