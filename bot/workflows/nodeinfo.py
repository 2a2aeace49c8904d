"""Reading ComfyUI's `/object_info` node definitions.

`/object_info` maps each node class to its definition. An input definition is a list
`[TYPE, options]` where TYPE is a widget type (`INT`, `FLOAT`, `STRING`, `BOOLEAN`,
`COMBO`), a list of allowed values (an older way to write `COMBO`), or the type of a
socket (`MODEL`, `CONDITIONING`...) that must be linked to another node's output.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

ObjectInfo = Mapping[str, Any]
"""The parsed JSON of ComfyUI's `GET /object_info`."""

WIDGET_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN", "COMBO"})

# Enum inputs that name a model file, and the word a user would use for them.
MODEL_INPUTS: Mapping[str, str] = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "vae_name": "VAE",
    "clip_name": "CLIP model",
    "clip_name1": "CLIP model",
    "clip_name2": "CLIP model",
    "clip_name3": "CLIP model",
    "clip_name4": "CLIP model",
    "unet_name": "diffusion model",
    "control_net_name": "ControlNet model",
    "style_model_name": "style model",
    "gligen_name": "GLIGEN model",
    "hypernetwork_name": "hypernetwork",
    "model_name": "model",
    "upscale_model_name": "upscale model",
    "photomaker_model_name": "PhotoMaker model",
    "lora_name_1": "LoRA",
    "audio_encoder_name": "audio encoder",
    "model_path": "model",
    "ipadapter_file": "IPAdapter model",
    "instantid_file": "InstantID model",
    "pulid_file": "PuLID model",
}

CLASS_MODEL_INPUTS: Mapping[tuple[str, str], str] = {
    ("ModelPatchLoader", "name"): "model patch",
    ("CLIPVisionLoader", "clip_name"): "CLIP vision model",
    ("UnetLoaderGGUF", "unet_name"): "diffusion model",
}
"""Model inputs whose name alone doesn't say so, by class."""

MODEL_SUFFIXES = (".safetensors", ".ckpt", ".pt", ".pth", ".bin", ".gguf", ".sft", ".onnx")


_FILE_NAME = re.compile(r"[^/\\]\.[A-Za-z][A-Za-z0-9_]{0,11}$")
_UPLOADS = (("image_upload", "image"), ("video_upload", "video"), ("audio_upload", "audio"))
_FILE_INPUTS = ("image", "video", "audio", "file")


def _file_like(value: object) -> bool:
    return isinstance(value, str) and bool(_FILE_NAME.search(value))


def input_file_kind(class_type: str, definition: InputDef) -> str | None:
    """What an input names a file of ComfyUI's `input` folder for (image, video, audio), or None.

    Known by the upload option `/object_info` gives it, or, for a list input called `image`,
    `video`, `audio` or `file` of a loading node, by its name.
    """
    if definition.type != "COMBO":
        return None
    for option, kind in _UPLOADS:
        if definition.options.get(option):
            return kind
    if definition.name in _FILE_INPUTS and "load" in class_type.lower():
        return "video" if definition.name == "file" else definition.name
    return None


def model_kind(class_type: str, definition: InputDef, value: object = None) -> str | None:
    """The kind of model file an input names ("checkpoint", "LoRA"...), or None.

    Known by the input's name, by class for inputs with a plain name (`ModelPatchLoader.name`),
    or, for any other list input (not an input file), by a value that is a model file name
    (`.safetensors`, `.gguf`...) or, on a list of file names (or an empty one), a file name
    (`inpaint_v26.fooocus.patch`).
    """
    if definition.type != "COMBO" or input_file_kind(class_type, definition) is not None:
        return None
    known = CLASS_MODEL_INPUTS.get((class_type, definition.name)) or definition.model_kind
    if known is not None:
        return known
    if isinstance(value, str) and value.lower().endswith(MODEL_SUFFIXES):
        return "model"
    choices = definition.choices
    if choices is not None and _file_like(value):
        files = sum(1 for c in choices if _file_like(c))
        if not choices or files * 2 > len(choices):
            return "model"
    return None


@dataclass(frozen=True)
class InputDef:
    """One input of a node class, as `/object_info` describes it.

    Attributes:
        name: the input's name.
        type: `INT`, `FLOAT`, `STRING`, `BOOLEAN`, `COMBO` or a socket type such as `MODEL`.
        options: the options mapping (default, min, max, tooltip...).
        choices: the allowed values of a `COMBO`, or None when unknown.
        required: whether the input is in the `required` section.
    """

    name: str
    type: str
    options: Mapping[str, Any] = field(default_factory=dict)
    choices: tuple[Any, ...] | None = None
    required: bool = False

    @property
    def is_widget(self) -> bool:
        """Whether the UI shows this input as a widget holding a value."""
        return self.type in WIDGET_TYPES and not self.options.get("forceInput", False)

    @property
    def minimum(self) -> float | None:
        """The smallest value ComfyUI accepts, if any."""
        value = self.options.get("min")
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def maximum(self) -> float | None:
        """The largest value ComfyUI accepts, if any."""
        value = self.options.get("max")
        return value if isinstance(value, int | float) and not isinstance(value, bool) else None

    @property
    def default(self) -> Any:
        """The value the editor gives a new widget: the `default` option, a list's first
        choice, else None."""
        if "default" in self.options:
            return self.options["default"]
        if self.type == "COMBO" and self.choices:
            return self.choices[0]
        return None

    @property
    def has_control_widget(self) -> bool:
        """Whether the UI adds a `control_after_generate` widget after this one."""
        if self.options.get("control_after_generate"):
            return True
        return self.type == "INT" and self.name in ("seed", "noise_seed")

    @property
    def model_kind(self) -> str | None:
        """The kind of model file this enum names ("checkpoint", "LoRA"...), if any."""
        if self.type != "COMBO":
            return None
        return MODEL_INPUTS.get(self.name)


def is_number(value: Any) -> bool:
    """Whether `value` is an int or float (a bool is neither here)."""
    return isinstance(value, int | float) and not isinstance(value, bool)


def _parse_input(name: str, raw: Any, *, required: bool) -> InputDef:
    if not isinstance(raw, Sequence) or isinstance(raw, str) or not raw:
        return InputDef(name=name, type="*", required=required)
    kind = raw[0]
    options = raw[1] if len(raw) > 1 and isinstance(raw[1], Mapping) else {}
    if isinstance(kind, Sequence) and not isinstance(kind, str):
        return InputDef(name, "COMBO", options, tuple(kind), required)
    if kind == "COMBO":
        listed = options.get("options")
        choices = (
            tuple(listed) if isinstance(listed, Sequence) and not isinstance(listed, str) else None
        )
        return InputDef(name, "COMBO", options, choices, required)
    return InputDef(name, str(kind), options, None, required)


def node_def(object_info: ObjectInfo, class_type: str) -> Mapping[str, Any] | None:
    """Return the definition of a node class, or None if ComfyUI doesn't know it."""
    found = object_info.get(class_type)
    return found if isinstance(found, Mapping) else None


#: Each definition's inputs, parsed once: a job's graph reads the same few classes on every run.
#: Keyed by the definition's identity and holding the definition, so the key can't be reused
#: while it is cached; definitions are never changed in place (a new /object_info is new dicts).
_PARSED: dict[int, tuple[Mapping[str, Any], tuple[InputDef, ...]]] = {}
_PARSED_MAX = 4096


def input_defs(object_info: ObjectInfo, class_type: str) -> list[InputDef]:
    """Return the required then optional inputs of a node class, in widget order.

    Hidden inputs (filled in by ComfyUI itself) are left out. An unknown class has none.
    """
    definition = node_def(object_info, class_type)
    if definition is None:
        return []
    cached = _PARSED.get(id(definition))
    if cached is not None and cached[0] is definition:
        return list(cached[1])
    parsed = tuple(_parse_definition(definition))
    if len(_PARSED) >= _PARSED_MAX:
        _PARSED.clear()
    _PARSED[id(definition)] = (definition, parsed)
    return list(parsed)


def _parse_definition(definition: Mapping[str, Any]) -> list[InputDef]:
    sections = definition.get("input")
    if not isinstance(sections, Mapping):
        return []
    order = definition.get("input_order")
    result: list[InputDef] = []
    for section in ("required", "optional"):
        items = sections.get(section)
        if not isinstance(items, Mapping):
            continue
        names: list[str] = list(items)
        if isinstance(order, Mapping) and isinstance(order.get(section), list):
            listed = [n for n in order[section] if n in items]
            names = listed + [n for n in items if n not in listed]
        result.extend(_parse_input(n, items[n], required=section == "required") for n in names)
    return result


def input_def(object_info: ObjectInfo, class_type: str, name: str) -> InputDef | None:
    """Return one input of a node class, or None if the class has no such input."""
    for item in input_defs(object_info, class_type):
        if item.name == name:
            return item
    return None


def output_types(object_info: ObjectInfo, class_type: str) -> list[str]:
    """Return the types of a node class's outputs, by slot (empty for an unknown class)."""
    definition = node_def(object_info, class_type)
    outputs = definition.get("output") if definition is not None else None
    if not isinstance(outputs, Sequence) or isinstance(outputs, str):
        return []
    return [o if isinstance(o, str) else "COMBO" for o in outputs]


def is_output_node(object_info: ObjectInfo, class_type: str) -> bool:
    """Whether ComfyUI treats the class as an output (a node it runs the graph for)."""
    definition = node_def(object_info, class_type)
    return bool(definition is not None and definition.get("output_node"))


CORE_REPOSITORY = "Comfy-Org/ComfyUI"


def pack_of(object_info: ObjectInfo, class_type: str) -> str | None:
    """The custom node pack a class comes from, "" for a ComfyUI core class, None if unknown.

    Read from what `/object_info` says of the class: `python_module` (`custom_nodes.NAME...`
    for a pack, `nodes` or `comfy_extras...` for core) or a recorded `pack` (`owner/name`).
    A class that says neither is taken as core.
    """
    definition = node_def(object_info, class_type)
    if definition is None:
        return None
    module = definition.get("python_module")
    if isinstance(module, str) and module.startswith("custom_nodes."):
        return module.split(".")[1] or None
    pack = definition.get("pack")
    if isinstance(pack, str) and pack and pack != CORE_REPOSITORY:
        return pack
    return ""


def display_name(object_info: ObjectInfo, class_type: str) -> str:
    """Return the name the UI shows for a node class (its default title)."""
    definition = node_def(object_info, class_type)
    name = definition.get("display_name") if definition is not None else None
    return name if isinstance(name, str) and name else class_type
