"""Graphs: node references, API-format loading, UI-format conversion."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from bot.errors import WorkflowError
from bot.workflows import InvalidWorkflow
from bot.workflows.graph import is_link, is_ui_format, load_graph, resolve_node, ui_to_api
from tests.workflows.test_workflows import WORKFLOWS, in_workflows, object_info, shipped_graph


def _link(
    link_id: int, origin: int, slot: int, target: int, target_slot: int, kind: str
) -> list[Any]:
    return [link_id, origin, slot, target, target_slot, kind]


def image_input(link: int | None) -> list[dict[str, Any]]:
    """A UI node's inputs: one image, fed by this link."""
    return [{"name": "image", "type": "IMAGE", "link": link}]


def ui_node(
    node_id: int, kind: str, inputs: list[dict[str, Any]], mode: int = 0, **more: Any
) -> dict[str, Any]:
    """A node as the ComfyUI editor saves it: id, class, mode (0 runs, 4 is bypassed), inputs,
    then whatever else it has."""
    return {"id": node_id, "type": kind, "mode": mode, "inputs": inputs, **more}


def txt2img_ui_export() -> dict[str, Any]:
    """The shipped txt2img graph as the ComfyUI editor saves it (UI format).

    It has what real exports have: a seed followed by its "control after generate" value,
    `steps` converted to an input fed by a primitive node, a reroute on the CLIP and VAE
    lines, a note, a muted preview and a bypassed latent upscale in front of the sampler.
    """
    nodes = [
        {
            "id": 3,
            "type": "KSampler",
            "pos": [863, 186],
            "size": [315, 262],
            "flags": {},
            "order": 8,
            "mode": 0,
            "inputs": [
                {"name": "model", "type": "MODEL", "link": 1},
                {"name": "positive", "type": "CONDITIONING", "link": 4},
                {"name": "negative", "type": "CONDITIONING", "link": 6},
                {"name": "latent_image", "type": "LATENT", "link": 2},
                {"name": "seed", "type": "INT", "widget": {"name": "seed"}, "link": None},
                {"name": "steps", "type": "INT", "widget": {"name": "steps"}, "link": 14},
            ],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [7], "slot_index": 0}],
            "properties": {"Node name for S&R": "KSampler"},
            "widgets_values": [156680208700286, "randomize", 20, 7, "euler", "normal", 1],
        },
        {
            "id": 4,
            "type": "CheckpointLoaderSimple",
            "pos": [26, 474],
            "size": [315, 98],
            "flags": {},
            "order": 0,
            "mode": 0,
            "inputs": [],
            "outputs": [
                {"name": "MODEL", "type": "MODEL", "links": [1], "slot_index": 0},
                {"name": "CLIP", "type": "CLIP", "links": [3, 11], "slot_index": 1},
                {"name": "VAE", "type": "VAE", "links": [12], "slot_index": 2},
            ],
            "properties": {"Node name for S&R": "CheckpointLoaderSimple"},
            "widgets_values": ["v1-5-pruned-emaonly.safetensors"],
        },
        {
            "id": 5,
            "type": "EmptyLatentImage",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [13], "slot_index": 0}],
            "widgets_values": [512, 512, 1],
        },
        {
            "id": 6,
            "type": "CLIPTextEncode",
            "title": "Positive",
            "mode": 0,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 3}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [4]}],
            "widgets_values": [
                "a lighthouse on a cliff at dusk, warm light, detailed oil painting"
            ],
        },
        {
            "id": 7,
            "type": "CLIPTextEncode",
            "title": "Negative",
            "mode": 0,
            "inputs": [{"name": "clip", "type": "CLIP", "link": 5}],
            "outputs": [{"name": "CONDITIONING", "type": "CONDITIONING", "links": [6]}],
            "widgets_values": ["blurry, low quality, watermark, text"],
        },
        {
            "id": 8,
            "type": "VAEDecode",
            "mode": 0,
            "inputs": [
                {"name": "samples", "type": "LATENT", "link": 7},
                {"name": "vae", "type": "VAE", "link": 8},
            ],
            "outputs": [{"name": "IMAGE", "type": "IMAGE", "links": [9, 10]}],
            "widgets_values": [],
        },
        {
            "id": 9,
            "type": "SaveImage",
            "mode": 0,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 9}],
            "outputs": [],
            "widgets_values": ["comfycord"],
        },
        {
            "id": 10,
            "type": "Note",
            "mode": 0,
            "inputs": [],
            "outputs": [],
            "widgets_values": ["Titles Positive/Negative are used by the YAML: keep them."],
        },
        {
            "id": 11,
            "type": "PreviewImage",
            "mode": 2,
            "inputs": [{"name": "images", "type": "IMAGE", "link": 10}],
            "outputs": [],
            "widgets_values": [],
        },
        {
            "id": 12,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 11}],
            "outputs": [{"name": "", "type": "CLIP", "links": [5]}],
            "properties": {"showOutputText": False, "horizontal": False},
        },
        {
            "id": 13,
            "type": "Reroute",
            "mode": 0,
            "inputs": [{"name": "", "type": "*", "link": 12}],
            "outputs": [{"name": "", "type": "VAE", "links": [8]}],
        },
        {
            "id": 14,
            "type": "LatentUpscaleBy",
            "mode": 4,
            "inputs": [{"name": "samples", "type": "LATENT", "link": 13}],
            "outputs": [{"name": "LATENT", "type": "LATENT", "links": [2]}],
            "widgets_values": ["nearest-exact", 1.5],
        },
        {
            "id": 15,
            "type": "PrimitiveNode",
            "title": "steps",
            "mode": 0,
            "inputs": [],
            "outputs": [{"name": "INT", "type": "INT", "widget": {"name": "steps"}, "links": [14]}],
            "widgets_values": [20, "fixed"],
        },
    ]
    links = [
        _link(1, 4, 0, 3, 0, "MODEL"),
        _link(2, 14, 0, 3, 3, "LATENT"),
        _link(3, 4, 1, 6, 0, "CLIP"),
        _link(4, 6, 0, 3, 1, "CONDITIONING"),
        _link(5, 12, 0, 7, 0, "CLIP"),
        _link(6, 7, 0, 3, 2, "CONDITIONING"),
        _link(7, 3, 0, 8, 0, "LATENT"),
        _link(8, 13, 0, 8, 1, "VAE"),
        _link(9, 8, 0, 9, 0, "IMAGE"),
        _link(10, 8, 0, 11, 0, "IMAGE"),
        _link(11, 4, 1, 12, 0, "*"),
        _link(12, 4, 2, 13, 0, "*"),
        _link(13, 5, 0, 14, 0, "LATENT"),
        _link(14, 15, 0, 3, 5, "INT"),
    ]
    return {
        "id": "5d8d6f4e-9f1c-4d1a-9a0e-0b6c4cbd1f3e",
        "revision": 0,
        "last_node_id": 15,
        "last_link_id": 14,
        "nodes": nodes,
        "links": links,
        "groups": [],
        "config": {},
        "extra": {"ds": {"scale": 1, "offset": [0, 0]}},
        "version": 0.4,
    }


# --- node references ------------------------------------------------------------------------


def test_a_node_is_found_by_id() -> None:
    assert resolve_node(shipped_graph(), "3") == "3"
    assert resolve_node(shipped_graph(), 7) == "7"


def test_a_node_is_found_by_title() -> None:
    assert resolve_node(shipped_graph(), "Negative") == "7"


def test_a_node_is_found_by_a_class_type_that_occurs_once() -> None:
    assert resolve_node(shipped_graph(), "EmptyLatentImage") == "5"


def test_an_id_wins_over_a_title() -> None:
    graph = shipped_graph()
    graph["6"]["_meta"]["title"] = "7"

    assert resolve_node(graph, "7") == "7"


def test_an_ambiguous_class_type_lists_the_candidates() -> None:
    with pytest.raises(WorkflowError) as caught:
        resolve_node(shipped_graph(), "CLIPTextEncode")

    assert str(caught.value) == (
        "node 'CLIPTextEncode' is ambiguous: 2 nodes have that class_type "
        '(6 "Positive" (CLIPTextEncode), 7 "Negative" (CLIPTextEncode)); '
        "use a node id or give the node a unique title"
    )


def test_an_ambiguous_title_lists_the_candidates() -> None:
    graph = shipped_graph()
    graph["7"]["_meta"]["title"] = "Positive"

    with pytest.raises(WorkflowError, match="2 nodes have that title"):
        resolve_node(graph, "Positive")


def test_an_unknown_node_suggests_the_closest_name_and_lists_nodes() -> None:
    with pytest.raises(WorkflowError) as caught:
        resolve_node(shipped_graph(), "Postive")

    message = str(caught.value)
    assert message.startswith(
        "no node 'Postive' (by id, title or class_type). Did you mean 'Positive'?"
    )
    assert '3 (KSampler), 4 "Load Checkpoint" (CheckpointLoaderSimple)' in message


# --- API format -------------------------------------------------------------------------------


def test_links_are_recognised() -> None:
    assert is_link(["4", 0])
    assert not is_link(["4", "0"])
    assert not is_link([True, 0])
    assert not is_link("4")


def test_the_shipped_graphs_are_api_format() -> None:
    for path in sorted(WORKFLOWS.glob("sd15-*.json")):
        data = json.loads(path.read_text(encoding="utf-8"))
        assert not is_ui_format(data)
        assert load_graph(path) == data


def test_numeric_link_sources_are_normalised_to_strings(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["8"]["inputs"]["samples"] = [3, 0]
    path = tmp_path / "g.json"
    path.write_text(json.dumps(graph), encoding="utf-8")

    assert load_graph(path)["8"]["inputs"]["samples"] == ["3", 0]


def test_invalid_json_names_the_file_and_line(tmp_path: Path) -> None:
    path = in_workflows(tmp_path, "g.json", '{\n  "3": {,\n}')

    with pytest.raises(InvalidWorkflow) as caught:
        load_graph(path)

    assert str(caught.value).startswith("workflows/g.json: line 2: not valid JSON")


def test_a_node_without_class_type_is_named(tmp_path: Path) -> None:
    graph = shipped_graph()
    del graph["5"]["class_type"]
    path = in_workflows(tmp_path, "g.json", json.dumps(graph))

    with pytest.raises(InvalidWorkflow, match=r"workflows/g\.json: node 5: is not a node"):
        load_graph(path)


# --- UI format -> API format ------------------------------------------------------------------


def test_a_ui_export_converts_to_the_shipped_api_graph() -> None:
    converted = ui_to_api(txt2img_ui_export(), object_info())

    assert converted == shipped_graph()


def test_a_ui_export_file_is_converted_on_load(tmp_path: Path) -> None:
    path = tmp_path / "ui.json"
    path.write_text(json.dumps(txt2img_ui_export()), encoding="utf-8")

    assert load_graph(path, object_info()) == shipped_graph()


def test_widget_values_may_be_keyed_by_name() -> None:
    export = txt2img_ui_export()
    empty = next(n for n in export["nodes"] if n["id"] == 5)
    empty["widgets_values"] = {"height": 512, "width": 512, "batch_size": 1}

    assert ui_to_api(export, object_info())["5"]["inputs"] == {
        "width": 512,
        "height": 512,
        "batch_size": 1,
    }


def test_a_muted_node_is_left_out_and_its_links_dropped() -> None:
    export = txt2img_ui_export()
    negative = next(n for n in export["nodes"] if n["id"] == 7)
    negative["mode"] = 2

    converted = ui_to_api(export, object_info())

    assert "7" not in converted
    assert "negative" not in converted["3"]["inputs"]


def test_an_unknown_node_class_is_named() -> None:
    export = copy.deepcopy(txt2img_ui_export())
    export["nodes"].append(ui_node(20, "FancyUpscaler", image_input(30)))
    export["links"].append(_link(30, 8, 0, 20, 0, "IMAGE"))

    with pytest.raises(InvalidWorkflow) as caught:
        ui_to_api(export, object_info(), source="workflows/ui.json")

    assert str(caught.value).startswith(
        "workflows/ui.json: node 20 (FancyUpscaler): uses 'FancyUpscaler' (node 20), which no "
        "known custom node pack provides: search ComfyUI-Manager or the registry"
    )
