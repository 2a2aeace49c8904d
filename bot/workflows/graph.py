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
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any, TypeGuard

from bot.errors import WorkflowError
from bot.workflows.convert import CORE_PACK, Conversion, convert_ui
from bot.workflows.convert import is_ui_format as is_ui_format  # part of this module's API
from bot.workflows.convert import sort_key as convert_sort_key
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.nodemap import NodeMap
from bot.workflows.pack_advice import Hint, advise
from bot.workflows.problems import InvalidWorkflow, Problem, Repair, display_path

Graph = dict[str, Any]
"""An API-format graph: node id -> `{"class_type", "inputs", "_meta"}`."""


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


def sort_key(node_id: str) -> tuple[tuple[int, ...], str]:
    """Order node ids numerically where they are numbers (`2` before `10`, `57` before `57:3`)."""
    return (convert_sort_key(node_id), node_id)


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


def parse_json(text: str, source: str, *, says: str = "not valid JSON") -> Any:
    """The JSON value in `text` (a graph file or an upload named `source`).

    Raises:
        InvalidWorkflow: it is not JSON; the problem names the line, and `says` what it is.
    """
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidWorkflow(
            [Problem(source, f"line {exc.lineno}", f"{says}: {exc.msg}", "graph")]
        ) from None


def load_graph(
    path: Path,
    object_info: ObjectInfo | None = None,
    *,
    comfyui_version: str | None = None,
    filled: list[Repair] | None = None,
) -> Graph:
    """Read a graph file in API or UI format and return it in API format.

    Args:
        path: the `.json` file.
        object_info: ComfyUI's node definitions, needed only to convert a UI-format export.
        comfyui_version: the running ComfyUI's version, if known, for messages.
        filled: if given, gets a `Repair` for each widget a UI-format export gave no value.

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
    data = parse_json(text, source)
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
        data = ui_to_api(
            data, object_info, source=source, comfyui_version=comfyui_version, filled=filled
        )
    return parse_api_graph(data, source)


# --- UI format -> API format -------------------------------------------------------------------


def missing_class_problems(
    conversion: Conversion,
    source: str,
    comfyui_version: str | None = None,
    *,
    object_info: ObjectInfo | None = None,
    node_map: NodeMap | None = None,
) -> list[Problem]:
    """One problem per node pack a converted export needs and ComfyUI lacks, saying what to do.

    What the export says of each node (`cnr_id`, `aux_id`, `ver`) names its pack; otherwise
    ComfyUI-Manager's map does (`bot.workflows.nodemap`). Each problem says whether to install
    the pack, update it (installed, but lacking the class) or update ComfyUI (a core node, with
    the version the export was made with and the one running).
    """
    if not conversion.missing:
        return []
    only_core = conversion.packs == (CORE_PACK,)
    hints: dict[str, Hint] = {}
    for missing in conversion.missing:
        core = missing.is_core or (not missing.pack and not missing.repository and only_core)
        hints[missing.class_type] = Hint(
            pack=CORE_PACK if core else missing.pack,
            repository=missing.repository,
            version=missing.version or (conversion.core_version if core else None),
        )
    return advice_problems(
        {
            m.class_type: [describe_node(conversion.graph, n) for n in m.nodes]
            for m in conversion.missing
        },
        source,
        object_info or {},
        node_map,
        hints=hints,
        comfyui_version=comfyui_version,
    )


def advice_problems(
    missing: Mapping[str, list[str]],
    source: str,
    object_info: ObjectInfo,
    node_map: NodeMap | None = None,
    *,
    hints: Mapping[str, Hint] | None = None,
    comfyui_version: str | None = None,
) -> list[Problem]:
    """The problems for node classes ComfyUI lacks: one per pack, with what to do about it.

    Args:
        missing: each missing class -> the nodes using it, described (`12 "Face" (FaceDetailer)`).
        source: the graph file, for messages.
        object_info: the server's node definitions (to tell an installed pack).
        node_map: the class -> pack map to use (the server's, merged); the bundled one if None.
        hints: what an export says of each class's pack.
        comfyui_version: the running ComfyUI's version, if known.
    """
    advice = advise(
        missing,
        object_info,
        node_map or NodeMap.bundled(),
        hints=hints,
        comfyui_version=comfyui_version,
    )
    problems = []
    for item in advice:
        key = f"node {item.nodes[0]}" if item.nodes else ""
        more = len(item.nodes) - 1
        if more > 0:
            key += f" and {more} more node{'s' if more > 1 else ''}"
        problems.append(Problem(source, key, item.message, item.code))
    return problems


def ui_to_api(
    data: Mapping[str, Any],
    object_info: ObjectInfo,
    *,
    source: str = "graph",
    comfyui_version: str | None = None,
    filled: list[Repair] | None = None,
    node_map: NodeMap | None = None,
) -> Graph:
    """Convert a UI-format export to the API format ComfyUI runs (see `convert`).

    Args:
        data: the parsed UI-format JSON.
        object_info: ComfyUI's node definitions.
        source: the file name, for messages.
        comfyui_version: the running ComfyUI's version, if known, for messages.
        filled: if given, a `Repair` is added to it for each widget the export held no value
            for and that was given its default.
        node_map: the class -> pack map naming what to install (the bundled one if None).

    Raises:
        InvalidWorkflow: node classes this ComfyUI lacks; every one is named, with the pack to
            install or the ComfyUI version needed.
    """
    conversion = convert_ui(data, object_info)
    problems = missing_class_problems(
        conversion, source, comfyui_version, object_info=object_info, node_map=node_map
    )
    if problems:
        raise InvalidWorkflow(problems)
    graph = conversion.graph
    if filled is not None:
        filled.extend(
            Repair(n, describe_node(graph, n), graph[n]["class_type"], i, None, v, "filled")
            for n, i, v in conversion.filled
        )
        filled.extend(
            Repair(
                n,
                describe_node(graph, n),
                graph[n]["class_type"],
                i or "",
                old,
                new,
                "realigned" if i else "dropped",
            )
            for n, i, old, new in conversion.realigned
        )
    return graph
