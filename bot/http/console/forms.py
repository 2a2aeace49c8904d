"""A workflow's run form, built from the JSON Schema of its multipart request."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from bot.http.openapi import request_schema
from bot.workflows import Workflow


@dataclass(frozen=True)
class Field:
    """One input of the form.

    Attributes:
        name: the request field (the option's name).
        kind: text, textarea, number, select, checkbox or file.
        label: what the form calls it.
        help: its description, and its range in words.
        value: the value shown (given again, or the default), as text.
    """

    name: str
    kind: str
    label: str
    help: str
    required: bool = False
    value: str = ""
    minimum: str = ""
    maximum: str = ""
    step: str = ""
    max_length: int | None = None
    choices: tuple[str, ...] = ()
    accept: str = ""
    placeholder: str = ""


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _number(value: Any) -> str:
    return "" if value is None else _text(value)


def _range(schema: Mapping[str, Any]) -> str:
    low, high = schema.get("minimum"), schema.get("maximum")
    if low is not None and high is not None:
        return f"from {low} to {high}"
    if low is not None:
        return f"at least {low}"
    if high is not None:
        return f"at most {high}"
    return ""


def form_fields(
    workflow: Workflow,
    *,
    max_count: int,
    object_info: Mapping[str, Any] | None = None,
    given: Mapping[str, str] | None = None,
) -> list[Field]:
    """The form's inputs: one per option of the workflow, then how many to make.

    Args:
        workflow: the workflow.
        max_count: the most images one request may ask for.
        object_info: ComfyUI's node definitions (the choices of an `enum`).
        given: values to fill in instead of the defaults (a "run again" link's).
    """
    given = given or {}
    schema = request_schema(workflow, max_count=max_count, form=True, object_info=object_info)
    properties: Mapping[str, Any] = schema["properties"]
    fields: list[Field] = []
    for param in workflow.params:
        prop = properties.get(param.name, {})
        value = given.get(param.name, _text(prop.get("default")))
        common: dict[str, Any] = {
            "name": param.name,
            "label": param.name.replace("_", " "),
            "required": param.required,
        }
        description = str(prop.get("description") or "")
        if param.is_file:
            accept = str(prop.get("contentMediaType") or "")
            fields.append(Field(kind="file", help=description, accept=accept, **common))
        elif "enum" in prop:
            choices = tuple(str(c) for c in prop["enum"])
            fields.append(
                Field(kind="select", help=description, value=value, choices=choices, **common)
            )
        elif prop.get("type") == "boolean":
            fields.append(Field(kind="checkbox", help=description, value=value, **common))
        elif prop.get("type") in ("integer", "number"):
            step = str(prop.get("multipleOf", 1)) if prop["type"] == "integer" else "any"
            words = _range(prop)
            fields.append(
                Field(
                    kind="number",
                    help=f"{description} ({words})" if words else description,
                    value=value,
                    minimum=_number(prop.get("minimum")),
                    maximum=_number(prop.get("maximum")),
                    step=step,
                    placeholder="random" if param.type == "seed" else "",
                    **common,
                )
            )
        else:
            kind = "textarea" if param.type == "text" else "text"
            fields.append(
                Field(
                    kind=kind,
                    help=description,
                    value=value,
                    max_length=prop.get("maxLength"),
                    **common,
                )
            )
    if max_count > 1:
        fields.append(
            Field(
                name="count",
                kind="number",
                label="count",
                help=f"How many to make (one job and one seed each; from 1 to {max_count})",
                value=given.get("count", "1"),
                minimum="1",
                maximum=str(max_count),
                step="1",
            )
        )
    return fields
