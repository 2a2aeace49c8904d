"""Request and response bodies of the HTTP API; the OpenAPI document is generated from these."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    model_config = ConfigDict(frozen=True)


class Problem(_Model):
    """An error (RFC 9457 problem details)."""

    type: str = Field("about:blank", description="A URI that names the kind of problem")
    title: str = Field(description="A short summary of the kind of problem")
    status: int = Field(description="The HTTP status code")
    detail: str = Field(description="What went wrong, in plain words")
    instance: str | None = Field(None, description="The request path")
    field: str | None = Field(None, description="The parameter or field that was wrong")


class ParamInfo(_Model):
    """One parameter of a workflow."""

    name: str
    type: str = Field(description="text, int, float, seed, bool, choice, enum or image")
    description: str
    required: bool
    default: Any = None
    minimum: float | None = None
    maximum: float | None = None
    max_length: int | None = None
    choices: list[str] | None = None


class WorkflowInfo(_Model):
    """A workflow that can be run."""

    name: str
    title: str
    description: str
    params: list[ParamInfo]
    jobs_url: str = Field(description="POST here to run it")


class WorkflowDetail(WorkflowInfo):
    """A workflow with the JSON Schema of its request body."""

    request_schema: dict[str, Any] = Field(description="JSON Schema of the request body")


class WorkflowList(_Model):
    workflows: list[WorkflowInfo]


class Progress(_Model):
    """Where a running job is."""

    node: str | None = Field(None, description="Title of the node running now")
    node_index: int = 0
    node_count: int = 0
    step: int = 0
    steps: int = 0


OutputKind = Literal["image", "animation", "video", "audio", "model", "text", "file"]


class OutputInfo(_Model):
    """A file a job made; `kind` and `content_type` come from its bytes, not its name. A text
    output (a node's returned string) is a `text/plain` file too. `width` and `height` are 0
    where they do not apply."""

    index: int
    url: str
    filename: str
    content_type: str
    kind: OutputKind
    width: int
    height: int


JobStateName = Literal["queued", "submitted", "running", "done", "failed", "cancelled"]


class JobInfo(_Model):
    """A job: its state, place in the queue, progress, error and outputs."""

    id: str
    workflow: str
    state: JobStateName
    position: int | None = Field(None, description="Place in the queue (0: running)")
    progress: Progress | None = None
    error: str | None = None
    values: dict[str, Any]
    group_id: str | None = None
    created_at: float
    started_at: float | None = None
    finished_at: float | None = None
    outputs: list[OutputInfo]
    url: str
    events_url: str


class JobsCreated(_Model):
    """The jobs a request was queued as (one per image asked for)."""

    jobs: list[JobInfo]
    finished: bool = Field(description="Every job has finished (`?wait` was long enough)")


class Health(_Model):
    status: Literal["ok", "unavailable"]
    checks: dict[str, str] = Field(default_factory=dict)


class JobEvent(_Model):
    """The data of one server-sent event on /v1/jobs/{id}/events."""

    event: Literal["queued", "position", "progress", "preview", "done", "failed"]
    job: JobInfo
    preview: str | None = Field(None, description="A data: URL of the preview image")


MODELS: tuple[type[BaseModel], ...] = (
    Problem,
    ParamInfo,
    WorkflowInfo,
    WorkflowDetail,
    WorkflowList,
    Progress,
    OutputInfo,
    JobInfo,
    JobsCreated,
    Health,
    JobEvent,
)
