"""The official ComfyUI workflow templates (0.1.95, shipped with ComfyUI 0.3.64) as packs.

Each is loaded the way a `workflows/NAME.json` without YAML is, against the recorded
`/object_info` of that ComfyUI: it loads, or is refused naming every class it lacks; nothing
crashes in conversion, detection, building or patching.
"""

from __future__ import annotations

import json
from functools import cache

import pytest

from bot.workflows import WorkflowSpec, build_workflow, check_workflow
from bot.workflows.convert import convert_ui
from bot.workflows.model import Workflow
from tests.templates import (
    TemplateResult,
    image_template_names,
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


def test_each_template_loads_or_is_refused_naming_every_missing_class_it_runs() -> None:
    unexplained = {}
    for path in template_files():
        result = _results()[path.name]
        if result.loaded:
            continue
        data = json.loads(path.read_text(encoding="utf-8"))
        # Classes only in muted or bypassed nodes never run, so they are not asked for.
        running = {m.class_type for m in convert_ui(data, load_object_info()).missing}
        unnamed = [c for c in running if f"'{c}'" not in result.problem]
        if not running or unnamed or not running <= result.missing_classes:
            unexplained[path.name] = result.problem[:300]

    assert unexplained == {}


def test_at_least_95_percent_of_image_templates_become_usable_packs_with_a_prompt() -> None:
    images = [r for r in _results().values() if r.name in image_template_names()]
    known = [r for r in images if not r.missing_classes]
    unusable = {r.name: r.problem[:200] or ",".join(r.params) for r in known if not r.usable}

    assert len(images) == 86
    assert len(known) == 84
    assert len(known) - len(unusable) >= 0.95 * len(known), unusable


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


def _targets(workflow: Workflow, name: str) -> list[tuple[str, str]]:
    return list(workflow.require_param(name).targets)


# --- the cases the issue lists ----------------------------------------------------------------


def test_a_missing_core_node_of_a_template_asks_for_a_newer_comfyui_and_names_all() -> None:
    result = _results()["esrgan_example.json"]

    assert "'UpscaleModelLoader'" in result.problem
    assert "'ImageUpscaleWithModel'" in result.problem
    assert "update ComfyUI" in result.problem
    assert "install" not in result.problem.lower()


def test_the_prompt_behind_a_dual_cfg_guider_is_found_and_never_taken_for_the_negative() -> None:
    workflow = _template("hidream_e1_1")

    assert _targets(workflow, "prompt") == [("6", "text")]  # reaches cond1, the guider's first
    assert workflow.param("negative") is None or ("6", "text") not in _targets(workflow, "negative")


def test_a_zeroed_positive_leaves_the_text_encoder_to_the_negative() -> None:
    workflow = _template("sdxl_revision_zero_positive")

    assert workflow.param("prompt") is None
    assert _targets(workflow, "negative") == [("6", "text")]


def test_every_text_input_of_clip_text_encode_flux_gets_the_prompt() -> None:
    workflow = _template("flux_dev_full_text_to_image")

    assert _targets(workflow, "prompt") == [("41", "clip_l"), ("41", "t5xxl")]


def test_the_refiner_encoders_get_the_same_prompt_and_negative_as_the_base() -> None:
    workflow = _template("sdxl_simple_example")

    assert _targets(workflow, "prompt") == [("6", "text"), ("15", "text")]
    assert _targets(workflow, "negative") == [("7", "text"), ("16", "text")]
    assert _targets(workflow, "seed") == [("10", "noise_seed")]


def test_a_prompt_input_on_an_image_node_without_a_sampler_is_the_prompt() -> None:
    workflow = _template("api_openai_dall_e_3_t2i")

    assert _targets(workflow, "prompt") == [("21", "prompt")]
    assert _targets(workflow, "seed") == [("21", "seed")]


def test_detected_ranges_follow_object_info() -> None:
    workflow = _template("sdxlturbo_example")

    steps = workflow.require_param("steps")
    assert _targets(workflow, "steps") == [("22", "steps")]
    assert (steps.min, steps.max) == (1, 10)  # SDTurboScheduler allows 10
    assert _results()["sdxlturbo_example.json"].usable
