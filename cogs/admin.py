"""Owner-only maintenance: sync the slash commands (`@bot sync` or `@bot sync guild`)."""

from __future__ import annotations

import discord
from discord.ext import commands

from bot.app import ComfyBot


class Admin(commands.Cog):
    def __init__(self, bot: ComfyBot) -> None:
        self.bot = bot

    async def cog_check(self, ctx: commands.Context[commands.Bot]) -> bool:  # type: ignore[override]
        owners = set(self.bot.settings.discord.owner_ids)
        return ctx.author.id in owners or await self.bot.is_owner(ctx.author)

    @commands.command(name="sync")
    async def sync(self, ctx: commands.Context[commands.Bot], scope: str = "global") -> None:
        """Register the slash commands: globally, or (`sync guild`) in this server at once."""
        if scope == "guild" and ctx.guild is not None:
            guild = discord.Object(id=ctx.guild.id)
            self.bot.tree.copy_global_to(guild=guild)
            synced = await self.bot.tree.sync(guild=guild)
        else:
            synced = await self.bot.tree.sync()
        await ctx.reply(f"Synced {len(synced)} commands ({scope}).")


async def setup(bot: commands.Bot) -> None:
    assert isinstance(bot, ComfyBot)
    await bot.add_cog(Admin(bot))
