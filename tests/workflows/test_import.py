"""Importing a workflow from bytes: preview, save, export, and every way an upload is refused."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from bot.errors import NotFound, WorkflowError
from bot.workflows import InvalidWorkflow, check_workflow, load_workflow, load_workflows
from bot.workflows.packs import (
    MAX_GRAPH_BYTES,
    ImportPreview,
    export_pack,
    prepare_import,
    preview_lines,
    save_pack,
)
from tests.conftest import make_settings, running_engine, shipped_copy
from tests.fakes.comfyui import FakeComfyUI
from tests.workflows.test_graph import txt2img_ui_export
from tests.workflows.test_workflows import (
    WORKFLOWS,
    installed_object_info,
    object_info,
    shipped_graph,
)


def folder_with_shipped(tmp_path: Path) -> Path:
    return shipped_copy(tmp_path / "workflows")


def graph_bytes(graph: dict[str, Any] | None = None) -> bytes:
    return json.dumps(graph or shipped_graph()).encode()


def preview_of(folder: Path, data: bytes, file_name: str, **kwargs: Any) -> ImportPreview:
    kwargs.setdefault("object_info", installed_object_info())
    return prepare_import(data, file_name, folder=folder, **kwargs)


# the preview ------------------------------------------------------------------------------------
def test_preview_lists_each_option_with_its_node_input_default_and_range(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    preview = preview_of(folder, graph_bytes(), "My Flow.json")

    assert preview.name == "my-flow" and preview.title == "My Flow"
    assert preview.checked and preview.problems == () and preview.missing_classes == ()
    options = {o.name: o for o in preview.options}
    assert list(options)[:2] == ["prompt", "negative"]
    assert options["prompt"].required
    assert options["prompt"].sets == ('6 "Positive" (CLIPTextEncode).text',)
    assert options["steps"].sets == ("3 (KSampler).steps",)
    assert options["steps"].default == 20 and options["steps"].range.startswith("between 1 and")
    assert options["width"].sets == ('5 "Empty Latent Image" (EmptyLatentImage).width',)
    assert "euler" in options["sampler"].range
    lines = preview_lines(preview)
    assert any(line.startswith("steps (int; between 1 and") for line in lines)
    assert any("named `my-flow` after the file" in line for line in lines)
    assert list(folder.iterdir()) == []  # nothing is written before saving


def test_a_ui_format_save_is_converted_and_the_written_graph_is_api_format(
    tmp_path: Path,
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    preview = preview_of(folder, json.dumps(txt2img_ui_export()).encode(), "txt2img.json")

    assert any("converted from a UI-format save" in n for n in preview.notes)
    written = json.loads(preview.graph_text)
    assert "nodes" not in written and written["3"]["class_type"] == "KSampler"
    assert preview.workflow.prompt_param is not None


def test_unknown_classes_are_all_listed_and_block_saving(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["20"] = {"class_type": "FancyUpscaler", "inputs": {"image": ["8", 0]}}
    graph["21"] = {"class_type": "Custom Detailer", "inputs": {"image": ["20", 0]}}
    preview = preview_of(tmp_path, graph_bytes(graph), "custom.json")

    assert preview.missing_classes == ("Custom Detailer", "FancyUpscaler")
    assert {p.code for p in preview.blocking} == {"unknown_node"}
    assert "missing node classes: Custom Detailer, FancyUpscaler" in preview_lines(preview)


def test_a_missing_model_is_shown_but_does_not_block(tmp_path: Path) -> None:
    preview = preview_of(tmp_path, graph_bytes(), "flow.json", object_info=object_info())

    assert preview.missing_models and "v1-5-pruned-emaonly.safetensors" in preview.missing_models[0]
    assert preview.blocking == ()


def test_without_comfyui_an_api_graph_is_previewed_unchecked_and_a_ui_save_refused(
    tmp_path: Path,
) -> None:
    preview = preview_of(tmp_path, graph_bytes(), "flow.json", object_info=None)
    assert not preview.checked and any("not checked" in n for n in preview.notes)
    with pytest.raises(InvalidWorkflow, match="UI-format save; converting it needs ComfyUI"):
        preview_of(tmp_path, json.dumps(txt2img_ui_export()).encode(), "ui.json", object_info=None)


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (b"{not json", "flow.json: line 1: is not JSON"),
        (b"", "flow.json: is empty"),
        (b"\xff\xfe\x00garbage", "is not a text file"),
        (b"[1, 2, 3]", "is not a ComfyUI workflow"),
        (b'{"name": "a character card", "tags": []}', "is not a ComfyUI workflow"),
        (b"{" + b" " * MAX_GRAPH_BYTES + b"}", "is too big (5.0 MB); the limit is 5.0 MB"),
    ],
)
def test_bad_files_get_a_clear_error(tmp_path: Path, data: bytes, expected: str) -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        preview_of(tmp_path, data, "flow.json")
    assert expected in str(caught.value)


def test_a_yaml_spec_is_used_and_its_mistakes_are_named(tmp_path: Path) -> None:
    spec = b"title: Mine\nparams:\n  prompt: {type: text, node: Positive, input: text}\n"
    preview = preview_of(tmp_path, graph_bytes(), "a.json", yaml_data=spec, yaml_name="a.yaml")
    assert [o.name for o in preview.options] == ["prompt"] and preview.title == "Mine"

    bad = b"title: Mine\nparams:\n  steps: {type: int, node: KSampler, input: steps, max: lots}\n"
    with pytest.raises(InvalidWorkflow, match=r"a\.yaml: params\.steps\.max"):
        preview_of(tmp_path, graph_bytes(), "a.json", yaml_data=bad, yaml_name="a.yaml")
    with pytest.raises(InvalidWorkflow, match="not YAML"):
        preview_of(tmp_path, graph_bytes(), "a.json", yaml_data=b"title: [", yaml_name="a.yaml")


def test_a_command_comfycord_uses_is_refused(tmp_path: Path) -> None:
    spec = b"title: Mine\ncommand: imagine\n"
    preview = preview_of(tmp_path, graph_bytes(), "a.json", yaml_data=spec)
    assert [p.key for p in preview.blocking] == ["command"]


# names ------------------------------------------------------------------------------------------
def test_a_taken_or_invalid_name_is_refused(tmp_path: Path) -> None:
    folder = folder_with_shipped(tmp_path)
    with pytest.raises(WorkflowError, match="'sd15-txt2img' already exists"):
        preview_of(folder, graph_bytes(), "sd15-txt2img.json")
    with pytest.raises(WorkflowError, match=r"not a usable workflow name.*e\.g\. 'x'"):
        preview_of(folder, graph_bytes(), "flow.json", name="../x")
    with pytest.raises(WorkflowError, match="already exists"):
        preview_of(folder, graph_bytes(), "flow.json", name="sd15-img2img")


def test_a_file_name_with_folders_is_saved_inside_the_workflows_folder(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    preview = preview_of(folder, graph_bytes(), "../../Evil Plan.json")
    written = save_pack(preview, folder)
    assert preview.name == "evil-plan"
    assert sorted(p.name for p in written) == ["evil-plan.json", "evil-plan.yaml"]
    assert {p.parent for p in written} == {folder}
    assert sorted(p.name for p in tmp_path.rglob("*.json")) == ["evil-plan.json"]


# saving -----------------------------------------------------------------------------------------
def test_a_saved_pack_loads_with_the_same_options_and_checks_clean(tmp_path: Path) -> None:
    folder = folder_with_shipped(tmp_path)
    info = installed_object_info()
    preview = preview_of(folder, json.dumps(txt2img_ui_export()).encode(), "Night Sky.json")
    save_pack(preview, folder)

    loaded = load_workflow(folder / "night-sky.yaml", info)
    assert loaded.params == preview.workflow.params
    assert not loaded.detected  # every param is written out
    assert check_workflow(loaded, info) == []
    spec = yaml.safe_load((folder / "night-sky.yaml").read_text(encoding="utf-8"))
    assert list(spec["params"]) == [o.name for o in preview.options]
    assert spec["params"]["steps"]["min"] == 1 and "max" in spec["params"]["cfg"]
    assert '# 6 "Positive" (CLIPTextEncode)' in (folder / "night-sky.yaml").read_text()
    workflows, problems = load_workflows(folder, info)
    assert problems == [] and "night-sky" in workflows


def test_saving_never_overwrites_a_file_that_appeared_meanwhile(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    preview = preview_of(folder, graph_bytes(), "flow.json")
    (folder / "flow.yaml").write_text("title: someone else's\n")

    with pytest.raises(WorkflowError, match="'flow' already exists"):
        save_pack(preview, folder)
    assert (folder / "flow.yaml").read_text() == "title: someone else's\n"
    assert not (folder / "flow.json").exists()


def test_a_failed_write_leaves_nothing_behind(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    preview = preview_of(folder, graph_bytes(), "flow.json")
    real_open = Path.open

    def full_disk(self: Path, *args: Any, **kwargs: Any) -> Any:
        if self.suffix == ".yaml":
            raise OSError(28, "No space left on device")
        return real_open(self, *args, **kwargs)

    monkeypatch.setattr(Path, "open", full_disk)
    with pytest.raises(WorkflowError, match=r"could not write the pack 'flow'.*No space left"):
        save_pack(preview, folder)
    assert list(folder.iterdir()) == []


# exporting --------------------------------------------------------------------------------------
def test_export_gives_back_the_graph_and_yaml_of_a_pack(tmp_path: Path) -> None:
    folder = folder_with_shipped(tmp_path)
    workflows, _ = load_workflows(folder)
    files = dict(export_pack(workflows["sd15-txt2img"], folder))
    assert files == {
        "sd15-txt2img.json": (WORKFLOWS / "sd15-txt2img.json").read_bytes(),
        "sd15-txt2img.yaml": (WORKFLOWS / "sd15-txt2img.yaml").read_bytes(),
    }


def test_export_of_a_graph_without_yaml_writes_its_detected_params(tmp_path: Path) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "lone.json").write_text(json.dumps(shipped_graph()))
    workflows, _ = load_workflows(folder)
    files = dict(export_pack(workflows["lone"], folder))
    spec = yaml.safe_load(files["lone.yaml"])
    assert list(spec["params"]) == [p.name for p in workflows["lone"].params]
    (folder / "lone.yaml").write_bytes(files["lone.yaml"])
    assert load_workflow(folder / "lone.yaml").params == workflows["lone"].params
    (folder / "lone.json").unlink()
    with pytest.raises(NotFound, match="gone"):
        export_pack(workflows["lone"], folder)


# through the engine -----------------------------------------------------------------------------
async def test_engine_imports_saves_reloads_and_runs_the_new_pack(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    import aiohttp

    from bot.engine import JobRequest
    from bot.jobs.model import JobState

    folder = folder_with_shipped(tmp_path)
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(folder)})
    graph = copy.deepcopy(shipped_graph())
    graph["3"]["inputs"]["steps"] = 2
    async with (
        aiohttp.ClientSession() as session,
        running_engine(session, settings) as (
            engine,
            recorder,
        ),
    ):
        preview = await engine.prepare_import(graph_bytes(graph), "Fresh Pack.json")
        assert preview.checked and preview.blocking == ()
        assert "fresh-pack" not in engine.workflows
        workflow = engine.save_import(preview)
        assert workflow.name == "fresh-pack" and "fresh-pack" in engine.workflows
        jobs = await engine.submit(JobRequest("fresh-pack", {"prompt": "a cat"}, owner_id="1"))
        (update,) = await recorder.finished(jobs[0].id, timeout=20)
        assert update.job.state is JobState.DONE and update.job.outputs
        assert (
            dict(engine.export_pack("fresh-pack"))["fresh-pack.yaml"] == preview.yaml_text.encode()
        )
        with pytest.raises(WorkflowError, match="already exists"):
            engine.save_import(preview)


def test_a_graph_without_a_prompt_says_imagine_needs_one(tmp_path: Path) -> None:
    graph = {
        "1": {"class_type": "LoadImage", "inputs": {"image": "example.png"}},
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }
    preview = preview_of(tmp_path, graph_bytes(graph), "copy.json")
    assert [o.name for o in preview.options] == ["image"]
    assert any("no required text option: /imagine needs one" in n for n in preview.notes)
    assert not any(
        "/imagine needs one" in n for n in preview_of(tmp_path, graph_bytes(), "b").notes
    )


def test_files_nested_too_deep_are_refused_plainly(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["9"]["inputs"]["junk"] = json.loads("[" * 600 + "]" * 600)
    with pytest.raises(InvalidWorkflow, match=r"flow\.json: is not a workflow: its values nest"):
        preview_of(tmp_path, graph_bytes(graph), "flow.json")
    with pytest.raises(InvalidWorkflow, match="nest far too deep"):
        preview_of(tmp_path, b"[" * 100_000 + b"]" * 100_000, "flow.json")
    deep_yaml = b"title: t\nparams: " + b"[" * 5000 + b"]" * 5000 + b"\n"
    with pytest.raises(InvalidWorkflow, match=r"a\.yaml: its values nest far too deep"):
        preview_of(tmp_path, graph_bytes(), "x.json", yaml_data=deep_yaml, yaml_name="a.yaml")


def test_yaml_aliases_are_neither_expanded_nor_looped_on(tmp_path: Path) -> None:
    laughs = "title: t\nextra:\n  a: &a [x, x, x, x, x, x, x, x, x]\n"
    for level in "bcdefghij":
        previous = chr(ord(level) - 1)
        laughs += f"  {level}: &{level} [" + ", ".join([f"*{previous}"] * 9) + "]\n"
    laughs += "  loop: &loop [*loop]\n"
    with pytest.raises(InvalidWorkflow, match=r"a\.yaml: extra: unknown key"):
        preview_of(tmp_path, graph_bytes(), "x.json", yaml_data=laughs.encode(), yaml_name="a.yaml")
