"""Detecting params from a graph when the YAML leaves them out."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from bot.workflows import InvalidWorkflow, check_workflow
from bot.workflows.detect import detect_params
from bot.workflows.spec import ParamSpec
from tests.workflows.detect_graphs import SAMPLED, custom_advanced, node
from tests.workflows.test_workflows import (
    installed_object_info,
    load_pack,
    object_info,
    shipped_graph,
)


def targets(found: dict[str, ParamSpec]) -> dict[str, tuple[Any, str | None, str]]:
    return {name: (spec.node, spec.input, spec.type) for name, spec in found.items()}


def sampling_targets(
    text: tuple[str, str], latent: str, sampler: str, **elsewhere: tuple[str, str]
) -> dict[str, tuple[Any, str | None, str]]:
    """The (node, input, type) of each field of a text-to-image graph: the prompt and negative in
    the `text` encoders, the size in `latent`, the rest in `sampler` unless `elsewhere` says."""
    places = {
        "seed": (sampler, "seed"),
        "steps": (sampler, "steps"),
        "cfg": (sampler, "cfg"),
        "sampler": (sampler, "sampler_name"),
        "scheduler": (sampler, "scheduler"),
        **elsewhere,
    }
    kinds = {"seed": "seed", "steps": "int", "cfg": "float", "sampler": "enum", "scheduler": "enum"}
    return {
        "prompt": (text[0], "text", "text"),
        "negative": (text[1], "text", "text"),
        "width": (latent, "width", "int"),
        "height": (latent, "height", "int"),
        **{name: (*places[name], kind) for name, kind in kinds.items()},
    }


def custom_sampler_graph() -> dict[str, Any]:
    """A SamplerCustomAdvanced graph: noise, guider, sampler and sigmas come from other nodes."""
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name="tiny-random.safetensors"),
        "2": node("CLIPTextEncode", text="a cat", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="", clip=["1", 1]),
        "4": node("CFGGuider", **SAMPLED, cfg=3.5),
        "5": node("RandomNoise", noise_seed=7),
        "6": node("KSamplerSelect", sampler_name="euler"),
        "7": node("BasicScheduler", model=["1", 0], scheduler="simple", steps=12, denoise=1.0),
        "8": node("EmptySD3LatentImage", width=1024, height=768, batch_size=1),
        "9": custom_advanced("5", "4", "6", "7", latent=["8", 0]),
        "10": node("VAEDecode", samples=["9", 0], vae=["1", 2]),
        "11": node("SaveImage", images=["10", 0], filename_prefix="x"),
    }


def test_the_shipped_txt2img_graph_gives_the_params_a_person_would_pick() -> None:
    found = detect_params(shipped_graph("sd15-txt2img"))

    assert targets(found) == sampling_targets(text=("6", "7"), latent="5", sampler="3")
    assert found["prompt"].required
    assert (found["steps"].min, found["steps"].max, found["steps"].default) == (1, 150, 20)
    assert (found["width"].min, found["width"].max, found["width"].step) == (64, 2048, 8)
    assert found["width"].default == 512


def test_the_shipped_img2img_graph_gives_image_and_denoise() -> None:
    found = detect_params(shipped_graph("sd15-img2img"))

    assert list(found) == [
        "prompt",
        "image",
        "negative",
        "seed",
        "steps",
        "cfg",
        "denoise",
        "sampler",
        "scheduler",
    ]
    assert targets(found)["image"] == ("10", "image", "image")
    assert found["image"].required
    assert targets(found)["denoise"] == ("3", "denoise", "float")
    assert (found["denoise"].min, found["denoise"].max, found["denoise"].default) == (0, 1, 0.6)
    assert "width" not in found


def test_detected_params_of_the_shipped_graphs_check_clean(tmp_path: Path) -> None:
    info = installed_object_info()
    for name in ("sd15-txt2img", "sd15-img2img"):
        workflow = load_pack(tmp_path / name, {"title": name}, shipped_graph(name))
        assert workflow.detected
        assert check_workflow(workflow, info) == []


def test_a_custom_sampler_is_followed_through_guider_noise_and_sigmas() -> None:
    found = detect_params(custom_sampler_graph())

    assert targets(found) == sampling_targets(
        text=("2", "3"),
        latent="8",
        sampler="6",
        seed=("5", "noise_seed"),
        steps=("7", "steps"),
        cfg=("4", "cfg"),
        scheduler=("7", "scheduler"),
    )


@pytest.mark.parametrize("info", [None, "object_info"])
def test_conditioning_is_followed_back_through_other_nodes(info: str | None) -> None:
    graph = shipped_graph()
    graph["12"] = {
        "class_type": "ControlNetApplyAdvanced",
        "inputs": {
            "positive": ["13", 0],
            "negative": ["7", 0],
            "control_net": ["14", 0],
            "image": ["15", 0],
            "strength": 1.0,
            "start_percent": 0.0,
            "end_percent": 1.0,
        },
    }
    graph["13"] = {
        "class_type": "ConditioningCombine",
        "inputs": {"conditioning_1": ["6", 0], "conditioning_2": ["16", 0]},
    }
    graph["16"] = {"class_type": "CLIPTextEncode", "inputs": {"text": "style", "clip": ["4", 1]}}
    graph["3"]["inputs"]["positive"] = ["12", 0]
    graph["3"]["inputs"]["negative"] = ["12", 1]

    found = detect_params(graph, object_info() if info else None)

    prompt = found["prompt"].targets or []
    assert [(t.node, t.input) for t in prompt] == [("6", "text"), ("16", "text")]
    assert targets(found)["negative"] == ("7", "text", "text")


def test_the_first_pass_sampler_is_chosen_in_a_two_pass_graph() -> None:
    graph = shipped_graph()
    graph["20"] = {
        "class_type": "LatentUpscaleBy",
        "inputs": {"samples": ["3", 0], "upscale_method": "nearest-exact", "scale_by": 1.5},
    }
    graph["2"] = dict(graph["3"], inputs=dict(graph["3"]["inputs"], latent_image=["20", 0]))
    graph["8"]["inputs"]["samples"] = ["2", 0]

    found = detect_params(graph)

    assert targets(found)["seed"] == ("3", "seed", "seed")
    assert targets(found)["width"] == ("5", "width", "int")


def test_a_seed_from_a_primitive_node_targets_the_primitive() -> None:
    graph = shipped_graph()
    graph["20"] = {"class_type": "PrimitiveInt", "inputs": {"value": 5}}
    graph["3"]["inputs"]["seed"] = ["20", 0]

    assert targets(detect_params(graph))["seed"] == ("20", "value", "seed")


def test_a_zeroed_negative_is_not_offered() -> None:
    graph = shipped_graph()
    del graph["7"]
    graph["7"] = {"class_type": "ConditioningZeroOut", "inputs": {"conditioning": ["6", 0]}}

    found = detect_params(graph, object_info())

    assert "negative" not in found
    assert targets(found)["prompt"] == ("6", "text", "text")


def test_a_graph_with_nothing_to_detect_is_a_problem(tmp_path: Path) -> None:
    graph = {
        "1": {
            "class_type": "EmptyImage",
            "inputs": {"width": 8, "height": 8, "batch_size": 1, "color": 0},
        },
        "2": {"class_type": "SaveImage", "inputs": {"images": ["1", 0], "filename_prefix": "x"}},
    }

    with pytest.raises(InvalidWorkflow) as caught:
        load_pack(tmp_path, {"title": "t"}, graph)

    (problem,) = caught.value.problems
    assert (problem.file, problem.key, problem.code) == ("workflows/pack.yaml", "params", "detect")
