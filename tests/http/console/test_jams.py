"""The console's jams, read-only: the list, one jam's gallery with each entry's votes and image,
escaped; an admin also sees where each jam runs and who entered, a member does not."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from bot.engine import JobRequest
from bot.jams import Jams
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import browser, console_settings, page_of, sign_in
from tests.http_helpers import Served, served


@pytest.fixture
async def srv(tmp_path: Path, comfy: FakeComfyUI) -> AsyncIterator[Served]:
    async with served(console_settings(tmp_path, comfy)) as s:
        yield s


async def entered_jam(srv: Served) -> tuple[str, list[str]]:
    """A jam in voting with two entries made on Discord; the second has two votes."""
    book: Jams = srv.api.jams
    jam = book.start(
        guild_id="4242",
        channel_id="77",
        thread_id="78",
        theme="lighthouses <at> dusk",
        minutes=10,
        created_by="mod",
    )
    ids = []
    for owner, prompt in (("111", "a red lighthouse"), ("222", "<script>alert(1)</script>")):
        (job,) = await srv.engine.submit(
            JobRequest(
                workflow="sd15-txt2img",
                values={"prompt": prompt, "steps": 2},
                owner_id=owner,
                owner_name=f"member{owner}",
                guild_id="4242",
                channel_id="78",
            )
        )
        ids.append(job.id)
    await srv.recorder.finished(*ids, timeout=30)
    for job_id, prompt in zip(ids, ("a red lighthouse", "<script>alert(1)</script>"), strict=True):
        done = srv.engine.get_job(job_id)
        assert done is not None
        assert not isinstance(book.consider(done, prompt), str | None)
    book.start_voting(jam.id)
    book.vote(jam.id, "111", ids[1])
    book.vote(jam.id, "333", ids[1])
    return jam.id, ids


async def test_a_member_sees_the_jams_and_a_gallery_with_votes(srv: Served) -> None:
    jam_id, (first, second) = await entered_jam(srv)
    member = srv.key("site")
    async with browser() as http:
        await sign_in(srv, http, member.secret)
        listing = await page_of(http, f"{srv.url}/jams")
        page = await page_of(http, f"{srv.url}/jams/{jam_id}")
        image = re.search(rf'src="(/jams/{jam_id}/entries/{second}/outputs/0)"', page)
        assert image is not None
        async with http.get(f"{srv.url}{image.group(1)}") as r:
            assert r.status == 200 and r.content_type == "image/png"
            assert (await r.read()).startswith(b"\x89PNG")
        # the same job through the API is not this key's
        async with http.get(f"{srv.url}/v1/jobs/{second}/outputs/0") as r:
            assert r.status == 404
    assert f'data-jam="{jam_id}"' in listing and "lighthouses &lt;at&gt; dusk" in listing
    entries = re.findall(r'data-entry="([^"]+)"', page)
    assert entries == [second, first]  # most votes first
    assert "2 votes" in page and "0 votes" in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in page and "<script>alert" not in page
    # where it runs and who entered are for admins
    assert "4242" not in listing and "4242" not in page and "member111" not in page


async def test_an_admin_sees_where_a_jam_runs_and_who_entered(srv: Served) -> None:
    jam_id, _ = await entered_jam(srv)
    admin = srv.key("boss", role="admin")
    async with browser() as http:
        await sign_in(srv, http, admin.secret)
        async with http.get(f"{srv.url}/jams") as r:
            listing = await r.text()
        async with http.get(f"{srv.url}/jams/{jam_id}") as r:
            page = await r.text()
    assert "server 4242, channel 77" in listing
    assert "thread 78" in page and "member111" in page and "member222" in page


async def test_only_a_jams_entries_are_served_from_its_gallery(srv: Served) -> None:
    jam_id, _ = await entered_jam(srv)
    member = srv.key("site")
    async with srv.http.post(
        f"{srv.url}/v1/workflows/sd15-txt2img/jobs?wait=30",
        json={"prompt": "not an entry", "steps": 2},
        headers=Served.auth(srv.key("other")),
    ) as r:
        other = (await r.json())["jobs"][0]["id"]
    await srv.recorder.finished(other, timeout=30)
    async with browser() as http:
        await sign_in(srv, http, member.secret)
        async with http.get(f"{srv.url}/jams/{jam_id}/entries/{other}/outputs/0") as r:
            assert r.status == 404
        async with http.get(f"{srv.url}/jams/nosuch") as r:
            assert r.status == 404


async def test_the_jams_page_says_when_there_are_none(srv: Served) -> None:
    member = srv.key("site")
    async with browser() as http:
        await sign_in(srv, http, member.secret)
        async with http.get(f"{srv.url}/jams") as r:
            assert r.status == 200
            assert 'id="jams-empty"' in await r.text()
