"""Graphs loaded the way ComfyUI's editor loads them: missing inputs filled, legacy values migrated.

Each repair is driven through its real entry points: the import preview (and the pack it saves),
`comfycord check` on a pack on disk, and a job the engine runs on the fake ComfyUI, which
refuses a missing required input as the real one does.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.engine import JobRequest
from bot.jobs.model import JobState
from bot.workflows.convert import convert_ui
from bot.workflows.packs import prepare_import, preview_lines, save_pack
from bot.workflows.problems import Repair
from bot.workflows.repair import repair_graph
from tests.cli.test_cli import run_cli, write_config
from tests.conftest import make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI
from tests.recordings import OBJECT_INFO_CUSTOM
from tests.workflows.test_graph import txt2img_ui_export
from tests.workflows.test_workflows import installed_object_info


def turbo_graph() -> dict[str, Any]:
    """An SD Turbo export from before `SDTurboScheduler` had a `denoise` input."""
    return {
        "4": {
            "class_type": "CheckpointLoaderSimple",
            "inputs": {"ckpt_name": "v1-5-pruned-emaonly.safetensors"},
        },
        "6": {
            "class_type": "CLIPTextEncode",
            "inputs": {"text": "a red fox", "clip": ["4", 1]},
            "_meta": {"title": "Positive"},
        },
        "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "", "clip": ["4", 1]}},
        "5": {
            "class_type": "EmptyLatentImage",
            "inputs": {"width": 512, "height": 512, "batch_size": 1},
        },
        "20": {"class_type": "SDTurboScheduler", "inputs": {"model": ["4", 0], "steps": 1}},
        "21": {"class_type": "KSamplerSelect", "inputs": {"sampler_name": "euler_ancestral"}},
        "13": {
            "class_type": "SamplerCustom",
            "inputs": {
                "model": ["4", 0],
                "add_noise": True,
                "noise_seed": 7,
                "cfg": 1.0,
                "positive": ["6", 0],
                "negative": ["7", 0],
                "sampler": ["21", 0],
                "sigmas": ["20", 0],
                "latent_image": ["5", 0],
            },
        },
        "8": {"class_type": "VAEDecode", "inputs": {"samples": ["13", 0], "vae": ["4", 2]}},
        "9": {
            "class_type": "SaveImage",
            "inputs": {"filename_prefix": "turbo", "images": ["8", 0]},
        },
    }


def advanced_graph() -> dict[str, Any]:
    """A KSamplerAdvanced export with the values older front ends wrote."""
    graph = turbo_graph()
    for node_id in ("20", "21", "13"):
        del graph[node_id]
    graph["3"] = {
        "class_type": "KSamplerAdvanced",
        "inputs": {
            "model": ["4", 0],
            "add_noise": True,
            "noise_seed": -1,
            "steps": 0,
            "cfg": "7.5",
            "sampler_name": "Euler",
            "scheduler": "karras",
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
            "start_at_step": 0,
            "end_at_step": 10000.0,
            "return_with_leftover_noise": False,
        },
    }
    graph["8"]["inputs"]["samples"] = ["3", 0]
    return graph


def test_a_required_input_a_newer_comfyui_added_is_filled_and_said(tmp_path: Path) -> None:
    data = json.dumps(turbo_graph()).encode()

    preview = prepare_import(
        data, "SD Turbo.json", folder=tmp_path, object_info=installed_object_info()
    )

    assert preview.blocking == ()
    assert preview.repairs == ("filled `SDTurboScheduler.denoise` with 1.0 on node 20",)
    assert "repaired: filled `SDTurboScheduler.denoise` with 1.0" in "\n".join(
        preview_lines(preview)
    )
    save_pack(preview, tmp_path)
    saved = json.loads((tmp_path / "sd-turbo.json").read_text(encoding="utf-8"))
    assert saved["20"]["inputs"]["denoise"] == 1.0


def test_without_the_repair_comfyui_would_refuse_it() -> None:
    info = installed_object_info()
    graph = turbo_graph()

    repaired, repairs = repair_graph(graph, info)

    assert "denoise" not in graph["20"]["inputs"], "the graph given is never changed"
    assert repaired["20"]["inputs"]["denoise"] == 1.0
    assert [(r.node_id, r.input, r.why) for r in repairs] == [("20", "denoise", "filled")]
    again, more = repair_graph(repaired, info)
    assert more == [] and again == repaired, "a repaired graph needs no more repairs"


def test_legacy_values_are_migrated_where_the_definition_makes_them_certain() -> None:
    repaired, repairs = repair_graph(advanced_graph(), installed_object_info())

    inputs = repaired["3"]["inputs"]
    assert inputs["add_noise"] == "enable"
    assert inputs["return_with_leftover_noise"] == "disable"
    assert inputs["steps"] == 20, "a blank box (0, below the minimum) gets the default"
    assert inputs["cfg"] == 7.5
    assert inputs["sampler_name"] == "euler"
    assert inputs["end_at_step"] == 10000 and isinstance(inputs["end_at_step"], int)
    assert 0 <= inputs["noise_seed"] < 2**32, "-1 meant random"
    assert inputs["start_at_step"] == 0, "0 is within range: left alone"
    said = {r.input: str(r) for r in repairs}
    assert set(said) == {
        "add_noise",
        "return_with_leftover_noise",
        "steps",
        "cfg",
        "sampler_name",
        "end_at_step",
        "noise_seed",
    }
    assert said["add_noise"] == (
        "`KSamplerAdvanced.add_noise` true became 'enable' on node 3: "
        "true/false that became enable/disable"
    )
    assert "a seed of -1 meant random" in said["noise_seed"]


def test_booleans_given_as_numbers_or_words_become_true_or_false() -> None:
    info = installed_object_info()
    for legacy, meant in ((0, False), (1, True), ("disable", False), ("Enable", True)):
        graph = turbo_graph()
        graph["13"]["inputs"]["add_noise"] = legacy

        repaired, repairs = repair_graph(graph, info)

        assert repaired["13"]["inputs"]["add_noise"] is meant, legacy
        assert any(r.input == "add_noise" for r in repairs)


def test_values_with_no_certain_meaning_are_left_for_the_check_to_name(tmp_path: Path) -> None:
    graph = turbo_graph()
    graph["13"]["inputs"]["add_noise"] = "sometimes"
    graph["13"]["inputs"]["cfg"] = 500.0
    data = json.dumps(graph).encode()

    preview = prepare_import(data, "odd.json", folder=tmp_path, object_info=installed_object_info())

    assert {p.code for p in preview.blocking} == {"wrong_type", "out_of_range"}
    assert not (tmp_path / "odd.json").exists(), "nothing is written until Save"


def test_inputs_a_param_sets_on_every_run_are_left_alone() -> None:
    graph = advanced_graph()

    repaired, repairs = repair_graph(graph, installed_object_info(), keep={("3", "steps")})

    assert repaired["3"]["inputs"]["steps"] == 0
    assert "steps" not in {r.input for r in repairs}


@pytest.mark.usefixtures("comfy_env")
async def test_check_reports_the_repairs_of_a_pack_on_disk(
    comfy: FakeComfyUI,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "turbo.json").write_text(json.dumps(turbo_graph()), encoding="utf-8")
    comfy.checkpoints = ["v1-5-pruned-emaonly.safetensors"]
    config = write_config(tmp_path, folder)
    config.write_text(
        config.read_text(encoding="utf-8").replace(
            "workflows:\n", "workflows:\n  default: turbo\n"
        ),
        encoding="utf-8",
    )

    code = await run_cli("--config", str(config), "check")

    out = capsys.readouterr().out
    assert code == 0, out
    assert "repaired: workflow turbo: filled `SDTurboScheduler.denoise` with 1.0" in out


async def test_the_engine_repairs_a_pack_for_the_comfyui_that_runs_it(
    tmp_path: Path, comfy: FakeComfyUI, session: aiohttp.ClientSession
) -> None:
    folder = tmp_path / "workflows"
    folder.mkdir()
    (folder / "turbo.json").write_text(json.dumps(turbo_graph()), encoding="utf-8")
    (folder / "turbo.yaml").write_text(
        "title: Turbo\nparams:\n  prompt: {type: text, node: '6', input: text, required: true}\n",
        encoding="utf-8",
    )
    comfy.checkpoints = ["v1-5-pruned-emaonly.safetensors"]
    settings = make_settings(
        tmp_path, comfy.url, workflows={"dir": str(folder), "default": "turbo"}
    )

    async with running_engine(session, settings) as (engine, recorder):
        jobs = await engine.submit(JobRequest("turbo", {"prompt": "a fox"}, owner_id="1"))
        (update,) = await recorder.finished(jobs[0].id, timeout=20)

    assert update.job.state is JobState.DONE, update.job.error
    sent = comfy.prompts_received[-1]["prompt"]
    assert sent["20"]["inputs"]["denoise"] == 1.0


def with_packs() -> dict[str, Any]:
    """The installed server's definitions plus the recorded custom node packs."""
    info = installed_object_info()
    info.update(json.loads(OBJECT_INFO_CUSTOM.read_text(encoding="utf-8")))
    return info


def test_a_custom_loaders_missing_model_is_shown_but_does_not_block(tmp_path: Path) -> None:
    graph = turbo_graph()
    graph["30"] = {
        "class_type": "INPAINT_LoadFooocusInpaint",
        "inputs": {"head": "fooocus_inpaint_head.pth", "patch": "inpaint_v26.fooocus.patch"},
    }
    graph["31"] = {
        "class_type": "INPAINT_ApplyFooocusInpaint",
        "inputs": {"model": ["4", 0], "patch": ["30", 0], "latent": ["5", 0]},
    }
    graph["20"]["inputs"]["model"] = ["31", 0]

    preview = prepare_import(
        json.dumps(graph).encode(), "inpaint.json", folder=tmp_path, object_info=with_packs()
    )

    assert preview.blocking == ()
    assert any("'inpaint_v26.fooocus.patch' is not installed" in m for m in preview.missing_models)


def test_an_input_file_the_server_lacks_becomes_an_upload_members_must_give(
    tmp_path: Path,
) -> None:
    graph = {
        "1": {"class_type": "LoadVideo", "inputs": {"file": "kidfinal3.gif"}},
        "2": {"class_type": "GetVideoComponents", "inputs": {"video": ["1", 0]}},
        "3": {"class_type": "SaveImage", "inputs": {"images": ["2", 0], "filename_prefix": "f"}},
    }

    preview = prepare_import(
        json.dumps(graph).encode(), "frames.json", folder=tmp_path, object_info=with_packs()
    )

    assert preview.blocking == ()
    (option,) = [o for o in preview.options if o.type == "video"]
    assert option.required and option.default is None
    assert any("'kidfinal3.gif' is not in ComfyUI's input folder" in n for n in preview.notes)
    assert "required: true" in preview.yaml_text


def test_a_name_from_a_newer_comfyui_says_the_server_may_be_too_old(tmp_path: Path) -> None:
    graph = turbo_graph()
    graph["40"] = {
        "class_type": "CLIPLoader",
        "inputs": {"clip_name": "t5xxl.safetensors", "type": "flux2", "device": "default"},
    }
    graph["6"]["inputs"]["clip"] = ["40", 0]

    preview = prepare_import(
        json.dumps(graph).encode(), "flux2.json", folder=tmp_path, object_info=with_packs()
    )

    (problem,) = [p for p in preview.blocking if p.code == "not_in_list"]
    assert problem.message.startswith(
        "'flux2' is not one of CLIPLoader.type's choices. The workflow may have been made with a "
        "newer ComfyUI than this one, which added it: update ComfyUI"
    )


def test_an_image_the_server_lacks_must_be_uploaded(tmp_path: Path) -> None:
    spec = b"title: Copy\nparams:\n  image: {type: image, node: '1', input: image}\n"

    def image_pack(image: str) -> Any:
        graph = {
            "1": {"class_type": "LoadImage", "inputs": {"image": image}},
            "2": {
                "class_type": "SaveImage",
                "inputs": {"images": ["1", 0], "filename_prefix": "x"},
            },
        }
        data = json.dumps(graph).encode()
        return prepare_import(
            data, f"{image}.json", folder=tmp_path, object_info=with_packs(), yaml_data=spec
        )

    kept, lacking = image_pack("example.png"), image_pack("my-photo.png")

    assert [(o.name, o.required) for o in kept.options] == [("image", False)]
    assert [(o.name, o.required) for o in lacking.options] == [("image", True)]
    assert lacking.blocking == () and "required: true" in lacking.yaml_text


def test_a_list_that_became_a_switch_takes_the_switchs_labels() -> None:
    info = installed_object_info()
    info["WildcardLike"] = {
        "input": {
            "required": {
                "mode": ["BOOLEAN", {"default": True, "label_on": "populate", "label_off": "fixed"}]
            }
        },
        "output": ["STRING"],
    }
    for legacy, meant in (("populate", True), ("fixed", False)):
        graph = {"1": {"class_type": "WildcardLike", "inputs": {"mode": legacy}}}

        repaired, repairs = repair_graph(graph, info)

        assert repaired["1"]["inputs"]["mode"] is meant
        assert f"the switch's label ('{legacy}')" in str(repairs[0])


def test_a_loader_of_a_file_the_server_lacks_is_the_option_when_nothing_else_is(
    tmp_path: Path,
) -> None:
    info = with_packs()
    graph = {
        "1": {
            "class_type": "VHS_LoadVideo",
            "inputs": {
                "video": "leader.webm",
                "force_rate": 8,
                "custom_width": 0,
                "custom_height": 0,
                "frame_load_cap": 16,
                "skip_first_frames": 0,
                "select_every_nth": 1,
            },
        },
        "2": {"class_type": "PreviewImage", "inputs": {"images": ["1", 0]}},
    }

    preview = prepare_import(
        json.dumps(graph).encode(), "clip.json", folder=tmp_path, object_info=info
    )

    assert preview.blocking == ()
    assert [(o.name, o.type, o.required, o.sets) for o in preview.options] == [
        ("video", "video", True, ("1 (VHS_LoadVideo).video",))
    ]


def test_entries_of_an_api_file_that_are_no_node_are_left_out_and_said(tmp_path: Path) -> None:
    graph: dict[str, Any] = turbo_graph()
    graph["_tool_meta"] = {"title": "made with a phone app", "version": 3}

    preview = prepare_import(
        json.dumps(graph).encode(), "phone.json", folder=tmp_path, object_info=with_packs()
    )

    assert preview.blocking == ()
    assert "_tool_meta" not in json.loads(preview.graph_text)
    assert any(n.startswith("left out `_tool_meta`: not a node") for n in preview.notes)


def test_an_export_older_than_its_nodes_widgets_has_its_values_matched_by_kind(
    tmp_path: Path,
) -> None:
    """A KSampler saved before the editor kept a seed's "control after generate" slot."""
    export = txt2img_ui_export()
    sampler = next(n for n in export["nodes"] if n["id"] == 3)
    sampler["widgets_values"] = [156680208700286, 20, 7, "euler", "normal", 1]

    preview = prepare_import(
        json.dumps(export).encode(),
        "old.json",
        folder=tmp_path,
        object_info=installed_object_info(),
    )

    assert preview.blocking == ()
    inputs = preview.workflow.graph["3"]["inputs"]
    assert (inputs["seed"], inputs["cfg"], inputs["sampler_name"]) == (156680208700286, 7, "euler")
    assert (inputs["scheduler"], inputs["denoise"]) == ("normal", 1)
    repaired = "\n".join(preview.repairs)
    assert "`KSampler.cfg` took 7 on node 3 (not 'euler', its place)" in repaired
    assert "matched by kind; check it" in repaired
    assert "repaired: `KSampler.sampler_name` took 'euler'" in "\n".join(preview_lines(preview))


def test_a_value_no_input_takes_now_is_left_out_and_said(tmp_path: Path) -> None:
    """Impact's KSamplerAdvancedProvider once stored a control word after its cfg."""
    info = json.loads(OBJECT_INFO_CUSTOM.read_text(encoding="utf-8"))
    export = {
        "nodes": [
            {
                "id": 13,
                "type": "KSamplerAdvancedProvider",
                "mode": 0,
                "inputs": [{"name": "basic_pipe", "type": "BASIC_PIPE", "link": None}],
                "outputs": [],
                "widgets_values": [8, "fixed", "normal"],
            }
        ],
        "links": [],
    }

    conversion = convert_ui(export, info)

    inputs = conversion.graph["13"]["inputs"]
    assert (inputs["cfg"], inputs["scheduler"]) == (8, "normal")
    assert inputs["sampler_name"] == "euler", "a widget the export has no value for: its default"
    assert ("13", None, "fixed", None) in conversion.realigned
    assert str(
        Repair("13", "node 13", "KSamplerAdvancedProvider", "", "fixed", None, "dropped")
    ) == (
        "left out 'fixed' of node 13's saved values: no input of `KSamplerAdvancedProvider` "
        "takes it now"
    )


def test_values_that_fit_by_position_are_never_moved() -> None:
    """A list of the right length keeps its places, even with a bad value (the check names it)."""
    export = txt2img_ui_export()
    sampler = next(n for n in export["nodes"] if n["id"] == 3)
    sampler["widgets_values"] = [156680208700286, "randomize", 20, 7, "no-such", "normal", 1]

    conversion = convert_ui(export, installed_object_info())

    assert conversion.realigned == ()
    assert conversion.graph["3"]["inputs"]["sampler_name"] == "no-such"
    assert conversion.graph["3"]["inputs"]["cfg"] == 7
