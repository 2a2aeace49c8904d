"""Plain-words explanations of ComfyUI's HTTP 400 answers to ``POST /prompt``.

A 400 body is ``{"error": {type, message, details, extra_info}, "node_errors": {node_id:
{"errors": [{type, message, details, extra_info}], "class_type", "dependent_outputs"}}}``.
:func:`explain_rejection` turns it into one message a Discord member can act on, naming each
offending node (by its ``_meta.title`` when the workflow has one, else ``class_type (#id)``), its
input and the problem::

    checkpoint 'foo.safetensors' is not installed on ComfyUI; available: a.safetensors
    KSampler (#3) input 'steps': 0 is smaller than the minimum 1
    node type 'Foo' is not installed on ComfyUI (node #7)
    the workflow has no output node (such as Save Image)
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["MODEL_INPUTS", "explain_rejection"]

#: Longest message returned (a Discord message holds 2000 characters).
MAX_MESSAGE = 1800
#: How many allowed values to list before "and N more".
MAX_LISTED = 12

#: Loader inputs whose values are files installed on ComfyUI, and what to call them.
MODEL_INPUTS: dict[str, str] = {
    "ckpt_name": "checkpoint",
    "lora_name": "LoRA",
    "vae_name": "VAE",
    "control_net_name": "ControlNet model",
    "unet_name": "diffusion model",
    "clip_name": "text encoder",
    "clip_name1": "text encoder",
    "clip_name2": "text encoder",
    "clip_name3": "text encoder",
    "clip_name4": "text encoder",
    "gligen_name": "GLIGEN model",
    "hypernetwork_name": "hypernetwork",
    "style_model_name": "style model",
    "photomaker_model_name": "PhotoMaker model",
    "config_name": "model config",
}

_IMAGE_LOADERS = {"LoadImage", "LoadImageMask", "LoadImageOutput"}


def explain_rejection(
    body: Mapping[str, Any],
    prompt: Mapping[str, Any] | None = None,
    object_info: Mapping[str, Any] | None = None,
) -> str:
    """Explain a 400 body from ``POST /prompt`` in plain words.

    Args:
        body: the decoded JSON body ComfyUI answered with.
        prompt: the API-format prompt that was sent, to name nodes by their titles.
        object_info: a cached ``/object_info``, to list allowed values ComfyUI left out.

    Returns:
        One message, at most :data:`MAX_MESSAGE` characters, never empty.
    """
    nodes: Mapping[str, Any] = prompt if isinstance(prompt, Mapping) else {}
    info: Mapping[str, Any] = object_info if isinstance(object_info, Mapping) else {}
    error = body.get("error")
    error = error if isinstance(error, Mapping) else {}
    node_errors = body.get("node_errors")
    node_errors = node_errors if isinstance(node_errors, Mapping) else {}

    problems: list[str] = []
    for node_id in sorted(node_errors, key=_node_sort_key):
        entry = node_errors[node_id]
        if not isinstance(entry, Mapping):
            continue
        ctx = _NodeContext(str(node_id), entry, nodes, info)
        errors = entry.get("errors")
        for err in errors if isinstance(errors, list) else []:
            if isinstance(err, Mapping):
                problems.append(ctx.explain(err))
    if not problems:
        problems.append(_explain_top(error, nodes))
    message = "; ".join(_dedupe(problems))
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return message


def _explain_top(error: Mapping[str, Any], nodes: Mapping[str, Any]) -> str:
    kind = _s(error.get("type"))
    message = _s(error.get("message"))
    details = _s(error.get("details"))
    node_ref = _node_ref_from_details(details)
    if kind == "prompt_no_outputs":
        return "the workflow has no output node (such as Save Image)"
    if kind == "no_prompt":
        return "no workflow was sent to ComfyUI"
    if kind == "invalid_prompt":
        missing = re.search(r"node (.+?) does not exist", message)
        if missing:
            where = f" (node #{node_ref})" if node_ref else ""
            return f"node type '{missing.group(1)}' is not installed on ComfyUI{where}"
        if "class_type" in message:
            if "nodes" in nodes and "links" in nodes:
                return "the workflow is in ComfyUI's UI format; save it with 'Export (API)' instead"
            where = f"node #{node_ref}" if node_ref else "a node"
            return f"{where} has no class_type (is this an API-format workflow?)"
    text = message or kind or "unknown error"
    if details and details not in text:
        text = f"{text}: {details}"
    return f"ComfyUI rejected the workflow: {text}"


class _NodeContext:
    """One entry of ``node_errors`` with what is needed to name the node and its inputs."""

    def __init__(
        self,
        node_id: str,
        entry: Mapping[str, Any],
        nodes: Mapping[str, Any],
        object_info: Mapping[str, Any],
    ) -> None:
        self.node_id = node_id
        node = nodes.get(node_id)
        self.node: Mapping[str, Any] = node if isinstance(node, Mapping) else {}
        self.class_type = _s(entry.get("class_type")) or _s(self.node.get("class_type"))
        self.nodes = nodes
        self.object_info = object_info

    @property
    def label(self) -> str:
        meta = self.node.get("_meta")
        title = _s(meta.get("title")) if isinstance(meta, Mapping) else ""
        name = title or self.class_type or "node"
        return f"{name} (#{self.node_id})"

    def explain(self, err: Mapping[str, Any]) -> str:
        kind = _s(err.get("type"))
        extra = err.get("extra_info")
        extra = extra if isinstance(extra, Mapping) else {}
        details = _s(err.get("details"))
        input_name = _s(extra.get("input_name")) or _input_from_details(details)
        where = f"{self.label} input '{input_name}'" if input_name else self.label
        received = extra.get("received_value")
        config = _config_options(extra.get("input_config"))

        if kind == "required_input_missing":
            return f"{self.label} is missing the required input '{input_name or details}'"
        if kind == "value_smaller_than_min":
            limit = _limit(config, "min", err)
            return f"{where}: {_show(received)} is smaller than the minimum {limit}"
        if kind == "value_bigger_than_max":
            limit = _limit(config, "max", err)
            return f"{where}: {_show(received)} is bigger than the maximum {limit}"
        if kind == "value_not_in_list":
            return self._not_in_list(input_name, received, extra, details)
        if kind == "invalid_input_type":
            expected = _expected_type(extra.get("input_config"))
            what = f"a valid {expected} value" if expected else "a valid value"
            return f"{where}: {_show(received)} is not {what}"
        if kind == "return_type_mismatch":
            expected = _expected_type(extra.get("input_config")) or "another type"
            got = _s(extra.get("received_type")) or "a different type"
            return f"{where} expects {expected} but is connected to a {got} output"
        if kind == "bad_linked_input":
            return f"{where} has a malformed link (expected [node_id, output_index])"
        if kind == "custom_validation_failed":
            return self._custom(where, input_name, details, err)
        if kind == "exception_during_validation":
            return self._exception(details, extra)
        text = _s(err.get("message")) or kind or "invalid"
        return f"{where}: {text}" + (f" ({details})" if details else "")

    def _not_in_list(
        self, input_name: str, received: object, extra: Mapping[str, Any], details: str
    ) -> str:
        options = _allowed_values(extra.get("input_config"))
        if options is None:
            options = self._options_from_object_info(input_name)
        if self.class_type in _IMAGE_LOADERS and input_name == "image":
            return f"{self.label}: the image {_show(received)} is not on ComfyUI (upload it again)"
        kind = MODEL_INPUTS.get(input_name)
        if kind is None and input_name == "model_name" and "upscale" in self.class_type.lower():
            kind = "upscale model"
        if kind is not None:
            available = _listing(options, details)
            return f"{kind} {_show(received)} is not installed on ComfyUI; available: {available}"
        if options is None:
            count = re.search(r"list of length (\d+)", details)
            allowed = (
                f" of the {count.group(1)} allowed values" if count else " of the allowed values"
            )
            return f"{self.label} input '{input_name}': {_show(received)} is not one{allowed}"
        return (
            f"{self.label} input '{input_name}': {_show(received)} is not allowed; "
            f"choose one of: {_listing(options, details)}"
        )

    def _custom(self, where: str, input_name: str, details: str, err: Mapping[str, Any]) -> str:
        reason = details
        if input_name and reason.startswith(f"{input_name} - "):
            reason = reason[len(input_name) + 3 :]
        invalid_image = re.match(r"Invalid image file: (.+)", reason)
        if invalid_image and self.class_type in _IMAGE_LOADERS:
            image = invalid_image.group(1)
            return f"{self.label}: the image '{image}' is not on ComfyUI (upload it again)"
        return f"{where}: {reason or _s(err.get('message')) or 'failed validation'}"

    def _exception(self, details: str, extra: Mapping[str, Any]) -> str:
        inputs = self.node.get("inputs")
        if isinstance(inputs, Mapping):
            for name, value in inputs.items():
                if _is_link(value) and str(value[0]) not in self.nodes:
                    return (
                        f"{self.label} input '{name}' is linked to node #{value[0]}, "
                        "which is not in the workflow"
                    )
        exc_type = _s(extra.get("exception_type"))
        if exc_type == "IndexError" and isinstance(inputs, Mapping):
            links = [name for name, value in inputs.items() if _is_link(value)]
            if links:
                names = ", ".join(f"'{n}'" for n in links)
                return f"{self.label} has a link to an output that doesn't exist (input {names})"
        reason = f"{exc_type}: {details}" if exc_type else details
        return f"{self.label} could not be validated ({reason or 'unknown error'})"

    def _options_from_object_info(self, input_name: str) -> list[str] | None:
        node_info = self.object_info.get(self.class_type)
        if not isinstance(node_info, Mapping) or not input_name:
            return None
        inputs = node_info.get("input")
        if not isinstance(inputs, Mapping):
            return None
        for section in ("required", "optional"):
            group = inputs.get(section)
            if isinstance(group, Mapping) and input_name in group:
                return _allowed_values(group[input_name])
        return None


def _s(value: object) -> str:
    return value if isinstance(value, str) else ""


def _dedupe(items: Sequence[str]) -> list[str]:
    return list(dict.fromkeys(items))


def _node_sort_key(node_id: object) -> tuple[int, int, str]:
    text = str(node_id)
    return (0, int(text), text) if text.isdigit() else (1, 0, text)


def _node_ref_from_details(details: str) -> str:
    match = re.search(r"Node ID '#([^']+)'", details)
    return match.group(1) if match else ""


def _input_from_details(details: str) -> str:
    match = re.match(r"([A-Za-z_][A-Za-z0-9_]*)(?:$|[:,]| - )", details)
    return match.group(1) if match else ""


def _is_link(value: object) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int)


def _show(value: object) -> str:
    if isinstance(value, str):
        text = value if len(value) <= 80 else value[:80] + "…"
        return f"'{text}'"
    if value is None:
        return "nothing"
    return str(value)


def _config_options(config: object) -> Mapping[str, Any]:
    if isinstance(config, list) and len(config) >= 2 and isinstance(config[1], Mapping):
        return config[1]
    return {}


def _expected_type(config: object) -> str:
    if isinstance(config, list) and config and isinstance(config[0], str):
        return config[0]
    return ""


def _allowed_values(config: object) -> list[str] | None:
    """The enum values of an input spec: ``[[values], {...}]`` or ``["COMBO", {"options"}]``."""
    if not isinstance(config, list) or not config:
        return None
    head = config[0]
    if isinstance(head, list):
        return [str(v) for v in head]
    if head == "COMBO":
        options = _config_options(config).get("options")
        if isinstance(options, list):
            return [str(v) for v in options]
    return None


def _limit(config: Mapping[str, Any], key: str, err: Mapping[str, Any]) -> str:
    value = config.get(key)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    match = re.search(rf"{key} of (-?[\d.eE+-]+)", _s(err.get("message")))
    return match.group(1) if match else "allowed"


def _listing(options: list[str] | None, details: str) -> str:
    if options is None:
        count = re.search(r"list of length (\d+)", details)
        return f"{count.group(1)} others" if count else "unknown"
    if not options:
        return "none"
    shown = ", ".join(options[:MAX_LISTED])
    if len(options) > MAX_LISTED:
        shown += f" and {len(options) - MAX_LISTED} more"
    return shown
