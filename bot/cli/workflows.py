"""The subcommands over the workflow packs: `comfycord workflows` (each one and its parameters)
and `comfycord import` (an exported ComfyUI workflow turned into NAME.json + NAME.yaml)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TextIO

from bot.cli.comfyui import fetch_node_map, fetch_object_info
from bot.errors import UserError
from bot.settings import Settings
from bot.workflows import Workflow, load_workflows


# workflows -----------------------------------------------------------------------------------
def list_workflows(settings: Settings, out: TextIO | None = None) -> int:
    out = out or sys.stdout
    workflows, problems = load_workflows(settings.workflows.dir)
    for name in sorted(workflows):
        out.write(describe_workflow(workflows[name]))
    for problem in problems:
        print(f"problem: {problem}", file=out)
    return 1 if problems else 0


def describe_workflow(workflow: Workflow) -> str:
    spec = workflow.spec
    lines = [f"{workflow.name}: {spec.title}" + (f"  (/{spec.command})" if spec.command else "")]
    for param in workflow.params:
        bits: list[str] = [param.type]
        if param.min is not None or param.max is not None:
            bits.append(f"{param.min if param.min is not None else ''}..{param.max or ''}")
        if param.choices:
            bits.append("one of " + ", ".join(str(c) for c in param.choices))
        if param.default is not None and param.default != "":
            bits.append(f"default {param.default}")
        if param.required:
            bits.append("required")
        lines.append(f"  {param.name}: {'; '.join(bits)}")
    return "\n".join(lines) + "\n"


# import --------------------------------------------------------------------------------------
def _read_upload(path: Path, limit: int) -> bytes:
    from bot.workflows.packs import check_size

    try:
        check_size(path.stat().st_size, path.name, limit)
        return path.read_bytes()
    except FileNotFoundError:
        raise UserError(f"{path}: no such file") from None
    except OSError as exc:
        raise UserError(f"{path}: can't be read: {exc.strerror or exc}") from None


async def import_workflow(
    settings: Settings, args: argparse.Namespace, out: TextIO | None = None
) -> int:
    """Write `NAME.json` + `NAME.yaml` (every param written out) from an exported workflow.

    The workflow is checked against ComfyUI's /object_info when it is reachable; when ComfyUI
    could not run it (unknown node classes...), nothing is written.
    """
    from bot.workflows.packs import (
        MAX_GRAPH_BYTES,
        MAX_YAML_BYTES,
        prepare_import,
        preview_lines,
        save_pack,
    )

    out = out or sys.stdout
    data = _read_upload(args.file, MAX_GRAPH_BYTES)
    yaml_data = _read_upload(args.yaml, MAX_YAML_BYTES) if args.yaml is not None else None
    object_info = None if args.offline else await fetch_object_info(settings, out)
    folder = Path(settings.workflows.dir)
    folder.mkdir(parents=True, exist_ok=True)
    existing, _ = load_workflows(folder)
    preview = prepare_import(
        data,
        args.file.name,
        folder=folder,
        object_info=object_info,
        yaml_data=yaml_data,
        yaml_name=args.yaml.name if args.yaml is not None else "spec.yaml",
        name=args.name,
        existing=existing,
        node_map=await fetch_node_map(settings) if object_info is not None else None,
    )
    print(f"{preview.name}: {preview.title}", file=out)
    for line in preview_lines(preview):
        print(f"  {line}", file=out)
    if preview.blocking:
        print(f"nothing written: ComfyUI can't run {preview.name} as it is", file=out)
        return 1
    for path in save_pack(preview, folder, existing):
        print(f"wrote {path}", file=out)
    print("edit the YAML if you like, then run `comfycord check`", file=out)
    return 0
