"""Finding the text box behind a sampler's conditioning, for detection.

From where a sampler's (or guider's) positive or negative comes, back through nodes passing
conditioning on, bundles carrying it (pipes) and nodes joining or showing text, to the input a
person types the prompt into.
"""

from __future__ import annotations

from bot.workflows.detect_reader import HOPS, Reader, Target
from bot.workflows.graph import is_link, sort_key

_ZEROED = frozenset({"ConditioningZeroOut"})
_PLAIN_OUTPUTS = frozenset({"STRING", "INT", "FLOAT", "BOOLEAN", "COMBO"})


def is_negative_name(name: str) -> bool:
    lowered = name.lower()
    return "neg" in lowered or lowered.endswith("-")


def is_system_name(name: str) -> bool:
    """Whether an input is a system prompt (what a language model is told to do with the
    prompt): a setting of the node, never the user's prompt."""
    return "system" in name.lower()


def text_inputs(read: Reader, node_id: str) -> list[str]:
    """The inputs of a node that hold a prompt, if it is a text encoder."""
    if read.known(node_id):
        if "CONDITIONING" not in read.outputs(node_id):
            return []
        return _boxes_held(read, node_id)
    inputs = read.inputs(node_id)
    if "clip" in inputs:
        names = [n for n in inputs if n == "text" or n.startswith("text_") or "prompt" in n]
        return [n for n in names if not is_system_name(n)]
    return []


def _boxes_held(read: Reader, node_id: str) -> list[str]:
    """The multiline text inputs a node has in the graph, in the order ComfyUI lists them."""
    inputs = read.inputs(node_id)
    return [
        d.name
        for d in read.defs(node_id)
        if d.type == "STRING"
        and d.options.get("multiline")
        and d.name in inputs
        and not is_system_name(d.name)
    ]


def encoders(read: Reader, start: tuple[str, int] | None) -> list[Target]:
    """Every prompt input the conditioning at `start` comes from, breadth first."""
    queue = [start] if start is not None else []
    seen: set[tuple[str, int]] = set()
    targets: list[Target] = []
    while queue:
        node_id, slot = queue.pop(0)
        if (node_id, slot) in seen or len(seen) > 500:
            continue
        seen.add((node_id, slot))
        if read.class_of(node_id) in _ZEROED:
            continue
        conditioning = read.conditioning_inputs(node_id)
        linked = [n for n in conditioning if read.source(node_id, n) is not None]
        # A node adding its own text to incoming conditioning (a GLIGEN box) passes the
        # prompt on: the prompt is upstream.
        texts = [] if linked else text_inputs(read, node_id)
        if texts:
            negative_out = is_negative_name(read.output_name(node_id, slot) or "")
            split = [n for n in texts if is_negative_name(n) == negative_out]
            chosen = split if any(is_negative_name(n) for n in texts) else texts
            _extend(targets, [text_target(read, node_id, n) for n in chosen])
            continue
        bundle = None if conditioning else read.bundle_input(node_id)
        source = read.source(node_id, bundle) if bundle else None
        if source is not None:  # a node unpacking a bundle: its positive, or negative, output
            negative = is_negative_name(read.output_name(node_id, slot) or "")
            _extend(targets, list(_bundle_texts(read, source[0], negative, 0)))
            continue
        queue.extend(_follow(read, node_id, slot, conditioning))
    return targets


def _follow(
    read: Reader, node_id: str, slot: int, conditioning: list[str]
) -> list[tuple[str, int]]:
    """Where the conditioning a node gives at `slot` comes from.

    A node passing anything through (an output of any type named like one of its inputs, as
    an execution-order controller's `signal`) passes the conditioning on from that input.
    """
    out_name = read.output_name(node_id, slot) or ""
    outputs = read.outputs(node_id)
    passed = out_name in read.inputs(node_id) and slot < len(outputs) and outputs[slot] == "*"
    if out_name in conditioning or passed:
        follow = [out_name]
    elif not read.known(node_id) and {"positive", "negative"} <= set(conditioning):
        follow = ["negative" if slot == 1 else "positive"]
    else:
        follow = conditioning
    return [found for name in follow if (found := read.source(node_id, name)) is not None]


def _extend(targets: list[Target], found: list[Target | None]) -> None:
    for target in found:
        if target is not None and target not in targets:
            targets.append(target)


def text_target(read: Reader, node_id: str, name: str, depth: int = 0) -> Target | None:
    """The input holding the text: the encoder's own, or a text box's feeding it."""
    value = read.inputs(node_id).get(name)
    if isinstance(value, str):
        return (node_id, name)
    source = read.source(node_id, name)
    if source is None or depth > 10:
        return None
    found = read.literal_target(node_id, name)
    if found is not None and isinstance(read.inputs(found[0]).get(found[1]), str):
        return found
    source_id, slot = source
    # A node giving several texts: the negative one feeds a negative output.
    negative = is_negative_name(read.output_name(source_id, slot) or "")
    if read.known(source_id):
        return _text_box(read, source_id, negative, depth)
    return _unknown_text_box(read, source_id, negative, depth)


def _text_box(read: Reader, node_id: str, negative: bool, depth: int) -> Target | None:
    """The text box a text node of a known class gives its text from.

    Its text inputs are the multiline ones and the linked ones (text joined, shown or
    changed), taken in ComfyUI's order: the first is the prompt. A one-line text beside
    them (a concatenation's `delimiter`, a `separator`) is a setting, not the prompt.
    """
    inputs = read.inputs(node_id)
    strings = [
        d
        for d in read.defs(node_id)
        if d.name in inputs and d.type in ("STRING", "*") and not is_system_name(d.name)
    ]
    boxes = [
        d.name
        for d in strings
        if is_link(inputs[d.name])
        or (d.type == "STRING" and (d.options.get("multiline") or d.options.get("forceInput")))
    ]
    if not any(is_link(v) for v in inputs.values()):
        boxes = boxes or [d.name for d in strings if isinstance(inputs[d.name], str)]
    for name in [n for n in boxes if is_negative_name(n) == negative] or boxes:
        found = text_target(read, node_id, name, depth + 1)
        if found is not None:
            return found
    return None


def _unknown_text_box(read: Reader, node_id: str, negative: bool, depth: int) -> Target | None:
    """The text box of a text node `/object_info` doesn't describe: a literal, or what its
    one link (or its one link named for a text) brings. A system prompt is neither."""
    inputs = {n: v for n, v in read.inputs(node_id).items() if not is_system_name(n)}
    strings = [n for n, v in inputs.items() if isinstance(v, str)]
    strings = [n for n in strings if is_negative_name(n) == negative] or strings
    if strings:
        return (node_id, strings[0])
    linked = [n for n, v in inputs.items() if is_link(v)]
    texts = [n for n in linked if any(w in n.lower() for w in ("prompt", "text", "string"))]
    for names in (linked, texts):
        if len(names) == 1:
            return text_target(read, node_id, names[0], depth + 1)
    return None


def start(read: Reader, node_id: str | None, *, negative: bool) -> tuple[str, int] | None:
    """Where the positive (or negative) conditioning of a sampler or guider comes from."""
    if node_id is None:
        return None
    names = read.conditioning_inputs(node_id)
    if negative:
        chosen = [n for n in names if is_negative_name(n)]
    else:
        chosen = [n for n in names if not is_negative_name(n)]
        chosen.sort(key=lambda n: (n not in ("positive", "conditioning", "cond1"), names.index(n)))
    for name in chosen:
        found = read.source(node_id, name)
        if found is not None:
            return found
    return None


def prompt_targets(read: Reader, holder: str, *, negative: bool) -> list[Target]:
    """The text inputs behind a sampler's (or guider's) positive, or negative, conditioning:
    through its conditioning inputs, or through each bundle bringing it (a pipe; the sampler
    providers of a sampler taking two, as Impact's masked sampling does)."""
    found = start(read, holder, negative=negative)
    if found is not None:
        return encoders(read, found)
    targets: list[Target] = []
    for name in read.bundle_inputs(holder):
        source = read.source(holder, name)
        if source is not None:
            _extend(targets, list(_bundle_texts(read, source[0], negative, 0)))
    return targets


def _bundle_texts(read: Reader, node_id: str, negative: bool, depth: int) -> list[Target]:
    """The text inputs behind what a bundle carries, from the node that made (or edited) it:
    its conditioning inputs, its own prompt boxes (a loader holding the prompt), or the bundle
    it was given."""
    if depth > HOPS:
        return []
    conditioning = [
        found
        for n in read.conditioning_inputs(node_id)
        if is_negative_name(n) == negative and (found := read.source(node_id, n)) is not None
    ]
    if conditioning:
        targets: list[Target] = []
        for each in conditioning:
            _extend(targets, list(encoders(read, each)))
        return targets
    boxes = [n for n in _boxes_held(read, node_id) if is_negative_name(n) == negative]
    if boxes:
        targets = []
        _extend(targets, [text_target(read, node_id, n) for n in boxes])
        return targets
    name = read.bundle_input(node_id)
    source = read.source(node_id, name) if name else None
    return _bundle_texts(read, source[0], negative, depth + 1) if source else []


def direct_prompt(read: Reader, needed: set[str]) -> tuple[str, list[Target]] | None:
    """A node that makes media from a prompt input of its own (no sampler in the graph)."""
    for node_id in sorted(needed, key=sort_key):
        if not read.known(node_id) or not set(read.outputs(node_id)) - _PLAIN_OUTPUTS:
            continue  # text and number nodes don't make anything
        names = [
            d.name
            for d in read.defs(node_id)
            if d.type == "STRING"
            and ("prompt" in d.name or d.name == "text")
            and not is_negative_name(d.name)
            and not is_system_name(d.name)
            and d.name in read.inputs(node_id)
        ]
        targets = [t for n in names if (t := text_target(read, node_id, n)) is not None]
        if targets:
            return node_id, targets[:1]
    return None


def direct_negative(read: Reader, node_id: str) -> list[Target]:
    """The negative prompt input of a node making media from its own prompt."""
    negatives = [
        t
        for n in read.inputs(node_id)
        if is_negative_name(n) and "prompt" in n and not is_system_name(n)
        if (t := text_target(read, node_id, n)) is not None
    ]
    return negatives[:1]
