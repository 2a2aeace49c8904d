"""Checking a loaded workflow against a ComfyUI's `/object_info`.

Finds what ComfyUI would otherwise reject at `POST /prompt` time, worded for the person who
wrote the pack: unknown node classes (anywhere), and in the nodes the output nodes need (the
only ones ComfyUI checks and runs): missing required inputs, links to missing nodes or
outputs, values out of a node's range, enum values not in its list (missing models named as
such), params that target inputs a node doesn't have, and graphs with no output node.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
from bot.workflows.graph import advice_problems, describe_node, is_link, sort_key
from bot.workflows.model import Param, Workflow
from bot.workflows.nodeinfo import InputDef, ObjectInfo, is_number
from bot.workflows.nodemap import NodeMap
from bot.workflows.problems import Problem
from bot.workflows.spec import ParamSpec

__all__ = ["Problem", "check_workflow", "value_problem"]

_LISTED = 15
_PARAM_TYPES: Mapping[str, tuple[str, ...]] = {
    "text": ("STRING",),
    "int": ("INT", "FLOAT"),
    "seed": ("INT",),
    "float": ("FLOAT",),
    "bool": ("BOOLEAN",),
    "enum": ("COMBO",),
    "image": ("COMBO", "STRING"),
    "video": ("COMBO", "STRING"),
    "audio": ("COMBO", "STRING"),
}
_TYPE_WORDS: Mapping[str, str] = {
    "STRING": "text",
    "INT": "a whole number",
    "FLOAT": "a number",
    "BOOLEAN": "true/false",
    "COMBO": "a name from a list",
}


def _listed(values: Iterable[Any]) -> str:
    items = [str(v) for v in values]
    if not items:
        return "none"
    more = len(items) - _LISTED
    return ", ".join(items[:_LISTED]) + (f" and {more} more" if more > 0 else "")


def _newer(object_info: ObjectInfo | None, class_type: str) -> str:
    """Why a name may be missing from a list: the graph comes from a newer version."""
    pack = nodeinfo.pack_of(object_info, class_type) if object_info is not None else None
    if pack is None:
        return ""
    if pack == "":
        return (
            ". The workflow may have been made with a newer ComfyUI than this one, which "
            "added it: update ComfyUI, or pick one of these"
        )
    return (
        f". The workflow may have been made with a newer version of the pack '{pack}': "
        "update it, or pick one of these"
    )


def value_problem(
    definition: InputDef,
    value: Any,
    class_type: str,
    object_info: ObjectInfo | None = None,
) -> tuple[str, str] | None:
    """Check a plain value against an input's definition.

    Args:
        definition: the input's definition.
        value: the value the graph or a param gives it.
        class_type: the node's class, for messages.
        object_info: the node definitions, if at hand: a name missing from a list then says
            whether ComfyUI or the node's pack may be too old for it.

    Returns:
        `(code, message)` when ComfyUI would reject it, else None. Codes: `missing_model`,
        `missing_input_file`, `not_in_list`, `out_of_range`, `wrong_type`.
    """
    where = f"{class_type}.{definition.name}"
    kind = definition.type
    if kind == "COMBO":
        if definition.choices is None or value in definition.choices:
            return None
        file_kind = nodeinfo.input_file_kind(class_type, definition)
        if file_kind is not None:
            return (
                "missing_input_file",
                f"the {file_kind} file '{value}' is not in ComfyUI's input folder; "
                f"one must be uploaded ({where})",
            )
        kind_of_model = nodeinfo.model_kind(class_type, definition, value)
        if kind_of_model is not None:
            return (
                "missing_model",
                f"{kind_of_model} '{value}' is not installed on ComfyUI; "
                f"available: {_listed(definition.choices)}",
            )
        return (
            "not_in_list",
            f"'{value}' is not one of {where}'s choices{_newer(object_info, class_type)}: "
            f"{_listed(definition.choices)}",
        )
    if kind in ("INT", "FLOAT"):
        whole = kind == "INT" and (not is_number(value) or float(value) != int(value))
        if not is_number(value) or whole:
            return ("wrong_type", f"{value!r} is not {_TYPE_WORDS[kind]} ({where})")
        low, high = definition.minimum, definition.maximum
        if low is not None and value < low:
            return ("out_of_range", f"{value} is below {where}'s minimum ({low})")
        if high is not None and value > high:
            return ("out_of_range", f"{value} is above {where}'s maximum ({high})")
        return None
    if kind == "BOOLEAN" and not isinstance(value, bool):
        return ("wrong_type", f"{value!r} is not true/false ({where})")
    if kind == "STRING" and not isinstance(value, str):
        return ("wrong_type", f"{value!r} is not text ({where})")
    return None


def _types_fit(given: str, wanted: str) -> bool:
    if "*" in (given, wanted) or wanted == "COMBO":
        return True
    return bool(set(given.split(",")) & set(wanted.split(",")))


def _always_set(param: Param) -> bool:
    """Whether every run writes this param's targets (so the graph's own value never counts)."""
    return param.required or param.default is not None or param.type in ("seed", "choice")


class _Checker:
    def __init__(
        self,
        workflow: Workflow,
        object_info: ObjectInfo,
        node_map: NodeMap | None = None,
        comfyui_version: str | None = None,
    ) -> None:
        self.node_map = node_map
        self.comfyui_version = comfyui_version
        self.workflow = workflow
        self.graph = workflow.graph
        self.object_info = object_info
        self.graph_source = workflow.graph_source or workflow.source
        self.problems: list[Problem] = []
        self.overridden = {t for p in workflow.params if _always_set(p) for t in p.targets}
        self.targeted = {t for p in workflow.params for t in p.targets}

    def add(self, file: str, key: str, message: str, code: str) -> None:
        self.problems.append(Problem(file, key, message, code))

    def known(self, node_id: str) -> bool:
        class_type = self.graph[node_id]["class_type"]
        return nodeinfo.node_def(self.object_info, class_type) is not None

    def needed(self) -> set[str]:
        """The nodes ComfyUI would run: the output nodes and all they take input from.

        ComfyUI checks the inputs of those only; a node nothing needs is never looked at.
        """
        outputs = [
            node_id
            for node_id, node in self.graph.items()
            if nodeinfo.is_output_node(self.object_info, node["class_type"])
        ]
        if not outputs:
            return set(self.graph)
        seen: set[str] = set()
        stack = list(outputs)
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.graph:
                continue
            seen.add(node_id)
            stack.extend(str(v[0]) for v in self.graph[node_id]["inputs"].values() if is_link(v))
        return seen

    def check_graph(self) -> None:
        has_output = False
        missing: dict[str, list[str]] = {}
        needed = self.needed()
        for node_id in sorted(self.graph, key=sort_key):
            class_type = self.graph[node_id]["class_type"]
            key = f"node {describe_node(self.graph, node_id)}"
            if not self.known(node_id):
                missing.setdefault(class_type, []).append(describe_node(self.graph, node_id))
                continue
            has_output = has_output or nodeinfo.is_output_node(self.object_info, class_type)
            if node_id not in needed:
                continue
            for definition in nodeinfo.input_defs(self.object_info, class_type):
                self.check_input(node_id, key, definition)
        self.problems.extend(
            advice_problems(
                missing,
                self.graph_source,
                self.object_info,
                self.node_map,
                comfyui_version=self.comfyui_version,
            )
        )
        if not has_output and not missing:
            self.add(
                self.graph_source,
                "",
                "has no output node (such as SaveImage or PreviewImage), so ComfyUI would run "
                "nothing",
                "no_output",
            )

    def check_input(self, node_id: str, key: str, definition: InputDef) -> None:
        class_type = self.graph[node_id]["class_type"]
        value = self.graph[node_id]["inputs"].get(definition.name)
        target = (node_id, definition.name)
        if value is None:
            if definition.required and target not in self.overridden:
                self.add(
                    self.graph_source,
                    key,
                    f"required input '{definition.name}' is missing",
                    "missing_input",
                )
            return
        if is_link(value):
            self.check_link(node_id, key, definition, str(value[0]), value[1])
            return
        if definition.type not in nodeinfo.WIDGET_TYPES and definition.type != "*":
            self.add(
                self.graph_source,
                key,
                f"input '{definition.name}' must be linked to a {definition.type} output, "
                "not set to a value",
                "wrong_type",
            )
            return
        if target in self.overridden:
            return
        found = value_problem(definition, value, class_type, self.object_info)
        if found is not None:
            self.add(self.graph_source, key, found[1], found[0])

    def check_link(
        self, node_id: str, key: str, definition: InputDef, source: str, slot: int
    ) -> None:
        name = definition.name
        if source not in self.graph:
            self.add(
                self.graph_source,
                key,
                f"input '{name}' links to node {source}, which is not in the graph",
                "bad_link",
            )
            return
        if not self.known(source):
            return
        outputs = nodeinfo.output_types(self.object_info, self.graph[source]["class_type"])
        described = describe_node(self.graph, source)
        if not 0 <= slot < len(outputs):
            self.add(
                self.graph_source,
                key,
                f"input '{name}' links to output {slot} of node {described}, which has "
                f"{len(outputs)} output(s)",
                "bad_link",
            )
            return
        if not _types_fit(outputs[slot], definition.type):
            self.add(
                self.graph_source,
                key,
                f"input '{name}' takes {definition.type} but output {slot} of node "
                f"{described} gives {outputs[slot]}",
                "type_mismatch",
            )

    def check_params(self) -> None:
        specs = self.workflow.spec.params or {}
        for param in self.workflow.params:
            self.check_param(param, specs.get(param.name))

    def check_param(self, param: Param, spec: ParamSpec | None) -> None:
        source = self.workflow.source
        key = f"params.{param.name}"
        for node_id, name in param.targets:
            if not self.known(node_id):
                continue
            class_type = self.graph[node_id]["class_type"]
            definition = nodeinfo.input_def(self.object_info, class_type, name)
            described = describe_node(self.graph, node_id)
            if definition is None:
                names = [d.name for d in nodeinfo.input_defs(self.object_info, class_type)]
                self.add(
                    source,
                    key,
                    f"node {described} has no input '{name}'; its inputs are: {_listed(names)}",
                    "unknown_input",
                )
                continue
            if param.type == "choice":
                self.check_choices(param, definition, class_type)
                continue
            if definition.type not in _PARAM_TYPES[param.type]:
                wanted = _TYPE_WORDS.get(definition.type, f"a link from a {definition.type} output")
                self.add(
                    source,
                    key,
                    f"a {param.type} param can't set '{name}' of node {described}, which takes "
                    f"{wanted}",
                    "wrong_type",
                )
                continue
            self.check_values(param, spec, definition, class_type)

    def check_values(
        self, param: Param, spec: ParamSpec | None, definition: InputDef, class_type: str
    ) -> None:
        source = self.workflow.source
        key = f"params.{param.name}"
        where = f"{class_type}.{definition.name}"
        if param.type in ("int", "float", "seed") and spec is not None:
            low, high = definition.minimum, definition.maximum
            if spec.min is not None and low is not None and spec.min < low:
                self.add(
                    source,
                    f"{key}.min",
                    f"{spec.min} is below {where}'s minimum ({low})",
                    "out_of_range",
                )
            if spec.max is not None and high is not None and spec.max > high:
                self.add(
                    source,
                    f"{key}.max",
                    f"{spec.max} is above {where}'s maximum ({high})",
                    "out_of_range",
                )
        if param.is_file:
            return
        if param.default is not None:
            found = value_problem(definition, param.default, class_type)
            if found is not None:
                self.add(source, f"{key}.default", found[1], found[0])
        if param.type == "enum" and spec is not None and isinstance(spec.choices, list):
            for index, choice in enumerate(spec.choices):
                found = value_problem(definition, choice, class_type)
                if found is not None:
                    self.add(source, f"{key}.choices.{index}", found[1], found[0])

    def check_choices(self, param: Param, definition: InputDef, class_type: str) -> None:
        for label, chosen in param.choice_values.items():
            value = chosen.get(definition.name) if isinstance(chosen, Mapping) else chosen
            if value is None:
                continue
            found = value_problem(definition, value, class_type)
            if found is not None:
                key = f"params.{param.name}.choices.{label}"
                self.add(self.workflow.source, key, found[1], found[0])


def check_workflow(
    workflow: Workflow,
    object_info: ObjectInfo,
    *,
    node_map: NodeMap | None = None,
    comfyui_version: str | None = None,
) -> list[Problem]:
    """Check a loaded workflow against the node definitions of a ComfyUI.

    Args:
        workflow: the loaded workflow.
        object_info: the parsed `GET /object_info`.
        node_map: the class -> pack map naming what to install for a missing node class (the
            server's own when it serves one; the bundled one if None).
        comfyui_version: the running ComfyUI's version, if known, for messages.

    Returns:
        Every problem found (empty when ComfyUI should accept the workflow). Graph problems
        name the graph file and node; param problems name the YAML file and param key.
        Missing node classes give one problem per pack (`missing_pack`, `update_pack`,
        `needs_newer_comfyui` or, for a class no pack is known for, `unknown_node`).
        `Problem.code` is otherwise one of: missing_input, bad_link, type_mismatch,
        wrong_type, out_of_range, not_in_list, missing_model, missing_input_file, unknown_input,
        no_output.
    """
    checker = _Checker(workflow, object_info, node_map, comfyui_version)
    checker.check_graph()
    checker.check_params()
    return checker.problems
