"""Deriving a valid workflow name from any file name."""

from __future__ import annotations

import pytest

from bot.workflows import derive_name
from bot.workflows.spec import NAME_RE

# file names of workflows ComfyUI ships as templates, refused as pack names before
TEMPLATE_NAMES = {
    "3d_hunyuan3d-v2.1.json": "3d_hunyuan3d-v2-1",
    "sd3.5_simple_example.json": "sd3-5_simple_example",
    "image_flux.1_fill_dev_OneReward.json": "image_flux-1_fill_dev_onereward",
    "video_wan2.1_alpha_t2v_14B.json": "video_wan2-1_alpha_t2v_14b",
    "api_wan_text_to_image .json": "api_wan_text_to_image",
}


@pytest.mark.parametrize(("file_name", "expected"), sorted(TEMPLATE_NAMES.items()))
def test_dots_spaces_and_capitals_become_a_valid_name(file_name: str, expected: str) -> None:
    assert derive_name(file_name) == expected


def test_a_valid_stem_is_kept_as_is() -> None:
    assert derive_name("sd15-txt2img.json") == "sd15-txt2img"
    assert derive_name("my_flow.yaml") == "my_flow"


def test_a_long_name_is_cut_to_32_characters_and_stays_apart_from_its_neighbours() -> None:
    first = derive_name("api_moonvalley_video_to_video_motion_transfer.json")
    second = derive_name("api_moonvalley_video_to_video_pose_control.json")
    for name in (first, second):
        assert NAME_RE.match(name) and len(name) == 32
        assert name.startswith("api_moonvalley_video_to_vid")
    assert first != second
    assert derive_name("api_moonvalley_video_to_video_motion_transfer.json") == first


def test_accents_are_dropped_and_other_scripts_give_a_stable_fallback() -> None:
    assert derive_name("Café Crème.JSON") == "cafe-creme"
    assert derive_name("Flux.1 Dev (fp8).json") == "flux-1-dev-fp8"
    landscape = derive_name("風景.json")
    assert NAME_RE.match(landscape) and landscape.startswith("workflow-")
    assert derive_name("風景.json") == landscape != derive_name("山.json")


@pytest.mark.parametrize(
    "file_name", ["../../etc/passwd.json", "..\\..\\secret.json", "..", "/", "", ".json", "a/.."]
)
def test_folders_and_dots_never_reach_the_name(file_name: str) -> None:
    name = derive_name(file_name)
    assert NAME_RE.match(name), name
    assert "/" not in name and "\\" not in name and name not in (".", "..")
