"""ComfyClient against recorded ComfyUI runs replayed by tests/replay.py."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import aiohttp
import pytest

from bot.comfy import client as client_module
from bot.comfy.client import (
    FEATURE_FLAGS,
    ComfyClient,
    PromptResult,
    safe_filename,
    safe_subfolder,
)
from bot.comfy.events import (
    Event,
    Executed,
    Executing,
    ExecutionCached,
    ExecutionError,
    ExecutionInterrupted,
    ExecutionStart,
    ExecutionSuccess,
    Finished,
    ImageRef,
    Preview,
    Progress,
    QueuePosition,
    Text,
)
from bot.errors import (
    BackendUnavailable,
    ExecutionFailed,
    Interrupted,
    OutputMissing,
    PromptRejected,
)
from tests.comfy.test_rejection import EXPECTED
from tests.replay import PromptScript, ReplayServer, prompt_script, rejection_cases

TIMEOUT = 5.0


@asynccontextmanager
async def replay(
    *scripts: PromptScript, client_options: dict[str, Any] | None = None, **server_options: Any
) -> AsyncIterator[tuple[ReplayServer, ComfyClient]]:
    async with ReplayServer(*scripts, **server_options) as server, aiohttp.ClientSession() as s:
        options = {"heartbeat": 2.0, "request_timeout": 5.0, "reconnect_max_delay": 0.2}
        options.update(client_options or {})
        client = ComfyClient(s, server.url, **options)
        await client.start()
        try:
            assert client.connected
            yield server, client
        finally:
            await client.close()


async def run(client: ComfyClient, script: PromptScript) -> tuple[str, PromptResult, list[Event]]:
    prompt_id = client.new_prompt_id()
    tracker = client.track(prompt_id)
    assert await client.submit(script.prompt, prompt_id=prompt_id) == prompt_id
    async with asyncio.timeout(TIMEOUT):
        events = [event async for event in tracker]
        result = await tracker.result()
    return prompt_id, result, events


async def run_recorded(
    name: str, id_prefix: str, client: str = "A"
) -> tuple[str, PromptResult, list[Event]]:
    """Runs the prompt recorded in transcript `name` against its replay."""
    script = prompt_script(name, id_prefix, client=client)
    async with replay(script) as (_, comfy):
        return await run(comfy, script)


@asynccontextmanager
async def restarted_client(server: ReplayServer) -> AsyncIterator[ComfyClient]:
    """A second client of the same server, as after the bot restarted; closed on exit."""
    async with aiohttp.ClientSession() as session:
        restarted = ComfyClient(session, server.url, reconnect_max_delay=0.2)
        await restarted.start()
        try:
            yield restarted
        finally:
            await restarted.close()


def refs(*names: str, kind: str = "output") -> tuple[ImageRef, ...]:
    return tuple(ImageRef(name, "", kind) for name in names)


def of_type(events: list[Event], kind: type) -> list[Any]:
    return [e for e in events if isinstance(e, kind)]


# --- successful runs -------------------------------------------------------------------------


async def test_basic_save_gives_outputs_and_events() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script) as (server, client):
        prompt_id, result, events = await run(client, script)

        assert server.ws_received[0] == (server.ws_client_ids[0], FEATURE_FLAGS)
        [body] = server.requests_to("POST", "/prompt")
        assert body["prompt_id"] == prompt_id
        assert body["client_id"] == client.client_id
        assert result == PromptResult(
            prompt_id, "success", {"2": refs("research_a_00001_.png")}, None, ()
        )
        assert of_type(events, QueuePosition) == [QueuePosition(prompt_id, 1)]
        assert isinstance(
            next(e for e in events if not isinstance(e, QueuePosition)), ExecutionStart
        )
        assert isinstance(events[-1], Finished) and events[-1].status == "success"
        assert of_type(events, Executed) == [
            Executed(prompt_id, "2", refs("research_a_00001_.png"))
        ]
        assert [e.node for e in of_type(events, Executing)] == ["1", "2", None]
        assert all(getattr(e, "prompt_id", prompt_id) == prompt_id for e in events)
        assert len(of_type(events, ExecutionSuccess)) == 1

        image = await client.fetch_image(result.images[0])
        assert image.startswith(b"\x89PNG")
        assert server.requests_to("GET", "/view")[-1] == {
            "filename": "research_a_00001_.png",
            "subfolder": "",
            "type": "output",
        }


async def test_text_frames_and_temp_outputs_are_attributed() -> None:
    script = prompt_script("a_basic_emptyimage_save", "63c4bfc2")
    async with replay(script) as (_, client):
        prompt_id, result, events = await run(client, script)
    assert result.status == "success"
    assert result.outputs == {
        "4": refs("research_a2_00001_.png", "research_a2_00002_.png"),
        "5": tuple(r for r in result.outputs["5"] if r.type == "temp"),
    }
    assert len(result.outputs["5"]) == 1
    assert of_type(events, Text) == [Text("2", "width: 32, height: 16\n batch size: 1", prompt_id)]


async def test_fully_cached_run_reports_cached_nodes_and_same_files() -> None:
    script = prompt_script("b_same_prompt_twice_cached", "46796207")
    async with replay(script) as (_, client):
        _, result, events = await run(client, script)
    assert result.status == "success"
    assert result.cached_nodes == ("1", "2", "3", "4", "5")
    assert result.outputs["4"] == refs("research_b_00001_.png", "research_b_00002_.png")
    assert result.outputs["5"][0].type == "temp"
    assert [e.node for e in of_type(events, Executing)] == [None]
    assert of_type(events, ExecutionCached)[0].nodes == ("1", "2", "3", "4", "5")


async def test_previews_with_metadata_and_progress() -> None:
    prompt_id, result, events = await run_recorded("g_progress_and_previews", "db5a7f11", "M")
    previews = of_type(events, Preview)
    assert len(previews) == 4
    for preview in previews:
        assert (preview.prompt_id, preview.node_id, preview.mime) == (prompt_id, "2", "image/jpeg")
        assert preview.data.startswith(b"\xff\xd8\xff")
    assert [(p.value, p.max) for p in of_type(events, Progress)] == [(1, 4), (2, 4), (3, 4), (4, 4)]
    assert of_type(events, Text) == [Text("2", "done 4 steps", prompt_id)]
    assert result.status == "success" and list(result.outputs) == ["3"]


async def test_type_1_previews_go_to_the_prompt_running_on_our_socket() -> None:
    prompt_id, result, events = await run_recorded("g_progress_and_previews", "7133339d", "P")
    previews = of_type(events, Preview)
    assert len(previews) == 4
    assert {(p.prompt_id, p.node_id, p.mime) for p in previews} == {(prompt_id, None, "image/jpeg")}
    assert result.status == "success"


async def test_history_that_lags_is_retried() -> None:
    script = prompt_script("k_history_race", "c2a2679d")
    async with replay(script, history_empty=2) as (server, client):
        prompt_id, result, _ = await run(client, script)
        assert len(server.requests_to("GET", f"/history/{prompt_id}")) >= 3
    assert result.status == "success"
    assert result.outputs == {"2": refs("research_k_00001_.png")}


async def test_history_never_written_falls_back_to_messages(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "HISTORY_RETRY_DELAYS", (0.01, 0.01))
    script = prompt_script("k_history_race", "8b99518f")
    async with replay(script, history_empty=1000) as (_, client):
        _, result, _ = await run(client, script)
    assert result.status == "success"
    assert result.outputs == {"2": refs("research_k_00002_.png")}


# --- failures --------------------------------------------------------------------------------


CASES = [(n, r, s, b) for n, r, s, b in rejection_cases() if s >= 400]


@pytest.mark.parametrize(
    ("name", "request_json", "status", "body"), CASES, ids=[c[0] for c in CASES]
)
async def test_rejected_workflow_raises_with_plain_words(
    name: str, request_json: dict[str, Any] | None, status: int, body: Any
) -> None:
    prompt = (request_json or {}).get("prompt")
    prompt = prompt if isinstance(prompt, dict) else {}
    async with replay(reject=(status, body)) as (_, client):
        prompt_id = client.new_prompt_id()
        tracker = client.track(prompt_id)
        if status == 400:
            with pytest.raises(PromptRejected) as caught:
                await client.submit(prompt, prompt_id=prompt_id)
            assert caught.value.message == EXPECTED[name]
            assert caught.value.body == body
            assert client.track(prompt_id) is not tracker  # dropped: ComfyUI never queued it
        else:
            with pytest.raises(BackendUnavailable, match="HTTP 500"):
                await client.submit(prompt, prompt_id=prompt_id)
            assert client.track(prompt_id) is tracker  # kept for a retry with the same id
        assert not tracker.done


async def test_execution_error_names_the_node() -> None:
    script = prompt_script("d_execution_error", "d4d58a58")
    async with replay(script) as (_, client):
        _, result, events = await run(client, script)
    assert result.status == "error"
    assert result.error is not None
    assert (result.error.node_id, result.error.node_type) == ("2", "ImageToMask")
    assert result.error.exception_type == "IndexError"
    assert result.outputs == {"5": refs("research_d_ok_00001_.png")}
    assert len(of_type(events, ExecutionError)) == 1
    with pytest.raises(ExecutionFailed, match=r"ImageToMask \(#2\) failed: IndexError") as caught:
        result.raise_for_status()
    assert caught.value.node_id == "2"


@pytest.mark.parametrize(
    ("transcript", "prefix"),
    [("e_interrupt", "282b22ce"), ("e2_interrupt_ksampler", "485b4976")],
)
async def test_cancel_running_prompt_interrupts_it(transcript: str, prefix: str) -> None:
    script = prompt_script(transcript, prefix)
    async with replay(script) as (server, client):
        prompt_id = client.new_prompt_id()
        tracker = client.track(prompt_id)
        await client.submit(script.prompt, prompt_id=prompt_id)
        seen: list[Event] = []
        async with asyncio.timeout(TIMEOUT):
            async for event in tracker:
                seen.append(event)
                if isinstance(event, Progress) and len(of_type(seen, Progress)) == 1:
                    assert await client.queue_position(prompt_id) == 0
                    await client.cancel(prompt_id)
            result = await tracker.result()
        assert server.requests_to("POST", "/interrupt") == [{"prompt_id": prompt_id}]
        assert server.requests_to("POST", "/queue") == []
    assert result.status == "interrupted"
    assert len(of_type(seen, ExecutionInterrupted)) == 1
    with pytest.raises(Interrupted):
        result.raise_for_status()


async def test_cancel_pending_prompt_deletes_it_and_resolves() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script, hold=True) as (server, client):
        prompt_id = client.new_prompt_id()
        tracker = client.track(prompt_id)
        await client.submit(script.prompt, prompt_id=prompt_id)
        assert await client.queue_position(prompt_id) == 1
        await client.cancel(prompt_id)
        async with asyncio.timeout(TIMEOUT):
            events = [event async for event in tracker]
            result = await tracker.result()
        assert server.requests_to("POST", "/queue") == [{"delete": [prompt_id]}]
        assert server.requests_to("POST", "/interrupt") == []
    assert result.status == "interrupted"
    assert events[-1] == Finished(prompt_id, "interrupted")


async def test_queue_positions_follow_run_order() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script, script, hold=True) as (_, client):
        first = await client.submit(script.prompt)
        second = await client.submit(script.prompt)
        snapshot = await client.queue_snapshot()
        assert [item.prompt_id for item in snapshot.pending] == [first, second]
        assert await client.queue_position(first) == 1
        assert await client.queue_position(second) == 2
        assert await client.queue_position("nope") is None


async def test_server_gone_raises_backend_unavailable() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(session, f"http://127.0.0.1:{port}", reconnect_max_delay=0.2)
        await client.start()  # doesn't raise: keeps retrying
        try:
            assert not client.connected
            tracker = client.track("p1")
            with pytest.raises(BackendUnavailable, match=r"ComfyUI at http://127.0.0.1:\d+ is not"):
                await client.submit({"1": {}}, prompt_id="p1")
            assert not tracker.done and client.track("p1") is tracker
            await client.reconcile("p1")  # never raises: settled after the next connection
            assert not tracker.done
            with pytest.raises(BackendUnavailable):
                await client.history("x")
            with pytest.raises(BackendUnavailable):
                await client.fetch_image(ImageRef("a.png"))
        finally:
            await client.close()


# --- reconnection and reconciliation ---------------------------------------------------------


async def test_socket_dropped_then_prompt_done_while_down_is_reconciled_from_history() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script, drop_after=6) as (server, client):
        first_client_id = client.client_id
        prompt_id, result, events = await run(client, script)
        assert client.connected and client.client_id != first_client_id
        assert len(set(server.ws_client_ids)) == 2
    assert result.status == "success"
    assert result.outputs == {"2": refs("research_a_00001_.png")}
    assert of_type(events, Finished) == [Finished(prompt_id, "success")]
    assert not of_type(events, ExecutionSuccess)  # sent while we were away


async def test_socket_dropped_then_prompt_done_after_reconnect_is_reconciled() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script, drop_after=6, pause_after_drop=0.6) as (_, client):
        prompt_id, result, events = await run(client, script)
    assert result.status == "success"
    assert result.outputs == {"2": refs("research_a_00001_.png")}
    assert QueuePosition(prompt_id, 0) in events  # seen running by the reconnect reconciliation
    assert of_type(events, Finished) == [Finished(prompt_id, "success")]


async def test_prompt_forgotten_by_a_restarted_server_is_lost() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script, drop_after=6, forget=True) as (_, client):
        _, result, _ = await run(client, script)
    assert result.status == "lost"
    with pytest.raises(BackendUnavailable):
        result.raise_for_status()


async def test_silent_socket_is_caught_by_the_periodic_reconciliation() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    options = {"reconcile_interval": 0.2}
    async with replay(script, mute_after=6, client_options=options) as (_, client):
        prompt_id, result, events = await run(client, script)
    assert result.status == "success"
    assert result.outputs == {"2": refs("research_a_00001_.png")}
    assert of_type(events, Finished) == [Finished(prompt_id, "success")]


async def test_outcome_without_history_ready_message_still_finishes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(client_module, "OUTCOME_GRACE", 0.1)
    script = prompt_script("d_execution_error", "d4d58a58")
    last = next(
        i
        for i, f in enumerate(script.frames)
        if f.kind == "json" and f.payload["type"] == "execution_error"
    )
    async with replay(script, mute_after=last + 1) as (_, client):
        _, result, events = await run(client, script)
    assert result.status == "error"
    assert result.error is not None and result.error.node_type == "ImageToMask"
    assert [e.node for e in of_type(events, Executing)][-1] == "2"  # never saw node: null


async def test_resumed_prompt_is_settled_from_history() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script) as (server, client):
        prompt_id, first, _ = await run(client, script)
        async with restarted_client(server) as restarted:
            tracker = restarted.track(prompt_id, resume=True)
            async with asyncio.timeout(TIMEOUT):
                again = await tracker.result()
    assert again == first


async def test_explicit_reconcile_settles_a_tracked_prompt_at_once() -> None:
    script = prompt_script("a_basic_emptyimage_save", "7a66375c")
    async with replay(script) as (server, client):
        prompt_id, first, _ = await run(client, script)
        async with restarted_client(server) as restarted:
            done = restarted.track(prompt_id)
            gone = restarted.track("forgotten-by-comfyui")
            await restarted.reconcile(prompt_id)
            await restarted.reconcile("forgotten-by-comfyui")
            assert await done.result() == first
            assert (await gone.result()).status == "lost"


async def test_dead_socket_is_detected_by_heartbeat() -> None:
    async with replay(autoping=False, client_options={"heartbeat": 0.2}) as (server, client):
        async with asyncio.timeout(TIMEOUT):
            while len(server.ws_client_ids) < 2:
                await asyncio.sleep(0.05)
        assert len(set(server.ws_client_ids)) == len(server.ws_client_ids)
        assert await client.wait_connected(TIMEOUT)


# --- other routes ----------------------------------------------------------------------------


async def test_upload_image_sanitizes_the_name_and_returns_comfyui_s_choice() -> None:
    async with replay() as (server, client):
        first = await client.upload_image(b"png-bytes", "../../my cat?.png")
        second = await client.upload_image(b"other", "C:\\x\\my cat?.png", overwrite=True)
        fields = server.requests_to("POST", "/upload/image")
    assert first == "comfycord/my_cat.png"
    assert second == "comfycord/my_cat (1).png"
    assert server.uploads[0] == ("my_cat.png", "comfycord", b"png-bytes")
    assert fields[0]["type"] == "input"
    assert [f["overwrite"] for f in fields] == ["false", "true"]


@pytest.mark.parametrize(
    ("given", "safe"),
    [
        ("photo.JPG", "photo.JPG"),
        ("../../etc/passwd", "passwd.png"),
        ("..\\..\\win.ini", "win.ini"),
        ("/abs/evil6.png", "evil6.png"),
        ("猫.png", "image.png"),
        ("", "image.png"),
        (".hidden", "image.hidden"),
        ("a" * 300 + ".png", "a" * 90 + ".png"),
    ],
)
def test_safe_filename(given: str, safe: str) -> None:
    assert safe_filename(given) == safe


def test_safe_subfolder() -> None:
    assert safe_subfolder("../../abs") == "abs"
    assert safe_subfolder("/etc//x y") == "etc/x_y"
    assert safe_subfolder("") == ""


async def test_fetch_image_refuses_missing_and_unsafe_files() -> None:
    async with replay() as (server, client):
        with pytest.raises(OutputMissing):
            await client.fetch_image(ImageRef("missing.png"))
        with pytest.raises(OutputMissing):
            await client.fetch_image(ImageRef("../secret.png"))
        with pytest.raises(OutputMissing):
            await client.fetch_image(ImageRef("x.png", "../.."))
        assert len(server.requests_to("GET", "/view")) == 1


async def test_object_info_is_cached() -> None:
    async with replay() as (server, client):
        info = await client.object_info()
        assert "KSampler" in info
        assert await client.object_info() is info
        await client.object_info(refresh=True)
        assert len(server.requests_to("GET", "/object_info")) == 2
        assert (await client.system_stats())["system"]["comfyui_version"] == "0.3.64"
