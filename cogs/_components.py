"""The components of a result and of a reply: buttons, select menus and the Edit modal.

Every custom_id holds ids only; the state is in the store, so the components work after a
restart. A component's callback hands the click to the cog that acts on it, found by name: the
Imagine cog (Cancel, Reroll, Variations) or the Results cog (everything else). `result_view` lays
out a result's components within Discord's 5 rows of 5.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol, Self, runtime_checkable

import discord

from bot.app import send_error
from bot.followups import Followup
from bot.jobs.model import Job
from bot.media import Kind
from cogs._common import bot_of, clip

log = logging.getLogger(__name__)

JOB_RE = r"[0-9a-f]{8}"
WF_RE = r"[^:]{1,64}"
ROWS, PER_ROW, OPTIONS = 5, 5, 25
TEXT_INPUT_MAX = 4000  # Discord's limit for a modal's text input


# who acts on a click ------------------------------------------------------------------------------
@runtime_checkable
class ReplyActions(Protocol):
    """What the Imagine cog does for a reply's and a result's buttons."""

    async def cancel_from_button(self, interaction: discord.Interaction, key: str) -> None: ...

    async def remix(
        self, interaction: discord.Interaction, job_id: str, *, variations: bool
    ) -> None: ...


@runtime_checkable
class ResultActions(Protocol):
    """What the Results cog does for a result's other components."""

    async def open_edit(self, interaction: discord.Interaction, job_id: str) -> None: ...

    async def edit_submit(
        self, interaction: discord.Interaction, job_id: str, edited: dict[str, str]
    ) -> None: ...

    async def info(self, interaction: discord.Interaction, key: str) -> None: ...

    async def delete(self, interaction: discord.Interaction, key: str) -> None: ...

    async def followup(
        self, interaction: discord.Interaction, job_id: str, index: int, workflow: str
    ) -> None: ...

    async def chosen_image(self, interaction: discord.Interaction, picked: PickedImage) -> None: ...


@dataclass(frozen=True)
class PickedImage:
    """What the private image chooser answered: which image of which message, for which
    follow-up workflow."""

    channel_id: int
    message_id: int
    workflow: str
    index: int


def _imagine(interaction: discord.Interaction) -> ReplyActions:
    cog = bot_of(interaction).get_cog("Imagine")
    assert isinstance(cog, ReplyActions)
    return cog


def _results(interaction: discord.Interaction) -> ResultActions:
    cog = bot_of(interaction).get_cog("Results")
    assert isinstance(cog, ResultActions)
    return cog


# the items ----------------------------------------------------------------------------------------


def _button(custom_id: str, label: str, emoji: str | None, style: discord.ButtonStyle) -> Any:
    return discord.ui.Button(label=clip(label, 80), emoji=emoji, style=style, custom_id=custom_id)


class _KeyButton(
    discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"cc:[a-z]+:(?P<key>{JOB_RE})"
):
    """A button whose custom_id holds one id, `cc:<prefix>:<id>` (a job's, or a reply's key):
    each subclass names its prefix and look in its class line and says what a click does."""

    _look: ClassVar[tuple[str, str, str | None, discord.ButtonStyle]]

    def __init_subclass__(
        cls,
        *,
        prefix: str,
        label: str,
        emoji: str | None = None,
        style: discord.ButtonStyle = discord.ButtonStyle.secondary,
    ) -> None:
        super().__init_subclass__(template=rf"cc:{prefix}:(?P<key>{JOB_RE})")
        cls._look = (prefix, label, emoji, style)

    def __init__(self, key: str) -> None:
        prefix, label, emoji, style = self._look
        super().__init__(_button(f"cc:{prefix}:{key}", label, emoji, style))
        self.key = key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Item[Any], match: Any, /
    ) -> Self:
        return cls(match["key"])


class CancelButton(_KeyButton, prefix="cancel", label="Cancel", style=discord.ButtonStyle.danger):
    """Cancels the jobs of a reply still queued or running."""

    async def callback(self, interaction: discord.Interaction) -> None:
        await _imagine(interaction).cancel_from_button(interaction, self.key)


class RerollButton(
    _KeyButton, prefix="reroll", label="Reroll", emoji="🎲", style=discord.ButtonStyle.primary
):
    """Runs the job again with a new seed."""

    async def callback(self, interaction: discord.Interaction) -> None:
        await _imagine(interaction).remix(interaction, self.key, variations=False)


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
        await _imagine(interaction).remix(interaction, self.job_id, variations=True)


class EditButton(_KeyButton, prefix="edit", label="Edit", emoji="✏️"):
    """Opens a modal with the prompt (and negative) filled in; submitting runs it again."""

    async def callback(self, interaction: discord.Interaction) -> None:
        await _results(interaction).open_edit(interaction, self.key)


class InfoButton(_KeyButton, prefix="info", label="Info", emoji="ℹ️"):
    """Answers privately with every value the job used."""

    async def callback(self, interaction: discord.Interaction) -> None:
        await _results(interaction).info(interaction, self.key)


class DeleteButton(
    _KeyButton, prefix="del", label="Delete", emoji="🗑️", style=discord.ButtonStyle.danger
):
    """Deletes the result message: its author and moderators only."""

    async def callback(self, interaction: discord.Interaction) -> None:
        await _results(interaction).delete(interaction, self.key)


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
        await _results(interaction).followup(interaction, self.job_id, self.index, self.workflow)


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
        parts = choice.split(":")
        if parts[0] == "var" and len(parts) == 2 and re.fullmatch(JOB_RE, parts[1]):
            await _imagine(interaction).remix(interaction, parts[1], variations=True)
        elif parts[0] == "fu" and len(parts) == 4 and re.fullmatch(JOB_RE, parts[1]):
            await _results(interaction).followup(interaction, parts[1], int(parts[2]), parts[3])
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
        picked = PickedImage(self.channel_id, self.message_id, self.workflow, int(value))
        await _results(interaction).chosen_image(interaction, picked)


#: The items the Imagine cog answers.
REPLY_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
    CancelButton,
    RerollButton,
    VariationsButton,
)
#: The items the Results cog answers.
RESULT_ITEMS: tuple[type[discord.ui.DynamicItem[Any]], ...] = (
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
        shown = [("Prompt", prompt, True)]
        if negative is not None:
            shown.append(("Negative prompt", negative, False))
        for label, (name, value), required in shown:
            self.fields[name] = discord.ui.TextInput(
                label=label,
                style=discord.TextStyle.paragraph,
                default=value[:TEXT_INPUT_MAX],
                max_length=TEXT_INPUT_MAX,
                required=required,
                custom_id=f"cc:edit:{name}",
            )
            self.add_item(self.fields[name])

    async def on_submit(self, interaction: discord.Interaction) -> None:
        values = {name: field.value for name, field in self.fields.items()}
        await _results(interaction).edit_submit(interaction, self.job_id, values)

    async def on_error(  # type: ignore[override]
        self, interaction: discord.Interaction, error: Exception
    ) -> None:
        log.error("edit of %s failed", self.job_id, exc_info=error)
        await send_error(interaction, f"Something went wrong (job {self.job_id}).")


# the layout ---------------------------------------------------------------------------------------
def result_view(
    key: str, first: Job, done: Sequence[Job], offered: Sequence[Followup]
) -> discord.ui.View:
    """The components of a result: within 5 rows of 5 buttons, whatever the count and the
    number of follow-ups (select menus take over what does not fit as buttons)."""
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
