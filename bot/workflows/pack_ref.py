"""A custom node pack as ComfyUI-Manager's map and UI exports name it, and the forms of its names.

A pack is known by its repository URL, its registry id (the `cnr_id` UI exports give) or its
folder name; `identity_keys` says which packs are one, `fold_name` which names are one
(`ComfyUI_IPAdapter_plus` and `comfyui-ipadapter-plus`). The node map (`bot.workflows.nodemap`)
and the advice on missing packs (`bot.workflows.pack_advice`) both speak of packs this way.
"""

from __future__ import annotations

from dataclasses import dataclass, field

__all__ = [
    "CORE_PACK",
    "CORE_URL",
    "PackRef",
    "fold_name",
    "identity_keys",
    "last_component",
    "owner_repo",
]

#: The registry id UI exports give ComfyUI's own nodes (`properties.cnr_id`).
CORE_PACK = "comfy-core"
CORE_URL = "https://github.com/comfyanonymous/ComfyUI"
_CORE_REPOSITORIES = frozenset({"comfyanonymous/comfyui", "comfy-org/comfyui"})


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
            return last_component(self.repository) or self.title
        return self.title

    @property
    def is_core(self) -> bool:
        """Whether this is ComfyUI itself (its classes come with ComfyUI updates)."""
        if self.id == CORE_PACK:
            return True
        return self.repository is not None and owner_repo(self.repository) in _CORE_REPOSITORIES


def fold_name(name: str) -> str:
    """Case, `-`/`_` and a trailing `.git` or `@version` ignored: `ComfyUI_IPAdapter_plus` and
    `comfyui-ipadapter-plus` are one name."""
    name = name.strip().lower().split("@", 1)[0]
    name = name.removesuffix(".git")
    return name.replace("_", "-").strip("-")


def last_component(url: str) -> str:
    path = url.split("://", 1)[-1].rstrip("/")
    return path.rsplit("/", 1)[-1].removesuffix(".git") if "/" in path else ""


def owner_repo(url: str) -> str:
    """`owner/name` of a repository URL, lower case ("" if it has no such path)."""
    path = url.split("://", 1)[-1].rstrip("/").removesuffix(".git")
    parts = path.split("/")
    return "/".join(parts[1:3]).lower() if len(parts) >= 3 else ""


def identity_keys(ref: PackRef) -> list[str]:
    keys = []
    if ref.repository:
        keys.append("url:" + (owner_repo(ref.repository) or ref.repository.lower()))
    if ref.id:
        keys.append("id:" + ref.id.lower())
    return keys
