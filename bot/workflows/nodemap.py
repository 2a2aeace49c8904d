"""Which custom node pack provides a node class, and what a moderator should do about a missing one.

ComfyUI-Manager publishes the map from node class to pack (`extension-node-map.json`: for each
pack's repository, its class names and sometimes a `nodename_pattern` regex). A copy ships with
the bot (`data/extension-node-map.json.gz`, taken from the PyPI package `comfyui-manager` by
`scripts/update-node-map`, with each pack's registry id and stars; its `source` names the
version). A ComfyUI with the Manager also serves its own map (`ComfyClient.node_mappings`);
when it answers, its entries win::

    node_map = NodeMap.for_server(await client.node_mappings())   # or NodeMap.bundled()
    node_map.packs_for("FaceDetailer")[0].title                   # 'ComfyUI Impact Pack'

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
(`properties.cnr_id` / `aux_id` / `ver`); otherwise the map does, preferring a pack that claims
the class for itself (the map's `preemptions`), then ComfyUI itself, then the pack with the most
stars; the other claimants are kept as `alternatives`. A pack counts as installed when
`/object_info` names it (`python_module` `custom_nodes.NAME`, or a recorded `pack`) or has a
class only that pack provides.

Nothing here raises on odd data: bad map entries are skipped, and a missing bundled copy gives
an empty map (logged), so a message is always produced.
"""

from __future__ import annotations

import bisect
import collections
import functools
import gzip
import json
import logging
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from importlib import resources
from typing import Any, Literal, Protocol

log = logging.getLogger(__name__)

__all__ = [
    "ACTION_CODES",
    "CORE_PACK",
    "Action",
    "Hint",
    "NodeMap",
    "PackAdvice",
    "PackHint",
    "PackRef",
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
#: The registry id UI exports give ComfyUI's own nodes (`properties.cnr_id`).
CORE_PACK = "comfy-core"
CORE_URL = "https://github.com/comfyanonymous/ComfyUI"
_CORE_REPOSITORIES = frozenset({"comfyanonymous/comfyui", "comfy-org/comfyui"})
BUNDLED_FILE = "extension-node-map.json.gz"
REGISTRY_URL = "https://registry.comfy.org"

MAX_MESSAGE = 400
"""Longest `PackAdvice.message`; lists are shortened to fit."""
_MAX_LISTED = 8
_MAX_PATTERN = 500  # a longer nodename_pattern is not compiled
_MAX_MATCHED_NAME = 300  # patterns are not tried on longer class names
_MAX_TEXT = 120  # longest title, id or URL quoted from a hint or a map


@dataclass(frozen=True, slots=True)
class PackRef:
    """A custom node pack, as the map (or a UI export) names it.

    Attributes:
        title: its name for people (`ComfyUI Impact Pack`).
        repository: its repository URL, None when only the registry id is known.
        id: its registry id (`comfyui-impact-pack`, the `cnr_id` UI exports give), if known.
        stars: its repository's stars when the map says (used to rank packs claiming a class).
    """

    title: str
    repository: str | None = None
    id: str | None = None
    stars: int | None = field(default=None, compare=False)

    @property
    def name(self) -> str:
        """A short name: the registry id, else the repository's last path component, else the
        title."""
        if self.id:
            return self.id
        if self.repository:
            return _last_component(self.repository) or self.title
        return self.title

    @property
    def is_core(self) -> bool:
        """Whether this is ComfyUI itself (its classes come with ComfyUI updates)."""
        if self.id == CORE_PACK:
            return True
        return self.repository is not None and _owner_repo(self.repository) in _CORE_REPOSITORIES


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


# --- the map ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Pack:
    ref: PackRef
    classes: frozenset[str]
    preempts: frozenset[str] = frozenset()
    pattern: re.Pattern[str] | None = None


class NodeMap:
    """ComfyUI-Manager's map from node class to pack, indexed for lookups (see the module
    docstring). Build it with `bundled`, `from_json`, `merged` or `for_server`."""

    def __init__(self, packs: Iterable[_Pack] = (), *, source: str = "") -> None:
        self._packs: list[_Pack] = list(packs)
        self.source = source
        self._by_class: dict[str, list[_Pack]] = {}
        self._by_name: dict[str, list[_Pack]] = {}
        self._patterns: list[_Pack] = []
        self._by_prefix: tuple[list[str], list[int]] | None = None
        for pack in self._packs:
            for name in pack.classes:
                self._by_class.setdefault(name, []).append(pack)
            for key in _pack_keys(pack.ref):
                self._by_name.setdefault(key, []).append(pack)
            if pack.pattern is not None:
                self._patterns.append(pack)

    def __len__(self) -> int:
        return len(self._packs)

    def __repr__(self) -> str:
        return f"<NodeMap {len(self._packs)} packs, {len(self._by_class)} classes {self.source!r}>"

    # --- building ---

    @classmethod
    def bundled(cls) -> NodeMap:
        """The copy shipped with the bot, read once (empty, and logged, if it is unreadable)."""
        return _bundled()

    @classmethod
    def from_json(cls, data: object, *, source: str = "") -> NodeMap:
        """Read a map: ComfyUI-Manager's `extension-node-map.json`, the answer of its
        `/customnode/getmappings` route (keys may be registry ids instead of URLs), or the
        bundled document (`{"map": ..., "packs": {url: {"id", "stars"}}}`).

        Entries that are not `[[class names], {metadata}]` are skipped.

        Raises:
            ValueError: `data` is not a JSON object (names what it is instead).
        """
        if not isinstance(data, Mapping):
            raise ValueError(f"a node map must be a JSON object, not {_type_name(data)}")
        entries: Mapping[Any, Any] = data
        extra: Mapping[str, Any] = {}
        inner = data.get("map")
        if isinstance(inner, Mapping):
            entries = inner
            source = source or str(data.get("source") or "")
            packs_info = data.get("packs")
            extra = packs_info if isinstance(packs_info, Mapping) else {}
        packs: list[_Pack] = []
        skipped = 0
        for key, value in entries.items():
            info = extra.get(key)
            pack = _parse_entry(key, value, info if isinstance(info, Mapping) else {})
            if pack is None:
                skipped += 1
            else:
                packs.append(pack)
        if skipped:
            log.debug("node map %s: skipped %d malformed entries", source or "?", skipped)
        return cls(packs, source=source)

    @classmethod
    def merged(cls, *maps: NodeMap | None) -> NodeMap:
        """One map from several, the first winning: a pack found in two maps (same repository
        or registry id) keeps the first one's title and pattern, with the gaps (repository,
        id, stars) filled from the later ones and the classes of both."""
        packs: list[_Pack] = []
        index: dict[str, int] = {}
        sources = []
        for node_map in maps:
            if node_map is None:
                continue
            if node_map.source:
                sources.append(node_map.source)
            for pack in node_map._packs:
                keys = _identity_keys(pack.ref)
                at = next((index[k] for k in keys if k in index), None)
                if at is None:
                    at = len(packs)
                    packs.append(pack)
                else:
                    packs[at] = _combine(packs[at], pack)
                for key in _identity_keys(packs[at].ref):
                    index.setdefault(key, at)
        return cls(packs, source=" + ".join(sources))

    @classmethod
    def for_server(cls, live: object) -> NodeMap:
        """The map for one ComfyUI: its Manager's answer (`ComfyClient.node_mappings`) merged
        over the bundled copy; just the bundled copy when `live` is None or not a map."""
        bundled = cls.bundled()
        if live is None:
            return bundled
        try:
            served = cls.from_json(live, source="ComfyUI-Manager")
        except ValueError as exc:
            log.debug("ignoring the server's node map: %s", exc)
            return bundled
        return cls.merged(served, bundled) if len(served) else bundled

    # --- lookups ---

    def packs_for(self, class_type: str) -> tuple[PackRef, ...]:
        """The packs that provide a class, best first: those listing it by name (one claiming
        it for itself first, then ComfyUI, then by stars), then those whose `nodename_pattern`
        matches it. Empty when no pack is known."""
        exact = self._by_class.get(class_type, [])
        found = sorted(exact, key=lambda p: _rank(p, class_type))
        if len(class_type) <= _MAX_MATCHED_NAME:
            listed = {id(p) for p in exact}
            matched = [
                p
                for p in self._patterns
                if id(p) not in listed and p.pattern is not None and p.pattern.search(class_type)
            ]
            found += sorted(matched, key=lambda p: _rank(p, class_type))
        return tuple(_unique(p.ref for p in found))

    def find_pack(self, name: str) -> PackRef | None:
        """The pack a name means: a registry id, a repository URL, `owner/name`, or the
        repository's folder name (case, `-` and `_` ignored). None if no pack matches."""
        for key in _lookup_keys(name):
            packs = self._by_name.get(key)
            if packs:
                return max(packs, key=lambda p: p.ref.stars or 0).ref
        return None

    def classes_of(self, pack: PackRef) -> frozenset[str]:
        """The class names the map lists for a pack (empty if it doesn't know the pack)."""
        for key in _identity_keys(pack):
            for candidate in self._by_name.get(key, []):
                if candidate.ref == pack or candidate.ref.repository == pack.repository:
                    return candidate.classes
        return frozenset()

    def named_like(self, class_type: str) -> PackRef | None:
        """The pack whose classes a class is named like, for a class no pack lists.

        Packs name their classes with a mark of their own (`ACN_…`, `LTXV…`, `IPAdapter…`),
        and a class that a pack added (or dropped) after the map was made still carries it.
        The longest leading part of the name (up to an `_` or a capital starting a new word,
        4 characters at least, or 3 ending in `_`) that starts at least two of one pack's
        classes, and two thirds of all the classes that start with it, names that pack; None
        when none does. ComfyUI's own classes take no part: a core class is listed by name.
        """
        names, owners = self._sorted_classes()
        for prefix in _prefixes(class_type):
            start = bisect.bisect_left(names, prefix)
            end = bisect.bisect_left(names, prefix + "\U0010ffff", start)
            if start == end:
                continue
            counts = collections.Counter(owners[start:end])
            best, found = max(
                counts.items(), key=lambda item: (item[1], self._packs[item[0]].ref.stars or 0)
            )
            if found >= 2 and found * 3 >= (end - start) * 2:
                return self._packs[best].ref
        return None

    def _sorted_classes(self) -> tuple[list[str], list[int]]:
        """Every class name the map lists, sorted (once), with the index of its pack: names
        sharing a prefix are then one slice."""
        if self._by_prefix is None:
            # ComfyUI's own classes are left out: the map lists every core class, and core
            # names borrow the marks of packs (`LTXV…`), so they only blur the packs' own.
            pairs = sorted(
                (n, i)
                for i, pack in enumerate(self._packs)
                if not pack.ref.is_core
                for n in pack.classes
            )
            self._by_prefix = ([n for n, _ in pairs], [i for _, i in pairs])
        return self._by_prefix

    def claimants(self, class_type: str) -> int:
        """How many packs list a class by name."""
        return len(self._by_class.get(class_type, ()))


_MIN_PREFIX = 4


def _prefixes(name: str) -> list[str]:
    """The leading parts of a class name a pack may mark its classes with, longest first:
    up to each `_` and each capital that starts a new word (`LTXVShiftSigmas`: `LTXV`;
    `IPAdapterApply`: `IPAdapter`; `MZ_ChatGLM3`: `MZ_`), never the whole name."""
    cuts = set()
    for i in range(1, len(name)):
        before, here = name[i - 1], name[i]
        after = name[i + 1] if i + 1 < len(name) else ""
        if before == "_" or (
            here.isupper() and (before.islower() or (before.isupper() and after.islower()))
        ):
            cuts.add(i)
    return [
        name[:i]
        for i in sorted(cuts, reverse=True)
        if i >= _MIN_PREFIX or (i >= _MIN_PREFIX - 1 and name[i - 1] == "_")
    ]


@functools.cache
def _bundled() -> NodeMap:
    try:
        raw = resources.files(__package__).joinpath("data", BUNDLED_FILE).read_bytes()
        data = json.loads(gzip.decompress(raw))
        return NodeMap.from_json(data)
    except (OSError, EOFError, ValueError) as exc:
        log.error("the bundled node map %s is unreadable: %s", BUNDLED_FILE, exc)
        return NodeMap(source="none")


def _parse_entry(key: object, value: object, info: Mapping[str, Any]) -> _Pack | None:
    if not isinstance(key, str) or not key.strip():
        return None
    if not isinstance(value, Sequence) or isinstance(value, str) or len(value) < 2:
        return None
    names, meta = value[0], value[1]
    if not isinstance(names, Sequence) or isinstance(names, str) or not isinstance(meta, Mapping):
        return None
    key = key.strip()
    is_url = "://" in key
    repository = key if is_url else None
    pack_id = info.get("id") if isinstance(info.get("id"), str) else None
    if not is_url:
        pack_id = key
    title = next(
        (
            t.strip()
            for t in (meta.get("title_aux"), meta.get("title"), meta.get("nickname"))
            if isinstance(t, str) and t.strip()
        ),
        (_last_component(key) if is_url else key) or key,
    )
    stars = info.get("stars")
    ref = PackRef(
        title=title,
        repository=repository,
        id=pack_id,
        stars=stars if isinstance(stars, int) and not isinstance(stars, bool) else None,
    )
    preemptions = meta.get("preemptions")
    preempts = (
        frozenset(n for n in preemptions if isinstance(n, str))
        if isinstance(preemptions, list)
        else frozenset()
    )
    return _Pack(
        ref=ref,
        classes=frozenset(n for n in names if isinstance(n, str)),
        preempts=preempts,
        pattern=_compile(meta.get("nodename_pattern"), key),
    )


def _compile(pattern: object, key: str) -> re.Pattern[str] | None:
    if not isinstance(pattern, str) or not pattern or len(pattern) > _MAX_PATTERN:
        return None
    try:
        return re.compile(pattern)
    except (re.error, RecursionError, OverflowError) as exc:
        log.debug("node map: skipping the nodename_pattern of %s: %s", key, exc)
        return None


def _combine(first: _Pack, later: _Pack) -> _Pack:
    ref = first.ref
    ref = replace(
        ref,
        repository=ref.repository or later.ref.repository,
        id=ref.id or later.ref.id,
        stars=ref.stars if ref.stars is not None else later.ref.stars,
    )
    return _Pack(
        ref=ref,
        classes=first.classes | later.classes,
        preempts=first.preempts | later.preempts,
        pattern=first.pattern or later.pattern,
    )


def _rank(pack: _Pack, class_type: str) -> tuple[bool, bool, int, str]:
    return (
        class_type not in pack.preempts,
        not pack.ref.is_core,
        -(pack.ref.stars or 0),
        pack.ref.title.lower(),
    )


def _unique(refs: Iterable[PackRef]) -> list[PackRef]:
    seen: set[PackRef] = set()
    out = []
    for ref in refs:
        if ref not in seen:
            seen.add(ref)
            out.append(ref)
    return out


# --- names of packs ---------------------------------------------------------------------------


def _fold(name: str) -> str:
    """Case, `-`/`_` and a trailing `.git` or `@version` ignored: `ComfyUI_IPAdapter_plus` and
    `comfyui-ipadapter-plus` are one name."""
    name = name.strip().lower().split("@", 1)[0]
    name = name.removesuffix(".git")
    return name.replace("_", "-").strip("-")


def _last_component(url: str) -> str:
    path = url.split("://", 1)[-1].rstrip("/")
    return path.rsplit("/", 1)[-1].removesuffix(".git") if "/" in path else ""


def _owner_repo(url: str) -> str:
    """`owner/name` of a repository URL, lower case ("" if it has no such path)."""
    path = url.split("://", 1)[-1].rstrip("/").removesuffix(".git")
    parts = path.split("/")
    return "/".join(parts[1:3]).lower() if len(parts) >= 3 else ""


def _identity_keys(ref: PackRef) -> list[str]:
    keys = []
    if ref.repository:
        keys.append("url:" + (_owner_repo(ref.repository) or ref.repository.lower()))
    if ref.id:
        keys.append("id:" + ref.id.lower())
    return keys


def _pack_keys(ref: PackRef) -> list[str]:
    keys = _identity_keys(ref)
    if ref.repository:
        keys.append("name:" + _fold(_last_component(ref.repository)))
    if ref.id:
        keys.append("name:" + _fold(ref.id))
    return keys


def _lookup_keys(name: str) -> list[str]:
    name = name.strip()
    if not name:
        return []
    keys = []
    if "://" in name:
        keys.append("url:" + (_owner_repo(name) or name.lower()))
        name = _last_component(name)
    elif name.count("/") == 1:
        keys.append("url:" + name.lower().removesuffix(".git"))
        name = name.split("/")[1]
    keys += ["id:" + name.lower(), "name:" + _fold(name)]
    return keys


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
            names.add(_fold(module.split(".")[1]))
        pack = definition.get("pack")
        if isinstance(pack, str) and pack:
            names.add(_fold(pack.rsplit("/", 1)[-1]))
    names.discard("")
    return names


def _is_installed(
    pack: PackRef, node_map: NodeMap, object_info: Mapping[str, Any], names: set[str]
) -> bool:
    candidates = {_fold(pack.id)} if pack.id else set()
    if pack.repository:
        candidates.add(_fold(_last_component(pack.repository)))
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
    node_map: NodeMap,
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
        key = (_identity_keys(pack) or [pack.title])[0]
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


def _hinted_pack(hint: PackHint | None, node_map: NodeMap) -> PackRef | None:
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
    title = pack_id or (_last_component(url) if url else repository) or "?"
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


def _type_name(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return type(value).__name__
