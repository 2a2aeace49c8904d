"""Finding a graph's parameters when its YAML leaves `params` out.

It reads the graph the way a person would: start at the sampler, follow its positive and
negative conditioning back to the text encoders, take its seed, steps, cfg, sampler and
scheduler, follow its latent input to the empty latent (width/height) or to a VAE encode
(img2img: denoise), and offer every image loader as an image option.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.workflows import nodeinfo
from bot.workflows.graph import is_link, links, sort_key
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.spec import ParamSpec

SAMPLERS = ("KSampler", "KSamplerAdvanced", "SamplerCustom", "SamplerCustomAdvanced")
IMAGE_LOADERS = ("LoadImage",)
_LATENT_HOPS = 50
_LATENT_INPUTS = frozenset({"samples", "latent", "latent_image", "samples_from", "samples_to"})

Graph = Mapping[str, Any]
Target = tuple[str, str]


def _literal_target(graph: Graph, node_id: str | None, name: str) -> Target | None:
    """Where the value of `node_id.name` is really set.

    A literal input is its own target. A linked one leads to a primitive-like node (a node
    with no links and exactly one literal input), whose input is the target.
    """
    if node_id is None or node_id not in graph:
        return None
    value = graph[node_id]["inputs"].get(name)
    if value is None:
        return None
    if not is_link(value):
        return (node_id, name)
    source = str(value[0])
    if source not in graph:
        return None
    inputs = graph[source]["inputs"]
    literals = [k for k, v in inputs.items() if not is_link(v)]
    if len(literals) == 1 and len(literals) == len(inputs):
        return (source, literals[0])
    return None


def _source(graph: Graph, node_id: str | None, name: str) -> tuple[str, int] | None:
    if node_id is None or node_id not in graph:
        return None
    value = graph[node_id]["inputs"].get(name)
    if is_link(value) and str(value[0]) in graph:
        return (str(value[0]), int(value[1]))
    return None


def _is_text_encoder(node: Mapping[str, Any]) -> bool:
    return node.get("class_type") == "CLIPTextEncode" or (
        "text" in node["inputs"] and "clip" in node["inputs"]
    )


def _is_conditioning(graph: Graph, node_id: str, name: str, object_info: ObjectInfo | None) -> bool:
    if object_info is not None:
        definition = nodeinfo.input_def(object_info, graph[node_id]["class_type"], name)
        if definition is not None:
            return definition.type == "CONDITIONING"
    return "cond" in name or name in ("positive", "negative")


def _text_encoder(
    graph: Graph, start: tuple[str, int] | None, object_info: ObjectInfo | None
) -> str | None:
    """Follow conditioning back from `start` to the first text encoder, breadth first."""
    queue = [start] if start is not None else []
    seen: set[tuple[str, int]] = set()
    while queue:
        node_id, slot = queue.pop(0)
        if (node_id, slot) in seen:
            continue
        seen.add((node_id, slot))
        node = graph[node_id]
        if _is_text_encoder(node):
            return node_id
        inputs = node["inputs"]
        if is_link(inputs.get("positive")) and is_link(inputs.get("negative")):
            # e.g. ControlNetApplyAdvanced: output 0 carries positive, output 1 negative
            found = _source(graph, node_id, "negative" if slot == 1 else "positive")
            queue.extend([found] if found else [])
            continue
        queue.extend(
            (source, source_slot)
            for name, source, source_slot in links(graph, node_id)
            if _is_conditioning(graph, node_id, name, object_info)
        )
    return None


def _latent_origin(graph: Graph, sampler_id: str) -> tuple[str, str] | None:
    """Where the sampler's latent comes from: ("empty"|"encode"|"sampler", node_id)."""
    found = _source(graph, sampler_id, "latent_image")
    for _ in range(_LATENT_HOPS):
        if found is None:
            return None
        node_id = found[0]
        node = graph[node_id]
        if node["class_type"] in SAMPLERS:
            return ("sampler", node_id)
        inputs = node["inputs"]
        if is_link(inputs.get("pixels")):
            return ("encode", node_id)
        linked = [name for name, _, _ in links(graph, node_id)]
        if "width" in inputs and "height" in inputs and not set(linked) & _LATENT_INPUTS:
            return ("empty", node_id)
        for name in (*sorted(_LATENT_INPUTS & set(linked)), *linked):
            found = _source(graph, node_id, name)
            if found is not None:
                break
    return None


def _primary_sampler(graph: Graph) -> str | None:
    samplers = sorted((i for i in graph if graph[i]["class_type"] in SAMPLERS), key=sort_key)
    first_pass = [s for s in samplers if (_latent_origin(graph, s) or ("",))[0] != "sampler"]
    candidates = first_pass or samplers
    return candidates[0] if candidates else None


def _widen(value: Any, low: float, high: float) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (min(low, value), max(high, value))
    return (low, high)


def _spec(kind: str, target: Target, description: str, **extra: Any) -> ParamSpec:
    return ParamSpec.model_validate(
        {"type": kind, "node": target[0], "input": target[1], "description": description, **extra}
    )


def _first(graph: Graph, candidates: Iterable[tuple[str | None, str]]) -> Target | None:
    for node_id, name in candidates:
        found = _literal_target(graph, node_id, name)
        if found is not None:
            return found
    return None


def _value(graph: Graph, target: Target) -> Any:
    return graph[target[0]]["inputs"].get(target[1])


def detect_params(graph: Graph, object_info: ObjectInfo | None = None) -> dict[str, ParamSpec]:
    """Find a graph's parameters the way a person would.

    Args:
        graph: an API-format graph.
        object_info: ComfyUI's node definitions; they help tell conditioning links apart.

    Returns:
        Param name -> spec, in option order: `prompt`, the images, then `negative`, `seed`,
        `steps`, `cfg`, `width`, `height`, `denoise`, `sampler`, `scheduler` (each only when
        found). Node references are node ids.
    """
    required: dict[str, ParamSpec] = {}
    optional: dict[str, ParamSpec] = {}
    sampler = _primary_sampler(graph)
    guider = _source(graph, sampler, "guider")
    guider_id = guider[0] if guider else None
    sigmas = _source(graph, sampler, "sigmas")
    sigmas_id = sigmas[0] if sigmas else None
    chooser = _source(graph, sampler, "sampler")
    chooser_id = chooser[0] if chooser else None
    noise = _source(graph, sampler, "noise")
    noise_id = noise[0] if noise else None

    positive = _text_encoder(
        graph,
        _source(graph, sampler, "positive")
        or _source(graph, guider_id, "positive")
        or _source(graph, guider_id, "conditioning"),
        object_info,
    )
    negative = _text_encoder(
        graph,
        _source(graph, sampler, "negative") or _source(graph, guider_id, "negative"),
        object_info,
    )
    prompt = _literal_target(graph, positive, "text")
    if prompt is not None:
        required["prompt"] = _spec("text", prompt, "What to draw", required=True)

    loaders = sorted((i for i in graph if graph[i]["class_type"] in IMAGE_LOADERS), key=sort_key)
    for index, loader in enumerate(loaders, start=1):
        target = _literal_target(graph, loader, "image")
        if target is not None:
            name = "image" if index == 1 else f"image_{index}"
            required[name] = _spec("image", target, "The picture to start from", required=True)

    if negative is not None and negative != positive:
        target = _literal_target(graph, negative, "text")
        if target is not None:
            optional["negative"] = _spec("text", target, "What to avoid")

    seed = _first(graph, [(sampler, "seed"), (sampler, "noise_seed"), (noise_id, "noise_seed")])
    if seed is not None:
        optional["seed"] = _spec("seed", seed, "Same seed and options give the same image")

    steps = _first(graph, [(sampler, "steps"), (sigmas_id, "steps")])
    if steps is not None:
        default = _value(graph, steps)
        low, high = _widen(default, 1, 150)
        optional["steps"] = _spec(
            "int",
            steps,
            "Sampling steps: more is slower and finer",
            min=int(low),
            max=int(high),
            **_default(default, int),
        )

    cfg = _first(graph, [(sampler, "cfg"), (guider_id, "cfg")])
    if cfg is not None:
        default = _value(graph, cfg)
        low, high = _widen(default, 0.0, 30.0)
        optional["cfg"] = _spec(
            "float",
            cfg,
            "How closely to follow the prompt",
            min=float(low),
            max=float(high),
            **_default(default, float),
        )

    origin = _latent_origin(graph, sampler) if sampler is not None else None
    if origin is not None and origin[0] == "empty":
        for name in ("width", "height"):
            target = _literal_target(graph, origin[1], name)
            if target is None:
                continue
            default = _value(graph, target)
            low, high = _widen(default, 64, 2048)
            optional[name] = _spec(
                "int",
                target,
                f"Image {name} in pixels (a multiple of 8)",
                min=int(low),
                max=int(high),
                step=8,
                **_default(default, int, step=8),
            )
    if origin is not None and origin[0] == "encode":
        denoise = _first(graph, [(sampler, "denoise"), (sigmas_id, "denoise")])
        if denoise is not None:
            default = _value(graph, denoise)
            optional["denoise"] = _spec(
                "float",
                denoise,
                "How much to change the image: 0 nothing, 1 everything",
                min=0.0,
                max=1.0,
                **_default(default, float),
            )

    sampler_name = _first(graph, [(sampler, "sampler_name"), (chooser_id, "sampler_name")])
    if sampler_name is not None:
        optional["sampler"] = _spec("enum", sampler_name, "Sampling method")
    scheduler = _first(graph, [(sampler, "scheduler"), (sigmas_id, "scheduler")])
    if scheduler is not None:
        optional["scheduler"] = _spec("enum", scheduler, "Noise schedule")
    return {**required, **optional}


def _default(value: Any, kind: type[int] | type[float], step: int | None = None) -> dict[str, Any]:
    """`{"default": value}` when the graph's value fits the param, else nothing."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return {}
    if kind is int and (value != int(value) or (step and int(value) % step)):
        return {}
    return {"default": kind(value)}
