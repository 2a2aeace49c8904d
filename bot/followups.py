"""Follow-ups: workflows that take an image, offered on every result and on any image.

A pack declares itself a follow-up in its YAML::

    followup: {label: Upscale, emoji: "🔍", param: image}

Members then get a button per image of each result ("Upscale 2") and "Apps → Upscale" on any
message with an image. Every way in ends here: the chosen image goes to the follow-up's image
parameter, the text values both workflows share (prompt, negative) are carried over from the job
that made the image, and the new job goes through the same admission checks as `/imagine`,
credited as a remix of the original job (or of the member whose image it was).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from bot.admission import Admission, Admitted, Requester, image_offer
from bot.engine import ImageInput
from bot.errors import NotAllowed, NotFound
from bot.jobs.model import Job
from bot.media import Kind
from bot.policy import Policy
from bot.workflows import Workflow

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Followup:
    """A workflow offered on images: its name, what the button says, where the image goes."""

    workflow: str
    label: str
    emoji: str | None
    param: str
    accepts: frozenset[str] = frozenset({"image"})

    def takes(self, kind: str) -> bool:
        """Whether it is offered on a result of this kind (a `bot.media.Kind` value)."""
        return kind in self.accepts

    def takes_declared(self, mime: str | None) -> bool:
        """Whether a file that says it is `mime` (before its bytes are read) may be one it takes."""
        major = (mime or "").split("/")[0]
        return bool(_DECLARED.get(major, frozenset()) & self.accepts)

    @property
    def what(self) -> str:
        """What it takes, in words: "image", "video or animation"."""
        return " or ".join(Kind(k).noun for k in sorted(self.accepts))


#: The result kinds a file of each declared MIME major type may turn out to be.
_DECLARED = {
    "image": frozenset({"image", "animation"}),
    "video": frozenset({"video"}),
    "audio": frozenset({"audio"}),
}


@dataclass(frozen=True)
class Source:
    """The image a follow-up starts from.

    Attributes:
        image: its bytes.
        job: the comfycord job that made it, when known (its values are carried over).
        index: which of that job's images (0-based).
        author_id: the member who posted it, when it is not a comfycord result.
        message_id: the message it came from, when known.
    """

    image: ImageInput
    job: Job | None = None
    index: int = 0
    author_id: str | None = None
    message_id: str | None = None


def followups(workflows: Mapping[str, Workflow]) -> list[Followup]:
    """Every workflow that declares itself a follow-up with a real image param, by name."""
    found = []
    for name in sorted(workflows):
        workflow = workflows[name]
        spec = workflow.spec.followup
        if spec is None:
            continue
        param = workflow.param(spec.param)
        if param is None or not param.is_file:
            log.warning("%s: followup.param `%s` is not a file param; ignored", name, spec.param)
            continue
        found.append(Followup(name, spec.label, spec.emoji, spec.param, frozenset(spec.accepts)))
    return found


def offered(workflows: Mapping[str, Workflow], policy: Policy, job: Job) -> list[Followup]:
    """The follow-ups offered on a job's result: those its channel allows (checked again when
    one is chosen)."""
    workflow = workflows.get(job.workflow)
    nsfw = bool(workflow and workflow.spec.nsfw)
    return [
        f
        for f in followups(workflows)
        if policy.is_allowed(f.workflow, job.guild_id, job.channel_id, nsfw_channel=nsfw)
    ]


def output_image(job: Job, index: int) -> ImageInput:
    """The exact file a job produced, its `index`-th image.

    Raises:
        NotFound: the job has no such image, or its file is gone.
    """
    if not 0 <= index < len(job.outputs):
        raise NotFound(f"Job `{job.id}` has no image {index + 1}.")
    path = Path(job.outputs[index].path)
    if not path.is_file():
        raise NotFound(f"Image {index + 1} of job `{job.id}` is no longer kept.")
    return ImageInput(job.outputs[index].filename, path.read_bytes())


def admit_followup(
    admission: Admission, requester: Requester, followup: Followup, source: Source
) -> Admitted:
    """Check a follow-up of `source`'s image like any request; build it with `prepare_followup`.

    Raises:
        NotFound, NotAllowed, InvalidValue: as `Admission.admit` (e.g. the follow-up workflow is
            not allowed in this channel, or a carried-over prompt has a banned word).
    """
    target = admission.workflow_for(requester, followup.workflow)
    values: dict[str, Any] = {}
    origin: dict[str, Any] = {}
    if source.job is not None and 0 <= source.index < len(source.job.outputs):
        made = Kind(source.job.outputs[source.index].kind)
        if not followup.takes(made.value):
            takes = " or ".join(Kind(k).plural for k in sorted(followup.accepts))
            raise NotAllowed(
                f"{followup.label} takes {takes}; output {source.index + 1} of job "
                f"`{source.job.id}` is {'an' if made.noun[0] in 'aeiou' else 'a'} {made.noun}."
            )
    if source.job is not None:
        for param in target.params:
            value = source.job.values.get(param.name)
            if param.type == "text" and param.name != followup.param and value is not None:
                values[param.name] = value
        number = int(source.job.meta.get("index", 0)) + source.index + 1  # as the result shows it
        origin = {"job_id": source.job.id, "image": number}
        origin["owner_id"] = source.job.owner_id
    elif source.author_id is not None:
        origin = {"owner_id": source.author_id}
    if source.message_id is not None:
        origin["message_id"] = source.message_id
    admitted = admission.admit(
        requester,
        followup.workflow,
        values,
        images={followup.param: image_offer(source.image)},
        meta={"source": origin, "followup": followup.label},
    )
    credited = source.job is not None and source.job.owner_id != requester.id
    remix_of = source.job.id if credited and source.job is not None else None
    return replace(admitted, request=replace(admitted.request, remix_of=remix_of))


def prepare_followup(
    admission: Admission, admitted: Admitted, followup: Followup, source: Source
) -> list[Job]:
    """The jobs of an admitted follow-up with its image, built but not stored: the way in stores
    and queues them once, with where their answer goes (`Engine.enqueue`).

    Raises:
        UserError: what the engine refuses now (limits can change between admit and prepare).
    """
    return admission.prepare(admitted, {followup.param: source.image})


__all__ = [
    "Followup",
    "Source",
    "admit_followup",
    "followups",
    "offered",
    "output_image",
    "prepare_followup",
]
