"""Workflow graphs: loading API-format JSON, converting UI-format exports, finding nodes.

ComfyUI runs the *API format*: `{node_id: {"class_type", "inputs", "_meta": {"title"}}}`, where
an input is a literal value or a link `[source_node_id, output_slot]`. The editor's ordinary
"Save"/"Export" writes the *UI format* instead (`nodes` + `links`, each node's widget values as a
bare list); `ui_to_api` converts it with the help of `/object_info`, which gives the widget order.
"""

from __future__ import annotations

import copy
import difflib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

from bot.errors import WorkflowError
from bot.workflows import nodeinfo
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.problems import InvalidWorkflow, Problem, display_path

Graph = dict[str, Any]
"""An API-format graph: node id -> `{"class_type", "inputs", "_meta"}`."""

# Frontend-only nodes: never sent to ComfyUI.
VIRTUAL_NODES = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})
MODE_MUTED = 2
MODE_BYPASSED = 4
CONTROL_VALUES = frozenset({"fixed", "increment", "decrement", "randomize"})


def is_link(value: object) -> TypeGuard[list[Any]]:
    """Whether an input value is a link `[source_node_id, output_slot]`."""
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str | int)
        and not isinstance(value[0], bool)
        and isinstance(value[1], int)
        and not isinstance(value[1], bool)
    )


def links(graph: Mapping[str, Any], node_id: str) -> Iterator[tuple[str, str, int]]:
    """Yield `(input_name, source_node_id, slot)` for each linked input of a node."""
    for name, value in graph[node_id]["inputs"].items():
        if is_link(value):
            yield name, str(value[0]), value[1]


def node_title(node: Mapping[str, Any]) -> str | None:
    """Return a node's `_meta.title`, if it has one."""
    meta = node.get("_meta")
    title = meta.get("title") if isinstance(meta, Mapping) else None
    return title if isinstance(title, str) else None


def describe_node(graph: Mapping[str, Any], node_id: str) -> str:
    """Return `3 (KSampler)` or `6 "Positive" (CLIPTextEncode)`, for messages."""
    node = graph[node_id]
    title = node_title(node)
    class_type = node.get("class_type", "?")
    if title and title != class_type:
        return f'{node_id} "{title}" ({class_type})'
    return f"{node_id} ({class_type})"


def sort_key(node_id: str) -> tuple[int, int | str]:
    """Order node ids numerically where they are numbers (`2` before `10`)."""
    return (0, int(node_id)) if node_id.isdigit() else (1, node_id)


def resolve_node(graph: Mapping[str, Any], ref: str | int) -> str:
    """Find the node a YAML `node:` refers to.

    Tried in order: a node id, a `_meta.title`, a `class_type` that occurs exactly once.

    Args:
        graph: an API-format graph.
        ref: the id, title or class type.

    Returns:
        The node's id.

    Raises:
        WorkflowError: nothing matches, or a title/class type matches several nodes; the
            message lists the candidates.
    """
    text = str(ref)
    if text in graph:
        return text
    ids = sorted(graph, key=sort_key)
    for what, matches in (
        ("title", [i for i in ids if node_title(graph[i]) == text]),
        ("class_type", [i for i in ids if graph[i].get("class_type") == text]),
    ):
        if len(matches) == 1:
            return matches[0]
        if matches:
            listed = ", ".join(describe_node(graph, i) for i in matches)
            raise WorkflowError(
                f"node '{text}' is ambiguous: {len(matches)} nodes have that {what} ({listed}); "
                "use a node id or give the node a unique title"
            )
    names = {
        *ids,
        *(t for i in ids if (t := node_title(graph[i]))),
        *(graph[i]["class_type"] for i in ids),
    }
    close = difflib.get_close_matches(text, sorted(names), n=1)
    hint = f" Did you mean '{close[0]}'?" if close else ""
    listed = ", ".join(describe_node(graph, i) for i in ids[:20])
    more = f" and {len(ids) - 20} more" if len(ids) > 20 else ""
    raise WorkflowError(
        f"no node '{text}' (by id, title or class_type).{hint} Nodes: {listed}{more}"
    )


def is_ui_format(data: object) -> bool:
    """Whether parsed JSON is a UI-format export (`nodes` + `links`) rather than API format."""
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list) and "links" in data


def parse_api_graph(data: object, source: str) -> Graph:
    """Check the shape of an API-format graph and return a normalised deep copy.

    Node ids and link sources become strings; `inputs` defaults to `{}`.

    Raises:
        InvalidWorkflow: the data is not an API-format graph (each problem names the node).
    """
    if not isinstance(data, Mapping) or not data:
        raise InvalidWorkflow(
            [Problem(source, "", "is not a workflow graph (expected an object of nodes)", "graph")]
        )
    problems: list[Problem] = []
    graph: Graph = {}
    for raw_id, raw_node in data.items():
        node_id = str(raw_id)
        key = f"node {node_id}"
        if not isinstance(raw_node, Mapping) or not isinstance(raw_node.get("class_type"), str):
            problems.append(Problem(source, key, "is not a node: it has no class_type", "graph"))
            continue
        inputs = raw_node.get("inputs", {})
        if not isinstance(inputs, Mapping):
            problems.append(Problem(source, key, "`inputs` must be an object", "graph"))
            continue
        node: dict[str, Any] = {
            "class_type": raw_node["class_type"],
            "inputs": {
                str(name): [str(value[0]), value[1]] if is_link(value) else copy.deepcopy(value)
                for name, value in inputs.items()
            },
        }
        for extra, value in raw_node.items():
            if extra not in ("class_type", "inputs"):
                node[str(extra)] = copy.deepcopy(value)
        graph[node_id] = node
    if problems:
        raise InvalidWorkflow(problems)
    return graph


def load_graph(path: Path, object_info: ObjectInfo | None = None) -> Graph:
    """Read a graph file in API or UI format and return it in API format.

    Args:
        path: the `.json` file.
        object_info: ComfyUI's node definitions, needed only to convert a UI-format export.

    Raises:
        InvalidWorkflow: the file is missing, not JSON, or not a graph (or a UI-format graph
            without `object_info`, or one using unknown nodes).
    """
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InvalidWorkflow([Problem(source, "", "file not found", "io")]) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidWorkflow([Problem(source, "", f"can't be read: {exc}", "io")]) from None
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidWorkflow(
            [Problem(source, f"line {exc.lineno}", f"not valid JSON: {exc.msg}", "graph")]
        ) from None
    if is_ui_format(data):
        if object_info is None:
            raise InvalidWorkflow(
                [
                    Problem(
                        source,
                        "",
                        "is a UI-format export; converting it needs ComfyUI's node definitions. "
                        "Export it with 'Export (API)' or load it while ComfyUI is reachable",
                        "graph",
                    )
                ]
            )
        data = ui_to_api(data, object_info, source=source)
    return parse_api_graph(data, source)


# --- UI format -> API format -------------------------------------------------------------------


class _UiGraph:
    """A UI-format export, indexed for conversion."""

    def __init__(self, data: Mapping[str, Any], object_info: ObjectInfo, source: str) -> None:
        self.object_info = object_info
        self.source = source
        self.nodes: dict[int | str, Mapping[str, Any]] = {}
        for node in data["nodes"]:
            if isinstance(node, Mapping) and "id" in node:
                self.nodes[node["id"]] = node
        self.links: dict[int | str, tuple[int | str, int]] = {}
        for link in data.get("links") or []:
            if isinstance(link, Sequence) and len(link) >= 5:
                self.links[link[0]] = (link[1], int(link[2]))
            elif isinstance(link, Mapping) and "id" in link:
                self.links[link["id"]] = (link["origin_id"], int(link["origin_slot"]))

    def fail(self, node: Mapping[str, Any], message: str) -> WorkflowError:
        key = f"node {node.get('id')} ({node.get('type')})"
        return InvalidWorkflow([Problem(self.source, key, message, "graph")])

    def is_dropped(self, node: Mapping[str, Any]) -> bool:
        return node.get("mode") == MODE_MUTED or node.get("type") in VIRTUAL_NODES

    def input_link(self, node: Mapping[str, Any], name: str | None = None) -> Any:
        for index, item in enumerate(node.get("inputs") or []):
            if not isinstance(item, Mapping):
                continue
            if (name is None and index == 0) or item.get("name") == name:
                return item.get("link")
        return None

    def source_of(self, link_id: Any, depth: int = 0) -> tuple[str, int] | _Literal | None:
        """Follow a link through reroutes and bypassed nodes.

        Returns `(node_id, slot)` for a real node, `_Literal(value)` for a primitive node's
        value, or None when the link leads nowhere (a muted node, a dangling link).
        """
        if link_id is None or link_id not in self.links or depth > 100:
            return None
        origin_id, slot = self.links[link_id]
        origin = self.nodes.get(origin_id)
        if origin is None:
            return None
        kind = origin.get("type")
        if kind == "Reroute":
            return self.source_of(self.input_link(origin), depth + 1)
        if kind == "PrimitiveNode":
            values = origin.get("widgets_values")
            return _Literal(values[0]) if isinstance(values, list) and values else None
        if origin.get("mode") == MODE_BYPASSED:
            return self.source_of(self.bypass_input(origin, slot), depth + 1)
        if self.is_dropped(origin):
            return None
        return (str(origin_id), slot)

    def bypass_input(self, node: Mapping[str, Any], slot: int) -> Any:
        """The link a bypassed node passes through to its output `slot`: same type, in order."""
        outputs = node.get("outputs") or []
        wanted = None
        if slot < len(outputs) and isinstance(outputs[slot], Mapping):
            wanted = outputs[slot].get("type")
        if wanted is None:
            types = nodeinfo.output_types(self.object_info, str(node.get("type")))
            wanted = types[slot] if slot < len(types) else None
        for item in node.get("inputs") or []:
            if isinstance(item, Mapping) and item.get("type") == wanted and item.get("link"):
                return item.get("link")
        return None

    def widget_values(
        self, node: Mapping[str, Any], widgets: list[nodeinfo.InputDef]
    ) -> dict[str, Any]:
        raw = node.get("widgets_values")
        if isinstance(raw, Mapping):
            return {w.name: raw[w.name] for w in widgets if w.name in raw}
        if not isinstance(raw, list):
            return {}
        values: dict[str, Any] = {}
        position = 0
        for widget in widgets:
            if position >= len(raw):
                break
            values[widget.name] = raw[position]
            position += 1
            if (
                widget.has_control_widget
                and position < len(raw)
                and isinstance(raw[position], str)
                and raw[position] in CONTROL_VALUES
            ):
                position += 1  # the "control after generate" widget the UI adds
        return values

    def convert_node(self, node: Mapping[str, Any]) -> dict[str, Any]:
        class_type = str(node.get("type"))
        if nodeinfo.node_def(self.object_info, class_type) is None:
            raise self.fail(
                node,
                f"'{class_type}' is not a node class this ComfyUI knows; install the custom "
                "node, or export the workflow in API format",
            )
        defs = nodeinfo.input_defs(self.object_info, class_type)
        inputs: dict[str, Any] = {}
        values = self.widget_values(node, [d for d in defs if d.is_widget])
        linked = {
            str(item.get("name")): item.get("link")
            for item in node.get("inputs") or []
            if isinstance(item, Mapping) and item.get("link") is not None
        }
        for definition in defs:
            link = linked.get(definition.name)
            if link is not None:
                found = self.source_of(link)
                if isinstance(found, _Literal):
                    inputs[definition.name] = found.value
                    continue
                if found is not None:
                    inputs[definition.name] = list(found)
                    continue
            if definition.name in values:
                inputs[definition.name] = values[definition.name]
        title = node.get("title")
        if not isinstance(title, str) or not title:
            title = nodeinfo.display_name(self.object_info, class_type)
        return {"inputs": inputs, "class_type": class_type, "_meta": {"title": title}}


class _Literal:
    """A value coming from a frontend-only primitive node."""

    def __init__(self, value: Any) -> None:
        self.value = value


def ui_to_api(data: Mapping[str, Any], object_info: ObjectInfo, *, source: str = "graph") -> Graph:
    """Convert a UI-format export to the API format ComfyUI runs.

    Widget values are matched to inputs in `/object_info` order, skipping the extra
    "control after generate" value the UI keeps after seeds. Links become
    `[source_id, slot]`; reroutes are followed, bypassed nodes are passed through, and notes,
    primitive nodes and muted nodes are left out.

    Args:
        data: the parsed UI-format JSON.
        object_info: ComfyUI's node definitions.
        source: the file name, for messages.

    Raises:
        InvalidWorkflow: a node's class is not known to this ComfyUI.
    """
    ui = _UiGraph(data, object_info, source)
    graph: Graph = {}
    for node_id in sorted(ui.nodes, key=lambda i: sort_key(str(i))):
        node = ui.nodes[node_id]
        if ui.is_dropped(node) or node.get("mode") == MODE_BYPASSED:
            continue
        graph[str(node_id)] = ui.convert_node(node)
    return graph
