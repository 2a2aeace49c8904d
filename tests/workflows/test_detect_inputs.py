"""Detection of what surrounds the sampler on graphs built from popular custom node packs:
sizes picked from lists, text joined or shown before the encoder (never the delimiter), path
loaders (offered only inside ComfyUI's input folder).

The classes come from the recorded `/object_info` of the packs.
"""

from __future__ import annotations

from typing import Any

import pytest

from bot.workflows.detect import detect_params
from tests.workflows.detect_graphs import (
    aspect_ratio,
    decode_and_save,
    detected,
    encoders,
    info,
    ksampler,
    node,
    with_latent,
)

# --- sizes ----------------------------------------------------------------------------------


def test_rgthrees_dimensions_list_is_a_size_option_over_its_sizes() -> None:
    latent = node(
        "SDXL Empty Latent Image (rgthree)",
        dimensions="1024 x 1024  (square)",
        clip_scale=2.0,
        batch_size=1,
    )

    found = detect_params(with_latent(latent), info())

    size = found["size"]
    assert (size.type, size.node, size.input) == ("enum", "4", "dimensions")
    assert size.default == "1024 x 1024  (square)"
    assert size.choices is not None and " 832 x 1216  (portrait)" in size.choices
    assert "width" not in found and "height" not in found


def test_a_comfyroll_aspect_ratio_picked_from_its_list_is_the_size() -> None:
    latent = node("EmptyLatentImage", width=["30", 0], height=["30", 1], batch_size=1)
    ratio = aspect_ratio("3:4 portrait 896x1152")

    found = detect_params(with_latent(latent, **{"30": ratio}), info())

    size = found["size"]
    assert (size.node, size.input) == ("30", "aspect_ratio")
    assert size.choices is not None and "custom" not in size.choices
    assert "width" not in found and "height" not in found


def test_a_comfyroll_aspect_ratio_as_the_latent_itself_is_the_size() -> None:
    graph = with_latent(
        aspect_ratio(
            "SD1.5 - 2:3 portrait 512x768", "CR Aspect Ratio", side=512, prescale_factor=1.0
        )
    )
    graph["5"]["inputs"]["latent_image"] = ["4", 5]

    found = detected(graph)

    assert found["size"] == [("4", "aspect_ratio")]
    assert "width" not in found


# --- text joined before the encoder ---------------------------------------------------------


def _joined(text_node: dict[str, Any], **sources: dict[str, Any]) -> dict[str, Any]:
    graph = with_latent(node("EmptyLatentImage", width=512, height=512, batch_size=1))
    graph["2"]["inputs"]["text"] = ["20", 0]
    graph["20"] = text_node
    graph.update(sources)
    return graph


@pytest.mark.parametrize(
    ("joiner", "first"),
    [
        (
            node(
                "Text Concatenate",
                delimiter=", ",
                clean_whitespace="true",
                text_a=["21", 0],
                text_b=["22", 0],
            ),
            ("21", "text"),
        ),
        (
            node("CR Text Concatenate", text1=["21", 0], text2=["22", 0], separator=", "),
            ("21", "text"),
        ),
        (
            node("StringConcatenate", string_a=["21", 0], string_b="masterpiece", delimiter=", "),
            ("21", "text"),
        ),
        (
            node("StringConcatenate", string_a="a castle", string_b=["22", 0], delimiter=", "),
            ("20", "string_a"),
        ),
    ],
    ids=["was", "comfyroll", "core-linked", "core-typed"],
)
def test_a_joined_prompt_is_its_first_text_never_the_delimiter(
    joiner: dict[str, Any], first: tuple[str, str]
) -> None:
    graph = _joined(
        joiner,
        **{
            "21": node("Text Multiline", text="a castle"),
            "22": node("Text Multiline", text="masterpiece"),
        },
    )

    found = detected(graph)

    assert found["prompt"] == [first]
    every = [t for targets in found.values() for t in targets]
    assert not [t for t in every if t[1] in ("delimiter", "separator", "clean_whitespace")]


def test_a_shown_text_passes_the_prompt_on_from_its_box() -> None:
    graph = _joined(
        node("ShowText|pysssss", text=["21", 0]),
        **{"21": node("CR Prompt Text", prompt="a castle")},
    )

    found = detected(graph)

    assert found["prompt"] == [("21", "prompt")]


# --- path loaders ---------------------------------------------------------------------------


def _from_path(path: str) -> dict[str, Any]:
    graph = encoders()
    del graph["4"]
    graph["8"] = node("VHS_LoadImagePath", image=path, custom_width=0, custom_height=0)
    graph["9"] = node("VAEEncode", pixels=["8", 0], vae=["1", 2])
    graph["5"] = ksampler(["9", 0])
    graph["5"]["inputs"]["denoise"] = 0.6
    return decode_and_save(graph, ["5", 0])


def test_a_path_loader_reading_the_input_folder_is_an_image_option() -> None:
    found = detected(_from_path("input/photo.png"))

    assert found["image"] == [("8", "image")]
    assert found["denoise"] == [("5", "denoise")]


@pytest.mark.parametrize(
    "path", ["/home/me/photo.png", "C:/Users/me/photo.png", "https://example.com/a.png", "x.png"]
)
def test_a_path_loader_reading_elsewhere_is_not_offered(path: str) -> None:
    found = detected(_from_path(path))

    assert "image" not in found
    assert found["prompt"] == [("2", "text")]
