"""Converting a UI-format export (what the editor's "Save" writes) to the API format ComfyUI runs.

It follows the rules of the editor's own "Export (API)":

- Subgraphs (`definitions.subgraphs`, nested too) are expanded; an inner node's id is the path of
  subgraph instances to it, `"57:3"` (node 3 inside instance 57). A subgraph input takes the
  instance's link, or else the instance's widget value.
- Frontend-only nodes are resolved and left out: `Reroute` passes its input on, `PrimitiveNode`
  gives its value, a KJNodes `GetNode` leads to the `SetNode` of the same name; notes go.
- A bypassed node (mode 4) passes an input through for each output: the input at the same
  index when its type fits, else the first input of that type. A muted node (mode 2) is left
  out, and so is every node fed only by left-out nodes; other inputs it fed are dropped.
- Widget values (`widgets_values`) become inputs as `widgets` reads them: by place in
  `/object_info` order, defaults for what the export lacks, by kind for an export older than
  its node. The export itself is read by `ui_export`.

A node class `/object_info` lacks is still converted, and reported as a `MissingClass` with what
the export says about where it comes from (`properties.cnr_id`, `aux_id`, `ver`), so a refusal
can say what to install or which ComfyUI is needed.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
import bot.workflows.ui_export as ui
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.ui_export import is_ui_format as is_ui_format  # re-exported
from bot.workflows.ui_export import iter_ui_nodes as iter_ui_nodes  # re-exported
from bot.workflows.ui_export import sort_key as sort_key  # re-exported
from bot.workflows.widgets import WidgetReader

CORE_PACK = "comfy-core"

FRONTEND_ONLY = frozenset(
    {
        "Note",
        "MarkdownNote",
        "Reroute",
        "PrimitiveNode",
        *ui.GETTERS,
        *ui.SETTERS,
        "easy bookmark",
        "PresetText|pysssss",
        *(
            f"{name} (rgthree)"
            for name in (
                "Fast Muter",
                "Fast Bypasser",
                "Fast Groups Muter",
                "Fast Groups Bypasser",
                "Fast Actions Button",
                "Mute / Bypass Relay",
                "Mute / Bypass Repeater",
                "Label",
                "Node Collector",
                "Reroute",
                "Random Unmuter",
                "Bookmark",
            )
        ),
    }
)
"""Node types that exist only in the editor and never reach ComfyUI."""

_MAX_DEPTH = 200


@dataclass(frozen=True)
class MissingClass:
    """A node class the export uses that `/object_info` lacks.

    Attributes:
        class_type: the class.
        nodes: the (converted) ids of the nodes using it.
        pack: the node pack the export names (`properties.cnr_id`; `comfy-core` for core nodes).
        repository: the pack's repository when the export names one (`properties.aux_id`).
        version: the pack's version the export was saved with (`properties.ver`).
    """

    class_type: str
    nodes: tuple[str, ...]
    pack: str | None = None
    repository: str | None = None
    version: str | None = None

    @property
    def is_core(self) -> bool:
        """Whether the class is a ComfyUI core node (so updating ComfyUI brings it)."""
        return self.pack == CORE_PACK


@dataclass(frozen=True)
class Conversion:
    """The result of converting a UI-format export.

    Attributes:
        graph: the API-format graph (node id -> `{"inputs", "class_type", "_meta"}`).
        missing: the classes `/object_info` lacks, in order of first use.
        core_version: the ComfyUI version the export says it was made with, if it says.
        packs: the node packs the export says it uses (`extra.node_versions`), if it says.
        filled: `(node id, input, default)` for each widget the export held no value for.
        realigned: `(node id, input, value by position, value taken)` for each widget of an
            export older than its node whose value was matched by kind (see `align`); input
            None for a stored value no widget takes now.
    """

    graph: dict[str, Any]
    missing: tuple[MissingClass, ...] = ()
    core_version: str | None = None
    packs: tuple[str, ...] = ()
    filled: tuple[tuple[str, str, Any], ...] = ()
    realigned: tuple[tuple[str, str | None, Any, Any], ...] = ()


def _types_fit(given: Any, wanted: Any) -> bool:
    a, b = str(given or "*"), str(wanted or "*")
    if "*" in (a, b) or a == b:
        return True
    return bool({t.strip() for t in a.split(",")} & {t.strip() for t in b.split(",")})


@dataclass
class _Frame:
    """One instance of a scope: the root, or a subgraph instance inside its parent frame."""

    scope: ui.Scope
    path: tuple[str, ...] = ()
    parent: _Frame | None = None
    instance: Mapping[str, Any] | None = None
    widget_values: dict[str, Any] = field(default_factory=dict)

    def node_id(self, node: Mapping[str, Any]) -> str:
        return ":".join((*self.path, str(node.get("id"))))


@dataclass(frozen=True)
class _Value:
    """A literal that stands where a link was (a primitive node, a subgraph widget)."""

    value: Any


@dataclass(frozen=True)
class _Source:
    node_id: str
    slot: int


_GONE = object()
"""A link from a left-out (muted) node: the input is dropped."""


class _Converter:
    def __init__(self, data: Mapping[str, Any], object_info: ObjectInfo) -> None:
        self.object_info = object_info
        self.root = ui.Scope(data)
        self.subgraphs: dict[str, ui.Scope] = {}
        self._collect_definitions(data)
        self.graph: dict[str, Any] = {}
        self.missing: dict[str, dict[str, Any]] = {}
        self.widgets = WidgetReader(object_info)
        self.fed: dict[str, list[Any]] = {}

    def _collect_definitions(self, data: Mapping[str, Any], depth: int = 0) -> None:
        definitions = data.get("definitions")
        if not isinstance(definitions, Mapping) or depth > _MAX_DEPTH:
            return
        for sub in ui.items(definitions.get("subgraphs")):
            if isinstance(sub, Mapping) and isinstance(sub.get("id"), str):
                self.subgraphs.setdefault(sub["id"], ui.Scope(sub))
                self._collect_definitions(sub, depth + 1)

    # --- following links ---------------------------------------------------------------------

    def resolve(self, frame: _Frame, link_id: Any, wanted: str, depth: int = 0) -> Any:
        """Where a link really comes from: a `_Source`, a `_Value`, `_GONE`, or None."""
        if not ui.is_id(link_id) or depth > _MAX_DEPTH:
            return None
        link = frame.scope.links.get(link_id)
        if link is None or not ui.is_id(link.origin):
            return None
        if link.origin == ui.SUBGRAPH_INPUT_NODE:
            return self.resolve_subgraph_input(frame, link.slot, wanted, depth + 1)
        origin = frame.scope.nodes.get(link.origin)
        if origin is None:
            return None
        return self.resolve_output(frame, origin, link.slot, wanted, depth + 1)

    def resolve_subgraph_input(self, frame: _Frame, index: int, wanted: str, depth: int) -> Any:
        if frame.parent is None or frame.instance is None:
            return None
        if not 0 <= index < len(frame.scope.inputs):
            return None
        name = str(frame.scope.inputs[index].get("name", ""))
        slot = self.instance_slot(frame.instance, frame.scope, index)
        if slot is not None and slot.link is not None:
            return self.resolve(frame.parent, slot.link, wanted, depth + 1)
        if name in frame.widget_values:
            return _Value(frame.widget_values[name])
        return None

    def instance_slot(
        self, instance: Mapping[str, Any], scope: ui.Scope, index: int
    ) -> ui.Slot | None:
        """The instance's input for the subgraph input at `index` (matched by name)."""
        name = str(scope.inputs[index].get("name", ""))
        slots = ui.slots(instance)
        named = [s for s in slots if s.name == name]
        if named:
            return named[0]
        return None

    def resolve_output(
        self, frame: _Frame, node: Mapping[str, Any], slot: int, wanted: str, depth: int
    ) -> Any:
        kind = str(node.get("type"))
        mode = node.get("mode")
        if mode == ui.MODE_MUTED:
            return _GONE
        if mode == ui.MODE_BYPASSED:
            return self.resolve_bypass(frame, node, slot, wanted, depth)
        if kind in self.subgraphs:
            inner = self.child_frame(frame, node)
            return self.resolve(inner, inner.scope.output_link(slot), wanted, depth + 1)
        if kind == "Reroute" or kind == "Reroute (rgthree)":
            slots = ui.slots(node)
            return self.resolve(frame, slots[0].link, wanted, depth + 1) if slots else None
        if kind == "PrimitiveNode":
            value = ui.first_value(node)
            return None if value is None else _Value(value)
        if kind in ui.GETTERS:
            setter = frame.scope.setters.get(str(ui.first_value(node)))
            slots = ui.slots(setter) if setter is not None else []
            return self.resolve(frame, slots[0].link, wanted, depth + 1) if slots else None
        if kind in FRONTEND_ONLY:
            return None
        return _Source(frame.node_id(node), slot)

    def bypass_slots(self, frame: _Frame, node: Mapping[str, Any]) -> list[ui.Slot]:
        kind = str(node.get("type"))
        scope = self.subgraphs.get(kind)
        if scope is None:
            return ui.slots(node)
        found = []
        for index, item in enumerate(scope.inputs):
            slot = self.instance_slot(node, scope, index)
            link = slot.link if slot is not None else None
            found.append(
                ui.Slot(str(item.get("name", "")), str(item.get("type") or "*"), link, None)
            )
        return found

    def resolve_bypass(
        self, frame: _Frame, node: Mapping[str, Any], slot: int, wanted: str, depth: int
    ) -> Any:
        inputs = self.bypass_slots(frame, node)
        outputs = ui.items(node.get("outputs"))
        output = outputs[slot] if 0 <= slot < len(outputs) else None
        out_type = str(output.get("type") or "*") if isinstance(output, Mapping) else "*"
        if out_type == "*":
            types = nodeinfo.output_types(self.object_info, str(node.get("type")))
            out_type = types[slot] if 0 <= slot < len(types) else "*"
        index = -1
        if wanted in ("*", ""):
            index = slot if slot < len(inputs) else 0
        elif (
            slot < len(inputs)
            and _types_fit(inputs[slot].type, out_type)
            and _types_fit(inputs[slot].type, wanted)
        ):
            index = slot
        else:
            exact = [i for i, s in enumerate(inputs) if s.type == wanted]
            fitting = [
                i
                for i, s in enumerate(inputs)
                if _types_fit(s.type, out_type) and _types_fit(s.type, wanted)
            ]
            index = (exact or fitting or [-1])[0]
        if not 0 <= index < len(inputs):
            return None
        return self.resolve(frame, inputs[index].link, wanted, depth + 1)

    def promoted(self, scope: ui.Scope, index: int) -> tuple[bool, bool]:
        """Whether a subgraph input shows a widget on its instances, and whether that widget
        is followed by a "control after generate" slot (a seed's)."""
        widget = str(scope.inputs[index].get("type")) in nodeinfo.WIDGET_TYPES
        control = False
        for node, target_slot in scope.input_targets(index):
            slots = ui.slots(node)
            if not 0 <= target_slot < len(slots):
                continue
            slot = slots[target_slot]
            widget = widget or slot.widget is not None
            kind = str(node.get("type"))
            definition = nodeinfo.input_def(self.object_info, kind, slot.widget or slot.name)
            if definition is not None:
                widget = widget or definition.is_widget
                control = control or definition.has_control_widget
        return widget, control

    def child_frame(self, frame: _Frame, instance: Mapping[str, Any]) -> _Frame:
        scope = self.subgraphs[str(instance.get("type"))]
        promoted = []
        for index, item in enumerate(scope.inputs):
            widget, control = self.promoted(scope, index)
            if widget:
                promoted.append((str(item.get("name", "")), control))
        raw = instance.get("widgets_values")
        values: dict[str, Any] = {}
        if isinstance(raw, list):
            # One value per promoted input; older editors also kept a seed's control slot.
            with_controls = len(raw) > len(promoted)
            position = 0
            for name, control in promoted:
                if position < len(raw):
                    values[name] = raw[position]
                position += 1 + (with_controls and control)
        elif isinstance(raw, Mapping):
            values = {n: raw[n] for n, _ in promoted if n in raw}
        return _Frame(scope, (*frame.path, str(instance.get("id"))), frame, instance, values)

    # --- writing nodes -----------------------------------------------------------------------

    def run(self) -> None:
        self.emit(_Frame(self.root), 0)
        self.drop_orphans()

    def emit(self, frame: _Frame, depth: int) -> None:
        if depth > _MAX_DEPTH:
            return
        for node in frame.scope.nodes.values():
            kind = str(node.get("type"))
            if node.get("mode") in (ui.MODE_MUTED, ui.MODE_BYPASSED) or kind in FRONTEND_ONLY:
                continue
            if kind in self.subgraphs:
                self.emit(self.child_frame(frame, node), depth + 1)
                continue
            if nodeinfo.node_def(self.object_info, kind) is None and self.is_decoration(node):
                continue
            self.convert_node(frame, node)

    @staticmethod
    def is_decoration(node: Mapping[str, Any]) -> bool:
        """An unknown node linked to nothing (a label, a note of some pack): never run."""
        if any(s.link is not None for s in ui.slots(node)):
            return False
        return not any(
            isinstance(o, Mapping) and o.get("links") for o in ui.items(node.get("outputs"))
        )

    def convert_node(self, frame: _Frame, node: Mapping[str, Any]) -> None:
        kind = str(node.get("type"))
        node_id = frame.node_id(node)
        known = nodeinfo.node_def(self.object_info, kind) is not None
        if not known:
            self.note_missing(kind, node_id, node)
        inputs: dict[str, Any] = {}
        for name, value in self.widgets.values(node, node_id).items():
            inputs[name] = {"__value__": value} if isinstance(value, list) else value
        fed: list[Any] = []
        for slot in ui.slots(node):
            if slot.link is None:
                continue
            name = slot.widget or slot.name
            found = self.resolve(frame, slot.link, slot.type)
            fed.append(found)
            if isinstance(found, _Value):
                value = found.value
                inputs[name] = {"__value__": value} if isinstance(value, list) else value
            elif isinstance(found, _Source):
                inputs[name] = [found.node_id, found.slot]
            elif found is _GONE:
                inputs.pop(name, None)
        if known:
            order = [d.name for d in nodeinfo.input_defs(self.object_info, kind)]
            inputs = {
                **{n: inputs[n] for n in order if n in inputs},
                **{n: v for n, v in inputs.items() if n not in order},
            }
        title = node.get("title")
        if not isinstance(title, str) or not title:
            title = nodeinfo.display_name(self.object_info, kind)
        self.graph[node_id] = {"inputs": inputs, "class_type": kind, "_meta": {"title": title}}
        self.fed[node_id] = fed

    def note_missing(self, kind: str, node_id: str, node: Mapping[str, Any]) -> None:
        properties = node.get("properties")
        props = properties if isinstance(properties, Mapping) else {}
        entry = self.missing.setdefault(kind, {"nodes": [], "props": {}})
        entry["nodes"].append(node_id)
        for key in ("cnr_id", "aux_id", "ver"):
            value = props.get(key)
            if isinstance(value, str) and value and key not in entry["props"]:
                entry["props"][key] = value

    def drop_orphans(self) -> None:
        """Leave out nodes fed only by left-out nodes, then links to what was left out."""
        changed = True
        while changed:
            changed = False
            for node_id in list(self.graph):
                fed = self.fed.get(node_id, [])
                sources = [f for f in fed if f is not None and not isinstance(f, _Value)]
                if sources and all(
                    f is _GONE or (isinstance(f, _Source) and f.node_id not in self.graph)
                    for f in sources
                ):
                    del self.graph[node_id]
                    changed = True
        for node in self.graph.values():
            for name, value in list(node["inputs"].items()):
                if (
                    isinstance(value, list)
                    and len(value) == 2
                    and isinstance(value[0], str)
                    and value[0] not in self.graph
                ):
                    del node["inputs"][name]
        for kind in list(self.missing):
            nodes = [n for n in self.missing[kind]["nodes"] if n in self.graph]
            if nodes:
                self.missing[kind]["nodes"] = nodes
            else:
                del self.missing[kind]


def _node_versions(data: Mapping[str, Any]) -> Mapping[str, Any]:
    extra = data.get("extra")
    versions = extra.get("node_versions") if isinstance(extra, Mapping) else None
    return versions if isinstance(versions, Mapping) else {}


def convert_ui(data: Mapping[str, Any], object_info: ObjectInfo) -> Conversion:
    """Convert a UI-format export to the API format, as the editor's "Export (API)" does.

    Never fails on unknown classes: they are converted as well as the export allows and listed
    in `Conversion.missing`.

    Args:
        data: the parsed UI-format JSON.
        object_info: ComfyUI's node definitions.
    """
    converter = _Converter(data, object_info)
    converter.run()
    graph = {k: converter.graph[k] for k in sorted(converter.graph, key=_order)}
    missing = tuple(
        MissingClass(
            class_type=kind,
            nodes=tuple(sorted(entry["nodes"], key=_order)),
            pack=entry["props"].get("cnr_id"),
            repository=entry["props"].get("aux_id"),
            version=entry["props"].get("ver"),
        )
        for kind, entry in converter.missing.items()
    )
    versions = _node_versions(data)
    core = versions.get(CORE_PACK)
    return Conversion(
        graph=graph,
        missing=missing,
        core_version=core if isinstance(core, str) else None,
        packs=tuple(str(p) for p in versions),
        filled=tuple(
            (n, i, v)
            for n, i, v in converter.widgets.filled
            if n in graph and graph[n]["inputs"].get(i) == v
        ),
        realigned=tuple(r for r in converter.widgets.realigned if r[0] in graph),
    )


def _order(node_id: str) -> tuple[tuple[int, ...], str]:
    return (ui.sort_key(node_id), node_id)
