"""`/workflows import` and `/workflows export`: the preview, its Save and Cancel buttons.

The engine does the work (`Engine.prepare_import`, `save_import`, `export_pack`); this module
reads the attachments, shows the preview and answers the buttons. A preview lives only in its
view: Cancel, a timeout or a restart leave nothing behind.
"""

from __future__ import annotations

import io
import logging
import secrets
from typing import Any

import discord

from bot.app import ComfyBot, send_error
from bot.errors import UserError, WorkflowError
from bot.workflows.packs import (
    MAX_GRAPH_BYTES,
    MAX_YAML_BYTES,
    PACK_CODES,
    ImportPreview,
    OptionPreview,
    check_size,
)
from cogs._common import actor, clip, ids, require_moderator

log = logging.getLogger(__name__)

PREVIEW_TIMEOUT = 10 * 60  # seconds a preview waits for Save (the token lasts 15 minutes)
_FIELD = 600  # characters per field, so four fields leave room for the options
_EMBED = 5900  # Discord's limit for a whole embed is 6000
_TYPES = {"text": "text", "int": "whole number", "float": "number", "seed": "seed"}


def _option_line(option: OptionPreview) -> str:
    kind = _TYPES.get(option.type, option.type)
    bits = [kind + (", required" if option.required else "")]
    if option.range:
        bits.append(option.range)
    if option.default not in (None, ""):
        default = str(option.default)
        bits.append(f"default `{clip(default, 40)}`")
    elif option.type == "seed":
        bits.append("random unless given")
    sets = ", ".join(option.sets) or "nothing"
    return f"**`{option.name}`** ({'; '.join(bits)})\n→ sets {clip(sets, 200)}"


def preview_embed(preview: ImportPreview) -> discord.Embed:
    """The preview: each option with the node and input it sets, then what is missing.

    Discord allows 6000 characters per embed: the fields are clipped first, and the option
    list gets what is left.
    """
    fields: list[tuple[str, str]] = []
    if preview.missing_classes:
        fields.append(
            (
                "Missing node classes (install them, or update ComfyUI)",
                ", ".join(f"`{c}`" for c in preview.missing_classes),
            )
        )
    if preview.missing_packs:
        fields.append(("What to install", "\n".join(preview.missing_packs)))
    if preview.repairs:
        fields.append(("Repaired (as ComfyUI's editor would)", "\n".join(preview.repairs)))
    if preview.missing_models:
        fields.append(("Missing models", "\n".join(preview.missing_models)))
    others = [p for p in preview.problems if p.code not in PACK_CODES and p.code != "missing_model"]
    if others:
        fields.append(("Problems", "\n".join(f"{p.key}: {p.message}" for p in others)))
    if preview.notes:
        fields.append(("Notes", "\n".join(preview.notes)))
    footer = (
        f"Save writes {preview.name}.json + {preview.name}.yaml and adds the workflow; "
        "Cancel leaves nothing."
        if not preview.blocking
        else "ComfyUI can't run it as it is: fix what is listed and import it again."
    )
    title = clip(f"Import {preview.name} — {preview.title}", 256)
    clipped = [(name, clip(value, _FIELD)) for name, value in fields]
    used = len(title) + len(footer) + sum(len(n) + len(v) for n, v in clipped)
    options = "\n".join(map(_option_line, preview.options)) or "No options."
    color = discord.Color.red() if preview.blocking else discord.Color.green()
    embed = discord.Embed(
        title=title, description=clip(options, min(4096, _EMBED - used)), color=color
    )
    for name, value in clipped:
        embed.add_field(name=name, value=value, inline=False)
    embed.set_footer(text=footer)
    return embed


class ImportView(discord.ui.View):
    """Save and Cancel under one preview; only its moderator sees and presses them."""

    def __init__(self, bot: ComfyBot, preview: ImportPreview, origin: discord.Interaction) -> None:
        super().__init__(timeout=PREVIEW_TIMEOUT)
        self.bot = bot
        self.preview = preview
        self.origin = origin
        self.done = False
        tag = secrets.token_hex(4)
        save: discord.ui.Button[ImportView] = discord.ui.Button(
            label="Save",
            style=discord.ButtonStyle.success,
            custom_id=f"import:save:{tag}",
            disabled=bool(preview.blocking),
        )
        cancel: discord.ui.Button[ImportView] = discord.ui.Button(
            label="Cancel", style=discord.ButtonStyle.secondary, custom_id=f"import:cancel:{tag}"
        )
        save.callback = self.save  # type: ignore[method-assign]
        cancel.callback = self.cancel  # type: ignore[method-assign]
        self.add_item(save)
        self.add_item(cancel)

    async def interaction_check(self, interaction: discord.Interaction) -> bool:
        if interaction.user.id != self.origin.user.id:
            raise WorkflowError("Only the moderator who started this import can save it.")
        return True

    async def save(self, interaction: discord.Interaction) -> None:
        require_moderator(interaction)
        await interaction.response.defer()
        workflow = self.bot.engine.save_import(self.preview)
        self.done = True
        self.stop()
        guild, _ = ids(interaction)
        if guild is not None:
            self.bot.policy.record(guild, actor(interaction), "import", workflow.name)
        await self.bot.commands_followed()
        command = f" and `/{workflow.spec.command}`" if workflow.spec.command else ""
        await interaction.edit_original_response(
            content=f"Saved **{workflow.name}**: use it with `/imagine workflow:{workflow.name}`"
            f"{command}. `/workflows disable {workflow.name}` keeps it out of a channel.",
            embed=None,
            view=None,
        )

    async def cancel(self, interaction: discord.Interaction) -> None:
        self.done = True
        self.stop()
        await interaction.response.edit_message(
            content="Import cancelled; nothing was saved.", embed=None, view=None
        )

    async def on_timeout(self) -> None:
        if self.done:
            return
        try:
            await self.origin.edit_original_response(
                content="This import expired; nothing was saved. Run `/workflows import` again.",
                embed=None,
                view=None,
            )
        except discord.HTTPException:
            log.info("could not mark the expired import of %s", self.preview.name)

    async def on_error(
        self, interaction: discord.Interaction, error: Exception, item: discord.ui.Item[Any]
    ) -> None:
        if isinstance(error, UserError):
            await send_error(interaction, error.message)
            return
        ref = secrets.token_hex(3)
        log.error("import button failed (ref %s)", ref, exc_info=error)
        await send_error(interaction, f"Something went wrong (ref {ref}).")


async def _read(attachment: discord.Attachment, limit: int) -> bytes:
    check_size(attachment.size, attachment.filename, limit)
    try:
        return await attachment.read()
    except (discord.HTTPException, discord.NotFound) as exc:
        raise WorkflowError(f"{attachment.filename}: could not be downloaded ({exc})") from None


async def start_import(
    bot: ComfyBot,
    interaction: discord.Interaction,
    file: discord.Attachment,
    spec: discord.Attachment | None,
    name: str | None,
) -> None:
    """Answer `/workflows import` with a preview and its buttons (moderators only)."""
    require_moderator(interaction)
    check_size(file.size, file.filename, MAX_GRAPH_BYTES)
    if spec is not None:
        check_size(spec.size, spec.filename, MAX_YAML_BYTES)
    await interaction.response.defer(ephemeral=True, thinking=True)
    try:
        data = await _read(file, MAX_GRAPH_BYTES)
        spec_data = await _read(spec, MAX_YAML_BYTES) if spec is not None else None
        preview = await bot.engine.prepare_import(
            data,
            file.filename,
            yaml_data=spec_data,
            yaml_name=spec.filename if spec is not None else "spec.yaml",
            name=name,
        )
    except UserError as exc:
        await interaction.edit_original_response(content=clip(f"❌ {exc.message}", 2000))
        return
    view = ImportView(bot, preview, interaction)
    await interaction.edit_original_response(embed=preview_embed(preview), view=view)


async def export(bot: ComfyBot, interaction: discord.Interaction, name: str) -> None:
    """Answer `/workflows export` with the pack's files (moderators only)."""
    require_moderator(interaction)
    files = bot.engine.export_pack(name)
    await interaction.response.send_message(
        f"`{name}`: its graph and YAML. Import them elsewhere with `/workflows import`.",
        files=[discord.File(io.BytesIO(data), filename=n) for n, data in files],
        ephemeral=True,
    )
