"""Loading workflow packs (`NAME.yaml` + `NAME.json`) from the workflows folder."""

from __future__ import annotations

import dataclasses
import functools
import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
from bot.errors import InvalidValue, WorkflowError
from bot.workflows.detect import detect_params
from bot.workflows.graph import Graph, describe_node, is_link, load_graph, resolve_node
from bot.workflows.model import Param, Workflow
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.nodemap import NodeMap
from bot.workflows.patch import coerce_value, range_text
from bot.workflows.problems import InvalidWorkflow, Problem, Repair, display_path
from bot.workflows.repair import repair_graph
from bot.workflows.spec import (
    NAME_RE,
    ParamSpec,
    WorkflowSpec,
    choice_label,
    is_plain_file_name,
    load_spec,
)
from bot.workflows.validate import check_workflow

log = logging.getLogger(__name__)

SEED_MAX = 2**53 - 1
"""Largest seed a member may type unless the YAML says otherwise (Discord's integer limit)."""

RESERVED_COMMANDS = frozenset({"imagine", "workflows", "queue", "cancel", "history"})
"""Slash commands comfycord itself defines; a workflow's `command:` can't take them."""

YAML_SUFFIXES = (".yaml", ".yml")


def _check_name(name: str, source: str) -> None:
    if not NAME_RE.match(name):
        raise InvalidWorkflow(
            [
                Problem(
                    source,
                    "",
                    f"'{name}' is not a usable workflow name: rename the file to 1-32 "
                    "lowercase letters, digits, '-' or '_'",
                    "name",
                )
            ]
        )


def _describe(param: Param) -> str:
    if param.type == "text":
        return "Text" + (f" (up to {param.max_length} characters)" if param.max_length else "")
    if param.type == "seed":
        return "Seed: random unless given; the same seed repeats an image"
    if param.type in ("int", "float"):
        kind = "Whole number" if param.type == "int" else "Number"
        return (
            f"{kind} {range_text(param)}"
            if param.min is not None or param.max is not None
            else kind
        )
    if param.type in ("choice", "enum"):
        return "One of: " + ", ".join(param.choices) if param.choices else "A name from the list"
    if param.type == "image":
        return "An image to start from"
    if param.type == "video":
        return "A video to start from"
    if param.type == "audio":
        return "A sound file to start from"
    return "True or false"


def _graph_default(param: Param, graph: Graph) -> Any:
    """The graph's own value at the param's first target, when it is a plain value."""
    if not param.targets or param.type == "seed" or param.is_file:
        return None
    node_id, name = param.targets[0]
    value = graph[node_id]["inputs"].get(name)
    if param.type == "choice":
        for label, chosen in param.choice_values.items():
            if isinstance(chosen, Mapping):
                current = {i: graph[n]["inputs"].get(i) for n, i in param.targets}
                if all(current.get(k) == v for k, v in chosen.items()):
                    return label
            elif chosen == value:
                return label
        return param.choices[0] if param.choices else None
    if value is None or is_link(value):
        return None
    return value


def _resolve_targets(
    key: str, spec: ParamSpec, graph: Graph
) -> tuple[list[tuple[str, str]], list[str]]:
    """Resolve a param's node references; returns targets and `key: message` problems."""
    wanted: list[tuple[str | int, list[str], str]] = []
    mapped = list(next(iter(spec.choices.values()))) if isinstance(spec.choices, dict) else []
    if spec.node is not None:
        names = mapped or spec.inputs or ([spec.input] if spec.input else [])
        wanted.append((spec.node, names, f"{key}.node"))
    for index, target in enumerate(spec.targets or []):
        names = mapped or ([target.input] if target.input else [])
        wanted.append((target.node, names, f"{key}.targets.{index}.node"))
    targets: list[tuple[str, str]] = []
    problems: list[str] = []
    for ref, names, where in wanted:
        try:
            node_id = resolve_node(graph, ref)
        except WorkflowError as exc:
            problems.append(f"{where}: {exc}")
            continue
        for name in names:
            if is_link(graph[node_id]["inputs"].get(name)):
                problems.append(
                    f"{key}: input '{name}' of node {describe_node(graph, node_id)} is linked to "
                    "another node; a param can only set an input that holds a value"
                )
            targets.append((node_id, name))
    return targets, problems


def _build_param(
    name: str,
    spec: ParamSpec,
    graph: Graph,
    object_info: ObjectInfo | None,
) -> tuple[Param | None, list[str]]:
    key = f"params.{name}"
    targets, problems = _resolve_targets(key, spec, graph)
    if problems:
        return None, problems
    node_def: nodeinfo.InputDef | None = None
    if object_info is not None and targets:
        node_id, input_name = targets[0]
        node_def = nodeinfo.input_def(object_info, graph[node_id]["class_type"], input_name)
    low, high = spec.min, spec.max
    if spec.type in ("int", "float", "seed") and node_def is not None:
        low = low if low is not None else node_def.minimum
        high = high if high is not None else node_def.maximum
    if spec.type == "seed":
        low = 0 if spec.min is None else spec.min
        if spec.max is None:
            high = SEED_MAX if high is None else min(SEED_MAX, int(high))
    if spec.type == "int":
        low = int(low) if low is not None else None
        high = int(high) if high is not None else None
    choices = tuple(spec.labels())
    if spec.type == "enum" and not choices and node_def is not None and node_def.choices:
        choices = tuple(str(c) for c in node_def.choices)
    choice_values: dict[str, Any] = {}
    if isinstance(spec.choices, dict):
        choice_values = {label: dict(inputs) for label, inputs in spec.choices.items()}
    elif spec.type == "choice" and spec.choices is not None:
        choice_values = {choice_label(v): v for v in spec.choices}
    param = Param(
        name=name,
        type=spec.type,
        description=spec.description,
        min=low,
        max=high,
        step=spec.step,
        max_length=spec.max_length,
        choices=choices,
        targets=tuple(targets),
        required=spec.required,
        choice_values=choice_values,
    )
    default: Any = None
    if spec.default is not None:
        default = spec.default
    elif not spec.required:
        default = _graph_default(param, graph)
    if default is not None:
        try:
            default = coerce_value(param, default)
        except InvalidValue as exc:
            where = "the default" if spec.default is not None else "the graph's value"
            problems.append(f"{key}.default: {where} ({default!r}) doesn't fit: {exc.problem}")
            default = None
    description = spec.description or _describe(param)
    if len(description) > 100:
        description = description[:99] + "…"
    return dataclasses.replace(param, description=description, default=default), problems


def build_workflow(
    name: str,
    spec: WorkflowSpec,
    directory: Path,
    object_info: ObjectInfo | None = None,
    *,
    source: str,
    graph: Graph | None = None,
    comfyui_version: str | None = None,
    filled: Sequence[Repair] = (),
) -> Workflow:
    """Load a pack's graph and resolve its params (detecting them when the spec has none).

    Args:
        name: the workflow's name (its file stem).
        spec: its validated YAML.
        directory: the workflows folder the graph must be in.
        object_info: ComfyUI's node definitions, if known (for UI-format graphs, enum
            choices and number ranges).
        source: the YAML file as the user knows it, for messages.
        graph: the API-format graph itself, when it is not read from `directory` (an
            import not saved yet); `directory` then only names it in messages.
        comfyui_version: the running ComfyUI's version, if known: a refusal for a missing
            core node says it next to the version needed.
        filled: the widgets a conversion of `graph` gave defaults (reported with the repairs).

    Raises:
        InvalidWorkflow: the graph can't be loaded or a param can't be resolved; every
            problem is listed.
    """
    _check_name(name, source)
    graph_name = spec.graph_file(name)
    if not is_plain_file_name(graph_name):
        raise InvalidWorkflow(
            [Problem(source, "graph", "must be a plain file name in the workflows folder", "spec")]
        )
    graph_path = directory / graph_name
    repairs: list[Repair] = list(filled)
    if graph is None:
        graph = load_graph(graph_path, object_info, comfyui_version=comfyui_version, filled=repairs)
    if object_info is not None:
        graph, more = repair_graph(graph, object_info)
        repairs.extend(more)
    detected = spec.params is None
    specs = spec.params if spec.params is not None else detect_params(graph, object_info)
    if detected and not specs:
        raise InvalidWorkflow(
            [
                Problem(
                    source,
                    "params",
                    "left out, and none could be found in the graph (no sampler or image "
                    "loader); list them under `params:`",
                    "detect",
                )
            ]
        )
    params: list[Param] = []
    problems: list[Problem] = []
    owners: dict[tuple[str, str], str] = {}
    for param_name, param_spec in specs.items():
        param, messages = _build_param(param_name, param_spec, graph, object_info)
        for message in messages:
            key, _, text = message.partition(": ")
            problems.append(Problem(source, key, text, "param"))
        if param is None:
            continue
        for target in param.targets:
            other = owners.setdefault(target, param_name)
            if other != param_name:
                problems.append(
                    Problem(
                        source,
                        f"params.{param_name}",
                        f"sets input '{target[1]}' of node {describe_node(graph, target[0])}, "
                        f"which params.{other} sets too",
                        "param",
                    )
                )
        params.append(param)
    if problems:
        raise InvalidWorkflow(problems)
    if detected:
        spec = spec.model_copy(update={"params": specs})
    return Workflow(
        name=name,
        spec=spec,
        graph=graph,
        params=tuple(params),
        source=source,
        graph_source=display_path(graph_path),
        detected=detected,
        repairs=tuple(str(r) for r in repairs),
    )


def load_workflow(yaml_path: str | Path, object_info: ObjectInfo | None = None) -> Workflow:
    """Load one workflow pack from its YAML file.

    The graph is the YAML's `graph:` (default `NAME.json`) in the same folder.

    Args:
        yaml_path: `workflows/NAME.yaml`; NAME becomes the workflow's name.
        object_info: ComfyUI's node definitions, if known.

    Raises:
        InvalidWorkflow: (a `WorkflowError`) listing every problem with file and key.
    """
    path = Path(yaml_path)
    source = display_path(path)
    _check_name(path.stem, source)
    spec = load_spec(path)
    return build_workflow(path.stem, spec, path.parent, object_info, source=source)


def load_workflows(
    directory: str | Path,
    object_info: ObjectInfo | None = None,
    *,
    check: bool = True,
    comfyui_version: str | None = None,
    node_map: NodeMap | None = None,
) -> tuple[dict[str, Workflow], list[Problem]]:
    """Load every pack in a folder; a broken pack is reported and the others still load.

    Each `NAME.yaml` (or `.yml`) is a pack. A `NAME.json` that no YAML uses is a pack too,
    with its params detected. With `object_info`, UI-format graphs are converted, detection
    understands every node class, and (unless `check` is false) every pack is also checked
    against it (`check_workflow`) and a pack with problems is left out.

    Args:
        directory: the workflows folder.
        object_info: ComfyUI's node definitions, if known.
        check: check the packs against `object_info` (the bot itself leaves that to ComfyUI,
            which may gain models and nodes while it runs).
        comfyui_version: the running ComfyUI's version, if known, for messages.
        node_map: the class -> pack map naming what to install for a missing node class (the
            bundled one if None).

    Returns:
        The packs that loaded (name -> workflow, sorted by name) and every problem found.

    Raises:
        WorkflowError: the folder does not exist.
    """
    folder = Path(directory)
    if not folder.is_dir():
        raise WorkflowError(f"{folder.name or folder}: workflows folder not found")
    loaded: dict[str, Workflow] = {}
    problems: list[Problem] = []
    used_graphs: set[str] = set()
    files = sorted(p for p in folder.iterdir() if p.is_file() and not p.name.startswith("."))
    # what every workflow of the folder is built with, a YAML pack's or a bare graph's
    build = functools.partial(
        build_workflow, directory=folder, object_info=object_info, comfyui_version=comfyui_version
    )
    for path in (p for p in files if p.suffix in YAML_SUFFIXES):
        source = display_path(path)
        used_graphs.add(f"{path.stem}.json")
        if path.stem in loaded:
            problems.append(
                Problem(source, "", f"another file already defines '{path.stem}'", "name")
            )
            continue
        try:
            spec = load_spec(path)
            used_graphs.add(spec.graph_file(path.stem))
            loaded[path.stem] = build(path.stem, spec, source=source)
        except InvalidWorkflow as exc:
            problems.extend(exc.problems)
    for path in (p for p in files if p.suffix == ".json"):
        if path.name in used_graphs or path.name.endswith(".schema.json"):
            continue
        source = display_path(path)
        try:
            _check_name(path.stem, source)
            loaded[path.stem] = build(path.stem, WorkflowSpec(title=path.stem), source=source)
        except InvalidWorkflow as exc:
            problems.extend(exc.problems)
    if object_info is not None and check:
        for name, workflow in list(loaded.items()):
            found = check_workflow(
                workflow, object_info, node_map=node_map, comfyui_version=comfyui_version
            )
            if found:
                problems.extend(found)
                del loaded[name]
    commands: dict[str, str] = {}
    for name, workflow in list(loaded.items()):
        command = workflow.spec.command
        if command is None:
            continue
        if command in RESERVED_COMMANDS or command in commands:
            owner = "comfycord" if command in RESERVED_COMMANDS else commands[command]
            problems.append(
                Problem(
                    workflow.source,
                    "command",
                    f"/{command} is already taken by {owner}; pick another name",
                    "spec",
                )
            )
            del loaded[name]
            continue
        commands[command] = name
    for problem in problems:
        log.warning("workflow problem: %s", problem)
    return dict(sorted(loaded.items())), problems
