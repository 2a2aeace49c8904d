"""Answer models filled from the engine's own objects (a job, a backend, a param): every field
not given is read from the source's attribute of the same name, the way pydantic's
`from_attributes` reads them, with the fields that are worked out given beside."""

from __future__ import annotations

from typing import Any, TypeVar

from pydantic import BaseModel

M = TypeVar("M", bound=BaseModel)


def filled(model: type[M], source: object, **given: Any) -> M:
    """`model` of the `given` values, its other fields from `source`'s attributes.

    Raises:
        AttributeError: `source` has no attribute for a field that is not given.
        pydantic.ValidationError: a value does not fit its field.
    """
    read = {name: getattr(source, name) for name in model.model_fields if name not in given}
    return model(**read, **given)
