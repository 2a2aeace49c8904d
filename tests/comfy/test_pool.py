"""A pool of ComfyUI backends, through the engine against several fake ComfyUI servers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import shutil
from collections.abc import AsyncIterator, Callable, Iterable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bot.engine import Engine, JobRequest
from bot.errors import ConfigError, NoBackend
from bot.jobs.model import Job, JobState
from bot.settings import Settings, load_settings
from tests.cli.test_cli import run_cli
from tests.conftest import WORKFLOWS, Recorder, make_settings, running_engine
from tests.fakes.comfyui import FakeComfyUI

CHECKPOINT = "v1-5-pruned-emaonly.safetensors"
SHARPEN: dict[str, Any] = {
    "input": {
        "required": {
            "image": ["IMAGE", {}],
            "amount": ["FLOAT", {"default": 1.0, "min": 0.0, "max": 5.0}],
        }
    },
    "input_order": {"required": ["image", "amount"]},
    "output": ["IMAGE"],
    "output_is_list": [False],
    "output_name": ["IMAGE"],
    "name": "ImageSharpenPlus",
    "display_name": "Sharpen+",
    "description": "",
    "python_module": "custom_nodes.sharpen",
    "category": "image/postprocessing",
    "output_node": False,
}


@contextlib.asynccontextmanager
async def fakes(**configs: dict[str, Any]) -> AsyncIterator[dict[str, FakeComfyUI]]:
    """Fake ComfyUI servers by name, each with its own options."""
    started: dict[str, FakeComfyUI] = {}
    try:
        for name, options in configs.items():
            fake = FakeComfyUI(**{"step_delay": 0.002, **options})
            await fake.start()
            started[name] = fake
        yield started
    finally:
        for fake in started.values():
            await fake.stop()


@contextlib.asynccontextmanager
async def two_backends(
    session: aiohttp.ClientSession,
    tmp_path: Path,
    prefetch: int | None = None,
    hold: bool = True,
    **overrides: Any,
) -> AsyncIterator[tuple[dict[str, FakeComfyUI], Engine, Recorder]]:
    """Backends a and b, each holding its first step unless told, and an engine over them
    (sending each `prefetch` jobs ahead, if given)."""
    if prefetch is not None:
        overrides["comfyui"] = {"prefetch": prefetch}
    async with fakes(a={}, b={}) as servers:
        settings = pool_settings(tmp_path, servers, **overrides)
        if hold:
            for fake in servers.values():
                fake.hold_steps()
        async with running_engine(session, settings) as (eng, rec):
            yield servers, eng, rec


def pool_settings(
    tmp_path: Path,
    servers: dict[str, FakeComfyUI],
    comfyui: dict[str, Any] | None = None,
    **more: Any,
) -> Settings:
    backends = [{"url": fake.url, "name": name} for name, fake in servers.items()]
    first = next(iter(servers.values()))
    comfy = {"backends": backends, "failover_grace": 0.5, **(comfyui or {})}
    return make_settings(tmp_path, first.url, comfyui=comfy, **more)


def request(owner: str = "1", workflow: str = "sd15-txt2img", **values: object) -> JobRequest:
    return JobRequest(workflow, {"prompt": "a lighthouse", "steps": 2, **values}, owner_id=owner)


def sharpen_pack(tmp_path: Path) -> Path:
    """A workflows folder with the shipped packs and `sharpen`, which uses a custom node."""
    folder = tmp_path / "workflows"
    folder.mkdir()
    for file in WORKFLOWS.glob("sd15-txt2img.*"):
        shutil.copy(file, folder / file.name)
    graph = json.loads((WORKFLOWS / "sd15-txt2img.json").read_text())
    graph["10"] = {"class_type": "ImageSharpenPlus", "inputs": {"image": ["8", 0], "amount": 1.0}}
    graph["9"]["inputs"]["images"] = ["10", 0]
    (folder / "sharpen.json").write_text(json.dumps(graph))
    spec = (WORKFLOWS / "sd15-txt2img.yaml").read_text()
    (folder / "sharpen.yaml").write_text(
        spec.replace("graph: sd15-txt2img.json", "graph: sharpen.json")
    )
    return folder


def prompt_ids(fake: FakeComfyUI) -> list[str]:
    return [body["prompt_id"] for body in fake.prompts_received]


async def wait_for(predicate: Callable[[], bool], timeout: float = 10.0) -> None:
    async with asyncio.timeout(timeout):
        while not predicate():
            await asyncio.sleep(0.01)


async def submit_until_running(
    eng: Engine, servers: dict[str, FakeComfyUI], owners: Iterable[str]
) -> list[Job]:
    """A job of each owner, submitted in order, and a wait until every backend runs one."""
    jobs = [(await eng.submit(request(owner=owner)))[0] for owner in owners]
    await wait_for(lambda: all(f.running_prompt_id for f in servers.values()))
    return jobs


# settings ------------------------------------------------------------------------------------
def test_backends_come_from_the_file_with_secrets_from_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(
        "comfyui:\n  backends:\n"
        "    - {url: 'https://gpu.example/comfy', name: rented, max_in_flight: 2,\n"
        "       headers: {Authorization: 'Bearer ${GPU_TOKEN}'}}\n"
        "    - {url: 'http://10.0.0.5:8188'}\n"
    )
    settings = load_settings(path, env={"GPU_TOKEN": "s3cret"})
    first, second = settings.comfyui.pool()
    assert (first.label, first.url, first.headers) == (
        "rented",
        "https://gpu.example/comfy",
        {"Authorization": "Bearer s3cret"},
    )
    assert settings.comfyui.in_flight(first) == 2
    assert (second.label, settings.comfyui.in_flight(second)) == ("10.0.0.5:8188", 1)
    assert "s3cret" not in repr(settings)
    with pytest.raises(ConfigError, match=r"backends\.0\.headers\.Authorization: .*GPU_TOKEN"):
        load_settings(path, env={})


def test_comfyui_url_may_list_several_backends(tmp_path: Path) -> None:
    missing = tmp_path / "none.yaml"
    env = {"COMFYCORD_CONFIG": str(missing), "COMFYUI_URL": "http://a:1, https://b:2"}
    urls = [b.url for b in load_settings(env=env).comfyui.pool()]
    assert urls == ["http://a:1", "https://b:2"]
    env["COMFYUI_URL"] = "http://only:3"
    assert [b.url for b in load_settings(env=env).comfyui.pool()] == ["http://only:3"]


def test_bad_backend_settings_name_the_key(tmp_path: Path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("comfyui:\n  backends:\n    - {url: 'ftp://x'}\n")
    with pytest.raises(ConfigError, match=r"comfyui\.backends\.0\.url: .*http://"):
        load_settings(path, env={})
    path.write_text(
        "comfyui:\n  backends:\n    - {url: 'http://x', name: a}\n"
        "    - {url: 'http://y', name: a}\n"
    )
    with pytest.raises(ConfigError, match="two backends are called 'a'"):
        load_settings(path, env={})


# routing -------------------------------------------------------------------------------------
async def test_a_node_only_b_has_runs_on_b(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with fakes(a={}, b={"extra_nodes": {"ImageSharpenPlus": SHARPEN}}) as servers:
        settings = pool_settings(tmp_path, servers, workflows={"dir": str(sharpen_pack(tmp_path))})
        async with running_engine(session, settings) as (eng, rec):
            jobs = [
                (await eng.submit(request(owner=str(i), workflow="sharpen")))[0] for i in range(3)
            ]
            done = await rec.finished(*(j.id for j in jobs), timeout=20)
            assert all(u.job.state is JobState.DONE for u in done), [u.job.error for u in done]
            assert {u.job.backend for u in done} == {"b"}
            assert servers["a"].prompts_received == []
            assert eng.store.get(jobs[0].id).backend == "b"  # type: ignore[union-attr]


async def test_a_model_only_a_has_runs_on_a(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with (
        fakes(a={}, b={"checkpoints": ["other.safetensors"]}) as servers,
        running_engine(session, pool_settings(tmp_path, servers)) as (eng, rec),
    ):
        jobs = [(await eng.submit(request(owner=str(i))))[0] for i in range(3)]
        done = await rec.finished(*(j.id for j in jobs), timeout=20)
        assert all(u.job.state is JobState.DONE for u in done), [u.job.error for u in done]
        assert {u.job.backend for u in done} == {"a"}
        assert servers["b"].prompts_received == []
        assert not any(u.job.meta.get("notes") for u in done)  # nothing substituted


async def test_a_job_no_backend_can_run_is_refused_naming_what_is_missing(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with fakes(a={}, b={"checkpoints": ["other.safetensors"]}) as servers:
        settings = pool_settings(
            tmp_path,
            servers,
            comfyui={"substitute_missing_models": False},
            workflows={"dir": str(sharpen_pack(tmp_path))},
        )
        async with running_engine(session, settings) as (eng, _):
            with pytest.raises(NoBackend) as refused:
                await eng.submit(request(workflow="sharpen"))
            message = refused.value.message
            assert "a lacks node `ImageSharpenPlus`" in message
            assert "b lacks node `ImageSharpenPlus`" in message
            assert f"checkpoint '{CHECKPOINT}'" in message  # b lacks that too
            assert eng.store.recent() == []
            assert not servers["a"].prompts_received and not servers["b"].prompts_received


async def test_a_backend_that_turns_out_to_lack_a_model_passes_the_job_on(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, hold=False) as (servers, eng, rec):
        servers["a"].checkpoints = ["other.safetensors"]  # unknown to the engine until it asks
        [job] = await eng.submit(request())
        [done] = await rec.finished(job.id, timeout=20)
        assert done.job.state is JobState.DONE, done.job.error
        assert done.job.backend == "b"
        assert len(servers["a"].prompts_received) == 1  # rejected there, then re-read
        a = eng.pool.get("a")
        assert a is not None and a.object_info is not None
        assert (
            CHECKPOINT
            not in a.object_info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0]
        )


async def test_capabilities_are_read_again_when_a_backend_reconnects(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, hold=False) as (servers, eng, _):
        b = eng.pool.get("b")
        assert b is not None and b.health is not None and b.health.version == "0.3.64"
        servers["b"].checkpoints = ["fresh.safetensors"]
        await servers["b"].restart()

        def has_fresh() -> bool:
            info = b.object_info or {}
            node = info.get("CheckpointLoaderSimple", {})
            return (
                "fresh.safetensors"
                in node.get("input", {}).get("required", {}).get("ckpt_name", [[]])[0]
            )

        await wait_for(has_fresh)
        await wait_for(lambda: b.up)


async def test_headers_reach_a_comfyui_behind_an_authenticating_proxy(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with fakes(a={"require_headers": {"Authorization": "Bearer t0ken"}}, b={}) as servers:
        settings = pool_settings(tmp_path, servers)
        backends = [
            {"url": servers["a"].url, "name": "a", "headers": {"Authorization": "Bearer t0ken"}},
            {"url": servers["b"].url, "name": "b"},
        ]
        settings = make_settings(
            tmp_path, servers["a"].url, comfyui={"backends": backends, "failover_grace": 0.5}
        )
        async with running_engine(session, settings) as (eng, rec):
            a = eng.pool.get("a")
            assert a is not None and a.up
            [job] = await eng.submit(request())
            [done] = await rec.finished(job.id, timeout=20)
            assert done.job.state is JobState.DONE and done.job.backend == "a"


# fairness and prefetch -----------------------------------------------------------------------
LOOSE = {"max_running_per_member": 10, "max_queued_per_member": 10}


async def test_fairness_holds_across_backends(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, 0, limits=LOOSE) as (servers, eng, rec):
        greedy = await submit_until_running(eng, servers, ["greedy"] * 4)
        late = [(await eng.submit(request(owner=o)))[0] for o in ("late1", "late2")]
        for fake in servers.values():
            fake.release_steps()
        ids = [j.id for j in greedy + late]
        await rec.finished(*ids, timeout=20)
        order = [u.job.id for u in rec.updates if u.kind == "submitted"]
        assert order == [greedy[0].id, greedy[1].id, late[0].id, late[1].id, *ids[2:4]]
        assert {u.job.backend for u in rec.updates if u.kind == "finished"} == {"a", "b"}


async def test_prefetch_takes_the_next_job_in_fair_order(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, 1, limits=LOOSE) as (servers, eng, rec):
        # two run and two wait in the ComfyUI queues, one behind each running job
        first = await submit_until_running(eng, servers, ["first"] * 6)
        await wait_for(lambda: all(len(f.queue["queue_pending"]) == 1 for f in servers.values()))
        assert [eng.position(j.id) for j in first] == [0, 0, 0, 0, 1, 2]
        second = [(await eng.submit(request(owner="second")))[0] for _ in range(2)]
        assert eng.position(second[0].id) == 1  # ahead of `first`'s waiting jobs
        for fake in servers.values():
            fake.release_steps()
        everyone = first + second
        await rec.finished(*(j.id for j in everyone), timeout=20)
        order = [u.job.id for u in rec.updates if u.kind == "submitted"]
        expected = [j.id for j in first[:4]] + [
            second[0].id,
            first[4].id,
            second[1].id,
            first[5].id,
        ]
        assert order == expected
        assert all(len(rec.of(j.id, "finished")) == 1 for j in everyone)


# failover ------------------------------------------------------------------------------------
async def test_a_backend_killed_mid_job_its_jobs_finish_elsewhere_once(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, 1) as (servers, eng, rec):
        a_fake, b_fake = servers["a"], servers["b"]
        jobs = await submit_until_running(eng, servers, map(str, range(4)))
        await wait_for(lambda: all(len(f.queue["queue_pending"]) == 1 for f in servers.values()))
        on_a = {j.id: eng.get_job(j.id).prompt_id for j in jobs if eng.get_job(j.id).backend == "a"}  # type: ignore[union-attr]
        assert len(on_a) == 2  # one running there, one queued behind it
        await a_fake.go_offline()
        # after the grace period they go to b, which finishes everything
        b_fake.release_steps()
        done = await rec.finished(*(j.id for j in jobs), timeout=20)
        assert all(u.job.state is JobState.DONE for u in done), [u.job.error for u in done]
        assert {u.job.backend for u in done} == {"b"}
        assert all(len(rec.of(j.id, "finished")) == 1 for j in jobs)
        assert len({u.job.prompt_id for u in done}) == 4
        # a comes back, still holding both: they are withdrawn, never run to the end there
        await a_fake.go_online()
        old = set(on_a.values())
        await wait_for(
            lambda: a_fake.running_prompt_id is None and not a_fake.queue["queue_pending"]
        )
        a_fake.release_steps()
        await a_fake.wait_until_idle()
        finished_there = {
            pid
            for pid, entry in a_fake.history.items()
            if entry["status"]["status_str"] == "success"
        }
        assert not (old & finished_there)
        assert all(len(rec.of(j.id, "finished")) == 1 for j in jobs)
        a = eng.pool.get("a")
        assert a is not None
        await wait_for(lambda: a.up)


async def test_a_short_outage_moves_nothing(session: aiohttp.ClientSession, tmp_path: Path) -> None:
    async with fakes(a={}, b={}) as servers:
        settings = pool_settings(tmp_path, servers, comfyui={"failover_grace": 30})
        servers["a"].hold_steps()
        async with running_engine(session, settings) as (eng, rec):
            [job] = await eng.submit(request())
            await wait_for(lambda: servers["a"].running_prompt_id is not None)
            await servers["a"].drop_sockets()
            servers["a"].release_steps()
            [done] = await rec.finished(job.id, timeout=20)
            assert done.job.state is JobState.DONE and done.job.backend == "a"
            assert servers["b"].prompts_received == []


async def test_one_backend_keeps_a_job_waiting_while_it_is_down(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with fakes(a={}) as servers:
        settings = pool_settings(tmp_path, servers)
        servers["a"].hold_steps()
        async with running_engine(session, settings) as (eng, rec):
            assert eng.runner.prefetch == 0
            [job] = await eng.submit(request())
            await wait_for(lambda: servers["a"].running_prompt_id is not None)
            await servers["a"].go_offline()
            a = eng.pool.get("a")
            assert a is not None
            await wait_for(lambda: a.expired)  # past the grace period, with nowhere else to go
            assert eng.get_job(job.id).state is not JobState.QUEUED  # type: ignore[union-attr]
            await servers["a"].go_online()
            servers["a"].release_steps()
            [done] = await rec.finished(job.id, timeout=20)
            assert done.job.state is JobState.DONE
            assert len(servers["a"].prompts_received) == 1


# comfycord backends --------------------------------------------------------------------------
async def test_cli_backends_prints_each_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    async with fakes(gpu1={"device": "cuda:0 NVIDIA GeForce RTX 4090"}, gpu2={}) as servers:
        # gpu1 has made a job before (the store remembers which backend made what)
        settings = pool_settings(tmp_path, servers)
        async with (
            aiohttp.ClientSession() as session,
            running_engine(session, settings) as (
                eng,
                rec,
            ),
        ):
            [job] = await eng.submit(request())
            await rec.finished(job.id, timeout=20)
        await servers["gpu2"].go_offline()
        config = tmp_path / "pool.yaml"
        config.write_text(
            f"storage:\n  path: {tmp_path / 'db.sqlite3'}\n"
            "comfyui:\n  request_timeout: 2\n  backends:\n"
            f"    - {{url: '{servers['gpu1'].url}', name: gpu1}}\n"
            f"    - {{url: '{servers['gpu2'].url}', name: gpu2}}\n"
        )
        code = await run_cli("--config", str(config), "backends")
        out = capsys.readouterr().out.splitlines()
        assert code == 1  # one is down
        assert out[0].split()[:4] == ["NAME", "URL", "STATE", "VERSION"]
        gpu1 = next(line for line in out if line.startswith("gpu1"))
        gpu2 = next(line for line in out if line.startswith("gpu2"))
        assert servers["gpu1"].url in gpu1 and " idle " in gpu1 and "0.3.64" in gpu1
        assert "NVIDIA GeForce RTX 4090" in gpu1 and "GiB free" in gpu1
        assert gpu1.split()[-2:] == ["1", "-"]  # jobs done, no error
        assert " down " in gpu2 and "not reachable" in gpu2


async def test_a_job_prefetched_behind_a_busy_backend_moves_to_one_that_falls_idle(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with two_backends(session, tmp_path, 1) as (servers, eng, rec):
        a_fake, b_fake = servers["a"], servers["b"]
        jobs = [(await eng.submit(request(owner=str(i))))[0] for i in range(3)]
        await wait_for(lambda: len(a_fake.queue["queue_pending"]) == 1)
        await wait_for(lambda: b_fake.running_prompt_id is not None)
        third = eng.get_job(jobs[2].id)
        assert third is not None and third.backend == "a"  # queued behind the first
        first_try = third.prompt_id
        b_fake.release_steps()  # b finishes the second job and falls idle
        [done] = await rec.finished(jobs[2].id, timeout=20)
        assert done.job.state is JobState.DONE and done.job.backend == "b"
        assert not a_fake.queue["queue_pending"] and first_try not in a_fake.history
        a_fake.release_steps()
        await rec.finished(*(j.id for j in jobs), timeout=20)
        assert all(len(rec.of(j.id, "finished")) == 1 for j in jobs)
        assert len(a_fake.busy) == 1 and len(b_fake.busy) == 2
        [a_status, b_status] = eng.backends()
        assert (a_status.jobs_done, b_status.jobs_done) == (1, 2)
        assert a_status.busy_seconds > 0 and b_status.busy_seconds > 0


async def test_cli_check_reads_every_backend(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = sharpen_pack(tmp_path)
    async with fakes(a={}, b={"extra_nodes": {"ImageSharpenPlus": SHARPEN}}) as servers:
        config = tmp_path / "pool.yaml"
        config.write_text(
            f"workflows:\n  dir: {folder}\n"
            "comfyui:\n  backends:\n"
            f"    - {{url: '{servers['a'].url}', name: a}}\n"
            f"    - {{url: '{servers['b'].url}', name: b}}\n"
        )
        code = await run_cli("--config", str(config), "check")
        out = capsys.readouterr().out
        assert code == 0, out
        assert out.count("ok: ComfyUI at") == 2 and "ok: workflow sharpen" in out


async def test_prompts_to_withdraw_survive_a_restart_of_the_bot(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    async with fakes(a={}, b={}) as servers:
        a_fake = servers["a"]
        settings = pool_settings(tmp_path, servers)
        a_fake.hold_steps()
        async with running_engine(session, settings) as (eng, rec):
            [job] = await eng.submit(request())
            await wait_for(lambda: a_fake.running_prompt_id is not None)
            old = a_fake.running_prompt_id
            await a_fake.go_offline()
            [done] = await rec.finished(job.id, timeout=20)
            assert done.job.state is JobState.DONE and done.job.backend == "b"
        # a new bot process, while `a` is still away: it still withdraws the old prompt there
        async with running_engine(session, settings) as (eng, _):
            await a_fake.go_online()
            a = eng.pool.get("a")
            assert a is not None
            await wait_for(lambda: a.up)
            a_fake.release_steps()
            entry = await a_fake.wait_for_history(old)
            assert entry["status"]["status_str"] != "success"  # interrupted, not run to the end
            assert eng.store.settings_in("pool.withdraw") == {}
