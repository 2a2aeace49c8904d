"""What a member asks the engine for, and how a request becomes its jobs.

A `JobRequest` names a workflow, its raw values and who asks (with the files given for file
parameters as `ImageInput`s); `Engine.prepare` checks it and makes its jobs (`JobRequest.job`),
as many as `JobOptions.count` says, with consecutive seeds or those given (`seeds_around` picks
a variation's)::

    request = JobRequest("sd15-txt2img", {"prompt": "a cat"}, owner_id="1")
    jobs = await engine.submit(request, count=2)
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import KW_ONLY, dataclass, field
from typing import Any, TypedDict

from bot.jobs.model import Job, new_job_id

__all__ = ["ImageInput", "JobOptions", "JobRequest", "seeds_around"]

#: What a job takes over from its request as it is.
_CARRIED = ("workflow", "owner_id", "owner_name", "guild_id", "channel_id", "priority", "remix_of")


def seeds_around(seed: int, count: int, taken: Collection[int] = ()) -> list[int]:
    """`count` seeds next to `seed` (seed+1, seed-1, seed+2, ...), none of them in `taken`.

    Variations of an image use these: close to its seed, never one its group already used.
    """
    result: list[int] = []
    offset = 0
    while len(result) < count:
        offset += 1
        for candidate in (seed + offset, seed - offset):
            value = candidate % 2**32
            fresh = value != seed and value not in taken and value not in result
            if fresh and len(result) < count:
                result.append(value)
    return result


@dataclass(frozen=True)
class ImageInput:
    """A file given for a file parameter (an image, a video, a sound), with the name it came
    with (never trusted: it is kept under a name of its own, after what its bytes hold)."""

    filename: str
    data: bytes


@dataclass(frozen=True)
class JobRequest:
    """What a member asked for. `values` are raw (validated and completed by `submit`); the
    fields after them are given by name."""

    workflow: str
    values: Mapping[str, Any]
    _: KW_ONLY
    owner_id: str
    owner_name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None
    images: Mapping[str, ImageInput] = field(default_factory=dict)
    priority: int = 0
    remix_of: str | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)

    def job(self, values: dict[str, Any], *, group_id: str | None, **meta: Any) -> Job:
        """One of the jobs this request becomes: a new id, the checked `values`, and `meta`
        over the request's."""
        carried: dict[str, Any] = {name: getattr(self, name) for name in _CARRIED}
        return Job(
            id=new_job_id(), values=values, group_id=group_id, meta={**self.meta, **meta}, **carried
        )


class JobOptions(TypedDict, total=False):
    """How many jobs a request makes and how (`Engine.prepare`'s keywords)."""

    count: int
    exempt: bool
    seeds: Sequence[int] | None
