"""Reading an uploaded workflow: the size limits, the graph (API or UI format) and the YAML spec.

Every upload is refused before parsing when it is too big, empty, not UTF-8, or nested far too
deep; a UI-format export is converted to API format (which needs ComfyUI's node list), a saved
POST /prompt body is unwrapped, and entries beside the nodes that are no node are left out.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import yaml

from bot.workflows.graph import Graph, is_ui_format, parse_api_graph, parse_json, ui_to_api
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.nodemap import NodeMap
from bot.workflows.problems import InvalidWorkflow, Problem, Repair
from bot.workflows.spec import WorkflowSpec, parse_spec

MAX_GRAPH_BYTES = 5 * 1024 * 1024
"""Largest graph file an import accepts (big UI exports with subgraphs are well under 2 MB)."""
MAX_YAML_BYTES = 256 * 1024
"""Largest YAML file an import accepts."""
MAX_DEPTH = 100
"""Deepest nesting of lists and mappings an import accepts (real workflows stay under 20)."""
_MB = 1024 * 1024


# reading uploads --------------------------------------------------------------------------------
def _size_text(size: int) -> str:
    return f"{size / _MB:.1f} MB" if size >= _MB / 10 else f"{size} bytes"


def check_size(size: int, source: str, limit: int = MAX_GRAPH_BYTES) -> None:
    """Refuse a file before reading it when it is larger than an import accepts.

    Raises:
        InvalidWorkflow: it is too big (the message gives its size and the limit).
    """
    if size > limit:
        raise InvalidWorkflow(
            [
                Problem(
                    source,
                    "",
                    f"is too big ({_size_text(size)}); the limit is {_size_text(limit)}",
                    "too_big",
                )
            ]
        )


def _text(data: bytes, source: str, limit: int) -> str:
    check_size(len(data), source, limit)
    if not data.strip():
        raise InvalidWorkflow([Problem(source, "", "is empty", "graph")])
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        raise InvalidWorkflow(
            [Problem(source, "", "is not a text file (expected UTF-8 JSON)", "graph")]
        ) from None


def _too_deep(value: Any, limit: int = MAX_DEPTH) -> bool:
    """Whether lists and mappings nest deeper than `limit` (checked without recursion).

    A container met twice (YAML aliases, even recursive ones) is walked once.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    seen: set[int] = set()
    while stack:
        item, depth = stack.pop()
        if not isinstance(item, Mapping | list) or id(item) in seen:
            continue
        if depth > limit:
            return True
        seen.add(id(item))
        children = item.values() if isinstance(item, Mapping) else item
        stack.extend((child, depth + 1) for child in children)
    return False


def _parse_json(text: str, source: str) -> Any:
    try:
        parsed = parse_json(text, source, says="is not JSON")
    except RecursionError:
        parsed = None
    if parsed is None or _too_deep(parsed):
        raise InvalidWorkflow(
            [Problem(source, "", "is not a workflow: its values nest far too deep", "graph")]
        )
    return parsed


def _is_node(value: Any) -> bool:
    return isinstance(value, Mapping) and isinstance(value.get("class_type"), str)


def _is_metadata(value: Any) -> bool:
    """An entry of an API-format file that is no node: no class_type and no inputs."""
    return not isinstance(value, Mapping) or ("class_type" not in value and "inputs" not in value)


def read_graph(
    data: bytes,
    source: str,
    object_info: ObjectInfo | None,
    *,
    comfyui_version: str | None = None,
    filled: list[Repair] | None = None,
    node_map: NodeMap | None = None,
    notes: list[str] | None = None,
) -> tuple[Graph, bool]:
    """Parse an uploaded graph (API or UI format) into an API-format graph.

    Args:
        data: the file's bytes.
        source: the file name as uploaded, for messages.
        object_info: ComfyUI's node definitions (needed to convert a UI-format export).
        comfyui_version: the running ComfyUI's version, if known: a refusal for a missing
            core node says it next to the version needed.
        filled: if given, gets a `Repair` for each widget a UI-format export gave no value.
        node_map: the class -> pack map naming what to install (the bundled one if None).
        notes: if given, gets a line for what was left out of an API-format graph (entries
            beside the nodes that are no node at all, such as a tool's own metadata).

    Returns:
        The API-format graph, and whether it was converted from the UI format.

    Raises:
        InvalidWorkflow: too big, not JSON, not a workflow, or a UI export that can't be
            converted (every unknown class named).
    """
    parsed = _parse_json(_text(data, source, MAX_GRAPH_BYTES), source)
    if is_ui_format(parsed):
        if object_info is None:
            raise InvalidWorkflow(
                [
                    Problem(
                        source,
                        "",
                        "is a UI-format save; converting it needs ComfyUI's node list and "
                        "ComfyUI is not reachable. Try again when it is, or export the workflow "
                        "with 'Export (API)'",
                        "graph",
                    )
                ]
            )
        converted = ui_to_api(
            parsed,
            object_info,
            source=source,
            comfyui_version=comfyui_version,
            filled=filled,
            node_map=node_map,
        )
        return parse_api_graph(converted, source), True
    if isinstance(parsed, Mapping) and isinstance(parsed.get("prompt"), Mapping):
        parsed = parsed["prompt"]  # a saved POST /prompt body
    if isinstance(parsed, Mapping) and any(_is_node(v) for v in parsed.values()):
        extra = [str(k) for k, v in parsed.items() if _is_metadata(v)]
        if extra:
            parsed = {k: v for k, v in parsed.items() if str(k) not in extra}
            if notes is not None:
                shown = ", ".join(f"`{k[:40]}`" for k in extra[:5])
                notes.append(
                    f"left out {shown}: not a node (no class_type or inputs), so ComfyUI "
                    "would refuse the graph with it"
                )
    if not isinstance(parsed, Mapping) or not any(
        isinstance(node, Mapping) and "class_type" in node for node in parsed.values()
    ):
        raise InvalidWorkflow(
            [
                Problem(
                    source,
                    "",
                    "is not a ComfyUI workflow: expected a graph saved from ComfyUI (Workflow > "
                    "Export, or Export (API))",
                    "graph",
                )
            ]
        )
    return parse_api_graph(parsed, source), False


def read_spec(data: bytes, source: str) -> WorkflowSpec:
    """Parse an uploaded YAML spec.

    Raises:
        InvalidWorkflow: too big, not YAML, or not a valid spec (every problem listed).
    """
    text = _text(data, source, MAX_YAML_BYTES)
    try:
        parsed = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or "can't be parsed"
        raise InvalidWorkflow([Problem(source, where, f"is not YAML: {reason}", "yaml")]) from None
    except RecursionError:
        parsed = None
        deep = True
    else:
        deep = _too_deep(parsed)
    if deep:
        raise InvalidWorkflow([Problem(source, "", "its values nest far too deep", "yaml")])
    return parse_spec(parsed, source)
