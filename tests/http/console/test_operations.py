"""Operations: the engine's last hour in a bounded ring, `GET /v1/stats` for admin keys, and the
console's page with its backends, queue and SVG charts (one line per backend)."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.history import History
from bot.http.console.charts import Series, line_chart, nice_ceiling
from bot.http.openapi import build_document
from bot.workflows import load_workflows
from tests.conftest import WORKFLOWS, make_settings
from tests.fakes.comfyui import FakeComfyUI
from tests.http.console.test_console import (
    browser,
    console_settings,
    own_workflows,
    page_of,
    sign_in,
)
from tests.http_helpers import Served, http_settings, served


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class FakeEngine:
    """What History reads of an engine: its pool, its queue and a way to listen."""

    def __init__(self) -> None:
        self.pool: list[Any] = []
        self.listeners: list[Any] = []

    def listen(self, listener: Any) -> Any:
        self.listeners.append(listener)
        return lambda: self.listeners.remove(listener)

    def queue_entries(self) -> list[Any]:
        return []


def test_history_gives_each_backend_its_busy_share_of_the_interval() -> None:
    busy = {"gpu-a": 0.0, "gpu-b": 0.0}
    clock = Clock()
    history = History(FakeEngine(), lambda: busy, interval=10, span=60, monotonic=clock)  # type: ignore[arg-type]
    clock.now += 10
    busy["gpu-a"] = 5.0
    busy["gpu-b"] = 10.0
    first = history.sample()
    assert first.busy == {"gpu-a": 0.5, "gpu-b": 1.0}
    clock.now += 20
    busy["gpu-a"] = 7.0
    assert history.sample().busy == {"gpu-a": 0.1, "gpu-b": 0.0}


def test_history_keeps_only_its_span() -> None:
    clock = Clock()
    history = History(FakeEngine(), dict, interval=10, span=60, monotonic=clock)  # type: ignore[arg-type]
    for _ in range(20):
        clock.now += 10
        history.sample()
    assert len(history.samples()) == 6


def test_a_chart_draws_one_escaped_line_per_series_with_gaps() -> None:
    svg = line_chart(
        [Series("<gpu>", [(0, 1.0), (1, None), (2, 3.0), (3, 4.0)]), Series("b", [(0, 2.0)])],
        title="Busy & idle",
        x_range=(0, 3),
    )
    paths = re.findall(r'<path class="series" data-series="([^"]*)" d="([^"]*)"', svg)
    assert {name for name, _ in paths} == {"&lt;gpu&gt;", "b"}
    gpu = dict(paths)["&lt;gpu&gt;"]
    assert gpu.count("M") == 2 and gpu.count("L") == 1  # the gap splits the line
    assert "<gpu>" not in svg and "Busy &amp; idle" in svg
    assert "style=" not in svg  # the page's CSP allows no inline style


def test_nice_ceiling_rounds_up_to_one_two_or_five() -> None:
    assert [nice_ceiling(v) for v in (0, 0.3, 1, 1.2, 3, 7, 42)] == [1, 0.5, 1, 2, 5, 10, 50]


def test_the_stats_operation_is_in_the_openapi_document() -> None:
    workflows, _ = load_workflows(WORKFLOWS)
    document = build_document(workflows, max_count=4)
    operation = document["paths"]["/v1/stats"]["get"]
    assert operation["operationId"] == "get_stats"
    assert set(operation["responses"]) == {"200", "401", "403"}
    assert "Stats" in document["components"]["schemas"]


@pytest.fixture
async def two_gpus(tmp_path: Path) -> AsyncIterator[Served]:
    first, second = FakeComfyUI(step_delay=0.005), FakeComfyUI(step_delay=0.005)
    await first.start()
    await second.start()
    try:
        settings = make_settings(
            tmp_path,
            first.url,
            workflows={"dir": str(own_workflows(tmp_path))},
            comfyui={
                "backends": [
                    {"url": first.url, "name": "gpu-a"},
                    {"url": second.url, "name": "gpu-b"},
                ]
            },
        )
        async with served(http_settings(settings)) as srv:
            await srv.recorder.wait(lambda: all(b.up for b in srv.engine.pool), timeout=30)
            yield srv
    finally:
        await first.stop()
        await second.stop()


async def run_one(srv: Served, secret: str) -> str:
    async with srv.http.post(
        f"{srv.url}/v1/workflows/sd15-txt2img/jobs?wait=30",
        json={"prompt": "a lighthouse", "steps": 2},
        headers=Served.auth(secret),
    ) as r:
        assert r.status in (200, 202), await r.text()
        job_id = str((await r.json())["jobs"][0]["id"])
    await srv.recorder.finished(job_id, timeout=30)
    return job_id


async def test_stats_show_backends_queue_and_samples_to_an_admin(two_gpus: Served) -> None:
    srv = two_gpus
    admin = srv.key("boss", role="admin")
    await run_one(srv, admin.secret)
    sample = srv.api.history.sample()
    assert sample.jobs_done == 1 and sample.job_seconds is not None
    assert 0 < sum(sample.busy.values()) <= 2
    async with srv.http.get(f"{srv.url}/v1/stats", headers=Served.auth(admin)) as r:
        assert r.status == 200
        stats = await r.json()
    assert [b["name"] for b in stats["backends"]] == ["gpu-a", "gpu-b"]
    assert all(b["state"] in ("idle", "busy") and b["version"] for b in stats["backends"])
    assert sum(b["jobs_done"] for b in stats["backends"]) == 1
    assert stats["queue"] == []
    assert stats["interval"] == srv.api.history.interval
    assert len(stats["samples"]) == 1 and set(stats["samples"][0]["busy"]) == {"gpu-a", "gpu-b"}


async def test_stats_refuse_a_member_key_and_no_key(two_gpus: Served) -> None:
    member = two_gpus.key("site")
    async with two_gpus.http.get(f"{two_gpus.url}/v1/stats", headers=Served.auth(member)) as r:
        assert r.status == 403
        assert r.content_type == "application/problem+json"
    async with two_gpus.http.get(f"{two_gpus.url}/v1/stats") as r:
        assert r.status == 401


async def test_the_queue_lists_running_and_waiting_jobs_with_positions(
    tmp_path: Path, comfy: FakeComfyUI
) -> None:
    comfy.hold_steps()
    async with served(console_settings(tmp_path, comfy)) as srv:
        admin = srv.key("boss", role="admin", limit_queued=5)
        ids = []
        for n in range(3):
            async with srv.http.post(
                f"{srv.url}/v1/workflows/sd15-txt2img/jobs",
                json={"prompt": f"lighthouse {n}", "steps": 2},
                headers=Served.auth(admin),
            ) as r:
                assert r.status == 202, await r.text()
                ids.append((await r.json())["jobs"][0]["id"])
        await comfy.wait_until_held()
        expected = [(e.job.id, e.position) for e in srv.engine.queue_entries()]
        async with srv.http.get(f"{srv.url}/v1/stats", headers=Served.auth(admin)) as r:
            stats = await r.json()
        async with browser() as http:
            await sign_in(srv, http, admin.secret)
            async with http.get(f"{srv.url}/operations") as r:
                page = await r.text()
        comfy.release_steps()
        await srv.recorder.finished(*ids, timeout=30)
    assert [(q["job_id"], q["position"]) for q in stats["queue"]] == expected
    assert sorted(q["job_id"] for q in stats["queue"]) == sorted(ids)
    assert expected[0][1] == 0 and expected[-1][1] >= 1  # one runs, the last one waits
    assert all(q["owner"] == "boss" for q in stats["queue"])
    for job_id in ids:
        assert f'data-job="{job_id}"' in page


async def test_the_operations_page_draws_one_line_per_backend(two_gpus: Served) -> None:
    srv = two_gpus
    admin = srv.key("boss", role="admin")
    await run_one(srv, admin.secret)
    srv.api.history.sample()
    srv.api.history.sample()
    async with browser() as http:
        await sign_in(srv, http, admin.secret)
        page = await page_of(http, f"{srv.url}/operations")
    busy = page[page.index('id="chart-busy"') : page.index("</svg>", page.index('id="chart-busy"'))]
    assert re.findall(r'class="series" data-series="([^"]+)"', busy) == ["gpu-b", "gpu-a"]
    assert 'data-backend="gpu-a"' in page and 'data-backend="gpu-b"' in page
    for chart in ("chart-queue", "chart-job-time"):
        assert f'id="{chart}"' in page
    assert 'href="/operations"' in page


async def test_a_member_is_refused_the_operations_page(two_gpus: Served) -> None:
    member = two_gpus.key("site")
    async with browser() as http:
        await sign_in(two_gpus, http, member.secret)
        page = await page_of(http, f"{two_gpus.url}/operations", 403)
        async with http.get(f"{two_gpus.url}/workflows") as r:
            assert 'href="/operations"' not in await r.text()
    assert "chart-busy" not in page and "gpu-a" not in page


async def test_without_a_session_the_operations_page_sends_to_sign_in(two_gpus: Served) -> None:
    url = f"{two_gpus.url}/operations"
    async with aiohttp.ClientSession() as http, http.get(url, allow_redirects=False) as r:
        assert r.status == 303 and r.headers["Location"] == "/"
