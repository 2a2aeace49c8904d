"""ComfyClient against the fake ComfyUI: a success seen whole on the socket is settled from its
messages, without waiting for ``GET /history``; anything else is still read from history."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Mapping
from typing import Any

import aiohttp
import pytest

from bot.comfy.client import ComfyClient, PromptResult
from bot.comfy.events import Event, Executing, Finished, ImageRef, refs_from_output
from bot.workflows.loader import load_workflow
from bot.workflows.patch import apply, coerce_values
from tests.conftest import WORKFLOWS
from tests.fakes.comfyui import FakeComfyUI
from tests.replay import prompt_script

#: EmptyImage -> SaveImage, as recorded from a real ComfyUI.
PROMPT = prompt_script("a_basic_emptyimage_save", "7a66375c").prompt
#: Longer than any test waits: a result that needs the history read cannot arrive in time.
HISTORY_DELAY = 30.0


@pytest.fixture
async def client(comfy: FakeComfyUI) -> AsyncIterator[ComfyClient]:
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(session, comfy.url, heartbeat=2.0, request_timeout=60.0)
        await client.start()
        assert await client.wait_connected(5.0)
        try:
            yield client
        finally:
            await client.close()


async def run(
    client: ComfyClient, prompt: Mapping[str, Any], timeout: float = 5.0
) -> tuple[str, PromptResult, list[Event], list[dict[str, tuple[ImageRef, ...]]]]:
    """Submit a prompt and follow it; also returns what the success listener was given."""
    prompt_id = client.new_prompt_id()
    tracker = client.track(prompt_id)
    announced: list[dict[str, tuple[ImageRef, ...]]] = []
    tracker.on_success(lambda outputs: announced.append(dict(outputs)))
    await client.submit(prompt, prompt_id=prompt_id)
    async with asyncio.timeout(timeout):
        events = [event async for event in tracker]
        result = await tracker.result()
    return prompt_id, result, events, announced


def history_outputs(comfy: FakeComfyUI, prompt_id: str) -> dict[str, tuple[ImageRef, ...]]:
    """The outputs ComfyUI's own history holds for a prompt."""
    raw = comfy.history[prompt_id]["outputs"]
    return {node: refs for node, output in raw.items() if (refs := refs_from_output(output))}


async def test_a_success_seen_whole_is_settled_without_waiting_for_history(
    client: ComfyClient, comfy: FakeComfyUI
) -> None:
    comfy.delay_next("/history/*", HISTORY_DELAY, times=100)
    prompt_id, result, events, announced = await run(client, PROMPT)
    assert result.status == "success"
    assert result.outputs == history_outputs(comfy, prompt_id)
    assert announced == [result.outputs]  # told at execution_success, with the same files
    # the event stream keeps its shape: the end of the run, then Finished
    assert isinstance(events[-2], Executing) and events[-2].node is None
    assert isinstance(events[-1], Finished) and events[-1].status == "success"


async def test_a_cached_run_seen_whole_names_the_same_files_as_history(
    client: ComfyClient, comfy: FakeComfyUI
) -> None:
    first_id, first, _, _ = await run(client, PROMPT)
    comfy.delay_next("/history/*", HISTORY_DELAY, times=100)
    prompt_id, result, _, _ = await run(client, PROMPT)
    assert set(result.cached_nodes) == set(PROMPT)  # nothing ran again
    assert result.outputs == history_outputs(comfy, prompt_id) == first.outputs
    assert first_id != prompt_id


async def test_a_server_that_does_not_answer_feature_flags_is_read_from_history(
    comfy: FakeComfyUI,
) -> None:
    comfy.answers_feature_flags = False  # as releases that may not report cached outputs
    async with aiohttp.ClientSession() as session:
        client = ComfyClient(session, comfy.url, heartbeat=2.0)
        await client.start()
        try:
            assert await client.wait_connected(5.0)
            comfy.delay_next("/history/*", 1.0)
            began = time.monotonic()
            prompt_id, result, _, announced = await run(client, PROMPT)
            assert time.monotonic() - began >= 1.0  # it waited for the history read
        finally:
            await client.close()
    assert result.status == "success"
    assert result.outputs == history_outputs(comfy, prompt_id)
    assert announced == [result.outputs]


async def test_a_run_whose_start_came_on_an_earlier_socket_is_read_from_history(
    client: ComfyClient, comfy: FakeComfyUI
) -> None:
    """ComfyUI sends a prompt's messages to the socket that submitted it only: after a drop the
    end of the run never reaches the new socket, and history settles it (nothing lost)."""
    comfy.hold_steps()
    workflow_prompt = slow_prompt()
    prompt_id = client.new_prompt_id()
    tracker = client.track(prompt_id)
    await client.submit(workflow_prompt, prompt_id=prompt_id)
    await comfy.wait_until_held()
    old_client_id = client.client_id
    await comfy.drop_sockets()
    async with asyncio.timeout(5.0):
        while not (client.connected and client.client_id != old_client_id):
            await asyncio.sleep(0.01)
    comfy.release_steps()
    async with asyncio.timeout(10.0):
        result = await tracker.result()
    assert result.status == "success"
    assert result.outputs == history_outputs(comfy, prompt_id)


def slow_prompt() -> dict[str, Any]:
    """The shipped txt2img workflow with one sampler step (so that steps can be held)."""
    workflow = load_workflow(WORKFLOWS / "sd15-txt2img.yaml")
    return apply(workflow, coerce_values(workflow, {"prompt": "a cat", "steps": 1, "seed": 1}))
