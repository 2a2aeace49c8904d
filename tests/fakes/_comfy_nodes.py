"""The node side of the fake ComfyUI server (see :mod:`tests.fakes.comfyui`).

Three parts, each written from the behaviour in the recordings (``tests/recordings.py``), not from
ComfyUI's code:

- :class:`NodeCatalog`: the recorded ``/object_info`` plus the two test custom nodes the
  recordings used (``ResearchSlowProgress``, ``ResearchRaise``), with the model and input-file
  lists replaced by what the fake has installed.
- :func:`validate_prompt`: ComfyUI's checks of a submitted prompt and the exact shape of its
  error bodies (``invalid_prompt``, ``prompt_no_outputs``, ``prompt_outputs_failed_validation``
  with per-node ``node_errors``).
- Execution helpers: :func:`node_signatures` (cache keys: class, inputs and ancestors),
  :class:`ExecutionPlan` (the order ComfyUI runs nodes in) and ``SIMULATORS``, which make small
  real images with Pillow so that outputs are deterministic (same seed and text, same bytes).
"""

from __future__ import annotations

import copy
import functools
import hashlib
import io
import json
import posixpath
import random
import re
import traceback
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from PIL import Image, ImageOps, PngImagePlugin

from tests.recordings import RECORDINGS

DATA_DIR = RECORDINGS

PRIMITIVE_TYPES = frozenset({"INT", "FLOAT", "STRING", "BOOLEAN"})
WIDGET_TYPES = PRIMITIVE_TYPES | {"COMBO"}

# The checkpoint list of the server the catalog was recorded on; inputs offering exactly this
# list are checkpoint choosers and get the fake's own list.
_RECORDED_CHECKPOINTS = ["tiny-random.safetensors"]


def _research_node(name: str, required: dict[str, list[Any]]) -> dict[str, Any]:
    return {
        "input": {"required": required},
        "input_order": {"required": list(required)},
        "output": ["IMAGE"],
        "output_is_list": [False],
        "output_name": ["IMAGE"],
        "name": name,
        "display_name": name,
        "description": "Test custom node used by the recorded transcripts.",
        "python_module": "custom_nodes.research_nodes",
        "category": "research",
        "output_node": False,
    }


RESEARCH_NODES: dict[str, dict[str, Any]] = {
    "ResearchSlowProgress": _research_node(
        "ResearchSlowProgress",
        {
            "image": ["IMAGE"],
            "steps": ["INT", {"default": 10, "min": 1, "max": 10000}],
            "delay": ["FLOAT", {"default": 0.1, "min": 0.0, "max": 60.0, "step": 0.01}],
            "preview": ["BOOLEAN", {"default": False}],
        },
    ),
    "ResearchRaise": _research_node(
        "ResearchRaise",
        {"image": ["IMAGE"], "message": ["STRING", {"default": "deliberate failure"}]},
    ),
}


# --------------------------------------------------------------------------------------------
# Catalog


@dataclass(frozen=True)
class ModelLists:
    """The lists that differ from one installation to another."""

    checkpoints: tuple[str, ...] = ()
    loras: tuple[str, ...] = ()
    input_images: tuple[str, ...] = ()


def _dynamic_kind(input_name: str, spec: list[Any]) -> str | None:
    if not spec or not isinstance(spec[0], list):
        return None
    extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
    if spec[0] == _RECORDED_CHECKPOINTS:
        return "checkpoints"
    if input_name == "lora_name":
        return "loras"
    if extra.get("image_upload") or extra.get("video_upload") or extra.get("audio_upload"):
        return "input_images"
    return None


@functools.cache
def _recorded_object_info() -> dict[str, Any]:
    with (DATA_DIR / "object_info.json").open(encoding="utf-8") as file:
        loaded: dict[str, Any] = json.load(file)
    return loaded


class NodeCatalog:
    """Node definitions as ``/object_info`` gives them."""

    def __init__(self, definitions: Mapping[str, dict[str, Any]]) -> None:
        self._defs = dict(definitions)
        self._dynamic: dict[str, list[tuple[str, str, str]]] = {}
        for name, definition in self._defs.items():
            for category in ("required", "optional"):
                for input_name, spec in definition["input"].get(category, {}).items():
                    kind = _dynamic_kind(input_name, spec)
                    if kind is not None:
                        self._dynamic.setdefault(name, []).append((category, input_name, kind))

    @classmethod
    def recorded(cls) -> NodeCatalog:
        """The recorded core nodes plus the research nodes of the transcripts."""
        return cls({**_recorded_object_info(), **RESEARCH_NODES})

    def variant(self, add: Mapping[str, dict[str, Any]], remove: Iterable[str] = ()) -> NodeCatalog:
        """This catalog with node classes added and removed (another installation's nodes)."""
        removed = set(remove)
        defs = {name: d for name, d in self._defs.items() if name not in removed}
        return NodeCatalog({**defs, **add})

    def __contains__(self, class_type: object) -> bool:
        return class_type in self._defs

    def names(self) -> list[str]:
        return list(self._defs)

    def definition(self, class_type: str, lists: ModelLists) -> dict[str, Any]:
        """One class's definition with the installation's lists filled in."""
        definition = self._defs[class_type]
        dynamic = self._dynamic.get(class_type)
        if not dynamic:
            return definition
        definition = copy.deepcopy(definition)
        for category, input_name, kind in dynamic:
            spec = definition["input"][category][input_name]
            spec[0] = sorted(getattr(lists, kind))
        return definition

    def object_info(self, lists: ModelLists) -> dict[str, Any]:
        return {name: self.definition(name, lists) for name in self._defs}

    def output_types(self, class_type: str) -> tuple[Any, ...]:
        return tuple(self._defs[class_type]["output"])

    def is_output(self, class_type: str) -> bool:
        return bool(self._defs[class_type].get("output_node"))

    def wants_unique_id(self, class_type: str) -> bool:
        """Whether the node's cache key includes its id (it has a hidden UNIQUE_ID input)."""
        if class_type not in self._defs:
            return False
        hidden = self._defs[class_type]["input"].get("hidden", {})
        return "UNIQUE_ID" in hidden.values()


def iter_inputs(definition: Mapping[str, Any]) -> Iterable[tuple[str, str, list[Any]]]:
    """(category, name, spec) of the required then optional inputs, in definition order."""
    for category in ("required", "optional"):
        for name, spec in definition["input"].get(category, {}).items():
            yield category, name, spec


def is_link(value: object) -> bool:
    return (
        isinstance(value, list)
        and len(value) == 2
        and isinstance(value[0], str)
        and isinstance(value[1], int)
    )


def types_match(received: Any, expected: Any) -> bool:
    """Whether an output of type ``received`` may feed an input of type ``expected``."""
    if isinstance(received, list):
        received = "COMBO"
    if isinstance(expected, list):
        return received in ("COMBO", "*")
    if received == expected:
        return True
    if not isinstance(received, str) or not isinstance(expected, str):
        return False
    got = {part.strip() for part in received.split(",")}
    wanted = {part.strip() for part in expected.split(",")}
    return "*" in got or "*" in wanted or bool(got & wanted)


def type_name(exc: BaseException) -> str:
    """The exception's type as ComfyUI reports it (module-qualified unless builtin)."""
    reported = getattr(exc, "reported_type", None)
    if isinstance(reported, str):
        return reported
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__qualname__
    return f"{kind.__module__}.{kind.__qualname__}"


def traceback_lines(exc: BaseException) -> list[str]:
    """A traceback in ComfyUI's list-of-strings shape, without machine paths."""
    lines = []
    for frame in traceback.extract_tb(exc.__traceback__):
        source = f"    {frame.line}\n" if frame.line else ""
        name = Path(frame.filename).name
        lines.append(
            f'  File "<fake-comfyui>/{name}", line {frame.lineno}, in {frame.name}\n{source}'
        )
    return lines


# --------------------------------------------------------------------------------------------
# Validation


def _error(
    kind: str, message: str, details: str, extra: dict[str, Any] | None = None
) -> dict[str, Any]:
    return {"type": kind, "message": message, "details": details, "extra_info": extra or {}}


@dataclass
class Validation:
    ok: bool
    error: dict[str, Any] | None
    outputs: list[str]
    node_errors: dict[str, Any]


CustomCheck = Callable[[Any], "str | bool"]


def _contains(container: Any, key: str) -> bool:
    # Python's ``in``, which is what ComfyUI applies to whatever JSON it was sent.
    return key in container


class _Validator:
    def __init__(
        self,
        prompt: dict[str, Any],
        catalog: NodeCatalog,
        lists: ModelLists,
        custom: Mapping[str, Mapping[str, CustomCheck]],
    ) -> None:
        self.prompt = prompt
        self.catalog = catalog
        self.lists = lists
        self.custom = custom
        self.validated: dict[str, tuple[bool, list[dict[str, Any]]]] = {}
        self._active: set[str] = set()

    def node(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        if node_id in self.validated:
            return self.validated[node_id]
        if node_id in self._active:
            raise RecursionError("maximum recursion depth exceeded (dependency cycle)")
        self._active.add(node_id)
        try:
            result = self._check(node_id)
        finally:
            self._active.discard(node_id)
        self.validated[node_id] = result
        return result

    def _check(self, node_id: str) -> tuple[bool, list[dict[str, Any]]]:
        node = self.prompt[node_id]
        inputs = node["inputs"]
        class_type = node["class_type"]
        definition = self.catalog.definition(class_type, self.lists)
        custom = self.custom.get(class_type, {})
        errors: list[dict[str, Any]] = []
        valid = True
        for category, name, spec in iter_inputs(definition):
            input_type = spec[0]
            extra = spec[1] if len(spec) > 1 and isinstance(spec[1], dict) else {}
            if name not in inputs:
                if category == "required":
                    errors.append(
                        _error(
                            "required_input_missing",
                            "Required input is missing",
                            name,
                            {"input_name": name},
                        )
                    )
                continue
            value = inputs[name]
            if isinstance(value, list):
                if not self._check_link(name, spec, value, errors):
                    valid = False
                continue
            if isinstance(value, dict) and "__value__" in value:
                value = inputs[name] = value["__value__"]
            try:
                if input_type == "INT":
                    value = inputs[name] = int(value)
                elif input_type == "FLOAT":
                    value = inputs[name] = float(value)
                elif input_type == "STRING":
                    value = inputs[name] = str(value)
                elif input_type == "BOOLEAN":
                    value = inputs[name] = bool(value)
            except Exception as exc:
                errors.append(
                    _error(
                        "invalid_input_type",
                        f"Failed to convert an input value to a {input_type} value",
                        f"{name}, {value}, {exc}",
                        {
                            "input_name": name,
                            "input_config": spec,
                            "received_value": value,
                            "exception_message": str(exc),
                        },
                    )
                )
                continue
            if name in custom:
                continue
            self._check_value(name, spec, input_type, extra, value, errors)
        for name, check in custom.items():
            if name not in inputs:
                continue
            outcome = check(inputs[name])
            if outcome is not True:
                errors.append(
                    _error(
                        "custom_validation_failed",
                        "Custom validation failed for node",
                        f"{name} - {outcome}",
                        {"input_name": name},
                    )
                )
        if errors:
            return False, errors
        return valid, []

    def _check_link(
        self, name: str, spec: list[Any], value: list[Any], errors: list[dict[str, Any]]
    ) -> bool:
        if len(value) != 2:
            errors.append(
                _error(
                    "bad_linked_input",
                    "Bad linked input, must be a length-2 list of [node_id, slot_index]",
                    name,
                    {"input_name": name, "input_config": spec, "received_value": value},
                )
            )
            return True
        source_id = value[0]
        source_class = self.prompt[source_id]["class_type"]
        received = self.catalog.output_types(source_class)[value[1]]
        if not types_match(received, spec[0]):
            errors.append(
                _error(
                    "return_type_mismatch",
                    "Return type mismatch between linked nodes",
                    f"{name}, received_type({received}) mismatch input_type({spec[0]})",
                    {
                        "input_name": name,
                        "input_config": spec,
                        "received_type": received,
                        "linked_node": value,
                    },
                )
            )
            return True
        try:
            ok, _ = self.node(source_id)
        except Exception as exc:
            reasons = [
                _error(
                    "exception_during_inner_validation",
                    "Exception when validating inner node",
                    str(exc),
                    {
                        "input_name": name,
                        "input_config": spec,
                        "exception_message": str(exc),
                        "exception_type": type_name(exc),
                        "traceback": traceback_lines(exc),
                        "linked_node": value,
                    },
                )
            ]
            self.validated[source_id] = (False, reasons)
            return False
        return ok

    @staticmethod
    def _check_value(
        name: str,
        spec: list[Any],
        input_type: Any,
        extra: dict[str, Any],
        value: Any,
        errors: list[dict[str, Any]],
    ) -> None:
        details = {"input_name": name, "input_config": spec, "received_value": value}
        if "min" in extra and value < extra["min"]:
            message = "Value {} smaller than min of {}".format(value, extra["min"])
            errors.append(_error("value_smaller_than_min", message, name, details))
            return
        if "max" in extra and value > extra["max"]:
            message = "Value {} bigger than max of {}".format(value, extra["max"])
            errors.append(_error("value_bigger_than_max", message, name, details))
            return
        if isinstance(input_type, list) or input_type == "COMBO":
            options = input_type if isinstance(input_type, list) else extra.get("options", [])
            if value in options:
                return
            if len(options) > 20:
                listing = f"(list of length {len(options)})"
                details = {**details, "input_config": None}
            else:
                listing = str(options)
            errors.append(
                _error(
                    "value_not_in_list",
                    "Value not in list",
                    f"{name}: '{value}' not in {listing}",
                    details,
                )
            )


def validate_prompt(
    prompt: Any,
    catalog: NodeCatalog,
    lists: ModelLists,
    partial_targets: Any = None,
    custom: Mapping[str, Mapping[str, CustomCheck]] | None = None,
) -> Validation:
    """Check a submitted prompt the way ComfyUI does; mutates widget values to their types.

    Raises:
        Exception: for the bodies the real server answers with a bare 500 (a prompt that is not
            an object, a node that is a number...).
    """
    outputs: list[str] = []
    for node_id in prompt:
        node = prompt[node_id]
        if not _contains(node, "class_type"):
            message = "Cannot execute because a node is missing the class_type property."
            error = _error("invalid_prompt", message, f"Node ID '#{node_id}'")
            return Validation(False, error, [], {})
        class_type = node["class_type"]
        if class_type not in catalog:
            message = f"Cannot execute because node {class_type} does not exist."
            error = _error("invalid_prompt", message, f"Node ID '#{node_id}'")
            return Validation(False, error, [], {})
        if catalog.is_output(class_type) and (
            partial_targets is None or node_id in partial_targets
        ):
            outputs.append(node_id)
    if not outputs:
        error = _error("prompt_no_outputs", "Prompt has no outputs", "")
        return Validation(False, error, [], {})

    validator = _Validator(prompt, catalog, lists, custom or {})
    good: list[str] = []
    failed: list[tuple[str, list[dict[str, Any]]]] = []
    node_errors: dict[str, Any] = {}
    for output_id in outputs:
        try:
            ok, reasons = validator.node(output_id)
        except Exception as exc:
            ok = False
            reasons = [
                _error(
                    "exception_during_validation",
                    "Exception when validating node",
                    str(exc),
                    {"exception_type": type_name(exc), "traceback": traceback_lines(exc)},
                )
            ]
            validator.validated[output_id] = (False, reasons)
        if ok:
            good.append(output_id)
            continue
        failed.append((output_id, reasons))
        # Like ComfyUI, every invalid node seen so far is charged to this output.
        for node_id, (node_ok, node_reasons) in validator.validated.items():
            if node_ok or not node_reasons:
                continue
            entry = node_errors.setdefault(
                node_id,
                {
                    "errors": node_reasons,
                    "dependent_outputs": [],
                    "class_type": prompt[node_id]["class_type"],
                },
            )
            entry["dependent_outputs"].append(output_id)
    if not good:
        details = "\n".join(
            f"{reason['message']}: {reason['details']}"
            for _, reasons in failed
            for reason in reasons
        )
        error = _error(
            "prompt_outputs_failed_validation", "Prompt outputs failed validation", details
        )
        return Validation(False, error, [], node_errors)
    return Validation(True, None, good, node_errors)


# --------------------------------------------------------------------------------------------
# Execution order and cache keys


def node_signatures(
    prompt: Mapping[str, Any],
    catalog: NodeCatalog,
    changed: Callable[[str, Mapping[str, Any]], str | None],
) -> dict[str, str]:
    """A cache key per node: class, inputs and (recursively) the keys of its ancestors.

    ``changed(node_id, node)`` adds what ComfyUI's ``IS_CHANGED`` adds (a file's hash).
    """
    keys: dict[str, str] = {}

    def key(node_id: str, trail: frozenset[str]) -> str:
        if node_id in keys:
            return keys[node_id]
        node = prompt.get(node_id)
        if not isinstance(node, dict) or node_id in trail:
            return f"missing:{node_id}"
        class_type = node.get("class_type")
        parts: list[Any] = [class_type, changed(node_id, node)]
        if isinstance(class_type, str) and catalog.wants_unique_id(class_type):
            parts.append(node_id)
        inputs = node.get("inputs")
        if isinstance(inputs, dict):
            for name in sorted(inputs):
                value = inputs[name]
                if is_link(value):
                    parts.append([name, "link", key(value[0], trail | {node_id}), value[1]])
                else:
                    parts.append([name, value])
        encoded = json.dumps(parts, sort_keys=True, default=repr).encode()
        keys[node_id] = hashlib.sha256(encoded).hexdigest()
        return keys[node_id]

    for node_id in prompt:
        key(node_id, frozenset())
    return keys


class ExecutionPlan:
    """Which node runs next, in the order ComfyUI's execution list picks them.

    Nodes are collected depth first from each output (inputs pushed on a stack, so the last
    input is visited first); cached inputs are left out. Among the nodes whose inputs are
    ready, an output node goes first, then a node feeding an output, then one two links away
    from an output, then the earliest collected.
    """

    def __init__(
        self,
        prompt: Mapping[str, Any],
        outputs: Iterable[str],
        cached: set[str],
        is_output: Callable[[str], bool],
    ) -> None:
        self._is_output = is_output
        self._pending: dict[str, None] = {}
        self._waiting_on: dict[str, set[str]] = {}
        self._feeds: dict[str, list[str]] = {}
        links: list[tuple[str, str]] = []
        for output_id in outputs:
            stack = [output_id]
            while stack:
                node_id = stack.pop()
                if node_id in self._pending:
                    continue
                self._pending[node_id] = None
                self._waiting_on[node_id] = set()
                self._feeds[node_id] = []
                for value in prompt[node_id]["inputs"].values():
                    if is_link(value) and value[0] not in cached:
                        stack.append(value[0])
                        links.append((value[0], node_id))
        for source, target in links:
            if target not in self._feeds[source]:
                self._feeds[source].append(target)
            self._waiting_on[target].add(source)

    def next_node(self) -> str | None:
        ready = [node_id for node_id in self._pending if not self._waiting_on[node_id]]
        if not ready:
            if self._pending:
                raise RuntimeError("Dependency cycle detected")
            return None
        for node_id in ready:
            if self._is_output(node_id):
                return node_id
        for node_id in ready:
            if any(self._is_output(target) for target in self._feeds[node_id]):
                return node_id
        for node_id in ready:
            for target in self._feeds[node_id]:
                if any(self._is_output(after) for after in self._feeds[target]):
                    return node_id
        return ready[0]

    def done(self, node_id: str) -> None:
        del self._pending[node_id]
        for target in self._feeds[node_id]:
            self._waiting_on[target].discard(node_id)


# --------------------------------------------------------------------------------------------
# Values flowing between simulated nodes


def digest(*parts: Any) -> str:
    encoded = json.dumps(parts, sort_keys=True, default=token).encode()
    return hashlib.sha256(encoded).hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class Images:
    """An IMAGE batch: RGB Pillow images of one size."""

    frames: tuple[Image.Image, ...]

    @property
    def width(self) -> int:
        return self.frames[0].width

    @property
    def height(self) -> int:
        return self.frames[0].height

    @functools.cached_property
    def token(self) -> str:
        sha = hashlib.sha256()
        for frame in self.frames:
            sha.update(f"{frame.mode}{frame.size}".encode())
            sha.update(frame.tobytes())
        return sha.hexdigest()[:32]


@dataclass(frozen=True, eq=False)
class Mask:
    """A MASK batch: mode "L" Pillow images."""

    frames: tuple[Image.Image, ...]

    @functools.cached_property
    def token(self) -> str:
        return Images(self.frames).token


@dataclass(frozen=True)
class Latent:
    """A LATENT: its pixel size, what produced it, and the image it started from (img2img)."""

    width: int
    height: int
    batch: int
    recipe: str
    source: Images | None = None
    denoise: float = 1.0

    @property
    def token(self) -> str:
        return self.recipe


@dataclass(frozen=True)
class Handle:
    """Any other value (MODEL, CLIP, VAE, CONDITIONING, SIGMAS...): what produced it."""

    kind: str
    recipe: str
    steps: int | None = None

    @property
    def token(self) -> str:
        return self.recipe


def token(value: Any) -> Any:
    if isinstance(value, Images | Mask | Latent | Handle):
        return value.token
    return repr(value)


@dataclass
class NodeResult:
    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None = None


class NodeContext(Protocol):
    """What a simulated node may ask of the server running it."""

    node_id: str
    class_type: str
    output_types: tuple[Any, ...]
    prompt: dict[str, Any]

    @property
    def previews(self) -> bool:
        """Whether samplers send a preview image with each step."""

    async def step(self, value: int, total: int, preview: Image.Image | None = None) -> None:
        """One sampler step: waits, honours holds and interrupts, reports progress."""

    async def report(self, value: int, total: int, png: bytes | None = None) -> None:
        """Progress without waiting (and an optional PNG preview)."""

    def text(self, message: str) -> None:
        """A progress text frame (binary type 3)."""

    def save(self, images: Images, prefix: str, kind: str) -> list[dict[str, str]]:
        """Write PNGs into the output or temp folder; the ``images`` entries of the UI."""

    def output_root(self) -> Path:
        """The server's output folder (savers write below it)."""

    def temp_prefix(self) -> str:
        """The random ``ComfyUI_temp_xxxxx`` prefix of this node (like PreviewImage)."""

    def input_file(self, name: str) -> Path:
        """The file an annotated input name (``x.png``, ``sub/x.png [input]``) refers to."""


Simulator = Callable[[NodeContext, dict[str, Any]], Awaitable[NodeResult]]
SIMULATORS: dict[str, Simulator] = {}


def _simulates(*class_types: str) -> Callable[[Simulator], Simulator]:
    def register(function: Simulator) -> Simulator:
        for class_type in class_types:
            SIMULATORS[class_type] = function
        return function

    return register


def check_linked_inputs(definition: Mapping[str, Any], inputs: Mapping[str, Any]) -> None:
    """A tensor input given a plain value fails when the node runs, as in ComfyUI."""
    for _, name, spec in iter_inputs(definition):
        kind = spec[0]
        if name not in inputs or isinstance(kind, list) or kind in WIDGET_TYPES or kind == "*":
            continue
        value = inputs[name]
        if not is_link(value):
            raise AttributeError(f"'{type(value).__name__}' object has no attribute 'shape'")


# --------------------------------------------------------------------------------------------
# Pictures


def _rng(*parts: Any) -> random.Random:
    return random.Random(int(digest(*parts)[:16], 16))


def noise_image(width: int, height: int, *seed: Any) -> Image.Image:
    """A smooth, deterministic colour field (a few random pixels scaled up)."""
    rng = _rng(*seed)
    grid_w, grid_h = max(2, min(8, width // 8 or 1)), max(2, min(8, height // 8 or 1))
    pixels = bytes(rng.randrange(256) for _ in range(grid_w * grid_h * 3))
    small = Image.frombytes("RGB", (grid_w, grid_h), pixels)
    return small.resize((max(1, width), max(1, height)), Image.Resampling.BICUBIC)


def encode(image: Image.Image, fmt: str, **options: Any) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format=fmt, **options)
    return buffer.getvalue()


def decode_latent(latent: Latent, index: int) -> Image.Image:
    if latent.recipe == "empty" and latent.source is None:
        return Image.new("RGB", (latent.width, latent.height), (128, 128, 128))
    picture = noise_image(latent.width, latent.height, latent.recipe, index)
    if latent.source is not None and latent.denoise < 1.0:
        frames = latent.source.frames
        base = frames[index % len(frames)].convert("RGB").resize(picture.size)
        picture = Image.blend(base, picture, max(0.0, min(1.0, latent.denoise)))
    return picture


def next_names(root: Path, prefix: str, ext: str, count: int) -> list[tuple[Path, str, str]]:
    """(folder, subfolder, name) for `count` new files, named the way ComfyUI's savers name
    them: ``prefix_00001_.ext``, counting on from the files already there.

    Raises:
        ValueError: when the prefix points outside ``root``.
    """
    normalised = posixpath.normpath(prefix.replace("\\", "/"))
    subfolder, base = posixpath.split(normalised)
    folder = (root / subfolder).resolve()
    if not folder.is_relative_to(root.resolve()):
        raise ValueError(
            "**** ERROR: Saving image outside the output folder is not allowed."
            f"\n full_output_folder: {folder}"
        )
    folder.mkdir(parents=True, exist_ok=True)
    pattern = re.compile(re.escape(base) + r"_(\d+)_")
    used = [
        int(match.group(1)) for entry in folder.iterdir() if (match := pattern.match(entry.name))
    ]
    counter = max(used, default=0) + 1
    return [(folder, subfolder, f"{base}_{counter + i:05}_.{ext}") for i in range(count)]


def save_png_batch(
    root: Path, prefix: str, frames: Iterable[Image.Image], kind: str, text: Mapping[str, str]
) -> list[dict[str, str]]:
    """Save like SaveImage: ``prefix_00001_.png`` counting on from the files already there.

    Raises:
        ValueError: when the prefix points outside ``root``.
    """
    frames = list(frames)
    info = PngImagePlugin.PngInfo()
    for key, value in text.items():
        info.add_text(key, value)
    results = []
    for frame, (folder, subfolder, name) in zip(
        frames, next_names(root, prefix, "png", len(frames)), strict=True
    ):
        frame.save(folder / name, format="PNG", pnginfo=info, compress_level=4)
        results.append({"filename": name, "subfolder": subfolder, "type": kind})
    return results


# --------------------------------------------------------------------------------------------
# Simulated nodes


def _int(value: Any, default: int = 0) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else default


@_simulates("EmptyImage")
async def _empty_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    color = int(inputs.get("color", 0))
    rgb = ((color >> 16) & 0xFF, (color >> 8) & 0xFF, color & 0xFF)
    frame = Image.new("RGB", (inputs["width"], inputs["height"]), rgb)
    return NodeResult((Images((frame,) * inputs["batch_size"]),))


@_simulates("EmptyLatentImage")
async def _empty_latent(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    latent = Latent(inputs["width"], inputs["height"], inputs["batch_size"], "empty")
    return NodeResult((latent,))


@_simulates("LoadImage", "LoadImageMask")
async def _load_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    with Image.open(ctx.input_file(inputs["image"])) as opened:
        opened.load()
        picture = opened.copy()
    rgb = picture.convert("RGB")
    if ctx.class_type == "LoadImageMask":
        channel = {"alpha": "A", "red": "R", "green": "G", "blue": "B"}[inputs["channel"]]
        source = picture.convert("RGBA")
        mask = source.getchannel(channel)
        if channel == "A":
            mask = ImageOps.invert(mask)
        return NodeResult((Mask((mask,)),))
    if "A" in picture.getbands():
        mask = ImageOps.invert(picture.getchannel("A"))
    else:
        mask = Image.new("L", (64, 64), 0)
    return NodeResult((Images((rgb,)), Mask((mask,))))


@_simulates("ImageInvert")
async def _invert(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    frames = tuple(ImageOps.invert(frame.convert("RGB")) for frame in inputs["image"].frames)
    return NodeResult((Images(frames),))


@_simulates("MaskToImage")
async def _mask_to_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult((Images(tuple(frame.convert("RGB") for frame in inputs["mask"].frames)),))


@_simulates("ImageToMask")
async def _image_to_mask(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    channels = ["red", "green", "blue", "alpha"]
    index = channels.index(inputs["channel"])
    if index > 2:  # IMAGE tensors have three channels
        raise IndexError(f"index {index} is out of bounds for dimension 3 with size 3")
    return NodeResult((Mask(tuple(frame.getchannel(index) for frame in inputs["image"].frames)),))


@_simulates("GetImageSize")
async def _image_size(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    images: Images = inputs["image"]
    batch = len(images.frames)
    ctx.text(f"width: {images.width}, height: {images.height}\n batch size: {batch}")
    return NodeResult((images.width, images.height, batch))


def _scaled(width: int, height: int, new_width: int, new_height: int) -> tuple[int, int]:
    if new_width == 0 and new_height == 0:
        return width, height
    if new_width == 0:
        return max(1, round(width * new_height / height)), new_height
    if new_height == 0:
        return new_width, max(1, round(height * new_width / width))
    return new_width, new_height


@_simulates("ImageScale", "ImageScaleBy")
async def _image_scale(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    images: Images = inputs["image"]
    if ctx.class_type == "ImageScaleBy":
        factor = float(inputs["scale_by"])
        size = (max(1, round(images.width * factor)), max(1, round(images.height * factor)))
    else:
        size = _scaled(images.width, images.height, inputs["width"], inputs["height"])
    return NodeResult((Images(tuple(frame.resize(size) for frame in images.frames)),))


@_simulates("LatentUpscale", "LatentUpscaleBy")
async def _latent_scale(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    latent: Latent = inputs["samples"]
    if ctx.class_type == "LatentUpscaleBy":
        factor = float(inputs["scale_by"])
        width, height = round(latent.width * factor), round(latent.height * factor)
    else:
        width, height = _scaled(latent.width, latent.height, inputs["width"], inputs["height"])
    width, height = max(8, width // 8 * 8), max(8, height // 8 * 8)
    recipe = digest(latent.recipe, width, height)
    return NodeResult((Latent(width, height, latent.batch, recipe, latent.source, latent.denoise),))


@_simulates("VAEEncode")
async def _vae_encode(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    images: Images = inputs["pixels"]
    width, height = max(8, images.width // 8 * 8), max(8, images.height // 8 * 8)
    recipe = digest("encoded", images, inputs["vae"])
    return NodeResult((Latent(width, height, len(images.frames), recipe, images),))


@_simulates("VAEDecode", "VAEDecodeTiled")
async def _vae_decode(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    latent: Latent = inputs["samples"]
    return NodeResult((Images(tuple(decode_latent(latent, i) for i in range(latent.batch))),))


def _preview(latent: Latent, recipe: str, step: int) -> Image.Image:
    width, height = max(8, latent.width // 8), max(8, latent.height // 8)
    return noise_image(width, height, recipe, "preview", step)


async def _sample(
    ctx: NodeContext,
    inputs: dict[str, Any],
    latent: Latent,
    total: int,
    denoise: float,
    outputs: int = 1,
) -> NodeResult:
    recipe = digest(ctx.class_type, sorted(inputs.items()))
    for step in range(1, total + 1):
        await ctx.step(step, total, _preview(latent, recipe, step) if ctx.previews else None)
    source = latent.source if denoise < 1.0 else None
    result = Latent(latent.width, latent.height, latent.batch, recipe, source, denoise)
    return NodeResult((result,) * outputs)


@_simulates("KSampler")
async def _ksampler(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    denoise = float(inputs.get("denoise", 1.0))
    return await _sample(ctx, inputs, inputs["latent_image"], inputs["steps"], denoise)


@_simulates("KSamplerAdvanced")
async def _ksampler_advanced(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    steps = inputs["steps"]
    start, end = _int(inputs.get("start_at_step"), 0), _int(inputs.get("end_at_step"), steps)
    total = max(1, min(end, steps) - start)
    denoise = 1.0 - start / steps if steps else 1.0
    return await _sample(ctx, inputs, inputs["latent_image"], total, denoise)


@_simulates("SamplerCustom", "SamplerCustomAdvanced")
async def _sampler_custom(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    sigmas = inputs.get("sigmas")
    total = sigmas.steps if isinstance(sigmas, Handle) and sigmas.steps else 1
    return await _sample(ctx, inputs, inputs["latent_image"], total, 1.0, outputs=2)


@_simulates("SaveImage")
async def _save_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    images = ctx.save(inputs["images"], inputs["filename_prefix"], "output")
    return NodeResult((), {"images": images})


@_simulates("PreviewImage")
async def _preview_image(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    return NodeResult((), {"images": ctx.save(inputs["images"], ctx.temp_prefix(), "temp")})


@_simulates("SaveImageWebsocket")
async def _save_websocket(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    frames = inputs["images"].frames
    for index, frame in enumerate(frames):
        await ctx.report(index, len(frames), encode(frame, "PNG"))
    return NodeResult(())


@_simulates("ResearchSlowProgress")
async def _slow_progress(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    images: Images = inputs["image"]
    steps = inputs["steps"]
    for step in range(1, steps + 1):
        preview = None
        if inputs.get("preview"):
            preview = noise_image(images.width, images.height, images, "research", step)
        await ctx.step(step, steps, preview)
    ctx.text(f"done {steps} steps")
    return NodeResult((images,))


@_simulates("ResearchRaise")
async def _raise(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    raise ValueError(inputs["message"])


def _passthrough_value(kind: Any, slot: int, inputs: dict[str, Any], recipe: str) -> Any:
    values = list(inputs.values())
    if isinstance(kind, list):
        return kind[0] if kind else ""
    defaults: dict[str, Any] = {"INT": 0, "FLOAT": 0.0, "STRING": "", "BOOLEAN": False}
    if kind in defaults:
        return defaults[kind]
    if kind == "IMAGE":
        images = next((value for value in values if isinstance(value, Images)), None)
        return images or Images((noise_image(512, 512, recipe, slot),))
    if kind == "MASK":
        mask = next((value for value in values if isinstance(value, Mask)), None)
        return mask or Mask((Image.new("L", (64, 64), 0),))
    if kind == "LATENT":
        latent = next((value for value in values if isinstance(value, Latent)), None)
        if latent is None:
            return Latent(512, 512, 1, recipe)
        return Latent(latent.width, latent.height, latent.batch, recipe, latent.source)
    steps = inputs.get("steps")
    if not isinstance(steps, int):
        steps = next((v.steps for v in values if isinstance(v, Handle) and v.steps), None)
    return Handle(str(kind), f"{recipe}:{slot}", steps if kind == "SIGMAS" else None)


async def passthrough(ctx: NodeContext, inputs: dict[str, Any]) -> NodeResult:
    """Any other node: outputs derived from its inputs, instantly."""
    recipe = digest(ctx.class_type, sorted(inputs.items()))
    outputs = tuple(
        _passthrough_value(kind, slot, inputs, recipe) for slot, kind in enumerate(ctx.output_types)
    )
    return NodeResult(outputs)


@dataclass
class CacheEntry:
    """What a node produced: its outputs and what it showed (``executed``'s ``output``)."""

    outputs: tuple[Any, ...]
    ui: dict[str, Any] | None = None
