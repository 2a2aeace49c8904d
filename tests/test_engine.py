"""The engine through its API against the fake ComfyUI: jobs, errors, cancel, restarts."""

from __future__ import annotations

import asyncio
import io
from collections.abc import Callable
from contextlib import AbstractAsyncContextManager
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bot.engine import Engine, ImageInput, JobRequest
from bot.errors import InvalidValue, NotAllowed, NotFound
from bot.jobs.model import JobState
from bot.jobs.runner import JobUpdate
from bot.settings import Settings
from tests.conftest import Recorder, make_settings, running_engine, spy_success
from tests.fakes.comfyui import FakeComfyUI

EngineFx = tuple[Engine, Recorder]


def engine_with(
    session: aiohttp.ClientSession, tmp_path: Path, comfy: FakeComfyUI, **overrides: Any
) -> AbstractAsyncContextManager[EngineFx]:
    """A running engine on the fake ComfyUI, with these sections of the settings changed."""
    return running_engine(session, make_settings(tmp_path, comfy.url, **overrides))


def request(prompt: str = "a lighthouse at dusk", owner: str = "1", **values: object) -> JobRequest:
    return JobRequest("sd15-txt2img", {"prompt": prompt, **values}, owner_id=owner)


def hold_each_record(eng: Engine, first_only: bool = False) -> list[Callable[[], None]]:
    """Holds the write of a job's record once its result is out (of the first job's only, if
    told); the releases of the holds, in order."""
    releases: list[Callable[[], None]] = []

    def hold(update: JobUpdate) -> None:
        if update.kind == "result" and not (first_only and releases):
            releases.append(eng.hold_saving([update.job.id]))

    eng.listen(hold)
    return releases


async def test_job_runs_and_outputs_are_the_images_comfyui_made(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    [job] = await eng.submit(request(steps=4, seed=42))
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE, done.job.error
    assert len(done.job.outputs) == 1
    produced = comfy.history[done.job.prompt_id]["outputs"]
    [filename] = [img["filename"] for out in produced.values() for img in out["images"]]
    assert Path(done.job.outputs[0].path).read_bytes() == comfy.read_output(filename)
    assert done.job.outputs[0].width == 512
    steps = [u for u in rec.of(job.id, "progress") if u.steps]
    assert steps and steps[-1].step == steps[-1].steps == 4
    assert rec.of(job.id, "preview"), "previews from the sampler reach listeners"
    # the stored record matches
    stored = eng.store.get(job.id)
    assert stored is not None and stored.state is JobState.DONE and stored.outputs


async def test_images_download_while_the_history_is_read(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    succeeded = spy_success(comfy)
    comfy.delay_next("/history/*", 1.0)
    comfy.delay_next("/view", 1.0)
    [job] = await eng.submit(request(steps=1))
    [done] = await rec.finished(job.id)
    took = asyncio.get_running_loop().time() - succeeded[0]
    assert done.job.state is JobState.DONE and done.images
    assert took < 1.8, took  # one second of each, side by side; one after the other is two


async def test_a_run_seen_whole_finishes_without_waiting_for_the_history_read(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    succeeded = spy_success(comfy)
    comfy.delay_next("/history/*", 30.0, times=100)  # a result that needs it cannot come
    [job] = await eng.submit(request(steps=1))
    [done] = await rec.finished(job.id, timeout=10.0)
    took = asyncio.get_running_loop().time() - succeeded[0]
    assert took < 5.0, took
    # the record and the files are on disk when it is announced, equal to ComfyUI's outputs
    assert done.job.state is JobState.DONE, done.job.error
    stored = eng.store.get(job.id)
    assert stored is not None and stored.state is JobState.DONE
    assert stored.outputs == done.job.outputs
    produced = comfy.history[done.job.prompt_id]["outputs"]
    names = [img["filename"] for out in produced.values() for img in out["images"]]
    on_disk = [Path(output.path).read_bytes() for output in done.job.outputs]
    assert on_disk == [comfy.read_output(name) for name in names] == list(done.images)


async def test_a_meta_change_while_a_result_is_written_is_kept(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    """A job's meta changed after its `result`, before its record is stored (e.g. the reply's
    message id, when Discord acknowledged the request after so quick a job), is not written
    over by that record."""
    eng, rec = engine
    releases = hold_each_record(eng)
    [job] = await eng.submit(request("one", steps=1))
    await rec.wait(lambda: bool(rec.of(job.id, "result")), timeout=4.0)
    assert not rec.of(job.id, "finished")  # its record is not written yet
    eng.update_meta(job.id, reply={"message_id": 42})
    releases[0]()
    [done] = await rec.finished(job.id)
    assert done.job.meta["reply"] == {"message_id": 42}
    stored = eng.store.get(job.id)
    assert stored is not None and stored.state is JobState.DONE
    assert stored.meta["reply"] == {"message_id": 42}


async def test_a_job_whose_result_is_out_cannot_be_cancelled(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    """Between its `result` and its stored record a job has finished: a cancel says so."""
    eng, rec = engine
    releases = hold_each_record(eng)
    [job] = await eng.submit(request("one", steps=1))
    await rec.wait(lambda: bool(rec.of(job.id, "result")), timeout=4.0)
    assert not rec.of(job.id, "finished")
    with pytest.raises(NotAllowed, match="already finished"):
        await eng.cancel(job.id, by="ann")
    releases[0]()
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE and done.job.error is None


async def test_the_next_job_starts_while_a_result_waits_for_its_delivery(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    """A delivery may hold the disk write of its result (until its upload went out): the GPU
    is not kept waiting for that, and the held job is saved once released."""
    eng, rec = engine
    releases = hold_each_record(eng, first_only=True)
    [first] = await eng.submit(request("one", steps=1))
    [second] = await eng.submit(request("two", steps=1))
    await rec.wait(lambda: bool(rec.of(second.id, "started")), timeout=4.0)
    assert rec.of(first.id, "result") and not rec.of(first.id, "finished")
    stored = eng.store.get(first.id)
    assert stored is not None and stored.state is JobState.RUNNING  # not written yet
    releases[0]()
    [done, _] = await rec.finished(first.id, second.id)
    assert done.job.state is JobState.DONE
    assert all(Path(o.path).is_file() for o in done.job.outputs)


async def test_values_reach_comfyui_structurally(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    nasty = 'he said "hi" {"3": {"class_type": "X"}} \\ %s ${x} 🎨 ünïcödé\n'
    [job] = await eng.submit(request(nasty, seed=7, steps=3, size="portrait"))
    await rec.finished(job.id)
    sent = comfy.prompts_received[-1]["prompt"]
    graph = eng.workflow("sd15-txt2img").graph
    assert set(sent) == set(graph)
    positive = next(n for n in sent.values() if n.get("_meta", {}).get("title") == "Positive")
    assert positive["inputs"]["text"] == nasty
    latent = next(n for n in sent.values() if n["class_type"] == "EmptyLatentImage")
    assert (latent["inputs"]["width"], latent["inputs"]["height"]) == (512, 768)
    sampler = next(n for n in sent.values() if n["class_type"] == "KSampler")
    assert (sampler["inputs"]["seed"], sampler["inputs"]["steps"]) == (7, 3)


async def test_invalid_values_are_refused_before_queueing(engine: EngineFx) -> None:
    eng, _ = engine
    with pytest.raises(InvalidValue) as err:
        await eng.submit(request(steps=500))
    assert "steps" in str(err.value)
    with pytest.raises(NotFound, match="sd15-txt2img"):
        await eng.submit(JobRequest("nope", {"prompt": "x"}, owner_id="1"))
    assert eng.store.recent() == []


async def test_missing_checkpoint_fails_with_a_plain_message(
    session: aiohttp.ClientSession, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    async with engine_with(
        session, tmp_path, comfy, comfyui={"substitute_missing_models": False}
    ) as (eng, rec):
        comfy.checkpoints = ["other.safetensors"]
        [job] = await eng.submit(request(steps=2))
        [done] = await rec.finished(job.id)
        assert done.job.state is JobState.FAILED
        assert "v1-5-pruned-emaonly.safetensors" in done.job.error
        assert "not installed" in done.job.error and "other.safetensors" in done.job.error


async def test_missing_pack_model_is_replaced_by_an_installed_one(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    comfy.checkpoints = ["tiny-random.safetensors", "zeta.safetensors"]
    await eng.client.object_info(refresh=True)
    [job] = await eng.submit(request(steps=2))
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE, done.job.error
    sent = comfy.prompts_received[-1]["prompt"]
    loader = next(n for n in sent.values() if n["class_type"] == "CheckpointLoaderSimple")
    assert loader["inputs"]["ckpt_name"] == "tiny-random.safetensors"
    assert done.job.meta["notes"] == [
        "checkpoint 'v1-5-pruned-emaonly.safetensors' is not installed on ComfyUI; "
        "used 'tiny-random.safetensors' instead"
    ]


async def test_execution_error_names_the_node(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    comfy.fail_node("KSampler", exception_type="RuntimeError", message="CUDA out of memory")
    [job] = await eng.submit(request(steps=2))
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.FAILED
    assert "KSampler" in done.job.error and "CUDA out of memory" in done.job.error


async def test_cancel_while_waiting_in_our_queue(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    comfy.hold_steps()
    [first] = await eng.submit(request(owner="1", steps=3))
    [second] = await eng.submit(request(owner="2", steps=3))
    await comfy.wait_until_held()
    assert eng.position(second.id) == 1
    cancelled = await eng.cancel(second.id, by="tester")
    assert cancelled.state is JobState.CANCELLED
    comfy.release_steps()
    [done] = await rec.finished(first.id)
    assert done.job.state is JobState.DONE
    assert len(comfy.prompts_received) == 1  # the cancelled job never reached ComfyUI


async def test_cancel_while_pending_on_comfyui(
    session: aiohttp.ClientSession, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    async with engine_with(session, tmp_path, comfy, comfyui={"max_in_flight": 2}) as (eng, rec):
        comfy.pause()
        [a] = await eng.submit(request(owner="1", steps=2))
        [b] = await eng.submit(request(owner="2", steps=2))
        await rec.wait(lambda: len(comfy.queue["queue_pending"]) == 2)
        await eng.cancel(b.id, by="tester")
        [done_b] = await rec.finished(b.id)
        assert done_b.job.state is JobState.CANCELLED
        assert [item[1] for item in comfy.queue["queue_pending"]] == [eng.get_job(a.id).prompt_id]
        comfy.resume()
        [done_a] = await rec.finished(a.id)
        assert done_a.job.state is JobState.DONE


async def test_cancel_while_running(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    comfy.hold_steps()
    [job] = await eng.submit(request(steps=10))
    await comfy.wait_until_held()
    await eng.cancel(job.id, by="moderator")
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.CANCELLED
    assert "moderator" in done.job.error
    assert comfy.history[done.job.prompt_id]["status"]["status_str"] == "error"


async def test_reconnect_in_the_middle_of_a_job(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    comfy.hold_steps()
    [job] = await eng.submit(request(steps=5))
    await comfy.wait_until_held()
    await comfy.drop_sockets()
    comfy.release_steps()
    [done] = await rec.finished(job.id, timeout=15)
    assert done.job.state is JobState.DONE
    assert done.job.attempts == 1
    assert len(rec.of(job.id, "finished")) == 1


async def test_comfyui_restarted_mid_job_resubmits(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    comfy.hold_steps()
    [job] = await eng.submit(request(steps=5))
    await comfy.wait_until_held()
    await comfy.restart(forget_history=True)
    comfy.release_steps()
    [done] = await rec.finished(job.id, timeout=20)
    assert done.job.state is JobState.DONE
    assert done.job.attempts == 2
    assert len(comfy.prompts_received) == 2


async def test_engine_restart_mid_job_collects_the_result_once(
    session: aiohttp.ClientSession, settings: Settings, comfy: FakeComfyUI
) -> None:
    first = Engine(session, settings)
    rec1 = Recorder()
    first.listen(rec1)
    await first.start()
    comfy.hold_steps()
    [job] = await first.submit(request(steps=4))
    await comfy.wait_until_held()
    await first.stop()  # the process goes away while ComfyUI still runs the prompt
    first.close_store()
    comfy.release_steps()
    await comfy.wait_until_idle()

    async with running_engine(session, settings) as (second, rec2):
        [done] = await rec2.finished(job.id)
        assert done.job.state is JobState.DONE
        assert done.job.outputs and Path(done.job.outputs[0].path).is_file()
        assert len(comfy.prompts_received) == 1  # collected from history, not run again
        assert rec1.of(job.id, "finished") == []
        await asyncio.sleep(0.2)
        assert len(rec2.of(job.id, "finished")) == 1
        assert [j.id for j in second.undelivered()] == [job.id]
        second.mark_delivered(job.id)
        assert second.undelivered() == []


async def test_engine_restart_resumes_queued_and_unsent_jobs(
    session: aiohttp.ClientSession, settings: Settings, comfy: FakeComfyUI
) -> None:
    first = Engine(session, settings)
    await first.start()
    comfy.hold_steps()
    [running] = await first.submit(request(owner="1", steps=2))
    [queued] = await first.submit(request(owner="2", steps=2))
    await comfy.wait_until_held()
    await first.stop()
    first.close_store()
    await comfy.restart(forget_history=True)  # and ComfyUI forgot the running one too
    comfy.release_steps()

    async with running_engine(session, settings) as (_, rec):
        done = await rec.finished(running.id, queued.id, timeout=20)
        assert [d.job.state for d in done] == [JobState.DONE, JobState.DONE]


async def test_backend_down_gives_a_clear_error(
    session: aiohttp.ClientSession, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path, "http://127.0.0.1:9", comfyui={"submit_retry_seconds": 1.5})
    async with running_engine(session, settings) as (eng, rec):
        [job] = await eng.submit(request(steps=2))
        [done] = await rec.finished(job.id)
        assert done.job.state is JobState.FAILED
        assert done.job.error is not None and "could not be reached" in done.job.error
        # plain words: no internal address, no exception class
        assert "127.0.0.1" not in done.job.error and "Error" not in done.job.error
        assert rec.of(job.id, "retrying"), "listeners hear that ComfyUI is being retried"


async def test_per_member_limit_refuses_the_excess(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, _ = engine
    comfy.hold_steps()
    limits = eng.settings.limits
    allowed = limits.max_queued_per_member + limits.max_running_per_member
    for _ in range(allowed):
        await eng.submit(request(owner="greedy", steps=2))
    with pytest.raises(NotAllowed, match="limit"):
        await eng.submit(request(owner="greedy", steps=2))
    await eng.submit(request(owner="other", steps=2))  # others are not affected
    comfy.release_steps()


async def test_fair_order_across_members(
    session: aiohttp.ClientSession, tmp_path: Path, comfy: FakeComfyUI
) -> None:
    async with engine_with(session, tmp_path, comfy, limits={"max_queued_per_member": 30}) as (
        eng,
        rec,
    ):
        comfy.hold_steps()
        a_jobs = [(await eng.submit(request(owner="A", steps=1)))[0] for _ in range(20)]
        await comfy.wait_until_held()
        [b] = await eng.submit(request(owner="B", steps=1))
        [c] = await eng.submit(request(owner="C", steps=1))
        assert eng.position(b.id) == 1 and eng.position(c.id) == 2
        assert eng.position(a_jobs[1].id) == 3
        comfy.release_steps()
        await rec.finished(b.id, c.id, timeout=20)
        started = [u.job.id for u in rec.updates if u.kind == "submitted"]
        assert started.index(b.id) <= 2 and started.index(c.id) <= 2
        for job in a_jobs[1:]:
            await eng.cancel(job.id, by="test")


async def test_group_uses_consecutive_seeds(engine: EngineFx) -> None:
    eng, rec = engine
    jobs = await eng.submit(request(seed=100, steps=1), count=3, exempt=True)
    assert [j.values["seed"] for j in jobs] == [100, 101, 102]
    assert len({j.group_id for j in jobs}) == 1 and jobs[0].group_id
    done = await rec.finished(*[j.id for j in jobs])
    assert all(d.job.state is JobState.DONE for d in done)
    assert eng.store.group(jobs[0].group_id) == [eng.store.get(j.id) for j in jobs]


async def test_image_input_is_uploaded(engine: EngineFx, comfy: FakeComfyUI) -> None:
    eng, rec = engine
    buf = io.BytesIO()
    Image.new("RGB", (64, 64), "red").save(buf, "PNG")
    req = JobRequest(
        "sd15-img2img",
        {"prompt": "a red square", "steps": 2},
        owner_id="1",
        images={"image": ImageInput("../../etc/passwd.png", buf.getvalue())},
    )
    [job] = await eng.submit(req)
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE, done.job.error
    sent = comfy.prompts_received[-1]["prompt"]
    loader = next(n for n in sent.values() if n["class_type"] == "LoadImage")
    assert ".." not in loader["inputs"]["image"] and "passwd" not in loader["inputs"]["image"]


async def test_an_older_comfyui_that_picks_its_own_prompt_id_is_followed(
    engine: EngineFx, comfy: FakeComfyUI
) -> None:
    eng, rec = engine
    comfy.honour_prompt_id = False
    [job] = await eng.submit(request(steps=2))
    [done] = await rec.finished(job.id)
    assert done.job.state is JobState.DONE, done.job.error
    assert done.job.prompt_id in comfy.history  # the id ComfyUI chose, kept for resuming
    assert eng.store.get(job.id).prompt_id == done.job.prompt_id
