"""Slash commands built at run time from the workflows: their options, ranges and choices."""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass, field
from typing import Any

import discord
from discord import app_commands

from bot.workflows import Param, Workflow
from cogs._common import clip

log = logging.getLogger(__name__)


@dataclass
class Option:
    """One option of a slash command, as discord.py is told about it."""

    name: str
    annotation: Any
    description: str
    required: bool = False
    min_value: float | None = None
    max_value: float | None = None
    choices: list[str] = field(default_factory=list)
    autocomplete: bool = False


def param_option(param: Param, *, required: bool | None = None) -> Option:
    """The option a workflow parameter becomes (required as the parameter says, unless told)."""
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
    elif param.is_file:
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
            option = param_option(param, required=False)
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
