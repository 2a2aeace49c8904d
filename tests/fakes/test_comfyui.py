"""The fake ComfyUI server (tests/fakes/comfyui.py) checked against the recorded real server.

Each transcript test sends the fake the requests the transcript made (bodies read from the
transcript, never retyped) and compares the HTTP answers and every websocket frame with the
recording, after normalising what legitimately differs: prompt ids (and generated client ids),
timestamps, prompt numbers (by a constant offset), random ``ComfyUI_temp_xxxxx`` names,
tracebacks. Long runs are choreographed with the fake's step gate so that interrupts land after
the same number of progress messages as in the recording. The last tests cover the
fault-injection API itself.
"""

from __future__ import annotations

import asyncio
import functools
import io
import json
import re
import struct
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp
import pytest
from PIL import Image
from yarl import URL

from tests.fakes.comfyui import FakeComfyUI
from tests.recordings import TRANSCRIPTS

STEP = 0.001
TEMP_NAME = re.compile(r"ComfyUI_temp_[a-z]{5}_")
UNCOMPARED = frozenset({"timestamp", "traceback", "current_inputs", "current_outputs"})


# ------------------------------------------------------------------------------------------------
# Transcripts


class Transcript:
    """One recorded session: ``events`` are HTTP exchanges, websocket frames and notes."""

    def __init__(self, name: str) -> None:
        data = json.loads((TRANSCRIPTS / f"{name}.json").read_text(encoding="utf-8"))
        self.events: list[dict[str, Any]] = data["events"]

    def client_id(self, client: str) -> str:
        for event in self.events:
            if event["kind"] == "ws_open" and event["client"] == client:
                return URL(event["url"]).query["clientId"]
        raise KeyError(client)

    def note(self, text: str) -> int:
        """The sequence number of the first note containing ``text``."""
        return int(next(e["seq"] for e in self.events if e["kind"] == "note" and text in e["text"]))

    def frames(self, client: str, start: int = 0, end: int | None = None) -> list[dict[str, Any]]:
        """Frames one client received, between two sequence numbers."""
        return [
            event
            for event in self.events
            if event["kind"] in ("ws_recv", "ws_recv_binary")
            and event["client"] == client
            and start <= event["seq"] < (end if end is not None else 1 << 30)
        ]

    def http(self, method: str | None = None, path: str | None = None) -> list[dict[str, Any]]:
        return [
            event
            for event in self.events
            if event["kind"] == "http"
            and (method is None or event["method"] == method)
            and (path is None or event["path"].startswith(path))
        ]

    def posts(self) -> list[dict[str, Any]]:
        return self.http("POST", "/prompt")


@functools.cache
def transcript(name: str) -> Transcript:
    return Transcript(name)


def prompt_frames(frames: list[dict[str, Any]], prompt_id: str) -> list[dict[str, Any]]:
    """The frames about one prompt: its JSON messages and the binary frames among them."""
    indexes = [
        index
        for index, frame in enumerate(frames)
        if frame["kind"] == "ws_recv"
        and isinstance(frame["json"].get("data"), dict)
        and frame["json"]["data"].get("prompt_id") == prompt_id
    ]
    if not indexes:
        return []
    return [
        frame
        for frame in frames[indexes[0] : indexes[-1] + 1]
        if frame["kind"] == "ws_recv_binary" or frame["json"]["data"].get("prompt_id") == prompt_id
    ]


def message_types(frames: list[dict[str, Any]]) -> list[str]:
    return [
        frame["json"]["type"] if frame["kind"] == "ws_recv" else f"binary{frame['event_type']}"
        for frame in frames
    ]


class Ids:
    """Recorded and live ids paired to placeholders, so that both sides compare equal."""

    def __init__(self) -> None:
        self._recorded: dict[str, str] = {}
        self._live: dict[str, str] = {}
        self._to_live: dict[str, str] = {}
        self.offset: int | float | None = None

    def pair(self, recorded: str, live: str) -> None:
        placeholder = f"<id{len(self._recorded)}>"
        self._recorded.setdefault(recorded, placeholder)
        self._live.setdefault(live, placeholder)
        self._to_live[recorded] = live

    def number(self, recorded: int | float, live: int | float) -> int | float:
        """A recorded prompt number as the fake numbers it (prompt counters start apart).

        Counter numbers are ints (negative with ``front``); a client's own ``number`` is a
        float and kept as is.
        """
        if isinstance(recorded, float):
            return recorded
        if self.offset is None:
            self.offset = abs(recorded) - abs(live)
        if recorded < 0:
            return recorded + self.offset
        return recorded - self.offset

    def to_live(self, value: Any) -> Any:
        """A recorded request with the recorded ids replaced by live ones."""
        if isinstance(value, str):
            for recorded, live in self._to_live.items():
                value = value.replace(recorded, live)
            return value
        if isinstance(value, dict):
            return {self.to_live(k): self.to_live(v) for k, v in value.items()}
        if isinstance(value, list):
            return [self.to_live(v) for v in value]
        return value

    def canon(self, value: Any, side: str) -> Any:
        ids = self._recorded if side == "recorded" else self._live
        if isinstance(value, dict):
            return {
                ids.get(key, key): self.canon(item, side)
                for key, item in value.items()
                if key not in UNCOMPARED
            }
        if isinstance(value, list):
            return [self.canon(item, side) for item in value]
        if isinstance(value, str):
            return TEMP_NAME.sub("ComfyUI_temp_*_", ids.get(value, value))
        return value

    def frame(self, frame: dict[str, Any], side: str) -> Any:
        if frame["kind"] == "ws_recv":
            message = self.canon(frame["json"], side)
            if message["type"] in ("execution_error", "execution_interrupted"):
                message["data"]["executed"] = sorted(message["data"]["executed"])
            return message
        decoded = frame["decoded"]
        kind = frame["event_type"]
        if kind == 1:
            return {
                "binary": 1,
                "image_type": decoded["image_type"],
                "magic": decoded["image_magic_hex"],
            }
        if kind == 3:
            return {"binary": 3, "node_id": decoded["node_id"], "text": decoded["text"]}
        metadata = self.canon(decoded["metadata"], side)
        return {"binary": kind, "metadata": metadata, "magic": decoded["image_magic_hex"]}

    def frames(self, frames: list[dict[str, Any]], side: str) -> list[Any]:
        return [self.frame(frame, side) for frame in frames]

    def pair_temp_names(self, live: list[dict[str, Any]], recorded: list[dict[str, Any]]) -> None:
        """Pair the random PreviewImage prefixes, in order of appearance."""
        for recorded_name, live_name in zip(temp_names(recorded), temp_names(live), strict=False):
            self._to_live[recorded_name] = live_name


def temp_names(frames: list[dict[str, Any]]) -> list[str]:
    names: list[str] = []
    for frame in frames:
        if frame["kind"] == "ws_recv":
            for name in TEMP_NAME.findall(json.dumps(frame["json"])):
                if name not in names:
                    names.append(name)
    return names


def renumbered(body: Any, ids: Ids, side: str, path: str) -> Any:
    """Prompt numbers moved onto the recorded scale (queue items, history, POST /prompt)."""
    if side == "recorded" or ids.offset is None:
        return body

    def shift(number: Any) -> Any:
        assert ids.offset is not None
        if not isinstance(number, int) or isinstance(number, bool):
            return number
        return number - ids.offset if number < 0 else number + ids.offset

    body = json.loads(json.dumps(body))
    if path.startswith("/queue"):
        for item in body["queue_running"] + body["queue_pending"]:
            item[0] = shift(item[0])
    elif path.startswith("/history") or path.startswith("/api/history"):
        for entry in body.values():
            entry["prompt"][0] = shift(entry["prompt"][0])
    elif path == "/prompt" and "number" in body:
        body["number"] = shift(body["number"])
    return body


# ------------------------------------------------------------------------------------------------
# A client for the fake


def decode_binary(data: bytes) -> dict[str, Any]:
    """A binary frame described the way the transcripts describe them."""
    kind, second = struct.unpack(">II", data[:8])
    decoded: dict[str, Any]
    if kind == 1:
        image = data[8:]
        names = {1: "JPEG", 2: "PNG"}
        decoded = {
            "image_type": second,
            "image_type_name": names[second],
            "image_magic_hex": image[:8].hex(),
            "image_len": len(image),
        }
    elif kind == 3:
        decoded = {"node_id": data[8 : 8 + second].decode(), "text": data[8 + second :].decode()}
    elif kind == 4:
        image = data[8 + second :]
        decoded = {
            "metadata_len": second,
            "metadata": json.loads(data[8 : 8 + second]),
            "image_magic_hex": image[:8].hex(),
            "image_len": len(image),
        }
    else:
        raise AssertionError(f"unknown binary frame type {kind}")
    return {"kind": "ws_recv_binary", "len": len(data), "event_type": kind, "decoded": decoded}


class Socket:
    """A websocket to the fake that records frames in the transcripts' format."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self._changed = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    async def _read(self) -> None:
        async for message in self.ws:
            if message.type == aiohttp.WSMsgType.TEXT:
                self.frames.append({"kind": "ws_recv", "json": json.loads(message.data)})
            elif message.type == aiohttp.WSMsgType.BINARY:
                self.frames.append(decode_binary(message.data))
            self._changed.set()
        self._changed.set()

    async def wait_for(
        self, predicate: Callable[[dict[str, Any]], bool], timeout: float = 5.0
    ) -> dict[str, Any]:
        async with asyncio.timeout(timeout):
            while True:
                self._changed.clear()
                for frame in self.frames:
                    if predicate(frame):
                        return frame
                if self._reader.done():
                    raise AssertionError("socket closed")
                await self._changed.wait()

    async def wait_count(self, count: int, timeout: float = 5.0) -> None:
        async with asyncio.timeout(timeout):
            while len(self.frames) < count:
                self._changed.clear()
                if self._reader.done():
                    return
                await self._changed.wait()

    async def done(self, prompt_id: str) -> None:
        """Wait for ``executing`` with ``node: null`` (the end of a prompt)."""
        await self.wait_for(lambda f: is_message(f, "executing", node=None, prompt_id=prompt_id))

    async def close(self) -> None:
        await self.ws.close()
        await self._reader


def is_message(frame: dict[str, Any], kind: str, **fields: Any) -> bool:
    if frame["kind"] != "ws_recv" or frame["json"]["type"] != kind:
        return False
    data = frame["json"]["data"]
    return all(key in data and data[key] == value for key, value in fields.items())


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


class Env:
    """One test's HTTP session, fakes and sockets (all closed at the end)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self.http = session
        self.fakes: list[FakeComfyUI] = []
        self.sockets: list[Socket] = []

    async def fake(self, **options: Any) -> FakeComfyUI:
        options.setdefault("step_delay", STEP)
        fake = FakeComfyUI(**options)
        await fake.start()
        self.fakes.append(fake)
        return fake

    async def socket(
        self, fake: FakeComfyUI, client_id: str | None = None, *, metadata: bool = False
    ) -> Socket:
        query = f"?clientId={client_id}" if client_id is not None else ""
        ws = await self.http.ws_connect(f"{fake.url}/ws{query}")
        if metadata:
            await ws.send_json(
                {"type": "feature_flags", "data": {"supports_preview_metadata": True}}
            )
        socket = Socket(ws)
        self.sockets.append(socket)
        await socket.wait_for(lambda f: is_message(f, "status"))
        return socket

    async def send(
        self, fake: FakeComfyUI, event: dict[str, Any], ids: Ids | None = None, **options: Any
    ) -> Reply:
        """Send the request of a recorded HTTP event (recorded ids replaced by live ones)."""
        ids = ids or Ids()
        path = ids.to_live(event["path"])
        url = URL(fake.url + path, encoded=True)
        headers = dict(event.get("request_headers", {}))
        if "Origin" in headers and headers["Origin"] == "http://127.0.0.1:8188":
            headers["Origin"] = fake.url
        if "query" in event:
            options.setdefault("params", ids.to_live(event["query"]))
        if "request_json" in event:
            options.setdefault("json", ids.to_live(event["request_json"]))
        elif isinstance(event.get("request_raw"), str) and not event["request_raw"].startswith("<"):
            options.setdefault("data", event["request_raw"].encode())
        if not isinstance(options.get("data"), bytes):
            headers.pop("Content-Type", None)
        async with self.http.request(event["method"], url, headers=headers, **options) as response:
            return Reply(response.status, dict(response.headers), await response.read())

    async def submit(
        self,
        fake: FakeComfyUI,
        event: dict[str, Any],
        ids: Ids,
        socket: Socket | None = None,
        *,
        wait: bool = True,
    ) -> str:
        """POST a recorded prompt, check the answer, pair the ids, wait for the end."""
        reply = await self.send(fake, event, ids)
        assert reply.status == event["status"] == 200
        body = reply.json()
        recorded = event["response_json"]
        ids.pair(recorded["prompt_id"], body["prompt_id"])
        assert ids.number(recorded["number"], body["number"]) == body["number"]
        numberless = {"number": None}
        assert ids.canon(body, "live") | numberless == ids.canon(recorded, "recorded") | numberless
        if wait:
            if socket is not None:
                await socket.done(body["prompt_id"])
            else:
                await fake.wait_for_history(body["prompt_id"])
        return str(body["prompt_id"])

    async def check(
        self, fake: FakeComfyUI, event: dict[str, Any], ids: Ids, **options: Any
    ) -> Reply:
        """Send a recorded request and compare status and (JSON or text) body."""
        reply = await self.send(fake, event, ids, **options)
        assert reply.status == event["status"], event
        if "response_json" in event:
            live = renumbered(reply.json(), ids, "live", event["path"])
            assert ids.canon(live, "live") == ids.canon(event["response_json"], "recorded")
        elif "response_text" in event:
            assert reply.body.decode() == event["response_text"]
        elif "response_bytes" in event:
            recorded = event["response_bytes"]
            assert reply.body[:8].hex() == recorded["head16_hex"][:16]
            if recorded["len"] == 0:
                assert reply.body == b""
        for header in ("Content-Type", "Content-Disposition"):
            if header in event["response_headers"]:
                expected = ids.to_live(event["response_headers"][header])
                assert reply.headers.get(header) == expected
        return reply

    async def aclose(self) -> None:
        for socket in self.sockets:
            await socket.close()
        for fake in self.fakes:
            await fake.stop()


@pytest.fixture
async def env() -> AsyncIterator[Env]:
    async with aiohttp.ClientSession() as session:
        environment = Env(session)
        try:
            yield environment
        finally:
            await environment.aclose()


def assert_same_frames(
    ids: Ids, live: list[dict[str, Any]], recorded: list[dict[str, Any]]
) -> None:
    """Same message types in the same order, then the same (normalised) contents."""
    assert message_types(live) == message_types(recorded)
    assert ids.frames(live, "live") == ids.frames(recorded, "recorded")


async def closed_as_recorded(ids: Ids, rec: Transcript, *sockets: tuple[Socket, str]) -> None:
    """Each socket, once it has as many frames as the client of that name recorded, is closed
    and its frames are compared with the recorded ones."""
    for socket, name in sockets:
        await socket.wait_count(len(rec.frames(name)))
        await socket.close()
        assert_same_frames(ids, socket.frames, rec.frames(name))


async def replayed_alone(
    env: Env, name: str, temp_names: bool = False
) -> tuple[FakeComfyUI, Socket]:
    """Transcript `name` of one client, "A", replayed: each POST sent from its socket, each other
    request's answer checked (the temporary file names paired first, if told), then the socket
    closed and its frames compared with the recorded ones."""
    rec = transcript(name)
    fake = await env.fake()
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    for event in rec.http():
        if event["method"] == "POST":
            await env.submit(fake, event, ids, socket)
        else:
            if temp_names:
                ids.pair_temp_names(socket.frames, rec.frames("A"))
            await env.check(fake, event, ids)
    await socket.close()
    assert_same_frames(ids, socket.frames, rec.frames("A"))
    return fake, socket


async def metadata_socket(env: Env, fake: FakeComfyUI, rec: Transcript) -> Socket:
    """The recorded client "M", which asks for metadata: connected and told the feature flags."""
    meta = await env.socket(fake, rec.client_id("M"), metadata=True)
    await meta.wait_for(lambda f: is_message(f, "feature_flags"))
    return meta


def assert_same_prompt(
    ids: Ids,
    live: Socket,
    live_id: str,
    recorded: list[dict[str, Any]],
    recorded_id: str,
) -> None:
    assert_same_frames(
        ids, prompt_frames(live.frames, live_id), prompt_frames(recorded, recorded_id)
    )


def png(
    size: tuple[int, int] = (8, 8), color: tuple[int, ...] = (10, 20, 30), mode: str = "RGB"
) -> bytes:
    buffer = io.BytesIO()
    Image.new(mode, size, color).save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------------
# Transcript a: EmptyImage -> SaveImage, history, /view; GetImageSize + PreviewImage variant


async def test_basic_save_matches_transcript_a(env: Env) -> None:
    fake, _ = await replayed_alone(env, "a_basic_emptyimage_save", temp_names=True)
    assert fake.output_files == [
        "research_a2_00001_.png",
        "research_a2_00002_.png",
        "research_a_00001_.png",
    ]
    with Image.open(io.BytesIO(fake.read_output("research_a2_00002_.png"))) as saved:
        assert saved.size == (32, 16)
        assert saved.getpixel((0, 0)) == (0, 255, 0)


# ------------------------------------------------------------------------------------------------
# Transcript b: caching


async def test_cache_matches_transcript_b(env: Env) -> None:
    rec = transcript("b_same_prompt_twice_cached")
    fake = await env.fake()
    ids = Ids()
    for event in transcript("a_basic_emptyimage_save").posts():  # the state b started from
        await env.submit(fake, event, ids)
    socket = await env.socket(fake, rec.client_id("A"))
    posts = rec.posts()
    for event in posts[:3]:
        await env.submit(fake, event, ids, socket)
    # submission 4: the second copy is queued while the first runs
    fake.hold_steps()
    first = await env.submit(fake, posts[3], ids, socket, wait=False)
    await fake.wait_until_held()
    second = await env.submit(fake, posts[4], ids, socket, wait=False)
    await env.check(fake, rec.http("GET", "/queue")[0], ids)
    fake.release_steps()
    await socket.done(second)
    for event in rec.http("GET", "/history"):
        await env.check(fake, event, ids)
    await socket.close()
    assert_same_frames(ids, socket.frames, rec.frames("A"))
    assert first != second


# ------------------------------------------------------------------------------------------------
# Transcript c: invalid workflows


async def test_validation_matches_transcript_c(env: Env) -> None:
    rec = transcript("c_invalid_workflows")
    fake = await env.fake(checkpoints=[])  # the recording's server had no checkpoint then
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    accepted: list[tuple[str, str]] = []
    for event in rec.http():
        if event["method"] == "POST" and event["status"] == 200:
            live = await env.submit(fake, event, ids, socket)
            accepted.append((event["response_json"]["prompt_id"], live))
        else:
            await env.check(fake, event, ids)
    assert len(accepted) == 4
    recorded_frames = rec.frames("A")
    for recorded_id, live_id in accepted:
        assert_same_prompt(ids, socket, live_id, recorded_frames, recorded_id)
    # nothing but these prompts (and queue statuses) reached the socket
    live_ids = {live for _, live in accepted}
    for frame in socket.frames:
        data = frame["json"]["data"] if frame["kind"] == "ws_recv" else {}
        assert (
            frame["kind"] == "ws_recv_binary" or "status" in data or data["prompt_id"] in live_ids
        )


async def test_missing_checkpoint_lists_the_installed_ones(env: Env) -> None:
    event = transcript("c_invalid_workflows").http("POST", "/prompt")[12]
    fake = await env.fake(checkpoints=["b.safetensors", "a.safetensors"])
    reply = await env.send(fake, event)
    assert reply.status == 400
    error = reply.json()["node_errors"]["1"]["errors"][0]
    assert error["details"] == (
        "ckpt_name: 'does-not-exist.safetensors' not in ['a.safetensors', 'b.safetensors']"
    )
    assert error["extra_info"]["input_config"][0] == ["a.safetensors", "b.safetensors"]


# ------------------------------------------------------------------------------------------------
# Transcript d: execution errors


async def test_execution_errors_match_transcript_d(env: Env) -> None:
    _, socket = await replayed_alone(env, "d_execution_error")
    error = next(f for f in socket.frames if is_message(f, "execution_error"))["json"]["data"]
    assert error["traceback"] and isinstance(error["traceback"][0], str)
    assert set(error["current_inputs"]) == {"image", "channel"}


# ------------------------------------------------------------------------------------------------
# Transcripts e and e2: interrupts, queue delete and clear


async def advance(fake: FakeComfyUI, steps: int) -> int:
    """Let a held sampler run ``steps`` steps; the step it then waits before."""
    fake.release_steps(steps)
    return (await fake.wait_until_held()).step


async def test_interrupts_match_transcript_e(env: Env) -> None:
    rec = transcript("e_interrupt")
    fake = await env.fake()
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    posts = rec.posts()
    requests = {event["seq"]: event for event in rec.http()}

    # a long run: a wrong-id interrupt after 2 steps, a second prompt queued and deleted,
    # then the targeted interrupt after 5 steps
    fake.hold_steps()
    first = await env.submit(fake, posts[0], ids, socket, wait=False)
    await fake.wait_until_held()
    assert await advance(fake, 2) == 3
    await env.check(fake, requests[17], ids)
    await env.submit(fake, posts[1], ids, socket, wait=False)
    for seq in (20, 22, 25):
        await env.check(fake, requests[seq], ids)
    assert await advance(fake, 3) == 6
    await env.check(fake, requests[33], ids)
    await socket.done(first)
    await env.check(fake, requests[37], ids)
    await env.check(fake, requests[38], ids)  # the deleted prompt left no trace

    # a global interrupt without body
    third = await env.submit(fake, posts[2], ids, socket, wait=False)
    await fake.wait_until_held()
    await advance(fake, 2)
    await env.check(fake, requests[54], ids)
    await socket.done(third)
    await env.check(fake, requests[58], ids)

    # an interrupt while idle does not stop the next prompt
    await env.check(fake, requests[60], ids)
    fake.release_steps()
    await env.submit(fake, posts[3], ids, socket)
    part_four = rec.note("queue 3 long prompts")
    assert_same_frames(ids, socket.frames, rec.frames("A", end=part_four))

    # three long prompts queued, the queue cleared, the running one interrupted
    fake.hold_steps()
    running = await env.submit(fake, posts[4], ids, socket, wait=False)
    await fake.wait_until_held()
    cleared = [await env.submit(fake, post, ids, socket, wait=False) for post in posts[5:7]]
    await advance(fake, 1)
    for seq in (101, 103, 104):
        await env.check(fake, requests[seq], ids)
    await socket.done(running)
    await env.check(fake, requests[108], ids)
    recorded = rec.frames("A", start=part_four)
    assert_same_prompt(ids, socket, running, recorded, posts[4]["response_json"]["prompt_id"])
    assert not any(prompt_frames(socket.frames, prompt_id) for prompt_id in cleared)
    assert not set(cleared) & set(fake.history)


async def test_ksampler_interrupt_matches_transcript_e2(env: Env) -> None:
    rec = transcript("e2_interrupt_ksampler")
    fake = await env.fake(checkpoints=["tiny-random.safetensors"])
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    fake.hold_steps()
    prompt_id = await env.submit(fake, rec.posts()[0], ids, socket, wait=False)
    held = await fake.wait_until_held()
    assert (held.prompt_id, held.node_id, held.step) == (prompt_id, "3", 1)
    await advance(fake, 1)
    await env.check(fake, rec.http("POST", "/interrupt")[0], ids)
    await socket.done(prompt_id)
    await socket.close()
    assert_same_frames(ids, socket.frames, rec.frames("A"))
    status = fake.history[prompt_id]["status"]
    assert (status["status_str"], status["completed"]) == ("error", False)


# ------------------------------------------------------------------------------------------------
# Transcript f: uploads and LoadImage


async def test_uploads_and_load_image_match_transcript_f(env: Env) -> None:
    rec = transcript("f_upload_and_loadimage")
    limit = 1_000_000
    fake = await env.fake(max_upload_size=limit)
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    contents = iter(
        [
            png(color=(1, 2, 3)),
            png(color=(1, 2, 3)),  # same content again: a duplicate, same name
            png(color=(4, 5, 6)),  # different content: renamed
            png(mode="RGBA", color=(9, 9, 9, 128)),
            png(),
            png(),
            b"\0" * (limit + 1000),  # too big
            png(color=(7, 8, 9)),  # re-upload with overwrite
        ]
    )
    for event in rec.http():
        if event["path"] == "/upload/image":
            form = aiohttp.FormData()
            for key, value in event["request_form"].items():
                if key == "image":
                    name = value[1:].rsplit(": ", 1)[0]
                    form.add_field("image", next(contents), filename=name, content_type="image/png")
                else:
                    form.add_field(key, value)
            if event["status"] == 413:
                reply = await env.send(fake, event, ids, data=form)
                assert reply.status == 413
                expected = event["response_text"].replace("104857600", str(limit))
                assert reply.body.decode() == expected
            else:
                await env.check(fake, event, ids, data=form)
        elif event["method"] == "POST" and event["status"] == 200:
            await env.submit(fake, event, ids, socket)
        else:
            await env.check(fake, event, ids)
    await socket.close()
    assert_same_frames(ids, socket.frames, rec.frames("A"))
    names = {p.relative_to(fake.input_dir).as_posix() for p in fake.input_dir.rglob("*.png")}
    assert {"research/research_upload.png", "research/research_upload (1).png"} <= names
    assert (fake.input_dir / "research" / "research_upload.png").read_bytes() == png(
        color=(7, 8, 9)
    )


# ------------------------------------------------------------------------------------------------
# Transcript g: progress, previews, preview metadata, SaveImageWebsocket, no client_id


async def test_progress_and_previews_match_transcript_g(env: Env) -> None:
    rec = transcript("g_progress_and_previews")
    fake = await env.fake()
    plain = await env.socket(fake, rec.client_id("P"))
    meta = await metadata_socket(env, fake, rec)
    sockets = {rec.client_id("P"): plain, rec.client_id("M"): meta}
    ids = Ids()
    for event in rec.http():
        if event["method"] == "POST":
            client = sockets.get(event["request_json"].get("client_id"))
            await env.submit(fake, event, ids, client)
            await fake.wait_until_idle()
        else:
            await env.check(fake, event, ids)
    await closed_as_recorded(ids, rec, (plain, "P"), (meta, "M"))


# ------------------------------------------------------------------------------------------------
# Transcript h: two clients, no client_id, reconnects, duplicate client ids, server-given id


async def test_clients_and_reconnects_match_transcript_h(env: Env) -> None:
    rec = transcript("h_two_clients")
    fake = await env.fake()
    a, b, c = [await env.socket(fake, rec.client_id(name)) for name in "ABC"]
    ids = Ids()
    posts = rec.posts()

    # A and B submit at the same moment
    fake.pause()
    first = await env.submit(fake, posts[0], ids, wait=False)
    second = await env.submit(fake, posts[1], ids, wait=False)
    fake.resume()
    await a.done(first)
    await b.done(second)

    # a prompt without client_id
    await env.submit(fake, posts[2], ids)
    await fake.wait_until_idle()

    # A's socket closes mid-run; A2 reconnects with the same id; then A3 as well
    fake.hold_steps()
    long_run = await env.submit(fake, posts[3], ids, wait=False)
    await fake.wait_until_held()
    await advance(fake, 2)
    await a.close()
    await advance(fake, 3)  # progress 3-5 reach nobody
    a2 = await env.socket(fake, rec.client_id("A2"))
    await advance(fake, 3)
    await a2.wait_for(lambda f: is_message(f, "progress", value=8))
    a3 = await env.socket(fake, rec.client_id("A3"))
    fake.release_steps()
    await a3.done(long_run)
    assert fake.ws_clients == 4  # B, C, A2 (open but unregistered) and A3

    # a socket without clientId gets one from the server
    d = await env.socket(fake)
    sid = d.frames[0]["json"]["data"]["sid"]
    assert re.fullmatch(r"[0-9a-f]{32}", sid)
    ids.pair(rec.frames("D")[0]["json"]["data"]["sid"], sid)
    await env.submit(fake, posts[4], ids, d)
    await fake.wait_until_idle()

    for socket, name in ((a, "A"), (b, "B"), (c, "C"), (a2, "A2"), (a3, "A3"), (d, "D")):
        await socket.wait_count(len(rec.frames(name)))
    for socket, name in ((a, "A"), (b, "B"), (c, "C"), (a2, "A2"), (a3, "A3"), (d, "D")):
        await socket.close()
        assert_same_frames(ids, socket.frames, rec.frames(name))


# ------------------------------------------------------------------------------------------------
# Transcript i: restart, /view security, traversal in uploads


def multipart(filename: str, subfolder: str | None) -> bytes:
    boundary = "----researchboundary"
    head = (
        f'--{boundary}\r\nContent-Disposition: form-data; name="image"; '
        f'filename="{filename}"\r\nContent-Type: image/png\r\n\r\n'
    )
    body = head.encode() + png() + b"\r\n"
    if subfolder is not None:
        field = f'--{boundary}\r\nContent-Disposition: form-data; name="subfolder"\r\n\r\n'
        body += field.encode() + subfolder.encode() + b"\r\n"
    return body + f"--{boundary}--\r\n".encode()


async def test_restart_and_view_security_match_transcript_i(env: Env) -> None:
    rec = transcript("i_restart_history_view_security")
    fake = await env.fake()
    ids = Ids()
    # something to remember: k's last prompt, whose image i fetches after the restart
    await env.submit(fake, transcript("k_history_race").posts()[29], ids)
    [image] = fake.history[next(iter(fake.history))]["outputs"]["2"]["images"]
    ids.pair("research_k_00030_.png", image["filename"])
    url = fake.url
    await fake.restart()
    assert fake.url == url

    for event in rec.http():
        if event["path"].startswith("/upload/image"):
            form = event["request_form"]
            data = multipart(form["image_filename_raw"], form["subfolder"])
            await env.check(fake, event, ids, data=data)
        elif event["path"] == "/history" and event["seq"] == 0:
            continue  # the 65 entries the real server had before its restart
        elif "Origin" in event.get("request_headers", {}) or event["method"] == "OPTIONS":
            continue  # restarts with --enable-cors-header: not simulated
        else:
            await env.check(fake, event, ids)


# ------------------------------------------------------------------------------------------------
# Transcript j: route survey, client prompt ids, number/front priorities, history paging


SKIPPED_ROUTES = (
    "/system_stats",
    "/extensions",
    "/users",
    "/settings",
    "/internal",
    "/experiment",
    "/i18n",
    "/workflow_templates",
    "/history?",
)


async def test_routes_match_transcript_j(env: Env) -> None:
    rec = transcript("j_routes_survey")
    fake = await env.fake(checkpoints=[])
    for name in ("..%2Fevil2.png", "research_rgba.png"):
        fake.add_input_image(name, png())
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    requests = [e for e in rec.http() if not e["path"].startswith(SKIPPED_ROUTES)]
    posts = [event for event in rec.posts() if event["status"] == 200]
    survey = [e for e in requests if e["seq"] < rec.note("client-supplied prompt_id")]
    for event in survey:
        if event["method"] == "POST" and event["path"] == "/prompt":
            await env.check(fake, event, ids)  # the Origin check (403)
        elif "response_json_summary" in event:
            reply = await env.send(fake, event, ids)
            assert reply.status == event["status"]
            if event["path"].endswith("/object_info"):
                assert len(reply.json()) == event["response_json_summary"]["top_level_keys"]
        else:
            await env.check(fake, event, ids)
    stats = await env.send(fake, rec.http("GET", "/system_stats")[0])
    assert stats.json().keys() == rec.http("GET", "/system_stats")[0]["response_json"].keys()

    # a client-chosen prompt_id, twice: accepted both times, history overwritten
    await env.submit(fake, posts[0], ids, socket)
    await env.submit(fake, posts[1], ids, socket)
    await env.check(fake, rec.http("GET", "/history/research-fixed")[0], ids)

    # priorities: "front" and an explicit "number" jump the queue
    fake.hold_steps()
    await env.submit(fake, posts[2], ids, socket, wait=False)
    await fake.wait_until_held()
    await advance(fake, 1)
    await env.submit(fake, posts[3], ids, socket, wait=False)
    await advance(fake, 1)
    await env.submit(fake, posts[4], ids, socket, wait=False)
    await env.submit(fake, posts[5], ids, socket, wait=False)
    await env.check(fake, rec.http("GET", "/queue")[-1], ids)
    fake.release_steps()
    await socket.done(ids.to_live(posts[3]["response_json"]["prompt_id"]))
    assert_same_frames(ids, socket.frames, rec.frames("A"))

    # history paging and delete
    newest = list(fake.history)[-2:]
    paged = await env.http.get(f"{fake.url}/history", params={"max_items": "2"})
    assert list(await paged.json()) == newest
    paged = await env.http.get(f"{fake.url}/history", params={"max_items": "1", "offset": "0"})
    assert list(await paged.json()) == list(fake.history)[:1]
    for event in rec.http("POST", "/history") + rec.http("GET", "/history/research-fixed")[1:]:
        await env.check(fake, event, ids)


# ------------------------------------------------------------------------------------------------
# Transcript k: history is readable at execution_success


async def test_history_is_ready_at_execution_success_as_in_transcript_k(env: Env) -> None:
    rec = transcript("k_history_race")
    fake = await env.fake()
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    for event in rec.posts()[:8]:
        prompt_id = await env.submit(fake, event, ids, wait=False)
        await socket.wait_for(
            functools.partial(is_message, kind="execution_success", prompt_id=prompt_id)
        )
        early = await env.http.get(f"{fake.url}/history/{prompt_id}")
        assert prompt_id in await early.json()
        await socket.done(prompt_id)
        recorded_id = event["response_json"]["prompt_id"]
        assert_same_prompt(ids, socket, prompt_id, rec.frames("A"), recorded_id)


# ------------------------------------------------------------------------------------------------
# Transcript l: txt2img with a checkpoint, caching, then previews after a restart


async def test_txt2img_matches_transcript_l(env: Env) -> None:
    rec = transcript("l_txt2img_tiny_checkpoint")
    fake = await env.fake(checkpoints=["tiny-random.safetensors"])
    socket = await env.socket(fake, rec.client_id("A"))
    ids = Ids()
    restart = rec.note("restart with --preview-method")
    for event in rec.http():
        if event["seq"] > restart:
            break
        if event["method"] == "POST":
            await env.submit(fake, event, ids, socket)
        else:
            await env.check(fake, event, ids)
    await socket.close()
    assert_same_frames(ids, socket.frames, rec.frames("A"))
    first, second = (
        fake.read_output("research_txt2img_00001_.png"),
        fake.read_output("research_txt2img_00002_.png"),
    )
    assert first != second  # seeds 42 and 43
    with Image.open(io.BytesIO(first)) as picture:
        assert picture.size == (64, 64)

    fake.previews = True
    await fake.restart()  # --preview-method latent2rgb
    meta = await metadata_socket(env, fake, rec)
    plain = await env.socket(fake, rec.client_id("P"))
    sockets = {rec.client_id("M"): meta, rec.client_id("P"): plain}
    for event in rec.posts()[3:]:
        await env.submit(fake, event, ids, sockets[event["request_json"]["client_id"]])
        await fake.wait_until_idle()
    await closed_as_recorded(ids, rec, (meta, "M"), (plain, "P"))


# ------------------------------------------------------------------------------------------------
# Transcripts n and o: prompts without client_id, late joiners, duplicate client ids


async def test_no_client_id_matches_transcript_n(env: Env) -> None:
    rec = transcript("n_no_client_id_interrupt_and_late_join")
    fake = await env.fake()
    x, y = await env.socket(fake, rec.client_id("X")), await env.socket(fake, rec.client_id("Y"))
    ids = Ids()
    posts = rec.posts()
    fake.hold_steps()
    interrupted = await env.submit(fake, posts[0], ids, wait=False)
    await fake.wait_until_held()
    await advance(fake, 2)
    await env.check(fake, rec.http("POST", "/interrupt")[0], ids)
    await fake.wait_for_history(interrupted)
    fake.release_steps()
    failed = await env.submit(fake, posts[1], ids)
    await env.submit(fake, posts[2], ids)
    await fake.wait_until_idle()
    z = await env.socket(fake, rec.client_id("Z"))
    await closed_as_recorded(ids, rec, (x, "X"), (y, "Y"), (z, "Z"))
    assert fake.history[interrupted]["status"]["status_str"] == "error"
    messages = fake.history[failed]["status"]["messages"]
    assert [event for event, _ in messages] == [
        "execution_start",
        "execution_cached",
        "execution_error",
    ]


async def test_duplicate_client_id_quirk_matches_transcript_o(env: Env) -> None:
    rec = transcript("o_duplicate_clientid_close_old")
    fake = await env.fake()
    client_id = rec.client_id("OLD")
    old = await env.socket(fake, client_id)
    new = await env.socket(fake, client_id)
    await old.close()
    async with asyncio.timeout(2):
        while fake.registered_clients:
            await asyncio.sleep(0.001)
    assert fake.ws_clients == 1  # NEW is open but unregistered
    ids = Ids()
    posts = rec.posts()
    first = await env.submit(fake, posts[0], ids)
    await fake.wait_until_idle()
    newer = await env.socket(fake, client_id)
    await env.submit(fake, posts[1], ids, newer)
    for socket, name in ((old, "OLD"), (new, "NEW"), (newer, "NEWER")):
        await socket.close()
        assert_same_frames(ids, socket.frames, rec.frames(name))
    assert fake.history[first]["status"]["status_str"] == "success"


# ------------------------------------------------------------------------------------------------
# The fault-injection API


def txt2img(
    seed: int = 1, steps: int = 3, size: tuple[int, int] = (64, 64), text: str = "x"
) -> dict[str, Any]:
    """The recorded SD1.5 txt2img prompt (transcript l) with new values."""
    prompt: dict[str, Any] = json.loads(
        json.dumps(transcript("l_txt2img_tiny_checkpoint").posts()[0]["request_json"])
    )
    graph = prompt["prompt"]
    graph["4"]["inputs"]["ckpt_name"] = "v1-5-pruned-emaonly.safetensors"
    graph["6"]["inputs"]["text"] = text
    graph["3"]["inputs"].update(seed=seed, steps=steps)
    graph["5"]["inputs"].update(width=size[0], height=size[1])
    graph["9"]["inputs"]["filename_prefix"] = "fake"
    prompt["client_id"] = "tester"
    return prompt


async def post_prompt(env: Env, fake: FakeComfyUI, body: dict[str, Any]) -> str:
    async with env.http.post(f"{fake.url}/prompt", json=body) as response:
        assert response.status == 200, await response.text()
        return str((await response.json())["prompt_id"])


async def test_fail_next_answers_with_the_status_then_recovers(env: Env) -> None:
    fake = await env.fake()
    fake.fail_next("/prompt", status=503)
    async with env.http.post(f"{fake.url}/api/prompt", json=txt2img()) as response:
        assert response.status == 503
    assert fake.prompts_received == []
    await post_prompt(env, fake, txt2img())
    fake.fail_next("/history/*", times=2)
    for expected in (500, 500, 200):
        async with env.http.get(f"{fake.url}/history/x") as response:
            assert response.status == expected
            if expected == 500:
                assert (
                    await response.text()
                    == "500 Internal Server Error\n\nServer got itself in trouble"
                )
    fake.fail_next("/ws", status=503)
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        await env.http.ws_connect(f"{fake.url}/ws?clientId=x")
    assert refused.value.status == 503
    fake.delay_next("/queue", 0.05)
    started = asyncio.get_running_loop().time()
    async with env.http.get(f"{fake.url}/queue") as response:
        assert response.status == 200
    assert asyncio.get_running_loop().time() - started >= 0.05


async def test_fail_next_with_process_loses_only_the_response(env: Env) -> None:
    fake = await env.fake()
    fake.fail_next("/prompt", process=True)
    async with env.http.post(f"{fake.url}/prompt", json=txt2img()) as response:
        assert response.status == 500
    await fake.wait_until_idle()
    [entry] = fake.history.values()
    assert entry["status"]["status_str"] == "success"
    assert len(fake.prompts_received) == 1


async def test_fail_node_gives_execution_error_until_cleared(env: Env) -> None:
    fake = await env.fake()
    socket = await env.socket(fake, "tester")
    fake.fail_node("KSampler", "torch.OutOfMemoryError", "CUDA out of memory")
    failed = await post_prompt(env, fake, txt2img())
    await socket.done(failed)
    error = next(f for f in socket.frames if is_message(f, "execution_error"))["json"]["data"]
    assert (error["node_id"], error["node_type"]) == ("3", "KSampler")
    assert error["exception_type"] == "torch.OutOfMemoryError"
    assert error["exception_message"] == "CUDA out of memory\n"
    assert sorted(error["executed"]) == ["4", "5", "6", "7"]
    assert fake.history[failed]["status"]["status_str"] == "error"
    fake.clear_faults()
    fake.fail_node("9", times=1)  # by node id, once
    second = await post_prompt(env, fake, txt2img())
    await socket.done(second)
    third = await post_prompt(env, fake, txt2img())
    await socket.done(third)
    cached = next(f for f in socket.frames if is_message(f, "execution_cached", prompt_id=second))
    assert cached["json"]["data"]["nodes"] == ["4", "6", "7", "5"]  # they ran before the failure
    assert fake.history[second]["status"]["status_str"] == "error"
    assert fake.history[third]["status"]["status_str"] == "success"


async def test_drop_sockets_keeps_the_server_running(env: Env) -> None:
    fake = await env.fake()
    socket = await env.socket(fake, "tester")
    fake.hold_steps()
    prompt_id = await post_prompt(env, fake, txt2img())
    await fake.wait_until_held()
    await fake.drop_sockets()
    await socket.close()
    assert socket.ws.close_code == 1006
    assert fake.ws_clients == 0
    fake.release_steps()
    assert (await fake.wait_for_history(prompt_id))["status"]["status_str"] == "success"
    again = await env.socket(fake, "tester")
    assert again.frames[0]["json"]["data"]["status"]["exec_info"]["queue_remaining"] == 0


async def test_restart_loses_queue_and_history_but_keeps_files(env: Env) -> None:
    fake = await env.fake()
    done = await post_prompt(env, fake, txt2img())
    await fake.wait_for_history(done)
    saved = fake.output_files
    socket = await env.socket(fake, "tester")
    fake.hold_steps()
    running = await post_prompt(env, fake, txt2img(seed=2))
    await fake.wait_until_held()
    pending = await post_prompt(env, fake, txt2img(seed=3))
    url = fake.url
    await fake.restart()
    fake.release_steps()
    await socket.close()
    assert socket.ws.close_code == 1006
    assert fake.url == url
    assert fake.history == {}
    assert fake.queue == {"queue_running": [], "queue_pending": []}
    async with env.http.get(f"{url}/view", params={"filename": saved[0]}) as response:
        assert response.status == 200
    async with env.http.post(f"{url}/prompt", json=txt2img(seed=4)) as response:
        assert (await response.json())["number"] == 0
    await fake.wait_until_idle()
    assert running not in fake.history
    assert pending not in fake.history
    assert len(fake.output_files) == 2  # the counter went on from the kept file


async def test_pause_lets_a_pending_prompt_be_deleted_silently(env: Env) -> None:
    fake = await env.fake()
    socket = await env.socket(fake, "tester")
    fake.pause()
    kept = await post_prompt(env, fake, txt2img(seed=1))
    deleted = await post_prompt(env, fake, txt2img(seed=2))
    assert [item[1] for item in fake.queue["queue_pending"]] == [kept, deleted]
    async with env.http.post(f"{fake.url}/queue", json={"delete": [deleted]}) as response:
        assert response.status == 200
    await fake.wait_until_idle()  # paused: returns with the prompt still pending
    assert fake.running_prompt_id is None
    fake.resume()
    await socket.done(kept)
    await fake.wait_until_idle()
    assert deleted not in fake.history
    assert prompt_frames(socket.frames, deleted) == []


async def test_interrupt_ends_a_held_step_at_once(env: Env) -> None:
    fake = await env.fake(step_delay=0)
    socket = await env.socket(fake, "tester")
    fake.hold_steps()
    prompt_id = await post_prompt(env, fake, txt2img(steps=20))
    held = await fake.wait_until_held()
    assert (held.prompt_id, held.node_id, held.step) == (prompt_id, "3", 1)
    async with env.http.post(f"{fake.url}/interrupt", json={"prompt_id": "someone-else"}):
        pass
    assert fake.running_prompt_id == prompt_id
    async with env.http.post(f"{fake.url}/interrupt", json={"prompt_id": prompt_id}):
        pass
    await socket.done(prompt_id)
    assert "execution_interrupted" in message_types(prompt_frames(socket.frames, prompt_id))


async def test_object_info_offers_installed_models_and_inputs(env: Env) -> None:
    fake = await env.fake(
        checkpoints=["x.safetensors"], loras=["l.safetensors"], max_upload_size=1234
    )
    form = aiohttp.FormData()
    form.add_field("image", png(), filename="mine.png", content_type="image/png")
    async with env.http.post(f"{fake.url}/upload/image", data=form) as response:
        assert await response.json() == {"name": "mine.png", "subfolder": "", "type": "input"}
    fake.checkpoints.append("y.safetensors")
    async with env.http.get(f"{fake.url}/object_info") as response:
        info = await response.json()
    assert info["CheckpointLoaderSimple"]["input"]["required"]["ckpt_name"][0] == [
        "x.safetensors",
        "y.safetensors",
    ]
    assert info["LoraLoader"]["input"]["required"]["lora_name"][0] == ["l.safetensors"]
    assert info["LoadImage"]["input"]["required"]["image"][0] == ["example.png", "mine.png"]
    assert "ResearchSlowProgress" in info
    async with env.http.get(f"{fake.url}/features") as response:
        assert (await response.json())["max_upload_size"] == 1234
    async with env.http.get(f"{fake.url}/models/loras") as response:
        assert await response.json() == ["l.safetensors"]


async def test_images_follow_size_seed_and_prompt_text(env: Env) -> None:
    fakes = [await env.fake(), await env.fake()]
    outputs: dict[tuple[int, int, str], bytes] = {}
    for index, (seed, text) in enumerate([(1, "a"), (2, "a"), (1, "b")]):
        fake = fakes[0]
        prompt_id = await post_prompt(env, fake, txt2img(seed=seed, size=(96, 64), text=text))
        [image] = (await fake.wait_for_history(prompt_id))["outputs"]["9"]["images"]
        outputs[(0, seed, text)] = fake.read_output(image["filename"])
        assert image["filename"] == f"fake_{index + 1:05}_.png"
    prompt_id = await post_prompt(env, fakes[1], txt2img(seed=1, size=(96, 64), text="a"))
    [image] = (await fakes[1].wait_for_history(prompt_id))["outputs"]["9"]["images"]
    again = fakes[1].read_output(image["filename"])
    assert again == outputs[(0, 1, "a")]
    assert len(set(outputs.values())) == 3
    with Image.open(io.BytesIO(again)) as picture:
        assert picture.size == (96, 64)
        assert json.loads(picture.info["prompt"])["3"]["inputs"]["seed"] == 1


async def test_img2img_keeps_the_loaded_image_size(env: Env) -> None:
    fake = await env.fake()
    fake.add_input_image("photo.png", Image.new("RGB", (80, 48), (200, 10, 10)))
    body = txt2img()
    graph = body["prompt"]
    del graph["5"]
    graph["10"] = {"class_type": "LoadImage", "inputs": {"image": "photo.png"}}
    graph["11"] = {"class_type": "VAEEncode", "inputs": {"pixels": ["10", 0], "vae": ["4", 2]}}
    graph["3"]["inputs"].update(latent_image=["11", 0], denoise=0.5)
    prompt_id = await post_prompt(env, fake, body)
    [image] = (await fake.wait_for_history(prompt_id))["outputs"]["9"]["images"]
    with Image.open(io.BytesIO(fake.read_output(image["filename"]))) as picture:
        assert picture.size == (80, 48)
    graph["10"]["inputs"]["image"] = "missing.png"
    async with env.http.post(f"{fake.url}/prompt", json=body) as response:
        assert response.status == 400
        errors = (await response.json())["node_errors"]["10"]["errors"]
    assert errors[0]["type"] == "custom_validation_failed"


async def test_previews_flag_sends_one_jpeg_per_sampler_step(env: Env) -> None:
    fake = await env.fake(previews=True)
    socket = await env.socket(fake, "tester")
    prompt_id = await post_prompt(env, fake, txt2img(steps=4))
    await socket.done(prompt_id)
    frames = prompt_frames(socket.frames, prompt_id)
    previews = [f for f in frames if f["kind"] == "ws_recv_binary" and f["event_type"] == 1]
    assert len(previews) == 4
    assert all(f["decoded"]["image_type_name"] == "JPEG" for f in previews)
