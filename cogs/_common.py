"""Helpers shared by the cogs: who is a moderator, where a command runs, how errors look."""

from __future__ import annotations

import discord
from discord import app_commands

from bot.admission import Requester
from bot.app import ComfyBot
from bot.errors import NotAllowed


def bot_of(interaction: discord.Interaction) -> ComfyBot:
    client = interaction.client
    assert isinstance(client, ComfyBot)
    return client


def is_moderator(interaction: discord.Interaction) -> bool:
    """Manage Server, or one of the roles the server made moderators."""
    member = interaction.user
    if not isinstance(member, discord.Member) or interaction.guild_id is None:
        return False
    if member.guild_permissions.manage_guild or member.guild_permissions.administrator:
        return True
    roles = set(bot_of(interaction).policy.moderator_roles(str(interaction.guild_id)))
    return any(str(role.id) in roles for role in member.roles)


def require_moderator(interaction: discord.Interaction) -> None:
    """Raises NotAllowed for members who may not change this server's settings."""
    if not is_moderator(interaction):
        raise NotAllowed(
            "Only moderators (Manage Server, or a role set with `/workflows moderators add`) "
            "can do that."
        )


def is_nsfw_channel(interaction: discord.Interaction) -> bool:
    channel = interaction.channel
    is_nsfw = getattr(channel, "is_nsfw", None)
    return bool(is_nsfw()) if callable(is_nsfw) else False


def actor(interaction: discord.Interaction) -> tuple[str, str]:
    return (str(interaction.user.id), interaction.user.display_name)


def ids(interaction: discord.Interaction) -> tuple[str | None, str | None]:
    guild = str(interaction.guild_id) if interaction.guild_id is not None else None
    channel = str(interaction.channel_id) if interaction.channel_id is not None else None
    return guild, channel


def allowed_workflow_choices(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """Autocomplete: the workflows this channel allows whose name contains what was typed."""
    guild, channel = ids(interaction)
    allowed = bot_of(interaction).policy.allowed(
        guild, channel, nsfw_channel=is_nsfw_channel(interaction)
    )
    needle = current.lower()
    return [app_commands.Choice(name=n, value=n) for n in allowed if needle in n.lower()][:25]


def clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def requester_of(interaction: discord.Interaction) -> Requester:
    """Who asks, and where, for the admission checks."""
    guild, channel = ids(interaction)
    return Requester(
        id=str(interaction.user.id),
        name=interaction.user.display_name,
        guild_id=guild,
        channel_id=channel,
        nsfw_channel=is_nsfw_channel(interaction),
        moderator=is_moderator(interaction),
    )
