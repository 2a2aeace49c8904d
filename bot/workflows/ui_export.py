"""Reading a UI-format export (what the editor's "Save" writes): its levels, links and inputs.

A level is the root graph or one subgraph definition (`Scope`): its nodes by id, its links
(both the list form `[id, origin, slot, target, slot, type]` and the object form of newer
exports), a subgraph's own inputs and outputs, and the named setters of KJNodes-style
`SetNode`s. Everything read from the file is checked for its type first: an export is outside
input, and a value of the wrong kind reads as absent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

MODE_MUTED = 2
MODE_BYPASSED = 4
SUBGRAPH_INPUT_NODE = -10
SUBGRAPH_OUTPUT_NODE = -20
GETTERS = frozenset({"GetNode", "easy getNode"})
SETTERS = frozenset({"SetNode", "easy setNode"})


def is_ui_format(data: object) -> bool:
    """Whether parsed JSON is a UI-format export (`nodes` + `links`) rather than API format."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def sort_key(node_id: str) -> tuple[int, ...]:
    """Order node ids numerically, path by path (`2` before `10`, `57` before `57:3`)."""
    parts = node_id.split(":")
    if all(p.isdigit() for p in parts):
        return (0, *(int(p) for p in parts))
    return (1,)


@dataclass(frozen=True)
class Link:
    """A link of the export: from an origin node's output slot to a target's input slot."""

    origin: Any
    slot: int
    target: Any = None
    target_slot: int = 0


@dataclass(frozen=True)
class Slot:
    """One input of a node as the export lists it."""

    name: str
    type: str
    link: Any
    widget: str | None


class Scope:
    """One graph level: the root, or a subgraph definition."""

    def __init__(self, data: Mapping[str, Any]) -> None:
        self.data = data
        self.nodes: dict[Any, Mapping[str, Any]] = {}
        for node in items(data.get("nodes")):
            if isinstance(node, Mapping) and is_id(node.get("id")):
                self.nodes[node["id"]] = node
        self.links: dict[Any, Link] = {}
        for link in items(data.get("links")):
            if isinstance(link, list) and len(link) >= 5 and is_id(link[0]):
                self.links[link[0]] = Link(link[1], to_int(link[2]), link[3], to_int(link[4]))
            elif isinstance(link, Mapping) and is_id(link.get("id")):
                self.links[link["id"]] = Link(
                    link.get("origin_id"),
                    to_int(link.get("origin_slot")),
                    link.get("target_id"),
                    to_int(link.get("target_slot")),
                )
        self.inputs: list[Mapping[str, Any]] = [
            i for i in items(data.get("inputs")) if isinstance(i, Mapping)
        ]
        self.outputs: list[Mapping[str, Any]] = [
            o for o in items(data.get("outputs")) if isinstance(o, Mapping)
        ]
        self.setters: dict[str, Mapping[str, Any]] = {}
        for node in self.nodes.values():
            if str(node.get("type")) in SETTERS and node.get("mode") != MODE_MUTED:
                name = first_value(node)
                if isinstance(name, str):
                    self.setters.setdefault(name, node)

    def input_targets(self, index: int) -> list[tuple[Mapping[str, Any], int]]:
        """The inner nodes (and their input slots) the subgraph's input `index` feeds."""
        found = []
        for link_id in items(self.inputs[index].get("linkIds")):
            link = self.links.get(link_id) if is_id(link_id) else None
            node = self.nodes.get(link.target) if link and is_id(link.target) else None
            if link is not None and node is not None:
                found.append((node, link.target_slot))
        return found

    def output_link(self, slot: int) -> Any:
        """The inner link that feeds the subgraph's output `slot`."""
        if 0 <= slot < len(self.outputs):
            ids = items(self.outputs[slot].get("linkIds"))
            if ids:
                return ids[0]
        return None


def items(value: Any) -> list[Any]:
    """A list from the export, or an empty one when it holds something else."""
    return value if isinstance(value, list) else []


def is_id(value: Any) -> bool:
    """Whether a value can be a node or link id (a number or a string)."""
    return isinstance(value, int | str) and not isinstance(value, bool)


def to_int(value: Any) -> int:
    """A slot number from the export; 0 when it is none."""
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def first_value(node: Mapping[str, Any]) -> Any:
    """A node's first widget value (a setter's or getter's name), if any."""
    values = node.get("widgets_values")
    if isinstance(values, list) and values:
        return values[0]
    return None


def slots(node: Mapping[str, Any]) -> list[Slot]:
    """The inputs a node of the export lists, in order."""
    found = []
    for item in items(node.get("inputs")):
        if not isinstance(item, Mapping):
            continue
        widget = item.get("widget")
        found.append(
            Slot(
                name=str(item.get("name", "")),
                type=str(item.get("type") or "*"),
                link=item.get("link"),
                widget=str(widget.get("name")) if isinstance(widget, Mapping) else None,
            )
        )
    return found


def iter_ui_nodes(data: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    """Every node of a UI-format export, those inside subgraph definitions included."""
    yield from (n for n in items(data.get("nodes")) if isinstance(n, Mapping))
    definitions = data.get("definitions")
    if isinstance(definitions, Mapping):
        for sub in items(definitions.get("subgraphs")):
            if isinstance(sub, Mapping):
                yield from iter_ui_nodes(sub)
