"""Workflow packs: a ComfyUI graph plus the YAML that turns it into slash-command options.

    spec.py      the YAML schema (pydantic) and its published JSON Schema
    graph.py     API-format graphs, UI-format conversion, node references
    detect.py    finding params in a graph when the YAML leaves them out
    patch.py     pure: member values -> checked values -> patched API prompt
    validate.py  checking a workflow against ComfyUI's /object_info
    loader.py    reading packs from the workflows folder
    names.py     deriving a valid pack name from any file name
    packs.py     importing uploaded files (preview), saving and exporting packs

Typical use::

    workflows, problems = load_workflows("workflows", object_info)
    workflow = workflows["sd15-txt2img"]
    values = coerce_values(workflow, {"prompt": "a lighthouse at dusk"})
    prompt = apply(workflow, values)   # POST /prompt {"prompt": prompt}
"""

from bot.workflows.loader import (
    RESERVED_COMMANDS,
    SEED_MAX,
    build_workflow,
    load_workflow,
    load_workflows,
)
from bot.workflows.model import Param, Workflow
from bot.workflows.names import derive_name
from bot.workflows.patch import apply, coerce_values
from bot.workflows.problems import InvalidWorkflow, Problem
from bot.workflows.spec import ParamSpec, WorkflowSpec
from bot.workflows.validate import check_workflow

__all__ = [
    "RESERVED_COMMANDS",
    "SEED_MAX",
    "InvalidWorkflow",
    "Param",
    "ParamSpec",
    "Problem",
    "Workflow",
    "WorkflowSpec",
    "apply",
    "build_workflow",
    "check_workflow",
    "coerce_values",
    "derive_name",
    "load_workflow",
    "load_workflows",
]
