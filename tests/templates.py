"""The official ComfyUI workflow templates (the `comfyui-workflow-templates` dev dependency),
loaded the way a pack without YAML is, for the corpus tests and `benchmarks/bench_templates.py`.
"""

from __future__ import annotations

import json
import traceback
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from bot.errors import WorkflowError
from bot.workflows import WorkflowSpec, apply, build_workflow, check_workflow, coerce_values
from bot.workflows.problems import InvalidWorkflow
from tests.recordings import OBJECT_INFO

IMAGE_CATEGORIES = ("Getting Started", "Image", "Image API")
"""The template browser's image categories (its other categories are video, audio, 3D, LLM)."""

FRONTEND_ONLY = frozenset({"Note", "MarkdownNote", "Reroute", "PrimitiveNode"})


def templates_dir() -> Path:
    import comfyui_workflow_templates  # the dev dependency

    return Path(comfyui_workflow_templates.__file__).parent / "templates"


def template_files() -> list[Path]:
    """Every template graph (the index files left out), sorted by name."""
    return sorted(p for p in templates_dir().glob("*.json") if not p.name.startswith("index"))


@cache
def image_template_names() -> frozenset[str]:
    """Names of the templates listed under an image category of the template browser."""
    index = json.loads((templates_dir() / "index.json").read_text(encoding="utf-8"))
    return frozenset(
        t["name"] for c in index if c["title"] in IMAGE_CATEGORIES for t in c["templates"]
    )


@cache
def load_object_info() -> Mapping[str, Any]:
    return json.loads(OBJECT_INFO.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


def missing_classes(data: Mapping[str, Any], object_info: Mapping[str, Any]) -> set[str]:
    """Node classes of a UI-format graph (subgraphs included) that `object_info` lacks."""
    subgraphs = (data.get("definitions") or {}).get("subgraphs") or []
    ids = {s["id"] for s in subgraphs}
    nodes = list(data["nodes"]) + [n for s in subgraphs for n in s["nodes"]]
    return {
        n["type"]
        for n in nodes
        if n["type"] not in object_info and n["type"] not in ids and n["type"] not in FRONTEND_ONLY
    }


@dataclass
class TemplateResult:
    """What became of one template."""

    name: str
    subgraphs: bool = False
    missing_classes: set[str] = field(default_factory=set)
    converted: bool = False
    loaded: bool = False
    """Converted, and its params detected and resolved."""
    usable: bool = False
    """Loaded, passes the check against `/object_info` (models aside), offers a prompt."""
    params: list[str] = field(default_factory=list)
    problem: str = ""
    graph_problems: list[str] = field(default_factory=list)
    crash: str = ""


def run_template(path: Path, object_info: Mapping[str, Any]) -> TemplateResult:
    """Convert, detect, build, check and patch one template; never raises."""
    name = path.stem.strip()
    data = json.loads(path.read_text(encoding="utf-8"))
    result = TemplateResult(name=name)
    result.subgraphs = bool((data.get("definitions") or {}).get("subgraphs"))
    result.missing_classes = missing_classes(data, object_info)
    spec = WorkflowSpec(title=name[:100], graph=path.name)
    try:
        workflow = build_workflow("template", spec, path.parent, object_info, source=path.name)
        result.converted = result.loaded = True
        result.params = [p.name for p in workflow.params]
        # Model files are the server's own business (the engine substitutes missing ones):
        # everything else ComfyUI would reject makes the pack unusable.
        found = [p for p in check_workflow(workflow, object_info) if p.code != "missing_model"]
        result.graph_problems = [str(p) for p in found if p.file == workflow.graph_source]
        if found:
            result.problem = "; ".join(str(p) for p in found)
        result.usable = not found and workflow.prompt_param is not None
        raw: dict[str, Any] = {}
        for param in workflow.params:
            if param.is_file:
                raw[param.name] = "example.png"
            elif param.type == "text" and param.required:
                raw[param.name] = "a lighthouse at dusk"
        values = coerce_values(workflow, raw, object_info=object_info)
        apply(workflow, values)
    except InvalidWorkflow as exc:
        result.problem = str(exc)
    except WorkflowError as exc:
        result.problem = str(exc)
    except Exception:  # the corpus must never crash: record it for the test to report
        result.crash = traceback.format_exc()
    return result
