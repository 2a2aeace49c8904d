"""The HTTP API: its document, metrics, the CLI (`keys`, `serve`), one queue with Discord."""

from __future__ import annotations

import asyncio
import contextlib
import socket
from pathlib import Path

import aiohttp
import pytest
from openapi_spec_validator import validate
from prometheus_client.parser import text_string_to_metric_families

from bot.app import run_bot
from bot.http.server import serve
from bot.http.service import HttpApi
from bot.settings import Settings, load_settings
from tests.cli.test_cli import run_cli, write_config
from tests.conftest import make_settings
from tests.e2e import comfybot, has_files, prompt_text
from tests.fakes.comfyui import FakeComfyUI
from tests.fakes.discord_fixtures import installed_fake
from tests.http_helpers import Served, http_settings, served


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of a Prometheus text page, parsed by prometheus-client's own parser."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return found


def value(found: dict, name: str, **labels: str) -> float:
    return found.get((name, tuple(sorted(labels.items()))), 0.0)


# the document -----------------------------------------------------------------------------------
async def test_openapi_document_is_valid_and_types_each_workflow(
    settings: Settings,
) -> None:
    async with served(http_settings(settings)) as srv, srv.http.get(f"{srv.url}/openapi.json") as r:
        assert r.status == 200
        document = await r.json()
    validate(document)  # openapi-spec-validator: raises on any problem
    assert document["openapi"].startswith("3.1")
    schemas = document["components"]["schemas"]
    txt = schemas["Sd15Txt2imgRequest"]
    assert txt["required"] == ["prompt"] and txt["additionalProperties"] is False
    assert txt["properties"]["steps"]["type"] == "integer"
    assert txt["properties"]["size"]["enum"] == ["square", "portrait", "landscape"]
    img = schemas["Sd15Img2imgForm"]
    assert img["properties"]["image"]["format"] == "binary"
    op = document["paths"]["/v1/workflows/sd15-txt2img/jobs"]["post"]
    assert op["operationId"] == "run_sd15_txt2img"
    content = op["requestBody"]["content"]
    assert content["application/json"]["schema"]["$ref"].endswith("/Sd15Txt2imgRequest")
    assert {"JobInfo", "Problem", "JobsCreated", "WorkflowList"} <= set(schemas)


# metrics ----------------------------------------------------------------------------------------
async def test_metrics_parse_and_move_as_jobs_run(settings: Settings) -> None:
    async with served(http_settings(settings)) as srv:
        async with srv.http.get(f"{srv.url}/metrics") as r:
            assert r.status == 200
            before = samples(await r.text())
        key = srv.key()
        url = f"{srv.url}/v1/workflows/sd15-txt2img/jobs?wait=30"
        async with srv.http.post(url, json={"prompt": "x", "steps": 3}, headers=srv.auth(key)) as r:
            assert r.status == 200
        async with srv.http.get(f"{srv.url}/v1/workflows", headers={}) as r:
            assert r.status == 401
        async with srv.http.get(f"{srv.url}/metrics") as r:
            after = samples(await r.text())
    wf = "sd15-txt2img"
    finished = "comfycord_jobs_finished_total"
    assert (
        value(after, finished, workflow=wf, state="done")
        == value(before, finished, workflow=wf, state="done") + 1
    )
    assert value(after, "comfycord_jobs_created_total", workflow=wf) == 1
    count = "comfycord_job_duration_seconds_count"
    assert value(after, count, workflow=wf) == value(before, count, workflow=wf) + 1
    busy = [v for (name, _), v in after.items() if name == "comfycord_backend_busy_seconds_total"]
    assert busy and busy[0] > 0
    route = "/v1/workflows/{name}/jobs"
    requests = "comfycord_http_requests_total"
    assert value(after, requests, route=route, method="POST", status="200") == 1
    assert value(after, requests, route="/v1/workflows", method="GET", status="401") == 1
    assert ("comfycord_queue_length", ()) in after
    assert ("comfycord_discord_edits_total", ()) in after


# the command line -------------------------------------------------------------------------------
@pytest.mark.usefixtures("comfy_env")
async def test_cli_keys_create_list_revoke_and_serve(
    comfy: FakeComfyUI,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.delenv("DISCORD_TOKEN", raising=False)
    config = write_config(tmp_path, extra="http:\n  enabled: true\n  port: 0\n")
    code = await run_cli("--config", str(config), "keys", "create", "site", "--limit-queued", "2")
    out = capsys.readouterr().out
    assert code == 0, out
    secret = next(line.split()[-1] for line in out.splitlines() if "API key:" in line)
    assert secret.startswith("cc_")
    code = await run_cli("--config", str(config), "keys", "create", "bad", "--workflows", "nope")
    assert code == 1 and "nope" in capsys.readouterr().err
    assert await run_cli("--config", str(config), "keys", "list") == 0
    listed = capsys.readouterr().out
    assert "site" in listed and "queued limit 2" in listed and secret not in listed

    # `serve`: the API alone, no Discord token
    settings = load_settings(config)
    stop = asyncio.Event()
    started: asyncio.Future[HttpApi] = asyncio.get_running_loop().create_future()
    task = asyncio.create_task(serve(settings, ready=started.set_result, stop=stop))
    try:
        api = await asyncio.wait_for(started, 10)
        auth = {"Authorization": f"Bearer {secret}"}
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{api.address}/v1/workflows", headers=auth) as r:
                assert r.status == 200
            url = f"{api.address}/v1/workflows/sd15-txt2img/jobs?wait=30"
            async with http.post(url, json={"prompt": "x", "steps": 2}, headers=auth) as r:
                assert r.status == 200 and (await r.json())["jobs"][0]["state"] == "done"
            assert await run_cli("--config", str(config), "keys", "revoke", "site") == 0
            async with http.get(f"{api.address}/v1/workflows", headers=auth) as r:
                assert r.status == 401
            # a job left waiting and a client still following it do not hold up the stop
            key = api.keys.create("late")
            late = {"Authorization": f"Bearer {key.secret}"}
            comfy.hold_steps()
            url = f"{api.address}/v1/workflows/sd15-txt2img/jobs"
            async with http.post(url, json={"prompt": "x", "steps": 3}, headers=late) as r:
                [job] = (await r.json())["jobs"]
            async with http.get(job["events_url"], headers=late) as stream:
                assert stream.status == 200
                await stream.content.readline()  # the first event arrived
                stop.set()
                assert await asyncio.wait_for(task, 10) == 0
            comfy.release_steps()
    finally:
        stop.set()
        assert await asyncio.wait_for(task, 10) == 0


async def test_keys_revoke_of_an_unknown_key_says_so(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = write_config(tmp_path)
    assert await run_cli("--config", str(config), "keys", "revoke", "ghost") == 1
    assert "ghost" in capsys.readouterr().err


# one queue for Discord members and API keys -----------------------------------------------------
async def test_discord_members_and_api_keys_share_the_fair_queue(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    """A key with many jobs cannot starve a member, and a busy member cannot starve a key."""
    settings = http_settings(make_settings(tmp_path, comfy.url))
    async with installed_fake() as fake, comfybot(fake, settings) as bot:
        from bot.http.server import serving

        bob = fake.add_member("bob")
        async with serving(bot.engine, bot.admission, settings, bot.metrics) as api:
            key = api.keys.create("site", limit_queued=10)
            srv_auth = Served.auth(key)
            comfy.hold_steps()
            url = f"{api.address}/v1/workflows/sd15-txt2img/jobs"
            async with aiohttp.ClientSession() as http:
                for i in range(4):
                    body = {"prompt": f"k{i}", "steps": 1}
                    async with http.post(url, json=body, headers=srv_auth) as r:
                        assert r.status == 202, await r.text()
                await comfy.wait_until_held()
                for i in range(2):
                    it = await fake.slash("imagine", {"prompt": f"m{i}", "steps": 1}, user_id=bob)
                    await it.wait_ack()
                async with asyncio.timeout(10):
                    while len(bot.engine.queue.order()) < 5:
                        await asyncio.sleep(0.01)
                waiting = [j.owner_id for j in bot.engine.queue.order()]
                # the key's k0 runs; bob's first job is next, then turns alternate
                member, site = str(bob), "key:site"
                assert waiting == [member, site, member, site, site]
                comfy.release_steps()
                async with asyncio.timeout(20):
                    while len(comfy.prompts_received) < 6 or any(
                        not j.state.finished for j in bot.engine.store.recent(limit=10)
                    ):
                        await asyncio.sleep(0.02)
    order = [prompt_text(body) for body in comfy.prompts_received]
    assert order == ["k0", "m0", "k1", "m1", "k2", "k3"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


async def test_run_serves_http_beside_the_bot_and_counts_discord_edits_and_429s(
    comfy: FakeComfyUI, tmp_path: Path
) -> None:
    async with installed_fake() as fake:
        port = free_port()
        settings = http_settings(make_settings(tmp_path, comfy.url), port=port)
        settings = settings.model_copy(
            update={
                "discord_token": fake.bot_token,
                "discord": settings.discord.model_copy(update={"dev_guild": fake.guild_id}),
            }
        )
        task = asyncio.create_task(run_bot(settings))
        base = f"http://127.0.0.1:{port}"
        try:
            await fake.wait_for(lambda: fake.identify_count == 1 and fake.gateway_connected)
            await fake.wait_for(lambda: any(c["name"] == "imagine" for c in fake.commands))
            async with aiohttp.ClientSession() as http:
                async with asyncio.timeout(10):
                    while True:
                        with contextlib.suppress(aiohttp.ClientError):
                            async with http.get(f"{base}/healthz") as r:
                                if r.status == 200:
                                    break
                        await asyncio.sleep(0.05)
                # one edit of the reply is answered 429 (discord.py waits and retries it)
                fake.inject_error("PATCH /webhooks/*/*/messages/*", 429, retry_after=0.1)
                it = await fake.slash("imagine", {"prompt": "a cat", "steps": 2})
                await it.wait_original(has_files, timeout=15)
                assert fake.rate_limited_count == 1
                labels = {"workflow": "sd15-txt2img", "state": "done"}
                # the job counts as finished once stored, a moment after its result is posted
                async with asyncio.timeout(5):
                    while True:
                        async with http.get(f"{base}/metrics") as r:
                            found = samples(await r.text())
                        if value(found, "comfycord_jobs_finished_total", **labels):
                            break
                        await asyncio.sleep(0.05)
            assert value(found, "comfycord_discord_edits_total") >= 2
            assert value(found, "comfycord_discord_rate_limited_total") == 1
            assert value(found, "comfycord_jobs_finished_total", **labels) == 1
        finally:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
