"""Patching: member values are checked, then written into a copy of the graph."""

from __future__ import annotations

import copy
import random
from pathlib import Path
from typing import Any

import pytest

from bot.errors import InvalidValue
from bot.workflows import Workflow, apply, coerce_values, load_workflow
from bot.workflows.patch import RANDOM_SEED_LIMIT
from tests.workflows.test_workflows import WORKFLOWS, load_pack, object_info, shipped_graph, titled


@pytest.fixture(scope="module")
def txt2img() -> Workflow:
    return load_workflow(WORKFLOWS / "sd15-txt2img.yaml")


def invalid(workflow: Workflow, raw: dict[str, Any], **kwargs: Any) -> InvalidValue:
    with pytest.raises(InvalidValue) as caught:
        coerce_values(workflow, raw, **kwargs)
    return caught.value


def without(graph: dict[str, Any], node_id: str, name: str) -> dict[str, Any]:
    copied = copy.deepcopy(graph)
    del copied[node_id]["inputs"][name]
    return copied


ADVERSARIAL_PROMPTS = [
    'a "quoted" prompt with \\"escapes\\" and \\u0000',
    '{"x": 1}',
    '"}, "4": {"class_type": "Evil", "inputs": {}}, "x": {"',
    "%s %d %(name)s {0} {prompt} {{prompt}} $prompt ${prompt}",
    "unicode: 日本語 🎨 ｆｕｌｌｗｉｄｔｈ \u202e rtl \U0001f600 zero\u200bwidth",
    "new\nlines\r\nand\ttabs",
    "['3', 0]",
    "</script><img src=x onerror=alert(1)>",
    "\\\\ backslashes \\",
]


@pytest.mark.parametrize("prompt", ADVERSARIAL_PROMPTS)
def test_a_hostile_prompt_changes_nothing_but_its_own_input(txt2img: Workflow, prompt: str) -> None:
    values = coerce_values(txt2img, {"prompt": prompt, "seed": 1})
    patched = apply(txt2img, values)

    assert patched["6"]["inputs"]["text"] == prompt
    expected = apply(txt2img, {**values, "prompt": "plain"})
    assert without(patched, "6", "text") == without(expected, "6", "text")
    assert set(patched) == set(txt2img.graph)


def test_apply_leaves_the_workflow_graph_untouched(txt2img: Workflow) -> None:
    before = copy.deepcopy(txt2img.graph)

    patched = apply(txt2img, coerce_values(txt2img, {"prompt": "a cat", "steps": 5}))
    patched["3"]["inputs"]["model"][0] = "99"

    assert txt2img.graph == before


def test_values_are_written_to_their_inputs(txt2img: Workflow) -> None:
    values = coerce_values(
        txt2img,
        {"prompt": "a cat", "negative": "dogs", "seed": 42, "steps": 12, "cfg": 4.5},
    )
    patched = apply(txt2img, values)

    assert patched["6"]["inputs"]["text"] == "a cat"
    assert patched["7"]["inputs"]["text"] == "dogs"
    assert (patched["3"]["inputs"]["seed"], patched["3"]["inputs"]["steps"]) == (42, 12)
    assert patched["3"]["inputs"]["cfg"] == 4.5


def test_a_multi_input_choice_sets_every_input_it_maps(txt2img: Workflow) -> None:
    patched = apply(txt2img, coerce_values(txt2img, {"prompt": "a cat", "size": "portrait"}))

    assert patched["5"]["inputs"] == {"width": 512, "height": 768, "batch_size": 1}


def test_defaults_fill_what_is_not_given(txt2img: Workflow) -> None:
    values = coerce_values(txt2img, {"prompt": "a cat"}, rng=random.Random(1))

    assert values == {
        "prompt": "a cat",
        "negative": "blurry, low quality, watermark, text",
        "seed": random.Random(1).randrange(RANDOM_SEED_LIMIT),
        "steps": 20,
        "cfg": 7.0,
        "size": "square",
        "sampler": "euler",
        "scheduler": "normal",
    }


def test_a_seed_not_given_is_random_in_32_bits(txt2img: Workflow) -> None:
    seeds = {coerce_values(txt2img, {"prompt": "x", "seed": None})["seed"] for _ in range(20)}

    assert len(seeds) > 1
    assert all(0 <= s < 2**32 for s in seeds)


def test_strings_from_the_cli_are_converted(txt2img: Workflow) -> None:
    values = coerce_values(
        txt2img, {"prompt": "x", "steps": " 30 ", "cfg": "6.5", "seed": "7", "size": "Landscape"}
    )

    assert (values["steps"], values["cfg"], values["seed"], values["size"]) == (
        30,
        6.5,
        7,
        "landscape",
    )


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"steps": 80}, "`steps`: must be a whole number between 1 and 50; got 80"),
        ({"steps": 0}, "`steps`: must be a whole number between 1 and 50; got 0"),
        ({"steps": "many"}, "`steps`: must be a whole number between 1 and 50"),
        ({"steps": 2.5}, "`steps`: must be a whole number between 1 and 50"),
        ({"steps": True}, "`steps`: must be a whole number between 1 and 50"),
        ({"cfg": 25}, "`cfg`: must be a number between 1 and 20; got 25"),
        ({"cfg": "nan"}, "`cfg`: must be a number between 1 and 20"),
        ({"seed": -1}, "`seed`: must be a whole number between 0 and 9007199254740991; got -1"),
        ({"size": "huge"}, "`size`: must be one of: square, portrait, landscape"),
        ({"sampler": "fastest"}, "`sampler`: must be one of: euler, euler_ancestral, heun"),
        ({"negative": 5}, "`negative`: must be text"),
    ],
)
def test_a_bad_value_names_the_param_and_what_it_accepts(
    txt2img: Workflow, raw: dict[str, Any], message: str
) -> None:
    error = invalid(txt2img, {"prompt": "a cat", **raw})

    assert str(error).startswith(message)
    assert error.param == next(iter(raw))


def test_a_missing_required_prompt_is_named(txt2img: Workflow) -> None:
    assert str(invalid(txt2img, {"steps": 5})) == "`prompt`: is required"


def test_a_blank_required_prompt_is_refused(txt2img: Workflow) -> None:
    assert str(invalid(txt2img, {"prompt": "   "})) == "`prompt`: can't be empty"


def test_a_too_long_prompt_says_how_long(txt2img: Workflow) -> None:
    error = invalid(txt2img, {"prompt": "x" * 1501})

    assert str(error) == "`prompt`: is too long: 1501 characters, at most 1500"


def test_an_unknown_param_lists_the_options(txt2img: Workflow) -> None:
    error = invalid(txt2img, {"prompt": "x", "stpes": 5})

    assert error.param == "stpes"
    assert "its options are: prompt, negative, seed, steps, cfg, size, sampler, scheduler" in str(
        error
    )


def test_enum_choices_come_from_object_info_when_the_yaml_lists_none(txt2img: Workflow) -> None:
    assert txt2img.require_param("scheduler").choices == ()  # loaded without object_info

    error = invalid(txt2img, {"prompt": "x", "scheduler": "sideways"}, object_info=object_info())

    assert str(error).startswith("`scheduler`: must be one of: simple, sgm_uniform, karras")
    values = coerce_values(
        txt2img, {"prompt": "x", "scheduler": "karras"}, object_info=object_info()
    )
    assert values["scheduler"] == "karras"


def test_a_size_must_be_a_multiple_of_its_step(tmp_path: Path) -> None:
    spec = titled(width={"type": "int", "node": "5", "input": "width", "step": 8, "min": 64})
    workflow = load_pack(tmp_path, spec)

    error = invalid(workflow, {"width": 700})

    assert str(error) == "`width`: must be a multiple of 8 (try 696 or 704)"


def test_a_list_choice_writes_the_chosen_value(tmp_path: Path) -> None:
    spec = titled(steps={"type": "choice", "node": "3", "input": "steps", "choices": [10, 30]})
    workflow = load_pack(tmp_path, spec)

    values = coerce_values(workflow, {"steps": "30"})

    assert values == {"steps": "30"}
    assert apply(workflow, values)["3"]["inputs"]["steps"] == 30
    assert (
        workflow.require_param("steps").default == "10"
    )  # the graph's 20 isn't a choice: first one


def test_inputs_and_targets_set_several_inputs(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["12"] = copy.deepcopy(graph["7"])
    graph["12"]["_meta"]["title"] = "Negative 2"
    spec = titled(
        side={"type": "int", "node": "5", "inputs": ["width", "height"]},
        negative={
            "type": "text",
            "targets": [{"node": "Negative", "input": "text"}, {"node": "12", "input": "text"}],
        },
    )
    workflow = load_pack(tmp_path, spec, graph)

    patched = apply(workflow, coerce_values(workflow, {"side": 640, "negative": "rain"}))

    assert (patched["5"]["inputs"]["width"], patched["5"]["inputs"]["height"]) == (640, 640)
    assert patched["7"]["inputs"]["text"] == patched["12"]["inputs"]["text"] == "rain"


def test_a_choice_mapping_can_target_several_nodes(tmp_path: Path) -> None:
    graph = shipped_graph()
    graph["12"] = copy.deepcopy(graph["5"])
    graph["12"]["_meta"]["title"] = "Second Latent"
    spec = titled(
        size={
            "type": "choice",
            "targets": [{"node": "5"}, {"node": "Second Latent"}],
            "choices": {
                "small": {"width": 256, "height": 256},
                "big": {"width": 1024, "height": 1024},
            },
        }
    )
    workflow = load_pack(tmp_path, spec, graph)

    patched = apply(workflow, {"size": "big"})

    assert patched["5"]["inputs"]["width"] == patched["12"]["inputs"]["height"] == 1024


def test_an_image_param_takes_the_uploaded_file_name() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-img2img.yaml")
    values = coerce_values(workflow, {"prompt": "x", "image": "comfycord/upload (1).png"})

    assert apply(workflow, values)["10"]["inputs"]["image"] == "comfycord/upload (1).png"


@pytest.mark.parametrize("name", ["../../etc/passwd", "/etc/passwd", "", "a/../../b.png"])
def test_an_image_name_cannot_leave_the_input_folder(name: str) -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-img2img.yaml")

    error = invalid(workflow, {"prompt": "x", "image": name})

    assert error.param == "image"


def test_a_required_image_must_be_given() -> None:
    workflow = load_workflow(WORKFLOWS / "sd15-img2img.yaml")

    assert str(invalid(workflow, {"prompt": "x"})) == "`image`: is required"


@pytest.mark.parametrize(
    ("given", "expected"), [(True, True), ("yes", True), ("off", False), (0, False)]
)
def test_bool_values_are_understood(tmp_path: Path, given: Any, expected: bool) -> None:
    graph = shipped_graph()
    graph["3"]["class_type"] = "SamplerCustom"
    graph["3"]["inputs"]["add_noise"] = True
    spec = titled(noise={"type": "bool", "node": "3", "input": "add_noise"})
    workflow = load_pack(tmp_path, spec, graph)

    assert coerce_values(workflow, {"noise": given}) == {"noise": expected}


def test_apply_refuses_an_unknown_param(txt2img: Workflow) -> None:
    with pytest.raises(InvalidValue):
        apply(txt2img, {"nope": 1})
