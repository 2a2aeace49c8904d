"""/imagine, one command per workflow that asks for it, and the buttons of a reply (Cancel,
Reroll, Variations).

A request is validated (policy, caps, banned words, values) and prepared by the admission; its
reply, from the acknowledgement through progress to the result, is followed by `cogs._replies`
(the token and the channel fallback in `cogs._reply`, the result message in `cogs._delivery`).
"""

from __future__ import annotations

import logging
from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot import remix
from bot.admission import ImageOffer
from bot.app import ComfyBot, send_error
from bot.engine import ImageInput
from bot.errors import NotAllowed, NotFound, UserError
from bot.intake import Turn
from bot.jobs.model import Job
from bot.workflows import Param, Workflow
from cogs._commands import Option, build_command, imagine_options, param_option
from cogs._common import clip, ids, is_moderator, is_nsfw_channel, requester_of
from cogs._components import REPLY_ITEMS
from cogs._replies import Replies
from cogs._reply import Reply

log = logging.getLogger(__name__)

# `count` offered by Discord goes up to the largest limit a server may set (limits.max_count is
# at most 10); the limit in force in the server is checked on each request.
MAX_COUNT = 10


#: Seconds a command may wait for its turn in a burst (Discord wants an answer within 3).
TURN_WAIT = 1.0


class Imagine(commands.Cog):
    """/imagine and the per-workflow commands; their replies show progress and deliver results
    (see `cogs._replies`)."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        self.engine = bot.engine
        self.policy = bot.policy
        self._replies = Replies(bot)
        self._commands: list[str] = []

    @property
    def replies(self) -> dict[str, Reply]:
        """The replies followed now, by key."""
        return self._replies.replies

    async def cog_load(self) -> None:
        self.bot.add_dynamic_items(*REPLY_ITEMS)
        self._replies.open()
        self._register_commands()

    async def cog_unload(self) -> None:
        self._replies.close()
        for name in self._commands:
            self.bot.tree.remove_command(name)
        self.bot.remove_dynamic_items(*REPLY_ITEMS)

    async def sweep_once(self) -> None:
        """Forget expired tokens, give replies about to lose theirs a last word (see
        `Replies.sweep_once`)."""
        await self._replies.sweep_once()

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
        # a burst is worked on a few commands at a time (see bot.intake), none of them waiting
        # for its turn so long that its acknowledgement could be late
        deadline = interaction.created_at.timestamp() + TURN_WAIT
        async with self.bot.engine.intake.turn(deadline) as turn:
            await self._request_in(turn, interaction, workflow_name, values)

    async def _request_in(
        self,
        turn: Turn,
        interaction: discord.Interaction,
        workflow_name: str | None,
        values: dict[str, Any],
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
            turn.release()  # the files come from Discord's CDN: no turn held meanwhile
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
        await self._replies.start(interaction, jobs, turn=turn)

    async def show(self, interaction: discord.Interaction, jobs: list[Job]) -> None:
        """Show new jobs in this interaction's reply: progress, then their result."""
        await self._replies.start(interaction, jobs)

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
            await self._replies.start(interaction, jobs)
        except UserError as exc:
            await send_error(interaction, exc.message)
        except Exception:
            log.exception("remix of %s failed", job_id)
            await send_error(interaction, f"Something went wrong (job {job_id}).")


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Imagine(bot))
