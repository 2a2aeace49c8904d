"""Writing a pack: its file names, the YAML text of a spec, saving an import, exporting a pack.

A pack is `NAME.json` (the API-format graph) beside `NAME.yaml` (every param written out, each
with its node named in a comment). Saving never overwrites a file and leaves nothing behind when
it fails; exporting a pack with no YAML of its own writes one out.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, Protocol

import yaml

from bot.errors import NotFound, WorkflowError
from bot.workflows.graph import Graph, describe_node
from bot.workflows.loader import YAML_SUFFIXES
from bot.workflows.model import Workflow
from bot.workflows.names import derive_name
from bot.workflows.spec import NAME_RE, ParamSpec, WorkflowSpec

log = logging.getLogger(__name__)


class PackText(Protocol):
    """What saving needs of an import: its name and the text of both files."""

    @property
    def name(self) -> str: ...
    @property
    def graph_text(self) -> str: ...
    @property
    def yaml_text(self) -> str: ...


# names -------------------------------------------------------------------------------------------
def pack_files(folder: Path, name: str) -> list[Path]:
    """The files a pack called `name` would use in `folder`."""
    return [folder / f"{name}.json", *(folder / f"{name}{s}" for s in YAML_SUFFIXES)]


def check_free(name: str, folder: Path, taken: Collection[str] = ()) -> None:
    """Raise when `name` is not a usable new pack name in `folder`.

    Raises:
        WorkflowError: the name is invalid, or a pack (or one of its files) already has it.
    """
    if not NAME_RE.match(name):
        raise WorkflowError(
            f"name: '{name[:40]}' is not a usable workflow name: use 1-32 lowercase letters, "
            f"digits, '-' or '_' (e.g. '{derive_name(name)}')"
        )
    if name in taken or any(path.exists() for path in pack_files(folder, name)):
        raise WorkflowError(
            f"name: a workflow called '{name}' already exists; give the import another name "
            "(or remove the old pack first)"
        )


def _explicit(spec: WorkflowSpec, workflow: Workflow) -> WorkflowSpec:
    """The spec with every param written out: ranges ComfyUI gave become `min`/`max`."""
    params: dict[str, ParamSpec] = {}
    for name, param_spec in (spec.params or {}).items():
        param = workflow.param(name)
        update: dict[str, Any] = {}
        if param is not None and param.type in ("int", "float"):
            if param_spec.min is None and param.min is not None:
                update["min"] = param.min
            if param_spec.max is None and param.max is not None:
                update["max"] = param.max
        params[name] = param_spec.model_copy(update=update) if update else param_spec
    return spec.model_copy(update={"params": params, "graph": None})


def _dump(data: Any, *, flow: bool | None = None) -> str:
    return yaml.safe_dump(
        data, sort_keys=False, allow_unicode=True, default_flow_style=flow, width=4096
    )


def spec_yaml(name: str, spec: WorkflowSpec, graph: Graph, *, origin: str = "") -> str:
    """The text of `NAME.yaml` for a spec: every param on its own line, with its node named.

    Args:
        name: the pack name (its graph is `NAME.json`).
        spec: the spec, with `params` filled in.
        graph: the API-format graph, to name each param's node in a comment.
        origin: the file it was imported from, mentioned in the header.
    """
    lines = [
        "# yaml-language-server: $schema=workflow.schema.json",
        f"# Imported from {origin}." if origin else f"# The pack {name}.",
        f"# Each param below was found in {name}.json (`node:` is its node id there); edit,",
        "# reorder or remove them, then run `comfycord check`.",
    ]
    header = spec.model_dump(mode="json", exclude_none=True, exclude={"params", "graph"})
    header = {k: v for k, v in header.items() if v not in ("", False) or k == "nsfw"}
    lines.append(_dump(header, flow=False).rstrip("\n"))
    lines.append("params:")
    for param_name, param in (spec.params or {}).items():
        body = param.model_dump(mode="json", exclude_none=True, exclude_defaults=True)
        body = {"type": param.type, **body}
        nodes = [param.node] if param.node is not None else [t.node for t in param.targets or []]
        described = [describe_node(graph, str(n)) for n in nodes if str(n) in graph]
        if described:
            lines.append(f"  # {', '.join(described)}")
        lines.extend("  " + line for line in _dump({param_name: body}).rstrip("\n").split("\n"))
    return "\n".join(lines) + "\n"


def _required_first(specs: Mapping[str, ParamSpec]) -> dict[str, ParamSpec]:
    """The params with the required ones first (Discord lists them first), else in order."""
    return {
        **{n: p for n, p in specs.items() if p.required},
        **{n: p for n, p in specs.items() if not p.required},
    }


# saving and exporting ---------------------------------------------------------------------------
def save_pack(preview: PackText, folder: Path, taken: Collection[str] = ()) -> list[Path]:
    """Write `NAME.json` and `NAME.yaml`; never overwrites a file.

    Returns:
        The files written.

    Raises:
        WorkflowError: the name was taken meanwhile, or the files can't be written (nothing
            is left behind).
    """
    check_free(preview.name, folder, taken)
    written: list[Path] = []
    try:
        for path, text in (
            (folder / f"{preview.name}.json", preview.graph_text),
            (folder / f"{preview.name}.yaml", preview.yaml_text),
        ):
            with path.open("x", encoding="utf-8") as file:
                written.append(path)
                file.write(text)
    except OSError as exc:
        for path in written:
            with contextlib.suppress(OSError):
                path.unlink()
        if isinstance(exc, FileExistsError):
            raise WorkflowError(
                f"name: a workflow called '{preview.name}' already exists"
            ) from None
        log.warning("could not save the pack %s: %s", preview.name, exc)
        raise WorkflowError(
            f"could not write the pack '{preview.name}' to the workflows folder: "
            f"{exc.strerror or exc}"
        ) from None
    log.info("saved imported pack %s", preview.name)
    return written


def export_pack(workflow: Workflow, folder: Path) -> list[tuple[str, bytes]]:
    """A pack's files, `(file name, bytes)`: its graph and its YAML.

    A pack with no YAML of its own (a lone graph, params detected) gets one written out.

    Raises:
        NotFound: its graph file is gone.
    """
    graph_name = workflow.spec.graph_file(workflow.name)
    try:
        graph = (folder / graph_name).read_bytes()
    except OSError:
        raise NotFound(f"The graph of `{workflow.name}` ({graph_name}) is gone.") from None
    files = [(graph_name, graph)]
    for suffix in YAML_SUFFIXES:
        path = folder / f"{workflow.name}{suffix}"
        if path.is_file():
            files.append((path.name, path.read_bytes()))
            return files
    spec = _explicit(workflow.spec, workflow)
    text = spec_yaml(workflow.name, spec, workflow.graph)
    files.append((f"{workflow.name}.yaml", text.encode("utf-8")))
    return files
