"""The workflow YAML schema: every mistake is named by file, key and problem."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.workflows import InvalidWorkflow
from bot.workflows.spec import WorkflowSpec, load_spec, parse_spec
from tests.workflows.test_workflows import in_workflows

SOURCE = "workflows/txt2img.yaml"


def problems(data: Any) -> list[str]:
    with pytest.raises(InvalidWorkflow) as caught:
        parse_spec(data, SOURCE)
    return [str(p) for p in caught.value.problems]


def spec_with(**param: Any) -> dict[str, Any]:
    base = {"type": "int", "node": "KSampler", "input": "steps"}
    return {"title": "t", "params": {"steps": base | param}}


def test_a_valid_spec_parses() -> None:
    spec = parse_spec(
        {
            "title": "SD",
            "params": {
                "prompt": {"type": "text", "node": "Positive", "input": "text", "required": True},
                "size": {
                    "type": "choice",
                    "node": 5,
                    "choices": {"square": {"width": 512, "height": 512}},
                },
            },
        },
        SOURCE,
    )

    assert isinstance(spec, WorkflowSpec)
    assert spec.params is not None
    assert list(spec.params) == ["prompt", "size"]
    assert spec.params["size"].is_mapping_choice
    assert spec.graph_file("txt2img") == "txt2img.json"


def test_a_wrong_type_names_file_key_and_problem() -> None:
    assert problems(spec_with(max=[50])) == [
        "workflows/txt2img.yaml: params.steps.max: Input should be a valid integer"
    ]


def test_every_problem_is_listed_at_once() -> None:
    data = spec_with(max="lots", required="maybe")
    data["nsfw"] = "sometimes"

    found = problems(data)

    assert [line.split(": ")[1] for line in found] == [
        "nsfw",
        "params.steps.max",
        "params.steps.required",
    ]


def test_a_missing_title_is_named() -> None:
    assert problems({"params": {}}) == ["workflows/txt2img.yaml: title: is required"]


def test_an_unknown_key_lists_the_allowed_ones() -> None:
    (found,) = problems(spec_with(maximum=50))

    assert found.startswith("workflows/txt2img.yaml: params.steps.maximum: unknown key; allowed")
    assert "max_length" in found


def test_an_unknown_top_level_key_is_named() -> None:
    (found,) = problems({"title": "t", "parms": {}})

    assert found.startswith("workflows/txt2img.yaml: parms: unknown key; allowed here: title")


def test_an_unknown_param_type_lists_the_types() -> None:
    (found,) = problems(spec_with(type="number"))

    assert found.startswith("workflows/txt2img.yaml: params.steps.type: Input should be 'text'")


@pytest.mark.parametrize("name", ["Steps", "my steps", "a" * 33, "ünïcode"])
def test_param_names_must_be_discord_option_names(name: str) -> None:
    data = {"title": "t", "params": {name: {"type": "int", "node": "3", "input": "steps"}}}

    (found,) = problems(data)

    assert f"'{name}' is not a valid param name" in found
    assert found.startswith(f"workflows/txt2img.yaml: params.{name}:")


def test_at_most_25_params() -> None:
    params = {f"p{i}": {"type": "int", "node": "3", "input": f"i{i}"} for i in range(26)}

    (found,) = problems({"title": "t", "params": params})

    assert found.startswith("workflows/txt2img.yaml: params: ")
    assert "at most 25" in found


def test_required_params_come_first() -> None:
    data = {
        "title": "t",
        "params": {
            "steps": {"type": "int", "node": "3", "input": "steps"},
            "prompt": {"type": "text", "node": "6", "input": "text", "required": True},
        },
    }

    assert problems(data) == [
        "workflows/txt2img.yaml: params.prompt: required params must come before optional ones "
        "(Discord lists them first); move it above `steps`"
    ]


@pytest.mark.parametrize(
    ("param", "message"),
    [
        ({"min": 60, "max": 50}, "min (60) is above max (50)"),
        ({"default": 80, "max": 50}, "default (80) is above max (50)"),
        ({"default": 2.5}, "default must be a whole number"),
        ({"min": 1.5}, "`min` must be a whole number for a int param"),
        ({"max_length": 10}, "`max_length` only applies to text params"),
        ({"choices": [1, 2]}, "`choices` only applies to choice and enum params"),
        ({"type": "text", "min": 1}, "`min` only applies to int, float and seed params"),
        ({"type": "choice", "input": "steps"}, "a choice param needs `choices`"),
        ({"required": True, "default": 20}, "a required param can't have a default"),
        ({"input": None}, "say which input of the node it sets"),
        ({"node": None}, "say which node it sets"),
        ({"inputs": ["steps"]}, "set `input` or `inputs`, not both"),
        ({"targets": [{"node": "3", "input": "steps"}]}, "set `node` (with `input`) or `targets`"),
        ({"step": 8, "default": 20}, "default (20) is not a multiple of step (8)"),
        ({"type": "seed", "min": -1}, "a seed can't be negative"),
        ({"description": "x" * 101}, "String should have at most 100 characters"),
    ],
)
def test_param_rules_are_explained(param: dict[str, Any], message: str) -> None:
    (found,) = problems(spec_with(**param))

    assert found.startswith("workflows/txt2img.yaml: params.steps")
    assert message in found


def size_problem(**size: Any) -> str:
    """The one problem of a spec whose only param, `size`, is a choice on node 5."""
    (found,) = problems({"title": "t", "params": {"size": {"type": "choice", "node": "5", **size}}})
    return found


def test_choices_mapping_must_set_the_same_inputs() -> None:
    found = size_problem(choices={"square": {"width": 512, "height": 512}, "wide": {"width": 768}})

    assert "choice 'wide' sets width but the first choice sets height, width" in found


def test_a_mapped_choice_names_its_inputs_in_choices() -> None:
    found = size_problem(input="width", choices={"square": {"width": 512, "height": 512}})

    assert "drop `input`/`inputs`" in found


def test_a_choice_default_must_be_a_label() -> None:
    found = size_problem(choices={"square": {"width": 512}}, default="huge")

    assert "default 'huge' is not one of the choices: square" in found


def test_a_bad_value_deep_in_choices_is_named_by_label() -> None:
    found = size_problem(choices={"square": {"width": [512]}})

    assert found.startswith("workflows/txt2img.yaml: params.size.choices.square.width: ")


@pytest.mark.parametrize("graph", ["../x.json", "/abs/x.json", "sub/x.json", "..", "C:x.json"])
def test_graph_must_be_a_plain_file_name(graph: str) -> None:
    (found,) = problems({"title": "t", "graph": graph})

    assert found.startswith("workflows/txt2img.yaml: graph: must be a plain file name")


def test_command_must_be_a_discord_command_name() -> None:
    (found,) = problems({"title": "t", "command": "Image To Image"})

    assert found.startswith("workflows/txt2img.yaml: command: use 1-32 lowercase")


def test_a_yaml_file_that_is_not_a_mapping_is_explained() -> None:
    assert problems(["title"]) == [
        "workflows/txt2img.yaml: must be a mapping of keys (title, params...), not a list"
    ]


def test_a_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    path = in_workflows(tmp_path, "txt2img.yaml", "title: t\nparams:\n  steps: {type: int\n")

    with pytest.raises(InvalidWorkflow) as caught:
        load_spec(path)

    (problem,) = caught.value.problems
    assert problem.file == "workflows/txt2img.yaml"
    assert problem.key.startswith("line ")
    assert "not valid YAML" in problem.message


def test_params_may_be_left_out_for_detection() -> None:
    assert parse_spec({"title": "t"}, SOURCE).params is None


def test_followup_names_an_image_param() -> None:
    image = {"type": "image", "node": "Load Image", "input": "image", "required": True}
    prompt = {"type": "text", "node": "Positive", "input": "text"}
    good = {
        "title": "Up",
        "followup": {"label": "Upscale", "emoji": "🔍", "param": "image"},
        "params": {"image": image, "prompt": prompt},
    }
    spec = parse_spec(good, SOURCE)
    assert spec.followup is not None and spec.followup.label == "Upscale"
    assert problems({**good, "followup": {"label": "Upscale", "param": "prompt"}}) == [
        f"{SOURCE}: followup.param: `prompt` is a text param; a follow-up needs an image, "
        "video or audio param"
    ]
    assert problems({**good, "followup": {"label": "Upscale", "param": "picture"}}) == [
        f"{SOURCE}: followup.param: `picture` is not one of the params (image, prompt)"
    ]
    too_long = problems({**good, "followup": {"label": "x" * 33, "param": "image"}})
    assert too_long == [f"{SOURCE}: followup.label: String should have at most 32 characters"]
