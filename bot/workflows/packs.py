"""Importing a workflow from uploaded bytes: the preview of what the pack will be.

An import never touches the workflows folder until it is saved::

    preview = prepare_import(data, "Flux.1 Dev.json", folder=folder, object_info=info)
    print("\\n".join(preview_lines(preview)))   # each option, the node and input it sets
    if not preview.blocking:
        save_pack(preview, folder)               # writes NAME.json + NAME.yaml

The graph is written in API format (a UI-format export is converted first), so the pack loads
without asking ComfyUI; the YAML lists every param that was detected (or given), ready to edit.
Names from outside are never trusted: a given name must be valid, a derived one is made valid,
and an existing pack is never overwritten.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
from bot.workflows.graph import Graph, describe_node, sort_key
from bot.workflows.loader import RESERVED_COMMANDS, build_workflow
from bot.workflows.model import Param, Workflow
from bot.workflows.names import derive_name, file_stem
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.nodemap import NodeMap
from bot.workflows.pack_advice import ACTION_CODES
from bot.workflows.pack_read import MAX_DEPTH as MAX_DEPTH
from bot.workflows.pack_read import MAX_GRAPH_BYTES as MAX_GRAPH_BYTES
from bot.workflows.pack_read import MAX_YAML_BYTES as MAX_YAML_BYTES
from bot.workflows.pack_read import check_size as check_size
from bot.workflows.pack_read import read_graph as read_graph
from bot.workflows.pack_read import read_spec as read_spec
from bot.workflows.pack_write import _explicit, _required_first
from bot.workflows.pack_write import check_free as check_free
from bot.workflows.pack_write import export_pack as export_pack
from bot.workflows.pack_write import pack_files as pack_files
from bot.workflows.pack_write import save_pack as save_pack
from bot.workflows.pack_write import spec_yaml as spec_yaml
from bot.workflows.patch import range_text
from bot.workflows.problems import InvalidWorkflow, Problem, Repair
from bot.workflows.spec import ParamSpec, WorkflowSpec
from bot.workflows.validate import check_workflow

PACK_CODES = frozenset(ACTION_CODES.values())
"""The codes of the problems that say which node pack to install or update."""
_NOT_BLOCKING = frozenset({"missing_model"})  # ComfyUI may get the model later, or substitute it


@dataclass(frozen=True)
class OptionPreview:
    """One option an imported workflow will offer.

    Attributes:
        name: the option name.
        type: text, int, float, seed, choice, enum, image or bool.
        required: a member must give it.
        sets: each `node.input` it writes, as `6 "Positive" (CLIPTextEncode).text`.
        default: the value used when none is given (None: random seed, or none).
        range: the accepted values in words (`between 1 and 50`, `one of: a, b`), or "".
    """

    name: str
    type: str
    required: bool
    sets: tuple[str, ...]
    default: Any
    range: str


@dataclass(frozen=True)
class ImportPreview:
    """A workflow read from uploaded files, checked, not saved yet.

    Attributes:
        name: the pack name it will be saved under.
        workflow: the loaded workflow (its spec lists every param).
        graph_text: the API-format graph, as `NAME.json` will hold it.
        yaml_text: the YAML, as `NAME.yaml` will hold it.
        options: the options it offers, in order.
        problems: what ComfyUI lacks or would refuse (empty when it was not asked).
        checked: whether it was checked against ComfyUI's node list.
        notes: things the moderator should know (name derived, graph converted...).
        missing_classes: node classes this ComfyUI does not know, sorted.
        repairs: what was changed in the graph so this ComfyUI accepts it (inputs filled with
            their defaults, legacy values migrated), in words; the saved graph has them.
    """

    name: str
    workflow: Workflow
    graph_text: str
    yaml_text: str
    options: tuple[OptionPreview, ...]
    problems: tuple[Problem, ...] = ()
    checked: bool = False
    notes: tuple[str, ...] = field(default=())
    missing_classes: tuple[str, ...] = ()
    repairs: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The workflow's title."""
        return self.workflow.title

    @property
    def blocking(self) -> tuple[Problem, ...]:
        """Problems that stop it from running (every one but a missing model)."""
        return tuple(p for p in self.problems if p.code not in _NOT_BLOCKING)

    @property
    def missing_packs(self) -> tuple[str, ...]:
        """What to install or update for the node classes ComfyUI lacks, one line a pack."""
        return tuple(p.message for p in self.problems if p.code in PACK_CODES)

    @property
    def missing_models(self) -> tuple[str, ...]:
        """What each missing model problem says, in order."""
        return tuple(p.message for p in self.problems if p.code == "missing_model")


def _title(file_name: str, name: str) -> str:
    title = " ".join(file_stem(file_name).split())
    return title[:100] if title else name


# the preview ------------------------------------------------------------------------------------
def _sets(workflow: Workflow, param: Param) -> tuple[str, ...]:
    return tuple(f"{describe_node(workflow.graph, n)}.{i}" for n, i in param.targets)


def _range(param: Param) -> str:
    if param.type in ("int", "float") and (param.min is not None or param.max is not None):
        return range_text(param)
    if param.type in ("choice", "enum") and param.choices:
        shown = list(param.choices[:10])
        more = len(param.choices) - len(shown)
        return "one of: " + ", ".join(shown) + (f" and {more} more" if more > 0 else "")
    if param.type == "enum":
        return "a name from ComfyUI's list"
    if param.type == "text" and param.max_length:
        return f"up to {param.max_length} characters"
    return ""


def option_previews(workflow: Workflow) -> tuple[OptionPreview, ...]:
    """What each option of a workflow sets, its default and its range."""
    return tuple(
        OptionPreview(
            name=p.name,
            type=p.type,
            required=p.required,
            sets=_sets(workflow, p),
            default=p.default,
            range=_range(p),
        )
        for p in workflow.params
    )


def _uploads_for_missing_files(
    graph: Graph,
    object_info: ObjectInfo,
    targeted: Collection[tuple[str, str]] = (),
    taken: Collection[str] = (),
) -> dict[str, ParamSpec]:
    """An upload option for each input file the graph names, ComfyUI lacks and no option sets.

    A loader holding a file only its author had (`kidfinal3.gif` in a video loader) would make
    every run fail; as an option, members give the file instead.
    """
    taken = set(taken)
    added: dict[str, ParamSpec] = {}
    for node_id in sorted(graph, key=sort_key):
        node = graph[node_id]
        class_type = str(node["class_type"])
        for definition in nodeinfo.input_defs(object_info, class_type):
            kind = nodeinfo.input_file_kind(class_type, definition)
            value = node["inputs"].get(definition.name)
            if (
                kind is None
                or (node_id, definition.name) in targeted
                or not isinstance(value, str)
                or definition.choices is None
                or value in definition.choices
            ):
                continue
            name = kind
            number = 1
            while name in taken:
                number += 1
                name = f"{kind}_{number}"
            taken.add(name)
            added[name] = ParamSpec(
                type=kind,
                node=node_id,
                input=definition.name,
                required=True,
                description=f"The {kind} for {nodeinfo.display_name(object_info, class_type)}",
            )
    return added


def _files_lacking(workflow: Workflow, object_info: ObjectInfo) -> dict[str, str]:
    """The file params (by name) whose file in the graph is one ComfyUI doesn't have."""
    lacking: dict[str, str] = {}
    for param in (p for p in workflow.params if p.is_file):
        for node_id, input_name in param.targets:
            class_type = str(workflow.graph[node_id]["class_type"])
            definition = nodeinfo.input_def(object_info, class_type, input_name)
            value = workflow.graph[node_id]["inputs"].get(input_name)
            choices = definition.choices if definition is not None else None
            if isinstance(value, str) and choices is not None and value not in choices:
                lacking[param.name] = value
    return lacking


def _upload_missing_files(
    workflow: Workflow,
    object_info: ObjectInfo,
    notes: list[str],
    build: Callable[[Mapping[str, ParamSpec]], Workflow],
) -> Workflow:
    """The workflow with every input file the server lacks given by members, each said.

    A detected pack gets an upload option for each such file no option sets; an optional file
    option whose graph file is missing becomes required.
    """
    specs = dict(workflow.spec.params or {})
    if workflow.detected:
        targeted = {t for p in workflow.params for t in p.targets}
        specs.update(_uploads_for_missing_files(workflow.graph, object_info, targeted, specs))
    if len(specs) != len(workflow.spec.params or {}):
        workflow = build(specs)
    optional = False
    for param_name, value in _files_lacking(workflow, object_info).items():
        notes.append(
            f"`{param_name}`: the graph's file '{value}' is not in ComfyUI's input "
            "folder, so members must upload one"
        )
        if not specs[param_name].required:
            specs[param_name] = specs[param_name].model_copy(
                update={"required": True, "default": None}
            )
            optional = True
    return build(specs) if optional else workflow


def prepare_import(
    data: bytes,
    file_name: str,
    *,
    folder: Path,
    object_info: ObjectInfo | None,
    yaml_data: bytes | None = None,
    yaml_name: str = "spec.yaml",
    name: str | None = None,
    existing: Mapping[str, Workflow] | None = None,
    comfyui_version: str | None = None,
    node_map: NodeMap | None = None,
) -> ImportPreview:
    """Read, convert and check an uploaded workflow without writing anything.

    Args:
        data: the graph file's bytes (API or UI format).
        file_name: its name as uploaded (the pack name is derived from it unless `name`).
        folder: the workflows folder it would be saved in (only looked at, for names).
        object_info: ComfyUI's node definitions; None when ComfyUI is unreachable (then an
            API-format graph is loaded unchecked and a UI-format one is refused).
        yaml_data: an optional YAML spec; without one, params are detected.
        yaml_name: the YAML's name as uploaded, for messages.
        name: the pack name to use; must be valid (never changed silently).
        existing: the loaded workflows (their names and `/commands` are taken).
        comfyui_version: the running ComfyUI's version, if known, for messages.
        node_map: the class -> pack map naming what to install (the server's own when it
            serves one); the bundled one if None.

    Returns:
        The preview: options, problems and the files' text.

    Raises:
        WorkflowError: a bad name, or one already taken.
        InvalidWorkflow: the files can't be read or loaded (every problem listed).
    """
    existing = existing or {}
    notes: list[str] = []
    source = file_stem(file_name) + ".json" if file_name else "graph.json"
    if name is None:
        name = derive_name(file_name)
        if name != file_stem(file_name):
            notes.append(f"named `{name}` after the file `{file_name[:80]}`")
    check_free(name, folder, existing)
    filled: list[Repair] = []
    graph, converted = read_graph(
        data,
        source,
        object_info,
        comfyui_version=comfyui_version,
        filled=filled,
        node_map=node_map,
        notes=notes,
    )
    if converted:
        notes.append("converted from a UI-format save to the API format ComfyUI runs")
    if yaml_data is not None:
        spec = read_spec(yaml_data, yaml_name)
        if spec.graph is not None and spec.graph != f"{name}.json":
            notes.append(f"the YAML's `graph: {spec.graph}` becomes {name}.json")
        spec = spec.model_copy(update={"graph": None})
    else:
        spec = WorkflowSpec(title=_title(file_name, name))

    source_yaml = f"{folder.name}/{name}.yaml"

    def build(params: Mapping[str, ParamSpec] | None = None) -> Workflow:
        given = (
            spec if params is None else spec.model_copy(update={"params": _required_first(params)})
        )
        return build_workflow(
            name, given, folder, object_info, source=source_yaml, graph=graph, filled=filled
        )

    try:
        workflow = build()
    except InvalidWorkflow as exc:
        # Nothing detected, but a loader holds a file the server lacks: that is the option.
        nothing_found = all(p.code == "detect" for p in exc.problems)
        found = (
            _uploads_for_missing_files(graph, object_info)
            if object_info is not None and yaml_data is None and nothing_found
            else {}
        )
        if not found:
            raise
        workflow = build(found)
    if object_info is not None:
        workflow = _upload_missing_files(workflow, object_info, notes, build)
    graph = workflow.graph
    problems: list[Problem] = []
    command = workflow.spec.command
    if command is not None:
        users = [w.name for w in existing.values() if w.spec.command == command]
        owner = "comfycord" if command in RESERVED_COMMANDS else next(iter(users), None)
        if owner is not None:
            problems.append(
                Problem(workflow.source, "command", f"/{command} is already taken by {owner}")
            )
    missing: set[str] = set()
    if workflow.prompt_param is None:
        notes.append(
            "no required text option: /imagine needs one for its prompt; list it under `params`"
        )
    if object_info is not None:
        problems.extend(
            check_workflow(
                workflow, object_info, node_map=node_map, comfyui_version=comfyui_version
            )
        )
        missing = {
            str(node["class_type"])
            for node in graph.values()
            if nodeinfo.node_def(object_info, str(node["class_type"])) is None
        }
    else:
        notes.append("not checked against ComfyUI (it is not reachable)")
    full_spec = _explicit(workflow.spec, workflow)
    return ImportPreview(
        name=name,
        workflow=workflow,
        graph_text=json.dumps(graph, indent=2, ensure_ascii=False) + "\n",
        yaml_text=spec_yaml(name, full_spec, graph, origin=file_name[:100]),
        options=option_previews(workflow),
        problems=tuple(problems),
        checked=object_info is not None,
        notes=tuple(notes),
        missing_classes=tuple(sorted(missing)),
        repairs=workflow.repairs,
    )


def _default_text(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"


def preview_lines(preview: ImportPreview) -> list[str]:
    """The preview in plain lines: one per option, then what is missing and other problems."""
    lines: list[str] = []
    for option in preview.options:
        bits = [option.type + (", required" if option.required else "")]
        if option.range:
            bits.append(option.range)
        if option.default not in (None, ""):
            bits.append(f"default {_default_text(option.default)}")
        elif option.type == "seed":
            bits.append("random unless given")
        lines.append(f"{option.name} ({'; '.join(bits)}) sets {', '.join(option.sets)}")
    if preview.missing_classes:
        lines.append("missing node classes: " + ", ".join(preview.missing_classes))
    lines.extend(f"to install: {m}" for m in preview.missing_packs)
    lines.extend(f"repaired: {r}" for r in preview.repairs)
    lines.extend(f"missing model: {m}" for m in preview.missing_models)
    lines.extend(
        f"problem: {p}"
        for p in preview.problems
        if p.code not in PACK_CODES and p.code != "missing_model"
    )
    lines.extend(f"note: {n}" for n in preview.notes)
    return lines
