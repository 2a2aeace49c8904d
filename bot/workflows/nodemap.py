"""Which custom node pack provides a node class.

ComfyUI-Manager publishes the map from node class to pack (`extension-node-map.json`: for each
pack's repository, its class names and sometimes a `nodename_pattern` regex). A copy ships with
the bot (`data/extension-node-map.json.gz`, taken from the PyPI package `comfyui-manager` by
`scripts/update-node-map`, with each pack's registry id and stars; its `source` names the
version). A ComfyUI with the Manager also serves its own map (`ComfyClient.node_mappings`);
when it answers, its entries win::

    node_map = NodeMap.for_server(await client.node_mappings())   # or NodeMap.bundled()
    node_map.packs_for("FaceDetailer")[0].title                   # 'ComfyUI Impact Pack'

A class's packs come best first: a pack that claims the class for itself (the map's
`preemptions`), then ComfyUI itself, then the pack with the most stars. What a moderator should
do about a missing class (install, update the pack, update ComfyUI) is `bot.workflows.pack_advice`,
whose names this module also exports (`advise`, `Hint`, `PackAdvice`, `ACTION_CODES`...).

Nothing here raises on odd data: bad map entries are skipped, and a missing bundled copy gives
an empty map (logged).
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
from dataclasses import dataclass, replace
from importlib import resources
from typing import Any

from bot.workflows.pack_advice import (
    ACTION_CODES,
    MAX_MESSAGE,
    Action,
    Hint,
    PackAdvice,
    PackHint,
    advise,
)
from bot.workflows.pack_ref import (
    CORE_PACK,
    PackRef,
    fold_name,
    identity_keys,
    last_component,
    owner_repo,
)

log = logging.getLogger(__name__)

__all__ = [
    "ACTION_CODES",
    "BUNDLED_FILE",
    "CORE_PACK",
    "MAX_MESSAGE",
    "Action",
    "Hint",
    "NodeMap",
    "PackAdvice",
    "PackHint",
    "PackRef",
    "advise",
]

BUNDLED_FILE = "extension-node-map.json.gz"
_MAX_PATTERN = 500  # a longer nodename_pattern is not compiled
_MAX_MATCHED_NAME = 300  # patterns are not tried on longer class names


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
                keys = identity_keys(pack.ref)
                at = next((index[k] for k in keys if k in index), None)
                if at is None:
                    at = len(packs)
                    packs.append(pack)
                else:
                    packs[at] = _combine(packs[at], pack)
                for key in identity_keys(packs[at].ref):
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
        for key in identity_keys(pack):
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
        (last_component(key) if is_url else key) or key,
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


def _pack_keys(ref: PackRef) -> list[str]:
    keys = identity_keys(ref)
    if ref.repository:
        keys.append("name:" + fold_name(last_component(ref.repository)))
    if ref.id:
        keys.append("name:" + fold_name(ref.id))
    return keys


def _lookup_keys(name: str) -> list[str]:
    name = name.strip()
    if not name:
        return []
    keys = []
    if "://" in name:
        keys.append("url:" + (owner_repo(name) or name.lower()))
        name = last_component(name)
    elif name.count("/") == 1:
        keys.append("url:" + name.lower().removesuffix(".git"))
        name = name.split("/")[1]
    keys += ["id:" + name.lower(), "name:" + fold_name(name)]
    return keys


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
