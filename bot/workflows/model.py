"""A loaded workflow: its spec, its API graph and its resolved parameters."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from bot.errors import InvalidValue
from bot.workflows.spec import FILE_TYPES, ParamType, WorkflowSpec


@dataclass(frozen=True)
class Param:
    """One parameter of a loaded workflow, with its targets resolved to node ids.

    Attributes:
        name: the option name (`prompt`, `steps`...).
        type: text, int, float, seed, choice, enum, image, video, audio or bool.
        description: the option's description (never empty, at most 100 characters).
        default: the value used when none is given: the YAML `default`, else the graph's own
            value; None for seeds (random) and images without a default.
        min: smallest accepted number, if limited.
        max: largest accepted number, if limited.
        step: numbers must be a multiple of this, if set.
        max_length: longest accepted text, if limited.
        choices: the labels a member picks from (choice, enum); empty when any value goes.
        targets: the `(node_id, input)` pairs the value is written to. For a choice whose
            choices map inputs, every input the choices set, on every node.
        required: a value must be given.
        choice_values: for a choice, label -> graph value, or label -> {input: value}.
    """

    name: str
    type: ParamType
    description: str
    default: Any = None
    min: int | float | None = None
    max: int | float | None = None
    step: int | float | None = None
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    targets: tuple[tuple[str, str], ...] = ()
    required: bool = False
    choice_values: Mapping[str, Any] = field(default_factory=dict, hash=False)

    @property
    def is_file(self) -> bool:
        """Whether its value is a file (image, video, audio) uploaded to ComfyUI's inputs."""
        return self.type in FILE_TYPES

    @property
    def maps_inputs(self) -> bool:
        """Whether this is a choice whose labels map to several input values."""
        return self.type == "choice" and any(
            isinstance(v, Mapping) for v in self.choice_values.values()
        )


@dataclass(frozen=True)
class Workflow:
    """A workflow pack, loaded and ready to patch.

    The graph is shared: never change it; `patch.apply` returns a patched copy.

    Attributes:
        name: the file stem, also the name members pick it by.
        spec: the validated YAML (with `params` filled in when they were detected).
        graph: the API-format graph.
        params: the parameters in option order.
        source: the YAML file as the user knows it (`workflows/x.yaml`), for messages.
        graph_source: the graph file as the user knows it (`workflows/x.json`).
        detected: the params were detected from the graph rather than listed in YAML.
        repairs: what was changed in the graph file so this ComfyUI accepts it (inputs
            filled with their defaults, legacy values migrated), each in words.
    """

    name: str
    spec: WorkflowSpec = field(hash=False)
    graph: dict[str, Any] = field(hash=False)
    params: tuple[Param, ...]
    source: str = ""
    graph_source: str = ""
    detected: bool = False
    repairs: tuple[str, ...] = ()

    @property
    def title(self) -> str:
        """The workflow's title."""
        return self.spec.title

    def param(self, name: str) -> Param | None:
        """Return the parameter called `name`, or None if the workflow has none."""
        return next((p for p in self.params if p.name == name), None)

    def require_param(self, name: str) -> Param:
        """Return the parameter called `name`.

        Raises:
            InvalidValue: the workflow has no such parameter (the message lists them).
        """
        param = self.param(name)
        if param is None:
            known = ", ".join(p.name for p in self.params) or "none"
            raise InvalidValue(name, f"is not an option of {self.name}; its options are: {known}")
        return param

    @property
    def prompt_param(self) -> Param | None:
        """The first required text parameter (what `/imagine <prompt>` fills), if any."""
        return next((p for p in self.params if p.type == "text" and p.required), None)

    @property
    def seed_param(self) -> Param | None:
        """The first seed parameter, if any."""
        return next((p for p in self.params if p.type == "seed"), None)
