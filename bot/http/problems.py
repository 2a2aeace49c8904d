"""Every error the API answers is RFC 9457 `application/problem+json`, made in one middleware.

The engine's `UserError` tree maps to statuses the way the Discord error handler maps it to
messages: InvalidValue 422 (naming the field), NotFound 404, LimitReached 429, NotAllowed 403,
ComfyError 502. aiohttp's own HTTP errors (404 route, 405, 413) keep their status. Anything else
is a bug: logged with its traceback under a reference the answer gives, never shown.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from http import HTTPStatus

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMessage

from bot.errors import ComfyError, InvalidValue, LimitReached, NotAllowed, NotFound, UserError
from bot.http.models import Problem

log = logging.getLogger(__name__)

PROBLEM_TYPE = "application/problem+json"
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


#: What aiohttp's multipart reader raises for a body that does not parse: no boundary, a body
#: that does not match it (ValueError), a part whose headers are not valid HTTP (BadHttpMessage).
MALFORMED_MULTIPART = (ValueError, BadHttpMessage)


class ApiProblem(Exception):
    """An error the API answers with as is (401, 409, 413, 415...)."""

    def __init__(
        self, status: int, detail: str, *, field: str | None = None, title: str | None = None
    ) -> None:
        super().__init__(detail)
        self.status = status
        self.detail = detail
        self.field = field
        self.title = title


def malformed_multipart(exc: Exception) -> ApiProblem:
    """The 400 for a multipart body aiohttp's reader could not parse."""
    reason = exc.message if isinstance(exc, BadHttpMessage) else str(exc)
    return ApiProblem(400, f"The multipart body is malformed: {reason}.", field="body")


def problem_response(
    request: web.Request,
    status: int,
    detail: str,
    *,
    field: str | None = None,
    title: str | None = None,
) -> web.Response:
    body = Problem(
        title=title or _title(status),
        status=status,
        detail=detail,
        instance=request.path,
        field=field,
    )
    headers = {"WWW-Authenticate": 'Bearer realm="comfycord"'} if status == 401 else None
    return web.Response(
        status=status,
        body=body.model_dump_json(exclude_none=True),
        content_type=PROBLEM_TYPE,
        headers=headers,
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def map_user_error(exc: UserError) -> tuple[int, str | None]:
    """The status and field of a user error."""
    if isinstance(exc, InvalidValue):
        return 422, exc.param
    if isinstance(exc, NotFound):
        return 404, None
    if isinstance(exc, LimitReached):
        return 429, None
    if isinstance(exc, NotAllowed):
        return 403, None
    if isinstance(exc, ComfyError):
        return 502, None
    return 400, None


@web.middleware
async def problems_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    try:
        return await handler(request)
    except ApiProblem as exc:
        return problem_response(request, exc.status, exc.detail, field=exc.field, title=exc.title)
    except UserError as exc:
        status, field = map_user_error(exc)
        detail = exc.problem if isinstance(exc, InvalidValue) else exc.message
        return problem_response(request, status, detail.replace("`", "'"), field=field)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        detail = exc.text if exc.text and exc.text != f"{exc.status}: {exc.reason}" else ""
        if exc.status == 413:
            detail = "The request body is too large."
        return problem_response(request, exc.status, detail or exc.reason)
    except Exception:
        ref = secrets.token_hex(3)
        log.exception("HTTP %s %s failed (ref %s)", request.method, request.path, ref)
        return problem_response(
            request, 500, f"Something went wrong (ref {ref}). The server's log has the details."
        )
