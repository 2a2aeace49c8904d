"""The web console's roles and sessions: sign in with a key, cookies, CSRF, sign out, revoking,
admin-only pages, the security headers and escaping of what a workflow says."""

from __future__ import annotations

import contextlib
import re
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.http.console.sessions import SESSION_COOKIE, SIGN_IN_COOKIE, Sessions
from bot.http.keys import SCOPE, SESSION_SCOPE, KeyStore, hash_key
from bot.jobs.store import Store
from bot.settings import Settings
from tests.cli.test_cli import run_cli, write_config
from tests.conftest import WORKFLOWS, make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http_helpers import Served, http_settings, served

CSRF_RE = re.compile(r'name="csrf_token" value="([^"]+)"')


def own_workflows(tmp_path: Path) -> Path:
    """A copy of the shipped workflows that a test may add to and remove from."""
    folder = tmp_path / "workflows"
    shutil.copytree(WORKFLOWS, folder)
    return folder


def console_settings(tmp_path: Path, comfy: FakeComfyUI, **http: Any) -> Settings:
    settings = make_settings(tmp_path, comfy.url, workflows={"dir": str(own_workflows(tmp_path))})
    return http_settings(settings, **http)


@pytest.fixture
async def srv(tmp_path: Path, comfy: FakeComfyUI) -> AsyncIterator[Served]:
    async with served(console_settings(tmp_path, comfy)) as s:
        yield s


@contextlib.asynccontextmanager
async def browser() -> AsyncIterator[aiohttp.ClientSession]:
    """A client that keeps cookies, as a browser does (also for 127.0.0.1)."""
    async with aiohttp.ClientSession(cookie_jar=aiohttp.CookieJar(unsafe=True)) as http:
        yield http


async def sign_in(srv: Served, http: aiohttp.ClientSession, secret: str) -> aiohttp.ClientResponse:
    async with http.get(f"{srv.url}/") as r:
        assert r.status == 200
        token = CSRF_RE.search(await r.text())
    assert token is not None
    data = {"key": secret, "csrf_token": token.group(1)}
    async with http.post(f"{srv.url}/sign-in", data=data, allow_redirects=False) as r:
        return r


async def page_of(http: aiohttp.ClientSession, url: str, status: int = 200) -> str:
    """The text of the page at `url`, which answers with `status`."""
    async with http.get(url) as r:
        assert r.status == status
        return await r.text()


async def csrf_of(srv: Served, http: aiohttp.ClientSession, path: str = "/workflows") -> str:
    async with http.get(f"{srv.url}{path}") as r:
        assert r.status == 200, await r.text()
        found = re.search(r'<meta name="csrf-token" content="([^"]+)">', await r.text())
    assert found is not None
    return found.group(1)


# roles ------------------------------------------------------------------------------------------
async def test_cli_creates_admin_keys_and_lists_each_role(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert await run_cli("--config", str(config), "keys", "create", "boss", "--admin") == 0
    assert "admin key boss created" in capsys.readouterr().out
    assert await run_cli("--config", str(config), "keys", "create", "site") == 0
    capsys.readouterr()
    assert await run_cli("--config", str(config), "keys", "list") == 0
    listed = capsys.readouterr().out.splitlines()
    assert any(line.startswith("boss  admin  ") for line in listed), listed
    assert any(line.startswith("site  member  ") for line in listed), listed


def test_a_key_stored_before_roles_is_a_member(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    try:
        keys = KeyStore(store)
        created = keys.create("old")
        record = dict(store.get_setting(SCOPE, "old"))
        del record["role"]
        store.set_setting(SCOPE, "old", record)
        key = keys.check(created.secret)
        assert key is not None and key.role == "member" and not key.is_admin
        with pytest.raises(Exception, match="role"):
            keys.create("odd", role="owner")
    finally:
        store.close()


# sessions ---------------------------------------------------------------------------------------
async def test_signing_in_sets_a_hardened_cookie_kept_hashed(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        r = await sign_in(srv, http, key.secret)
        assert r.status == 303 and r.headers["Location"] == "/workflows"
        cookie = next(c for c in r.headers.getall("Set-Cookie") if SESSION_COOKIE in c)
        assert "HttpOnly" in cookie and "SameSite=Strict" in cookie and "Secure" not in cookie
        session_id = r.cookies[SESSION_COOKIE].value
        stored = srv.engine.store.settings_in(SESSION_SCOPE)
        assert list(stored) == [(SESSION_SCOPE, hash_key(session_id))]
        assert session_id not in str(stored) and key.secret not in str(stored)
        async with http.get(f"{srv.url}/workflows") as page:
            assert page.status == 200
            assert "alice" in await page.text()
        # signed in, the sign-in page sends to the workflows
        async with http.get(f"{srv.url}/", allow_redirects=False) as page:
            assert page.status == 303 and page.headers["Location"] == "/workflows"


async def test_the_cookie_is_secure_behind_an_https_public_url(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    settings = console_settings(tmp_path, comfy, public_url="https://art.example.org")
    async with served(settings) as srv, aiohttp.ClientSession() as http:
        key = srv.key("alice")
        async with http.get(f"{srv.url}/") as r:
            form = CSRF_RE.search(await r.text())
            sign_in_cookie = next(c for c in r.headers.getall("Set-Cookie") if SIGN_IN_COOKIE in c)
        assert form is not None and "Secure" in sign_in_cookie
        # a client keeps a Secure cookie for https only: this test sends it back by hand
        headers = {"Cookie": sign_in_cookie.split(";")[0]}
        data = {"key": key.secret, "csrf_token": form.group(1)}
        url = f"{srv.url}/sign-in"
        async with http.post(url, data=data, headers=headers, allow_redirects=False) as r:
            assert r.status == 303
            cookie = next(c for c in r.headers.getall("Set-Cookie") if SESSION_COOKIE in c)
        assert "Secure" in cookie and "HttpOnly" in cookie


async def test_a_wrong_key_or_a_forged_sign_in_form_is_refused(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        r = await sign_in(srv, http, "cc_not-a-key")
        assert r.status == 401 and SESSION_COOKIE not in r.cookies
        data = {"key": key.secret, "csrf_token": "forged"}
        async with http.post(f"{srv.url}/sign-in", data=data, allow_redirects=False) as r:
            assert r.status == 403 and SESSION_COOKIE not in r.cookies
    async with browser() as http:  # no sign-in cookie at all: a form posted from elsewhere
        data = {"key": key.secret, "csrf_token": "x"}
        async with http.post(f"{srv.url}/sign-in", data=data, allow_redirects=False) as r:
            assert r.status == 403
    assert srv.engine.store.settings_in(SESSION_SCOPE) == {}


async def test_pages_need_a_session(srv: Served) -> None:
    async with browser() as http:
        for path in ("/workflows", "/gallery", "/add-workflow", "/workflows/sd15-txt2img"):
            async with http.get(f"{srv.url}{path}", allow_redirects=False) as r:
                assert r.status == 303 and r.headers["Location"] == "/", path


async def test_signing_out_ends_the_session(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        csrf = await csrf_of(srv, http)
        # without the form's token, signing out is refused (a forged form can't sign out)
        async with http.post(f"{srv.url}/sign-out", data={}, allow_redirects=False) as r:
            assert r.status == 403
        data = {"csrf_token": csrf}
        async with http.post(f"{srv.url}/sign-out", data=data, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/"
        assert srv.engine.store.settings_in(SESSION_SCOPE) == {}
        async with http.get(f"{srv.url}/workflows", allow_redirects=False) as r:
            assert r.status == 303


async def test_revoking_a_key_ends_its_sessions_at_once(srv: Served) -> None:
    key = srv.key("alice")
    other = srv.key("bob")
    async with browser() as http, browser() as http2:
        await sign_in(srv, http, key.secret)
        await sign_in(srv, http2, other.secret)
        async with http.get(f"{srv.url}/v1/workflows") as r:
            assert r.status == 200
        srv.api.keys.revoke("alice")
        async with http.get(f"{srv.url}/workflows", allow_redirects=False) as r:
            assert r.status == 303
        async with http.get(f"{srv.url}/v1/workflows") as r:
            assert r.status == 401
        async with http2.get(f"{srv.url}/workflows") as r:
            assert r.status == 200  # another key's session goes on
        assert [v["key"] for v in srv.engine.store.settings_in(SESSION_SCOPE).values()] == ["bob"]


async def test_a_key_made_again_under_a_revoked_name_does_not_revive_its_sessions(
    srv: Served,
) -> None:
    key = srv.key("alice")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        session_id = next(c.value for c in http.cookie_jar if c.key == SESSION_COOKIE)
        # revoked by another process (the CLI), so this server's sessions were not told
        srv.engine.store.set_setting(SCOPE, "alice", None)
        srv.key("alice")
        assert Sessions(srv.api.keys).check(session_id) is None
        async with http.get(f"{srv.url}/workflows", allow_redirects=False) as r:
            assert r.status == 303


def test_sessions_expire(tmp_path: Path) -> None:
    store = Store(tmp_path / "db.sqlite3")
    try:
        keys = KeyStore(store)
        key = keys.create("alice").key
        sessions = Sessions(keys, lifetime=60)
        session_id = sessions.start(key, now=1000.0)
        assert sessions.check(session_id, now=1059.0) is not None
        assert sessions.check(session_id, now=1061.0) is None
        assert store.settings_in(SESSION_SCOPE) == {}
        assert sessions.check("unknown", now=0) is None
    finally:
        store.close()


async def test_a_session_runs_jobs_over_the_api_only_with_its_csrf_token(srv: Served) -> None:
    key = srv.key("alice")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs"
        async with http.post(url, json={"prompt": "a cat", "steps": 2}) as r:
            assert r.status == 403
            assert (await r.json())["field"] == "X-CSRF-Token"
        headers = {"X-CSRF-Token": "nope"}
        async with http.post(url, json={"prompt": "a cat", "steps": 2}, headers=headers) as r:
            assert r.status == 403
        headers = {"X-CSRF-Token": await csrf_of(srv, http)}
        async with http.post(url, json={"prompt": "a cat", "steps": 2}, headers=headers) as r:
            assert r.status == 202, await r.text()
            [job] = (await r.json())["jobs"]
        await srv.recorder.finished(job["id"])
        async with http.get(f"{srv.url}/v1/jobs/{job['id']}") as r:
            assert r.status == 200 and (await r.json())["state"] == "done"


# roles on pages ---------------------------------------------------------------------------------
async def test_a_member_key_cannot_reach_the_admin_pages(srv: Served) -> None:
    key = srv.key("member")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        csrf = await csrf_of(srv, http)
        async with http.get(f"{srv.url}/add-workflow") as r:
            assert r.status == 403 and "admin" in await r.text()
        url = f"{srv.url}/workflows/sd15-txt2img/delete"
        async with http.post(url, data={"csrf_token": csrf}, allow_redirects=False) as r:
            assert r.status == 403
        assert "sd15-txt2img" in srv.engine.workflows
        async with http.get(f"{srv.url}/workflows") as r:
            assert "/add-workflow" not in await r.text()


async def test_an_admin_removes_a_workflow_from_its_page(srv: Served) -> None:
    key = srv.key("boss", role="admin")
    async with browser() as http:
        await sign_in(srv, http, key.secret)
        csrf = await csrf_of(srv, http, "/workflows/upscale")
        url = f"{srv.url}/workflows/upscale/delete"
        async with http.post(url, data={}, allow_redirects=False) as r:
            assert r.status == 403  # no CSRF token
        async with http.post(url, data={"csrf_token": csrf}, allow_redirects=False) as r:
            assert r.status == 303 and r.headers["Location"] == "/workflows"
        assert "upscale" not in srv.engine.workflows
        async with http.get(f"{srv.url}/workflows/upscale") as r:
            assert r.status == 404


# headers and escaping ---------------------------------------------------------------------------
async def test_pages_send_a_strict_content_security_policy_and_no_inline_code(
    srv: Served,
) -> None:
    key = srv.key("boss", role="admin")
    async with browser() as http:
        async with http.get(f"{srv.url}/") as r:
            assert "default-src 'self'" in r.headers["Content-Security-Policy"]
        await sign_in(srv, http, key.secret)
        for path in ("/workflows", "/add-workflow", "/workflows/sd15-txt2img", "/gallery"):
            async with http.get(f"{srv.url}{path}") as r:
                assert r.status == 200, path
                policy = r.headers["Content-Security-Policy"]
                assert "default-src 'self'" in policy and "unsafe-inline" not in policy
                assert r.headers["X-Content-Type-Options"] == "nosniff"
                html = await r.text()
                assert not re.search(r"<script(?![^>]*\bsrc=)", html), path
                assert "<style" not in html and " style=" not in html, path
                assert not re.search(r"\son[a-z]+=", html), path
        async with http.get(f"{srv.url}/console/static/console.js") as r:
            assert r.status == 200 and "Content-Security-Policy" in r.headers


async def test_what_a_workflow_says_is_shown_escaped(tmp_path: Path, comfy: FakeComfyUI) -> None:
    settings = console_settings(tmp_path, comfy)
    folder = Path(settings.workflows.dir)
    shutil.copy(folder / "sd15-txt2img.json", folder / "evil.json")
    (folder / "evil.yaml").write_text(
        'title: "<script>alert(1)</script>"\n'
        "description: '<img src=x onerror=alert(2)>'\n"
        "params:\n"
        "  prompt: {type: text, node: '6', input: text, required: true,"
        " description: '\"><b>bold</b>'}\n"
    )
    async with served(settings) as srv, browser() as http:
        assert "evil" in srv.engine.workflows, srv.engine.workflow_problems
        key = srv.key("boss", role="admin")
        await sign_in(srv, http, key.secret)
        for path in ("/workflows", "/workflows/evil"):
            async with http.get(f"{srv.url}{path}") as r:
                html = await r.text()
                assert "<script>alert" not in html and "<img src=x" not in html, path
                assert "&lt;script&gt;alert(1)&lt;/script&gt;" in html, path
        assert "<b>bold</b>" not in html
