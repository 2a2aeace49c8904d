"""The official ComfyUI workflow templates (0.1.95, shipped with ComfyUI 0.3.64) as packs.

Each is loaded the way a `workflows/NAME.json` without YAML is, against the recorded
`/object_info` of that ComfyUI: it loads, or is refused naming every class it lacks; nothing
crashes in conversion, detection, building or patching.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

import pytest

from bot.workflows import WorkflowSpec, build_workflow, check_workflow
from bot.workflows.convert import convert_ui
from bot.workflows.model import Workflow
from tests.templates import (
    TemplateResult,
    load_object_info,
    run_template,
    template_files,
    templates_dir,
)


@cache
def _results() -> dict[str, TemplateResult]:
    info = load_object_info()
    return {path.name: run_template(path, info) for path in template_files()}


def _template(name: str) -> Workflow:
    spec = WorkflowSpec(title=name, graph=f"{name}.json")
    return build_workflow(
        "template", spec, templates_dir(), load_object_info(), source=f"{name}.json"
    )


def test_the_corpus_is_the_whole_package() -> None:
    assert len(_results()) == 172


def test_no_template_crashes_the_loader_detection_building_or_patching() -> None:
    crashed = {name: r.crash for name, r in _results().items() if r.crash}

    assert crashed == {}


def test_every_subgraph_template_converts_and_its_graph_passes_validation() -> None:
    subgraph_templates = [r for r in _results().values() if r.subgraphs]
    failed = {}
    for result in subgraph_templates:
        path = templates_dir() / f"{result.name}.json"
        conversion = convert_ui(json.loads(path.read_text(encoding="utf-8")), load_object_info())
        ids = {s["id"] for s in json.loads(path.read_text())["definitions"]["subgraphs"]}
        leftover = [n for n in conversion.graph.values() if n["class_type"] in ids]
        missing = {m.class_type for m in conversion.missing}
        if leftover or missing != result.missing_classes:
            failed[result.name] = f"leftover {leftover}, missing {missing}"
        elif not missing and result.graph_problems:
            failed[result.name] = "; ".join(result.graph_problems)

    assert len(subgraph_templates) == 7
    assert failed == {}


def test_default_template_reads_every_widget_after_the_control_slot() -> None:
    workflow = _template("default")

    sampler = next(n for n in workflow.graph.values() if n["class_type"] == "KSampler")
    assert (sampler["inputs"]["steps"], sampler["inputs"]["cfg"]) == (20, 8)
    assert sampler["inputs"]["sampler_name"] == "euler"
    saver = next(n for n in workflow.graph.values() if n["class_type"] == "SaveImage")
    assert saver["inputs"]["filename_prefix"] == "ComfyUI"
    assert workflow.prompt_param is not None


@pytest.mark.parametrize(
    ("template", "class_type", "said"),
    [
        ("hidream_i1_dev", "QuadrupleCLIPLoader", "CLIP model 'llama_3.1_8b_instruct"),
        ("image_qwen_image_controlnet_patch", "ModelPatchLoader", "model patch 'qwen_image_"),
    ],
)
def test_model_inputs_of_newer_loaders_are_reported_as_missing_models(
    template: str, class_type: str, said: str
) -> None:
    problems = [
        p for p in check_workflow(_template(template), load_object_info()) if class_type in p.key
    ]

    assert problems
    assert all(p.code == "missing_model" for p in problems), problems
    assert any(p.message.startswith(said) for p in problems), problems


def _param_target(workflow: Workflow, name: str) -> tuple[str, Any]:
    param = workflow.require_param(name)
    node_id, input_name = param.targets[0]
    return workflow.graph[node_id]["class_type"], input_name
