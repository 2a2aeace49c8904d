"""Loading a graph the way ComfyUI's editor does: missing inputs filled, legacy values migrated.

ComfyUI's editor, opening an old file, gives every widget the node's current definition has
and the file lacks its default; ComfyUI's API does not, and refuses the graph ("required input
'denoise' is missing"). So a ComfyUI update that adds an input breaks every API-format export
made before it. This module does what the editor does, against the `/object_info` of the
ComfyUI that will run the graph, and says what it changed:

- a required widget input the graph lacks gets the definition's default (a list's first
  choice when it has none): "filled `SDTurboScheduler.denoise` with 1.0";
- values whose meaning the definition makes certain are migrated: `0`/`1`,
  `"enable"`/`"disable"` (or true/false, on/off, yes/no) and the switch's own labels
  (`label_on`/`label_off`: `"populate"`, `"fixed"`) for a true/false input, true/false
  for an `enable`/`disable` list, numbers given as text, whole numbers given as `20.0`, a
  list value spelt with `\\` folders or in another case than the list's one, a seed of `-1`
  (random, in older front ends) and a blank box (`0` or nothing below the minimum) replaced
  by the default.

Anything else (a value out of range, a name not in a list) is left for `validate` to name.
Nothing here is silent: every change is a `Repair`, shown in the import preview, reported by
`comfycord check`, and logged when the engine applies it at run time.
"""

from __future__ import annotations

import random
from collections.abc import Collection, Mapping
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
from bot.workflows.graph import describe_node, is_link, sort_key
from bot.workflows.nodeinfo import InputDef, ObjectInfo, is_number
from bot.workflows.problems import Repair

__all__ = ["Repair", "repair_graph"]

_TRUE = frozenset({"enable", "enabled", "true", "on", "yes"})
_FALSE = frozenset({"disable", "disabled", "false", "off", "no"})
_SEED_NAMES = ("seed", "noise_seed")
_SEED_TOP = 2**32 - 1


def _parse_number(text: str, kind: str) -> int | float | None:
    try:
        number = float(text.strip())
    except ValueError:
        return None
    if kind == "INT":
        return int(number) if number.is_integer() else None
    return number


def _is_seed(definition: InputDef) -> bool:
    return definition.type == "INT" and (
        definition.name in _SEED_NAMES or bool(definition.options.get("control_after_generate"))
    )


def _migrate_bool(value: Any) -> tuple[Any, str] | None:
    if is_number(value) and value in (0, 1):
        return bool(value), "a number where true/false is now expected"
    if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
        return value.strip().lower() in _TRUE, "a word that became true/false"
    return None


def _migrate_combo(definition: InputDef, value: Any) -> tuple[Any, str] | None:
    choices = definition.choices
    if not choices or value in choices:
        return None
    if isinstance(value, bool):
        words = {str(c).lower(): c for c in choices if isinstance(c, str)}
        if {"enable", "disable"} <= set(words):
            return words["enable" if value else "disable"], "true/false that became enable/disable"
        return None
    if is_number(value):
        as_text = [c for c in choices if isinstance(c, str) and _parse_number(c, "FLOAT") == value]
        return (as_text[0], "a number given for a name in a list") if len(as_text) == 1 else None
    if not isinstance(value, str):
        return None
    slashed = value.replace("\\", "/")
    if slashed != value and slashed in choices:
        return slashed, "a Windows folder separator"
    folded = [c for c in choices if isinstance(c, str) and c.casefold() == value.casefold()]
    if len(folded) == 1:
        return folded[0], "spelt in another case than ComfyUI's list"
    return None


def _migrate_number(definition: InputDef, value: Any) -> tuple[Any, str] | None:
    kind = definition.type
    low = definition.minimum
    if isinstance(value, str):
        parsed = _parse_number(value, kind)
        return (parsed, "a number given as text") if parsed is not None else None
    if kind == "INT" and isinstance(value, float) and value.is_integer():
        return int(value), "a whole number given as a decimal"
    if not is_number(value) or low is None or value >= low:
        return None
    if _is_seed(definition) and value == -1:
        top = definition.maximum
        high = int(min(top, _SEED_TOP)) if top is not None else _SEED_TOP
        return random.randint(int(low), high), "a seed of -1 meant random"
    default = definition.default
    if value == 0 and is_number(default) and default >= low:
        return default, "a blank box (0 is below its minimum)"
    return None


def migrate_value(definition: InputDef, value: Any) -> tuple[Any, str] | None:
    """The value a legacy `value` of this input means today, and why; None if it is fine.

    Only migrations the definition makes certain are made (see the module's docstring).
    """
    if value is None:
        default = definition.default
        return (default, "a blank box") if default is not None else None
    if definition.type == "BOOLEAN":
        if isinstance(value, bool):
            return None
        for option, meant in (("label_on", True), ("label_off", False)):
            label = definition.options.get(option)
            if isinstance(label, str) and isinstance(value, str) and value == label:
                return meant, f"the switch's label ('{label}'), from when it was a list"
        return _migrate_bool(value)
    if definition.type == "COMBO":
        return _migrate_combo(definition, value)
    if definition.type in ("INT", "FLOAT"):
        return _migrate_number(definition, value)
    if definition.type == "STRING" and is_number(value) and not isinstance(value, bool):
        return str(value), "a number given where text is expected"
    return None


def _fillable(definition: InputDef) -> bool:
    return (
        definition.required
        and definition.type in nodeinfo.WIDGET_TYPES
        and not definition.options.get("forceInput", False)
    )


def repair_graph(
    graph: Mapping[str, Any],
    object_info: ObjectInfo,
    *,
    keep: Collection[tuple[str, str]] = (),
) -> tuple[dict[str, Any], list[Repair]]:
    """Fill a graph's missing inputs and migrate its legacy values, as the editor would.

    Args:
        graph: an API-format graph (not changed).
        object_info: the `/object_info` of the ComfyUI that will run it.
        keep: `(node id, input)` pairs left alone (a param writes them on every run).

    Returns:
        The repaired graph (the same nodes, copied where changed) and each change, in node
        order. Nodes of classes ComfyUI lacks are left as they are.
    """
    repaired: dict[str, Any] = dict(graph)
    repairs: list[Repair] = []
    for node_id in sorted(graph, key=sort_key):
        node = graph[node_id]
        class_type = str(node.get("class_type", ""))
        inputs = node.get("inputs")
        if not isinstance(inputs, Mapping) or nodeinfo.node_def(object_info, class_type) is None:
            continue
        changed: dict[str, Any] = {}
        for definition in nodeinfo.input_defs(object_info, class_type):
            name = definition.name
            if (node_id, name) in keep or definition.type not in nodeinfo.WIDGET_TYPES:
                continue
            if name not in inputs:
                new = definition.default if _fillable(definition) else None
                if new is not None:
                    changed[name] = (None, new, "filled")
                continue
            value = inputs[name]
            if is_link(value):
                continue
            migrated = migrate_value(definition, value)
            if migrated is not None:
                changed[name] = (value, *migrated)
        if not changed:
            continue
        new_inputs = dict(inputs)
        described = describe_node(graph, node_id)
        for name, (old, new, why) in changed.items():
            new_inputs[name] = new
            repairs.append(Repair(node_id, described, class_type, name, old, new, why))
        repaired[node_id] = {**node, "inputs": new_inputs}
    return repaired, repairs
