"""The committed recordings (``tests/data/comfyui``) and the script that writes them (issue 13).

The sanitizer runs on every folder of recordings that is present: the committed data itself
(always; the script must leave it unchanged) and the originals beside the project (when there;
the committed data must be exactly what the script makes of them now). The tests that read the
recordings run on each present folder too and must give the same results.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest

from tests.recordings import COMMITTED, ROOT, SANITIZER, SHARED

#: Every folder of recordings present here: the committed data, and the originals if beside us.
SOURCES = {"committed": COMMITTED} | ({"originals": SHARED} if SHARED.is_dir() else {})

#: The test modules that read the recordings (the replay server, the fake ComfyUI, events, rules).
RECORDING_TESTS = (
    "tests/fakes/test_comfyui.py",
    "tests/comfy/test_client.py",
    "tests/comfy/test_events.py",
    "tests/comfy/test_rejection.py",
    "tests/workflows/test_workflows.py",
)

PLACEHOLDER = re.compile(r'  File "frame_(\d+)\.py", line \1, in step_\1\n    step_\1\(\)\n\Z')


def _files(folder: Path, *, media: bool = False) -> dict[str, bytes]:
    """The recordings' JSON files by relative name; with `media`, the server's files too."""
    return {
        str(path.relative_to(folder)): path.read_bytes()
        for path in sorted(folder.rglob("*"))
        if path.is_file() and (path.suffix == ".json" or (media and path.parent.name == "media"))
    }


def _sanitize(source: Path, out: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SANITIZER), str(source), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


@pytest.mark.parametrize("source", list(SOURCES.values()), ids=list(SOURCES))
def test_sanitizer_output_is_the_committed_data(source: Path, tmp_path: Path) -> None:
    done = _sanitize(source, tmp_path)
    assert done.returncode == 0, done.stderr
    assert "wrote" in done.stdout
    written, committed = _files(tmp_path, media=True), _files(COMMITTED, media=True)
    assert sorted(written) == sorted(committed)
    assert "object_info.json" in committed and "transcripts/c_invalid_workflows.json" in committed
    changed = [name for name in committed if written[name] != committed[name]]
    assert changed == [], "refresh tests/data/comfyui with scripts/sanitize_recordings.py"


def test_sanitizer_refuses_a_folder_without_recordings(tmp_path: Path) -> None:
    done = _sanitize(tmp_path / "nothing", tmp_path / "out")
    assert done.returncode != 0
    assert "holds no recordings" in done.stderr
    assert not (tmp_path / "out").exists()


def _walk(obj: Any, found: dict[str, list[Any]]) -> None:
    if isinstance(obj, list):
        for item in obj:
            _walk(item, found)
    elif isinstance(obj, dict):
        if {"input", "output", "output_name"} <= obj.keys():
            found["nodes"].append(obj)
        for key, value in obj.items():
            if key == "traceback":
                found["tracebacks"].append(value)
            elif key in ("tooltip", "toolip") and isinstance(value, str):
                found["tooltips"].append(value)
            else:
                _walk(value, found)
    elif isinstance(obj, str):
        found["strings"].append(obj)


def test_committed_data_keeps_the_facts_without_the_servers_prose() -> None:
    found: dict[str, list[Any]] = {"nodes": [], "tracebacks": [], "tooltips": [], "strings": []}
    for name, data in _files(COMMITTED).items():
        assert data.endswith(b"\n"), name
        _walk(json.loads(data), found)
    assert found["tooltips"] == []
    assert len(found["nodes"]) > 2000  # core and custom definitions, plus those in transcripts
    for node in found["nodes"]:
        assert not {"description", "output_tooltips", "python_module"} & node.keys(), node["name"]
    # The tracebacks keep their place and length, each line a neutral placeholder.
    assert len(found["tracebacks"]) >= 9
    for lines in found["tracebacks"]:
        assert lines and isinstance(lines, list)
        numbers = [int(m.group(1)) for m in map(PLACEHOLDER.match, lines) if m]
        assert numbers == list(range(1, len(lines) + 1)), lines
    leftovers = [s for s in found["strings"] if 'File "' in s or ".py, line" in s]
    assert leftovers == []
    # The facts the tests read are still there: choices, ranges, error types.
    info = json.loads((COMMITTED / "object_info.json").read_text(encoding="utf-8"))
    assert info["KSampler"]["input"]["required"]["steps"][1]["max"] == 10000
    assert "euler" in info["KSampler"]["input"]["required"]["sampler_name"][0]


def _passed(folder: Path, junit: Path) -> dict[str, str]:
    env = os.environ | {"COMFYCORD_RECORDINGS": str(folder)}
    command = [
        sys.executable,
        "-m",
        "pytest",
        "-q",
        "-p",
        "no:cacheprovider",
        f"--junitxml={junit}",
    ]
    done = subprocess.run(
        [*command, *RECORDING_TESTS],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    outcomes = {}
    for case in ET.parse(junit).getroot().iter("testcase"):
        tags = [child.tag for child in case if child.tag in ("failure", "error", "skipped")]
        outcome = tags[0] if tags else "passed"
        outcomes[f"{case.get('classname')}::{case.get('name')}"] = outcome
    return outcomes


def test_recording_tests_pass_alike_on_every_folder(tmp_path: Path) -> None:
    results = {
        label: _passed(folder, tmp_path / f"{label}.xml") for label, folder in SOURCES.items()
    }
    committed = results["committed"]
    assert len(committed) > 100
    assert set(committed.values()) == {"passed"}
    for label, outcomes in results.items():
        assert outcomes == committed, label
