"""Adding, previewing, removing and exporting workflows over the API (admin keys only)."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from openapi_spec_validator import validate

from bot.http.admin import preview_body
from bot.workflows.packs import MAX_GRAPH_BYTES, ImportPreview
from bot.workflows.problems import Problem
from tests.conftest import WORKFLOWS
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import console_settings
from tests.http_helpers import Served, served

GRAPH = (WORKFLOWS / "sd15-txt2img.json").read_bytes()


@pytest.fixture
async def srv(tmp_path: Path, comfy: FakeComfyUI) -> AsyncIterator[Served]:
    async with served(console_settings(tmp_path, comfy)) as s:
        yield s


def upload(
    graph: bytes = GRAPH,
    file_name: str = "My Lighthouse.json",
    *,
    yaml: bytes | None = None,
    name: str | None = None,
) -> aiohttp.FormData:
    form = aiohttp.FormData()
    form.add_field("workflow", graph, filename=file_name, content_type="application/json")
    if yaml is not None:
        form.add_field("yaml", yaml, filename="spec.yaml", content_type="application/yaml")
    if name is not None:
        form.add_field("name", name)
    return form


async def test_a_dry_run_previews_the_workflow_and_writes_nothing(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    folder = Path(srv.engine.settings.workflows.dir)
    before = sorted(p.name for p in folder.iterdir())
    url = f"{srv.url}/v1/workflows?dry_run=true"
    async with srv.http.post(url, data=upload(), headers=srv.auth(admin)) as r:
        assert r.status == 200, await r.text()
        preview = await r.json()
    assert preview["name"] == "my-lighthouse" and preview["title"] == "My Lighthouse"
    assert preview["checked"] is True and preview["can_save"] is True
    options = {o["name"]: o for o in preview["options"]}
    assert options["prompt"]["required"] and options["prompt"]["type"] == "text"
    assert any(".text" in s for s in options["prompt"]["sets"])
    assert options["steps"]["range"] and options["steps"]["default"] is not None
    for field in ("problems", "notes", "missing_classes", "repairs", "blocking"):
        assert isinstance(preview[field], list), field
    assert sorted(p.name for p in folder.iterdir()) == before
    assert "my-lighthouse" not in srv.engine.workflows


async def test_the_preview_gives_every_list_it_has_as_text(srv: Served) -> None:
    """Fields added to the preview later appear in the JSON without a change here."""

    @dataclasses.dataclass(frozen=True)
    class Later(ImportPreview):
        advice: tuple[str, ...] = ()

    real = await srv.engine.prepare_import(GRAPH, "later.json")
    fields = {f.name: getattr(real, f.name) for f in dataclasses.fields(real)}
    problem = Problem("later.json", "node 3", "is unknown here", "unknown_node")
    fields["problems"] = (problem,)
    preview = Later(**fields, advice=("install the pack comfyui-impact-pack",))
    body = preview_body(preview).model_dump()
    assert body["advice"] == ["install the pack comfyui-impact-pack"]
    assert body["problems"] == [str(problem)] and body["blocking"] == [str(problem)]
    assert body["can_save"] is False and body["name"] == "later"


async def test_saving_adds_the_workflow_to_the_api_and_its_document_at_once(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    member = srv.key("member")
    async with srv.http.get(f"{srv.url}/openapi.json") as r:
        assert "/v1/workflows/my-lighthouse/jobs" not in (await r.json())["paths"]
    async with srv.http.post(
        f"{srv.url}/v1/workflows", data=upload(), headers=srv.auth(admin)
    ) as r:
        assert r.status == 201, await r.text()
        detail = await r.json()
        assert r.headers["Location"].endswith("/v1/workflows/my-lighthouse")
    assert detail["name"] == "my-lighthouse" and "prompt" in detail["request_schema"]["properties"]
    folder = Path(srv.engine.settings.workflows.dir)
    assert (folder / "my-lighthouse.json").is_file() and (folder / "my-lighthouse.yaml").is_file()
    async with srv.http.get(f"{srv.url}/openapi.json") as r:
        document = await r.json()
    assert "/v1/workflows/my-lighthouse/jobs" in document["paths"]
    validate(document)
    async with srv.http.get(f"{srv.url}/v1/workflows", headers=srv.auth(member)) as r:
        assert "my-lighthouse" in [w["name"] for w in (await r.json())["workflows"]]
    url = f"{srv.url}/v1/workflows/my-lighthouse/jobs?wait=30"
    body = {"prompt": "a lighthouse", "steps": 2}
    async with srv.http.post(url, json=body, headers=srv.auth(member)) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["jobs"][0]["state"] == "done"
    # the same name again is a conflict, and nothing is overwritten
    async with srv.http.post(
        f"{srv.url}/v1/workflows", data=upload(), headers=srv.auth(admin)
    ) as r:
        assert r.status == 409 and (await r.json())["field"] == "name"


async def test_a_given_name_and_yaml_are_used(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    yaml = (
        b"title: Night sea\nparams:\n"
        b"  prompt: {type: text, node: '6', input: text, required: true}\n"
        b"  steps: {type: int, node: '3', input: steps, default: 8, min: 1, max: 12}\n"
    )
    url = f"{srv.url}/v1/workflows?dry_run=1"
    async with srv.http.post(
        url, data=upload(yaml=yaml, name="night-sea"), headers=srv.auth(admin)
    ) as r:
        assert r.status == 200, await r.text()
        preview = await r.json()
    assert preview["name"] == "night-sea" and preview["title"] == "Night sea"
    assert [o["name"] for o in preview["options"]] == ["prompt", "steps"]
    steps = preview["options"][1]
    assert steps["default"] == 8 and "12" in steps["range"]


async def test_removing_a_workflow_deletes_its_files_and_its_operation(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    folder = Path(srv.engine.settings.workflows.dir)
    async with srv.http.delete(f"{srv.url}/v1/workflows/upscale", headers=srv.auth(admin)) as r:
        assert r.status == 204
    assert not (folder / "upscale.json").exists() and not (folder / "upscale.yaml").exists()
    assert (folder / "sd15-txt2img.json").exists()
    async with srv.http.get(f"{srv.url}/openapi.json") as r:
        assert "/v1/workflows/upscale/jobs" not in (await r.json())["paths"]
    async with srv.http.delete(f"{srv.url}/v1/workflows/upscale", headers=srv.auth(admin)) as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
    async with srv.http.delete(
        f"{srv.url}/v1/workflows/..%2F..%2Fetc", headers=srv.auth(admin)
    ) as r:
        assert r.status == 404


async def test_the_files_of_a_pack(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    url = f"{srv.url}/v1/workflows/sd15-txt2img/files"
    async with srv.http.get(url, headers=srv.auth(admin)) as r:
        assert r.status == 200
        body = await r.json()
    files = {f["name"]: f for f in body["files"]}
    assert set(files) == {"sd15-txt2img.json", "sd15-txt2img.yaml"}
    assert json.loads(files["sd15-txt2img.json"]["content"]) == json.loads(GRAPH)
    async with srv.http.get(f"{srv.url}/v1/workflows/nope/files", headers=srv.auth(admin)) as r:
        assert r.status == 404


async def test_member_keys_cannot_manage_workflows(srv: Served) -> None:
    member = srv.key("member")
    auth = srv.auth(member)
    async with srv.http.post(f"{srv.url}/v1/workflows", data=upload(), headers=auth) as r:
        assert r.status == 403 and "admin" in (await r.json())["detail"]
    async with srv.http.delete(f"{srv.url}/v1/workflows/upscale", headers=auth) as r:
        assert r.status == 403
    async with srv.http.get(f"{srv.url}/v1/workflows/upscale/files", headers=auth) as r:
        assert r.status == 403
    assert "upscale" in srv.engine.workflows
    async with srv.http.post(f"{srv.url}/v1/workflows", data=upload()) as r:
        assert r.status == 401


async def test_bad_uploads_get_clear_problems(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    auth = srv.auth(admin)
    url = f"{srv.url}/v1/workflows?dry_run=true"

    async def status(data: object, headers: dict[str, str] | None = None) -> tuple[int, dict]:
        async with srv.http.post(url, data=data, headers={**auth, **(headers or {})}) as r:
            assert r.content_type == "application/problem+json"
            return r.status, await r.json()

    code, body = await status(b"{}", {"Content-Type": "application/json"})
    assert code == 415 and body["field"] == "Content-Type"
    code, body = await status(b"--x\r\n", {"Content-Type": "multipart/form-data"})
    assert code == 400, body
    form = aiohttp.FormData(default_to_multipart=True)
    form.add_field("name", "lonely")
    assert (await status(form))[0] == 422
    code, body = await status(upload(b"not json {"))
    assert code == 422 and body["field"] == "workflow" and "JSON" in body["detail"]
    code, body = await status(upload(name="Bad Name!"))
    assert code == 422 and body["field"] == "name"
    form = aiohttp.FormData()
    form.add_field("stuff", b"x", filename="x.bin")
    code, body = await status(form)
    assert code == 422 and body["field"] == "stuff"
    async with srv.http.post(
        f"{srv.url}/v1/workflows?dry_run=maybe", data=upload(), headers=auth
    ) as r:
        assert r.status == 422 and (await r.json())["field"] == "dry_run"


async def test_an_upload_too_large_is_refused_while_it_streams(srv: Served) -> None:
    admin = srv.key("boss", role="admin")
    sent = 0

    async def graph() -> AsyncIterator[bytes]:
        nonlocal sent
        chunk = b" " * 65536
        while sent < MAX_GRAPH_BYTES * 4:
            sent += len(chunk)
            yield chunk

    form = aiohttp.FormData()
    form.add_field("workflow", graph(), filename="huge.json", content_type="application/json")
    url = f"{srv.url}/v1/workflows?dry_run=true"
    async with srv.http.post(url, data=form, headers=srv.auth(admin)) as r:
        assert r.status == 413
        body = await r.json()
    assert body["field"] == "workflow" and "5 MB" in body["detail"]
