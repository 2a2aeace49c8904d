"""Detection on labelled graphs with custom nodes, written the way public API-format workflows
are built: custom samplers, primitives, guiders, refiners, video, inpaint, loaders holding the
prompt. Each field's detected node and input is asserted.

The custom classes come from the recorded `/object_info` of popular node packs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.workflows.detect_graphs import (
    DECODING,
    NO_LORA,
    WEIGHTING,
    aspect_ratio,
    custom_advanced,
    decode_and_save,
    detected,
    encoders,
    ksampler,
    latent_size,
    node,
)


def _sd15(**sampler: Any) -> dict[str, Any]:
    """Checkpoint, two encoders, an empty latent, decode and save; the sampler is the caller's."""
    graph = encoders(height=512)
    graph["5"] = node(**sampler)
    return decode_and_save(graph, ["5", 0])


def _ksampler_inputs() -> dict[str, Any]:
    return dict(ksampler(["4", 0])["inputs"])


def test_efficiency_sampler_and_the_loader_holding_the_prompt() -> None:
    graph = {
        "1": node(
            "Efficient Loader",
            ckpt_name="tiny-sd15.safetensors",
            vae_name="Baked VAE",
            clip_skip=-1,
            **NO_LORA,
            positive="a castle on a hill",
            negative="blurry",
            **WEIGHTING,
            **latent_size(512, 768),
        ),
        "2": node(
            "KSampler (Efficient)",
            model=["1", 0],
            positive=["1", 1],
            negative=["1", 2],
            latent_image=["1", 3],
            optional_vae=["1", 4],
            seed=5,
            steps=25,
            cfg=6.5,
            sampler_name="euler",
            scheduler="normal",
            denoise=1.0,
            **DECODING,
        ),
        "3": node("SaveImage", images=["2", 5], filename_prefix="x"),
    }

    found = detected(graph)

    assert found["prompt"] == [("1", "positive")]
    assert found["negative"] == [("1", "negative")]
    assert found["seed"] == [("2", "seed")]
    assert found["steps"] == [("2", "steps")]
    assert found["cfg"] == [("2", "cfg")]
    assert found["width"] == [("1", "empty_latent_width")]
    assert found["height"] == [("1", "empty_latent_height")]


def test_a_custom_advanced_sampler_with_noise_seed() -> None:
    inputs = _ksampler_inputs()
    inputs["noise_seed"] = inputs.pop("seed")
    del inputs["denoise"]
    inputs.update(
        add_noise="enable",
        start_at_step=0,
        end_at_step=10000,
        return_with_leftover_noise="disable",
        **DECODING,
    )
    graph = _sd15(class_type="KSampler Adv. (Efficient)", **inputs)
    graph["6"]["inputs"]["samples"] = ["5", 3]

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]
    assert found["negative"] == [("3", "text")]
    assert found["seed"] == [("5", "noise_seed")]
    assert found["steps"] == [("5", "steps")]
    assert found["width"] == [("4", "width")]


def test_rgthree_seed_and_kjnodes_int_constant_hold_seed_and_steps() -> None:
    inputs = _ksampler_inputs()
    inputs.update(seed=["10", 0], steps=["11", 0], preview_method="auto", vae_decode="false")
    graph = _sd15(class_type="KSampler (Efficient)", **inputs)
    graph["6"]["inputs"]["samples"] = ["5", 3]
    graph["10"] = node("Seed (rgthree)", seed=1234)
    graph["11"] = node("INTConstant", value=30)

    found = detected(graph)

    assert found["seed"] == [("10", "seed")]
    assert found["steps"] == [("11", "value")]
    assert found["cfg"] == [("5", "cfg")]


def test_custom_text_nodes_feeding_the_encoders_hold_the_prompt() -> None:
    graph = _sd15(class_type="KSampler", **_ksampler_inputs())
    graph["2"]["inputs"]["text"] = ["20", 0]
    graph["3"]["inputs"]["text"] = ["20", 1]
    graph["20"] = node(
        "SDXLPromptStyler",
        text_positive="a castle",
        text_negative="blurry",
        style="base",
        log_prompt=False,
        style_positive=True,
        style_negative=True,
    )

    found = detected(graph)

    assert found["prompt"] == [("20", "text_positive")]
    assert found["negative"] == [("20", "text_negative")]


def test_a_one_value_text_node_feeding_an_encoder_holds_the_prompt() -> None:
    graph = _sd15(class_type="KSampler", **_ksampler_inputs())
    graph["2"]["inputs"]["text"] = ["20", 0]
    graph["3"]["inputs"]["text"] = ["21", 0]
    graph["20"] = node("easy positive", positive="a castle")
    graph["21"] = node("Text Multiline", text="blurry")

    found = detected(graph)

    assert found["prompt"] == [("20", "positive")]
    assert found["negative"] == [("21", "text")]


def test_the_size_comes_from_a_custom_resolution_node() -> None:
    graph = _sd15(class_type="KSampler", **_ksampler_inputs())
    graph["4"]["inputs"].update(width=["30", 0], height=["30", 1])
    graph["30"] = aspect_ratio("custom")

    found = detected(graph)

    assert found["width"] == [("30", "width")]
    assert found["height"] == [("30", "height")]


def test_a_guider_graph_with_a_string_primitive_and_a_refiner_pass() -> None:
    graph = {
        "1": node("CheckpointLoaderSimple", ckpt_name="tiny-sd15.safetensors"),
        "2": node("CLIPTextEncode", text=["12", 0], clip=["1", 1]),
        "3": node("CLIPTextEncode", text="blurry", clip=["1", 1]),
        "4": node("EmptySD3LatentImage", width=1024, height=1024, batch_size=1),
        "5": node(
            "DualCFGGuider",
            model=["1", 0],
            cond1=["2", 0],
            cond2=["3", 0],
            negative=["3", 0],
            cfg_conds=4.0,
            cfg_cond2_negative=1.5,
            style="regular",
        ),
        "6": node("RandomNoise", noise_seed=99),
        "7": node("KSamplerSelect", sampler_name="euler"),
        "8": node("BasicScheduler", model=["1", 0], scheduler="simple", steps=18, denoise=1.0),
        "9": custom_advanced("6", "5", "7", "8", latent=["4", 0]),
        "10": node("CLIPTextEncode", text="same text again", clip=["1", 1]),
        "11": node(
            "KSamplerAdvanced",
            model=["1", 0],
            add_noise="disable",
            noise_seed=0,
            steps=18,
            cfg=5.0,
            sampler_name="euler",
            scheduler="normal",
            positive=["10", 0],
            negative=["3", 0],
            latent_image=["9", 0],
            start_at_step=14,
            end_at_step=10000,
            return_with_leftover_noise="disable",
        ),
        "12": node("PrimitiveStringMultiline", value="a castle"),
        "13": node("VAEDecode", samples=["11", 0], vae=["1", 2]),
        "14": node("SaveImage", images=["13", 0], filename_prefix="x"),
    }

    found = detected(graph)

    assert found["prompt"] == [("12", "value"), ("10", "text")]
    assert found["negative"] == [("3", "text")]
    assert found["seed"] == [("6", "noise_seed")]
    assert found["steps"] == [("8", "steps")]
    assert found["width"] == [("4", "width")]
    assert found["sampler"] == [("7", "sampler_name")]


def test_inpaint_offers_the_image_and_the_mask_and_denoise() -> None:
    inputs = _ksampler_inputs()
    inputs.update(positive=["8", 0], negative=["8", 1], latent_image=["8", 2], denoise=0.8)
    graph = _sd15(class_type="KSampler", **inputs)
    del graph["4"]
    graph["8"] = node(
        "InpaintModelConditioning",
        positive=["2", 0],
        negative=["3", 0],
        vae=["1", 2],
        pixels=["9", 0],
        mask=["10", 0],
        noise_mask=True,
    )
    graph["9"] = node("LoadImage", image="photo.png")
    graph["10"] = node("LoadImageMask", image="mask.png", channel="alpha")

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]
    assert found["image"] == [("9", "image")]
    assert found["mask"] == [("10", "image")]
    assert found["denoise"] == [("5", "denoise")]
    assert "width" not in found


def _webp(images: list[Any], prefix: str) -> dict[str, Any]:
    return node(
        "SaveAnimatedWEBP",
        images=images,
        filename_prefix=prefix,
        fps=16.0,
        lossless=False,
        quality=90,
        method="default",
    )


VHS_LOAD_VIDEO_PATH = node(
    "VHS_LoadVideoPath",
    video="input/clip.mp4",
    force_rate=0,
    custom_width=0,
    custom_height=0,
    frame_load_cap=0,
    skip_first_frames=0,
    select_every_nth=1,
)


@pytest.mark.parametrize(
    ("loaders", "frames", "expected"),
    [
        (
            {
                "10": node("LoadVideo", file="clip.mp4"),
                "11": node("GetVideoComponents", video=["10", 0]),
            },
            ["11", 0],
            [("10", "file")],
        ),
        ({"10": VHS_LOAD_VIDEO_PATH}, ["10", 0], [("10", "video")]),
    ],
    ids=["LoadVideo", "VHS_LoadVideoPath"],
)
def test_video_graphs_offer_the_video_and_the_video_latent_size(
    loaders: dict[str, Any], frames: list[Any], expected: list[tuple[str, str]]
) -> None:
    graph = {
        "1": node("UNETLoader", unet_name="wan.safetensors", weight_dtype="default"),
        "2": node("CLIPLoader", clip_name="umt5.safetensors", type="wan", device="default"),
        "3": node("CLIPTextEncode", text="a cat surfing", clip=["2", 0]),
        "4": node("CLIPTextEncode", text="static", clip=["2", 0]),
        "5": node("EmptyHunyuanLatentVideo", width=832, height=480, length=33, batch_size=1),
        "6": node(
            "KSampler",
            model=["1", 0],
            positive=["3", 0],
            negative=["4", 0],
            latent_image=["5", 0],
            seed=3,
            steps=30,
            cfg=6.0,
            sampler_name="uni_pc",
            scheduler="simple",
            denoise=1.0,
        ),
        "7": node("VAELoader", vae_name="wan_vae.safetensors"),
        "8": node("VAEDecode", samples=["6", 0], vae=["7", 0]),
        "9": _webp(["8", 0], "x"),
        **loaders,
        "12": _webp(frames, "y"),
    }

    found = detected(graph)

    assert found["prompt"] == [("3", "text")]
    assert found["video"] == expected
    assert found["width"] == [("5", "width")]
    assert found["seed"] == [("6", "seed")]


def test_a_path_string_image_loader_is_an_image_option() -> None:
    inputs = _ksampler_inputs()
    inputs.update(latent_image=["9", 0], denoise=0.6)
    graph = _sd15(class_type="KSampler", **inputs)
    del graph["4"]
    graph["8"] = node("Image Load", image_path="./input/photo.png", RGBA="false")
    graph["9"] = node("VAEEncode", pixels=["8", 0], vae=["1", 2])

    found = detected(graph)

    assert found["image"] == [("8", "image_path")]
    assert found["denoise"] == [("5", "denoise")]


def test_a_detailer_pass_does_not_take_the_first_samplers_place() -> None:
    graph = _sd15(class_type="KSampler", **_ksampler_inputs())
    graph["8"] = node("SAMLoader", model_name="sam_vit_b_01ec64.pth", device_mode="AUTO")
    graph["9"] = node(
        "UltimateSDUpscale",
        image=["6", 0],
        model=["1", 0],
        positive=["2", 0],
        negative=["3", 0],
        vae=["1", 2],
        upscale_by=2.0,
        seed=8,
        steps=10,
        cfg=7.0,
        sampler_name="euler",
        scheduler="normal",
        denoise=0.2,
        upscale_model=["10", 0],
        mode_type="Linear",
        tile_width=512,
        tile_height=512,
        mask_blur=8,
        tile_padding=32,
        seam_fix_mode="None",
        seam_fix_denoise=1.0,
        seam_fix_width=64,
        seam_fix_mask_blur=8,
        seam_fix_padding=16,
        force_uniform_tiles=True,
        tiled_decode=False,
        batch_size=1,
    )
    graph["10"] = node("UpscaleModelLoader", model_name="4x.pth")
    graph["7"]["inputs"]["images"] = ["9", 0]
    del graph["8"]

    found = detected(graph)

    assert found["seed"] == [("5", "seed")]
    assert found["steps"] == [("5", "steps")]
    assert found["prompt"] == [("2", "text")]


def test_a_gligen_box_passes_the_prompt_on_to_the_encoder_before_it() -> None:
    graph = _sd15(class_type="KSampler", **_ksampler_inputs())
    graph["5"]["inputs"]["positive"] = ["40", 0]
    graph["40"] = node(
        "GLIGENTextBoxApply",
        conditioning_to=["2", 0],
        clip=["1", 1],
        gligen_textbox_model=["41", 0],
        text="sun",
        width=64,
        height=64,
        x=0,
        y=0,
    )
    graph["41"] = node("GLIGENLoader", gligen_name="gligen.safetensors")

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]


def test_a_loader_picking_from_comfyuis_outputs_is_not_an_upload() -> None:
    inputs = _ksampler_inputs()
    inputs.update(latent_image=["9", 0], denoise=0.6)
    graph = _sd15(class_type="KSampler", **inputs)
    del graph["4"]
    graph["8"] = node("LoadImageOutput", image="ComfyUI_00001_.png [output]")
    graph["9"] = node("VAEEncode", pixels=["8", 0], vae=["1", 2])

    found = detected(graph)

    assert "image" not in found
    assert found["prompt"] == [("2", "text")]
