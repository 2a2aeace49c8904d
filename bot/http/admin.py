"""Admin operations on workflows over the API: add one (or preview it), remove one, export one.

An upload is multipart: `workflow` (the graph, API or UI format), optionally `yaml` (its spec)
and `name`. It is read and checked as Discord's import does it (`Engine.prepare_import`);
`?dry_run=true` answers the preview and writes nothing, otherwise it is saved as a pack and the
workflows (so the OpenAPI document, built per request) follow at once.
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import PurePath
from urllib.parse import unquote

from aiohttp import BodyPartReader, web
from multidict import MultiMapping

from bot.errors import InvalidValue, WorkflowError
from bot.http.admin_models import OptionInfo, PackFile, PackFiles, WorkflowPreview
from bot.http.problems import MALFORMED_MULTIPART, ApiProblem, malformed_multipart
from bot.http.routes import admin_of, api_of, json_response, workflow_detail
from bot.workflows.packs import MAX_GRAPH_BYTES, MAX_YAML_BYTES, ImportPreview

log = logging.getLogger(__name__)

admin_routes = web.RouteTableDef()
MAX_NAME_BYTES = 200
_LIMITS = {"workflow": MAX_GRAPH_BYTES, "yaml": MAX_YAML_BYTES, "name": MAX_NAME_BYTES}


@dataclass(frozen=True)
class Upload:
    """The parts of an upload."""

    graph: bytes
    graph_name: str
    yaml: bytes | None = None
    yaml_name: str = "spec.yaml"
    name: str | None = None


def flag(query: MultiMapping[str], name: str) -> bool:
    """A boolean query parameter (`true`/`false`, `1`/`0`, `yes`/`no`; absent is false).

    Raises:
        InvalidValue: any other value.
    """
    raw = query.get(name, "").strip().lower()
    if raw in ("", "false", "0", "no"):
        return False
    if raw in ("true", "1", "yes"):
        return True
    raise InvalidValue(name, "must be true or false")


def _size(limit: int) -> str:
    return f"{limit // 1024} KB" if limit < 1024 * 1024 else f"{limit // (1024 * 1024)} MB"


async def _read_part(part: BodyPartReader, field: str) -> bytes:
    """A part's bytes, refused as soon as it passes its field's limit."""
    limit = _LIMITS[field]
    data = bytearray()
    while chunk := await part.read_chunk(65536):
        data += chunk
        if len(data) > limit:
            raise ApiProblem(413, f"'{field}' is too large ({_size(limit)} at most).", field=field)
    return bytes(data)


async def read_upload(request: web.Request) -> Upload:
    """The workflow file, its YAML and name from a multipart body, size-checked as it streams.

    Raises:
        ApiProblem: 415 when not multipart, 400 when malformed, 413 for a part too large,
            422 without a workflow file.
        InvalidValue: an unknown part, or a name that is not UTF-8.
    """
    if request.content_type != "multipart/form-data":
        raise ApiProblem(
            415,
            "Send multipart/form-data: the workflow file as 'workflow', optionally 'yaml' "
            "and 'name'.",
            field="Content-Type",
        )
    parts: dict[str, tuple[bytes, str]] = {}
    try:
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                raise InvalidValue("body", "nested multipart bodies are not supported")
            field = part.name or ""
            if field not in _LIMITS:
                raise InvalidValue(field or "body", "expected the parts workflow, yaml and name")
            data = await _read_part(part, field)
            # clients percent-encode what a quoted filename can't hold (aiohttp's: spaces too)
            parts[field] = (data, PurePath(unquote(part.filename or "")).name)
    except MALFORMED_MULTIPART as exc:
        raise malformed_multipart(exc) from None
    if "workflow" not in parts:
        raise ApiProblem(
            422, "Send the workflow's .json file as the part 'workflow'.", field="workflow"
        )
    graph, graph_name = parts["workflow"]
    name = None
    if "name" in parts:
        try:
            name = parts["name"][0].decode().strip() or None
        except UnicodeDecodeError:
            raise InvalidValue("name", "must be UTF-8 text") from None
    yaml, yaml_name = parts.get("yaml", (None, ""))
    return Upload(graph, graph_name or "workflow.json", yaml, yaml_name or "spec.yaml", name)


def preview_body(preview: ImportPreview) -> WorkflowPreview:
    """The preview as JSON: its options, and every list it has as text (problems included)."""
    lists = {
        f.name: [str(item) for item in value]
        for f in dataclasses.fields(preview)
        if f.name != "options" and isinstance(value := getattr(preview, f.name), tuple)
    }
    options = [
        OptionInfo(
            name=o.name,
            type=o.type,
            required=o.required,
            sets=list(o.sets),
            default=o.default,
            range=o.range,
        )
        for o in preview.options
    ]
    return WorkflowPreview(
        name=preview.name,
        title=preview.title,
        checked=preview.checked,
        can_save=not preview.blocking,
        options=options,
        blocking=[str(p) for p in preview.blocking],
        **lists,
    )


def import_problem(exc: WorkflowError) -> ApiProblem:
    """The answer to an upload that can't be read or saved."""
    text = exc.message.replace("`", "'")
    if text.startswith("name:"):  # the pack's name (packs.check_free): invalid or taken
        return ApiProblem(409 if "already exists" in text else 422, text, field="name")
    return ApiProblem(422, text, field="workflow")


@admin_routes.post("/v1/workflows")
async def add_workflow(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    key = admin_of(request)
    dry_run = flag(request.query, "dry_run")
    upload = await read_upload(request)
    try:
        preview = await api.engine.prepare_import(
            upload.graph,
            upload.graph_name,
            yaml_data=upload.yaml,
            yaml_name=upload.yaml_name,
            name=upload.name,
        )
        if dry_run:
            return json_response(preview_body(preview))
        workflow = api.engine.save_import(preview)
    except WorkflowError as exc:
        raise import_problem(exc) from None
    log.info("workflow %s added by key %s", workflow.name, key.name)
    base = api.base_url(request)
    detail = workflow_detail(api, workflow, key, base)
    return json_response(detail, 201, headers={"Location": f"{base}/v1/workflows/{workflow.name}"})


@admin_routes.delete("/v1/workflows/{name}")
async def delete_workflow(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    key = admin_of(request)
    name = request.match_info["name"]
    removed = api.engine.delete_workflow(name)
    log.info("workflow %s removed by key %s (%s)", name, key.name, ", ".join(removed))
    return web.Response(status=204)


@admin_routes.get("/v1/workflows/{name}/files")
async def workflow_files(request: web.Request) -> web.StreamResponse:
    api = api_of(request)
    admin_of(request)
    name = request.match_info["name"]
    files = [
        PackFile(
            name=file_name,
            content_type="application/json" if file_name.endswith(".json") else "application/yaml",
            content=data.decode("utf-8", errors="replace"),
        )
        for file_name, data in api.engine.export_pack(name)
    ]
    return json_response(PackFiles(workflow=name, files=files))
