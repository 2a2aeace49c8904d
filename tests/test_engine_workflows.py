"""The engine loads packs with ComfyUI's node definitions at hand."""

from __future__ import annotations

import json
from pathlib import Path

import aiohttp

from tests.conftest import make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI
from tests.test_workflows_graph import txt2img_ui_export


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
