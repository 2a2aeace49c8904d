"""Finding a graph's parameters when its YAML leaves `params` out.

It reads the graph the way a person would, with `/object_info` telling what each input is:

- A sampler is any node, core or custom, with a seed, steps or noise input and conditioning:
  its own conditioning inputs, a guider, or a bundle carrying it (a pipe: Impact's
  `BASIC_PIPE`, Easy-Use's pipe, Efficiency's SDXL tuple, Impact's sampler providers; a type
  is a bundle when some class unpacks it into conditioning and more, or when every class
  making it makes it from conditioning, a prompt box or another bundle). The first pass is
  preferred: a pass fed by another sampler (a refiner, an upscale, a FaceDetailer working on
  the decoded image) comes after it, whatever it samples with, so a detailer's seed is never
  taken for the image's.
- The prompt is every text a sampler's or guider's positive reaches: back through nodes that
  pass conditioning on (ControlNet, inpaint, area...) or bundle it, to each text encoder (a
  node outputting `CONDITIONING` with a multiline text input, or a loader holding the prompt,
  such as Efficiency's and Easy-Use's), and on to the text box feeding it. Through a node
  joining, showing or changing text (`Text Concatenate`, `StringConcatenate`, `ShowText`), the
  prompt is its first text input, followed to its own box; a one-line text beside it (a
  `delimiter`, a `separator`) is a setting, never the prompt, and so is a system prompt (what
  a prompt enhancer's language model is told). A node passing anything through (an
  execution-order controller) passes the conditioning on. The refiner's encoder gets the
  prompt too, and so does each sampler provider's pipe (Impact's masked sampling). What
  reaches a negative is the negative, never the prompt, whatever the nodes are titled; a
  zeroed conditioning carries no text.
- Seed, steps, cfg, sampler and scheduler come from the sampler (`seed` or `noise_seed`), or
  from the noise (`RandomNoise.noise_seed`), guider, sigmas and sampler nodes it is fed; a
  value held by a primitive node of any class is set there. Ranges come from `/object_info`
  (`SDTurboScheduler` allows 10 steps at most). A later pass making the same picture with the
  same seed is one generation with the first, and is set with it (seed, and steps and cfg where
  it holds the same values): it starts from the same empty latent, or it carries on the first
  pass's latent at a later step (Wan 2.2's low-noise pass). A pass sampling the first one's
  result again from step 0 (a hires fix) keeps its own. A node holding the prompt's text with a
  seed of its own (a wildcard picking its choices) is set with the seed too.
- The size comes from the latent the sampler starts from (any node with a width and a height,
  `empty_latent_width`/`empty_latent_height` on a loader, or the resolution node feeding it;
  through a bundle, the node that made it). A size picked from a list (`1024 x 1024 (square)`,
  `3:4 portrait 896x1152`) is a `size` option over the list's sizes, set where the list is;
  width and height are offered only when ComfyUI uses them (the list says `custom`). Denoise
  is offered when the sampler starts from an encoded image.
- Every loader `/object_info` marks as an upload (images, masks, videos) is an image option.
  A loader taking a file path (VHS's `Load Video (Path)`, WAS's `Image Load`) opens that path
  from ComfyUI's working directory, while an uploaded file is named from ComfyUI's input
  folder (`comfycord/photo.png`): it is offered only when the graph's own path is inside the
  input folder (`input/clip.mp4`), never for a path elsewhere, a folder or a web address.
- With no sampler at all (the online-service nodes), a prompt input on a node that makes the
  images is the prompt, with its negative prompt, seed, width and height.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from bot.workflows.detect_reader import Graph, Reader, Target
from bot.workflows.detect_sizes import size_of
from bot.workflows.detect_text import direct_negative, direct_prompt, prompt_targets
from bot.workflows.graph import is_link
from bot.workflows.nodeinfo import ObjectInfo
from bot.workflows.spec import ParamSpec

NameList = list[tuple[str | None, str]]
_STEPS = (1, 150)
_CFG = (0.0, 30.0)
_SIZE = (64, 2048)
_MEDIA = {
    "image": "The picture to start from",
    "mask": "The mask to use",
    "video": "The video to start from",
    "audio": "The sound to start from",
}


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
        self.read = Reader(graph, object_info)
        self.graph = graph
        self.required: dict[str, ParamSpec] = {}
        self.optional: dict[str, ParamSpec] = {}
        self.used: set[Target] = set()
        self.texts: list[Target] = []

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
        shared: Iterable[Target] = (),
    ) -> None:
        """A number option on `target` (and the `shared` inputs set with it)."""
        if target is None:
            return
        targets = [target, *shared]
        low, high = self.bounds(target, *span)
        default = self.value(target)
        extra: dict[str, Any] = {}
        if kind == "int":
            extra = {"min": int(low), "max": int(high), **_default(default, int, step)}
            if step:
                extra["step"] = step
        else:
            extra = {"min": float(low), "max": float(high), **_default(default, float)}
        self.add(name, _spec(kind, targets, description, **extra), targets)

    def enum(self, name: str, target: Target | None, description: str) -> None:
        if target is not None:
            self.add(name, _spec("enum", [target], description), [target])

    def run(self) -> dict[str, ParamSpec]:
        read = self.read
        needed = read.needed()
        samplers = read.samplers(needed)
        sampler = samplers[0] if samplers else None
        positive, negative = self.prompts(samplers)
        self.texts = positive + negative
        direct: str | None = None
        if sampler is None:
            found = direct_prompt(read, needed)
            if found is not None:
                direct, positive = found
                negative = direct_negative(read, direct)
        if positive:
            spec = _spec("text", positive, "What to draw", required=True)
            self.add("prompt", spec, positive, required=True)
        self.loaders(needed)
        if negative:
            self.add("negative", _spec("text", negative, "What to avoid"), negative)
        self.sampling(samplers, direct)
        return {**self.required, **self.optional}

    def prompts(self, samplers: list[str]) -> tuple[list[Target], list[Target]]:
        """The prompt's and the negative's text inputs, over every pass."""
        positive: list[Target] = []
        negative: list[Target] = []
        for each in samplers:
            holder = self.read.guider(each) or each
            for target in prompt_targets(self.read, holder, negative=False):
                if target not in positive:
                    positive.append(target)
        for each in samplers:
            holder = self.read.guider(each) or each
            for target in prompt_targets(self.read, holder, negative=True):
                if target not in negative and target not in positive:
                    negative.append(target)
        return positive, negative

    def loaders(self, needed: set[str]) -> None:
        counts: dict[str, int] = {}
        for node_id, name, media in self.read.loaders(needed):
            target = (node_id, name)
            if target in self.used:
                continue
            counts[media] = counts.get(media, 0) + 1
            key = media if counts[media] == 1 else f"{media}_{counts[media]}"
            kind = "image" if media == "mask" else media
            spec = _spec(kind, [target], _MEDIA[media], required=True)
            self.add(key, spec, [target], required=True)

    def seed_names(self, owner: str | None) -> list[tuple[str | None, str]]:
        """Where a sampler (or a node making media) may hold its seed, in order."""
        found = self.read.source(owner, "noise")
        noise = found[0] if found else None
        names: list[tuple[str | None, str]] = [
            (owner, "seed"),
            (owner, "noise_seed"),
            (noise, "noise_seed"),
            (noise, "seed"),
        ]
        return names + [(owner, n) for n in self.read.inputs(owner) if "seed" in n]

    def peers(self, samplers: list[str], seed: Target) -> list[str]:
        """The later passes making the same picture as the first (see
        `Reader.same_generation`) with the same seed: one generation, set with one seed,
        steps and cfg."""
        return [
            later
            for later in samplers[1:]
            if self.read.same_generation(samplers[0], later)
            and (each := self.first(self.seed_names(later))) is not None
            and self.value(each) == self.value(seed)
        ]

    def shared(
        self, peers: list[str], target: Target | None, names: Callable[[str], NameList]
    ) -> list[Target]:
        """The inputs of the `peers` holding the value `target` holds, to be set with it."""
        if target is None:
            return []
        found: list[Target] = []
        for later in peers:
            each = self.first(names(later))
            if each is None or each == target or each in found:
                continue
            if self.value(each) == self.value(target):
                found.append(each)
        return found

    def text_seeds(self, seed: Target) -> list[Target]:
        """The seeds of the nodes holding the prompt's text (a wildcard picking its choices by
        a seed of its own): the same seed gives the same text too."""
        found: list[Target] = []
        for node_id in dict.fromkeys(node_id for node_id, _ in self.texts):
            names = [n for n in self.read.inputs(node_id) if "seed" in n]
            each = self.first((node_id, n) for n in names)
            if each is not None and each != seed and each not in found:
                found.append(each)
        return found

    def sampling(self, samplers: list[str], direct: str | None) -> None:
        """Seed, steps, cfg, size, denoise, sampler and scheduler."""
        read = self.read
        sampler = samplers[0] if samplers else None
        source = {n: read.source(sampler, n) for n in ("sigmas", "sampler")}
        sigmas, chooser = (found[0] if found else None for found in source.values())
        seed = self.first(self.seed_names(direct or sampler))
        peers = self.peers(samplers, seed) if seed is not None else []
        if seed is not None:
            seeds = [seed, *self.shared(peers, seed, self.seed_names)]
            seeds += self.text_seeds(seed)
            what = "Same seed and options give the same image"
            self.add("seed", _spec("seed", seeds, what), seeds)
        steps = self.first(self.steps_names(sampler))
        what = "Sampling steps: more is slower and finer"
        shared = self.shared(peers, steps, self.steps_names)
        self.number("steps", steps, "int", _STEPS, what, shared=shared)
        cfg = self.first(self.cfg_names(sampler))
        shared = self.shared(peers, cfg, self.cfg_names)
        self.number("cfg", cfg, "float", _CFG, "How closely to follow the prompt", shared=shared)

        origin = read.latent_origin(sampler) if sampler is not None else None
        size_node = origin[1] if origin is not None and origin[0] == "empty" else direct
        if size_node is not None:
            self.size(size_node)
        if origin is not None and origin[0] == "encode":
            denoise = self.first([(sampler, "denoise"), (sigmas, "denoise")])
            what = "How much to change the image: 0 nothing, 1 everything"
            self.number("denoise", denoise, "float", (0.0, 1.0), what)

        self.enum(
            "sampler",
            self.first([(sampler, "sampler_name"), (chooser, "sampler_name")]),
            "Sampling method",
        )
        self.enum(
            "scheduler",
            self.first([(sampler, "scheduler"), (sigmas, "scheduler")]),
            "Noise schedule",
        )

    def steps_names(self, sampler: str | None) -> NameList:
        found = self.read.source(sampler, "sigmas")
        return [(sampler, "steps"), (found[0] if found else None, "steps")]

    def cfg_names(self, sampler: str | None) -> NameList:
        return [(sampler, "cfg"), (self.read.guider(sampler) if sampler else None, "cfg")]

    def size(self, size_node: str) -> None:
        """Width and height, or the size picked from a list where ComfyUI takes it from one."""
        if self.size_list(size_node):
            return
        pair = self.read.size_inputs(size_node)
        if pair is None:
            return
        targets = [self.first([(size_node, name)]) for name in pair]
        holders = {t[0] for t in targets if t is not None} - {size_node}
        if any(self.size_list(holder) for holder in sorted(holders)):
            return
        for key, target in zip(("width", "height"), targets, strict=True):
            what = f"Image {key} in pixels (a multiple of 8)"
            self.number(key, target, "int", _SIZE, what, step=8)

    def size_list(self, node_id: str) -> bool:
        """Offer `size` when a node's size comes from its list of sizes (not `custom`)."""
        found = self.read.size_list(node_id)
        if found is None:
            return False
        name, choices = found
        value = self.value((node_id, name))
        if is_link(value) or value not in choices or size_of(value) is None:
            return False
        spec = _spec("enum", [(node_id, name)], "Image size", choices=choices, default=value)
        self.add("size", spec, [(node_id, name)])
        return True


def detect_params(graph: Graph, object_info: ObjectInfo | None = None) -> dict[str, ParamSpec]:
    """Find a graph's parameters the way a person would (see the module's docstring).

    Args:
        graph: an API-format graph.
        object_info: ComfyUI's node definitions; with them any node class is understood,
            without them only the core ones detection knows by name.

    Returns:
        Param name -> spec, in option order: `prompt`, the images (`image`, `mask`, `video`,
        numbered from the second on), then `negative`, `seed`, `steps`, `cfg`, `size` (a
        size picked from a list) or `width` and `height`, `denoise`, `sampler`, `scheduler`
        (each only when found). Node references are node ids.
    """
    return _Detector(graph, object_info).run()
