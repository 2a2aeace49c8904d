"""Admission: the one place that decides whether a request may run, for every way in.

Discord, the HTTP API and the CLI hand `Admission.admit` who asks (a `Requester`) and the raw
values they gave; it checks, in order: the workflow exists and is allowed here (policy, NSFW,
the requester's own list), every value names a parameter, files are what their params take
(an image, a video, a sound; `bot.media.uploads`) of a sane size,
values coerce (types, ranges, choices), banned words, the server's caps, `count`, and the
requester's queue limits. It returns an `Admitted` ticket, or raises the `UserError` that says
what is wrong. Nothing is stored until `Admission.submit` queues the ticket, so a refused request
leaves no trace. Remixes (reroll, variations) of a finished job go through the same checks.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from bot.engine import Engine, ImageInput, JobRequest, seeds_around
from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.model import Job
from bot.media import sniff
from bot.media.uploads import check_declared
from bot.policy import Policy
from bot.settings import LimitSettings
from bot.workflows import Workflow
from bot.workflows.patch import coerce_values

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Requester:
    """Who asks, and from where.

    Attributes:
        id: the member of the fair queue (a Discord user id, `key:NAME` for an API key, `cli`).
        name: shown on results and in /queue.
        guild_id: the Discord server whose policy applies (None outside Discord).
        channel_id: the channel whose policy applies.
        nsfw_channel: the place is age-restricted (NSFW workflows are allowed only there).
        moderator: may be exempt from limits or go first, as the server's limits say.
        workflows: the only workflows this requester may use (None: any the place allows).
        limits: the requester's own limits instead of the place's (API keys have their own).
    """

    id: str
    name: str = ""
    guild_id: str | None = None
    channel_id: str | None = None
    nsfw_channel: bool = False
    moderator: bool = False
    workflows: frozenset[str] | None = None
    limits: LimitSettings | None = None
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class ImageOffer:
    """An image offered for an image parameter, described before its bytes are read."""

    filename: str
    content_type: str | None
    size: int


@dataclass(frozen=True)
class Admitted:
    """A request that passed every check: queue it with `Admission.submit`."""

    workflow: Workflow
    request: JobRequest
    count: int
    exempt: bool
    seeds: tuple[int, ...] | None = None


class Admission:
    """Checks requests against the workflows, the policy and the limits; queues admitted ones."""

    def __init__(self, engine: Engine, policy: Policy) -> None:
        self.engine = engine
        self.policy = policy
        engine.set_limits_source(self.limits_of_job)

    def limits(self, requester: Requester) -> LimitSettings:
        """The limits that apply to this requester (their own, else the place's)."""
        return requester.limits or self.policy.limits(requester.guild_id)

    def limits_of_job(self, job: Job) -> LimitSettings:
        """The limits a job was admitted under (its requester's own, else its server's)."""
        own = job.meta.get("limits")
        if isinstance(own, Mapping):
            return LimitSettings.model_validate(own)
        return self.policy.limits(job.guild_id)

    def workflow_for(self, requester: Requester, name: str | None) -> Workflow:
        """The workflow called `name` (the place's default when None), if this requester may use it.

        Raises:
            NotFound: no such workflow.
            NotAllowed: not allowed here or for this requester.
        """
        name = name or self.policy.default_workflow(requester.guild_id, requester.channel_id)
        if requester.workflows is not None and name not in requester.workflows:
            if name not in self.engine.workflows:
                raise NotFound(f"There is no workflow called `{name}`.")
            raise NotAllowed(f"`{name}` is not one of the workflows you may use.")
        return self.policy.check_allowed(
            name, requester.guild_id, requester.channel_id, nsfw_channel=requester.nsfw_channel
        )

    def admit(
        self,
        requester: Requester,
        workflow_name: str | None,
        values: Mapping[str, Any],
        *,
        images: Mapping[str, ImageOffer] | None = None,
        count: Any = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Admitted:
        """Check one request; nothing is stored.

        Args:
            requester: who asks, and where.
            workflow_name: the workflow (None: the place's default).
            values: param name -> raw value (None means "not given"). `prompt` names the
                workflow's prompt parameter whatever it is called.
            images: image param name -> the image offered for it (bytes come at `submit`).
            count: how many images (one seed each); 1 when None.
            meta: kept on the jobs (e.g. where to send a webhook).

        Raises:
            NotFound: no such workflow.
            NotAllowed: not allowed here, a banned word, over a limit or in cooldown.
            InvalidValue: a value is unknown, of the wrong type, out of range or over a cap.
        """
        workflow = self.workflow_for(requester, workflow_name)
        images = dict(images or {})
        raw = {k: v for k, v in values.items() if v is not None and k not in images}
        prompt_param = workflow.prompt_param
        if (
            prompt_param is not None
            and "prompt" in raw
            and prompt_param.name != "prompt"
            and workflow.param("prompt") is None
        ):
            raw[prompt_param.name] = raw.pop("prompt")
        for key in [*raw, *images]:
            param = workflow.param(key)
            if param is None:
                takes = ", ".join(p.name for p in workflow.params)
                raise InvalidValue(
                    key, f"the workflow `{workflow.name}` has no such option (it takes {takes})"
                )
            if key in images and not param.is_file:
                raise InvalidValue(key, "is not an image option (nor a video or audio one)")
            if key in images:
                offer = images[key]
                check_declared(key, param.type, offer.content_type, offer.size)
        # types, ranges and choices (engine.submit coerces again; this refuses early), so that
        # caps compare numbers, not the text "40"
        coerced = coerce_values(
            workflow,
            {**raw, **{k: "pending-upload.png" for k in images}},
            object_info=self.engine.object_info,
        )
        given = {k: coerced.get(k, v) for k, v in raw.items()}
        texts = {
            p.name: str(given[p.name])
            for p in workflow.params
            if p.type == "text" and p.name in given
        }
        self.policy.check_prompt(requester.guild_id, texts)
        self.policy.check_caps(requester.guild_id, given, workflow)
        return self._ticket(requester, workflow, given, _count(count), meta=meta)

    def remix(self, requester: Requester, original: Job, *, variations: bool) -> Admitted:
        """Reroll (same values, a new seed) or Variations (seeds around the job's seed).

        Anyone allowed to use the workflow here may remix anyone's result; a remix of another
        member's job credits them (`remix_of`). The count is the original's, within today's
        limit.

        Raises:
            NotFound, NotAllowed, InvalidValue: as `admit`.
        """
        workflow = self.workflow_for(requester, original.workflow)
        values = dict(original.values)
        images = {
            name: ImageInput(Path(path).name, Path(path).read_bytes())
            for name, path in original.meta.get("inputs", {}).items()
            if Path(path).is_file()
        }
        for name in images:
            values.pop(name, None)
        texts = {
            p.name: str(values[p.name])
            for p in workflow.params
            if p.type == "text" and values.get(p.name) is not None
        }
        self.policy.check_prompt(requester.guild_id, texts)
        self.policy.check_caps(requester.guild_id, values, workflow)
        limits = self.limits(requester)
        count = min(int(original.meta.get("count", 1)), limits.max_count)
        seed = workflow.seed_param
        seeds: list[int] | None = None
        if seed is not None:
            if variations:
                group = self.engine.store.group(original.group_id) if original.group_id else []
                taken = {int(j.values.get(seed.name, 0)) for j in group}
                seeds = seeds_around(int(values.get(seed.name, 0)), count, taken)
            else:
                values[seed.name] = self.engine.random_seed()
        remix_of = original.id if requester.id != original.owner_id else None
        admitted = self._ticket(requester, workflow, values, count, seeds=seeds, remix_of=remix_of)
        return replace(admitted, request=replace(admitted.request, images=images))

    def _ticket(
        self,
        requester: Requester,
        workflow: Workflow,
        values: dict[str, Any],
        count: int,
        *,
        seeds: Sequence[int] | None = None,
        remix_of: str | None = None,
        meta: Mapping[str, Any] | None = None,
    ) -> Admitted:
        limits = self.limits(requester)
        exempt = requester.moderator and limits.moderators_exempt
        request = JobRequest(
            workflow=workflow.name,
            values=values,
            owner_id=requester.id,
            owner_name=requester.name,
            guild_id=requester.guild_id,
            channel_id=requester.channel_id,
            priority=1 if requester.moderator and limits.moderators_first else 0,
            remix_of=remix_of,
            meta={**requester.meta, **(meta or {})},
        )
        if requester.limits is not None:
            request = replace(
                request, meta={**request.meta, "limits": requester.limits.model_dump()}
            )
        self.engine.check_limits(request, count=count, exempt=exempt)
        return Admitted(
            workflow, request, count, exempt, tuple(seeds) if seeds is not None else None
        )

    async def submit(
        self, admitted: Admitted, images: Mapping[str, ImageInput] | None = None
    ) -> list[Job]:
        """Queue an admitted request with its images' bytes.

        Raises:
            UserError: what the engine refuses now (limits can change between admit and submit).
        """
        return self.engine.enqueue(self.prepare(admitted, images))

    def prepare(
        self, admitted: Admitted, images: Mapping[str, ImageInput] | None = None
    ) -> list[Job]:
        """The jobs of an admitted request, built but not stored: `engine.enqueue` stores them
        (with where their reply lives, when the caller has one).

        Raises:
            UserError: what the engine refuses now (limits can change between admit and submit).
        """
        request = admitted.request
        if images:
            request = replace(request, images={**request.images, **images})
        return self.engine.prepare(
            request, count=admitted.count, exempt=admitted.exempt, seeds=admitted.seeds
        )


def image_offer(image: ImageInput) -> ImageOffer:
    """Describe a file whose bytes are at hand, its type read from the bytes themselves."""
    return ImageOffer(image.filename, sniff(image.data).mime, len(image.data))


def _count(count: Any) -> int:
    if count is None:
        return 1
    if isinstance(count, bool):
        raise InvalidValue("count", "must be a whole number")
    if isinstance(count, int):
        return count
    if isinstance(count, float) and count.is_integer():
        return int(count)
    if isinstance(count, str) and count.strip().isdigit():
        return int(count.strip())
    raise InvalidValue("count", "must be a whole number")


__all__ = ["Admission", "Admitted", "ImageOffer", "Requester", "image_offer"]
