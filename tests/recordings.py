"""Where the recordings of a real ComfyUI server are (transcripts, /object_info, examples).

The tests read ``tests/data/comfyui``: the recordings without the server's own prose (tracebacks,
node descriptions and tooltips), written by ``scripts/sanitize_recordings.py`` and committed.
``COMFYCORD_RECORDINGS`` points them at another folder of the same layout, e.g. the unsanitized
originals. ``SHARED`` is where the team keeps those originals, beside the project; the tests use
it only to check that the committed data is up to date, and only when it is there.
"""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
#: The sanitized recordings committed with the tests.
COMMITTED = ROOT / "tests" / "data" / "comfyui"
#: The originals, when the project sits beside the team's shared folder (absent in a clone).
SHARED = ROOT.parent / "shared" / "comfyui"
#: The script that writes ``COMMITTED`` from ``SHARED``.
SANITIZER = ROOT / "scripts" / "sanitize_recordings.py"


def _find() -> Path:
    env = os.environ.get("COMFYCORD_RECORDINGS")
    path = Path(env) if env else COMMITTED
    if not (path / "object_info.json").is_file():
        source = "COMFYCORD_RECORDINGS" if env else "the committed test data"
        raise FileNotFoundError(
            f"No ComfyUI recordings in {path} ({source}): expected object_info.json and "
            "transcripts/ there. Unset COMFYCORD_RECORDINGS to use tests/data/comfyui, or "
            "refresh it with scripts/sanitize_recordings.py."
        )
    return path


RECORDINGS = _find()
TRANSCRIPTS = RECORDINGS / "transcripts"
OBJECT_INFO = RECORDINGS / "object_info.json"
#: Node definitions of popular custom node packs (``{class: definition}`` with a ``pack`` key).
OBJECT_INFO_CUSTOM = RECORDINGS / "object_info_custom.json"
WS_EXAMPLES = RECORDINGS / "ws_message_examples.json"
#: Files a real server made (videos, animations), copied byte for byte.
MEDIA = RECORDINGS / "media"
