"""Problems found in a workflow pack, and the error that carries them."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import PurePath

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


class InvalidWorkflow(WorkflowError):
    """A workflow pack has one or more problems; the message lists them all, one a line."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


def display_path(path: PurePath) -> str:
    """Return `directory/file`: enough to find a file, without machine-specific parts."""
    return f"{path.parent.name}/{path.name}" if path.parent.name else path.name
