"""The routes of the HTTP API: thin handlers that parse, call the engine and shape the answer."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import tempfile
from pathlib import Path
from typing import Any

from aiohttp import BodyPartReader, web
from aiohttp_sse import sse_response
from multidict import MultiMapping

from bot.admission import ImageOffer, image_offer
from bot.engine import ImageInput
from bot.errors import InvalidValue
from bot.http.console.sessions import CSRF_HEADER, SAFE_METHODS, csrf_ok, session_of
from bot.http.fields import filled
from bot.http.keys import ApiKey
from bot.http.models import (
    Health,
    JobEvent,
    JobsCreated,
    ParamInfo,
    WorkflowDetail,
    WorkflowInfo,
    WorkflowList,
)
from bot.http.openapi import WAIT_MAX, build_document, param_choices, request_schema
from bot.http.problems import MALFORMED_MULTIPART, ApiProblem, malformed_multipart
from bot.http.service import PROGRESS_KINDS, HttpApi, data_url
from bot.http.urls import check_host, check_url, decode_image, fetch_image
from bot.jobs.model import Job, JobState
from bot.jobs.runner import JobUpdate
from bot.media import Kind
from bot.metrics import CONTENT_TYPE as METRICS_TYPE
from bot.workflows import Workflow

log = logging.getLogger(__name__)

API = web.AppKey("api", HttpApi)
routes = web.RouteTableDef()


def api_of(request: web.Request) -> HttpApi:
    return request.app[API]


def key_of(request: web.Request) -> ApiKey:
    """The key of an `Authorization: Bearer KEY` header, or of the console's session cookie.

    A request by session that changes something must carry the session's CSRF token in the
    `X-CSRF-Token` header.

    Raises:
        ApiProblem: 401 without a header or session, or with a key that is unknown or revoked;
            403 for a session's state-changing request without its CSRF token.
    """
    header = request.headers.get("Authorization", "")
    if not header:
        signed_in = session_of(request)
        if signed_in is not None:
            session_id, session = signed_in
            if request.method not in SAFE_METHODS and not csrf_ok(
                session_id, request.headers.get(CSRF_HEADER)
            ):
                raise ApiProblem(
                    403,
                    "The console's CSRF token is missing or wrong; reload the page.",
                    field=CSRF_HEADER,
                )
            return session.key
    scheme, _, secret = header.partition(" ")
    if scheme.lower() != "bearer" or not secret.strip():
        raise ApiProblem(401, "Send an API key: Authorization: Bearer KEY.", field="Authorization")
    key = api_of(request).keys.check(secret.strip())
    if key is None:
        raise ApiProblem(
            401, "This API key is not valid (unknown or revoked).", field="Authorization"
        )
    return key


def admin_of(request: web.Request) -> ApiKey:
    """The request's key when it is an admin key.

    Raises:
        ApiProblem: 401 as `key_of`; 403 for a member key.
    """
    key = key_of(request)
    if not key.is_admin:
        raise ApiProblem(
            403,
            f"The key '{key.name}' is a member key; this needs an admin key "
            "(comfycord keys create NAME --admin).",
        )
    return key


def json_response(
    model: Any, status: int = 200, headers: dict[str, str] | None = None
) -> web.Response:
    return web.Response(
        status=status,
        body=model.model_dump_json(),
        content_type="application/json",
        headers=headers,
    )


# workflows --------------------------------------------------------------------------------------
def _allowed(api: HttpApi, key: ApiKey) -> list[Workflow]:
    requester = key.requester(api.settings.limits)
    names = api.admission.policy.allowed(None, None, nsfw_channel=requester.nsfw_channel)
    return [
        api.engine.workflows[n]
        for n in names
        if requester.workflows is None or n in requester.workflows
    ]


def _workflow_info(api: HttpApi, workflow: Workflow, base: str) -> dict[str, Any]:
    info = api.engine.object_info
    params = [
        filled(
            ParamInfo,
            p,
            minimum=p.min,
            maximum=p.max,
            choices=list(param_choices(workflow, p, info)) or None
            if p.type in ("choice", "enum")
            else None,
        )
        for p in workflow.params
    ]
    return {
        "name": workflow.name,
        "title": workflow.spec.title,
        "description": workflow.spec.description or "",
        "params": params,
        "jobs_url": f"{base}/v1/workflows/{workflow.name}/jobs",
    }


@routes.get("/v1/workflows")
async def list_workflows(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    base = api.base_url(request)
    workflows = [
        WorkflowInfo(**_workflow_info(api, w, base)) for w in _allowed(api, key_of(request))
    ]
    return json_response(WorkflowList(workflows=workflows))


def workflow_detail(api: HttpApi, workflow: Workflow, key: ApiKey, base: str) -> WorkflowDetail:
    """A workflow with the JSON Schema of a request that runs it with this key."""
    requester = key.requester(api.settings.limits)
    schema = request_schema(
        workflow,
        max_count=api.admission.limits(requester).max_count,
        image_urls=api.settings.http.image_urls,
        object_info=api.engine.object_info,
    )
    return WorkflowDetail(**_workflow_info(api, workflow, base), request_schema=schema)


@routes.get("/v1/workflows/{name}")
async def get_workflow(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    key = key_of(request)
    requester = key.requester(api.settings.limits)
    workflow = api.admission.workflow_for(requester, request.match_info["name"])
    return json_response(workflow_detail(api, workflow, key, api.base_url(request)))


# submitting ------------------------------------------------------------------------------------
def _wait_seconds(query: MultiMapping[str]) -> float:
    raw = query.get("wait")
    if raw is None or raw == "":
        return 0.0
    try:
        wait = float(raw)
    except ValueError:
        raise InvalidValue("wait", f"must be a number of seconds from 0 to {WAIT_MAX}") from None
    if not math.isfinite(wait) or not 0 <= wait <= WAIT_MAX:
        raise InvalidValue("wait", f"must be a number of seconds from 0 to {WAIT_MAX}")
    return wait


async def _read_body(
    request: web.Request, workflow: Workflow, api: HttpApi
) -> tuple[dict[str, Any], dict[str, ImageInput], dict[str, str]]:
    """Values, uploaded images, and images given as text (URL or base64), by param name."""
    limit = api.settings.http.max_body_bytes
    if request.content_length is not None and request.content_length > limit:
        raise ApiProblem(413, f"The request body is too large ({limit} bytes at most).")
    kind = request.content_type
    images_given: dict[str, str] = {}
    uploads: dict[str, ImageInput] = {}
    values: dict[str, Any] = {}
    image_params = {p.name for p in workflow.params if p.is_file}
    if kind == "application/json":
        try:
            body = await request.json()
        except LookupError:
            raise ApiProblem(
                415, f"Unknown charset '{request.charset}': send UTF-8 JSON.", field="body"
            ) from None
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise ApiProblem(400, "The body is not valid JSON.", field="body") from None
        if not isinstance(body, dict):
            raise InvalidValue("body", "must be a JSON object of option values")
        for name, value in body.items():
            if name in image_params and value is not None:
                if not isinstance(value, str):
                    raise InvalidValue(name, "must be a file as base64, a data: URL or a URL")
                images_given[name] = value
            else:
                values[name] = value
    elif kind == "multipart/form-data":
        try:
            await _read_multipart(request, limit, image_params, values, uploads, images_given)
        except MALFORMED_MULTIPART as exc:
            raise malformed_multipart(exc) from None
    else:
        raise ApiProblem(
            415,
            "Send application/json or multipart/form-data.",
            field="Content-Type",
        )
    return values, uploads, images_given


async def _read_multipart(
    request: web.Request,
    limit: int,
    image_params: set[str],
    values: dict[str, Any],
    uploads: dict[str, ImageInput],
    images_given: dict[str, str],
) -> None:
    """Read a multipart body into values, uploaded files and images given as text, checking
    its size as it streams.

    Raises:
        ValueError: the body is not multipart as its header says (aiohttp's parser).
        BadHttpMessage: a part's headers are not valid HTTP (aiohttp's parser).
    """
    reader = await request.multipart()
    total = 0
    while (part := await reader.next()) is not None:
        if not isinstance(part, BodyPartReader):
            raise InvalidValue("body", "nested multipart bodies are not supported")
        name = part.name or ""
        data = bytearray()
        while chunk := await part.read_chunk(65536):
            data += chunk
            total += len(chunk)
            if total > limit:
                raise ApiProblem(413, f"The request body is too large ({limit} bytes at most).")
        if part.filename is not None:
            if name not in image_params:
                raise InvalidValue(name or "file", "only image, video and audio options take files")
            uploads[name] = ImageInput(Path(part.filename).name or "image.png", bytes(data))
        else:
            try:
                text = bytes(data).decode()
            except UnicodeDecodeError:
                raise InvalidValue(name or "field", "must be UTF-8 text") from None
            if name in image_params:
                images_given[name] = text
            else:
                values[name] = text


@routes.post("/v1/workflows/{name}/jobs")
async def create_jobs(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    key = key_of(request)
    requester = key.requester(api.settings.limits)
    wait = _wait_seconds(request.query)
    workflow = api.admission.workflow_for(requester, request.match_info["name"])
    values, uploads, given = await _read_body(request, workflow, api)
    count = values.pop("count", None)
    webhook = values.pop("webhook", None)
    meta: dict[str, Any] = {}
    http = api.settings.http
    if webhook is not None:
        if not isinstance(webhook, str):
            raise InvalidValue("webhook", "must be an http(s) URL")
        url = check_url(webhook, "webhook", allow_private=http.allow_private_urls)
        meta["webhook"] = str(url)
    # everything but the images' bytes first: a refused request fetches nothing
    placeholder = ImageOffer("file", None, 0)  # its bytes decide, once fetched
    offers = {name: placeholder for name in [*uploads, *given]}
    api.admission.admit(requester, workflow.name, values, images=offers, count=count, meta=meta)
    if webhook is not None:
        await check_host(api.outbound, check_url(webhook, "webhook", allow_private=True), "webhook")
    images = dict(uploads)
    for name, text in given.items():
        if text.startswith(("http://", "https://")):
            if not http.image_urls:
                raise InvalidValue(name, "images given as URLs are not accepted here")
            images[name] = await fetch_image(
                api.outbound,
                text,
                name,
                max_bytes=http.max_image_bytes,
                allow_private=http.allow_private_urls,
            )
        else:
            images[name] = decode_image(
                text, name, max_bytes=http.max_image_bytes, urls=http.image_urls
            )
    for name, image in images.items():
        if len(image.data) > http.max_image_bytes:
            raise ApiProblem(
                413, f"The file is too large ({http.max_image_bytes} bytes at most).", field=name
            )
    admitted = api.admission.admit(
        requester,
        workflow.name,
        values,
        images={k: image_offer(v) for k, v in images.items()},
        count=count,
        meta=meta,
    )
    jobs = await _submit_and_wait(api, admitted, images, wait)
    base = api.base_url(request)
    created = JobsCreated(
        jobs=[api.job_info(j, base) for j in jobs],
        finished=all(j.state.finished for j in jobs),
    )
    status = 200 if created.finished and wait else 202
    return json_response(created, status, headers={"Location": created.jobs[0].url})


async def _submit_and_wait(
    api: HttpApi, admitted: Any, images: dict[str, ImageInput], wait: float
) -> list[Job]:
    finished: set[str] = set()
    ids: set[str] = set()
    done = asyncio.Event()

    def on_update(update: JobUpdate) -> None:
        if update.kind == "finished" and update.job.id in ids:
            finished.add(update.job.id)
            if finished >= ids:
                done.set()

    unlisten = api.engine.listen(on_update)
    try:
        jobs = await api.admission.submit(admitted, images)
        ids.update(j.id for j in jobs)
        finished.update(j.id for j in jobs if (api.engine.get_job(j.id) or j).state.finished)
        if wait > 0 and finished < ids:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(done.wait(), wait)
    finally:
        unlisten()
    return [api.engine.get_job(j.id) or j for j in jobs]


# jobs -------------------------------------------------------------------------------------------
def _job(request: web.Request) -> Job:
    api = api_of(request)
    job_id = request.match_info["job_id"]
    key = key_of(request)
    # an admin key sees every job (the console's gallery shows them all)
    job = api.engine.get_job(job_id) if key.is_admin else api.job_for(key, job_id)
    if job is None:
        raise ApiProblem(404, f"There is no job '{job_id}' for this key.", field="job_id")
    return job


@routes.get("/v1/jobs/{job_id}")
async def get_job(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    return json_response(api.job_info(_job(request), api.base_url(request)))


@routes.delete("/v1/jobs/{job_id}")
async def cancel_job(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    job = _job(request)
    if job.state.finished:
        raise ApiProblem(409, f"Job '{job.id}' has already finished ({job.state.value}).")
    result = await api.engine.cancel(job.id, by=key_of(request).name)
    current = api.engine.get_job(job.id) or result
    return json_response(api.job_info(current, api.base_url(request)))


@routes.get("/v1/jobs/{job_id}/outputs/{n}")
async def get_output(request: web.Request) -> web.StreamResponse:
    return output_response(_job(request), request.match_info["n"])


def output_response(job: Job, n: str) -> web.Response:
    """The bytes of a job's n-th output, with the Content-Type its bytes show.

    Raises:
        InvalidValue: `n` is not a whole number.
        ApiProblem: 404 for an output the job lacks, or one no longer on disk.
    """
    try:
        index = int(n)
    except ValueError:
        raise InvalidValue("n", "must be a whole number") from None
    if not 0 <= index < len(job.outputs):
        raise ApiProblem(404, f"Job '{job.id}' has no output {index}.", field="n")
    output = job.outputs[index]
    path = Path(output.path)
    if not path.is_file():
        raise ApiProblem(404, f"Output {index} of job '{job.id}' is no longer on disk.", field="n")
    return web.Response(
        body=path.read_bytes(),
        content_type=output.mime,
        charset="utf-8" if output.kind == Kind.TEXT else None,
        headers={"Content-Disposition": f'inline; filename="{job.id}-{path.name}"'},
    )


def _event_name(update: JobUpdate) -> str | None:
    if update.kind == "finished":
        return "done" if update.job.state is JobState.DONE else "failed"
    if update.kind in ("queued", "position", "preview"):
        return update.kind
    if update.kind in PROGRESS_KINDS:
        return "progress"
    return None


@routes.get("/v1/jobs/{job_id}/events")
async def job_events(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    job = _job(request)
    previews = request.query.get("previews", "").lower() in ("1", "true", "yes")
    base = api.base_url(request)
    with api.subscribe(job.id) as updates:
        current = api.engine.get_job(job.id) or job
        async with sse_response(request) as response:
            try:
                if current.state.finished:
                    first = JobUpdate(current, "finished")
                elif current.state is JobState.QUEUED:
                    first = JobUpdate(current, "queued", position=api.engine.position(job.id))
                else:
                    first = api.latest.get(job.id) or JobUpdate(current, "started")
                update = first
                while True:
                    name = _event_name(update)
                    if name == "preview" and not previews:
                        name = None
                    if name is not None:
                        event = JobEvent(
                            event=name,
                            job=api.job_info(
                                update.job, base, position=update.position, update=update
                            ),
                            preview=data_url(update.preview, update.preview_mime or "image/jpeg")
                            if name == "preview" and update.preview
                            else None,
                        )
                        await response.send(event.model_dump_json(exclude_none=True), event=name)
                    if update.kind == "finished":
                        break
                    update = await updates.get()
            except (ConnectionResetError, asyncio.CancelledError):
                log.debug("event stream of %s closed by the client", job.id)
                raise
        return response


# documents and probes ---------------------------------------------------------------------------
@routes.get("/openapi.json")
async def openapi(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    document = build_document(
        api.engine.workflows,
        max_count=api.settings.limits.max_count,
        image_urls=api.settings.http.image_urls,
        object_info=api.engine.object_info,
        server_url=api.settings.http.public_url,
    )
    return web.json_response(document)


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.StreamResponse:
    return json_response(Health(status="ok", checks={"process": "up"}))


@routes.get("/readyz")
async def readyz(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    checks: dict[str, str] = {}
    reached = []
    for backend in api.engine.pool:
        try:
            await asyncio.wait_for(backend.client.system_stats(), 5.0)
            reached.append(backend.name)
        except Exception as exc:  # any failure means "not reachable"; the probe never errors
            log.info("readiness: %s unreachable (%s)", backend.name, type(exc).__name__)
    checks["comfyui"] = "reachable" if reached else "unreachable (no backend answered)"
    try:
        folder = Path(api.settings.storage.outputs)
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=folder, prefix=".ready-"):
            pass
        api.engine.store.get_setting("ready", "probe")
        checks["storage"] = "writable"
    except Exception as exc:
        checks["storage"] = f"not writable ({type(exc).__name__})"
    ready = checks["comfyui"] == "reachable" and checks["storage"] == "writable"
    health = Health(status="ok" if ready else "unavailable", checks=checks)
    return json_response(health, 200 if ready else 503)


@routes.get("/metrics")
async def metrics(request: web.Request) -> web.StreamResponse:
    body = api_of(request).metrics.render()
    response = web.Response(body=body)
    response.headers["Content-Type"] = METRICS_TYPE
    return response
