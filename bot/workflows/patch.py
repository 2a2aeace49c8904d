"""Turning a member's option values into the API prompt ComfyUI runs. Pure: no I/O.

`coerce_values` checks and converts the raw values (from Discord, the CLI or a test) and fills
in defaults and a random seed; `apply` writes them into a deep copy of the graph. Values are
set on parsed JSON, never spliced into text, so no prompt can change anything but its input.
"""

from __future__ import annotations

import copy
import math
import random
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import bot.workflows.nodeinfo as nodeinfo
from bot.errors import InvalidValue
from bot.workflows.model import Param, Workflow
from bot.workflows.nodeinfo import ObjectInfo

N = TypeVar("N", int, float)

RANDOM_SEED_LIMIT = 2**32
"""Random seeds are drawn from 0 to 2**32 - 1."""

_RNG = random.Random()
_TRUE = frozenset({"true", "yes", "on", "1"})
_FALSE = frozenset({"false", "no", "off", "0"})
_LISTED = 25


def _number_text(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def range_text(param: Param) -> str:
    """Describe a numeric param's range in plain words ("between 1 and 50")."""
    if param.min is not None and param.max is not None:
        return f"between {_number_text(param.min)} and {_number_text(param.max)}"
    if param.min is not None:
        return f"at least {_number_text(param.min)}"
    if param.max is not None:
        return f"at most {_number_text(param.max)}"
    return "any number"


def _choices_text(choices: tuple[str, ...] | list[str]) -> str:
    shown = ", ".join(choices[:_LISTED])
    more = len(choices) - _LISTED
    return f"{shown} and {more} more" if more > 0 else shown


def _from_text(text: str, read: Callable[[str], N]) -> N | None:
    """`text` read as a number (spaces around it allowed); None when it is not one."""
    try:
        return read(text.strip())
    except ValueError:
        return None


def _to_int(param: Param, value: Any) -> int:
    number: int | None = None
    if isinstance(value, int) and not isinstance(value, bool):
        number = value
    elif isinstance(value, float) and value.is_integer():
        number = int(value)
    elif isinstance(value, str):
        number = _from_text(value, int)
    if number is None:
        raise InvalidValue(param.name, f"must be a whole number {range_text(param)}")
    return number


def _to_float(param: Param, value: Any) -> float:
    number: float | None = None
    if isinstance(value, int | float) and not isinstance(value, bool):
        number = float(value)
    elif isinstance(value, str):
        number = _from_text(value, float)
    if number is None or not math.isfinite(number):
        raise InvalidValue(param.name, f"must be a number {range_text(param)}")
    return number


def _check_range(param: Param, number: float) -> None:
    low_ok = param.min is None or number >= param.min
    high_ok = param.max is None or number <= param.max
    if not (low_ok and high_ok):
        kind = "a whole number" if param.type in ("int", "seed") else "a number"
        raise InvalidValue(
            param.name, f"must be {kind} {range_text(param)}; got {_number_text(number)}"
        )
    if param.step:
        ratio = number / param.step
        if not math.isclose(ratio, round(ratio), abs_tol=1e-9):
            below = math.floor(ratio) * param.step
            above = math.ceil(ratio) * param.step
            raise InvalidValue(
                param.name,
                f"must be a multiple of {_number_text(param.step)} "
                f"(try {_number_text(below)} or {_number_text(above)})",
            )


def _pick(param: Param, value: Any, choices: tuple[str, ...]) -> str:
    text = value if isinstance(value, str) else None
    if isinstance(value, bool):
        text = "true" if value else "false"
    elif isinstance(value, int | float):
        text = _number_text(value) if param.type == "choice" else None
        if text is not None and text not in choices:
            text = str(value)
    if text is not None:
        if text in choices:
            return text
        folded = [c for c in choices if c.casefold() == text.strip().casefold()]
        if len(folded) == 1:
            return folded[0]
    raise InvalidValue(param.name, f"must be one of: {_choices_text(choices)}")


def _enum_choices(
    workflow: Workflow, param: Param, object_info: ObjectInfo | None
) -> tuple[str, ...]:
    if param.choices or object_info is None or not param.targets:
        return param.choices
    node_id, name = param.targets[0]
    definition = nodeinfo.input_def(object_info, workflow.graph[node_id]["class_type"], name)
    if definition is None or definition.choices is None:
        return ()
    return tuple(str(c) for c in definition.choices)


def coerce_value(param: Param, value: Any, choices: tuple[str, ...] | None = None) -> Any:
    """Check and convert one given value for a param.

    Args:
        param: the parameter.
        value: the raw value (a string from the CLI, an int from Discord...), not None.
        choices: the allowed enum values when known (defaults to the param's own).

    Returns:
        The value to write into the graph (for a choice: its label).

    Raises:
        InvalidValue: naming the param and what it accepts.
    """
    allowed = param.choices if choices is None else choices
    kind = param.type
    if kind == "text":
        if not isinstance(value, str):
            raise InvalidValue(param.name, "must be text")
        if param.required and not value.strip():
            raise InvalidValue(param.name, "can't be empty")
        if param.max_length is not None and len(value) > param.max_length:
            raise InvalidValue(
                param.name,
                f"is too long: {len(value)} characters, at most {param.max_length}",
            )
        return value
    if kind in ("int", "seed"):
        whole = _to_int(param, value)
        _check_range(param, whole)
        return whole
    if kind == "float":
        number = _to_float(param, value)
        _check_range(param, number)
        return number
    if kind == "bool":
        if isinstance(value, bool):
            return value
        if isinstance(value, str | int) and str(value).strip().lower() in _TRUE | _FALSE:
            return str(value).strip().lower() in _TRUE
        raise InvalidValue(param.name, "must be true or false")
    if kind == "choice":
        return _pick(param, value, allowed)
    if kind == "enum":
        if not isinstance(value, str) or not value:
            raise InvalidValue(param.name, "must be a name from the list")
        return _pick(param, value, allowed) if allowed else value
    # image: the name ComfyUI gave the uploaded file (may include its subfolder)
    if (
        not isinstance(value, str)
        or not value.strip()
        or value.startswith(("/", "\\"))
        or ".." in value.replace("\\", "/").split("/")
        or "\x00" in value
    ):
        raise InvalidValue(param.name, "must be an uploaded image")
    return value


def coerce_values(
    workflow: Workflow,
    raw: Mapping[str, Any],
    *,
    rng: random.Random | None = None,
    object_info: ObjectInfo | None = None,
) -> dict[str, Any]:
    """Check and convert a member's values, filling defaults and a random seed.

    Args:
        workflow: the workflow they are for.
        raw: param name -> value; None or a missing key means "not given".
        rng: where random seeds come from (a seeded `random.Random` in tests).
        object_info: ComfyUI's node definitions, for enum params with no listed choices.

    Returns:
        Param name -> value for every param that has one, in param order. A seed not given
        is random in 0..2**32-1; an image not given (and not required) is left out.

    Raises:
        InvalidValue: a value is unknown, missing, of the wrong type or out of range; the
            message names the param and what it accepts.
    """
    names = {p.name for p in workflow.params}
    for name in raw:
        if name not in names:
            workflow.require_param(name)  # raises, listing the options
    values: dict[str, Any] = {}
    for param in workflow.params:
        given = raw.get(param.name)
        if given is None or (isinstance(given, str) and not given and param.type != "text"):
            if param.required:
                raise InvalidValue(param.name, "is required")
            if param.default is not None:
                values[param.name] = param.default
            elif param.type == "seed":
                values[param.name] = (rng or _RNG).randrange(RANDOM_SEED_LIMIT)
            continue
        choices = _enum_choices(workflow, param, object_info) if param.type == "enum" else None
        values[param.name] = coerce_value(param, given, choices)
    return values


def json_copy(value: Any) -> Any:
    """A deep copy of JSON data (dicts, lists, text, numbers), a few times faster than
    `copy.deepcopy`, which a job's graph goes through on every run; anything else is
    deep-copied."""
    kind = type(value)
    if kind is dict:
        return {k: json_copy(v) for k, v in value.items()}
    if kind is list:
        return [json_copy(v) for v in value]
    if kind in _SCALARS:
        return value
    return copy.deepcopy(value)


_SCALARS = frozenset({str, int, float, bool, type(None)})


def apply(workflow: Workflow, values: Mapping[str, Any]) -> dict[str, Any]:
    """Return a copy of the workflow's graph with each value written to its inputs.

    Args:
        workflow: the workflow.
        values: what `coerce_values` returned (param name -> value; None leaves the graph's).

    Returns:
        The API-format prompt to send to ComfyUI. The workflow's own graph is not changed.

    Raises:
        InvalidValue: a name is not a param of the workflow, or a choice label is unknown.
    """
    graph: dict[str, Any] = json_copy(workflow.graph)
    for name, value in values.items():
        param = workflow.require_param(name)
        if value is None:
            continue
        written: Any = value
        if param.type == "choice":
            if value not in param.choice_values:
                raise InvalidValue(name, f"must be one of: {_choices_text(param.choices)}")
            written = param.choice_values[value]
        for node_id, input_name in param.targets:
            if isinstance(written, Mapping):
                if input_name in written:
                    graph[node_id]["inputs"][input_name] = copy.deepcopy(written[input_name])
            else:
                graph[node_id]["inputs"][input_name] = copy.deepcopy(written)
    return graph
