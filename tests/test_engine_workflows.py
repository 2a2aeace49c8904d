"""The engine loads packs with ComfyUI's node definitions at hand."""

from __future__ import annotations

import io
import json
from pathlib import Path

import aiohttp
import pytest
from PIL import Image

from bot.engine import ImageInput, JobRequest
from bot.workflows import InvalidWorkflow
from tests.conftest import WORKFLOWS, make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI
from tests.recordings import OBJECT_INFO_CUSTOM
from tests.workflows.test_graph import _link, image_input, txt2img_ui_export, ui_node


async def test_a_ui_format_graph_without_yaml_becomes_a_pack_when_the_engine_starts(
    tmp_path: Path, comfy: FakeComfyUI, session: aiohttp.ClientSession
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "saved-from-editor.json").write_text(json.dumps(txt2img_ui_export()))
    settings = make_settings(
        tmp_path, comfy.url, workflows={"dir": str(folder), "default": "saved-from-editor"}
    )

    async with running_engine(session, settings) as (engine, _):
        workflow = engine.workflows["saved-from-editor"]

    assert workflow.prompt_param is not None
    assert workflow.prompt_param.targets == (("6", "text"),)
    assert engine.workflow_problems == []


async def test_an_import_needing_a_newer_comfyui_says_which_one_runs(
    tmp_path: Path, comfy: FakeComfyUI, session: aiohttp.ClientSession
) -> None:
    export = txt2img_ui_export()
    export["nodes"].append(
        ui_node(
            60,
            "SaveAudioMP3",
            image_input(60),
            properties={"cnr_id": "comfy-core", "ver": "0.3.66"},
        )
    )
    export["links"].append(_link(60, 8, 0, 60, 0, "IMAGE"))
    settings = make_settings(tmp_path, comfy.url)

    async with running_engine(session, settings) as (engine, _):
        with pytest.raises(InvalidWorkflow) as caught:
            await engine.prepare_import(json.dumps(export).encode(), "Newer.json")

    (problem,) = caught.value.problems
    assert problem.code == "needs_newer_comfyui"
    assert "which this ComfyUI (0.3.64) lacks: update ComfyUI to 0.3.66 or newer" in problem.message


def _with_private_upscaler() -> bytes:
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text(encoding="utf-8"))
    graph["20"] = {"class_type": "PrivateUpscaler", "inputs": {"image": ["8", 0]}}
    graph["21"] = {"class_type": "SaveImage", "inputs": {"images": ["20", 0]}}
    return json.dumps(graph).encode()


async def test_an_import_names_a_pack_from_the_servers_own_map(
    tmp_path: Path, comfy: FakeComfyUI, session: aiohttp.ClientSession
) -> None:
    settings = make_settings(tmp_path, comfy.url)
    async with running_engine(session, settings) as (engine, _):
        before = await engine.prepare_import(_with_private_upscaler(), "private.json")
        comfy.node_mappings = {
            "https://github.com/someone/private-nodes": [
                ["PrivateUpscaler"],
                {"title_aux": "Private Nodes"},
            ]
        }
        after = await engine.prepare_import(_with_private_upscaler(), "private.json")

    assert "which no known custom node pack provides" in before.missing_packs[0]
    assert after.missing_packs == (
        "needs the custom node pack 'Private Nodes' (https://github.com/someone/private-nodes) "
        "for 'PrivateUpscaler' (node 20): install it and restart ComfyUI",
    )
    assert {p.code for p in after.blocking} == {"missing_pack"}


async def test_a_path_loader_gets_the_uploads_path_in_the_input_folder(
    tmp_path: Path, session: aiohttp.ClientSession
) -> None:
    custom = json.loads(OBJECT_INFO_CUSTOM.read_text(encoding="utf-8"))
    folder = tmp_path / "workflows"
    folder.mkdir()
    graph = {
        "1": {
            "class_type": "VHS_LoadImagePath",
            "inputs": {"image": "input/photo.png", "custom_width": 0, "custom_height": 0},
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }
    (folder / "frame.json").write_text(json.dumps(graph), encoding="utf-8")
    (folder / "frame.yaml").write_text(
        "title: Frame\nparams:\n  image: {type: image, node: '1', input: image, required: true}\n",
        encoding="utf-8",
    )
    picture = io.BytesIO()
    Image.new("RGB", (8, 8), "blue").save(picture, "PNG")
    async with FakeComfyUI(extra_nodes={"VHS_LoadImagePath": custom["VHS_LoadImagePath"]}) as comfy:
        settings = make_settings(
            tmp_path, comfy.url, workflows={"dir": str(folder), "default": "frame"}
        )
        async with running_engine(session, settings) as (engine, recorder):
            request = JobRequest(
                "frame", {}, owner_id="1", images={"image": ImageInput("p.png", picture.getvalue())}
            )
            jobs = await engine.submit(request)
            await recorder.finished(jobs[0].id, timeout=20)
        path = comfy.prompts_received[-1]["prompt"]["1"]["inputs"]["image"]
        assert path.startswith("input/") and path.endswith(".png"), path
        stored = comfy.input_dir / path.removeprefix("input/")
        assert stored.is_file(), "the file ComfyUI stored, from ComfyUI's own folder"
