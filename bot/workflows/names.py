"""Pack names: turning any file name into a valid workflow name.

A workflow's name is 1-32 lowercase letters, digits, `-` or `_` (it is a Discord option value
and a file stem). Exported files are named anything (`Flux.1 Dev (fp8).json`,
`image_qwen_image_edit_2509_with_a_long_name.json`, `風景.json`); `derive_name` maps each to a
valid name, the same one every time.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata

from bot.workflows.spec import NAME_RE

MAX_NAME = 32
FALLBACK = "workflow"
_SUFFIXES = (".json", ".yaml", ".yml")
_HASH_LENGTH = 4
_SEPARATORS = re.compile(r"[^a-z0-9_-]+")
_DASHES = re.compile(r"-{2,}")


def _short_hash(text: str) -> str:
    return hashlib.sha1(text.encode("utf-8"), usedforsecurity=False).hexdigest()[:_HASH_LENGTH]


def file_stem(file_name: str) -> str:
    """The file name without folders and without its `.json`/`.yaml` suffix."""
    base = re.split(r"[/\\]", file_name)[-1]
    lowered = base.lower()
    for suffix in _SUFFIXES:
        if lowered.endswith(suffix) and len(base) > len(suffix):
            return base[: -len(suffix)]
    return base


def derive_name(file_name: str) -> str:
    """Return a valid workflow name for a file name.

    Folders and the `.json`/`.yaml` suffix are dropped; accents are removed (`é` -> `e`);
    letters are lowercased; every run of other characters (dots, spaces, brackets, letters
    outside ASCII) becomes one `-`. A name longer than 32 characters is cut and ends in four
    characters of a hash of the whole name, so two long names that share a beginning stay
    apart. A name with nothing usable left becomes `workflow-` plus that hash.

    Args:
        file_name: a file name as uploaded or found on disk (`Flux.1 Dev.json`).

    Returns:
        A name `NAME_RE` accepts; an already valid stem is returned unchanged.
    """
    stem = file_stem(file_name)
    if NAME_RE.match(stem):
        return stem
    ascii_text = (
        unicodedata.normalize("NFKD", stem).encode("ascii", "ignore").decode("ascii").lower()
    )
    name = _DASHES.sub("-", _SEPARATORS.sub("-", ascii_text)).strip("-_")
    if not name:
        return f"{FALLBACK}-{_short_hash(stem)}"
    if len(name) > MAX_NAME:
        keep = MAX_NAME - _HASH_LENGTH - 1
        name = f"{name[:keep].rstrip('-_')}-{_short_hash(stem)}"
    return name
