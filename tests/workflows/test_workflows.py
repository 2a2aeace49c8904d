"""Loading workflow packs: the shipped packs, the folder loader, names and paths.

Helpers used by the other `test_workflows_*` modules live here too.
"""

from __future__ import annotations

import copy
import functools
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import InvalidValue, WorkflowError
from bot.workflows import (
    InvalidWorkflow,
    Workflow,
    check_workflow,
    load_workflow,
    load_workflows,
)
from bot.workflows.spec import json_schema_text
from tests.conftest import ROOT
from tests.recordings import OBJECT_INFO

WORKFLOWS = ROOT / "workflows"
OBJECT_INFO_PATH = OBJECT_INFO
SHIPPED_CHECKPOINT = "v1-5-pruned-emaonly.safetensors"


@functools.cache
def _recorded_object_info() -> str:
    return OBJECT_INFO_PATH.read_text(encoding="utf-8")


def object_info() -> dict[str, Any]:
    """The real /object_info recorded from ComfyUI (a fresh copy each call)."""
    info: dict[str, Any] = json.loads(_recorded_object_info())
    return info


def installed_object_info() -> dict[str, Any]:
    """The recorded /object_info, on a server that also has the shipped packs' checkpoint.

    The recording was made with a tiny random checkpoint; a real server running the shipped
    packs has the SD 1.5 checkpoint they name.
    """
    info = object_info()
    info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0].append(SHIPPED_CHECKPOINT)
    return info


def shipped_graph(name: str = "sd15-txt2img") -> dict[str, Any]:
    graph: dict[str, Any] = json.loads((WORKFLOWS / f"{name}.json").read_text(encoding="utf-8"))
    return graph


def shipped_yaml(name: str = "sd15-txt2img") -> dict[str, Any]:
    data = yaml.safe_load((WORKFLOWS / f"{name}.yaml").read_text(encoding="utf-8"))
    assert isinstance(data, dict)
    return data


def in_workflows(tmp_path: Path, name: str, text: str) -> Path:
    """A file `name` holding `text` in a folder "workflows" under `tmp_path`."""
    path = tmp_path / "workflows" / name
    path.parent.mkdir()
    path.write_text(text, encoding="utf-8")
    return path


def titled(**params: Any) -> dict[str, Any]:
    """A pack's YAML, as data: the title "t" and these params."""
    return {"title": "t", "params": params}


def write_pack(
    folder: Path,
    name: str,
    spec: dict[str, Any] | None,
    graph: dict[str, Any] | None = None,
) -> Path:
    """Write NAME.yaml (when `spec` is given) and NAME.json into `folder`; return the YAML."""
    folder.mkdir(parents=True, exist_ok=True)
    if graph is not None:
        graph_name = (spec or {}).get("graph") or f"{name}.json"
        (folder / graph_name).write_text(json.dumps(graph), encoding="utf-8")
    path = folder / f"{name}.yaml"
    if spec is not None:
        path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return path


def load_pack(
    tmp_path: Path,
    spec: dict[str, Any],
    graph: dict[str, Any] | None = None,
    name: str = "pack",
) -> Workflow:
    folder = tmp_path / "workflows"
    path = write_pack(folder, name, spec, copy.deepcopy(graph or shipped_graph()))
    return load_workflow(path)


# --- the shipped packs -----------------------------------------------------------------------


def test_every_shipped_workflow_loads_and_checks_clean() -> None:
    info = installed_object_info()
    workflows, problems = load_workflows(WORKFLOWS, info)

    assert [str(p) for p in problems] == []
    assert set(workflows) == {"sd15-txt2img", "sd15-img2img", "upscale"}
    for workflow in workflows.values():
        assert check_workflow(workflow, info) == []
        assert not workflow.detected
        assert workflow.seed_param is not None
        if workflow.spec.followup is None:
            assert workflow.prompt_param is not None
        else:  # a follow-up starts from an image, its prompt is optional (carried over)
            image = workflow.param(workflow.spec.followup.param)
            assert image is not None and image.type == "image" and image.required


def test_shipped_upscale_uses_only_core_nodes_and_is_a_followup() -> None:
    workflow = load_workflow(WORKFLOWS / "upscale.yaml")
    core = object_info()  # a stock ComfyUI 0.3.64: no custom nodes, no upscale models
    assert {n["class_type"] for n in workflow.graph.values()} <= set(core)
    assert workflow.spec.followup is not None
    assert (workflow.spec.followup.label, workflow.spec.followup.param) == ("Upscale", "image")
    classes = {n["class_type"] for n in workflow.graph.values()}
    assert {"ImageScaleBy", "VAEEncode", "KSampler", "VAEDecode"} <= classes
    assert workflow.param("denoise") is not None and workflow.param("denoise").default < 0.5


def test_shipped_workflows_on_the_recorded_server_lack_only_the_checkpoint() -> None:
    workflows, problems = load_workflows(WORKFLOWS, object_info())

    assert workflows == {}
    assert {p.code for p in problems} == {"missing_model"}
    assert all(
        f"checkpoint '{SHIPPED_CHECKPOINT}' is not installed on ComfyUI; "
        "available: tiny-random.safetensors" in p.message
        for p in problems
    )


def test_shipped_img2img_is_its_own_command_and_needs_an_image() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-img2img.yaml")

    assert workflow.spec.command == "img2img"
    assert workflow.require_param("image").required
    assert workflow.require_param("image").targets == (("10", "image"),)


def test_shipped_txt2img_size_choice_sets_width_and_height() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-txt2img.yaml")
    size = workflow.require_param("size")

    assert size.choices == ("square", "portrait", "landscape")
    assert set(size.targets) == {("5", "width"), ("5", "height")}
    assert size.default == "square"


def test_committed_json_schema_matches_the_model() -> None:
    committed = (WORKFLOWS / "workflow.schema.json").read_text(encoding="utf-8")

    assert committed == json_schema_text(), (
        "workflows/workflow.schema.json is stale: "
        "run `python -m bot.workflows > workflows/workflow.schema.json`"
    )


def test_shipped_yaml_keys_are_all_in_the_schema() -> None:
    schema = json.loads(json_schema_text())
    param_keys = set(schema["$defs"]["ParamSpec"]["properties"])
    for name in ("sd15-txt2img", "sd15-img2img"):
        data = shipped_yaml(name)
        assert set(data) <= set(schema["properties"])
        for param in data["params"].values():
            assert set(param) <= param_keys


# --- Workflow helpers -----------------------------------------------------------------------


def test_param_lookup_finds_a_param_by_name() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-txt2img.yaml")

    steps = workflow.param("steps")
    assert steps is not None
    assert (steps.type, steps.min, steps.max, steps.default) == ("int", 1, 50, 20)
    assert workflow.param("stpes") is None


def test_requiring_an_unknown_param_lists_the_options() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-txt2img.yaml")

    with pytest.raises(InvalidValue) as caught:
        workflow.require_param("stpes")

    assert caught.value.param == "stpes"
    assert "prompt, negative, seed, steps" in str(caught.value)


def test_prompt_param_is_the_first_required_text_param(tmp_path: Path) -> None:
    spec = titled(
        subject={"type": "text", "node": "Positive", "input": "text", "required": True},
        negative={"type": "text", "node": "Negative", "input": "text"},
    )
    workflow = load_pack(tmp_path, spec)

    assert workflow.prompt_param is not None
    assert workflow.prompt_param.name == "subject"
    assert workflow.seed_param is None


# --- the folder loader ----------------------------------------------------------------------


def test_a_broken_pack_is_reported_and_the_others_still_load(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    write_pack(folder, "good", shipped_yaml() | {"graph": "good.json"}, shipped_graph())
    broken = shipped_yaml() | {"graph": "broken.json"}
    broken["params"]["steps"]["max"] = "lots"
    write_pack(folder, "broken", broken, shipped_graph())

    workflows, problems = load_workflows(folder)

    assert list(workflows) == ["good"]
    assert [str(p) for p in problems] == [
        "workflows/broken.yaml: params.steps.max: Input should be a valid integer, "
        "unable to parse string as an integer"
    ]


def test_a_graph_without_yaml_is_loaded_with_detected_params(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    write_pack(folder, "plain", None, shipped_graph())

    workflows, problems = load_workflows(folder)

    assert problems == []
    workflow = workflows["plain"]
    assert workflow.detected
    assert workflow.title == "plain"
    assert workflow.prompt_param is not None
    assert workflow.prompt_param.targets == (("6", "text"),)


def test_a_graph_used_by_another_pack_is_not_a_pack_of_its_own(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    write_pack(folder, "portrait", shipped_yaml() | {"graph": "shared.json"}, shipped_graph())

    workflows, _ = load_workflows(folder)

    assert list(workflows) == ["portrait"]


def test_the_published_schema_is_not_taken_for_a_graph(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "workflow.schema.json").write_text(json_schema_text(), encoding="utf-8")

    assert load_workflows(folder) == ({}, [])


def test_a_missing_folder_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(WorkflowError, match="workflows folder not found"):
        load_workflows(tmp_path / "nope")


@pytest.mark.parametrize(
    "graph", ["../secret.json", "/etc/passwd", "sub/x.json", "..", "a\\b.json"]
)
def test_graph_must_be_a_plain_file_name_in_the_folder(tmp_path: Path, graph: str) -> None:
    folder = tmp_path / "workflows"
    (tmp_path / "secret.json").write_text(json.dumps(shipped_graph()), encoding="utf-8")
    path = write_pack(folder, "pack", shipped_yaml() | {"graph": graph})

    with pytest.raises(InvalidWorkflow) as caught:
        load_workflow(path)

    assert [(p.file, p.key) for p in caught.value.problems] == [("workflows/pack.yaml", "graph")]
    assert "plain file name" in str(caught.value)


def test_a_missing_graph_file_is_named(tmp_path: Path) -> None:
    path = write_pack(tmp_path / "workflows", "pack", shipped_yaml() | {"graph": "gone.json"})

    with pytest.raises(InvalidWorkflow, match=r"workflows/gone\.json: file not found"):
        load_workflow(path)


@pytest.mark.parametrize("name", ["My Pack", "UPPER", "a" * 33, "dots.in.name"])
def test_workflow_names_must_be_usable_as_discord_names(tmp_path: Path, name: str) -> None:
    folder = tmp_path / "workflows"
    write_pack(folder, name, shipped_yaml() | {"graph": "g.json"}, shipped_graph())

    workflows, problems = load_workflows(folder)

    assert workflows == {}
    assert len(problems) == 1
    assert problems[0].code == "name"
    assert "not a usable workflow name" in problems[0].message


def test_two_packs_cannot_claim_the_same_command(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    for name in ("a", "b"):
        write_pack(
            folder,
            name,
            shipped_yaml() | {"graph": f"{name}.json", "command": "draw"},
            shipped_graph(),
        )

    workflows, problems = load_workflows(folder)

    assert list(workflows) == ["a"]
    assert [str(p) for p in problems] == [
        "workflows/b.yaml: command: /draw is already taken by a; pick another name"
    ]


def test_a_command_cannot_shadow_comfycords_own(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    write_pack(
        folder, "a", shipped_yaml() | {"graph": "a.json", "command": "imagine"}, shipped_graph()
    )

    workflows, problems = load_workflows(folder)

    assert workflows == {}
    assert "/imagine is already taken by comfycord" in problems[0].message


def test_two_params_setting_one_input_is_a_problem(tmp_path: Path) -> None:
    spec = titled(
        steps={"type": "int", "node": "KSampler", "input": "steps"},
        quality={"type": "int", "node": "3", "input": "steps"},
    )

    with pytest.raises(InvalidWorkflow) as caught:
        load_pack(tmp_path, spec)

    assert [str(p) for p in caught.value.problems] == [
        "workflows/pack.yaml: params.quality: sets input 'steps' of node 3 (KSampler), "
        "which params.steps sets too"
    ]


def test_a_param_cannot_overwrite_a_link(tmp_path: Path) -> None:
    spec = titled(clip={"type": "text", "node": "Positive", "input": "clip"})

    with pytest.raises(InvalidWorkflow, match=r"params\.clip: input 'clip' of node 6 .* is linked"):
        load_pack(tmp_path, spec)


def test_every_unresolvable_node_is_reported_at_once(tmp_path: Path) -> None:
    spec = titled(
        prompt={"type": "text", "node": "Postive", "input": "text", "required": True},
        negative={"type": "text", "node": "CLIPTextEncode", "input": "text"},
    )

    with pytest.raises(InvalidWorkflow) as caught:
        load_pack(tmp_path, spec)

    keys = [p.key for p in caught.value.problems]
    assert keys == ["params.prompt.node", "params.negative.node"]
    assert "Did you mean 'Positive'?" in caught.value.problems[0].message
    assert "ambiguous" in caught.value.problems[1].message


def test_a_graph_default_that_breaks_the_range_is_reported(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["3"]["inputs"]["steps"] = 80
    spec = titled(steps={"type": "int", "node": "3", "input": "steps", "max": 50})

    with pytest.raises(InvalidWorkflow) as caught:
        load_pack(tmp_path, spec, graph)

    assert str(caught.value) == (
        "workflows/pack.yaml: params.steps.default: the graph's value (80) doesn't fit: "
        "must be a whole number at most 50; got 80"
    )


def test_defaults_come_from_the_graph_when_not_given(tmp_path: Path) -> None:
    spec = titled(
        negative={"type": "text", "node": "Negative", "input": "text"},
        cfg={"type": "float", "node": "KSampler", "input": "cfg"},
        sampler={"type": "enum", "node": "KSampler", "input": "sampler_name"},
    )
    workflow = load_pack(tmp_path, spec)

    assert workflow.require_param("negative").default == "blurry, low quality, watermark, text"
    assert workflow.require_param("cfg").default == 7.0
    assert isinstance(workflow.require_param("cfg").default, float)
    assert workflow.require_param("sampler").default == "euler"


def test_object_info_fills_enum_choices_and_number_ranges(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    spec = titled(
        steps={"type": "int", "node": "KSampler", "input": "steps"},
        scheduler={"type": "enum", "node": "KSampler", "input": "scheduler"},
    )
    path = write_pack(folder, "pack", spec, shipped_graph())

    workflow = load_workflow(path, object_info())

    assert (workflow.require_param("steps").min, workflow.require_param("steps").max) == (1, 10000)
    assert "karras" in workflow.require_param("scheduler").choices


def test_a_ui_format_graph_needs_object_info(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "ui.json").write_text(json.dumps({"nodes": [], "links": []}), encoding="utf-8")

    _, problems = load_workflows(folder)

    assert len(problems) == 1
    assert "UI-format export" in str(problems[0])
    assert problems[0].file == "workflows/ui.json"
