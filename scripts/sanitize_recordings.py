#!/usr/bin/env python3
"""Write the test data in ``tests/data/comfyui`` from recordings of a real ComfyUI server.

The recordings (transcripts, ``/object_info``, websocket message examples) keep what the tests
need: message order and shapes, ids, types, ranges, choices, status codes. This script keeps those
facts and leaves out the server's own prose:

- every ``traceback`` (websocket ``execution_error``, ``/history`` status messages,
  ``node_errors``) becomes neutral placeholder lines, as many as there were, in the same shape;
- node definitions lose ``description``, ``output_tooltips`` and ``python_module``, and every
  input option loses its ``tooltip``.

The files the server made (``media/``: videos, animations) are copied as they are.

The output is compact JSON with one entry per line, so a run gives the same bytes every time and
running it on its own output changes nothing.

Usage: ``python scripts/sanitize_recordings.py [SOURCE] [--out FOLDER]``; SOURCE defaults to
``../shared/comfyui`` beside the project, FOLDER to ``tests/data/comfyui``. Standard library only.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_SOURCE = ROOT.parent / "shared" / "comfyui"
DEFAULT_OUT = ROOT / "tests" / "data" / "comfyui"

#: The files written, besides ``transcripts/*.json``; a missing one is skipped.
TOP_FILES = ("object_info.json", "object_info_custom.json", "ws_message_examples.json")

#: Keys of a node definition that hold prose (or a module path) rather than facts.
NODE_PROSE = frozenset({"description", "output_tooltips", "python_module"})
#: Keys with a text value dropped wherever they occur (input options, input specs in node errors).
PROSE = frozenset({"tooltip", "toolip"})


def placeholder_traceback(lines: object) -> object:
    """Neutral lines standing for a traceback: the same count and shape, no text of the server."""
    if isinstance(lines, str):
        return '  File "frame_1.py", line 1, in step_1\n    step_1()\n' if lines else ""
    if not isinstance(lines, list):
        return lines
    return [
        f'  File "frame_{i}.py", line {i}, in step_{i}\n    step_{i}()\n'
        for i in range(1, len(lines) + 1)
    ]


def _is_node_definition(obj: dict[str, Any]) -> bool:
    return {"input", "output", "output_name"} <= obj.keys()


def sanitize(obj: Any) -> Any:
    """A copy of ``obj`` without the server's prose (see the module docstring)."""
    if isinstance(obj, list):
        return [sanitize(item) for item in obj]
    if not isinstance(obj, dict):
        return obj
    node = _is_node_definition(obj)
    clean: dict[str, Any] = {}
    for key, value in obj.items():
        if (key in PROSE and isinstance(value, str)) or (node and key in NODE_PROSE):
            continue
        if key == "traceback":
            clean[key] = placeholder_traceback(value)
        else:
            clean[key] = sanitize(value)
    return clean


def _compact(obj: Any) -> str:
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":"), allow_nan=True)


def dumps(obj: Any, depth: int = 2) -> str:
    """Compact JSON, one entry per line for the first ``depth`` levels of objects and arrays."""
    if depth == 0 or not isinstance(obj, dict | list) or not obj:
        return _compact(obj)
    if isinstance(obj, dict):
        items = [f"{_compact(str(k))}:{dumps(v, depth - 1)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(items) + "\n}"
    return "[\n" + ",\n".join(dumps(v, depth - 1) for v in obj) + "\n]"


def _convert(source: Path, target: Path) -> None:
    data = json.loads(source.read_text(encoding="utf-8"))
    target.write_text(dumps(sanitize(data)) + "\n", encoding="utf-8")


def run(source: Path, out: Path) -> list[Path]:
    """Write the sanitized copy of ``source`` into ``out``; returns the files written."""
    if not (source / "object_info.json").is_file() or not (source / "transcripts").is_dir():
        raise SystemExit(f"{source} holds no recordings (object_info.json and transcripts/)")
    if source.resolve() == out.resolve():
        raise SystemExit("the output folder must differ from the source folder")
    (out / "transcripts").mkdir(parents=True, exist_ok=True)
    for stale in sorted((out / "transcripts").glob("*.json")):
        stale.unlink()
    written = []
    for name in TOP_FILES:
        if (source / name).is_file():
            _convert(source / name, out / name)
            written.append(out / name)
        elif (out / name).is_file():
            (out / name).unlink()
    for transcript in sorted((source / "transcripts").glob("*.json")):
        target = out / "transcripts" / transcript.name
        _convert(transcript, target)
        written.append(target)
    written += _copy_media(source / "media", out / "media")
    return written


def _copy_media(source: Path, out: Path) -> list[Path]:
    """Copy the server's output files byte for byte: they hold no prose, only what it made."""
    for stale in sorted(out.glob("*")) if out.is_dir() else []:
        if stale.is_file():
            stale.unlink()
    if not source.is_dir():
        return []
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for media in sorted(path for path in source.iterdir() if path.is_file()):
        target = out / media.name
        target.write_bytes(media.read_bytes())
        written.append(target)
    return written


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("source", nargs="?", type=Path, default=DEFAULT_SOURCE)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    written = run(args.source, args.out)
    size = sum(path.stat().st_size for path in written)
    print(f"wrote {len(written)} files ({size / 1024:.0f} KiB) to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
