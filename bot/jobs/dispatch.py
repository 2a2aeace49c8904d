"""Which backend may run a job: what its patched prompt needs, and who has it.

A job can run on a backend that has every node class its prompt uses and every model file it
names. A model file no backend of the pool has may be replaced by one the backend has
(``comfyui.substitute_missing_models``), unless a member chose it: a backend that has the file
is always preferred to a substitution. The runner asks; this module only answers.

With a single backend nothing is filtered or refused here: every job goes to that ComfyUI,
whose own answer (e.g. "checkpoint … is not installed") the member then sees, as before pools.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from bot.comfy.pool import Backend, Pool
from bot.workflows import nodeinfo


@dataclass(frozen=True)
class ModelNeed:
    """A model file one input of the prompt names."""

    node_id: str
    class_type: str
    input: str
    file: str
    explicit: bool  # set by a member's option: never substituted


@dataclass(frozen=True)
class Needs:
    """What a patched prompt needs from the backend that runs it."""

    nodes: frozenset[str]
    models: tuple[ModelNeed, ...] = ()

    @classmethod
    def of(cls, prompt: Mapping[str, Any], explicit: Collection[tuple[str, str]] = ()) -> Needs:
        """The node classes and model files of an API-format prompt.

        Args:
            prompt: the patched prompt.
            explicit: (node id, input) pairs a parameter set (their models are never replaced).
        """
        nodes = set()
        models = []
        for node_id, node in prompt.items():
            if not isinstance(node, Mapping):
                continue
            class_type = str(node.get("class_type", ""))
            nodes.add(class_type)
            inputs = node.get("inputs")
            for name, value in (inputs if isinstance(inputs, Mapping) else {}).items():
                if name in nodeinfo.MODEL_INPUTS and isinstance(value, str):
                    models.append(
                        ModelNeed(node_id, class_type, name, value, (node_id, name) in explicit)
                    )
        return cls(frozenset(nodes), tuple(models))


class Dispatcher:
    """Matches jobs' needs to backends' capabilities (pure: no I/O, no state of its own)."""

    def __init__(self, pool: Pool, *, substitute: bool = True) -> None:
        self.pool = pool
        self.substitute = substitute

    def missing(self, needs: Needs, backend: Backend) -> list[str] | None:
        """What `backend` lacks to run a job (empty: it can), None while its nodes are unknown."""
        info = backend.object_info
        if info is None:
            return None
        lacks = [f"node `{name}`" for name in sorted(needs.nodes) if name not in info]
        for need in needs.models:
            definition = nodeinfo.input_def(info, need.class_type, need.input)
            if definition is None or definition.choices is None:
                continue  # a missing node is named above; an input without a list can't lack
            if need.file in definition.choices:
                continue
            if definition.choices and self._substitutable(need):
                continue
            kind = definition.model_kind or "model"
            shown = ", ".join(str(c) for c in definition.choices[:10]) or "none"
            extra = len(definition.choices) - 10
            more = f" and {extra} more" if extra > 0 else ""
            lacks.append(f"{kind} '{need.file}' (it has {shown}{more})")
        return lacks

    def _substitutable(self, need: ModelNeed) -> bool:
        if not self.substitute or need.explicit:
            return False
        for backend in self.pool:
            info = backend.object_info
            definition = nodeinfo.input_def(info, need.class_type, need.input) if info else None
            if definition is not None and need.file in (definition.choices or ()):
                return False  # someone has the very file: only they may run it
        return True

    def capable(self, needs: Needs, backends: Iterable[Backend]) -> list[Backend]:
        """The backends among `backends` that can (or, their nodes unknown yet, may) run it."""
        if len(self.pool) == 1:
            return list(backends)
        return [b for b in backends if not self.missing(needs, b)]

    def refusal(self, needs: Needs) -> str | None:
        """Why no backend of the pool can run these needs; None if one can (or may).

        A backend whose nodes are not known yet may be able to: no refusal then. Nor with a
        single backend: its ComfyUI answers for itself.
        """
        if len(self.pool) == 1:
            return None
        lacking: list[tuple[str, list[str]]] = []
        for backend in self.pool:
            missing = self.missing(needs, backend)
            if missing is None or not missing:
                return None
            lacking.append((backend.name, missing))
        return "No ComfyUI backend can run this workflow: " + "; ".join(
            f"{name} lacks {', '.join(missing)}" for name, missing in lacking
        )

    def choose(self, candidates: list[Backend], load: Callable[[Backend], int]) -> Backend | None:
        """The least loaded candidate (the first in the settings on a tie)."""
        if not candidates:
            return None
        order = {b.name: i for i, b in enumerate(self.pool)}
        return min(candidates, key=lambda b: (load(b) / b.max_in_flight, order.get(b.name, 0)))
