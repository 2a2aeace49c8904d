"""`comfycord check` on a UI-format graph using nodes ComfyUI lacks: what to do, all at once."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from tests.cli.test_cli import run_cli, write_config
from tests.conftest import WORKFLOWS
from tests.fakes.comfyui import FakeComfyUI
from tests.workflows.test_graph import _link, image_input, txt2img_ui_export, ui_node


@pytest.mark.usefixtures("comfy_env")
async def test_check_names_every_missing_node_with_the_version_needed_and_the_one_running(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    packs = tmp_path / "packs"
    packs.mkdir()
    shutil.copy(WORKFLOWS / "sd15-txt2img.json", packs / "sd15-txt2img.json")
    shutil.copy(WORKFLOWS / "sd15-txt2img.yaml", packs / "sd15-txt2img.yaml")
    export = txt2img_ui_export()
    for node_id, kind, properties in [
        (60, "SaveAudioMP3", {"cnr_id": "comfy-core", "ver": "0.3.66"}),
        (61, "ImageResizeKJv2", {"cnr_id": "comfyui-kjnodes", "aux_id": "kijai/ComfyUI-KJNodes"}),
    ]:
        export["nodes"].append(
            ui_node(
                node_id,
                kind,
                image_input(node_id),
                properties=properties,
            )
        )
        export["links"].append(_link(node_id, 8, 0, node_id, 0, "IMAGE"))
    (packs / "newer.json").write_text(json.dumps(export))

    code = await run_cli("--config", str(write_config(tmp_path, packs)), "check")

    out = capsys.readouterr().out
    assert code == 1
    assert (
        "packs/newer.json: node 60 (SaveAudioMP3): needs the ComfyUI core node 'SaveAudioMP3' "
        "(node 60), which this ComfyUI (0.3.64) lacks: update ComfyUI to 0.3.66 or newer"
    ) in out
    assert (
        "node 61 (ImageResizeKJv2): needs the custom node pack 'KJNodes for ComfyUI' "
        "(https://github.com/kijai/ComfyUI-KJNodes) for 'ImageResizeKJv2' (node 61): install it"
    ) in out


@pytest.mark.usefixtures("comfy_env")
async def test_check_and_import_name_a_pack_from_the_servers_own_map(
    comfy: FakeComfyUI, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    comfy.node_mappings = {
        "https://github.com/someone/private-nodes": [["PrivateUpscaler"], {"title_aux": "Private"}]
    }
    packs = tmp_path / "packs"
    packs.mkdir()
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text(encoding="utf-8"))
    graph["20"] = {"class_type": "PrivateUpscaler", "inputs": {"image": ["8", 0]}}
    (packs / "private.json").write_text(json.dumps(graph), encoding="utf-8")
    upload = tmp_path / "Private Copy.json"
    upload.write_text(json.dumps(graph), encoding="utf-8")
    config = str(write_config(tmp_path, packs))
    named = (
        "needs the custom node pack 'Private' (https://github.com/someone/private-nodes) for "
        "'PrivateUpscaler' (node 20)"
    )

    assert await run_cli("--config", config, "check") == 1
    assert named in capsys.readouterr().out
    assert await run_cli("--config", config, "import", str(upload)) == 1
    out = capsys.readouterr().out
    assert f"to install: {named}" in out and "nothing written" in out
