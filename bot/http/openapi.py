"""The OpenAPI 3.1 document, generated from the pydantic models and the loaded workflows.

Each workflow gets its own path (`/v1/workflows/NAME/jobs`) with its own typed request schema
(`NameRequest` for JSON, `NameForm` for multipart), so an OpenAPI generator makes a client with
one typed method per workflow.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from pydantic.json_schema import models_json_schema

from bot.http.admin_models import ADMIN_MODELS
from bot.http.models import MODELS
from bot.media.sniff import MIME_BY_EXT
from bot.workflows import Param, Workflow, nodeinfo

WAIT_MAX = 60
REF = "#/components/schemas/{model}"


def schema_name(workflow: str) -> str:
    """`sd15-txt2img` -> `Sd15Txt2img`."""
    parts = re.split(r"[^A-Za-z0-9]+", workflow)
    name = "".join(p[:1].upper() + p[1:] for p in parts if p)
    return name if name[:1].isalpha() else "W" + name


def param_choices(
    workflow: Workflow, param: Param, object_info: Mapping[str, Any] | None
) -> tuple[str, ...]:
    """The values a choice or enum takes: its own list, else ComfyUI's for its input."""
    if param.choices or not object_info or not param.targets:
        return param.choices
    node_id, name = param.targets[0]
    class_type = workflow.graph.get(node_id, {}).get("class_type", "")
    definition = nodeinfo.input_def(dict(object_info), class_type, name)
    if definition is None or not definition.choices:
        return ()
    return tuple(str(c) for c in definition.choices)


def param_schema(
    workflow: Workflow,
    param: Param,
    *,
    form: bool = False,
    image_urls: bool = True,
    object_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON Schema of one parameter's value."""
    schema: dict[str, Any] = {"description": param.description}
    kind = param.type
    if kind == "text":
        schema["type"] = "string"
        if param.max_length is not None:
            schema["maxLength"] = param.max_length
        if param.required:
            schema["pattern"] = r"\S"
    elif kind in ("int", "seed", "float"):
        schema["type"] = "number" if kind == "float" else "integer"
        if param.min is not None:
            schema["minimum"] = param.min
        if param.max is not None:
            schema["maximum"] = param.max
        if param.step and kind != "float":
            schema["multipleOf"] = param.step
    elif kind == "bool":
        schema["type"] = "boolean"
    elif kind in ("choice", "enum"):
        schema["type"] = "string"
        choices = param_choices(workflow, param, object_info)
        if choices:
            schema["enum"] = list(choices)
        else:
            schema["minLength"] = 1
    elif param.is_file:
        schema["type"] = "string"
        if form:
            schema["format"] = "binary"
            schema["contentMediaType"] = f"{kind}/*"
        else:
            ways = f"base64, a data:{kind}/...;base64 URL" + (
                " or an http(s) URL" if image_urls else ""
            )
            schema["description"] = f"{param.description} ({ways})"
            schema["minLength"] = 1
    if param.default is not None and not param.is_file:
        schema["default"] = param.default
    return schema


def request_schema(
    workflow: Workflow,
    *,
    max_count: int,
    form: bool = False,
    image_urls: bool = True,
    object_info: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON Schema of a request body that runs `workflow`."""
    properties = {
        p.name: param_schema(workflow, p, form=form, image_urls=image_urls, object_info=object_info)
        for p in workflow.params
    }
    properties["count"] = {
        "type": "integer",
        "minimum": 1,
        "maximum": max_count,
        "default": 1,
        "description": "How many images (one job and one seed each)",
    }
    properties["webhook"] = {
        "type": "string",
        "format": "uri",
        "maxLength": 2048,
        "description": "POSTed the job's JSON when it is done or failed (signed)",
    }
    return {
        "title": f"{schema_name(workflow.name)}{'Form' if form else 'Request'}",
        "description": workflow.spec.description or workflow.spec.title,
        "type": "object",
        "properties": properties,
        "required": [p.name for p in workflow.params if p.required],
        "additionalProperties": False,
    }


def _ref(model: str) -> dict[str, str]:
    return {"$ref": REF.format(model=model)}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/problem+json": {"schema": {"$ref": REF.format(model="Problem")}}},
    }


def _json(model: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": REF.format(model=model)}}},
    }


AUTH_ERRORS = {"401": _problem("No valid API key"), "403": _problem("Not allowed for this key")}
ADMIN_ERRORS = {"401": _problem("No valid API key"), "403": _problem("Not an admin key")}
UPLOAD_SCHEMA = {
    "type": "object",
    "properties": {
        "workflow": {
            "type": "string",
            "format": "binary",
            "contentMediaType": "application/json",
            "description": "The workflow as saved or exported from ComfyUI (UI or API format)",
        },
        "yaml": {
            "type": "string",
            "format": "binary",
            "description": "Optional: its YAML spec (params); without one they are detected",
        },
        "name": {
            "type": "string",
            "pattern": "^[a-z0-9][a-z0-9_-]{0,31}$",
            "description": "The name to save it under (default: from the file name)",
        },
    },
    "required": ["workflow"],
}


def _name_param() -> dict[str, Any]:
    return {"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}


def admin_paths() -> dict[str, Any]:
    """The admin operations: on workflows (merged into their paths), and the operations view."""
    return {
        "/v1/workflows": {
            "post": {
                "operationId": "add_workflow",
                "summary": "Add a workflow from its ComfyUI file (admin)",
                "description": "With `dry_run=true`, only the preview: each option with what "
                "it sets, its range and default, problems, repairs, notes and the node classes "
                "ComfyUI lacks. Without it the workflow is saved and can be run at once.",
                "parameters": [
                    {
                        "name": "dry_run",
                        "in": "query",
                        "required": False,
                        "schema": {"type": "boolean", "default": False},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {"multipart/form-data": {"schema": UPLOAD_SCHEMA}},
                },
                "responses": {
                    "200": _json("WorkflowPreview", "The preview (dry run)"),
                    "201": _json("WorkflowDetail", "Saved"),
                    "400": _problem("The multipart body is malformed"),
                    "409": _problem("A workflow of that name exists"),
                    "413": _problem("A file is too large"),
                    "415": _problem("Not multipart"),
                    "422": _problem("The files can't be read, or ComfyUI can't run it"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/workflows/{name}": {
            "delete": {
                "operationId": "delete_workflow",
                "summary": "Remove a workflow and its pack's files (admin)",
                "parameters": [_name_param()],
                "responses": {
                    "204": {"description": "Removed"},
                    "404": _problem("No such workflow"),
                    **ADMIN_ERRORS,
                },
            }
        },
        "/v1/stats": {
            "get": {
                "operationId": "get_stats",
                "summary": "Backends, the queue and the last hour's samples (admin)",
                "description": "Each backend's state, version, device, VRAM and busy share; "
                "every running and waiting job with its position; one sample per interval "
                "(busy share per backend, queue length, jobs done and their mean time).",
                "responses": {"200": _json("Stats", "The operations view"), **ADMIN_ERRORS},
            }
        },
        "/v1/workflows/{name}/files": {
            "get": {
                "operationId": "workflow_files",
                "summary": "A workflow's pack: its graph and its YAML (admin)",
                "parameters": [_name_param()],
                "responses": {
                    "200": _json("PackFiles", "The files"),
                    "404": _problem("No such workflow"),
                    **ADMIN_ERRORS,
                },
            }
        },
    }


def _job_id() -> dict[str, Any]:
    return {
        "name": "job_id",
        "in": "path",
        "required": True,
        "schema": {"type": "string", "minLength": 1, "maxLength": 64},
    }


def build_document(
    workflows: Mapping[str, Workflow],
    *,
    max_count: int,
    image_urls: bool = True,
    object_info: Mapping[str, Any] | None = None,
    server_url: str | None = None,
) -> dict[str, Any]:
    """The whole OpenAPI 3.1 document."""
    _, defs = models_json_schema(
        [(m, "serialization") for m in (*MODELS, *ADMIN_MODELS)], ref_template=REF
    )
    schemas: dict[str, Any] = dict(defs.get("$defs", {}))
    paths: dict[str, Any] = {
        "/v1/workflows": {
            "get": {
                "operationId": "list_workflows",
                "summary": "The workflows this key may run",
                "responses": {"200": _json("WorkflowList", "The workflows"), **AUTH_ERRORS},
            }
        },
        "/v1/workflows/{name}": {
            "get": {
                "operationId": "get_workflow",
                "summary": "One workflow, with the JSON Schema of its request",
                "parameters": [
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "minLength": 1},
                    }
                ],
                "responses": {
                    "200": _json("WorkflowDetail", "The workflow"),
                    "404": _problem("No such workflow"),
                    **AUTH_ERRORS,
                },
            }
        },
    }
    for path, operations in admin_paths().items():
        paths.setdefault(path, {}).update(operations)
    for name in sorted(workflows):
        workflow = workflows[name]
        base = schema_name(name)
        schemas[f"{base}Request"] = request_schema(
            workflow, max_count=max_count, image_urls=image_urls, object_info=object_info
        )
        schemas[f"{base}Form"] = request_schema(
            workflow, max_count=max_count, form=True, object_info=object_info
        )
        snake = re.sub(r"[^a-z0-9]+", "_", name.lower()).strip("_")
        paths[f"/v1/workflows/{name}/jobs"] = {
            "post": {
                "operationId": f"run_{snake}",
                "summary": f"Run {workflow.spec.title}",
                "description": workflow.spec.description or workflow.spec.title,
                "parameters": [
                    {
                        "name": "wait",
                        "in": "query",
                        "required": False,
                        "description": "Wait up to this many seconds for the result",
                        "schema": {"type": "number", "minimum": 0, "maximum": WAIT_MAX},
                    }
                ],
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": REF.format(model=f"{base}Request")}
                        },
                        "multipart/form-data": {
                            "schema": {"$ref": REF.format(model=f"{base}Form")}
                        },
                    },
                },
                "responses": {
                    "200": _json("JobsCreated", "Finished within `wait`"),
                    "202": _json("JobsCreated", "Queued"),
                    "400": _problem(
                        "The body is malformed: not JSON, or multipart without its boundary"
                    ),
                    "404": _problem("No such workflow"),
                    "413": _problem("The body or an image is too large"),
                    "415": _problem("Not JSON or multipart"),
                    "422": _problem("A value is wrong (`field` names it)"),
                    "429": _problem("Too many jobs queued for this key"),
                    **AUTH_ERRORS,
                },
            }
        }
    paths["/v1/jobs/{job_id}"] = {
        "get": {
            "operationId": "get_job",
            "summary": "A job's state, position, progress, error and outputs",
            "parameters": [_job_id()],
            "responses": {
                "200": _json("JobInfo", "The job"),
                "404": _problem("No such job"),
                **AUTH_ERRORS,
            },
        },
        "delete": {
            "operationId": "cancel_job",
            "summary": "Cancel a queued or running job",
            "parameters": [_job_id()],
            "responses": {
                "200": _json("JobInfo", "The job, cancelled"),
                "404": _problem("No such job"),
                "409": _problem("The job has already finished"),
                **AUTH_ERRORS,
            },
        },
    }
    paths["/v1/jobs/{job_id}/events"] = {
        "get": {
            "operationId": "job_events",
            "summary": "Server-sent events: queued, position, progress, preview, done, failed",
            "description": "Each event's data is a JobEvent as JSON. `previews=true` adds the "
            "sampler's preview images as data: URLs.",
            "parameters": [
                _job_id(),
                {
                    "name": "previews",
                    "in": "query",
                    "required": False,
                    "schema": {"type": "boolean", "default": False},
                },
            ],
            "responses": {
                "200": {
                    "description": "The event stream (ends after done or failed)",
                    "content": {"text/event-stream": {"schema": {"type": "string"}}},
                },
                "404": _problem("No such job"),
                **AUTH_ERRORS,
            },
        }
    }
    paths["/v1/jobs/{job_id}/outputs/{n}"] = {
        "get": {
            "operationId": "get_output",
            "summary": "The bytes of the job's n-th output (from 0): an image, animation, video, "
            "audio, 3D model or text, sent with the Content-Type its bytes show",
            "parameters": [
                _job_id(),
                {"name": "n", "in": "path", "required": True, "schema": {"type": "integer"}},
            ],
            "responses": {
                "200": {
                    "description": "The file; `outputs[n].content_type` of the job says which",
                    "content": {
                        t: {"schema": {"type": "string", "contentMediaType": t}}
                        for t in sorted(set(MIME_BY_EXT.values()))
                    },
                },
                "404": _problem("No such job or output"),
                **AUTH_ERRORS,
            },
        }
    }
    for path, op, summary in (
        ("/healthz", "health", "The process is up"),
        ("/readyz", "ready", "A ComfyUI backend is reachable and storage is writable"),
    ):
        paths[path] = {
            "get": {
                "operationId": op,
                "summary": summary,
                "security": [],
                "responses": {
                    "200": _json("Health", "Ready"),
                    "503": _json("Health", "Not ready"),
                },
            }
        }
    paths["/metrics"] = {
        "get": {
            "operationId": "metrics",
            "summary": "Prometheus metrics",
            "security": [],
            "responses": {
                "200": {
                    "description": "Prometheus text format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                }
            },
        }
    }
    document: dict[str, Any] = {
        "openapi": "3.1.0",
        "info": {
            "title": "comfycord",
            "version": "1",
            "description": "ComfyUI workflows as an HTTP API, over comfycord's fair queue.",
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{"bearer": []}],
    }
    if server_url:
        document["servers"] = [{"url": server_url}]
    return document
