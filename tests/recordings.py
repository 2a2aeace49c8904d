"""Where the recordings of a real ComfyUI server are (transcripts, /object_info, examples).

They are the team's shared reference data, kept beside the project rather than in it (they
hold what a ComfyUI server sent, tracebacks of its code included): `../shared/comfyui` from the
project's root, or the folder named by `COMFYCORD_RECORDINGS`.
"""

from __future__ import annotations

import os
from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent


def _find() -> Path:
    candidates = []
    if env := os.environ.get("COMFYCORD_RECORDINGS"):
        candidates.append(Path(env))
    candidates += [_ROOT.parent / "shared" / "comfyui", _ROOT / "tests" / "data" / "comfyui"]
    for path in candidates:
        if (path / "object_info.json").is_file():
            return path
    tried = ", ".join(str(p) for p in candidates)
    raise FileNotFoundError(
        f"The ComfyUI recordings were not found (tried: {tried}). "
        "Set COMFYCORD_RECORDINGS to the folder holding object_info.json and transcripts/."
    )


RECORDINGS = _find()
TRANSCRIPTS = RECORDINGS / "transcripts"
OBJECT_INFO = RECORDINGS / "object_info.json"
