"""Parsing of every recorded ComfyUI websocket message and binary frame."""

from __future__ import annotations

import json
import struct
from typing import Any

import pytest

from bot.comfy import events
from bot.comfy.events import parse_binary, parse_message, parse_payload
from bot.errors import ExecutionFailed
from tests.replay import all_transcripts, frame_bytes, load_examples

KNOWN = {
    "status": events.Status,
    "execution_start": events.ExecutionStart,
    "execution_cached": events.ExecutionCached,
    "executing": events.Executing,
    "progress": events.Progress,
    "progress_state": events.ProgressState,
    "executed": events.Executed,
    "execution_success": events.ExecutionSuccess,
    "execution_error": events.ExecutionError,
    "execution_interrupted": events.ExecutionInterrupted,
    "feature_flags": events.FeatureFlags,
}
BINARY = {1: events.Preview, 3: events.Text, 4: events.Preview}


def _recorded_frames() -> list[tuple[str, dict[str, Any]]]:
    frames = []
    for name, transcript in all_transcripts().items():
        for event in transcript["events"]:
            if event["kind"] in ("ws_recv", "ws_recv_binary"):
                frames.append((f"{name}#{event['seq']}", event))
    return frames


def test_every_example_message_parses_to_its_type() -> None:
    for key, example in load_examples().items():
        if "message" in example:
            message = example["message"]
            event = parse_message(json.dumps(message))
            assert isinstance(event, KNOWN[message["type"]]), key
        else:
            event = parse_binary(frame_bytes(example["frame"]))
            assert isinstance(event, BINARY[example["frame"]["event_type"]]), key


def test_every_transcript_frame_parses_without_unknown() -> None:
    frames = _recorded_frames()
    assert len(frames) > 1500
    for where, event in frames:
        if event["kind"] == "ws_recv":
            parsed = parse_message(json.dumps(event["json"]))
            assert isinstance(parsed, KNOWN[event["json"]["type"]]), where
            assert not isinstance(parsed, events.Unknown), where
        else:
            parsed = parse_binary(frame_bytes(event))
            assert isinstance(parsed, BINARY[event["event_type"]]), where


def test_recorded_fields_are_kept() -> None:
    examples = load_examples()
    status = parse_message(json.dumps(examples["status"]["message"]))
    assert status == events.Status(queue_remaining=0, sid="fbf0f84d717c481cbd1c5f414ef2970d")
    executed = parse_message(json.dumps(examples["executed"]["message"]))
    assert executed == events.Executed(
        prompt_id="7a66375c-69bf-4f1d-80a3-398ff24b1b34",
        node="2",
        images=(events.ImageRef("research_a_00001_.png", "", "output"),),
    )
    done = parse_message(json.dumps(examples["executing(node=null)"]["message"]))
    assert done == events.Executing(prompt_id="7a66375c-69bf-4f1d-80a3-398ff24b1b34", node=None)
    no_pid = parse_message(json.dumps(examples["executing(reconnect, no prompt_id)"]["message"]))
    assert no_pid == events.Executing(prompt_id=None, node="2")
    progress = parse_message(json.dumps(examples["progress"]["message"]))
    assert isinstance(progress, events.Progress)
    assert (progress.node, progress.value, progress.max) == ("2", 1, 3)
    state = parse_message(json.dumps(examples["progress_state"]["message"]))
    assert isinstance(state, events.ProgressState)
    assert state.nodes["1"].state == "running"


def test_execution_error_keeps_node_info_and_trims_the_rest() -> None:
    event = parse_message(json.dumps(load_examples()["execution_error"]["message"]))
    assert isinstance(event, events.ExecutionError)
    assert (event.node_id, event.node_type, event.exception_type) == (
        "2",
        "ImageToMask",
        "IndexError",
    )
    assert event.exception_message.startswith("index 3 is out of bounds")
    assert len(event.traceback) <= 1501
    assert "current_inputs" not in repr(event) and "tensor(" not in repr(event)
    assert event.message.startswith("ImageToMask (#2) failed: IndexError: index 3")
    exc = event.to_exception()
    assert isinstance(exc, ExecutionFailed)
    assert (exc.node_id, exc.node_type) == ("2", "ImageToMask")


def test_interrupted_names_the_node() -> None:
    event = parse_message(json.dumps(load_examples()["execution_interrupted"]["message"]))
    assert event == events.ExecutionInterrupted(
        "282b22ce-91b7-4435-8c0d-d2c6effc5bfa", "2", "ResearchSlowProgress"
    )


def test_binary_preview_type_1_jpeg_and_png() -> None:
    examples = load_examples()
    jpeg = parse_binary(frame_bytes(examples["binary type 1 image_type 1"]["frame"]))
    assert isinstance(jpeg, events.Preview)
    assert (jpeg.prompt_id, jpeg.node_id, jpeg.mime) == (None, None, "image/jpeg")
    assert jpeg.data.startswith(b"\xff\xd8\xff") and len(jpeg.data) == 4727
    png = parse_binary(frame_bytes(examples["binary type 1 image_type 2"]["frame"]))
    assert isinstance(png, events.Preview)
    assert png.mime == "image/png" and png.data.startswith(b"\x89PNG") and len(png.data) == 127


def test_binary_preview_type_4_carries_prompt_and_node() -> None:
    frame = load_examples()["binary type 4"]["frame"]
    event = parse_binary(frame_bytes(frame))
    assert isinstance(event, events.Preview)
    assert event.prompt_id == "db5a7f11-a00b-42ec-baa2-0985e347380f"
    assert event.node_id == "2"
    assert event.mime == "image/jpeg"
    assert event.data.startswith(b"\xff\xd8\xff") and len(event.data) == 4726


def test_binary_text_type_3() -> None:
    event = parse_binary(frame_bytes(load_examples()["binary type 3"]["frame"]))
    assert event == events.Text(node_id="2", text="width: 32, height: 16\n batch size: 1")


def test_unknown_and_extra_fields() -> None:
    assert parse_message('{"type": "brand_new", "data": {"x": 1}}') == events.Unknown(
        "brand_new", {"x": 1}
    )
    event = parse_message(
        '{"type": "execution_start", "data": {"prompt_id": "p", "new_field": [1, 2]}, "extra": 1}'
    )
    assert event == events.ExecutionStart("p")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "not json",
        "[1, 2]",
        '{"type": 5}',
        '{"type": "executed"}',
        '{"type": "executed", "data": []}',
        '{"type": "execution_start", "data": {}}',
        '{"type": "progress", "data": {"value": "x", "max": 3, "prompt_id": "p"}}',
        '{"type": "progress_state", "data": {"prompt_id": "p", "nodes": 3}}',
        '{"type": "execution_error", "data": {"node_id": "2"}}',
    ],
)
def test_malformed_messages_become_unknown(text: str) -> None:
    assert isinstance(parse_message(text), events.Unknown)


def test_lenient_where_harmless() -> None:
    executed = parse_payload(
        {"type": "executed", "data": {"prompt_id": "p", "node": 9, "output": {"images": [{}]}}}
    )
    assert executed == events.Executed("p", "9", ())
    cached = parse_payload({"type": "execution_cached", "data": {"prompt_id": "p"}})
    assert cached == events.ExecutionCached("p", ())
    state = parse_payload(
        {"type": "progress_state", "data": {"prompt_id": "p", "nodes": {"1": {"value": "x"}}}}
    )
    assert state == events.ProgressState("p", {})
    assert parse_payload({"type": "status", "data": {}}) == events.Status(None, None)


@pytest.mark.parametrize(
    "frame",
    [
        b"",
        b"\x00\x00",
        struct.pack(">I", 1),
        struct.pack(">II", 3, 50) + b"short",
        struct.pack(">II", 4, 500) + b"{}",
        struct.pack(">II", 4, 5) + b"nope!" + b"img",
        struct.pack(">II", 4, 2) + b"[]" + b"img",
        struct.pack(">II", 2, 1) + b"raw",
        struct.pack(">I", 99) + b"future",
    ],
)
def test_malformed_binary_becomes_unknown(frame: bytes) -> None:
    assert isinstance(parse_binary(frame), events.Unknown)


def test_image_ref_query_for_view() -> None:
    ref = events.ImageRef("a b&c.png", "sub/dir", "temp")
    assert ref.query == "filename=a+b%26c.png&subfolder=sub%2Fdir&type=temp"
    assert events.ImageRef.from_json({"filename": "x.png"}) == events.ImageRef(
        "x.png", "", "output"
    )
    assert events.ImageRef.from_json({"subfolder": ""}) is None


def test_preview_repr_hides_bytes() -> None:
    preview = events.Preview("p", "2", "image/jpeg", b"\xff" * 5000)
    assert "5000 bytes" in repr(preview) and "\\xff" not in repr(preview)
