"""The console's pages without a browser: the run form from the JSON Schema, the snippets, the
gallery (a key's own results; an admin's, everyone's) and "run again"."""

from __future__ import annotations

import html
import json
import re
import shlex
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.http.console.snippets import snippets
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import browser, console_settings, sign_in
from tests.http_helpers import Served, served


@pytest.fixture
async def srv(tmp_path: Path, comfy: FakeComfyUI) -> AsyncIterator[Served]:
    async with served(console_settings(tmp_path, comfy)) as s:
        yield s


def tag(page: str, element_id: str) -> str:
    found = re.search(rf'<[a-z]+ [^>]*id="{element_id}"[^>]*>', page)
    assert found is not None, element_id
    return found.group(0)


async def test_the_run_form_follows_the_workflow_schema(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        async with http.get(f"{srv.url}/workflows/sd15-img2img") as r:
            page = await r.text()
    assert 'type="file"' in tag(page, "field-image") and 'accept="image/*"' in tag(
        page, "field-image"
    )
    assert "required" in tag(page, "field-image")
    steps = tag(page, "field-steps")
    assert 'type="number"' in steps and 'min="1"' in steps and 'max="50"' in steps
    assert 'placeholder="random"' in tag(page, "field-seed")
    sampler = page[
        page.index('id="field-sampler"') : page.index("</select>", page.index('id="field-sampler"'))
    ]
    assert '<option value="euler"' in sampler and "dpmpp_2m" in sampler
    assert 'max="' in tag(page, "field-count")


async def test_a_run_again_link_fills_the_form(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        url = f"{srv.url}/workflows/sd15-txt2img?prompt=a+red+%3Cboat%3E&steps=7"
        async with http.get(url) as r:
            page = await r.text()
    assert "a red &lt;boat&gt;</textarea>" in page
    assert 'value="7"' in tag(page, "field-steps")


async def test_the_curl_snippet_runs_as_pasted(srv: Served) -> None:
    key = srv.key("alice")
    workflow = srv.engine.workflows["sd15-txt2img"]
    curl, python, javascript, client = snippets(
        workflow, srv.url, object_info=srv.engine.object_info
    )
    words = shlex.split(curl.code.replace("\\\n", " "))
    assert words[:3] == ["curl", "-X", "POST"]
    url = words[3]
    body = json.loads(words[words.index("-d") + 1])
    assert body["prompt"] and "seed" not in body
    async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
        assert r.status == 200, await r.text()
        assert (await r.json())["jobs"][0]["state"] == "done"
    compile(python.code, "snippet.py", "exec")
    assert "COMFYCORD_API_KEY" in python.code and key.secret not in python.code
    assert "JSON.stringify" in javascript.code and "openapi-python-client" in client.code
    img2img = snippets(srv.engine.workflows["sd15-img2img"], srv.url)[0].code
    assert "-F 'image=@input.png'" in img2img


async def test_the_gallery_shows_a_keys_own_results_and_an_admin_all(srv: Served) -> None:
    alice, bob = srv.key("alice"), srv.key("bob")
    admin = srv.key("boss", role="admin")
    ids = {}
    for key, prompt in ((alice, "alice's cat"), (bob, "bob's dog")):
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs?wait=30"
        body = {"prompt": prompt, "steps": 2}
        async with srv.http.post(url, json=body, headers=srv.auth(key)) as r:
            assert r.status == 200
            ids[key.key.name] = (await r.json())["jobs"][0]["id"]
    async with browser() as http:
        await sign_in(srv, http, alice.secret)
        async with http.get(f"{srv.url}/gallery") as r:
            page = html.unescape(await r.text())
        assert "alice's cat" in page and "bob's dog" not in page
        assert f"/v1/jobs/{ids['alice']}/outputs/0" in page
        assert "/workflows/sd15-txt2img?prompt=alice%27s+cat" in page
        async with http.get(f"{srv.url}/v1/jobs/{ids['bob']}/outputs/0") as r:
            assert r.status == 404  # another key's result
    async with browser() as http:
        await sign_in(srv, http, admin.secret)
        async with http.get(f"{srv.url}/gallery") as r:
            page = html.unescape(await r.text())
        assert "alice's cat" in page and "bob's dog" in page
        async with http.get(f"{srv.url}/v1/jobs/{ids['bob']}/outputs/0") as r:
            assert r.status == 200 and r.content_type == "image/png"
