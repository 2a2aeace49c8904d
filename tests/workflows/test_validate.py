"""Checking workflows against ComfyUI's /object_info: each kind of problem is found and named."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from bot.workflows import Problem, check_workflow, load_workflow, load_workflows
from tests.workflows.test_workflows import (
    installed_object_info,
    shipped_graph,
    shipped_yaml,
    write_pack,
)

Graph = dict[str, Any]


def broken_pack(
    tmp_path: Path,
    edit_graph: Callable[[Graph], object] | None = None,
    edit_spec: Callable[[dict[str, Any]], object] | None = None,
    info: dict[str, Any] | None = None,
) -> list[Problem]:
    """Write the shipped txt2img pack, broken as told, beside a good pack; load the folder."""
    folder = tmp_path / "workflows"
    write_pack(folder, "good", shipped_yaml() | {"graph": "good.json"}, shipped_graph())
    graph = shipped_graph()
    spec = shipped_yaml() | {"graph": "broken.json"}
    if edit_graph is not None:
        edit_graph(graph)
    if edit_spec is not None:
        edit_spec(spec)
    write_pack(folder, "broken", spec, graph)

    workflows, problems = load_workflows(folder, info or installed_object_info())

    assert list(workflows) == ["good"], "the good pack still loads; the broken one is left out"
    return problems


def only(problems: list[Problem]) -> Problem:
    assert len(problems) == 1, [str(p) for p in problems]
    return problems[0]


def test_an_unknown_class_type_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["9"]["class_type"] = "SaveImageWebsocketPlus"

    problem = only(broken_pack(tmp_path, edit))

    assert problem.code == "unknown_node"
    assert str(problem) == (
        'workflows/broken.json: node 9 "Save Image" (SaveImageWebsocketPlus): '
        "uses 'SaveImageWebsocketPlus' (node 9), which no known custom node pack provides: "
        "search ComfyUI-Manager or the registry (https://registry.comfy.org) for the class name, "
        "install the pack and restart ComfyUI"
    )


def test_a_missing_required_input_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        del graph["3"]["inputs"]["model"]

    problem = only(broken_pack(tmp_path, edit))

    assert str(problem) == (
        "workflows/broken.json: node 3 (KSampler): required input 'model' is missing"
    )
    assert problem.code == "missing_input"


def test_an_input_a_param_always_sets_may_be_missing_from_the_graph(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        del graph["6"]["inputs"]["text"]

    folder = tmp_path / "workflows"
    graph = shipped_graph()
    edit(graph)
    write_pack(folder, "ok", shipped_yaml() | {"graph": "ok.json"}, graph)

    assert load_workflows(folder, installed_object_info())[1] == []


def test_a_link_to_a_missing_node_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["8"]["inputs"]["vae"] = ["42", 2]

    problem = only(broken_pack(tmp_path, edit))

    assert str(problem) == (
        "workflows/broken.json: node 8 \"VAE Decode\" (VAEDecode): input 'vae' links to "
        "node 42, which is not in the graph"
    )
    assert problem.code == "bad_link"


def test_a_link_to_a_missing_output_slot_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["8"]["inputs"]["vae"] = ["4", 3]

    problem = only(broken_pack(tmp_path, edit))

    assert (
        'links to output 3 of node 4 "Load Checkpoint" (CheckpointLoaderSimple), which has 3'
        in problem.message
    )
    assert problem.code == "bad_link"


def test_a_link_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["8"]["inputs"]["vae"] = ["4", 1]

    problem = only(broken_pack(tmp_path, edit))

    assert problem.code == "type_mismatch"
    assert "input 'vae' takes VAE but output 1 of node 4" in problem.message
    assert problem.message.endswith("gives CLIP")


def test_a_graph_without_an_output_node_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        del graph["9"]

    problem = only(broken_pack(tmp_path, edit))

    assert problem.code == "no_output"
    assert str(problem).startswith("workflows/broken.json: has no output node")


def test_a_missing_checkpoint_lists_the_installed_ones(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["4"]["inputs"]["ckpt_name"] = "foo.safetensors"

    problem = only(broken_pack(tmp_path, edit))

    assert problem.code == "missing_model"
    assert problem.message == (
        "checkpoint 'foo.safetensors' is not installed on ComfyUI; available: "
        "tiny-random.safetensors, v1-5-pruned-emaonly.safetensors"
    )


def test_a_graph_value_out_of_the_node_range_is_named(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["5"]["inputs"]["batch_size"] = 5000

    problem = only(broken_pack(tmp_path, edit))

    assert problem.code == "out_of_range"
    assert problem.message == "5000 is above EmptyLatentImage.batch_size's maximum (4096)"


def test_a_target_input_the_node_does_not_have_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["steps"]["input"] = "stepz"

    problem = only(broken_pack(tmp_path, edit_spec=edit))

    assert problem.code == "unknown_input"
    assert str(problem).startswith(
        "workflows/broken.yaml: params.steps: node 3 (KSampler) has no input 'stepz'; "
        "its inputs are: model, seed, steps"
    )


def test_a_param_max_above_the_node_maximum_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["steps"]["max"] = 20000

    problem = only(broken_pack(tmp_path, edit_spec=edit))

    assert str(problem) == (
        "workflows/broken.yaml: params.steps.max: 20000 is above KSampler.steps's maximum (10000)"
    )


def on_ksampler(kind: str, name: str, **more: Any) -> dict[str, Any]:
    """A param of type `kind` setting the KSampler's input `name`."""
    return {"type": kind, "node": "KSampler", "input": name, **more}


def checked(tmp_path: Path, edit_spec: Callable[[dict[str, Any]], object]) -> list[Problem]:
    """Load the edited pack without object_info (as when ComfyUI is down), then check it."""
    spec = shipped_yaml()
    edit_spec(spec)
    path = write_pack(tmp_path / "workflows", "pack", spec, shipped_graph())
    return check_workflow(load_workflow(path), installed_object_info())


def test_a_param_default_outside_the_node_range_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["cfg"] = on_ksampler("float", "cfg", default=150)

    problem = only(checked(tmp_path, edit))

    assert (problem.key, problem.code) == ("params.cfg.default", "out_of_range")
    assert problem.message == "150.0 is above KSampler.cfg's maximum (100.0)"


def test_a_default_outside_the_node_range_is_caught_at_load_with_object_info(
    tmp_path: Path,
) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["cfg"] = on_ksampler("float", "cfg", default=150)

    problem = only(broken_pack(tmp_path, edit_spec=edit))

    assert str(problem) == (
        "workflows/broken.yaml: params.cfg.default: the default (150) doesn't fit: "
        "must be a number between 0 and 100; got 150"
    )


def test_an_enum_default_not_in_the_list_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["scheduler"]["default"] = "sideways"

    problem = only(checked(tmp_path, edit))

    assert (problem.key, problem.code) == ("params.scheduler.default", "not_in_list")
    assert problem.message.startswith(
        "'sideways' is not one of KSampler.scheduler's choices: simple, sgm_uniform, karras"
    )


def test_enum_choices_not_in_the_list_are_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["sampler"]["choices"].append("warp_drive")

    problem = only(broken_pack(tmp_path, edit_spec=edit))

    assert problem.key == "params.sampler.choices.9"
    assert problem.message.startswith("'warp_drive' is not one of KSampler.sampler_name's")


def test_a_choice_value_out_of_the_node_range_is_named_by_label(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["size"]["choices"]["tiny"] = {"width": 8, "height": 8}

    problems = broken_pack(tmp_path, edit_spec=edit)

    assert [(p.key, p.message) for p in problems] == [
        ("params.size.choices.tiny", "8 is below EmptyLatentImage.width's minimum (16)"),
        ("params.size.choices.tiny", "8 is below EmptyLatentImage.height's minimum (16)"),
    ]


def test_a_param_of_the_wrong_type_for_its_input_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["steps"] = {"type": "text", "node": "KSampler", "input": "steps"}

    problems = broken_pack(tmp_path, edit_spec=edit)

    assert [str(p) for p in problems] == [
        "workflows/broken.yaml: params.steps.default: the graph's value (20) doesn't fit: "
        "must be text"
    ]


def test_a_text_param_on_a_number_input_is_named(tmp_path: Path) -> None:
    def edit(spec: dict[str, Any]) -> None:
        spec["params"]["steps"] = on_ksampler("text", "steps", default="20")

    problem = only(broken_pack(tmp_path, edit_spec=edit))

    assert problem.code == "wrong_type"
    assert problem.message == (
        "a text param can't set 'steps' of node 3 (KSampler), which takes a whole number"
    )


def test_every_problem_of_a_pack_is_reported_together(tmp_path: Path) -> None:
    def edit(graph: Graph) -> None:
        graph["4"]["inputs"]["ckpt_name"] = "foo.safetensors"
        del graph["3"]["inputs"]["model"]
        graph["8"]["inputs"]["vae"] = ["42", 2]

    problems = broken_pack(tmp_path, edit)

    assert [p.code for p in problems] == ["missing_input", "missing_model", "bad_link"]
