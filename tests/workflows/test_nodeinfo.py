"""Reading node definitions: a class's inputs are parsed once per definition, and a new
`/object_info` (a backend read again after an update) is read afresh."""

from __future__ import annotations

from typing import Any

from bot.workflows import nodeinfo


def sampler(*inputs: str) -> dict[str, Any]:
    return {"input": {"required": {name: ["INT", {"default": 1}] for name in inputs}}}


def test_a_definition_is_parsed_once_and_a_new_one_afresh() -> None:
    first = {"Sampler": sampler("steps", "seed")}
    parsed = nodeinfo.input_defs(first, "Sampler")
    assert [d.name for d in parsed] == ["steps", "seed"]
    parsed.clear()  # what a caller does with its list is its own
    again = nodeinfo.input_defs(first, "Sampler")
    assert [d.name for d in again] == ["steps", "seed"]
    assert again[0] is nodeinfo.input_defs(first, "Sampler")[0]  # from the cache
    updated = {"Sampler": sampler("steps", "seed", "denoise")}  # the server was updated
    assert [d.name for d in nodeinfo.input_defs(updated, "Sampler")] == ["steps", "seed", "denoise"]
    assert nodeinfo.input_def(updated, "Sampler", "denoise") is not None
    assert nodeinfo.input_def(first, "Sampler", "denoise") is None
    assert nodeinfo.input_defs(first, "Missing") == []
