"""The HTTP API over a real socket against the fake ComfyUI: keys, jobs, events, outputs, errors."""

from __future__ import annotations

import asyncio
import base64
import io
import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web
from PIL import Image

from bot.http.webhooks import HEADER, verify
from bot.jobs.model import JobState
from bot.settings import Settings
from tests.conftest import make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http_helpers import Served, http_settings, loopback, read_events, served


@pytest.fixture
async def srv(settings: Settings) -> AsyncIterator[Served]:
    async with served(http_settings(settings, allow_private_urls=True, webhook_backoff=0.05)) as s:
        yield s


def png(colour: tuple[int, int, int] = (10, 120, 200)) -> bytes:
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), colour).save(buf, "PNG")
    return buf.getvalue()


def uploaded_images(comfy: FakeComfyUI) -> list[bytes]:
    """The images ComfyUI's LoadImage nodes were given, as it stored them."""
    names = [
        n["inputs"]["image"]
        for body in comfy.prompts_received
        for n in body["prompt"].values()
        if n["class_type"] == "LoadImage"
    ]
    return [(comfy.input_dir / name).read_bytes() for name in names]


def saved_image(comfy: FakeComfyUI, prompt_id: str) -> bytes:
    outputs = comfy.history[prompt_id]["outputs"]
    [image] = [i for o in outputs.values() for i in o["images"] if i.get("type") == "output"]
    return comfy.read_output(image["filename"], image.get("subfolder", ""), "output")


async def follow_to_end(srv: Served, key: object, job_id: str, **params: str) -> list[tuple]:
    events = []
    url = f"{srv.url}/v1/jobs/{job_id}/events"
    async with srv.http.get(url, headers=srv.auth(key), params=params) as response:  # type: ignore[arg-type]
        assert response.status == 200
        assert response.content_type == "text/event-stream"
        async with asyncio.timeout(20):
            async for event in read_events(response):
                events.append(event)
    return events


# keys and auth ----------------------------------------------------------------------------------
async def test_requests_without_a_valid_key_get_401_problems(srv: Served) -> None:
    for headers in ({}, {"Authorization": "Bearer cc_nope"}, {"Authorization": "Basic x"}):
        async with srv.http.get(f"{srv.url}/v1/workflows", headers=headers) as r:
            assert r.status == 401
            assert r.content_type == "application/problem+json"
            body = await r.json()
            assert body["status"] == 401 and body["field"] == "Authorization"
    key = srv.key()
    srv.api.keys.revoke("app")
    async with srv.http.get(f"{srv.url}/v1/workflows", headers=srv.auth(key)) as r:
        assert r.status == 401


async def test_keys_are_stored_hashed(srv: Served) -> None:
    key = srv.key("hashed")
    stored = json.dumps(list(srv.engine.store.settings_in("apikey").values()))
    assert key.secret not in stored
    assert srv.api.keys.check(key.secret) is not None
    assert srv.api.keys.check(key.secret + "x") is None


async def test_list_and_describe_workflows(srv: Served) -> None:
    key = srv.key()
    async with srv.http.get(f"{srv.url}/v1/workflows", headers=srv.auth(key)) as r:
        assert r.status == 200
        listed = await r.json()
    names = [w["name"] for w in listed["workflows"]]
    assert names == sorted(srv.engine.workflows)
    assert {"sd15-img2img", "sd15-txt2img"} <= set(names)
    txt = next(w for w in listed["workflows"] if w["name"] == "sd15-txt2img")
    steps = next(p for p in txt["params"] if p["name"] == "steps")
    assert steps["type"] == "int" and steps["maximum"] is not None
    async with srv.http.get(f"{srv.url}/v1/workflows/sd15-txt2img", headers=srv.auth(key)) as r:
        detail = await r.json()
    schema = detail["request_schema"]
    assert schema["required"] == ["prompt"]
    assert schema["properties"]["steps"]["type"] == "integer"
    assert schema["additionalProperties"] is False


async def test_a_key_limited_to_some_workflows_gets_403_for_others(srv: Served) -> None:
    key = srv.key("img", workflows=["sd15-img2img"])
    async with srv.http.get(f"{srv.url}/v1/workflows", headers=srv.auth(key)) as r:
        assert [w["name"] for w in (await r.json())["workflows"]] == ["sd15-img2img"]
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    async with srv.http.post(url, json={"prompt": "x"}, headers=srv.auth(key)) as r:
        assert r.status == 403
        assert "sd15-txt2img" in (await r.json())["detail"]
    assert srv.engine.store.recent() == []


# jobs -------------------------------------------------------------------------------------------
async def test_json_job_streams_events_to_done_and_serves_the_png_comfyui_saved(
    srv: Served, comfy: FakeComfyUI
) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    body = {"prompt": "a lighthouse at dusk", "steps": 4, "seed": 5}
    async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
        assert r.status == 202, await r.text()
        created = await r.json()
        assert r.headers["Location"] == created["jobs"][0]["url"]
    [job] = created["jobs"]
    assert job["values"]["steps"] == 4 and job["state"] in ("queued", "submitted", "running")
    events = await follow_to_end(srv, key, job["id"], previews="true")
    names = [name for name, _ in events]
    assert names[-1] == "done"
    assert "progress" in names and "preview" in names
    preview = next(data for name, data in events if name == "preview")
    assert preview["preview"].startswith("data:image/")
    steps = [d["job"]["progress"] for n, d in events if n == "progress" and d["job"]["progress"]]
    assert any(p["steps"] == 4 and p["step"] == 4 for p in steps)
    done = events[-1][1]["job"]
    assert done["state"] == "done" and len(done["outputs"]) == 1
    async with srv.http.get(done["outputs"][0]["url"], headers=srv.auth(key)) as r:
        assert r.status == 200 and r.content_type == "image/png"
        data = await r.read()
    prompt_id = srv.engine.get_job(job["id"]).prompt_id
    assert data == saved_image(comfy, prompt_id)


async def test_events_without_previews_and_after_the_end(srv: Served) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    async with srv.http.post(url, json={"prompt": "x", "steps": 3}, headers=srv.auth(key)) as r:
        [job] = (await r.json())["jobs"]
    events = await follow_to_end(srv, key, job["id"])
    assert "preview" not in [n for n, _ in events] and events[-1][0] == "done"
    again = await follow_to_end(srv, key, job["id"])  # a finished job: one event, then the end
    assert [n for n, _ in again] == ["done"]


async def test_multipart_img2img_uploads_the_image_to_comfyui(
    srv: Served, comfy: FakeComfyUI
) -> None:
    key = srv.key()
    picture = png()
    form = aiohttp.FormData()
    form.add_field("prompt", "repaint it in oils")
    form.add_field("steps", "3")
    form.add_field("image", picture, filename="mine.png", content_type="image/png")
    url = f"{srv.url}/v1/workflows/sd15-img2img/jobs?wait=30"
    async with srv.http.post(url, data=form, headers=srv.auth(key)) as r:
        assert r.status == 200, await r.text()
        created = await r.json()
    assert created["finished"] is True
    [job] = created["jobs"]
    assert job["state"] == "done" and job["outputs"]
    assert uploaded_images(comfy) == [picture]


async def test_images_as_base64_and_as_url(srv: Served, comfy: FakeComfyUI) -> None:
    key = srv.key(limit_queued=5)
    blue, red = png((0, 0, 255)), png((255, 0, 0))

    async def serve_red(request: web.Request) -> web.Response:
        return web.Response(body=red, content_type="image/png")

    image_server = web.Application()
    image_server.router.add_get("/red.png", serve_red)
    async with loopback(image_server) as port:
        url = f"{srv.url}/v1/workflows/sd15-img2img/jobs?wait=30"
        for image in (
            "data:image/png;base64," + base64.b64encode(blue).decode(),
            base64.b64encode(blue).decode(),
            f"http://127.0.0.1:{port}/red.png",
        ):
            body = {"prompt": "x", "steps": 2, "image": image}
            async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
                assert r.status == 200, await r.text()
                assert (await r.json())["jobs"][0]["state"] == "done"
    assert uploaded_images(comfy) == [blue, blue, red]


async def test_image_urls_to_private_addresses_are_refused_by_default(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    settings = http_settings(make_settings(tmp_path, comfy.url))
    async with served(settings) as srv:
        key = srv.key()
        url = f"{srv.url}/v1/workflows/sd15-img2img/jobs"
        for image in (
            "http://127.0.0.1:9/x.png",
            "http://localhost/x.png",
            "http://[::1]/x.png",
            "http://10.1.2.3/x.png",
            "http://169.254.169.254/latest",
            "file:///etc/passwd",
            "ftp://example.org/x.png",
        ):
            body = {"prompt": "x", "image": image}
            async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
                assert r.status == 422, (image, await r.text())
                problem = await r.json()
                assert problem["field"] == "image"
        body = {"prompt": "x", "webhook": "http://127.0.0.1:9/hook"}
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
        async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
            assert r.status == 422 and (await r.json())["field"] == "webhook"
        assert srv.engine.store.recent() == []
        assert comfy.prompts_received == []


async def test_image_urls_can_be_turned_off(tmp_path: Path, comfy: FakeComfyUI) -> None:
    settings = http_settings(make_settings(tmp_path, comfy.url), image_urls=False)
    async with served(settings) as srv:
        key = srv.key()
        url = f"{srv.url}/v1/workflows/sd15-img2img/jobs"
        for image, says in (
            ("https://example.org/cat.png", "not accepted"),
            ("not base64!", "base64 or a data: URL"),
        ):
            body = {"prompt": "x", "image": image}
            async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
                problem = await r.json()
                assert r.status == 422 and problem["field"] == "image"
                assert says in problem["detail"]
        assert srv.engine.store.recent() == []


async def test_wait_answers_with_the_result_and_is_capped(srv: Served) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    body = {"prompt": "x", "steps": 2, "count": 2}
    async with srv.http.post(url + "?wait=30", json=body, headers=srv.auth(key)) as r:
        assert r.status == 200
        created = await r.json()
    assert created["finished"] is True
    assert [j["state"] for j in created["jobs"]] == ["done", "done"]
    assert created["jobs"][0]["group_id"] == created["jobs"][1]["group_id"] is not None
    for wait in ("61", "-1", "soon", "nan"):
        async with srv.http.post(f"{url}?wait={wait}", json=body, headers=srv.auth(key)) as r:
            assert r.status == 422
            assert (await r.json())["field"] == "wait"


async def test_cancel_while_queued_and_while_running(srv: Served, comfy: FakeComfyUI) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    comfy.hold_steps()
    ids = []
    for _ in range(2):
        async with srv.http.post(url, json={"prompt": "x", "steps": 5}, headers=srv.auth(key)) as r:
            ids.append((await r.json())["jobs"][0]["id"])
    running, queued = ids
    await comfy.wait_until_held()
    async with srv.http.get(f"{srv.url}/v1/jobs/{queued}", headers=srv.auth(key)) as r:
        info = await r.json()
        assert info["state"] == "queued" and info["position"] == 1
    async with srv.http.delete(f"{srv.url}/v1/jobs/{queued}", headers=srv.auth(key)) as r:
        assert r.status == 200
        assert (await r.json())["state"] == "cancelled"
    async with srv.http.get(f"{srv.url}/v1/jobs/{running}", headers=srv.auth(key)) as r:
        info = await r.json()
        assert info["state"] == "running" and info["progress"] is not None
    async with srv.http.delete(f"{srv.url}/v1/jobs/{running}", headers=srv.auth(key)) as r:
        assert r.status == 200
    comfy.release_steps()
    [done] = await srv.recorder.finished(running)
    assert done.job.state is JobState.CANCELLED and "app" in (done.job.error or "")
    async with srv.http.delete(f"{srv.url}/v1/jobs/{running}", headers=srv.auth(key)) as r:
        assert r.status == 409
        assert r.content_type == "application/problem+json"
    assert len(comfy.prompts_received) == 1  # the queued one never reached ComfyUI


async def test_a_key_sees_only_its_own_jobs(srv: Served) -> None:
    mine, other = srv.key("mine"), srv.key("other")
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs?wait=30"
    async with srv.http.post(url, json={"prompt": "x", "steps": 1}, headers=srv.auth(mine)) as r:
        [job] = (await r.json())["jobs"]
    for path in ("", "/outputs/0", "/events"):
        async with srv.http.get(f"{job['url']}{path}", headers=srv.auth(other)) as r:
            assert r.status == 404
    async with srv.http.delete(job["url"], headers=srv.auth(other)) as r:
        assert r.status == 404
    async with srv.http.get(f"{job['url']}/outputs/7", headers=srv.auth(mine)) as r:
        assert r.status == 404 and (await r.json())["field"] == "n"


# webhooks ---------------------------------------------------------------------------------------
async def test_webhook_is_signed_and_retried_after_a_500(srv: Served) -> None:
    key = srv.key()
    received: list[tuple[bytes, str]] = []
    got = asyncio.Event()

    async def hook(request: web.Request) -> web.Response:
        received.append((await request.read(), request.headers.get(HEADER, "")))
        if len(received) == 1:
            return web.Response(status=500)
        got.set()
        return web.Response(status=204)

    receiver = web.Application()
    receiver.router.add_post("/hook", hook)
    async with loopback(receiver) as port:
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
        body = {"prompt": "x", "steps": 2, "webhook": f"http://127.0.0.1:{port}/hook"}
        async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
            assert r.status == 202
            [job] = (await r.json())["jobs"]
        await asyncio.wait_for(got.wait(), 15)
    assert len(received) == 2
    payload, signature = received[1]
    assert verify(key.webhook_secret, payload, signature)
    assert not verify("whsec_wrong", payload, signature)
    assert not verify(key.webhook_secret, payload + b" ", signature)
    sent = json.loads(payload)
    assert sent["event"] == "done" and sent["job"]["id"] == job["id"]
    assert sent["job"]["outputs"][0]["url"].startswith(srv.url)


# errors -----------------------------------------------------------------------------------------
async def test_errors_are_problem_json_naming_the_field_and_store_nothing(
    srv: Served, comfy: FakeComfyUI
) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    cases = [
        ({"prompt": "x", "colour": "red"}, 422, "colour"),
        ({"prompt": "x", "steps": 500}, 422, "steps"),
        ({"prompt": "x", "steps": "many"}, 422, "steps"),
        ({"prompt": "x", "count": 11}, 422, "count"),
        ({"steps": 3}, 422, "prompt"),
        ({"prompt": 42}, 422, "prompt"),
        (["not", "an", "object"], 422, "body"),
    ]
    for body, status, field in cases:
        async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
            assert r.status == status, (body, await r.text())
            assert r.content_type == "application/problem+json"
            problem = await r.json()
            assert problem["field"] == field and problem["detail"] and problem["title"]
            assert problem["instance"] == "/v1/workflows/sd15-txt2img/jobs"
    async with srv.http.post(url, data="prompt=x", headers=srv.auth(key)) as r:
        assert r.status == 415 and (await r.json())["field"] == "Content-Type"
    headers = {**srv.auth(key), "Content-Type": "application/json"}
    async with srv.http.post(url, data="{nope", headers=headers) as r:
        assert r.status == 400 and r.content_type == "application/problem+json"
    async with srv.http.post(
        f"{srv.url}/v1/workflows/nope/jobs", json={}, headers=srv.auth(key)
    ) as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
    async with srv.http.get(f"{srv.url}/v1/jobs/deadbeef", headers=srv.auth(key)) as r:
        assert r.status == 404
    async with srv.http.get(f"{srv.url}/nowhere") as r:
        assert r.status == 404 and r.content_type == "application/problem+json"
    async with srv.http.put(f"{srv.url}/v1/workflows", headers=srv.auth(key)) as r:
        assert r.status == 405 and r.content_type == "application/problem+json"
    assert srv.engine.store.recent() == []
    assert comfy.prompts_received == []


@pytest.mark.parametrize("workflow", ["sd15-txt2img", "sd15-img2img", "upscale"])
async def test_a_malformed_content_type_is_a_problem_not_a_server_error(
    srv: Served, comfy: FakeComfyUI, workflow: str
) -> None:
    key = srv.key()
    url = f"{srv.url}/v1/workflows/{workflow}/jobs"
    cases = [
        ("multipart/form-data", b"prompt=x", 400),  # no boundary
        ("multipart/form-data; boundary=", b"--\r\n", 400),
        ("multipart/form-data; boundary=abc", b"not multipart at all", 400),
        ("application/json; charset=nonsense", b'{"prompt": "x"}', 415),
    ]
    for content_type, body, status in cases:
        headers = {**srv.auth(key), "Content-Type": content_type}
        async with srv.http.post(url, data=body, headers=headers) as r:
            assert r.status == status, (content_type, await r.text())
            assert r.content_type == "application/problem+json"
            problem = await r.json()
            assert problem["field"] == "body" and problem["detail"]
    assert srv.engine.store.recent() == []
    assert comfy.prompts_received == []


async def test_bodies_and_images_over_the_limits_are_413(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    settings = http_settings(make_settings(tmp_path, comfy.url), max_body_bytes=4096)
    async with served(settings) as srv:
        key = srv.key()
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
        body = {"prompt": "x" * 5000}
        async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
            assert r.status == 413 and r.content_type == "application/problem+json"
        form = aiohttp.FormData()
        form.add_field("prompt", "x")
        form.add_field("image", b"\x89PNG\r\n\x1a\n" + b"0" * 8000, filename="big.png")
        url = f"{srv.url}/v1/workflows/sd15-img2img/jobs"
        async with srv.http.post(url, data=form, headers=srv.auth(key)) as r:
            assert r.status == 413 and r.content_type == "application/problem+json"
        assert srv.engine.store.recent() == []


async def test_a_key_over_its_queue_limit_gets_429(srv: Served, comfy: FakeComfyUI) -> None:
    key = srv.key(limit_queued=1)
    url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
    comfy.hold_steps()
    statuses = []
    for _ in range(3):
        async with srv.http.post(url, json={"prompt": "x", "steps": 2}, headers=srv.auth(key)) as r:
            statuses.append(r.status)
            if r.status == 429:
                assert "limit" in (await r.json())["detail"]
    assert statuses == [202, 202, 429]  # one running, one waiting, then the limit
    comfy.release_steps()


# probes -----------------------------------------------------------------------------------------
async def test_health_and_readiness(srv: Served, comfy: FakeComfyUI) -> None:
    async with srv.http.get(f"{srv.url}/healthz") as r:
        assert r.status == 200 and (await r.json())["status"] == "ok"
    async with srv.http.get(f"{srv.url}/readyz") as r:
        body = await r.json()
        assert r.status == 200, body
        assert body["checks"] == {"comfyui": "reachable", "storage": "writable"}
    await comfy.stop()
    async with srv.http.get(f"{srv.url}/readyz") as r:
        assert r.status == 503
        assert (await r.json())["checks"]["comfyui"].startswith("unreachable")


async def test_docs_are_served_from_the_package(srv: Served) -> None:
    async with srv.http.get(f"{srv.url}/docs") as r:
        assert r.status == 200 and r.content_type == "text/html"
        page = await r.text()
    assert "/docs/static/swagger-ui-bundle.js" in page and "//" + "cdn" not in page
    async with srv.http.get(f"{srv.url}/docs/static/swagger-ui-bundle.js") as r:
        assert r.status == 200 and len(await r.read()) > 100_000
