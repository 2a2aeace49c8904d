"""UI-format conversion as the editor's "Export (API)" does it, and refusals that say what to do."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bot.workflows import InvalidWorkflow
from bot.workflows.convert import convert_ui
from bot.workflows.graph import load_graph, ui_to_api
from tests.workflows.test_graph import _link, image_input, txt2img_ui_export, ui_node
from tests.workflows.test_workflows import object_info


def _node(export: dict[str, Any], node_id: int) -> dict[str, Any]:
    node: dict[str, Any] = next(n for n in export["nodes"] if n["id"] == node_id)
    return node


def _encoder_subgraph(subgraph_id: str) -> dict[str, Any]:
    """A subgraph holding one CLIPTextEncode (id 3) whose text is a promoted widget."""
    return {
        "id": subgraph_id,
        "name": "Prompt",
        "inputNode": {"id": -10},
        "outputNode": {"id": -20},
        "inputs": [
            {"name": "clip", "type": "CLIP", "linkIds": [1]},
            {"name": "text", "type": "STRING", "linkIds": [2]},
        ],
        "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "linkIds": [3]}],
        "widgets": [],
        "nodes": [
            {
                "id": 3,
                "type": "CLIPTextEncode",
                "mode": 0,
                "inputs": [
                    {"name": "clip", "type": "CLIP", "link": 1},
                    {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": 2},
                ],
                "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [3]}],
                "widgets_values": ["the inner node's own text"],
            }
        ],
        "links": [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 3, "target_slot": 0},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 3, "target_slot": 1},
            {"id": 3, "origin_id": 3, "origin_slot": 0, "target_id": -20, "target_slot": 0},
        ],
    }


def _with_positive_in_a_subgraph(*, nested: bool = False) -> dict[str, Any]:
    """The txt2img export with its positive encoder (node 6) moved into subgraph instance 57."""
    export = copy.deepcopy(txt2img_ui_export())
    instance = _node(export, 6)
    instance.update(
        {
            "id": 57,
            "type": "outer-subgraph" if nested else "prompt-subgraph",
            "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
            "widgets_values": [
                "a lighthouse on a cliff at dusk, warm light, detailed oil painting"
            ],
        }
    )
    export["links"] = [
        _link(
            *link[:1],
            57 if link[1] == 6 else link[1],
            *link[2:3],
            57 if link[3] == 6 else link[3],
            *link[4:],
        )
        for link in export["links"]
    ]
    subgraphs = [_encoder_subgraph("prompt-subgraph")]
    if nested:
        outer = _encoder_subgraph("outer-subgraph")
        outer["nodes"][0].update({"id": 5, "type": "prompt-subgraph", "widgets_values": []})
        outer["nodes"][0]["inputs"][1].pop("widget")
        outer["links"] = [
            {"id": 1, "origin_id": -10, "origin_slot": 0, "target_id": 5, "target_slot": 0},
            {"id": 2, "origin_id": -10, "origin_slot": 1, "target_id": 5, "target_slot": 1},
            {"id": 3, "origin_id": 5, "origin_slot": 0, "target_id": -20, "target_slot": 0},
        ]
        subgraphs.append(outer)
    export["definitions"] = {"subgraphs": subgraphs}
    return export


# --- conversion -------------------------------------------------------------------------------


def test_a_subgraph_is_expanded_with_inner_ids_as_comfyui_writes_them() -> None:
    converted = ui_to_api(_with_positive_in_a_subgraph(), object_info())

    assert converted["57:3"] == {
        "inputs": {
            "text": "a lighthouse on a cliff at dusk, warm light, detailed oil painting",
            "clip": ["4", 1],
        },
        "class_type": "CLIPTextEncode",
        "_meta": {"title": "CLIP Text Encode (Prompt)"},
    }
    assert converted["3"]["inputs"]["positive"] == ["57:3", 0]
    assert "57" not in converted


def test_a_nested_subgraph_gets_the_path_of_instances_as_its_id() -> None:
    converted = ui_to_api(_with_positive_in_a_subgraph(nested=True), object_info())

    assert converted["3"]["inputs"]["positive"] == ["57:5:3", 0]
    assert converted["57:5:3"]["inputs"]["text"].startswith("a lighthouse on a cliff")
    assert converted["57:5:3"]["inputs"]["clip"] == ["4", 1]


def test_a_subgraph_id_is_never_reported_as_a_missing_node() -> None:
    conversion = convert_ui(_with_positive_in_a_subgraph(nested=True), object_info())

    assert conversion.missing == ()


def test_the_control_after_generate_slot_is_skipped_whatever_it_holds() -> None:
    export = txt2img_ui_export()
    sampler = _node(export, 3)
    sampler["inputs"] = [i for i in sampler["inputs"] if i["name"] != "steps"]
    sampler["widgets_values"] = [156680208700286, True, 20, 8, "euler", "normal", 1]

    inputs = ui_to_api(export, object_info())["3"]["inputs"]

    assert (inputs["seed"], inputs["steps"], inputs["cfg"]) == (156680208700286, 20, 8)
    assert (inputs["sampler_name"], inputs["scheduler"], inputs["denoise"]) == (
        "euler",
        "normal",
        1,
    )


def test_a_widget_with_no_stored_value_gets_the_definitions_default() -> None:
    export = txt2img_ui_export()
    _node(export, 9)["widgets_values"] = []

    assert ui_to_api(export, object_info())["9"]["inputs"]["filename_prefix"] == "ComfyUI"


def test_a_bypassed_node_passes_the_input_at_the_same_index_when_its_type_fits() -> None:
    export = txt2img_ui_export()
    export["nodes"].append(
        ui_node(
            30,
            "ControlNetApplyAdvanced",
            [
                {"name": "positive", "type": "CONDITIONING", "link": 4},
                {"name": "negative", "type": "CONDITIONING", "link": 6},
                {"name": "control_net", "type": "CONTROL_NET", "link": None},
                {"name": "image", "type": "IMAGE", "link": None},
            ],
            mode=4,
            outputs=[
                {"name": "positive", "type": "CONDITIONING", "links": [31]},
                {"name": "negative", "type": "CONDITIONING", "links": [32]},
            ],
            widgets_values=[1, 0, 1],
        )
    )
    sampler = _node(export, 3)
    sampler["inputs"][1]["link"] = 31
    sampler["inputs"][2]["link"] = 32
    export["links"] += [
        _link(31, 30, 0, 3, 1, "CONDITIONING"),
        _link(32, 30, 1, 3, 2, "CONDITIONING"),
    ]

    inputs = ui_to_api(export, object_info())["3"]["inputs"]

    assert inputs["positive"] == ["6", 0]
    assert inputs["negative"] == ["7", 0]


def test_a_node_fed_only_by_a_muted_node_is_left_out_too() -> None:
    export = txt2img_ui_export()
    _node(export, 8)["mode"] = 2

    converted = ui_to_api(export, object_info())

    assert "8" not in converted
    assert "9" not in converted  # the SaveImage that only the muted decode fed
    assert "3" in converted


def test_kjnodes_set_and_get_nodes_are_followed() -> None:
    export = txt2img_ui_export()
    export["nodes"] += [
        {
            "id": 40,
            "type": "SetNode",
            "title": "Set_clip",
            "mode": 0,
            "inputs": [{"name": "CLIP", "type": "CLIP", "link": 40}],
            "outputs": [{"name": "*", "type": "*", "links": None}],
            "properties": {"cnr_id": "comfyui-kjnodes"},
            "widgets_values": ["clip"],
        },
        {
            "id": 41,
            "type": "GetNode",
            "title": "Get_clip",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "CLIP", "type": "CLIP", "links": [41]}],
            "properties": {"cnr_id": "comfyui-kjnodes"},
            "widgets_values": ["clip"],
        },
    ]
    _node(export, 7)["inputs"][0]["link"] = 41
    export["links"] += [_link(40, 4, 1, 40, 0, "CLIP"), _link(41, 41, 0, 7, 0, "CLIP")]

    converted = ui_to_api(export, object_info())

    assert converted["7"]["inputs"]["clip"] == ["4", 1]
    assert not {"40", "41"} & set(converted)


def test_widget_names_come_from_the_nodes_own_inputs_when_the_class_is_unknown() -> None:
    export = txt2img_ui_export()
    export["nodes"].append(
        ui_node(
            50,
            "FancyPromptNode",
            [
                {"name": "clip", "type": "CLIP", "link": 50},
                {"name": "text", "type": "STRING", "widget": {"name": "text"}, "link": None},
                {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None},
                {"name": "weight", "type": "FLOAT", "widget": {"name": "weight"}, "link": None},
            ],
            outputs=[{"name": "CONDITIONING", "type": "CONDITIONING", "links": []}],
            widgets_values=["a red fox", 42, "randomize", 0.5],
        )
    )
    export["links"].append(_link(50, 4, 1, 50, 0, "CLIP"))

    conversion = convert_ui(export, object_info())

    assert conversion.graph["50"]["inputs"] == {
        "text": "a red fox",
        "seed": 42,
        "weight": 0.5,
        "clip": ["4", 1],
    }
    assert [m.class_type for m in conversion.missing] == ["FancyPromptNode"]


# --- refusals ---------------------------------------------------------------------------------


def _with_unknown_nodes() -> dict[str, Any]:
    export = txt2img_ui_export()
    extra = [
        (60, "SaveAudioMP3", {"cnr_id": "comfy-core", "ver": "0.3.66"}),
        (
            61,
            "ImageResizeKJv2",
            {"cnr_id": "comfyui-kjnodes", "aux_id": "kijai/ComfyUI-KJNodes", "ver": "1.1.7"},
        ),
        (62, "MysteryNode", {}),
        (63, "MysteryNode", {}),
    ]
    for node_id, kind, properties in extra:
        export["nodes"].append(
            ui_node(
                node_id,
                kind,
                image_input(node_id),
                outputs=[],
                properties=properties,
            )
        )
        export["links"].append(_link(node_id, 8, 0, node_id, 0, "IMAGE"))
    return export


def test_every_unknown_class_is_named_at_once() -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        ui_to_api(_with_unknown_nodes(), object_info(), source="workflows/x.json")

    keys = [p.key for p in caught.value.problems]
    assert keys == [
        "node 60 (SaveAudioMP3)",
        "node 61 (ImageResizeKJv2)",
        "node 62 (MysteryNode) and 1 more node",
    ]


def test_a_missing_core_node_says_which_comfyui_is_needed_and_which_runs() -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        ui_to_api(_with_unknown_nodes(), object_info(), comfyui_version="0.3.64")

    problem = caught.value.problems[0]
    assert problem.code == "needs_newer_comfyui"
    assert problem.message == (
        "needs the ComfyUI core node 'SaveAudioMP3' (node 60), which this ComfyUI (0.3.64) "
        "lacks: update ComfyUI to 0.3.66 or newer"
    )
    assert "install" not in problem.message.lower()


def test_a_missing_custom_node_names_its_pack() -> None:
    with pytest.raises(InvalidWorkflow) as caught:
        ui_to_api(_with_unknown_nodes(), object_info())

    problem = caught.value.problems[1]
    assert problem.code == "missing_pack"
    assert problem.message.startswith(
        "needs the custom node pack 'KJNodes for ComfyUI' (https://github.com/kijai/ComfyUI-KJNodes)"
        " for 'ImageResizeKJv2' (node 61): install it"
    )


def _broken(change: str) -> dict[str, Any]:
    export = copy.deepcopy(_with_positive_in_a_subgraph())
    if change == "links not a list":
        export["links"] = 7
    elif change == "a node id that is a list":
        _node(export, 9)["id"] = [9]
    elif change == "a link id that is a list":
        _node(export, 3)["inputs"][0]["link"] = [1]
    elif change == "a node type that is a list":
        _node(export, 7)["type"] = ["SetNode"]
    elif change == "subgraph inputs not a list":
        export["definitions"]["subgraphs"][0]["inputs"] = True
    elif change == "a subgraph holding itself":
        inner = export["definitions"]["subgraphs"][0]["nodes"][0]
        inner["type"] = "prompt-subgraph"
    return export


@pytest.mark.parametrize(
    "change",
    [
        "links not a list",
        "a node id that is a list",
        "a link id that is a list",
        "a node type that is a list",
        "subgraph inputs not a list",
        "a subgraph holding itself",
    ],
)
def test_a_malformed_export_is_converted_or_refused_never_crashes(
    change: str, tmp_path: Path
) -> None:
    path = tmp_path / "broken.json"
    path.write_text(json.dumps(_broken(change)), encoding="utf-8")

    try:
        graph = load_graph(path, object_info())
    except InvalidWorkflow as exc:
        assert exc.problems  # refused, saying why
    else:
        assert all(isinstance(node["class_type"], str) for node in graph.values())


@pytest.mark.parametrize(
    "stored", [[5, 30], [5, "randomize", 30]], ids=["one per input", "with a control slot"]
)
def test_promoted_seed_and_steps_of_a_subgraph_instance_are_read_in_either_layout(
    stored: list[Any],
) -> None:
    sampler = {
        "id": 1,
        "type": "KSampler",
        "mode": 0,
        "inputs": [
            {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": 1},
            {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 2},
        ],
        "outputs": [{"name": "LATENT", "type": "LATENT", "links": []}],
        "widgets_values": [0, "fixed", 20, 7, "euler", "normal", 1],
    }
    export = {
        "nodes": [
            {
                "id": 9,
                "type": "sampling",
                "mode": 0,
                "inputs": [],
                "outputs": [],
                "widgets_values": stored,
            }
        ],
        "links": [],
        "definitions": {
            "subgraphs": [
                {
                    "id": "sampling",
                    "inputs": [
                        {"name": "seed", "type": "INT", "linkIds": [1]},
                        {"name": "steps", "type": "INT", "linkIds": [2]},
                    ],
                    "outputs": [],
                    "nodes": [sampler],
                    "links": [
                        {
                            "id": 1,
                            "origin_id": -10,
                            "origin_slot": 0,
                            "target_id": 1,
                            "target_slot": 0,
                        },
                        {
                            "id": 2,
                            "origin_id": -10,
                            "origin_slot": 1,
                            "target_id": 1,
                            "target_slot": 1,
                        },
                    ],
                }
            ]
        },
    }

    inputs = convert_ui(export, object_info()).graph["9:1"]["inputs"]

    assert (inputs["seed"], inputs["steps"], inputs["cfg"]) == (5, 30, 7)
