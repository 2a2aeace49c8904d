"""Remixes of a finished job: Reroll, Variations and Edit, the same for every way in.

- Reroll: the job's values again with a new seed.
- Variations: seeds around the job's seed, none its group has used already.
- Edit: the job's values with changed text values, the same seeds (one per job of its group).

Each runs with the input files the job kept, goes through the same admission checks as a new
request, and is credited as a remix of the original (`remix_of`) when another member asks.
Follow-ups, which take one of a job's images into another workflow, are in `bot.followups`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from pathlib import Path

from bot.admission import Admission, Admitted, Requester, image_offer
from bot.engine import Engine, ImageInput
from bot.errors import NotAllowed, NotFound
from bot.jobs.model import Job
from bot.workflows import Workflow


def original(engine: Engine, job_id: str) -> Job:
    """The job a remix or follow-up starts from.

    Raises:
        NotFound: the store no longer has it.
    """
    job = engine.get_job(job_id)
    if job is None:
        raise NotFound(f"There is no job `{job_id}` any more.")
    return job


def reroll(admission: Admission, requester: Requester, job: Job) -> Admitted:
    """The job's values with a new seed, its count within today's limit.

    Raises:
        NotFound, NotAllowed, InvalidValue: as `Admission.admit`.
    """
    return admission.remix(requester, job, variations=False)


def variations(admission: Admission, requester: Requester, job: Job) -> Admitted:
    """The job's values with seeds around its seed.

    Raises:
        NotFound, NotAllowed, InvalidValue: as `Admission.admit`.
    """
    return admission.remix(requester, job, variations=True)


def edit_fields(workflow: Workflow, job: Job) -> tuple[tuple[str, str], tuple[str, str] | None]:
    """What Edit offers to change: the prompt (or the first text value), and the negative
    prompt when the workflow has one; each as (param name, the job's value).

    Raises:
        NotAllowed: the workflow has no text to edit.
    """
    prompt = workflow.prompt_param or next((p for p in workflow.params if p.type == "text"), None)
    if prompt is None:
        raise NotAllowed(f"`{workflow.name}` has no prompt to edit.")
    negative = workflow.param("negative")
    fields = (prompt.name, str(job.values.get(prompt.name) or ""))
    other = None
    if negative is not None and negative.type == "text" and negative is not prompt:
        other = (negative.name, str(job.values.get(negative.name) or ""))
    return fields, other


def edit(
    admission: Admission, requester: Requester, job: Job, edited: Mapping[str, str]
) -> Admitted:
    """The job's values (and seeds, and input files) with the `edited` text values; its
    request carries the files, so `Admission.submit(admitted)` queues it.

    Raises:
        NotFound, NotAllowed, InvalidValue: as `Admission.admit`.
    """
    workflow = admission.workflow_for(requester, job.workflow)
    group = admission.engine.store.group(job.group_id) if job.group_id else []
    group = group or [job]
    inputs: dict[str, str] = job.meta.get("inputs", {})
    images = {
        name: ImageInput(Path(path).name, Path(path).read_bytes())
        for name, path in inputs.items()
        if Path(path).is_file()
    }
    values = {k: v for k, v in job.values.items() if k not in inputs and not _is_file(workflow, k)}
    values.update(edited)
    admitted = admission.admit(
        requester,
        job.workflow,
        values,
        images={k: image_offer(v) for k, v in images.items()},
        count=len(group),
    )
    seed = workflow.seed_param
    if seed is not None:
        admitted = replace(admitted, seeds=tuple(int(j.values.get(seed.name, 0)) for j in group))
    remix_of = job.id if requester.id != job.owner_id else admitted.request.remix_of
    request = replace(
        admitted.request, remix_of=remix_of, images={**admitted.request.images, **images}
    )
    return replace(admitted, request=request)


def _is_file(workflow: Workflow, name: str) -> bool:
    param = workflow.param(name)
    return param is not None and param.is_file


__all__ = ["edit", "edit_fields", "original", "reroll", "variations"]
