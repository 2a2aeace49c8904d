"""What a moderator should do about node classes ComfyUI lacks: install a pack, update it, or
update ComfyUI.

The node map (`bot.workflows.nodemap`) says which packs provide a class; `advise` turns that,
with what `/object_info` says is installed, into one sentence per pack::

    advice = advise(
        {"FaceDetailer": ['12 "Face Detailer" (FaceDetailer)'], "SAMLoader": ["14 (SAMLoader)"]},
        object_info,
        node_map,
        hints={m.class_type: m for m in conversion.missing},    # a UI export's cnr_id/aux_id/ver
        comfyui_version="0.3.40",
    )
    for item in advice:                      # one per pack, in the order the classes came
        Problem(source, key, item.message, item.code)

Each `PackAdvice` says what to do: `install` the pack (code `missing_pack`), `update_pack`
(installed, but its version lacks the class: update it, or the class was removed from newer
versions; code `update_pack`), `update_comfyui` (a core class: code `needs_newer_comfyui`) or
`unknown` (no pack known: code `unknown_node`). A hint names the pack when the export did
(`properties.cnr_id` / `aux_id` / `ver`); otherwise the map does (its best pack first); the
other claimants are kept as `alternatives`. A pack counts as installed when `/object_info`
names it (`python_module` `custom_nodes.NAME`, or a recorded `pack`) or has a class only that
pack provides.

Nothing here raises on odd data, so a message is always produced.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from bot.workflows.pack_ref import (
    CORE_PACK,
    CORE_URL,
    PackRef,
    fold_name,
    identity_keys,
    last_component,
)

__all__ = [
    "ACTION_CODES",
    "MAX_MESSAGE",
    "Action",
    "Hint",
    "PackAdvice",
    "PackHint",
    "PackLookup",
    "advise",
]

Action = Literal["install", "update_pack", "update_comfyui", "unknown"]
#: The `Problem.code` of each action.
ACTION_CODES: dict[Action, str] = {
    "install": "missing_pack",
    "update_pack": "update_pack",
    "update_comfyui": "needs_newer_comfyui",
    "unknown": "unknown_node",
}
REGISTRY_URL = "https://registry.comfy.org"

MAX_MESSAGE = 400
"""Longest `PackAdvice.message`; lists are shortened to fit."""
_MAX_LISTED = 8
_MAX_TEXT = 120  # longest title, id or URL quoted from a hint or a map


class PackHint(Protocol):
    """What a UI export says of a node's pack (`bot.workflows.convert.MissingClass` is one)."""

    @property
    def pack(self) -> str | None:
        """The registry id (`properties.cnr_id`), `comfy-core` for core nodes."""

    @property
    def repository(self) -> str | None:
        """`owner/name` or a URL (`properties.aux_id`)."""

    @property
    def version(self) -> str | None:
        """The pack's version the export was saved with (`properties.ver`)."""


@dataclass(frozen=True, slots=True)
class Hint:
    """A `PackHint` made by hand (e.g. from a node's `properties`)."""

    pack: str | None = None
    repository: str | None = None
    version: str | None = None


@dataclass(frozen=True)
class PackAdvice:
    """What to do about the missing classes of one pack (or of no known pack).

    Attributes:
        action: `install`, `update_pack`, `update_comfyui` or `unknown`.
        pack: the pack (None for `unknown`).
        classes: the missing classes it provides, in the order given.
        nodes: the descriptions of the nodes using them, as given.
        message: one sentence for a moderator, at most `MAX_MESSAGE` characters.
        version: the pack's (or ComfyUI's) version the workflow was saved with, if known.
        alternatives: other packs the map says provide one of these classes.
    """

    action: Action
    pack: PackRef | None
    classes: tuple[str, ...]
    nodes: tuple[str, ...]
    message: str
    version: str | None = None
    alternatives: tuple[PackRef, ...] = ()

    @property
    def code(self) -> str:
        """The `Problem.code` for this advice (`missing_pack`, `update_pack`...)."""
        return ACTION_CODES[self.action]


class PackLookup(Protocol):
    """What advice asks of a node map (`bot.workflows.nodemap.NodeMap` is one)."""

    def packs_for(self, class_type: str) -> tuple[PackRef, ...]:
        """The packs that provide a class, best first (empty when none is known)."""

    def find_pack(self, name: str) -> PackRef | None:
        """The pack a registry id, repository URL, `owner/name` or folder name means."""

    def classes_of(self, pack: PackRef) -> frozenset[str]:
        """The class names the map lists for a pack."""

    def named_like(self, class_type: str) -> PackRef | None:
        """The pack whose classes a class no pack lists is named like."""

    def claimants(self, class_type: str) -> int:
        """How many packs list a class by name."""


def _repository_url(repository: str) -> str | None:
    """A hint's `aux_id` (`owner/name`, or a URL) as a URL."""
    repository = repository.strip()
    if repository.startswith(("https://", "http://")):
        return repository
    if re.fullmatch(r"[\w.-]+/[\w.-]+", repository):
        return f"https://github.com/{repository}"
    return None


# --- what is installed ------------------------------------------------------------------------


def _installed_names(object_info: Mapping[str, Any]) -> set[str]:
    """The folded folder names of the packs `/object_info` says its classes come from."""
    names = set()
    for definition in object_info.values():
        if not isinstance(definition, Mapping):
            continue
        module = definition.get("python_module")
        if isinstance(module, str) and module.startswith("custom_nodes."):
            names.add(fold_name(module.split(".")[1]))
        pack = definition.get("pack")
        if isinstance(pack, str) and pack:
            names.add(fold_name(pack.rsplit("/", 1)[-1]))
    names.discard("")
    return names


def _is_installed(
    pack: PackRef, node_map: PackLookup, object_info: Mapping[str, Any], names: set[str]
) -> bool:
    candidates = {fold_name(pack.id)} if pack.id else set()
    if pack.repository:
        candidates.add(fold_name(last_component(pack.repository)))
    if candidates & names:
        return True
    return any(
        name in object_info and node_map.claimants(name) == 1 for name in node_map.classes_of(pack)
    )


# --- advice -----------------------------------------------------------------------------------


@dataclass
class _Group:
    pack: PackRef | None
    classes: list[str] = field(default_factory=list)
    nodes: list[str] = field(default_factory=list)
    version: str | None = None
    alternatives: list[PackRef] = field(default_factory=list)
    guessed: bool = False


def advise(
    missing: Mapping[str, Sequence[str]],
    object_info: Mapping[str, Any],
    node_map: PackLookup,
    *,
    hints: Mapping[str, PackHint] | None = None,
    comfyui_version: str | None = None,
) -> list[PackAdvice]:
    """Say, per pack, what to do about node classes ComfyUI lacks (see the module docstring).

    Args:
        missing: each missing class -> the nodes using it, as described in messages
            (`'12 "Face Detailer" (FaceDetailer)'`); order is kept.
        object_info: the server's `/object_info` (to tell an installed pack from a missing one).
        node_map: the map to look classes up in (`NodeMap.for_server` or `NodeMap.bundled`).
        hints: class -> what the export says of its pack (`cnr_id`, `aux_id`, `ver`); a hint
            naming a pack wins over the map.
        comfyui_version: the running ComfyUI's version, for core classes.

    Returns:
        One `PackAdvice` per pack (the unknown classes together last), in the order their
        first class came.
    """
    hints = hints or {}
    groups: dict[str, _Group] = {}
    unknown = _Group(pack=None)
    for class_type, used_by in missing.items():
        nodes = [used_by] if isinstance(used_by, str) else list(used_by)
        hint = hints.get(class_type)
        found = node_map.packs_for(class_type)
        pack = _hinted_pack(hint, node_map) or (found[0] if found else None)
        guessed = pack is None
        pack = pack or node_map.named_like(class_type)
        if pack is None:
            unknown.classes.append(class_type)
            unknown.nodes.extend(nodes)
            continue
        key = (identity_keys(pack) or [pack.title])[0]
        group = groups.setdefault(key, _Group(pack=pack, guessed=guessed))
        group.guessed = group.guessed and guessed
        group.classes.append(class_type)
        group.nodes.extend(nodes)
        version = _clean(hint.version) if hint is not None else None
        group.version = group.version or version
        for other in found:
            if other != pack and other not in group.alternatives:
                group.alternatives.append(other)
    names = _installed_names(object_info)
    advice = []
    for group in groups.values():
        assert group.pack is not None
        if group.pack.is_core:
            action: Action = "update_comfyui"
        elif _is_installed(group.pack, node_map, object_info, names):
            action = "update_pack"
        else:
            action = "install"
        advice.append(_advice(action, group, comfyui_version))
    if unknown.classes:
        advice.append(_advice("unknown", unknown, comfyui_version))
    return advice


def _hinted_pack(hint: PackHint | None, node_map: PackLookup) -> PackRef | None:
    if hint is None:
        return None
    pack_id = _clean(hint.pack)
    repository = _clean(hint.repository)
    if pack_id == CORE_PACK:
        return node_map.find_pack(CORE_URL) or PackRef("ComfyUI", CORE_URL, CORE_PACK)
    for name in (pack_id, repository):
        found = node_map.find_pack(name) if name else None
        if found is not None:
            return found
    if not pack_id and not repository:
        return None
    url = _repository_url(repository) if repository else None
    title = pack_id or (last_component(url) if url else repository) or "?"
    return PackRef(title=title, repository=url, id=pack_id)


def _clean(text: object) -> str | None:
    if not isinstance(text, str):
        return None
    text = " ".join(text.split())
    return text[:_MAX_TEXT] or None


def _advice(action: Action, group: _Group, comfyui_version: str | None) -> PackAdvice:
    message = ""
    for listed in range(_MAX_LISTED, 0, -1):
        message = _message(action, group, comfyui_version, listed)
        if len(message) <= MAX_MESSAGE:
            break
    if len(message) > MAX_MESSAGE:
        message = message[: MAX_MESSAGE - 1] + "…"
    return PackAdvice(
        action=action,
        pack=group.pack,
        classes=tuple(group.classes),
        nodes=tuple(group.nodes),
        message=message,
        version=group.version,
        alternatives=tuple(group.alternatives),
    )


def _message(action: Action, group: _Group, comfyui_version: str | None, listed: int) -> str:
    classes = _listing([f"'{c}'" for c in group.classes], listed)
    nodes = _node_ids(group.nodes, listed)
    used = f"{classes} ({nodes})" if nodes else classes
    pack = group.pack
    if action == "unknown" or pack is None:
        those = "these class names" if len(group.classes) > 1 else "the class name"
        return (
            f"uses {used}, which no known custom node pack provides: search ComfyUI-Manager "
            f"or the registry ({REGISTRY_URL}) for {those}, install the pack and restart ComfyUI"
        )
    if action == "update_comfyui":
        version = _clean(comfyui_version)
        running = f" ({version})" if version else ""
        plural = "s" if len(group.classes) > 1 else ""
        needs = f"needs the ComfyUI core node{plural} {used}, which this ComfyUI{running} lacks"
        if group.version and version and not _older(version, group.version):
            # Saved with this ComfyUI or an older one: the class went away since.
            return (
                f"{needs}, though the workflow was saved with ComfyUI {group.version}: see "
                "ComfyUI's start-up log for nodes that failed to load, or replace the node"
                f"{'s' if len(group.nodes) > 1 else ''} if it was removed since"
            )
        to = f" to {group.version} or newer" if group.version else ""
        return f"{needs}: update ComfyUI{to}"
    title = (_clean(pack.title) or pack.name)[:_MAX_TEXT]
    where = f" ({pack.repository[:_MAX_TEXT]})" if pack.repository else ""
    also = ""
    if group.alternatives:
        others = _listing([f"'{_clean(a.title)}'" for a in group.alternatives], 2)
        also = f" (other packs with the same class name: {others})"
    it = "them" if len(group.classes) > 1 else "it"
    if group.guessed:
        also = f" ({used} {'are' if len(group.classes) > 1 else 'is'} named like its classes)"
    if action == "update_pack":
        saved = f" (the workflow was saved with version {group.version})" if group.version else ""
        source = "probably from" if group.guessed else "from"
        message = (
            f"needs {used} {source} the custom node pack '{title}'{where}, which is installed "
            f"but lacks {it}: update the pack{saved} and restart ComfyUI, or, if newer versions "
            f"removed {it}, replace the node{'s' if len(group.nodes) > 1 else ''}"
        )
    elif group.guessed:
        message = (
            f"probably needs the custom node pack '{title}'{where} for {used}: ComfyUI-Manager's "
            f"list does not name {it}, so check the pack's page, then install it and restart "
            "ComfyUI"
        )
    else:
        version = f" (version {group.version} or newer)" if group.version else ""
        message = (
            f"needs the custom node pack '{title}'{where} for {used}: install it{version} "
            "and restart ComfyUI"
        )
    return message + also if len(message + also) <= MAX_MESSAGE else message


def _older(version: str, than: str) -> bool:
    """Whether `version` is before `than` (`0.3.9` < `0.3.10`; unreadable ones are never)."""
    mine, theirs = _version_numbers(version), _version_numbers(than)
    return bool(mine and theirs) and mine < theirs


def _version_numbers(version: str) -> tuple[int, ...]:
    match = re.match(r"v?(\d+(?:\.\d+)*)", version.strip())
    return tuple(int(n) for n in match.group(1).split(".")) if match else ()


def _listing(items: Sequence[str], listed: int) -> str:
    shown = ", ".join(items[:listed])
    more = len(items) - listed
    return f"{shown} and {more} more" if more > 0 else shown


def _node_ids(nodes: Sequence[str], listed: int) -> str:
    ids = [n.split(" ", 1)[0] for n in nodes if n.strip()]
    if not ids:
        return ""
    word = "nodes" if len(ids) > 1 else "node"
    return f"{word} {_listing(ids, listed)}"
