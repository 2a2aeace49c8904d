"""The engine loads packs with ComfyUI's node definitions at hand."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp
import pytest

from bot.workflows import InvalidWorkflow
from tests.conftest import make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI
from tests.test_workflows_graph import _link, txt2img_ui_export


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
        {
            "id": 60,
            "type": "SaveAudioMP3",
            "mode": 0,
            "inputs": [{"name": "image", "type": "IMAGE", "link": 60}],
            "properties": {"cnr_id": "comfy-core", "ver": "0.3.66"},
        }
    )
    export["links"].append(_link(60, 8, 0, 60, 0, "IMAGE"))
    settings = make_settings(tmp_path, comfy.url)

    async with running_engine(session, settings) as (engine, _):
        with pytest.raises(InvalidWorkflow) as caught:
            await engine.prepare_import(json.dumps(export).encode(), "Newer.json")

    (problem,) = caught.value.problems
    assert problem.code == "needs_newer_comfyui"
    assert "which this ComfyUI (0.3.64) lacks: update ComfyUI to 0.3.66 or newer" in problem.message
