"""/workflows (moderators: the controls over what each channel may use) and /catalog (everyone:
what this channel may use).

/workflows carries `default_member_permissions` = Manage Server, so members do not see it; a role
added with `/workflows moderators add` sees it where a server administrator allows that role in
Server Settings → Integrations. Every subcommand still checks the member's rights itself.
"""

from __future__ import annotations

from typing import Any

import discord
from discord import app_commands
from discord.ext import commands

from bot.app import ComfyBot
from bot.errors import InvalidValue, NotAllowed
from bot.policy import LIMIT_KEYS
from cogs import _packs
from cogs._autocomplete import allowed_workflows
from cogs._common import (
    actor,
    clip,
    ids,
    is_nsfw_channel,
    require_moderator,
)


def _guild(interaction: discord.Interaction) -> str:
    guild, _ = ids(interaction)
    if guild is None:
        raise NotAllowed("This command only works in a server.")
    return guild


def _describe(bot: ComfyBot, name: str, *, default: bool = False) -> str:
    """One workflow: its name, title and flags on the first line, its parameters below."""
    workflow = bot.engine.workflows[name]
    parts = []
    for p in workflow.params:
        bits: str = p.type
        if p.type != "seed" and (p.min is not None or p.max is not None):
            bits += f" {p.min if p.min is not None else ''}–{p.max if p.max is not None else ''}"
        if p.choices and len(p.choices) <= 6:
            bits += ": " + "/".join(str(c) for c in p.choices)
        parts.append(f"`{p.name}` ({bits})")
    flags = " · NSFW" if workflow.spec.nsfw else ""
    command = f" · `/{workflow.spec.command}`" if workflow.spec.command else ""
    marker = " · **default**" if default else ""
    head = f"**{name}** — {workflow.spec.title}{flags}{command}{marker}"
    return head + "\n" + ", ".join(parts)


def _limits_text(bot: ComfyBot, guild: str) -> str:
    current = bot.policy.limits(guild)
    lines = [f"`{k}` = {getattr(current, k)}" for k in LIMIT_KEYS]
    for param, cap in bot.policy.caps(guild).items():
        lines.append(f"cap `{param}`: " + ", ".join(f"{k} {v}" for k, v in cap.items()))
    return clip("\n".join(lines), 2000)


async def _send_limits(bot: ComfyBot, interaction: discord.Interaction) -> None:
    """/workflows limits show and /catalog limits: the same private answer."""
    text = _limits_text(bot, _guild(interaction))
    await interaction.response.send_message(text, ephemeral=True)


@app_commands.default_permissions(manage_guild=True)
class Workflows(
    commands.GroupCog,
    group_name="workflows",
    group_description="Moderators: which workflows each channel may use, limits, banned words",
):
    """Per-server and per-channel workflow policy (moderators)."""

    moderators = app_commands.Group(name="moderators", description="Roles that may change policy")
    limits = app_commands.Group(name="limits", description="Per-member limits in this server")
    banned = app_commands.Group(name="banned", description="Words refused in prompts")

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        super().__init__()

    async def _names(
        self, interaction: discord.Interaction, current: str
    ) -> list[app_commands.Choice[str]]:
        needle = current.lower()
        return [
            app_commands.Choice(name=n, value=n)
            for n in sorted(self.bot.engine.workflows)
            if needle in n.lower()
        ][:25]

    @app_commands.describe(name="The workflow", channel="Only in this channel")
    async def _in_place(
        self,
        interaction: discord.Interaction,
        name: str,
        channel: discord.TextChannel | None = None,
    ) -> None:
        """/workflows enable, disable and default: one workflow, in a channel or the whole server;
        the command's name says what to set."""
        require_moderator(interaction)
        guild = _guild(interaction)
        channel_id = str(channel.id) if channel else None
        where = channel.mention if channel else "this server"
        command = interaction.command.name if interaction.command else ""
        if command == "default":
            nsfw = channel is not None and channel.is_nsfw()
            self.bot.policy.set_default(
                guild, channel_id, name, actor(interaction), nsfw_channel=nsfw
            )
            text = f"`{name}` is now the default workflow in {where}."
        else:
            enabled = command == "enable"
            self.bot.policy.set_enabled(guild, channel_id, name, enabled, actor(interaction))
            text = f"`{name}` is now {'enabled' if enabled else 'disabled'} in {where}."
            if enabled and self.bot.engine.workflows[name].spec.nsfw:
                text += " It is marked NSFW, so only age-restricted channels can use it."
        await interaction.response.send_message(text, ephemeral=True)

    enable = app_commands.command(
        name="enable", description="Allow a workflow (server-wide or in a channel)"
    )(_in_place)
    disable = app_commands.command(
        name="disable", description="Forbid a workflow (server-wide or in a channel)"
    )(_in_place)
    default = app_commands.command(
        name="default", description="The workflow /imagine uses when none is given"
    )(_in_place)
    enable.autocomplete("name")(_names)
    disable.autocomplete("name")(_names)
    default.autocomplete("name")(_names)

    @app_commands.command(name="import", description="Add a workflow from a ComfyUI file")
    @app_commands.describe(
        file="The workflow (.json) saved or exported from ComfyUI",
        yaml="Its YAML (optional: without it, the options are detected)",
        name="The workflow's name (default: from the file name)",
    )
    async def import_(
        self,
        interaction: discord.Interaction,
        file: discord.Attachment,
        yaml: discord.Attachment | None = None,
        name: app_commands.Range[str, 1, 32] | None = None,
    ) -> None:
        await _packs.start_import(self.bot, interaction, file, yaml, name)

    @app_commands.command(name="export", description="A workflow's files (graph and YAML)")
    @app_commands.describe(name="The workflow")
    async def export(self, interaction: discord.Interaction, name: str) -> None:
        await _packs.export(self.bot, interaction, name)

    export.autocomplete("name")(_names)

    @app_commands.command(name="audit", description="Recent policy changes in this server")
    async def audit(self, interaction: discord.Interaction) -> None:
        require_moderator(interaction)
        entries = self.bot.policy.audit_log(_guild(interaction), limit=20)
        if not entries:
            text = "No policy changes yet."
        else:
            lines = [
                f"<t:{int(e.at)}:f> <@{e.actor_id}> ({e.actor_name}) **{e.action}** {e.detail}"
                for e in entries
            ]
            text = "\n".join(lines)
        await interaction.response.send_message(
            clip(text, 2000), ephemeral=True, allowed_mentions=discord.AllowedMentions.none()
        )

    # moderators ---------------------------------------------------------------------------
    async def _moderator_role(
        self, interaction: discord.Interaction, role: discord.Role, moderates: bool
    ) -> None:
        require_moderator(interaction)
        guild = _guild(interaction)
        self.bot.policy.set_moderator_role(guild, str(role.id), moderates, actor(interaction))
        now = "can now moderate" if moderates else "no longer moderates"
        await interaction.response.send_message(f"{role.mention} {now} comfycord.", ephemeral=True)

    @moderators.command(name="add", description="Let a role change workflow policy")
    async def moderators_add(self, interaction: discord.Interaction, role: discord.Role) -> None:
        await self._moderator_role(interaction, role, True)

    @moderators.command(name="remove", description="Stop a role from changing workflow policy")
    async def moderators_remove(self, interaction: discord.Interaction, role: discord.Role) -> None:
        await self._moderator_role(interaction, role, False)

    # limits -------------------------------------------------------------------------------
    @limits.command(name="show", description="The limits in force in this server")
    async def limits_show(self, interaction: discord.Interaction) -> None:
        await _send_limits(self.bot, interaction)

    @limits.command(name="set", description="Change a per-member limit")
    @app_commands.describe(name="Which limit", value="The new value")
    @app_commands.choices(name=[app_commands.Choice(name=k, value=k) for k in LIMIT_KEYS])
    async def limits_set(self, interaction: discord.Interaction, name: str, value: str) -> None:
        require_moderator(interaction)
        parsed: Any = value
        if value.lower() in ("true", "yes", "on"):
            parsed = True
        elif value.lower() in ("false", "no", "off"):
            parsed = False
        self.bot.policy.set_limit(_guild(interaction), name, parsed, actor(interaction))
        now = getattr(self.bot.policy.limits(_guild(interaction)), name)
        await interaction.response.send_message(f"`{name}` is now {now}.", ephemeral=True)

    @limits.command(name="cap", description="Cap a parameter (e.g. steps ≤ 30) or its choices")
    @app_commands.describe(
        param="Parameter name, e.g. steps",
        maximum="Largest value allowed",
        choices="Comma-separated allowed choices, e.g. square,portrait",
    )
    async def limits_cap(
        self,
        interaction: discord.Interaction,
        param: str,
        maximum: float | None = None,
        choices: str | None = None,
    ) -> None:
        require_moderator(interaction)
        params = [
            p for w in self.bot.engine.workflows.values() for p in w.params if p.name == param
        ]
        if not params:
            raise InvalidValue("param", f"no workflow has a parameter `{param}`")
        if maximum is not None and not any(p.type in ("int", "float") for p in params):
            raise InvalidValue("maximum", f"`{param}` is not a number")
        allowed = [c.strip() for c in choices.split(",") if c.strip()] if choices else None
        if allowed:
            offered = {str(c) for p in params for c in p.choices}
            unknown = [c for c in allowed if offered and c not in offered]
            if unknown:
                raise InvalidValue(
                    "choices",
                    f"`{param}` has no choice {', '.join(unknown)}; it offers "
                    + ", ".join(sorted(offered)),
                )
        self.bot.policy.set_cap(
            _guild(interaction), param, maximum=maximum, choices=allowed, actor=actor(interaction)
        )
        await interaction.response.send_message(f"Cap on `{param}` saved.", ephemeral=True)

    # banned words -------------------------------------------------------------------------
    async def _banned_word(self, interaction: discord.Interaction, word: str, banned: bool) -> None:
        require_moderator(interaction)
        self.bot.policy.set_banned_word(_guild(interaction), word, banned, actor(interaction))
        text = "Word added to the banned list." if banned else "Word removed from the banned list."
        await interaction.response.send_message(text, ephemeral=True)

    @banned.command(name="add", description="Refuse prompts containing this word")
    async def banned_add(self, interaction: discord.Interaction, word: str) -> None:
        await self._banned_word(interaction, word, True)

    @banned.command(name="remove", description="Allow this word again")
    async def banned_remove(self, interaction: discord.Interaction, word: str) -> None:
        await self._banned_word(interaction, word, False)

    @banned.command(name="list", description="The banned words (moderators only)")
    async def banned_list(self, interaction: discord.Interaction) -> None:
        require_moderator(interaction)
        words = self.bot.policy.banned_words(_guild(interaction))
        text = ", ".join(f"||{w}||" for w in words) if words else "No banned words."
        await interaction.response.send_message(clip(text, 2000), ephemeral=True)


class Catalog(
    commands.GroupCog, group_name="catalog", group_description="Workflows you can use here"
):
    """What this channel allows, for everyone."""

    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot
        super().__init__()

    @app_commands.command(name="list", description="Workflows this channel allows")
    async def list_(self, interaction: discord.Interaction) -> None:
        guild, channel = ids(interaction)
        policy = self.bot.policy
        allowed = policy.allowed(guild, channel, nsfw_channel=is_nsfw_channel(interaction))
        default = policy.default_workflow(guild, channel)
        if not allowed:
            text = "No workflow is enabled in this channel."
        else:
            lines = [_describe(self.bot, n, default=n == default) for n in allowed]
            text = "\n\n".join(lines)
        await interaction.response.send_message(clip(text, 2000), ephemeral=True)

    @app_commands.command(name="info", description="Parameters of one workflow")
    @app_commands.describe(name="The workflow")
    async def info(self, interaction: discord.Interaction, name: str) -> None:
        self.bot.engine.workflow(name)
        guild, channel = ids(interaction)
        allowed = self.bot.policy.is_allowed(
            name, guild, channel, nsfw_channel=is_nsfw_channel(interaction)
        )
        text = _describe(self.bot, name) + (
            "\nEnabled in this channel." if allowed else "\nNot enabled in this channel."
        )
        await interaction.response.send_message(clip(text, 2000), ephemeral=True)

    info.autocomplete("name")(allowed_workflows)

    @app_commands.command(name="limits", description="The limits in force in this server")
    async def limits(self, interaction: discord.Interaction) -> None:
        await _send_limits(self.bot, interaction)


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Workflows(bot))
    await bot.add_cog(Catalog(bot))
