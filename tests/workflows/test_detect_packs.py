"""Detection on graphs built from popular custom node packs, the way their workflows are wired:
pipe samplers, samplers that decode, detailer passes, sampler providers, passes of one
generation, wildcards and prompt enhancers. Each rule has a case, and the ones that must not
happen have theirs (a detailer's seed, a system prompt as the prompt). Sizes, joined text and
path loaders are in `tests/workflows/test_detect_inputs.py`.

The classes come from the recorded `/object_info` of the packs.
"""

from __future__ import annotations

from typing import Any

import pytest

from tests.workflows.detect_graphs import (
    DECODING,
    KSAMPLING,
    NO_LORA,
    PIPED,
    SAMPLED,
    WEIGHTING,
    basic_pipe,
    custom_advanced,
    decode_and_save,
    detected,
    encoders,
    ksampler,
    latent_size,
    node,
    with_latent,
)

# FaceDetailer's settings of its own, which FaceDetailerPipe takes too.
_DETAILING = {
    "guide_size": 512, "guide_size_for": True, "max_size": 1024, "denoise": 0.5, "feather": 5,
    "noise_mask": True, "force_inpaint": True, "drop_size": 10, "cycle": 1,
    "bbox_threshold": 0.5, "bbox_dilation": 10, "bbox_crop_factor": 3.0,
    "sam_detection_hint": "center-1", "sam_dilation": 0, "sam_threshold": 0.93,
    "sam_bbox_expansion": 0, "sam_mask_hint_threshold": 0.7, "sam_mask_hint_use_negative": "False",
}  # fmt: skip


def _face_detailer(image: list[Any], seed: int) -> dict[str, Any]:
    return node(
        "FaceDetailer",
        image=image,
        **PIPED,
        bbox_detector=["9", 0],
        seed=seed,
        wildcard="",
        **_DETAILING,
        **KSAMPLING,
    )


def _detector() -> dict[str, Any]:
    return node("UltralyticsDetectorProvider", model_name="bbox/face_yolov8m.pt")


def _pipe_sampled(class_type: str, **inputs: Any) -> dict[str, Any]:
    """The encoders in a basic pipe "5", sampled by `class_type` "6", which also decodes."""
    graph = encoders()
    graph["5"] = basic_pipe()
    graph["6"] = node(class_type, basic_pipe=["5", 0], latent_image=["4", 0], **inputs)
    return decode_and_save(graph, ["6", 1], ["6", 2], ids=("7", "8"))


# --- samplers -------------------------------------------------------------------------------


def test_an_impact_pipe_sampler_takes_its_prompt_through_the_basic_pipe() -> None:
    graph = _pipe_sampled("ImpactKSamplerBasicPipe", seed=9, denoise=1.0, **KSAMPLING)

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]
    assert found["negative"] == [("3", "text")]
    assert found["seed"] == [("6", "seed")]
    assert found["steps"] == [("6", "steps")]
    assert found["width"] == [("4", "width")]


def test_the_advanced_pipe_sampler_gives_its_noise_seed() -> None:
    graph = _pipe_sampled(
        "ImpactKSamplerAdvancedBasicPipe",
        add_noise=True,
        noise_seed=9,
        start_at_step=0,
        end_at_step=10000,
        return_with_leftover_noise=False,
        **KSAMPLING,
    )

    found = detected(graph)

    assert found["seed"] == [("6", "noise_seed")]
    assert found["prompt"] == [("2", "text")]
    assert found["cfg"] == [("6", "cfg")]


def test_conditioning_unpacked_from_a_pipe_leads_back_to_theencoders() -> None:
    graph = encoders()
    graph["5"] = basic_pipe()
    graph["6"] = node("FromBasicPipe", basic_pipe=["5", 0])
    graph["7"] = ksampler(["4", 0])
    graph["7"]["inputs"].update(model=["6", 0], positive=["6", 3], negative=["6", 4])
    decode_and_save(graph, ["7", 0], ["6", 2], ids=("8", "9"))

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]
    assert found["negative"] == [("3", "text")]


def test_a_face_detailer_after_the_ksampler_does_not_take_its_seed() -> None:
    graph = encoders()
    graph["5"] = ksampler(["4", 0], seed=1)
    graph["6"] = node("VAEDecode", samples=["5", 0], vae=["1", 2])
    graph["9"] = _detector()
    graph["10"] = _face_detailer(["6", 0], seed=77)
    graph["11"] = node("SaveImage", images=["10", 0], filename_prefix="x")

    found = detected(graph)

    assert found["seed"] == [("5", "seed")]
    assert found["steps"] == [("5", "steps")]
    assert found["width"] == [("4", "width")]
    assert ("10", "seed") not in [t for targets in found.values() for t in targets]


def test_a_face_detailer_with_an_earlier_id_is_still_the_later_pass() -> None:
    graph = encoders()
    graph["50"] = ksampler(["4", 0], seed=1)
    graph["51"] = node("VAEDecode", samples=["50", 0], vae=["1", 2])
    graph["9"] = _detector()
    graph["5"] = _face_detailer(["51", 0], seed=77)
    graph["52"] = node("SaveImage", images=["5", 0], filename_prefix="x")

    found = detected(graph)

    assert found["seed"] == [("50", "seed")]


def test_a_face_detailer_on_a_loaded_picture_is_the_only_pass() -> None:
    graph = encoders()
    del graph["4"]
    graph["6"] = node("LoadImage", image="face.png")
    graph["9"] = _detector()
    graph["10"] = _face_detailer(["6", 0], seed=77)
    graph["11"] = node("SaveImage", images=["10", 0], filename_prefix="x")

    found = detected(graph)

    assert found["image"] == [("6", "image")]
    assert found["seed"] == [("10", "seed")]
    assert found["prompt"] == [("2", "text")]


def test_a_sampler_that_decodes_keeps_its_seed_before_a_detailer_pipe() -> None:
    graph = encoders()
    graph["5"] = node(
        "KSampler (Efficient)",
        **SAMPLED,
        latent_image=["4", 0],
        optional_vae=["1", 2],
        seed=3,
        denoise=1.0,
        **DECODING,
        **KSAMPLING,
    )
    graph["9"] = _detector()
    graph["12"] = node(
        "ToDetailerPipe",
        **PIPED,
        bbox_detector=["9", 0],
        wildcard="",
        **{"Select to add LoRA": "Select the LoRA to add to the text"},
        **{"Select to add Wildcard": "Select the Wildcard to add to the text"},
    )
    graph["13"] = node(
        "FaceDetailerPipe",
        image=["5", 5],
        detailer_pipe=["12", 0],
        refiner_ratio=0.2,
        seed=77,
        **_DETAILING,
        **KSAMPLING,
    )
    graph["14"] = node("SaveImage", images=["13", 0], filename_prefix="x")

    found = detected(graph)

    assert found["seed"] == [("5", "seed")]
    assert found["prompt"] == [("2", "text")]
    assert found["negative"] == [("3", "text")]


def test_efficiencys_sdxl_loader_and_sampler_carry_the_prompt_in_their_tuple() -> None:
    graph = {
        "1": node(
            "Eff. Loader SDXL",
            base_ckpt_name="tiny-sd15.safetensors",
            base_clip_skip=-2,
            refiner_ckpt_name="None",
            refiner_clip_skip=-2,
            positive_ascore=6.0,
            negative_ascore=2.0,
            vae_name="Baked VAE",
            positive="a castle",
            negative="blurry",
            **WEIGHTING,
            **latent_size(1024, 1024),
        ),
        "2": node(
            "KSampler SDXL (Eff.)",
            sdxl_tuple=["1", 0],
            latent_image=["1", 1],
            optional_vae=["1", 2],
            noise_seed=4,
            start_at_step=0,
            refine_at_step=-1,
            **DECODING,
            **KSAMPLING,
        ),
        "3": node("SaveImage", images=["2", 3], filename_prefix="x"),
    }

    found = detected(graph)

    assert found["prompt"] == [("1", "positive")]
    assert found["negative"] == [("1", "negative")]
    assert found["seed"] == [("2", "noise_seed")]
    assert found["width"] == [("1", "empty_latent_width")]
    assert found["height"] == [("1", "empty_latent_height")]


def _easy_use(resolution: str) -> dict[str, Any]:
    return {
        "1": node(
            "easy a1111Loader",
            ckpt_name="tiny-sd15.safetensors",
            vae_name="Baked VAE",
            clip_skip=-2,
            **NO_LORA,
            resolution=resolution,
            positive="a castle",
            negative="blurry",
            **latent_size(640, 896),
        ),
        "2": node("easy preSampling", pipe=["1", 0], seed=5, denoise=1.0, **KSAMPLING),
        "3": node("easy kSampler", pipe=["2", 0], image_output="Save", link_id=0, save_prefix="x"),
    }


def test_easy_use_pipes_give_the_loaders_prompt_and_the_presamplings_seed() -> None:
    found = detected(_easy_use("512 x 768"))

    assert found["prompt"] == [("1", "positive")]
    assert found["negative"] == [("1", "negative")]
    assert found["seed"] == [("2", "seed")]
    assert found["steps"] == [("2", "steps")]
    assert found["size"] == [("1", "resolution")]
    assert "width" not in found


def test_a_custom_resolution_offers_the_width_and_height_comfyui_then_uses() -> None:
    found = detected(_easy_use("width x height (custom)"))

    assert found["width"] == [("1", "empty_latent_width")]
    assert found["height"] == [("1", "empty_latent_height")]
    assert "size" not in found


def test_a_custom_advanced_sampler_takes_the_seed_of_its_random_noise() -> None:
    graph = encoders()
    graph["5"] = node("CFGGuider", **SAMPLED, cfg=5.0)
    graph["6"] = node("RandomNoise", noise_seed=["20", 0])
    graph["7"] = node("KSamplerSelect", sampler_name="euler")
    graph["8"] = node("BasicScheduler", model=["1", 0], scheduler="simple", steps=9, denoise=1.0)
    graph["9"] = custom_advanced("6", "5", "7", "8", latent=["4", 0])
    decode_and_save(graph, ["9", 0], ids=("10", "11"))
    graph["20"] = node("easy seedList", min_num=0, max_num=99, method="random", total=1, seed=42)

    found = detected(graph)

    assert found["seed"] == [("20", "seed")]
    assert found["steps"] == [("8", "steps")]
    assert found["cfg"] == [("5", "cfg")]


def test_wan_video_wrapper_embeds_bring_the_prompt_to_its_sampler() -> None:
    graph = {
        "1": node(
            "LoadWanVideoT5TextEncoder",
            model_name="umt5-xxl-enc-bf16.safetensors",
            precision="bf16",
            load_device="offload_device",
            quantization="disabled",
        ),
        "2": node(
            "WanVideoTextEncode",
            t5=["1", 0],
            positive_prompt="a cat surfing",
            negative_prompt="static",
            force_offload=True,
        ),
        "3": node(
            "WanVideoModelLoader",
            model="wan.safetensors",
            base_precision="bf16",
            quantization="disabled",
            load_device="offload_device",
        ),
        "4": node("WanVideoEmptyEmbeds", width=832, height=480, num_frames=33),
        "5": node(
            "WanVideoSampler",
            model=["3", 0],
            text_embeds=["2", 0],
            image_embeds=["4", 0],
            steps=30,
            cfg=6.0,
            shift=5.0,
            seed=3,
            force_offload=True,
            scheduler="unipc",
            riflex_freq_index=0,
        ),
        "6": node("WanVideoDecode", vae=["7", 0], samples=["5", 0], enable_vae_tiling=False),
        "7": node("WanVideoVAELoader", model_name="wan_vae.safetensors", precision="bf16"),
        "8": node("SaveImage", images=["6", 0], filename_prefix="x"),
    }

    found = detected(graph)

    assert found["prompt"] == [("2", "positive_prompt")]
    assert found["negative"] == [("2", "negative_prompt")]
    assert found["seed"] == [("5", "seed")]
    assert found["steps"] == [("5", "steps")]
    assert found["cfg"] == [("5", "cfg")]


# --- sampler providers, passes of one generation, seeds of the text -------------------------


def _masked_sampling(mask_seed: int) -> dict[str, Any]:
    """A KSampler, then Impact's masked sampling from the same empty latent: a base and a
    mask provider, the mask's prompt edited into a second pipe, the mask from the picture."""
    graph = encoders()
    graph["5"] = ksampler(["4", 0], seed=7)
    graph["6"] = node("VAEDecode", samples=["5", 0], vae=["1", 2])
    graph["8"] = node("CLIPTextEncode", text="a red door", clip=["1", 1])
    graph["10"] = basic_pipe()
    graph["11"] = node("EditBasicPipe", basic_pipe=["10", 0], positive=["8", 0])
    provider = {"cfg": 8.0, "sampler_name": "euler", "scheduler": "normal", "sigma_factor": 1.0}
    graph["12"] = node("KSamplerAdvancedProvider", basic_pipe=["10", 0], **provider)
    graph["13"] = node("KSamplerAdvancedProvider", basic_pipe=["11", 0], **provider)
    graph["14"] = node("ImageToMask", image=["6", 0], channel="red")
    graph["15"] = node(
        "TwoAdvancedSamplersForMask",
        seed=mask_seed,
        steps=20,
        denoise=1.0,
        samples=["4", 0],
        base_sampler=["12", 0],
        mask_sampler=["13", 0],
        mask=["14", 0],
        overlap_factor=10,
    )
    return decode_and_save(graph, ["15", 0], ids=("16", "17"))


def test_a_sampler_taking_sampler_providers_takes_the_prompt_of_each() -> None:
    found = detected(_masked_sampling(mask_seed=7))

    assert found["prompt"] == [("2", "text"), ("8", "text")]
    assert found["negative"] == [("3", "text")]


def test_a_pass_from_the_same_latent_with_the_same_seed_shares_seed_and_steps() -> None:
    found = detected(_masked_sampling(mask_seed=7))

    assert found["seed"] == [("5", "seed"), ("15", "seed")]
    assert found["steps"] == [("5", "steps"), ("15", "steps")]
    assert found["width"] == [("4", "width")]


def test_a_pass_from_the_same_latent_with_another_seed_keeps_its_own() -> None:
    found = detected(_masked_sampling(mask_seed=8))

    assert found["seed"] == [("5", "seed")]
    assert found["steps"] == [("5", "steps")]


def _split(later_seed: int, start: int) -> dict[str, Any]:
    """One generation split over two models (Wan 2.2's high and low noise, a base and a
    refiner): the second pass takes the first's latent and carries on from step `start`."""
    graph = encoders()
    split = {"end_at_step": 10000, "return_with_leftover_noise": "disable"}
    graph["5"] = node(
        "KSamplerAdvanced", **SAMPLED, latent_image=["4", 0], add_noise="enable", noise_seed=43,
        start_at_step=0, **KSAMPLING, **split,
    )  # fmt: skip
    graph["8"] = node(
        "KSamplerAdvanced", **SAMPLED, latent_image=["5", 0], add_noise="disable",
        noise_seed=later_seed, start_at_step=start, **KSAMPLING, **split,
    )  # fmt: skip
    return decode_and_save(graph, ["8", 0])


def test_a_pass_carrying_on_the_schedule_with_the_same_seed_shares_it() -> None:
    found = detected(_split(later_seed=43, start=12))

    assert found["seed"] == [("5", "noise_seed"), ("8", "noise_seed")]
    assert found["cfg"] == [("5", "cfg"), ("8", "cfg")]


@pytest.mark.parametrize(
    ("later_seed", "start"), [(44, 12), (43, 0)], ids=["another-seed", "from-step-0"]
)
def test_a_later_pass_with_another_seed_or_sampling_again_keeps_its_own(
    later_seed: int, start: int
) -> None:
    found = detected(_split(later_seed=later_seed, start=start))

    assert found["seed"] == [("5", "noise_seed")]
    assert found["cfg"] == [("5", "cfg")]


def test_a_wildcards_seed_is_set_with_the_seed_and_its_mode_is_never_the_prompt() -> None:
    graph = with_latent(node("EmptyLatentImage", width=512, height=512, batch_size=1))
    graph["2"]["inputs"]["text"] = ["20", 0]
    graph["20"] = node(
        "ImpactWildcardProcessor",
        wildcard_text="a {red|blue} castle",
        populated_text="a red castle",
        mode=True,
        seed=3,
        **{"Select to add Wildcard": "Select the Wildcard to add to the text"},
    )

    found = detected(graph)

    assert found["prompt"] == [("20", "wildcard_text")]
    assert found["seed"] == [("5", "seed"), ("20", "seed")]
    every = [t for targets in found.values() for t in targets]
    assert ("20", "mode") not in every


def test_a_system_prompt_is_never_the_prompt() -> None:
    graph = with_latent(node("EmptyLatentImage", width=512, height=512, batch_size=1))
    graph["2"]["inputs"]["text"] = ["20", 0]
    graph["20"] = node(
        "LTXVGemmaEnhancePrompt",  # not in /object_info: read by its inputs' names
        prompt=["21", 0],
        system_prompt="You are a creative assistant. Rewrite the prompt.",
        max_tokens=512,
        seed=5,
        clip=["1", 1],
    )
    graph["21"] = node("PrimitiveStringMultiline", value="an owl on a branch")

    found = detected(graph)

    assert found["prompt"] == [("21", "value")]
    every = [t for targets in found.values() for t in targets]
    assert ("20", "system_prompt") not in every


def test_a_node_passing_anything_through_passes_the_conditioning_on() -> None:
    graph = with_latent(node("EmptyLatentImage", width=512, height=512, batch_size=1))
    graph["20"] = node("ImpactExecutionOrderController", signal=["2", 0], value=["4", 0])
    graph["5"]["inputs"]["positive"] = ["20", 0]

    found = detected(graph)

    assert found["prompt"] == [("2", "text")]
    assert found["negative"] == [("3", "text")]
