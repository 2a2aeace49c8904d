"""Autocomplete callbacks more than one cog offers (discord.py awaits them, so they are
coroutines over the plain helpers of `cogs._common`)."""

from __future__ import annotations

import discord
from discord import app_commands

from cogs._common import allowed_workflow_choices


async def allowed_workflows(
    interaction: discord.Interaction, current: str
) -> list[app_commands.Choice[str]]:
    """The workflows this channel allows whose name contains what was typed."""
    return allowed_workflow_choices(interaction, current)
