"""Sizes written as text: a list of sizes such as `1024 x 1024  (square)` or `SD1.5 - 2:3 portrait
512x768`, the way resolution nodes (rgthree's SDXL latent, Comfyroll's aspect ratios, Easy-Use's
loaders) let a person pick one. Pure: reads `/object_info` definitions and values only.
"""

from __future__ import annotations

import re

from bot.workflows.nodeinfo import InputDef

_SIZE = re.compile(r"(?<!\d)(\d{2,5})\s*[x×]\s*(\d{2,5})(?!\d)")


def size_of(value: object) -> tuple[int, int] | None:
    """The width and height a text names (`"832 x 1216 (portrait)"` -> (832, 1216)), or None."""
    if not isinstance(value, str):
        return None
    found = _SIZE.search(value)
    return (int(found[1]), int(found[2])) if found else None


def sized_choices(definition: InputDef) -> list[str]:
    """The choices of a list input that name a size, when the list is one of sizes.

    A list is one of sizes when at least two of its choices, and at least half, name one
    (`custom` or `width x height (custom)` may be among them: those are left out).
    """
    if definition.type != "COMBO" or not definition.choices:
        return []
    sized = [c for c in definition.choices if isinstance(c, str) and size_of(c) is not None]
    if len(sized) < 2 or len(sized) * 2 < len(definition.choices):
        return []
    return sized
