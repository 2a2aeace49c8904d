"""ComfyUI's recorded 400 answers, explained in plain words (pure function)."""

from __future__ import annotations

import json
from typing import Any

import pytest

from bot.comfy.rejection import explain_rejection
from tests.replay import DATA, rejection_cases

EXPECTED = {
    "missing_required_input": "EmptyImage (#1) is missing the required input 'width'",
    "unknown_class_type": "node type 'NoSuchNode' is not installed on ComfyUI (node #1)",
    "missing_class_type": "node #1 has no class_type (is this an API-format workflow?)",
    "link_to_missing_node": (
        "SaveImage (#2) input 'images' is linked to node #99, which is not in the workflow"
    ),
    "link_bad_output_index": (
        "SaveImage (#2) has a link to an output that doesn't exist (input 'images')"
    ),
    "link_malformed_len1": (
        "SaveImage (#2) input 'images' has a malformed link (expected [node_id, output_index])"
    ),
    "value_smaller_than_min": "EmptyImage (#1) input 'width': 0 is smaller than the minimum 1",
    "value_bigger_than_max": (
        "EmptyImage (#1) input 'width': 999999 is bigger than the maximum 16384"
    ),
    "invalid_input_type": "EmptyImage (#1) input 'width': 'abc' is not a valid INT value",
    "no_output_node": "the workflow has no output node (such as Save Image)",
    "return_type_mismatch_LATENT_to_IMAGE": (
        "SaveImage (#2) input 'images' expects IMAGE but is connected to a LATENT output"
    ),
    "lora_value_not_in_list": (
        "checkpoint 'does-not-exist.safetensors' is not installed on ComfyUI; available: none; "
        "KSampler (#4) input 'sampler_name': 'nope' is not one of the 42 allowed values"
    ),
    "empty_prompt_dict": "the workflow has no output node (such as Save Image)",
    "no_prompt_key": "no workflow was sent to ComfyUI",
    "ui_format_workflow (nodes/links)": (
        "the workflow is in ComfyUI's UI format; save it with 'Export (API)' instead"
    ),
}

CASES_400 = [(name, req, body) for name, req, status, body in rejection_cases() if status == 400]


def test_every_recorded_400_has_an_expected_message() -> None:
    assert {name for name, _, _ in CASES_400} == set(EXPECTED)


@pytest.mark.parametrize(("name", "request_json", "body"), CASES_400, ids=[c[0] for c in CASES_400])
def test_recorded_400_is_explained(
    name: str, request_json: dict[str, Any], body: dict[str, Any]
) -> None:
    assert explain_rejection(body, (request_json or {}).get("prompt")) == EXPECTED[name]


def _case(name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    request_json, body = next((r, b) for n, r, b in CASES_400 if n == name)
    return request_json["prompt"], body


def test_node_is_named_by_its_title() -> None:
    prompt, body = _case("value_smaller_than_min")
    prompt["1"]["_meta"] = {"title": "Canvas"}
    assert explain_rejection(body, prompt) == (
        "Canvas (#1) input 'width': 0 is smaller than the minimum 1"
    )


def test_allowed_values_come_from_object_info_when_comfyui_omits_them() -> None:
    prompt, body = _case("lora_value_not_in_list")
    object_info = json.loads((DATA / "object_info.json").read_text())
    message = explain_rejection(body, prompt, object_info)
    assert (
        "KSampler (#4) input 'sampler_name': 'nope' is not allowed; choose one of: euler,"
        in message
    )
    assert "more" in message


def test_installed_models_are_listed() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation", "message": "", "details": ""},
        "node_errors": {
            "4": {
                "class_type": "CheckpointLoaderSimple",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "message": "Value not in list",
                        "details": "ckpt_name: 'foo.safetensors' not in ['a.safetensors', ...]",
                        "extra_info": {
                            "input_name": "ckpt_name",
                            "input_config": [["a.safetensors", "b.safetensors"], {}],
                            "received_value": "foo.safetensors",
                        },
                    }
                ],
            },
            "5": {
                "class_type": "LoraLoader",
                "errors": [
                    {
                        "type": "value_not_in_list",
                        "details": "lora_name: 'x' not in []",
                        "extra_info": {
                            "input_name": "lora_name",
                            "input_config": ["COMBO", {"options": ["l1.safetensors"]}],
                            "received_value": "x",
                        },
                    }
                ],
            },
        },
    }
    assert explain_rejection(body) == (
        "checkpoint 'foo.safetensors' is not installed on ComfyUI; "
        "available: a.safetensors, b.safetensors; "
        "LoRA 'x' is not installed on ComfyUI; available: l1.safetensors"
    )


def test_missing_input_image() -> None:
    body = {
        "error": {"type": "prompt_outputs_failed_validation"},
        "node_errors": {
            "1": {
                "class_type": "LoadImage",
                "errors": [
                    {
                        "type": "custom_validation_failed",
                        "message": "Custom validation failed for node",
                        "details": "image - Invalid image file: nope/missing.png",
                        "extra_info": {"input_name": "image"},
                    }
                ],
            }
        },
    }
    assert explain_rejection(body) == (
        "LoadImage (#1): the image 'nope/missing.png' is not on ComfyUI (upload it again)"
    )


def test_unknown_shapes_still_give_a_message() -> None:
    assert explain_rejection({}) == "ComfyUI rejected the workflow: unknown error"
    weird = {
        "error": {"type": "x", "message": "Something odd", "details": "more info"},
        "node_errors": 3,
    }
    assert explain_rejection(weird) == "ComfyUI rejected the workflow: Something odd: more info"
    node = {"node_errors": {"3": {"class_type": "K", "errors": [{"type": "new_kind"}, "junk"]}}}
    assert explain_rejection(node) == "K (#3): new_kind"


def test_message_is_bounded() -> None:
    errors = [
        {"type": "required_input_missing", "extra_info": {"input_name": f"in{i}"}}
        for i in range(300)
    ]
    body = {"node_errors": {"1": {"class_type": "Big", "errors": errors}}}
    assert len(explain_rejection(body)) <= 1800
