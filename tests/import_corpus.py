"""The corpus of public workflows in `tests/corpus/`, imported the way a moderator's upload is,
for `tests/workflows/test_import_corpus.py` and `benchmarks/bench_import.py`.

Each file is imported with `prepare_import` against the recorded `/object_info` of ComfyUI 0.3.64
plus the recorded custom node packs, and compared with `tests/corpus/labels.yaml`: the fields a
person reading the graph would expose, the classes it uses that neither file defines, and the
packs a person would name for them.

A refusal names a pack when its message holds the pack's title or repository; a class that is
ComfyUI's own (`comfy-core`) is named when the message says a newer ComfyUI is needed.
"""

from __future__ import annotations

import json
import re
import traceback
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

import yaml

from bot.errors import WorkflowError
from bot.workflows.packs import ImportPreview, prepare_import
from bot.workflows.problems import InvalidWorkflow, Problem
from tests.recordings import OBJECT_INFO, OBJECT_INFO_CUSTOM

CORPUS = Path(__file__).parent / "corpus"
LABELS = CORPUS / "labels.yaml"
CORE_PACK = "comfy-core"
KINDS = (
    "prompt",
    "negative",
    "seed",
    "steps",
    "cfg",
    "width",
    "height",
    "denoise",
    "image",
    "video",
    "audio",
    "length",
    "other",
)
"""The kinds of labelled fields (`length` is a video's frame count or an audio's seconds)."""

FRONTEND_ONLY = frozenset(
    {
        "Note",
        "MarkdownNote",
        "Reroute",
        "PrimitiveNode",
        "GetNode",
        "SetNode",
        "easy getNode",
        "easy setNode",
        "easy bookmark",
        "PresetText|pysssss",
        "Fast Muter (rgthree)",
        "Fast Bypasser (rgthree)",
        "Fast Groups Muter (rgthree)",
        "Fast Groups Bypasser (rgthree)",
        "Fast Actions Button (rgthree)",
        "Mute / Bypass Relay (rgthree)",
        "Mute / Bypass Repeater (rgthree)",
        "Node Combiner (rgthree)",
        "Bookmark (rgthree)",
        "Label (rgthree)",
        "Reroute (rgthree)",
        "Note Plus (mtb)",
        "Comparer (rgthree)",
    }
)
"""Node types the editor handles itself: never sent to ComfyUI, so never a missing class."""
_MUTED, _BYPASSED = 2, 4
_NEWER = re.compile(r"newer|update|upgrade|too old|version", re.IGNORECASE)


def corpus_files() -> list[Path]:
    """Every workflow of the corpus, in name order."""
    return sorted(CORPUS.glob("*.json"))


@cache
def definitions() -> dict[str, Any]:
    """Core ComfyUI 0.3.64 and the recorded custom packs, as one `/object_info`."""
    info: dict[str, Any] = json.loads(OBJECT_INFO.read_text(encoding="utf-8"))
    info.update(custom_definitions())
    return info


@cache
def custom_definitions() -> dict[str, Any]:
    """The recorded custom packs' classes only (each with its `pack`)."""
    return json.loads(OBJECT_INFO_CUSTOM.read_text(encoding="utf-8"))  # type: ignore[no-any-return]


@cache
def labels() -> dict[str, dict[str, Any]]:
    """`labels.yaml`: file name -> its labels."""
    data = yaml.safe_load(LABELS.read_text(encoding="utf-8")) or {}
    return {str(name): dict(entry) for name, entry in data.items()}


def is_ui(data: Any) -> bool:
    return isinstance(data, Mapping) and isinstance(data.get("nodes"), list)


def ui_nodes(data: Mapping[str, Any]) -> list[Mapping[str, Any]]:
    """Every node of a UI-format file, subgraph definitions' nodes included."""
    nodes = [n for n in data.get("nodes") or [] if isinstance(n, Mapping)]
    for sub in (data.get("definitions") or {}).get("subgraphs") or []:
        nodes.extend(n for n in sub.get("nodes") or [] if isinstance(n, Mapping))
    return nodes


def running_classes(data: Any) -> dict[str, list[str]]:
    """The node classes a file would send to ComfyUI -> the ids of their nodes.

    UI format: muted and bypassed nodes, the editor's own nodes and subgraph instances are left
    out (inner nodes keep their own ids here, without the instance path). API format: all.
    """
    found: dict[str, list[str]] = {}
    if is_ui(data):
        subgraphs = {s.get("id") for s in (data.get("definitions") or {}).get("subgraphs") or []}
        for node in ui_nodes(data):
            kind = str(node.get("type"))
            if node.get("mode") in (_MUTED, _BYPASSED) or kind in FRONTEND_ONLY:
                continue
            if kind in subgraphs:
                continue
            found.setdefault(kind, []).append(str(node.get("id")))
    elif isinstance(data, Mapping):
        for node_id, node in data.items():
            if isinstance(node, Mapping) and "class_type" in node:
                found.setdefault(str(node["class_type"]), []).append(str(node_id))
    return found


def missing_classes(data: Any, info: Mapping[str, Any] | None = None) -> list[str]:
    """The classes a file runs that the definitions lack, sorted."""
    info = definitions() if info is None else info
    return sorted(c for c in running_classes(data) if c not in info)


def pack_named(pack: Mapping[str, str], text: str) -> bool:
    """Whether a refusal's text names a pack (its title or repository, any case).

    ComfyUI's own classes count as named when the text says a newer ComfyUI is needed.
    """
    if pack.get("repo") == CORE_PACK:
        return "ComfyUI" in text and bool(_NEWER.search(text))
    lowered = text.lower()
    names = [pack.get("title", ""), pack.get("repo", "")]
    return any(name and name.lower() in lowered for name in names)


@dataclass
class CorpusResult:
    """What became of one corpus file.

    Attributes:
        name: the file name.
        missing: the classes it runs that the definitions lack (computed).
        preview: the import preview, unless refused or crashed.
        refusal: `(code, message)` of each problem of a refusal (an `InvalidWorkflow`, or
            another `WorkflowError` as code `error`).
        crash: a traceback when the import raised anything else.
        detected: `node.input` -> the option name, for every target of every detected option.
    """

    name: str
    missing: list[str] = field(default_factory=list)
    preview: ImportPreview | None = None
    refusal: list[tuple[str, str]] = field(default_factory=list)
    crash: str = ""
    detected: dict[str, str] = field(default_factory=dict)

    @property
    def known(self) -> bool:
        return not self.missing

    @property
    def blocking(self) -> list[str]:
        """What stops a save: the refusal, or the preview's blocking problems."""
        if self.preview is None:
            if self.crash:
                return [self.crash.strip().splitlines()[-1]]
            return [message for _, message in self.refusal]
        return [str(p) for p in self.preview.blocking]

    @property
    def saves(self) -> bool:
        """Imported with nothing blocking: it saves with no hand edit."""
        return self.preview is not None and not self.preview.blocking

    @property
    def problem_codes(self) -> list[str]:
        if self.preview is not None:
            return [p.code for p in self.preview.blocking]
        return ["crash"] if self.crash else [code for code, _ in self.refusal]

    def names_packs(self, packs: Iterable[Mapping[str, str]]) -> bool:
        """Whether it is refused (or blocked) with every pack named (none listed: no)."""
        packs = list(packs)
        if self.saves or self.crash or not packs:
            return False
        text = "\n".join(self.blocking)
        return all(pack_named(pack, text) for pack in packs)


def _coded(problems: Iterable[Problem]) -> list[tuple[str, str]]:
    return [(p.code, str(p)) for p in problems]


def import_file(path: Path, folder: Path) -> CorpusResult:
    """Import one corpus file against the definitions; never raises."""
    data = path.read_bytes()
    result = CorpusResult(name=path.name)
    try:
        result.missing = missing_classes(json.loads(data))
    except ValueError:
        result.missing = []
    try:
        preview = prepare_import(
            data, path.name, folder=folder, object_info=definitions(), existing={}
        )
    except InvalidWorkflow as exc:
        result.refusal = _coded(exc.problems)
    except WorkflowError as exc:
        result.refusal = [("error", str(exc))]
    except Exception:  # the corpus must never crash the import: record it
        result.crash = traceback.format_exc()
    else:
        result.preview = preview
        for param in preview.workflow.params:
            for node_id, input_name in param.targets:
                result.detected[f"{node_id}.{input_name}"] = param.name
    return result


def labelled_fields(name: str) -> dict[str, str]:
    """`node.input` -> kind, as labelled for a file."""
    entry = labels().get(name) or {}
    return {str(k): str(v) for k, v in (entry.get("fields") or {}).items()}


def labelled_also(name: str) -> set[str]:
    """`node.input` a person may expose but need not (a sampler's name, a second pass...):
    an option setting one is not wrong, and leaving it out is not missed."""
    entry = labels().get(name) or {}
    return {str(k) for k in entry.get("also") or []}


def precision_counts(result: CorpusResult) -> tuple[int, int]:
    """`(targets that are labelled fields or "also", all targets)` of a file's options."""
    allowed = set(labelled_fields(result.name)) | labelled_also(result.name)
    return sum(key in allowed for key in result.detected), len(result.detected)


def labelled_packs(name: str) -> list[dict[str, str]]:
    entry = labels().get(name) or {}
    return [dict(p) for p in entry.get("packs") or []]
