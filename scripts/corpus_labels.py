"""Pre-fill `tests/corpus/labels.yaml` with what can be computed; the exposure labels are people's.

    .venv/bin/python -m scripts.corpus_labels [--write]

For each corpus file it computes its format, the classes it runs that the recorded definitions
lack, and the packs the export itself names for them (`properties.cnr_id` / `aux_id`). For a
file with no entry yet it also proposes fields by simple reading rules (text of an encoder that
reaches a sampler's `positive`/`negative`, a sampler's literal seed/steps/cfg, a denoise under 1,
an empty latent's size, a loader's file), marked `reviewed: false`: a person then corrects them
against the graph and sets `reviewed: true`. Entries already there keep their `fields`,
`packs`, `unknown`, `also`, `reviewed` and `note`; only the computed keys are refreshed.
Without `--write` the result is printed.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from bot.workflows.convert import convert_ui
from tests.import_corpus import (
    LABELS,
    corpus_files,
    definitions,
    is_ui,
    labels,
    missing_classes,
    ui_nodes,
)

TEXT_INPUTS = ("text", "text_g", "text_l", "prompt", "positive", "negative", "string", "value")
FILE_INPUTS = {"image": "image", "video": "video", "file": "video", "audio": "audio"}
SIZE_HINTS = ("Latent", "ToVideo", "EmptySD3", "EmptyHunyuan", "EmptyMochi", "EmptyLTXV")


def _api_graph(data: Any) -> dict[str, Any]:
    if is_ui(data):
        return convert_ui(data, definitions()).graph
    if isinstance(data.get("prompt"), Mapping):  # an API graph wrapped as a request body
        data = data["prompt"]
    return {k: v for k, v in data.items() if isinstance(v, Mapping) and "class_type" in v}


def _consumers(graph: Mapping[str, Any]) -> dict[str, list[tuple[str, str]]]:
    found: dict[str, list[tuple[str, str]]] = {}
    for node_id, node in graph.items():
        for name, value in (node.get("inputs") or {}).items():
            if isinstance(value, list) and len(value) == 2 and isinstance(value[0], str):
                found.setdefault(value[0], []).append((node_id, name))
    return found


def _reaches(graph: Mapping[str, Any], start: str, depth: int = 0) -> set[str]:
    """The input names of sampler-like nodes a node's output reaches (`positive`, ...)."""
    seen: set[str] = set()
    frontier = [start]
    consumers = _consumers(graph)
    visited = {start}
    while frontier and depth < 12:
        depth += 1
        following = []
        for node_id in frontier:
            for target, name in consumers.get(node_id, []):
                if name in ("positive", "negative"):
                    seen.add(name)
                if target not in visited:
                    visited.add(target)
                    following.append(target)
        frontier = following
    return seen


def propose(data: Any) -> dict[str, str]:
    """Candidate fields of one graph, by the reading rules above (for a person to correct)."""
    graph = _api_graph(data)
    fields: dict[str, str] = {}
    for node_id, node in graph.items():
        kind = str(node.get("class_type"))
        inputs = node.get("inputs") or {}
        for name, value in inputs.items():
            key = f"{node_id}.{name}"
            if isinstance(value, list):
                continue
            if name in TEXT_INPUTS and isinstance(value, str) and "Encode" in kind:
                reached = _reaches(graph, node_id)
                fields[key] = "negative" if reached == {"negative"} else "prompt"
            elif name in ("seed", "noise_seed") and isinstance(value, int):
                fields[key] = "seed"
            elif name == "steps" and isinstance(value, int) and "Sampler" in kind:
                fields[key] = "steps"
            elif name == "cfg" and isinstance(value, int | float) and "Sampler" in kind:
                fields[key] = "cfg"
            elif name == "denoise" and isinstance(value, int | float) and value < 1:
                fields[key] = "denoise"
            elif name in ("width", "height") and any(h in kind for h in SIZE_HINTS):
                fields[key] = name
            elif name in FILE_INPUTS and kind.startswith(("Load", "VHS_Load")):
                fields[key] = FILE_INPUTS[name]
    return fields


def export_packs(data: Any, missing: list[str]) -> list[dict[str, str]]:
    """The packs the export names for its missing classes (`cnr_id`, `aux_id`)."""
    if not is_ui(data):
        return []
    packs: dict[str, dict[str, str]] = {}
    for node in ui_nodes(data):
        if str(node.get("type")) not in missing:
            continue
        props = node.get("properties") or {}
        repo = props.get("aux_id") or props.get("cnr_id")
        if isinstance(repo, str) and repo:
            title = repo.split("/")[-1]
            packs.setdefault(repo, {"repo": repo, "title": title})
    return list(packs.values())


def build(existing: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for path in corpus_files():
        data = json.loads(path.read_bytes())
        missing = missing_classes(data)
        old = dict(existing.get(path.name) or {})
        entry: dict[str, Any] = {
            "format": "ui" if is_ui(data) else "api",
            "classes_known": not missing,
            "missing": missing,
        }
        if missing:
            entry["packs"] = old.get("packs") or export_packs(data, missing)
            if old.get("unknown"):
                entry["unknown"] = old["unknown"]
        entry["fields"] = old["fields"] if "fields" in old else propose(data)
        if old.get("also"):
            entry["also"] = old["also"]
        entry["reviewed"] = bool(old.get("reviewed", False))
        if old.get("note"):
            entry["note"] = old["note"]
        out[path.name] = entry
    return out


class _Dumper(yaml.SafeDumper):
    """Writes each pack out in full (no `&id`/`*id` aliases between entries)."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--write", action="store_true", help=f"write {LABELS.name}")
    args = parser.parse_args()
    existing = labels() if LABELS.exists() else {}
    text = yaml.dump(
        build(existing), Dumper=_Dumper, sort_keys=False, allow_unicode=True, width=100
    )
    header = (
        "# Labels of the corpus workflows (tests/import_corpus.py, scripts/corpus_labels.py).\n"
        "# format, classes_known, missing: computed. packs: what a person would install for\n"
        "# the missing classes (repo + title; repo comfy-core: a newer ComfyUI); unknown:\n"
        "# classes whose pack a person reading the file can't tell, not asked for.\n"
        "# fields: node.input -> kind, what a person would expose, read from the graph; also:\n"
        "# fields a person may expose but need not (sampler, scheduler, second passes);\n"
        "# reviewed: the fields were checked by hand.\n"
    )
    if args.write:
        Path(LABELS).write_text(header + text, encoding="utf-8")
    else:
        sys.stdout.write(header + text)


if __name__ == "__main__":
    main()
