"""Problems found in a workflow pack, and the error that carries them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath
from typing import Any

from bot.errors import WorkflowError


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a workflow pack.

    Attributes:
        file: the file it is in, as the user knows it (`workflows/txt2img.yaml`).
        key: where in the file (`params.steps.max`, `node 3 (KSampler).seed`); may be empty.
        message: what is wrong, in plain words.
        code: a stable word for the kind of problem (`spec`, `unknown_node`,
            `missing_model`...), for programs and tests.
    """

    file: str
    key: str
    message: str
    code: str = "invalid"

    def __str__(self) -> str:
        if self.key:
            return f"{self.file}: {self.key}: {self.message}"
        return f"{self.file}: {self.message}"


@dataclass(frozen=True)
class Repair:
    """One change made to a graph so the ComfyUI that runs it accepts it.

    Attributes:
        node_id: the node changed.
        node: the node as people know it (`3 "Sampler" (KSampler)`).
        class_type: the node's class.
        input: the input changed.
        old: the value the graph held (None when the input was missing).
        new: the value it holds now.
        why: what the change is: `filled`, `realigned` (a value of an export older than the
            node matched to this input by kind), `dropped` (such a value no input takes; input
            empty), or a few words on the legacy value.
    """

    node_id: str
    node: str
    class_type: str
    input: str
    old: Any
    new: Any
    why: str

    def __str__(self) -> str:
        where = f"`{self.class_type}.{self.input}`"
        if self.why == "filled":
            return f"filled {where} with {_shown(self.new)} on node {self.node_id}"
        if self.why == "realigned":
            instead = "" if self.old is None else f" (not {_shown(self.old)}, its place)"
            return (
                f"{where} took {_shown(self.new)} on node {self.node_id}{instead}: the export is "
                "older than the node's inputs, so its values were matched by kind; check it"
            )
        if self.why == "dropped":
            return (
                f"left out {_shown(self.old)} of node {self.node_id}'s saved values: no input "
                f"of `{self.class_type}` takes it now"
            )
        return (
            f"{where} {_shown(self.old)} became {_shown(self.new)} on node {self.node_id}: "
            f"{self.why}"
        )


def _shown(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        text = value if len(value) <= 60 else value[:59] + "…"
        return f"'{text}'"
    if value is None:
        return "nothing"
    text = str(value)
    return text if len(text) <= 60 else text[:59] + "…"


class InvalidWorkflow(WorkflowError):
    """A workflow pack has one or more problems; the message lists them all, one a line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def display_path(path: PurePath) -> str:
    """Return `directory/file`: enough to find a file, without machine-specific parts."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
