"""Graphs for the detection tests, written the way API-format workflows are built: a node maker,
the core checkpoint and encoders, the KSampler, a decode and save, a basic pipe, a sampler fed by
noise, guider, sampler and sigmas; and `detected`, which field detection put where, read
against the recorded `/object_info` of ComfyUI's core and of popular custom node packs.
"""

from __future__ import annotations

import json
from functools import cache
from typing import Any

from bot.workflows.detect import detect_params
from bot.workflows.spec import ParamSpec
from tests.recordings import OBJECT_INFO, OBJECT_INFO_CUSTOM

KSAMPLING = {"steps": 20, "cfg": 7.0, "sampler_name": "euler", "scheduler": "normal"}
# What a sampler takes from the checkpoint "1" and the encoders "2" and "3"; a pipe also
# carries the clip and the VAE.
SAMPLED = {"model": ["1", 0], "positive": ["2", 0], "negative": ["3", 0]}
PIPED = {**SAMPLED, "clip": ["1", 1], "vae": ["1", 2]}
# What the Efficiency and Easy-Use loaders take besides their checkpoint: no LoRA, how the
# prompt is weighted, and the empty latent's size.
NO_LORA = {"lora_name": "None", "lora_model_strength": 1.0, "lora_clip_strength": 1.0}
WEIGHTING = {"token_normalization": "none", "weight_interpretation": "comfy"}
# An Efficiency sampler that previews and decodes its result.
DECODING = {"preview_method": "auto", "vae_decode": "true"}


def latent_size(width: int, height: int) -> dict[str, int]:
    """A loader's empty latent of this size, one at a time."""
    return {"empty_latent_width": width, "empty_latent_height": height, "batch_size": 1}


@cache
def info() -> dict[str, Any]:
    """The recorded `/object_info` of the core with the custom packs' classes added."""
    found: dict[str, Any] = json.loads(OBJECT_INFO.read_text(encoding="utf-8"))
    found.update(json.loads(OBJECT_INFO_CUSTOM.read_text(encoding="utf-8")))
    return found


def node(class_type: str, **inputs: Any) -> dict[str, Any]:
    return {"class_type": class_type, "inputs": inputs, "_meta": {"title": class_type}}


def where(spec: ParamSpec) -> list[tuple[str, str]]:
    if spec.targets:
        return [(str(t.node), str(t.input)) for t in spec.targets]
    return [(str(spec.node), str(spec.input))]


def detected(graph: dict[str, Any]) -> dict[str, list[tuple[str, str]]]:
    """Each detected field and the (node, input) places it sets."""
    return {name: where(spec) for name, spec in detect_params(graph, info()).items()}


def encoders(height: int = 768) -> dict[str, Any]:
    """Checkpoint "1", prompt "2", negative "3" and an empty latent "4" 512 wide."""
    return {
        "1": node("CheckpointLoaderSimple", ckpt_name="tiny-sd15.safetensors"),
        "2": node("CLIPTextEncode", text="a castle", clip=["1", 1]),
        "3": node("CLIPTextEncode", text="blurry", clip=["1", 1]),
        "4": node("EmptyLatentImage", width=512, height=height, batch_size=1),
    }


def ksampler(latent: list[Any], seed: int = 1) -> dict[str, Any]:
    """A KSampler on the encoders' model and conditioning."""
    return node("KSampler", **SAMPLED, latent_image=latent, seed=seed, denoise=1.0, **KSAMPLING)


def decode_and_save(
    graph: dict[str, Any],
    samples: list[Any],
    vae: list[Any] | None = None,
    ids: tuple[str, str] = ("6", "7"),
) -> dict[str, Any]:
    """Adds a VAEDecode of `samples` (with the checkpoint's VAE unless told) and its SaveImage."""
    decode, save = ids
    graph[decode] = node("VAEDecode", samples=samples, vae=vae or ["1", 2])
    graph[save] = node("SaveImage", images=[decode, 0], filename_prefix="x")
    return graph


def with_latent(latent: dict[str, Any], **extra: dict[str, Any]) -> dict[str, Any]:
    """The encoders with this latent (and any extra nodes), a KSampler, decode and save."""
    graph = encoders()
    graph["4"] = latent
    graph.update(extra)
    graph["5"] = ksampler(["4", 0])
    return decode_and_save(graph, ["5", 0])


def basic_pipe() -> dict[str, Any]:
    """Impact's ToBasicPipe of the encoders' model, clip, VAE and conditioning."""
    return node("ToBasicPipe", **PIPED)


def aspect_ratio(
    ratio: str, class_type: str = "CR SDXL Aspect Ratio", side: int = 1024, **more: Any
) -> dict[str, Any]:
    """A Comfyroll aspect ratio node of this `class_type`, set to `ratio`, `side` square."""
    return node(
        class_type,
        width=side,
        height=side,
        aspect_ratio=ratio,
        swap_dimensions="Off",
        upscale_factor=1.0,
        **more,
        batch_size=1,
    )


def custom_advanced(
    noise: str, guider: str, sampler: str, sigmas: str, latent: list[Any]
) -> dict[str, Any]:
    """A SamplerCustomAdvanced taking its noise, guider, sampler and sigmas from those nodes."""
    return node(
        "SamplerCustomAdvanced",
        noise=[noise, 0],
        guider=[guider, 0],
        sampler=[sampler, 0],
        sigmas=[sigmas, 0],
        latent_image=latent,
    )
