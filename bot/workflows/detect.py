"""Finding a graph's parameters when its YAML leaves `params` out.

It reads the graph the way a person would, with `/object_info` telling what each input is:

- A sampler is any node, core or custom, with conditioning inputs (or a guider) and a seed,
  steps or noise input. The first pass is preferred (a refiner or upscale pass comes after).
- The prompt is every text a sampler's or guider's positive reaches: back through nodes that
  pass conditioning on (ControlNet, inpaint, area...) to each text encoder (a node outputting
  `CONDITIONING` with a multiline text input, or a loader holding the prompt, such as
  Efficiency's), and on to a text primitive feeding it. The refiner's encoder gets the prompt
  too. What reaches a negative is the negative, never the prompt, whatever the nodes are
  titled; a zeroed conditioning carries no text.
- Seed, steps, cfg, sampler and scheduler come from the sampler, or from the noise, guider,
  sigmas and sampler nodes it is fed; a value held by a primitive node of any class is set
  there. Ranges come from `/object_info` (`SDTurboScheduler` allows 10 steps at most).
- Width and height come from the latent the sampler starts from (any node with a width and a
  height, or the resolution node feeding it); denoise when it starts from an encoded image.
- Every loader `/object_info` marks as an upload (images, masks, videos), or that takes a file
  path, is an image option.
- With no sampler at all (the online-service nodes), a prompt input on a node that makes the
  images is the prompt, with its negative prompt, seed, width and height.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from bot.workflows import nodeinfo
from bot.workflows.graph import is_link, links, sort_key
from bot.workflows.nodeinfo import InputDef, ObjectInfo
from bot.workflows.spec import ParamSpec

Graph = Mapping[str, Any]
Target = tuple[str, str]

_HOPS = 60
_LATENT_INPUTS = frozenset({"samples", "latent", "latent_image", "samples_from", "samples_to"})
_DRIVERS = ("seed", "noise_seed", "steps", "noise")
_UPLOAD_OPTIONS = ("image_upload", "video_upload", "audio_upload")
_PATH_INPUTS = ("image", "image_path", "path", "file_path", "video", "video_path")
_ZEROED = frozenset({"ConditioningZeroOut"})
_PLAIN_OUTPUTS = frozenset({"STRING", "INT", "FLOAT", "BOOLEAN", "COMBO"})
_STEPS = (1, 150)
_CFG = (0.0, 30.0)
_SIZE = (64, 2048)


class _Reader:
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

    # --- primitives ------------------------------------------------------------------------

    def literal_target(self, node_id: str | None, name: str, depth: int = 0) -> Target | None:
        """Where the value of `node_id.name` is really set.

        A literal input is its own target. A linked one leads to the node holding the value:
        a primitive of any class (a node with no links and one literal), or a node with a
        literal input named like the output it gives (a resolution node's `width`).
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
        return None

    # --- samplers ---------------------------------------------------------------------------

    def is_sampler(self, node_id: str) -> bool:
        inputs = self.inputs(node_id)
        drives = any(n in inputs for n in _DRIVERS) or any("seed" in n for n in inputs)
        if not drives:
            return False
        guided = any(self.is_type(node_id, n, "GUIDER", "guider") for n in inputs)
        conditioned = any(
            self.is_type(node_id, n, "CONDITIONING", "positive", "negative") for n in inputs
        )
        return guided or conditioned

    def guider(self, sampler: str) -> str | None:
        for name in self.inputs(sampler):
            if self.is_type(sampler, name, "GUIDER", "guider"):
                found = self.source(sampler, name)
                if found is not None:
                    return found[0]
        return None

    def samplers(self, needed: set[str]) -> list[str]:
        found = [i for i in self.graph if i in needed and self.is_sampler(i)]
        return sorted(found, key=self.sampler_rank)

    def sampler_rank(self, node_id: str) -> tuple[int, int, tuple[tuple[int, ...], str]]:
        origin = self.latent_origin(node_id)
        second_pass = origin is not None and origin[0] == "sampler"
        has_latent = self.latent_input(node_id) is not None
        return (int(second_pass), int(not has_latent), sort_key(node_id))

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
        """Where a sampler's latent comes from: ("empty"|"encode"|"sampler", node_id)."""
        name = self.latent_input(sampler)
        found = self.source(sampler, name) if name else None
        seen: set[str] = set()
        for _ in range(_HOPS):
            if found is None or found[0] in seen:
                return None
            node_id = found[0]
            seen.add(node_id)
            if self.is_sampler(node_id):
                return ("sampler", node_id)
            if self.size_inputs(node_id) is not None:
                return ("empty", node_id)
            inputs = self.inputs(node_id)
            if is_link(inputs.get("pixels")) or (
                self.known(node_id)
                and "LATENT" in self.outputs(node_id)
                and any(
                    self.input_type(node_id, n) == "IMAGE" and is_link(v) for n, v in inputs.items()
                )
            ):
                return ("encode", node_id)
            name = self.latent_input(node_id)
            if name is None:
                linked = [n for n, _, _ in links(self.graph, node_id)]
                name = linked[0] if linked else None
            found = self.source(node_id, name) if name else None
        return None

    def size_inputs(self, node_id: str) -> tuple[str, str] | None:
        inputs = self.inputs(node_id)
        for width, height in (("width", "height"), ("empty_latent_width", "empty_latent_height")):
            if width in inputs and height in inputs:
                return (width, height)
        return None

    # --- text encoders ----------------------------------------------------------------------

    def text_inputs(self, node_id: str) -> list[str]:
        """The inputs of a node that hold a prompt, if it is a text encoder."""
        if self.known(node_id):
            if "CONDITIONING" not in self.outputs(node_id):
                return []
            return [
                d.name
                for d in self.defs(node_id)
                if d.type == "STRING"
                and d.options.get("multiline")
                and d.name in self.inputs(node_id)
            ]
        inputs = self.inputs(node_id)
        if "clip" in inputs:
            return [n for n in inputs if n == "text" or n.startswith("text_") or "prompt" in n]
        return []

    def encoders(self, start: tuple[str, int] | None) -> list[Target]:
        """Every prompt input the conditioning at `start` comes from, breadth first."""
        queue = [start] if start is not None else []
        seen: set[tuple[str, int]] = set()
        targets: list[Target] = []
        while queue:
            node_id, slot = queue.pop(0)
            if (node_id, slot) in seen or len(seen) > 500:
                continue
            seen.add((node_id, slot))
            if self.class_of(node_id) in _ZEROED:
                continue
            conditioning = self.conditioning_inputs(node_id)
            linked = [n for n in conditioning if self.source(node_id, n) is not None]
            # A node adding its own text to incoming conditioning (a GLIGEN box) passes the
            # prompt on: the prompt is upstream.
            texts = [] if linked else self.text_inputs(node_id)
            if texts:
                negative_out = self.is_negative_name(self.output_name(node_id, slot) or "")
                split = [n for n in texts if self.is_negative_name(n) == negative_out]
                chosen = split if any(self.is_negative_name(n) for n in texts) else texts
                for name in chosen:
                    target = self.text_target(node_id, name)
                    if target is not None and target not in targets:
                        targets.append(target)
                continue
            out_name = self.output_name(node_id, slot)
            if out_name in conditioning:
                follow = [out_name]
            elif not self.known(node_id) and {"positive", "negative"} <= set(conditioning):
                follow = ["negative" if slot == 1 else "positive"]
            else:
                follow = conditioning
            for name in follow:
                found = self.source(node_id, name)
                if found is not None:
                    queue.append(found)
        return targets

    @staticmethod
    def is_negative_name(name: str) -> bool:
        lowered = name.lower()
        return "neg" in lowered or lowered.endswith("-")

    def text_target(self, node_id: str, name: str, depth: int = 0) -> Target | None:
        """The input holding the text: the encoder's own, or a text node's feeding it."""
        value = self.inputs(node_id).get(name)
        if isinstance(value, str):
            return (node_id, name)
        source = self.source(node_id, name)
        if source is None or depth > 10:
            return None
        found = self.literal_target(node_id, name)
        if found is not None and isinstance(self.inputs(found[0]).get(found[1]), str):
            return found
        source_id, slot = source
        strings = [
            n
            for n, v in self.inputs(source_id).items()
            if isinstance(v, str) and self.input_type(source_id, n) in ("STRING", None)
        ]
        # A node giving several texts: the negative one feeds a negative output.
        negative_out = self.is_negative_name(self.output_name(source_id, slot) or "")
        strings = [n for n in strings if self.is_negative_name(n) == negative_out] or strings
        multiline = [
            n for n in strings if (d := self.input_def(source_id, n)) and d.options.get("multiline")
        ]
        if multiline or strings:
            return (source_id, (multiline or strings)[0])
        linked = [n for n, v in self.inputs(source_id).items() if is_link(v)]
        if len(linked) == 1:
            return self.text_target(source_id, linked[0], depth + 1)
        return None

    def start(self, node_id: str | None, *, negative: bool) -> tuple[str, int] | None:
        """Where the positive (or negative) conditioning of a sampler or guider comes from."""
        if node_id is None:
            return None
        names = self.conditioning_inputs(node_id)
        if negative:
            chosen = [n for n in names if self.is_negative_name(n)]
        else:
            chosen = [n for n in names if not self.is_negative_name(n)]
            chosen.sort(
                key=lambda n: (n not in ("positive", "conditioning", "cond1"), names.index(n))
            )
        for name in chosen:
            found = self.source(node_id, name)
            if found is not None:
                return found
        return None

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
        stack = list(outputs)
        while stack:
            node_id = stack.pop()
            if node_id in seen or node_id not in self.graph:
                continue
            seen.add(node_id)
            stack.extend(source for _, source, _ in links(self.graph, node_id))
        return seen

    def loaders(self, needed: set[str]) -> list[tuple[str, str, str]]:
        """`(node_id, input, kind)` for each upload or file-path loader, kind image, mask,
        video or audio."""
        found = []
        for node_id in sorted(needed, key=sort_key):
            kind = self.class_of(node_id)
            inputs = self.inputs(node_id)
            if not self.known(node_id):
                if kind in ("LoadImage", "LoadImageMask") and isinstance(inputs.get("image"), str):
                    found.append((node_id, "image", "mask" if kind == "LoadImageMask" else "image"))
                continue
            uploads = [
                d
                for d in self.defs(node_id)
                if any(d.options.get(o) for o in _UPLOAD_OPTIONS)
                and d.options.get("image_folder", "input") == "input"  # not a pick of outputs
            ]
            outputs = set(self.outputs(node_id))
            if uploads:
                d = uploads[0]
                if isinstance(inputs.get(d.name), str):
                    media = "video" if d.options.get("video_upload") else "image"
                    media = "audio" if d.options.get("audio_upload") else media
                    if media == "image" and outputs == {"MASK"}:
                        media = "mask"
                    found.append((node_id, d.name, media))
                continue
            if outputs & {"IMAGE", "VIDEO"} and not any(is_link(v) for v in inputs.values()):
                for name in _PATH_INPUTS:
                    if self.input_type(node_id, name) == "STRING" and isinstance(
                        inputs.get(name), str
                    ):
                        media = "video" if "video" in name or "VIDEO" in outputs else "image"
                        found.append((node_id, name, media))
                        break
        return found

    def direct_prompt(self, needed: set[str]) -> tuple[str, list[Target]] | None:
        """A node that makes media from a prompt input of its own (no sampler in the graph)."""
        for node_id in sorted(needed, key=sort_key):
            if not self.known(node_id) or not set(self.outputs(node_id)) - _PLAIN_OUTPUTS:
                continue  # text and number nodes don't make anything
            names = [
                d.name
                for d in self.defs(node_id)
                if d.type == "STRING"
                and ("prompt" in d.name or d.name == "text")
                and not self.is_negative_name(d.name)
                and d.name in self.inputs(node_id)
            ]
            targets = [t for n in names if (t := self.text_target(node_id, n)) is not None]
            if targets:
                return node_id, targets[:1]
        return None


def _widen(value: Any, low: float, high: float) -> tuple[float, float]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (min(low, value), max(high, value))
    return (low, high)


def _spec(kind: str, targets: list[Target], description: str, **extra: Any) -> ParamSpec:
    where: dict[str, Any]
    if len(targets) == 1:
        where = {"node": targets[0][0], "input": targets[0][1]}
    else:
        where = {"targets": [{"node": n, "input": i} for n, i in targets]}
    return ParamSpec.model_validate({"type": kind, "description": description, **where, **extra})


def _default(value: Any, kind: type[int] | type[float], step: int | None = None) -> dict[str, Any]:
    """`{"default": value}` when the graph's value fits the param, else nothing."""
    if not isinstance(value, int | float) or isinstance(value, bool):
        return {}
    if kind is int and (value != int(value) or (step and int(value) % step)):
        return {}
    return {"default": kind(value)}


class _Detector:
    def __init__(self, graph: Graph, object_info: ObjectInfo | None) -> None:
        self.read = _Reader(graph, object_info)
        self.graph = graph
        self.required: dict[str, ParamSpec] = {}
        self.optional: dict[str, ParamSpec] = {}
        self.used: set[Target] = set()

    def first(self, candidates: Iterable[tuple[str | None, str]]) -> Target | None:
        for node_id, name in candidates:
            found = self.read.literal_target(node_id, name)
            if found is not None and found not in self.used:
                return found
        return None

    def value(self, target: Target) -> Any:
        return self.graph[target[0]]["inputs"].get(target[1])

    def bounds(self, target: Target, low: float, high: float) -> tuple[float, float]:
        definition = self.read.input_def(*target)
        if definition is not None:
            if definition.minimum is not None:
                low = max(low, definition.minimum)
            if definition.maximum is not None:
                high = min(high, definition.maximum)
        return _widen(self.value(target), low, high)

    def add(
        self, name: str, spec: ParamSpec, targets: Iterable[Target], *, required: bool = False
    ) -> None:
        (self.required if required else self.optional)[name] = spec
        self.used.update(targets)

    def number(
        self,
        name: str,
        target: Target | None,
        kind: str,
        span: tuple[float, float],
        description: str,
        step: int | None = None,
    ) -> None:
        if target is None:
            return
        low, high = self.bounds(target, *span)
        default = self.value(target)
        extra: dict[str, Any] = {}
        if kind == "int":
            extra = {"min": int(low), "max": int(high), **_default(default, int, step)}
            if step:
                extra["step"] = step
        else:
            extra = {"min": float(low), "max": float(high), **_default(default, float)}
        self.add(name, _spec(kind, [target], description, **extra), [target])

    def run(self) -> dict[str, ParamSpec]:
        read = self.read
        needed = read.needed()
        samplers = read.samplers(needed)
        sampler = samplers[0] if samplers else None
        guider = read.guider(sampler) if sampler else None

        positive: list[Target] = []
        negative: list[Target] = []
        for each in samplers:
            holder = read.guider(each) or each
            for target in read.encoders(read.start(holder, negative=False)):
                if target not in positive:
                    positive.append(target)
        for each in samplers:
            holder = read.guider(each) or each
            for target in read.encoders(read.start(holder, negative=True)):
                if target not in negative and target not in positive:
                    negative.append(target)

        direct: str | None = None
        if sampler is None:
            found = read.direct_prompt(needed)
            if found is not None:
                direct, positive = found
                negatives = [
                    t
                    for n in read.inputs(direct)
                    if read.is_negative_name(n) and "prompt" in n
                    if (t := read.text_target(direct, n)) is not None
                ]
                negative = negatives[:1]
        if positive:
            self.add(
                "prompt",
                _spec("text", positive, "What to draw", required=True),
                positive,
                required=True,
            )

        counts: dict[str, int] = {}
        for node_id, name, media in read.loaders(needed):
            target = (node_id, name)
            if target in self.used:
                continue
            counts[media] = counts.get(media, 0) + 1
            key = media if counts[media] == 1 else f"{media}_{counts[media]}"
            what = {
                "image": "The picture to start from",
                "mask": "The mask to use",
                "video": "The video to start from",
                "audio": "The sound to start from",
            }[media]
            kind = "image" if media == "mask" else media
            self.add(key, _spec(kind, [target], what, required=True), [target], required=True)

        if negative:
            self.add("negative", _spec("text", negative, "What to avoid"), negative)

        noise = read.source(sampler, "noise")
        noise_id = noise[0] if noise else None
        sigmas = read.source(sampler, "sigmas")
        sigmas_id = sigmas[0] if sigmas else None
        chooser = read.source(sampler, "sampler")
        chooser_id = chooser[0] if chooser else None
        owner = direct or sampler
        seed_names: list[tuple[str | None, str]] = [
            (owner, "seed"),
            (owner, "noise_seed"),
            (noise_id, "noise_seed"),
            (noise_id, "seed"),
        ]
        seed_names += [(owner, n) for n in read.inputs(owner) if "seed" in n]
        seed = self.first(seed_names)
        if seed is not None:
            self.add(
                "seed", _spec("seed", [seed], "Same seed and options give the same image"), [seed]
            )

        steps = self.first([(sampler, "steps"), (sigmas_id, "steps")])
        self.number("steps", steps, "int", _STEPS, "Sampling steps: more is slower and finer")
        cfg = self.first([(sampler, "cfg"), (guider, "cfg")])
        self.number("cfg", cfg, "float", _CFG, "How closely to follow the prompt")

        origin = read.latent_origin(sampler) if sampler is not None else None
        size_node = origin[1] if origin is not None and origin[0] == "empty" else direct
        size = read.size_inputs(size_node) if size_node is not None else None
        if size_node is not None and size is not None:
            for key, name in zip(("width", "height"), size, strict=True):
                found_size = self.first([(size_node, name)])
                if found_size is not None:
                    self.number(
                        key,
                        found_size,
                        "int",
                        _SIZE,
                        f"Image {key} in pixels (a multiple of 8)",
                        step=8,
                    )
        if origin is not None and origin[0] == "encode":
            denoise = self.first([(sampler, "denoise"), (sigmas_id, "denoise")])
            self.number(
                "denoise",
                denoise,
                "float",
                (0.0, 1.0),
                "How much to change the image: 0 nothing, 1 everything",
            )

        sampler_name = self.first([(sampler, "sampler_name"), (chooser_id, "sampler_name")])
        if sampler_name is not None:
            self.add("sampler", _spec("enum", [sampler_name], "Sampling method"), [sampler_name])
        scheduler = self.first([(sampler, "scheduler"), (sigmas_id, "scheduler")])
        if scheduler is not None:
            self.add("scheduler", _spec("enum", [scheduler], "Noise schedule"), [scheduler])
        return {**self.required, **self.optional}


def detect_params(graph: Graph, object_info: ObjectInfo | None = None) -> dict[str, ParamSpec]:
    """Find a graph's parameters the way a person would (see the module's docstring).

    Args:
        graph: an API-format graph.
        object_info: ComfyUI's node definitions; with them any node class is understood,
            without them only the core ones detection knows by name.

    Returns:
        Param name -> spec, in option order: `prompt`, the images (`image`, `mask`, `video`,
        numbered from the second on), then `negative`, `seed`, `steps`, `cfg`, `width`,
        `height`, `denoise`, `sampler`, `scheduler` (each only when found). Node references
        are node ids.
    """
    return _Detector(graph, object_info).run()
