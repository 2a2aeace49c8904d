"""The questions detection asks of a graph, answered from `/object_info` where it can be.

`Reader` knows what each input of a node is, where a value is really set, which nodes are
samplers (and which pass comes first), where a sampler's latent starts, and which nodes load a
file. Finding the prompt's text is `bot.workflows.detect_text`; what detection makes of the
answers is `bot.workflows.detect`.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import cached_property
from typing import Any

import bot.workflows.nodeinfo as nodeinfo
from bot.workflows.detect_sizes import sized_choices
from bot.workflows.graph import is_link, links, sort_key
from bot.workflows.nodeinfo import WIDGET_TYPES, InputDef, ObjectInfo

Graph = Mapping[str, Any]
Target = tuple[str, str]

HOPS = 60
_LATENT_INPUTS = frozenset({"samples", "latent", "latent_image", "samples_from", "samples_to"})
_DRIVERS = ("seed", "noise_seed", "steps", "noise")
_UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload")
_PATH_INPUTS = ("image", "image_path", "path", "file_path", "video", "video_path")
_START_INPUTS = ("start_at_step", "start_step")
_SIZE_PAIRS = (("width", "height"), ("empty_latent_width", "empty_latent_height"))


def _in_input_folder(value: object) -> bool:
    """Whether a file path, as a path loader reads it, is inside ComfyUI's `input` folder."""
    if not isinstance(value, str) or "://" in value:
        return False
    parts = value.strip().replace("\\", "/").split("/")
    if parts[0] == "" or parts[0].endswith(":") or ".." in parts:
        return False  # an absolute path, a drive, or a way out
    return "input" in parts[:-1]


def _prompt_box(definition: InputDef) -> bool:
    """Whether an input is a box to type a prompt in: multiline text named for one."""
    name = definition.name.lower()
    return (
        definition.type == "STRING"
        and bool(definition.options.get("multiline"))
        and ("prompt" in name or "text" in name or name in ("positive", "negative"))
    )


def _unpacks(kinds: set[str], outputs: set[str]) -> bool:
    """Whether a class taking sockets of `kinds` only, giving `outputs`, unpacks a bundle."""
    if len(kinds) != 1 or kinds & WIDGET_TYPES or "CONDITIONING" in kinds:
        return False
    return "CONDITIONING" in outputs and len(outputs - {"CONDITIONING"} - kinds) >= 2


class Reader:
    """A graph with its node definitions, and the questions detection asks of it."""

    def __init__(self, graph: Graph, object_info: ObjectInfo | None) -> None:
        self.graph = graph
        self.info = object_info

    # --- what /object_info says --------------------------------------------------------------

    def class_of(self, node_id: str) -> str:
        return str(self.graph[node_id].get("class_type", ""))

    def defs(self, node_id: str) -> list[InputDef]:
        if self.info is None:
            return []
        return nodeinfo.input_defs(self.info, self.class_of(node_id))

    def input_def(self, node_id: str, name: str) -> InputDef | None:
        if self.info is None:
            return None
        return nodeinfo.input_def(self.info, self.class_of(node_id), name)

    def known(self, node_id: str) -> bool:
        return (
            self.info is not None
            and nodeinfo.node_def(self.info, self.class_of(node_id)) is not None
        )

    def input_type(self, node_id: str, name: str) -> str | None:
        definition = self.input_def(node_id, name)
        return definition.type if definition is not None else None

    def outputs(self, node_id: str) -> list[str]:
        return nodeinfo.output_types(self.info, self.class_of(node_id)) if self.info else []

    def output_name(self, node_id: str, slot: int) -> str | None:
        if self.info is None:
            return None
        definition = nodeinfo.node_def(self.info, self.class_of(node_id))
        names = definition.get("output_name") if definition is not None else None
        if isinstance(names, list) and 0 <= slot < len(names):
            name = names[slot]
            return name if isinstance(name, str) else None
        return None

    def inputs(self, node_id: str | None) -> Mapping[str, Any]:
        if node_id is None or node_id not in self.graph:
            return {}
        inputs = self.graph[node_id].get("inputs")
        return inputs if isinstance(inputs, Mapping) else {}

    def source(self, node_id: str | None, name: str) -> tuple[str, int] | None:
        value = self.inputs(node_id).get(name)
        if is_link(value) and str(value[0]) in self.graph:
            return (str(value[0]), int(value[1]))
        return None

    def is_type(self, node_id: str, name: str, kind: str, *fallback: str) -> bool:
        """Whether an input is of `kind` (by /object_info, else by its name)."""
        found = self.input_type(node_id, name)
        if found is not None:
            return kind in found.split(",")
        return name in fallback

    def conditioning_inputs(self, node_id: str) -> list[str]:
        """The conditioning inputs of a node (by /object_info, else by their names)."""
        if self.known(node_id):
            return [
                n for n in self.inputs(node_id) if self.input_type(node_id, n) == "CONDITIONING"
            ]
        return [n for n in self.inputs(node_id) if "cond" in n or n in ("positive", "negative")]

    @cached_property
    def bundle_types(self) -> frozenset[str]:
        """The socket types that carry conditioning, or the prompt, bundled (a pipe, embeds).

        A type is one when a class takes nothing but it (no widget, no other socket) and gives
        conditioning back among at least two other kinds of things: it unpacks the bundle
        (Impact's `FromBasicPipe`, Efficiency's `Unpack SDXL Tuple`, Easy-Use's `pipeOut`). It
        is one too when every class making it makes it from conditioning, a prompt box or
        another bundle (WanVideoWrapper's text embeds, Efficiency's SDXL tuple, Impact's
        sampler providers making a `KSAMPLER_ADVANCED` from a `BASIC_PIPE`).
        """
        info = self.info or {}
        unpacked: set[str] = set()
        makers: list[tuple[set[str], bool, set[str]]] = []
        for class_type in info:
            defs = [d for d in nodeinfo.input_defs(info, class_type) if d.required]
            kinds = {d.type for d in defs}
            outputs = set(nodeinfo.output_types(info, class_type))
            if _unpacks(kinds, outputs):
                unpacked |= kinds
            from_prompt = "CONDITIONING" in kinds or any(_prompt_box(d) for d in defs)
            made = outputs - kinds - WIDGET_TYPES - {"CONDITIONING", "*"}
            makers.append((kinds, from_prompt, made))
        found: set[str] = set(unpacked)
        while True:  # until no type is added: a bundle made from a bundle is one
            ok: dict[str, bool] = {}
            for kinds, from_prompt, made in makers:
                for kind in made:
                    ok[kind] = ok.get(kind, True) and (from_prompt or bool(kinds & found))
            grown = found | {kind for kind, made_ok in ok.items() if made_ok}
            if grown == found:
                return frozenset(found)
            found = grown

    def bundle_inputs(self, node_id: str) -> list[str]:
        """The linked inputs bringing a node its conditioning in bundles."""
        found = []
        for name in self.inputs(node_id):
            if self.source(node_id, name) is None:
                continue
            kind = self.input_type(node_id, name)
            if kind in self.bundle_types or (kind is None and "pipe" in name.lower()):
                found.append(name)
        return found

    def bundle_input(self, node_id: str) -> str | None:
        """The first linked input bringing a node its conditioning in a bundle, if any."""
        found = self.bundle_inputs(node_id)
        return found[0] if found else None

    # --- primitives ------------------------------------------------------------------------

    def literal_target(self, node_id: str | None, name: str, depth: int = 0) -> Target | None:
        """Where the value of `node_id.name` is really set.

        A literal input is its own target. A linked one leads to the node holding the value:
        a primitive of any class (a node with no links and one literal), a node with a
        literal input named like the output it gives (a resolution node's `width`), or, for a
        seed, a node of literals with one seed among them.
        """
        if node_id is None or node_id not in self.graph or depth > 10:
            return None
        value = self.inputs(node_id).get(name)
        if value is None:
            return None
        if not is_link(value):
            return (node_id, name)
        source, slot = str(value[0]), int(value[1])
        if source not in self.graph:
            return None
        inputs = self.inputs(source)
        literals = [k for k, v in inputs.items() if not is_link(v)]
        if len(literals) == 1 and len(literals) == len(inputs):
            return (source, literals[0])
        for wanted in (self.output_name(source, slot), name):
            if wanted and wanted in inputs:
                return self.literal_target(source, wanted, depth + 1)
            if wanted and wanted.lower() in inputs:
                return self.literal_target(source, wanted.lower(), depth + 1)
        seeds = [k for k in literals if "seed" in k]
        if "seed" in name and len(seeds) == 1 and len(literals) == len(inputs):
            return (source, seeds[0])
        return None

    # --- samplers ---------------------------------------------------------------------------

    def is_sampler(self, node_id: str) -> bool:
        """A node with a seed, steps or noise input and conditioning: its own inputs, a guider,
        or a bundle (a pipe) carrying it."""
        inputs = self.inputs(node_id)
        drives = any(n in inputs for n in _DRIVERS) or any("seed" in n for n in inputs)
        if not drives:
            return False
        guided = any(self.is_type(node_id, n, "GUIDER", "guider") for n in inputs)
        conditioned = any(
            self.is_type(node_id, n, "CONDITIONING", "positive", "negative") for n in inputs
        )
        return guided or conditioned or self.bundle_input(node_id) is not None

    def guider(self, sampler: str) -> str | None:
        for name in self.inputs(sampler):
            if self.is_type(sampler, name, "GUIDER", "guider"):
                found = self.source(sampler, name)
                if found is not None:
                    return found[0]
        return None

    def samplers(self, needed: set[str]) -> list[str]:
        """The samplers the outputs need, the first pass first."""
        found = [i for i in self.graph if i in needed and self.is_sampler(i)]
        return sorted(found, key=lambda i: self.sampler_rank(i, found))

    def sampler_rank(
        self, node_id: str, samplers: list[str]
    ) -> tuple[int, int, tuple[tuple[int, ...], str]]:
        """A pass fed by another sampler (a refiner, an upscale, a detailer working on the
        decoded image) comes after it; one with no latent to start from comes after those with
        one."""
        before = self.upstream(node_id)
        later = any(other in before for other in samplers if other != node_id)
        has_latent = self.latent_input(node_id) is not None or (
            self.bundle_input(node_id) is not None and self.latent_origin(node_id) is not None
        )
        return (int(later), int(not has_latent), sort_key(node_id))

    def same_generation(self, first: str, later: str) -> bool:
        """Whether a later pass makes the same picture as the first rather than working on
        what it made: it starts from the same empty latent (Impact's masked sampling), or it
        carries on the first pass's schedule, from its latent at a later step (a refiner
        finishing the steps, Wan 2.2's low-noise pass). A pass sampling the first one's result
        again from step 0 (a hires fix, an upscale) works on it."""
        origin = self.latent_origin(later)
        if origin is None:
            return False
        if origin[0] == "empty":
            return origin == self.latent_origin(first)
        return origin == ("sampler", first) and self.starts_later(later)

    def starts_later(self, node_id: str) -> bool:
        """Whether a sampler starts at a step after the first (`start_at_step`, `start_step`)."""
        for name in _START_INPUTS:
            target = self.literal_target(node_id, name)
            value = self.inputs(target[0]).get(target[1]) if target else None
            if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
                return True
        return False

    def upstream(self, node_id: str) -> set[str]:
        """Every node `node_id` is fed from, directly or not."""
        seen: set[str] = set()
        stack = [source for _, source, _ in links(self.graph, node_id)]
        while stack:
            current = stack.pop()
            if current in seen or current not in self.graph:
                continue
            seen.add(current)
            stack.extend(source for _, source, _ in links(self.graph, current))
        return seen

    def latent_input(self, node_id: str) -> str | None:
        for name in self.inputs(node_id):
            if self.source(node_id, name) is None:
                continue
            if self.known(node_id):
                if self.input_type(node_id, name) == "LATENT":
                    return name
            elif name in _LATENT_INPUTS:
                return name
        return None

    def latent_origin(self, sampler: str) -> tuple[str, str] | None:
        """Where a sampler's latent comes from: ("empty"|"encode"|"sampler", node_id).

        A sampler taking a bundle and no latent starts from what made the bundle (Easy-Use's
        loaders make the empty latent too).
        """
        name = self.latent_input(sampler) or self.bundle_input(sampler)
        found = self.source(sampler, name) if name else None
        seen: set[str] = set()
        for _ in range(HOPS):
            if found is None or found[0] in seen:
                return None
            node_id = found[0]
            seen.add(node_id)
            if self.is_sampler(node_id):
                return ("sampler", node_id)
            if self.is_size_node(node_id):
                return ("empty", node_id)
            if self.encodes(node_id):
                return ("encode", node_id)
            name = self.latent_input(node_id) or self.bundle_input(node_id)
            if name is None:
                linked = [n for n, _, _ in links(self.graph, node_id)]
                name = linked[0] if linked else None
            found = self.source(node_id, name) if name else None
        return None

    def encodes(self, node_id: str) -> bool:
        """Whether a node makes a latent from an image."""
        inputs = self.inputs(node_id)
        if is_link(inputs.get("pixels")):
            return True
        return (
            self.known(node_id)
            and "LATENT" in self.outputs(node_id)
            and any(
                self.input_type(node_id, n) == "IMAGE" and is_link(v) for n, v in inputs.items()
            )
        )

    def size_inputs(self, node_id: str) -> tuple[str, str] | None:
        inputs = self.inputs(node_id)
        for width, height in _SIZE_PAIRS:
            if width in inputs and height in inputs:
                return (width, height)
        return None

    def size_list(self, node_id: str) -> tuple[str, list[str]] | None:
        """A node's list input of sizes (`dimensions`, `aspect_ratio`, `resolution`) and its
        choices that name a size."""
        for definition in self.defs(node_id):
            if definition.name in self.inputs(node_id):
                choices = sized_choices(definition)
                if choices:
                    return (definition.name, choices)
        return None

    def is_size_node(self, node_id: str) -> bool:
        return self.size_inputs(node_id) is not None or self.size_list(node_id) is not None

    # --- where outputs come from ----------------------------------------------------------

    def needed(self) -> set[str]:
        """The nodes the output nodes need (all nodes when no output node is known)."""
        outputs = [
            i
            for i in self.graph
            if self.info is not None and nodeinfo.is_output_node(self.info, self.class_of(i))
        ]
        if not outputs:
            return set(self.graph)
        seen: set[str] = set()
        for output in outputs:
            seen |= {output, *self.upstream(output)}
        return seen

    def loaders(self, needed: set[str]) -> list[tuple[str, str, str]]:
        """`(node_id, input, kind)` for each upload or file-path loader, kind image, mask,
        video or audio."""
        found = []
        for node_id in sorted(needed, key=sort_key):
            if not self.known(node_id):
                found.extend(self.core_loader(node_id))
            elif self.uploads(node_id):
                found.extend(self.upload(node_id))
            else:
                found.extend(self.path_loader(node_id))
        return found

    def core_loader(self, node_id: str) -> list[tuple[str, str, str]]:
        kind = self.class_of(node_id)
        if kind in ("LoadImage", "LoadImageMask") and isinstance(
            self.inputs(node_id).get("image"), str
        ):
            return [(node_id, "image", "mask" if kind == "LoadImageMask" else "image")]
        return []

    def uploads(self, node_id: str) -> list[InputDef]:
        return [
            d
            for d in self.defs(node_id)
            if any(d.options.get(o) for o in _UPLOAD_OPTIONS)
            and d.options.get("image_folder", "input") == "input"  # not a pick of outputs
        ]

    def upload(self, node_id: str) -> list[tuple[str, str, str]]:
        d = self.uploads(node_id)[0]
        if not isinstance(self.inputs(node_id).get(d.name), str):
            return []
        media = "video" if d.options.get("video_upload") else "image"
        media = "audio" if d.options.get("audio_upload") else media
        if media == "image" and set(self.outputs(node_id)) == {"MASK"}:
            media = "mask"
        return [(node_id, d.name, media)]

    def path_loader(self, node_id: str) -> list[tuple[str, str, str]]:
        """A loader taking a file path, offered only when its path is in the input folder."""
        inputs = self.inputs(node_id)
        outputs = set(self.outputs(node_id))
        if not outputs & {"IMAGE", "VIDEO"} or any(is_link(v) for v in inputs.values()):
            return []
        for name in _PATH_INPUTS:
            if self.input_type(node_id, name) == "STRING" and isinstance(inputs.get(name), str):
                if not _in_input_folder(inputs[name]):
                    return []
                media = "video" if "video" in name or "VIDEO" in outputs else "image"
                return [(node_id, name, media)]
        return []
