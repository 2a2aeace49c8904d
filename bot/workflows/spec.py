"""The YAML file beside each workflow graph, as pydantic models.

A pack is `workflows/NAME.json` (the graph) plus `workflows/NAME.yaml`::

    title: SD 1.5 text to image
    graph: sd15-txt2img.json
    params:
      prompt: {type: text, node: Positive, input: text, required: true}
      size:   {type: choice, node: Empty Latent Image,
               choices: {square: {width: 512, height: 512}}}

`parse_spec` turns the parsed YAML into a `WorkflowSpec`, or raises `InvalidWorkflow` naming the
file, key and problem of every mistake at once. `json_schema()` is the schema published as
`workflows/workflow.schema.json` for editors; regenerate it with
`python -m bot.workflows > workflows/workflow.schema.json`.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_core import ErrorDetails

from bot.workflows.problems import InvalidWorkflow, Problem, display_path

NAME_RE = re.compile(r"^[a-z0-9_-]{1,32}$")
"""A Discord option or command name, as comfycord allows it (and a workflow name)."""

MAX_PARAMS = 25  # Discord allows 25 options per command
MAX_CHOICES = 25  # and 25 fixed choices per option
MAX_TEXT_LENGTH = 6000  # and strings of up to 6000 characters

ParamType = Literal[
    "text", "int", "float", "seed", "choice", "enum", "image", "video", "audio", "bool"
]
#: The param types whose value is a file (an attachment, an upload), sent to ComfyUI's input folder.
FILE_TYPES = frozenset({"image", "video", "audio"})
Scalar = str | int | float | bool
NodeRef = str | int
Name = Annotated[str, StringConstraints(pattern=NAME_RE.pattern)]

NUMERIC_TYPES = ("int", "float", "seed")
INTEGER_TYPES = ("int", "seed")


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def choice_label(value: Scalar) -> str:
    """Return the label a user sees for a plain choice value (`true`, `512`, `euler`)."""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Target(_Model):
    """One input a parameter sets: `{node: KSampler, input: seed}`."""

    node: NodeRef = Field(description="Node id, `_meta.title`, or a class_type found once.")
    input: str | None = Field(
        None,
        min_length=1,
        description="Input name on that node. Leave out for a choice whose choices map inputs.",
    )


class ParamSpec(_Model):
    """One parameter: a slash-command option and the graph inputs it sets."""

    type: ParamType = Field(description="How the value is asked for and checked.")
    node: NodeRef | None = Field(
        None, description="Node id, `_meta.title`, or a class_type that occurs once."
    )
    input: str | None = Field(None, min_length=1, description="The input on `node` to set.")
    inputs: list[Annotated[str, StringConstraints(min_length=1)]] | None = Field(
        None, min_length=1, description="Several inputs on `node` that all get the value."
    )
    targets: list[Target] | None = Field(
        None, min_length=1, description="Inputs on several nodes: a list of {node, input}."
    )
    default: Scalar | None = Field(
        None, description="Value used when the member gives none (else the graph's own value)."
    )
    min: int | float | None = Field(None, description="Smallest accepted value (int/float/seed).")
    max: int | float | None = Field(None, description="Largest accepted value (int/float/seed).")
    step: int | float | None = Field(
        None, gt=0, description="Values must be a multiple of this (e.g. 8 for image sizes)."
    )
    max_length: int | None = Field(
        None, ge=1, le=MAX_TEXT_LENGTH, description="Longest accepted text (text)."
    )
    choices: list[Scalar] | dict[str, dict[str, Scalar]] | None = Field(
        None,
        description=(
            "choice: a list of values, or a mapping label -> {input: value, ...}. "
            "enum: the allowed subset of ComfyUI's list."
        ),
    )
    required: bool = Field(False, description="The member must give a value.")
    description: str = Field(
        "", max_length=100, description="Shown as the slash option's description (100 chars)."
    )

    @field_validator("choices")
    @classmethod
    def _choices_not_empty(
        cls, value: list[Scalar] | dict[str, dict[str, Scalar]] | None
    ) -> list[Scalar] | dict[str, dict[str, Scalar]] | None:
        if value is not None and not value:
            raise ValueError("must list at least one choice")
        return value

    @property
    def is_mapping_choice(self) -> bool:
        """Whether this is a `choice` whose choices map labels to input values."""
        return self.type == "choice" and isinstance(self.choices, dict)

    def labels(self) -> list[str]:
        """Return the choice labels, in order (empty when there are no choices)."""
        if isinstance(self.choices, dict):
            return list(self.choices)
        if isinstance(self.choices, list):
            return [choice_label(v) for v in self.choices]
        return []

    @model_validator(mode="after")
    def _check(self) -> ParamSpec:
        problems = [*self._target_problems(), *self._range_problems(), *self._choice_problems()]
        problems.extend(self._default_problems())
        if problems:
            raise ValueError("; ".join(problems))
        return self

    def _target_problems(self) -> list[str]:
        mapping = self.is_mapping_choice
        if self.node is not None and self.targets is not None:
            return ["set `node` (with `input`) or `targets`, not both"]
        if self.node is None and self.targets is None:
            return ["say which node it sets: `node` and `input`, or `targets`"]
        if self.input is not None and self.inputs is not None:
            return ["set `input` or `inputs`, not both"]
        if self.targets is not None:
            if self.input is not None or self.inputs is not None:
                return ["with `targets`, give each target its own `input`"]
            if mapping and any(t.input is not None for t in self.targets):
                return ["a choice whose choices map inputs takes `targets` without `input`"]
            if not mapping and any(t.input is None for t in self.targets):
                return ["every target needs an `input`"]
            return []
        if mapping and (self.input is not None or self.inputs is not None):
            return ["a choice whose choices map inputs names them there; drop `input`/`inputs`"]
        if not mapping and self.input is None and self.inputs is None:
            return ["say which input of the node it sets: `input` (or `inputs`)"]
        return []

    def _range_problems(self) -> list[str]:
        problems: list[str] = []
        numeric = {"min": self.min, "max": self.max, "step": self.step}
        given = [k for k, v in numeric.items() if v is not None]
        if given and self.type not in NUMERIC_TYPES:
            problems.append(f"`{given[0]}` only applies to int, float and seed params")
            return problems
        if self.type in INTEGER_TYPES:
            for key, value in numeric.items():
                if value is not None and not _is_int(value):
                    problems.append(f"`{key}` must be a whole number for a {self.type} param")
        for key, value in numeric.items():
            if isinstance(value, float) and not math.isfinite(value):
                problems.append(f"`{key}` must be a finite number")
        if self.min is not None and self.max is not None and self.min > self.max:
            problems.append(f"min ({self.min}) is above max ({self.max})")
        if self.type == "seed" and self.min is not None and self.min < 0:
            problems.append("a seed can't be negative")
        if self.max_length is not None and self.type != "text":
            problems.append("`max_length` only applies to text params")
        return problems

    def _choice_problems(self) -> list[str]:
        if self.choices is None:
            return ["a choice param needs `choices`"] if self.type == "choice" else []
        if self.type not in ("choice", "enum"):
            return ["`choices` only applies to choice and enum params"]
        if self.type == "enum" and not (
            isinstance(self.choices, list) and all(isinstance(c, str) for c in self.choices)
        ):
            return ["an enum's `choices` is a list of the allowed names"]
        problems: list[str] = []
        labels = self.labels()
        if self.type == "choice" and len(labels) > MAX_CHOICES:
            problems.append(f"Discord allows at most {MAX_CHOICES} choices; use an enum instead")
        if len(set(labels)) != len(labels):
            problems.append("choices must be different from each other")
        problems.extend(
            f"choice label '{label[:20]}...' is longer than 100 characters"
            for label in labels
            if not 1 <= len(label) <= 100
        )
        if isinstance(self.choices, dict):
            first_keys: set[str] | None = None
            for label, inputs in self.choices.items():
                if not inputs:
                    problems.append(f"choice '{label}' sets no inputs")
                    continue
                if first_keys is None:
                    first_keys = set(inputs)
                elif set(inputs) != first_keys:
                    problems.append(
                        f"choice '{label}' sets {', '.join(sorted(inputs))} but the first "
                        f"choice sets {', '.join(sorted(first_keys))}; every choice must set "
                        "the same inputs"
                    )
        return problems

    def _default_problems(self) -> list[str]:
        value = self.default
        if value is None:
            return []
        if self.required:
            return ["a required param can't have a default; drop one of them"]
        expected = {
            "text": (isinstance(value, str), "text"),
            "image": (isinstance(value, str), "an image file name"),
            "video": (isinstance(value, str), "a video file name"),
            "audio": (isinstance(value, str), "an audio file name"),
            "enum": (isinstance(value, str), "a name from the list"),
            "bool": (isinstance(value, bool), "true or false"),
            "int": (_is_int(value), "a whole number"),
            "seed": (_is_int(value) and int(value) >= 0, "a whole number of 0 or more"),
            "float": (_is_number(value), "a number"),
            "choice": (True, ""),
        }
        ok, what = expected[self.type]
        if not ok:
            return [f"default must be {what}"]
        problems: list[str] = []
        if self.type in NUMERIC_TYPES and _is_number(value):
            number = float(value)
            if self.min is not None and number < self.min:
                problems.append(f"default ({value}) is below min ({self.min})")
            if self.max is not None and number > self.max:
                problems.append(f"default ({value}) is above max ({self.max})")
            if self.step is not None and not _is_multiple(number, float(self.step)):
                problems.append(f"default ({value}) is not a multiple of step ({self.step})")
        if (
            self.type == "text"
            and self.max_length is not None
            and len(str(value)) > self.max_length
        ):
            problems.append(f"default is longer than max_length ({self.max_length})")
        labels = self.labels()
        if self.type == "choice" and choice_label(value) not in labels:
            problems.append(f"default '{value}' is not one of the choices: {', '.join(labels)}")
        if self.type == "enum" and labels and value not in labels:
            problems.append(f"default '{value}' is not one of the choices: {', '.join(labels)}")
        return problems


def _is_multiple(value: float, step: float) -> bool:
    ratio = value / step
    return math.isclose(ratio, round(ratio), abs_tol=1e-9)


def is_plain_file_name(name: str) -> bool:
    """Whether `name` is a file name with no directory part (`a.json`, not `../a.json`)."""
    return (
        bool(name)
        and name not in (".", "..")
        and "/" not in name
        and "\\" not in name
        and ":" not in name
        and "\x00" not in name
        and not name.startswith("~")
    )


ResultKind = Literal["image", "animation", "video", "audio"]


#: The kinds of result a follow-up's file param can be given (an animation's first frame is an
#: image; a video loader reads animated images too).
FOLLOWUP_TAKES: dict[str, frozenset[str]] = {
    "image": frozenset({"image", "animation"}),
    "video": frozenset({"video", "animation"}),
    "audio": frozenset({"audio"}),
}


def _still_images() -> list[ResultKind]:
    return ["image"]


class FollowupSpec(_Model):
    """Offer this workflow on images: a button under every result, and Apps → LABEL on any
    message with an image. `param` is the image parameter the chosen image goes to."""

    label: str = Field(
        min_length=1, max_length=32, description="The button and Apps-menu name, e.g. Upscale."
    )
    emoji: str | None = Field(None, min_length=1, max_length=32, description="Shown on buttons.")
    param: Name = Field(description="The image parameter that gets the image.")
    accepts: list[ResultKind] = Field(
        default_factory=_still_images,
        min_length=1,
        description="What kinds of result it is offered on (still images by default; an "
        "image-to-video follow-up such as Animate takes images too).",
    )


class WorkflowSpec(_Model):
    """A workflow pack's YAML file."""

    title: str = Field(min_length=1, max_length=100, description="Shown in lists and embeds.")
    description: str = Field("", description="What it makes; the command's description.")
    graph: str | None = Field(
        None,
        description="The graph's file name in the same folder (default: NAME.json).",
    )
    command: Name | None = Field(
        None, description="Also expose this workflow as its own slash command, e.g. `img2img`."
    )
    nsfw: bool = Field(False, description="Only offer it in age-restricted channels.")
    followup: FollowupSpec | None = Field(
        None, description="Offer it on every result and on any image (e.g. an upscale)."
    )
    params: dict[Name, ParamSpec] | None = Field(
        None,
        max_length=MAX_PARAMS,
        description="Slash-command options, in order. Leave out to detect them from the graph.",
    )

    @field_validator("graph")
    @classmethod
    def _plain_file_name(cls, value: str | None) -> str | None:
        if value is not None and not is_plain_file_name(value):
            raise ValueError(
                "must be a plain file name in the workflows folder (no folders, no `..`)"
            )
        return value

    @model_validator(mode="after")
    def _required_first(self) -> WorkflowSpec:
        seen_optional: str | None = None
        for name, param in (self.params or {}).items():
            if not param.required:
                seen_optional = seen_optional or name
            elif seen_optional is not None:
                raise ValueError(
                    f"params.{name}: required params must come before optional ones "
                    f"(Discord lists them first); move it above `{seen_optional}`"
                )
        return self

    @model_validator(mode="after")
    def _followup_takes_an_image(self) -> WorkflowSpec:
        if self.followup is None or self.params is None:
            return self  # detected params are checked once the graph is read
        param = self.params.get(self.followup.param)
        if param is None:
            raise ValueError(
                f"followup.param: `{self.followup.param}` is not one of the params "
                f"({', '.join(self.params)})"
            )
        if param.type not in FILE_TYPES:
            raise ValueError(
                f"followup.param: `{self.followup.param}` is a {param.type} param; a follow-up "
                "needs an image, video or audio param"
            )
        wrong = [k for k in self.followup.accepts if k not in FOLLOWUP_TAKES[param.type]]
        if wrong:
            raise ValueError(
                f"followup.accepts: a {param.type} param cannot take {', '.join(wrong)} results "
                f"(it takes {', '.join(sorted(FOLLOWUP_TAKES[param.type]))})"
            )
        return self

    def graph_file(self, name: str) -> str:
        """Return the graph's file name for the pack called `name`."""
        return self.graph or f"{name}.json"


# --- turning pydantic's errors into problems ---------------------------------------------------

_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "none", "Target", "ParamSpec"})


def _is_tag(item: object, previous: object) -> bool:
    """Whether a loc item names a union member rather than a key (pydantic adds those)."""
    if not isinstance(item, str) or previous == "params":
        return False
    if isinstance(previous, str) and previous.startswith("dict["):
        return False  # a mapping key (a choice label)
    return item in _TYPE_TAGS or ("[" in item and item != "[key]")


def _key(loc: tuple[int | str, ...]) -> tuple[str, str | None]:
    """Return the dotted key of a loc, and the key of its first union (None if there is none)."""
    parts: list[str] = []
    union: str | None = None
    previous: object = None
    for item in loc:
        if _is_tag(item, previous):
            if union is None:
                union = ".".join(parts)
        elif item != "[key]":
            parts.append(str(item))
        previous = item
    return ".".join(parts), union


_ALLOWED_KEYS = {
    "workflow": list(WorkflowSpec.model_fields),
    "followup": list(FollowupSpec.model_fields),
    "param": list(ParamSpec.model_fields),
    "target": list(Target.model_fields),
}


def _message(error: ErrorDetails, key: str) -> str:
    kind = error["type"]
    if kind == "extra_forbidden":
        depth = key.count(".")
        where = "workflow" if depth == 0 else "param" if depth == 2 else "target"
        if key.startswith("followup."):
            where = "followup"
        return f"unknown key; allowed here: {', '.join(_ALLOWED_KEYS[where])}"
    if kind == "string_pattern_mismatch" and error["loc"][-1] == "[key]":
        return (
            f"'{error['input']}' is not a valid param name: use 1-32 lowercase letters, "
            "digits, '-' or '_'"
        )
    if kind == "string_pattern_mismatch":
        return "use 1-32 lowercase letters, digits, '-' or '_'"
    if kind == "missing":
        return "is required"
    message = error["msg"]
    return message.removeprefix("Value error, ")


def problems_from_error(error: ValidationError, source: str) -> list[Problem]:
    """Turn a pydantic error into one problem per distinct key.

    Args:
        error: what `WorkflowSpec.model_validate` raised.
        source: the file as the user knows it (`workflows/txt2img.yaml`).
    """
    errors = [(item, *_key(item["loc"])) for item in error.errors(include_url=False)]
    # A value that fits no member of a union fails once per member: keep the member that got
    # furthest (the deepest keys), and one message per key.
    deepest: dict[str, int] = {}
    for _, key, union in errors:
        if union is not None:
            deepest[union] = max(deepest.get(union, 0), key.count("."))
    problems: list[Problem] = []
    seen: set[str] = set()
    for item, key, union in errors:
        if union is not None and (key.count(".") < deepest[union] or key in seen):
            continue
        seen.add(key)
        message = _message(item, key)
        if message.startswith(("params.", "followup.")) and ": " in message:
            key, message = message.split(": ", 1)  # from a whole-spec check
        problems.append(Problem(source, key, message, "spec"))
    return problems


def parse_spec(data: object, source: str) -> WorkflowSpec:
    """Validate parsed YAML as a workflow spec.

    Args:
        data: what `yaml.safe_load` returned.
        source: the file as the user knows it, for messages.

    Raises:
        InvalidWorkflow: listing every problem, each naming the file and key.
    """
    if not isinstance(data, dict):
        kind = "empty" if data is None else f"a {type(data).__name__}"
        raise InvalidWorkflow(
            [Problem(source, "", f"must be a mapping of keys (title, params...), not {kind}")]
        )
    try:
        return WorkflowSpec.model_validate(data)
    except ValidationError as exc:
        raise InvalidWorkflow(problems_from_error(exc, source)) from None


def load_spec(path: Path) -> WorkflowSpec:
    """Read and validate a workflow's YAML file.

    Raises:
        InvalidWorkflow: the file can't be read, isn't YAML, or breaks the schema.
    """
    source = display_path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise InvalidWorkflow([Problem(source, "", f"can't be read: {exc}", "io")]) from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}" if mark is not None else ""
        reason = getattr(exc, "problem", None) or str(exc)
        raise InvalidWorkflow(
            [Problem(source, where, f"not valid YAML: {reason}", "yaml")]
        ) from None
    return parse_spec(data, source)


def json_schema() -> dict[str, Any]:
    """Return the JSON Schema of a workflow YAML file (published for editors)."""
    schema = WorkflowSpec.model_json_schema()
    params = schema["properties"]["params"]["anyOf"][0]
    params["additionalProperties"] = False  # names outside the pattern are errors
    return {
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$id": "workflow.schema.json",
        **schema,
    }


def json_schema_text() -> str:
    """Return the JSON Schema as the text of `workflows/workflow.schema.json`."""
    return json.dumps(json_schema(), indent=2, ensure_ascii=False) + "\n"
