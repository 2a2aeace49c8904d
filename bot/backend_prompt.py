"""What a job's prompt gets on its way to one backend: the paths of its uploads, and models that
backend has in place of the ones it lacks."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from bot.workflows import Workflow, nodeinfo

log = logging.getLogger(__name__)


def paths_for_uploads(
    workflow: Workflow,
    prompt: dict[str, Any],
    object_info: Mapping[str, Any],
    uploaded: Mapping[str, str],
) -> None:
    """Give a path loader the path of an uploaded file, not only its name.

    A loader that takes a path as text (`VHS_LoadVideoPath`, WAS `Image Load`) opens it from
    ComfyUI's working folder, while an upload's name is relative to the input folder; such a
    loader is only an option when the graph's path lies in the input folder (`input/clip.mp4`),
    so the upload goes in that same folder: `input/comfycord/…`.
    """
    for name in uploaded:
        param = workflow.param(name)
        if param is None:
            continue
        for node_id, input_name in param.targets:
            node = prompt.get(node_id)
            original = workflow.graph.get(node_id, {}).get("inputs", {}).get(input_name)
            if node is None or not isinstance(original, str):
                continue
            definition = nodeinfo.input_def(object_info, str(node["class_type"]), input_name)
            folder = original.replace("\\", "/").rpartition("/")[0]
            if definition is not None and definition.type == "STRING" and folder:
                node["inputs"][input_name] = f"{folder}/{node['inputs'][input_name]}"


def substitute_models(
    workflow: Workflow, prompt: dict[str, Any], info: Mapping[str, Any] | None, where: str
) -> list[str]:
    """Swap a model the pack names but this backend lacks for the first one it has.

    Only inputs no parameter sets are touched: a member's explicit choice is never changed.
    """
    if info is None:
        return []  # submit will say what is wrong
    set_by_params = {target for p in workflow.params for target in p.targets}
    notes = []
    for node_id, node in prompt.items():
        class_type = node.get("class_type", "")
        for name, value in list(node.get("inputs", {}).items()):
            if (node_id, name) in set_by_params or not isinstance(value, str):
                continue
            spec = nodeinfo.input_def(info, class_type, name)
            kind = nodeinfo.model_kind(class_type, spec, value) if spec else None
            if spec is None or kind is None or not spec.choices:
                continue
            if value not in spec.choices:
                node["inputs"][name] = spec.choices[0]
                notes.append(
                    f"{kind} '{value}' is not installed on {where}; "
                    f"used '{spec.choices[0]}' instead"
                )
                log.warning("job uses %s: %s", workflow.name, notes[-1])
    return notes
