"""A UI node's stored widget values as its inputs: by place, or by kind for an older export.

The editor stores a node's widget values as a list in widget order, with one more slot after a
seed ("control after generate") and after an upload button; a widget without a stored value
gets its definition's default (`WidgetReader`). Without the class in `/object_info`, the widget
names come from the node's own `inputs[].widget`.

A UI-format export stores a node's widget values as a bare list, in the order the node's widgets
had when it was saved. When a pack later adds, removes or reorders widgets, the editor still
hands the list out by position, and the values land on the wrong inputs (a file name prefix in a
delimiter box, `100` in a number padding that stops at 9). When the list's length no longer fits
the node and the values by position do not fit their inputs, the values are matched in order to
the inputs they can be: a name from a list to that list, a number within an input's range to that
input, text to a text box, true/false to a switch. The best match keeps the order, leaves the
fewest values out (a "control after generate" word a node no longer has costs nothing), and
prefers exact fits and values equal to an input's default. The inputs given no value keep their
defaults. Each change is reported, so a person can check it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
import bot.workflows.ui_export as ui
from bot.workflows.nodeinfo import InputDef, ObjectInfo, is_number

CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})
UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload", "file_upload")
_UPLOAD_VALUES = frozenset({"image", "video", "audio", "file"})
_BOOL_WORDS = frozenset({"true", "false", "enable", "disable", "on", "off", "yes", "no"})
_MODEL_ENDINGS = (".safetensors", ".sft", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".onnx")
_MAX_DROPPED = 1
"""Values other than control words an alignment may leave out."""

_IN_PLACE = 0.1
"""A value taken where its position puts it: among equal matches, the one nearest the list."""
_SKIP_CONTROL = -0.25
_SKIP_VALUE = -3.0
_NO_DEFAULT = -6.0


@dataclass(frozen=True)
class Alignment:
    """Which stored value each widget takes.

    Attributes:
        values: widget name -> the stored value it takes (widgets given none are absent).
        dropped: the stored values no widget takes, in order.
    """

    values: dict[str, Any]
    dropped: tuple[Any, ...]


def fit(definition: InputDef, value: Any) -> float:
    """How well `value` fits the widget: 0 when it can't be its value, more the surer the fit."""
    default = definition.default
    bonus = 1.0 if value == default and type(value) is type(default) else 0.0
    kind = definition.type
    if kind == "COMBO":
        choices = definition.choices
        if choices is None:
            return 1.0 if isinstance(value, str) else 0.0
        if value in choices:
            return 4.0 + bonus
        return 1.0 if _model_file(value) and any(_model_file(c) for c in choices) else 0.0
    if kind in ("INT", "FLOAT"):
        if not is_number(value) or not math.isfinite(value):
            return 0.0
        if kind == "INT" and float(value) != int(value):
            return 0.0
        low, high = definition.minimum, definition.maximum
        if (low is not None and value < low) or (high is not None and value > high):
            return 0.0
        return 2.0 + bonus
    if kind == "BOOLEAN":
        if isinstance(value, bool):
            return 3.0 + bonus
        return 0.5 if isinstance(value, str) and value.strip().lower() in _BOOL_WORDS else 0.0
    if kind == "STRING":
        return 1.0 + bonus if isinstance(value, str) else 0.0
    return 0.5


def _model_file(value: Any) -> bool:
    return isinstance(value, str) and value.lower().endswith(_MODEL_ENDINGS)


def fits_in_place(widgets: Sequence[InputDef], stored: Sequence[Any]) -> bool:
    """Whether the values by position (a control or upload slot after its widget) all fit."""
    position = 0
    for definition in widgets:
        if position >= len(stored):
            return True
        if fit(definition, stored[position]) <= 0 and stored[position] is not None:
            return False
        position += 1 + _extra_slots(definition)
    return True


def slots_expected(widgets: Sequence[InputDef]) -> int:
    """How many values a current export of the node stores."""
    return sum(1 + _extra_slots(d) for d in widgets)


def _extra_slots(definition: InputDef) -> int:
    upload = any(definition.options.get(o) for o in UPLOAD_OPTIONS)
    return int(definition.has_control_widget) + int(upload)


def _follows(definition: InputDef, value: Any) -> bool:
    """Whether `value` is the control or upload slot the editor stores after this widget."""
    if definition.has_control_widget and _control(value):
        return True
    upload = any(definition.options.get(o) for o in UPLOAD_OPTIONS)
    return upload and (value is None or (isinstance(value, str) and value in _UPLOAD_VALUES))


def _control(value: Any) -> bool:
    return isinstance(value, str) and value in CONTROL_VALUES


def align(widgets: Sequence[InputDef], stored: Sequence[Any]) -> Alignment | None:
    """The best order-keeping match of `stored` values to `widgets`, or None if there is none.

    Args:
        widgets: the node's widget inputs, in order.
        stored: the export's `widgets_values`.
    """
    m, n = len(stored), len(widgets)
    # best[i][j] = (score, dropped) of matching stored[:i] to widgets[:j]; back holds the move.
    minus = (-math.inf, 0)
    best = [[minus] * (n + 1) for _ in range(m + 1)]
    back: list[list[tuple[str, int, int] | None]] = [[None] * (n + 1) for _ in range(m + 1)]
    best[0][0] = (0.0, 0)
    places = [0]
    for definition in widgets:
        places.append(places[-1] + 1 + _extra_slots(definition))
    for i in range(m + 1):
        for j in range(n + 1):
            score, dropped = best[i][j]
            if score == -math.inf:
                continue
            moves: list[tuple[str, int, int, float, int]] = []
            if j < n:
                default = _NO_DEFAULT if widgets[j].default is None else 0.0
                moves.append(("default", i, j + 1, default, 0))
            if i < m:
                control = _control(stored[i])
                cost = _SKIP_CONTROL if control else _SKIP_VALUE
                moves.append(("drop", i + 1, j, cost, 0 if control else 1))
            if i < m and j < n:
                gain = fit(widgets[j], stored[i])
                if gain > 0:
                    gain += _IN_PLACE if places[j] == i else 0.0
                    moves.append(("take", i + 1, j + 1, gain, 0))
                    if i + 1 < m and _follows(widgets[j], stored[i + 1]):
                        moves.append(("take+", i + 2, j + 1, gain, 0))
            for move, ni, nj, gain, more in moves:
                candidate = (score + gain, dropped + more)
                if candidate[1] <= _MAX_DROPPED and candidate[0] > best[ni][nj][0]:
                    best[ni][nj] = candidate
                    back[ni][nj] = (move, i, j)
    if best[m][n][0] == -math.inf:
        return None
    values: dict[str, Any] = {}
    dropped_values: list[Any] = []
    i, j = m, n
    while (i, j) != (0, 0):
        step = back[i][j]
        if step is None:
            return None
        move, pi, pj = step
        if move.startswith("take"):
            values[widgets[pj].name] = stored[pi]
        elif move == "drop":
            dropped_values.append(stored[pi])
        i, j = pi, pj
    return Alignment(values=values, dropped=tuple(reversed(dropped_values)))


class WidgetReader:
    """Reads the widget values of one export's nodes, noting each default it gave and each
    value it matched by kind (`filled`, `realigned`), so the conversion can say so."""

    def __init__(self, object_info: ObjectInfo) -> None:
        self.object_info = object_info
        self.filled: list[tuple[str, str, Any]] = []
        self.realigned: list[tuple[str, str | None, Any, Any]] = []

    def names(self, node: Mapping[str, Any]) -> list[tuple[str, int, Any]]:
        """`(name, slots taken in widgets_values, default)` for each widget, in order."""
        kind = str(node.get("type"))
        if nodeinfo.node_def(self.object_info, kind) is not None:
            result = []
            for definition in nodeinfo.input_defs(self.object_info, kind):
                if not definition.is_widget:
                    continue
                taken = 1 + definition.has_control_widget
                taken += any(definition.options.get(o) for o in UPLOAD_OPTIONS)
                result.append((definition.name, taken, definition.default))
            return result
        names = [s.widget for s in ui.slots(node) if s.widget]
        return [(n, 2 if n in ("seed", "noise_seed") else 1, None) for n in names]

    def values(self, node: Mapping[str, Any], node_id: str) -> dict[str, Any]:
        """The widgets' values by name; a widget the export has no value for gets its default.

        Each default given is noted in `filled`, so the conversion says what it added.
        """
        raw = node.get("widgets_values")
        widgets = self.names(node)
        values: dict[str, Any] = {}
        if isinstance(raw, Mapping):
            for name, _, default in widgets:
                if name in raw:
                    values[name] = raw[name]
                elif default is not None:
                    values[name] = default
                    self.filled.append((node_id, name, default))
            return values
        stored = raw if isinstance(raw, list) else []
        kind = str(node.get("type"))
        known = nodeinfo.node_def(self.object_info, kind) is not None
        if known:
            defs = [d for d in nodeinfo.input_defs(self.object_info, kind) if d.is_widget]
            if len(stored) != slots_expected(defs) and not fits_in_place(defs, stored):
                aligned = self.aligned(node_id, defs, stored)
                if aligned is not None:
                    return aligned
        position = 0
        for name, taken, default in widgets:
            if position < len(stored):
                values[name] = stored[position]
                if not known and taken == 2:
                    # Unknown class: skip a control slot only when it looks like one.
                    nxt = stored[position + 1] if position + 1 < len(stored) else None
                    taken = 2 if nxt in CONTROL_VALUES else 1
            elif default is not None:
                values[name] = default
                self.filled.append((node_id, name, default))
            position += taken
        return values

    def aligned(
        self, node_id: str, defs: list[InputDef], stored: list[Any]
    ) -> dict[str, Any] | None:
        """The values of an export older than the node's widgets, matched to them by kind.

        Each value that lands elsewhere than by position is noted in `realigned`, each value
        left out too (input None), and each widget given its default in `filled`.
        """
        alignment = align(defs, stored)
        if alignment is None:
            return None
        by_place: dict[str, Any] = {}
        position = 0
        for definition in defs:
            if position < len(stored):
                by_place[definition.name] = stored[position]
            position += 1 + definition.has_control_widget
            position += any(definition.options.get(o) for o in UPLOAD_OPTIONS)
        values: dict[str, Any] = {}
        for definition in defs:
            name = definition.name
            if name in alignment.values:
                values[name] = alignment.values[name]
                if name not in by_place or by_place[name] != values[name]:
                    self.realigned.append((node_id, name, by_place.get(name), values[name]))
            elif (default := definition.default) is not None:
                values[name] = default
                self.filled.append((node_id, name, default))
        self.realigned.extend((node_id, None, value, None) for value in alignment.dropped)
        return values
